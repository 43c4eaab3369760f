-- Shared reliability tables; every service schema gets its own copy.

-- Transactional outbox: rows commit with the state change that caused them; the relay
-- publishes them with Nats-Msg-Id = event_id and marks them sent.
CREATE TABLE outbox (
    id          bigserial PRIMARY KEY,
    event_id    text        NOT NULL UNIQUE,
    subject     text        NOT NULL,
    headers     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    payload     bytea       NOT NULL,
    traceparent text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz,
    attempts    integer     NOT NULL DEFAULT 0
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
CREATE INDEX outbox_sent_at ON outbox (sent_at) WHERE sent_at IS NOT NULL;

-- Idempotent inbox: one row per (consumer, event id), written in the transaction of
-- the effect; a redelivered event finds its row and changes nothing.
CREATE TABLE inbox (
    consumer     text        NOT NULL,
    event_id     text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- Dead letters: messages a consumer could not process, kept whole with the reason so
-- an operator can inspect and replay them.
CREATE TABLE dead_letters (
    id          uuid        PRIMARY KEY,
    dedupe_key  text        NOT NULL UNIQUE,
    consumer    text        NOT NULL,
    subject     text        NOT NULL,
    headers     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    payload     bytea       NOT NULL,
    reasons     jsonb       NOT NULL DEFAULT '[]'::jsonb,
    stream_seq  bigint,
    deliveries  integer,
    created_at  timestamptz NOT NULL DEFAULT now(),
    replayed_at timestamptz,
    replay_count integer    NOT NULL DEFAULT 0
);
CREATE INDEX dead_letters_open ON dead_letters (created_at) WHERE replayed_at IS NULL;
