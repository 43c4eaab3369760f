-- Staff accounts, their sessions and sign-in throttling (ADR 0033, ADR 0036).

-- A street office (街道) and its communities. Intake will own street offices (ADR 0034);
-- until it does, the console keeps this table and the console's CLI fills it.
CREATE TABLE street_offices (
    slug        text PRIMARY KEY CHECK (slug ~ '^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$'),
    name        text NOT NULL,
    communities text[] NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE staff (
    id             uuid PRIMARY KEY,
    login          text NOT NULL UNIQUE CHECK (login ~ '^[a-z0-9][a-z0-9._-]{1,62}$'),
    display_name   text NOT NULL,
    password_hash  text NOT NULL,                   -- argon2id, PHC string
    role           text NOT NULL CHECK (role IN ('community_operator', 'street_office')),
    communities    text[] NOT NULL DEFAULT '{}',     -- community_operator
    street_office  text REFERENCES street_offices (slug),
    service_token  text NOT NULL,                    -- sealed (servicekit SecretBox)
    disabled_at    timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((role = 'street_office') = (street_office IS NOT NULL))
);

-- The cookie holds a random id; the table keeps only its SHA-256.
CREATE TABLE sessions (
    id_sha256    bytea PRIMARY KEY,
    staff_id     uuid NOT NULL REFERENCES staff (id) ON DELETE CASCADE,
    csrf_token   text NOT NULL,
    locale       text NOT NULL DEFAULT 'zh-CN',
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX sessions_expires ON sessions (expires_at);
CREATE INDEX sessions_staff ON sessions (staff_id);

-- Failed sign-ins per login (known or not), in a window: replicas share it.
CREATE TABLE sign_in_failures (
    login        text PRIMARY KEY,
    failures     integer NOT NULL,
    window_start timestamptz NOT NULL
);
