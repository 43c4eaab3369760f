-- Scheduling owns its copy of slots (capacity) and needs, the assignments (offers and
-- reservations), durable timers, escalations and per-community SLA policies.

-- A copy of capacity published by partners. `reserved` only moves through conditional
-- updates (`reserved < capacity`), and the CHECK is the last line of defence.
CREATE TABLE slots (
    id              uuid        PRIMARY KEY,
    community       text        NOT NULL,
    kind            text        NOT NULL,
    provider_kind   text        NOT NULL CHECK (provider_kind IN ('partner', 'volunteer')),
    provider_id     uuid        NOT NULL,
    window_earliest timestamptz NOT NULL,
    window_latest   timestamptz NOT NULL CHECK (window_latest > window_earliest),
    capacity        integer     NOT NULL CHECK (capacity >= 1),
    compounds       text[]      NOT NULL DEFAULT '{}',
    reserved        integer     NOT NULL DEFAULT 0,
    published_at    timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT slots_never_oversold CHECK (reserved >= 0 AND reserved <= capacity)
);
CREATE INDEX slots_for_matching ON slots (community, kind, window_earliest, id);

-- Scheduling's own copy of a need. `rank` orders the queue (rules.priority_rank).
CREATE TABLE needs (
    id                 uuid        PRIMARY KEY,
    community          text        NOT NULL,
    resident_id        uuid        NOT NULL,
    kind               text        NOT NULL,
    urgency            text        NOT NULL,
    priority_group     text        NOT NULL,
    rank               integer     NOT NULL,
    window_earliest    timestamptz NOT NULL,
    window_latest      timestamptz NOT NULL,
    compound           text,
    details            jsonb       NOT NULL,
    submitted_at       timestamptz NOT NULL,
    state              text        NOT NULL CHECK (state IN (
                           'waiting', 'offered', 'assigned', 'fulfilled',
                           'escalated', 'cancelled', 'failed')),
    current_assignment uuid,
    attempts           integer     NOT NULL DEFAULT 0,
    received_at        timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX needs_queue ON needs (community, kind, rank, submitted_at, id)
    WHERE state IN ('waiting', 'escalated');
CREATE INDEX needs_by_state ON needs (community, state, submitted_at DESC);

-- One row per offer. An offer holds one unit of its slot (the reservation) while it
-- is offered or accepted; the partial unique index means a need never holds two.
CREATE TABLE assignments (
    id             uuid        PRIMARY KEY,
    reservation_id uuid        NOT NULL UNIQUE,
    need_id        uuid        NOT NULL REFERENCES needs (id),
    slot_id        uuid        NOT NULL REFERENCES slots (id),
    provider_kind  text        NOT NULL,
    provider_id    uuid        NOT NULL,
    attempt        integer     NOT NULL,
    state          text        NOT NULL CHECK (state IN (
                       'offered', 'accepted', 'declined', 'expired', 'cancelled',
                       'failed', 'completed')),
    offered_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    answered_at    timestamptz,
    closed_at      timestamptz,
    release_reason text
);
CREATE UNIQUE INDEX assignments_one_active_per_need ON assignments (need_id)
    WHERE state IN ('offered', 'accepted');
CREATE INDEX assignments_by_need ON assignments (need_id, offered_at);

-- Providers who declined or let an offer of this need expire: not asked again.
CREATE TABLE need_exclusions (
    need_id       uuid        NOT NULL REFERENCES needs (id),
    provider_kind text        NOT NULL,
    provider_id   uuid        NOT NULL,
    reason        text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (need_id, provider_kind, provider_id)
);

-- Every need.escalated we emitted; the key makes each escalation happen once
-- (e.g. 'no_capacity', 'sla_at_risk:complete', 'sla_breached:accept').
CREATE TABLE escalations (
    need_id      uuid        NOT NULL REFERENCES needs (id),
    key          text        NOT NULL,
    reason       text        NOT NULL,
    detail       text,
    sla_deadline timestamptz,
    escalated_at timestamptz NOT NULL,
    PRIMARY KEY (need_id, key)
);

-- Durable timers, polled by every replica with FOR UPDATE SKIP LOCKED.
-- kind: offer_expiry | sla_at_risk | sla_breach | rematch; clock: accept | complete.
-- outcome: fired | stale (no longer applied) | cancelled | error (gave up after retries).
CREATE TABLE timers (
    id            bigserial   PRIMARY KEY,
    kind          text        NOT NULL,
    need_id       uuid        NOT NULL REFERENCES needs (id),
    assignment_id uuid,
    clock         text,
    deadline      timestamptz,
    due_at        timestamptz NOT NULL,
    traceparent   text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    fired_at      timestamptz,
    outcome       text,
    attempts      integer     NOT NULL DEFAULT 0,
    last_error    text
);
CREATE INDEX timers_due ON timers (due_at) WHERE fired_at IS NULL;
CREATE INDEX timers_by_need ON timers (need_id, id);

-- Per-community policy; NULL columns fall back to the '*' row, then to the code's
-- defaults (rules.DEFAULT_POLICY and the offer-timeout settings).
CREATE TABLE sla_policies (
    community                 text PRIMARY KEY,
    offer_timeout_s           double precision CHECK (offer_timeout_s > 0),
    offer_timeout_emergency_s double precision CHECK (offer_timeout_emergency_s > 0),
    emergency_accept_s        double precision CHECK (emergency_accept_s > 0),
    emergency_onsite_s        double precision CHECK (emergency_onsite_s > 0),
    priority_repair_s         double precision CHECK (priority_repair_s > 0),
    routine_repair_s          double precision CHECK (routine_repair_s > 0),
    at_risk_fraction          double precision CHECK (at_risk_fraction > 0 AND at_risk_fraction < 1),
    updated_at                timestamptz NOT NULL DEFAULT now()
);
