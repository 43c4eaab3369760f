-- Staff actions (ADR 0034): escalations become things operators act on (acknowledge,
-- assign, resolve), needs can be dispatched by hand and re-offered, and every action is
-- kept with who did it.

-- An escalation gets an id of its own, its community (for listing without a join) and
-- its state: open -> acknowledged -> assigned -> resolved.
ALTER TABLE escalations
    ADD COLUMN id              uuid        NOT NULL DEFAULT gen_random_uuid(),
    ADD COLUMN community       text,
    ADD COLUMN state           text        NOT NULL DEFAULT 'open' CHECK (state IN (
                                   'open', 'acknowledged', 'assigned', 'resolved')),
    ADD COLUMN acknowledged_at timestamptz,
    ADD COLUMN assigned_at     timestamptz,
    ADD COLUMN assignee        text,
    ADD COLUMN assignee_ref    text,
    ADD COLUMN resolved_at     timestamptz,
    ADD COLUMN outcome         text,
    -- The operator's note: free text that may name people. It never leaves scheduling
    -- in an event; operators of the community read it through the API.
    ADD COLUMN note            text,
    ADD COLUMN updated_at      timestamptz NOT NULL DEFAULT now();
UPDATE escalations e SET community = n.community FROM needs n WHERE n.id = e.need_id;
ALTER TABLE escalations ALTER COLUMN community SET NOT NULL;
CREATE UNIQUE INDEX escalations_id ON escalations (id);
CREATE INDEX escalations_by_community ON escalations (community, escalated_at DESC, id DESC);
CREATE INDEX escalations_by_state ON escalations (community, state, escalated_at DESC, id DESC);

-- Every staff action on an escalation, in order: the accountability record.
CREATE TABLE escalation_actions (
    id              bigserial   PRIMARY KEY,
    escalation_id   uuid        NOT NULL REFERENCES escalations (id),
    action          text        NOT NULL CHECK (action IN (
                        'acknowledged', 'assigned', 'resolved')),
    actor_credential uuid       NOT NULL,
    actor_role      text        NOT NULL,
    actor_label     text        NOT NULL DEFAULT '',
    at              timestamptz NOT NULL,
    assignee        text,
    assignee_ref    text,
    outcome         text,
    note_recorded   boolean
);
CREATE INDEX escalation_actions_by_escalation ON escalation_actions (escalation_id, id);

-- A slot scheduling made for one directed offer when the chosen party had no published
-- capacity that fits (an operator's override). Matching never hands it to another need.
ALTER TABLE slots ADD COLUMN directed_need uuid;

-- Staff actions on needs (dispatch, re-offer), with who did them.
CREATE TABLE need_actions (
    id               bigserial   PRIMARY KEY,
    need_id          uuid        NOT NULL REFERENCES needs (id),
    action           text        NOT NULL CHECK (action IN ('dispatched', 'reoffered')),
    actor_credential uuid        NOT NULL,
    actor_role       text        NOT NULL,
    actor_label      text        NOT NULL DEFAULT '',
    at               timestamptz NOT NULL,
    assignment_id    uuid,
    withdrawn_assignment_id uuid,
    without_capacity boolean
);
CREATE INDEX need_actions_by_need ON need_actions (need_id, id);

-- Idempotency-Key of the staff POSTs (ADR 0008): the same key and body answer what the
-- first request did.
CREATE TABLE idempotency_keys (
    community      text        NOT NULL,
    credential_id  uuid        NOT NULL,
    key            text        NOT NULL,
    request_sha256 bytea       NOT NULL,
    response       jsonb,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (community, credential_id, key)
);

-- An offer an operator withdrew (re-offer, or dispatch to someone else).
ALTER TABLE assignments DROP CONSTRAINT assignments_state_check;
ALTER TABLE assignments ADD CONSTRAINT assignments_state_check CHECK (state IN (
    'offered', 'accepted', 'declined', 'expired', 'cancelled', 'failed', 'completed',
    'withdrawn'));
