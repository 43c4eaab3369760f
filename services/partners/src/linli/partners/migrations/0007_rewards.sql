-- Rewards for service points, a volunteer's redemption request with its points held,
-- and the certificate an approved request yields (issue #12, ADR 0041).

-- Points held for requests awaiting an operator: a volunteer can never ask for more than
-- it holds. The CHECK is per statement, so racing requests cannot hold the same points
-- twice (the row lock orders them), and an operator's direct debit cannot spend held
-- points either.
ALTER TABLE balances ADD COLUMN held bigint NOT NULL DEFAULT 0 CHECK (held >= 0);
ALTER TABLE balances ADD CONSTRAINT volunteer_held_within_balance
    CHECK (account_kind <> 'volunteer' OR balance >= held);

CREATE TABLE rewards (
    id           uuid        PRIMARY KEY,
    community    text        NOT NULL,
    partner_id   uuid        NOT NULL REFERENCES partners (id),
    title        text        NOT NULL,
    description  text,
    points       bigint      NOT NULL CHECK (points BETWEEN 1 AND 1000000),
    status       text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'withdrawn')),
    created_by   text        NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    withdrawn_at timestamptz
);
CREATE INDEX rewards_by_community ON rewards (community, status, created_at DESC, id DESC);
CREATE INDEX rewards_by_partner ON rewards (partner_id, created_at DESC);

-- One row per request. Approved: `redemptions` holds the debit under the same id, and the
-- certificate lives here: a random 128-bit code, stored as its SHA-256 (the public check
-- looks it up by digest) and sealed with LINLI_SECRETS_KEY (so the volunteer can fetch
-- it again; a dump without the key reveals no usable code).
CREATE TABLE reward_redemptions (
    id                 uuid        PRIMARY KEY,
    community          text        NOT NULL,
    reward_id          uuid        NOT NULL REFERENCES rewards (id),
    volunteer_id       uuid        NOT NULL REFERENCES volunteers (id),
    points             bigint      NOT NULL CHECK (points > 0),
    status             text        NOT NULL DEFAULT 'requested'
                           CHECK (status IN ('requested', 'approved', 'rejected')),
    requested_by       text        NOT NULL,
    requested_at       timestamptz NOT NULL,
    decided_by         text,
    decided_at         timestamptz,
    reject_reason      text,
    certificate_sha256 bytea       UNIQUE,
    certificate_sealed text,
    used_at            timestamptz,
    used_by            text,
    CHECK ((status = 'approved') = (certificate_sha256 IS NOT NULL)),
    CHECK (used_at IS NULL OR status = 'approved')
);
CREATE INDEX reward_redemptions_by_community
    ON reward_redemptions (community, status, requested_at DESC, id DESC);
CREATE INDEX reward_redemptions_by_volunteer
    ON reward_redemptions (volunteer_id, community, requested_at DESC);
CREATE INDEX reward_redemptions_by_reward ON reward_redemptions (reward_id, status);

-- Idempotency-Keys of the volunteer's requests and the operator's decisions (ADR 0008:
-- per community and credential; the same key and body answer the first result).
CREATE TABLE reward_redemption_keys (
    community      text        NOT NULL,
    credential_id  uuid        NOT NULL,
    key            text        NOT NULL,
    request_sha256 bytea       NOT NULL,
    redemption_id  uuid        NOT NULL
                       REFERENCES reward_redemptions (id) DEFERRABLE INITIALLY DEFERRED,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (community, credential_id, key)
);

-- A redemption's ledger debit names the reward it paid for.
ALTER TABLE redemptions ADD COLUMN reward_id uuid REFERENCES rewards (id);
