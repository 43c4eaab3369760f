-- Notifications: webhook subscriptions, their deliveries and the attempts log.

-- One endpoint per subscription. Secrets are sealed (Fernet when LINLI_SECRETS_KEY and
-- `cryptography` are available, see sealing.py); never stored as given.
CREATE TABLE subscriptions (
    id                     uuid        PRIMARY KEY,
    owner_credential       uuid        NOT NULL,
    url                    text        NOT NULL,
    communities            text[]      NOT NULL,
    event_types            text[]      NOT NULL DEFAULT '{}',
    need_kinds             text[]      NOT NULL DEFAULT '{}',
    description            text        NOT NULL DEFAULT '',
    secret_sealed          text        NOT NULL,
    previous_secret_sealed text,
    previous_secret_until  timestamptz,
    state                  text        NOT NULL DEFAULT 'active'
                               CHECK (state IN ('active', 'paused', 'disabled')),
    disabled_reason        text,
    failing_since          timestamptz,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscriptions_owner ON subscriptions (owner_credential);
CREATE INDEX subscriptions_communities ON subscriptions USING gin (communities);

-- One row per (subscription, event): an outbox per endpoint. Written in the inbox
-- transaction of the consumer; the delivery worker claims due rows per endpoint.
CREATE TABLE deliveries (
    id              bigserial   PRIMARY KEY,
    subscription_id uuid        NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    event_id        text        NOT NULL,
    event_type      text        NOT NULL,
    community       text        NOT NULL,
    event_time      timestamptz,
    payload         bytea       NOT NULL,
    state           text        NOT NULL DEFAULT 'pending'
                        CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    locked_until    timestamptz,
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    UNIQUE (subscription_id, event_id)
);
CREATE INDEX deliveries_due ON deliveries (subscription_id, next_attempt_at)
    WHERE state = 'pending';
CREATE INDEX deliveries_event_time ON deliveries (subscription_id, event_time);

-- The attempts log: status, latency and error of every attempt; never bodies.
CREATE TABLE delivery_attempts (
    id              bigserial   PRIMARY KEY,
    delivery_id     bigint      NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    subscription_id uuid        NOT NULL,
    event_id        text        NOT NULL,
    attempt         integer     NOT NULL,
    started_at      timestamptz NOT NULL,
    status          integer,
    latency_ms      integer     NOT NULL,
    error           text,
    outcome         text        NOT NULL
);
CREATE INDEX delivery_attempts_sub ON delivery_attempts (subscription_id, id DESC);

-- Need kinds seen on need.submitted, so events without a kind (meal.delivered, ...)
-- can be filtered by a subscription's need_kinds.
CREATE TABLE need_kinds (
    need_id     uuid        PRIMARY KEY,
    kind        text        NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

-- Events naming a need whose kind is not known yet (they arrived before the need's
-- own events): fanned out to kind-filtered subscriptions when the kind arrives.
CREATE TABLE parked_events (
    need_id     uuid        NOT NULL,
    event_id    text        NOT NULL,
    event_type  text        NOT NULL,
    community   text        NOT NULL,
    event_time  timestamptz,
    payload     bytea       NOT NULL,
    parked_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (need_id, event_id)
);
