-- Offers that scheduling closed (expired) or the helper declined. An acceptance that
-- arrives after its offer closed makes nobody the assignee, so no stale helper gets the
-- resident's contact details.
CREATE TABLE closed_assignments (
    assignment_id uuid        PRIMARY KEY,
    need_id       uuid        NOT NULL,
    closed_at     timestamptz NOT NULL DEFAULT now()
);
