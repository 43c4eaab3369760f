-- The reports' read model (ADR 0038): what the durable `console-reports` folds from
-- events. Ids and times only: no resident, no name, no free text. Each table is written
-- in the consumer's inbox transaction, so a redelivered event changes nothing.

-- One row per need, whatever event about it came first (events may overtake each other
-- after a redelivery); times keep the earliest value seen.
CREATE TABLE report_needs (
    need_id         uuid PRIMARY KEY,
    community       text NOT NULL,
    kind            text,
    urgency         text,
    priority_group  text,
    window_earliest timestamptz,
    window_latest   timestamptz,
    submitted_at    timestamptz,   -- NULL until need.submitted arrives: not in any month yet
    accepted_at     timestamptz,   -- partner.accepted / volunteer.confirmed
    arrived_at      timestamptz,   -- on site: meal delivered, visit started, repair arrived
    fulfilled_at    timestamptz,
    fulfilled_by_kind text,        -- partner | volunteer
    fulfilled_by_id uuid,
    failed_at       timestamptz,
    cancelled_at    timestamptz,
    escalated_at    timestamptz
);
CREATE INDEX report_needs_month ON report_needs (community, submitted_at);

-- One row per need.escalated event.
CREATE TABLE report_escalations (
    event_id     text PRIMARY KEY,
    community    text NOT NULL,
    need_id      uuid NOT NULL,
    reason       text NOT NULL,
    escalated_at timestamptz NOT NULL
);
CREATE INDEX report_escalations_month ON report_escalations (community, escalated_at);
CREATE INDEX report_escalations_need ON report_escalations (need_id, reason);

-- One row per escalation.resolved (an escalation is resolved once).
CREATE TABLE report_resolutions (
    escalation_id uuid PRIMARY KEY,
    community     text NOT NULL,
    need_id       uuid NOT NULL,
    reason        text NOT NULL,
    outcome       text NOT NULL,
    resolved_at   timestamptz NOT NULL
);
CREATE INDEX report_resolutions_need ON report_resolutions (need_id, reason);

-- One row per delivery.failed event.
CREATE TABLE report_failures (
    event_id   text PRIMARY KEY,
    community  text NOT NULL,
    need_id    uuid NOT NULL,
    party_kind text NOT NULL,
    reason     text NOT NULL,
    failed_at  timestamptz NOT NULL
);
CREATE INDEX report_failures_month ON report_failures (community, failed_at);

-- One row per piece of work done (meal.delivered, visit.completed, repair.completed):
-- started_at is NULL where the event carries no start (a meal's hand-over).
CREATE TABLE report_work (
    event_id   text PRIMARY KEY,
    community  text NOT NULL,
    need_id    uuid NOT NULL,
    kind       text NOT NULL,
    party_kind text NOT NULL,
    party_id   uuid NOT NULL,
    started_at timestamptz,
    ended_at   timestamptz NOT NULL
);
CREATE INDEX report_work_month ON report_work (community, ended_at);

-- One row per points.awarded (points > 0) or points.redeemed (points < 0).
CREATE TABLE report_points (
    event_id     text PRIMARY KEY,
    community    text NOT NULL,
    volunteer_id uuid NOT NULL,
    points       integer NOT NULL,
    at           timestamptz NOT NULL
);
CREATE INDEX report_points_month ON report_points (community, at);
