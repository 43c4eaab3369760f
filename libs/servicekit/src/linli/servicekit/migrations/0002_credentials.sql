-- API credentials: opaque bearer tokens, stored as SHA-256 digests only, each scoped
-- to communities and a role. '*' in communities means every community (platform admin).
CREATE TABLE credentials (
    id           uuid        PRIMARY KEY,
    token_sha256 bytea       NOT NULL UNIQUE,
    role         text        NOT NULL,
    communities  text[]      NOT NULL,
    subject_id   uuid,
    label        text        NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);
