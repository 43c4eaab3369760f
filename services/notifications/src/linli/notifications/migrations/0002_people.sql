-- Messages to people (issue #4, item 5): recipients and their preferences, the
-- need -> resident map learned from need.submitted, and one message row per
-- (event, recipient). Personal data (addresses, phone numbers) lives only in
-- people_recipients; messages reference a recipient and never copy the address.
-- Self-contained: depends on no other notifications table.

CREATE TABLE IF NOT EXISTS people_recipients (
    id uuid PRIMARY KEY,
    community text NOT NULL,
    role text NOT NULL CHECK (role IN ('family', 'operator', 'volunteer')),
    resident_id uuid,
    volunteer_id uuid,
    channel text NOT NULL CHECK (channel IN ('email', 'sms')),
    address text NOT NULL,
    locale text NOT NULL DEFAULT 'zh-CN' CHECK (locale IN ('zh-CN', 'en')),
    quiet_start time,
    quiet_end time,
    timezone text NOT NULL DEFAULT 'Asia/Shanghai',
    events text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((role = 'family') = (resident_id IS NOT NULL)),
    CHECK ((role = 'volunteer') = (volunteer_id IS NOT NULL)),
    CHECK ((quiet_start IS NULL) = (quiet_end IS NULL))
);

CREATE INDEX IF NOT EXISTS people_recipients_community_role
    ON people_recipients (community, role);
CREATE INDEX IF NOT EXISTS people_recipients_resident
    ON people_recipients (resident_id) WHERE resident_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS people_recipients_volunteer
    ON people_recipients (volunteer_id) WHERE volunteer_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS people_needs (
    need_id uuid PRIMARY KEY,
    community text NOT NULL,
    resident_id uuid NOT NULL,
    kind text NOT NULL,
    urgency text NOT NULL,
    submitted_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS people_messages (
    id uuid PRIMARY KEY,
    event_id text NOT NULL,
    event_type text NOT NULL,
    recipient_id uuid NOT NULL REFERENCES people_recipients (id) ON DELETE CASCADE,
    community text NOT NULL,
    channel text NOT NULL CHECK (channel IN ('email', 'sms')),
    template text NOT NULL,
    locale text NOT NULL,
    subject text NOT NULL,
    body text NOT NULL,
    emergency boolean NOT NULL DEFAULT false,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    locked_until timestamptz,
    last_error text,
    traceparent text,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz,
    UNIQUE (event_id, recipient_id)
);

CREATE INDEX IF NOT EXISTS people_messages_due
    ON people_messages (next_attempt_at) WHERE status = 'pending';
