-- Idempotency-Key of `POST .../activities` (ADR 0008, ADR 0046): a retried creation
-- answers the activity created the first time.
CREATE TABLE activity_idempotency_keys (
    community      text        NOT NULL,
    credential_id  uuid        NOT NULL,
    key            text        NOT NULL,
    request_sha256 bytea       NOT NULL,
    activity_id    uuid        NOT NULL REFERENCES activities (id) DEFERRABLE INITIALLY DEFERRED,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (community, credential_id, key)
);
