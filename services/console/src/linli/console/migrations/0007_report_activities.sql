-- Partners' contributions at group activities (ADR 0046): one row per sign-up whose
-- attendance was recorded, from attendance.recorded. The latest record (by its
-- recorded_at, not arrival) stands. Ids and times only.
CREATE TABLE report_attendance (
    signup_id         uuid        PRIMARY KEY,
    community         text        NOT NULL,
    activity_id       uuid        NOT NULL,
    stall_id          uuid        NOT NULL,
    session_id        uuid        NOT NULL,
    partner_id        uuid        NOT NULL,
    session_starts_at timestamptz NOT NULL,
    attended          boolean     NOT NULL,
    recorded_at       timestamptz NOT NULL
);
CREATE INDEX report_attendance_month ON report_attendance (community, session_starts_at);
