-- Recurring plans ("lunch every weekday", "a visit every Tuesday and Friday") and the
-- occurrences generated from them. The primary key of plan_occurrences makes every
-- occurrence's need exactly once, across restarts and several intake processes.
CREATE TABLE plans (
    id              uuid        PRIMARY KEY,
    community       text        NOT NULL REFERENCES communities (slug),
    resident_id     uuid        NOT NULL REFERENCES residents (id),
    kind            text        NOT NULL,
    urgency         text        NOT NULL,
    details         jsonb       NOT NULL,
    notes           text,
    weekdays        smallint[]  NOT NULL,
    start_time      time        NOT NULL,
    end_time        time        NOT NULL CHECK (end_time > start_time),
    timezone        text        NOT NULL,
    starts_on       date        NOT NULL,
    ends_on         date,
    paused          boolean     NOT NULL DEFAULT false,
    generated_until date,
    created_by      text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX plans_by_community ON plans (community, created_at DESC);
CREATE INDEX plans_due ON plans (generated_until) WHERE NOT paused;

CREATE TABLE plan_occurrences (
    plan_id uuid NOT NULL REFERENCES plans (id),
    on_date date NOT NULL,
    need_id uuid REFERENCES needs (id),
    PRIMARY KEY (plan_id, on_date)
);
