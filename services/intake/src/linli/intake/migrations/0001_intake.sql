-- Intake owns communities, residents (with their personal data), needs as submitted
-- and their timeline, and HTTP idempotency keys.

CREATE TABLE communities (
    slug       text        PRIMARY KEY,
    name       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE residents (
    id                       uuid        PRIMARY KEY,
    community                text        NOT NULL REFERENCES communities (slug),
    name                     text        NOT NULL,
    phone                    text        NOT NULL,
    address                  text        NOT NULL,
    compound                 text,
    priority_group           text        NOT NULL,
    consent_to_share_contact boolean     NOT NULL DEFAULT false,
    locale                   text        NOT NULL DEFAULT 'zh-CN',
    created_at               timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX residents_by_community ON residents (community, created_at DESC, id DESC);

CREATE TABLE needs (
    id               uuid        PRIMARY KEY,
    community        text        NOT NULL REFERENCES communities (slug),
    resident_id      uuid        NOT NULL REFERENCES residents (id),
    kind             text        NOT NULL,
    urgency          text        NOT NULL,
    status           text        NOT NULL,
    window_earliest  timestamptz NOT NULL,
    window_latest    timestamptz NOT NULL CHECK (window_latest > window_earliest),
    details          jsonb       NOT NULL,
    notes            text,
    source_system    text,
    source_reference text,
    priority_group   text        NOT NULL,
    submitted_by     text        NOT NULL,
    ingress_source   text,
    ingress_event_id text,
    submitted_at     timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    cancel_reason    text,
    -- The same CloudEvent (source, id) from another system creates one need.
    UNIQUE (ingress_source, ingress_event_id)
);
CREATE INDEX needs_by_community ON needs (community, submitted_at DESC, id DESC);
CREATE INDEX needs_by_status ON needs (community, status, submitted_at DESC);

CREATE TABLE need_timeline (
    id      bigserial   PRIMARY KEY,
    need_id uuid        NOT NULL REFERENCES needs (id),
    at      timestamptz NOT NULL DEFAULT now(),
    status  text        NOT NULL,
    actor   text        NOT NULL,
    note    text
);
CREATE INDEX need_timeline_by_need ON need_timeline (need_id, id);

CREATE TABLE idempotency_keys (
    community      text        NOT NULL,
    credential_id  uuid        NOT NULL,
    key            text        NOT NULL,
    request_sha256 bytea       NOT NULL,
    need_id        uuid        NOT NULL REFERENCES needs (id) DEFERRABLE INITIALLY DEFERRED,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (community, credential_id, key)
);
