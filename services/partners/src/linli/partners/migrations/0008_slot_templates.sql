-- Recurring capacity (issue #12, ADR 0042): a partner's weekly slot template, slots
-- generated from it exactly once per date, and slots that can be revised and withdrawn.

CREATE TABLE slot_templates (
    id              uuid        PRIMARY KEY,
    community       text        NOT NULL,
    partner_id      uuid        NOT NULL REFERENCES partners (id),
    kind            text        NOT NULL,
    weekdays        smallint[]  NOT NULL CHECK (
                        cardinality(weekdays) BETWEEN 1 AND 7
                        AND weekdays <@ ARRAY[1, 2, 3, 4, 5, 6, 7]::smallint[]),
    start_time      time        NOT NULL,
    end_time        time        NOT NULL CHECK (end_time > start_time),
    timezone        text        NOT NULL,
    capacity        integer     NOT NULL CHECK (capacity BETWEEN 1 AND 1000),
    compounds       text[]      NOT NULL DEFAULT '{}',
    valid_from      date,
    valid_until     date        CHECK (valid_until IS NULL OR valid_from IS NULL
                                       OR valid_until >= valid_from),
    status          text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deleted')),
    -- The last local date slots were generated for (NULL: none yet).
    generated_until date,
    created_by      text        NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    deleted_at      timestamptz
);
CREATE INDEX slot_templates_by_partner ON slot_templates (community, partner_id, created_at DESC);
CREATE INDEX slot_templates_due ON slot_templates (generated_until) WHERE status = 'active';

-- A generated slot names its template and date; the pair is unique, so two replicas or
-- a restart generating the same date insert it once (INSERT ... ON CONFLICT DO NOTHING).
ALTER TABLE slots
    ADD COLUMN template_id  uuid REFERENCES slot_templates (id),
    ADD COLUMN occurs_on    date,
    ADD COLUMN status       text NOT NULL DEFAULT 'published'
                            CHECK (status IN ('published', 'withdrawn')),
    ADD COLUMN revision     integer NOT NULL DEFAULT 0,
    ADD COLUMN revised_at   timestamptz,
    ADD COLUMN withdrawn_at timestamptz,
    ADD CONSTRAINT slots_one_per_template_date UNIQUE (template_id, occurs_on);
