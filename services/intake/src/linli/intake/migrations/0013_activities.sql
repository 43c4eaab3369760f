-- Group activities (ADR 0046): an activity (义诊, 公益市集) with stalls run by partners,
-- each stall with sessions of limited places; residents' sign-ups and attendance.
-- Places are never overfilled: every change to a session's sign-ups runs under a lock of
-- its row, and `confirmed <= places` is a CHECK the database enforces.

CREATE TABLE activities (
    id                     uuid        PRIMARY KEY,
    community              text        NOT NULL REFERENCES communities (slug),
    title                  text        NOT NULL,
    venue                  text        NOT NULL,
    on_date                date        NOT NULL,
    start_time             time        NOT NULL,
    end_time               time        NOT NULL CHECK (end_time > start_time),
    timezone               text        NOT NULL,
    starts_at              timestamptz NOT NULL,
    ends_at                timestamptz NOT NULL CHECK (ends_at > starts_at),
    registration_closes_at timestamptz NOT NULL,
    status                 text        NOT NULL DEFAULT 'draft'
        CHECK (status IN ('draft', 'published', 'cancelled', 'held')),
    allocated_at           timestamptz,   -- registration closed and places allocated
    published_at           timestamptz,
    cancelled_at           timestamptz,
    held_at                timestamptz,
    created_by             text        NOT NULL,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX activities_by_community ON activities (community, starts_at DESC, id DESC);
-- The allocation loop's work: published activities whose registration has closed.
CREATE INDEX activities_to_allocate ON activities (registration_closes_at)
    WHERE status = 'published' AND allocated_at IS NULL;

CREATE TABLE activity_stalls (
    id           uuid        PRIMARY KEY,
    activity_id  uuid        NOT NULL REFERENCES activities (id),
    community    text        NOT NULL,
    partner_id   uuid        NOT NULL,
    offering     text        NOT NULL,
    cancelled_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp()  -- the order they were given
);
CREATE INDEX activity_stalls_by_activity ON activity_stalls (activity_id, created_at, id);

CREATE TABLE activity_sessions (
    id           uuid        PRIMARY KEY,
    activity_id  uuid        NOT NULL REFERENCES activities (id),
    stall_id     uuid        NOT NULL REFERENCES activity_stalls (id),
    community    text        NOT NULL,
    start_time   time        NOT NULL,
    end_time     time        NOT NULL CHECK (end_time > start_time),
    starts_at    timestamptz NOT NULL,
    ends_at      timestamptz NOT NULL CHECK (ends_at > starts_at),
    places       integer     NOT NULL CHECK (places >= 1),
    confirmed    integer     NOT NULL DEFAULT 0 CHECK (confirmed >= 0 AND confirmed <= places),
    cancelled_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp()  -- the order they were given
);
CREATE INDEX activity_sessions_by_stall ON activity_sessions (stall_id, starts_at, id);
CREATE INDEX activity_sessions_by_activity ON activity_sessions (activity_id);

CREATE TABLE activity_signups (
    id              uuid        PRIMARY KEY,
    community       text        NOT NULL,
    activity_id     uuid        NOT NULL REFERENCES activities (id),
    session_id      uuid        NOT NULL REFERENCES activity_sessions (id),
    resident_id     uuid        NOT NULL REFERENCES residents (id),
    priority_group  text        NOT NULL,
    status          text        NOT NULL
        CHECK (status IN ('requested', 'confirmed', 'waitlisted', 'cancelled')),
    signed_up_at    timestamptz NOT NULL,
    signed_up_by    text        NOT NULL,
    decided_at      timestamptz,
    cancelled_at    timestamptz,
    cancel_reason   text,
    attended        boolean,
    attendance_at   timestamptz,
    attendance_by   text
);
-- One standing sign-up per resident and session: signing up twice is one sign-up.
CREATE UNIQUE INDEX activity_signups_once ON activity_signups (session_id, resident_id)
    WHERE status <> 'cancelled';
-- The rule's order (ADR 0046): priority groups first, then sign-up time.
CREATE INDEX activity_signups_queue ON activity_signups
    (session_id, status, (priority_group = 'none'), signed_up_at, id);
