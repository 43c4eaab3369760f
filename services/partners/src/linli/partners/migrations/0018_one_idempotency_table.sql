-- One Idempotency-Key table for partners (ADR 0008): the points debits' keys and the
-- reward redemptions' keys (0007 gave them a table of their own) live together, told
-- apart by `operation`, so a key keeps the meaning it had in its own table. The stored
-- id is the result of whichever operation claimed the key, so it no longer references
-- one table.
ALTER TABLE idempotency_keys DROP CONSTRAINT IF EXISTS idempotency_keys_redemption_id_fkey;
ALTER TABLE idempotency_keys RENAME COLUMN redemption_id TO result_id;
ALTER TABLE idempotency_keys ADD COLUMN operation text NOT NULL DEFAULT 'points.redeem';
ALTER TABLE idempotency_keys ALTER COLUMN operation DROP DEFAULT;
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_pkey;
ALTER TABLE idempotency_keys ADD PRIMARY KEY (community, credential_id, operation, key);

INSERT INTO idempotency_keys
    (community, credential_id, operation, key, request_sha256, result_id, created_at)
SELECT community, credential_id, 'reward.redemption', key, request_sha256, redemption_id,
       created_at
FROM reward_redemption_keys;

DROP TABLE reward_redemption_keys;
