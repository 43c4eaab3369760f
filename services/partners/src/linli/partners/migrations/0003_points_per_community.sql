-- Points belong to the community where they were earned, and a redemption is retry-safe
-- (issue #10, ADR 0028).
--
-- 1. A volunteer's account is per community: `volunteer:<community>:<id>` replaces
--    `volunteer:<id>`. Every existing leg moves to the account of its own `community`,
--    so the history is unchanged and only its account becomes precise. Before this, an
--    operator could redeem points earned in another community; where that happened, the
--    community that redeemed is short and one `transfer` entry group per shortfall moves
--    the points from the community that earned them (they were spent there in fact).
ALTER TABLE ledger_entries DROP CONSTRAINT ledger_entries_entry_kind_check;
ALTER TABLE ledger_entries ADD CONSTRAINT ledger_entries_entry_kind_check
    CHECK (entry_kind IN ('award', 'redemption', 'transfer'));

INSERT INTO balances (account, account_kind)
SELECT DISTINCT 'volunteer:' || community || ':' || substr(account, 11), 'volunteer'
FROM ledger_entries
WHERE account ~ '^volunteer:[0-9a-f-]{36}$'
ON CONFLICT DO NOTHING;

UPDATE ledger_entries SET account = 'volunteer:' || community || ':' || substr(account, 11)
WHERE account ~ '^volunteer:[0-9a-f-]{36}$';

DO $$
DECLARE
    short record;
    spare record;
    owed bigint;
    moved bigint;
    grp uuid;
BEGIN
    FOR short IN
        SELECT account, community, split_part(account, ':', 3) AS volunteer,
               -sum(amount) AS deficit
        FROM ledger_entries
        WHERE account LIKE 'volunteer:%:%'
        GROUP BY account, community
        HAVING sum(amount) < 0
    LOOP
        owed := short.deficit;
        FOR spare IN
            SELECT account, community, sum(amount) AS available
            FROM ledger_entries
            WHERE account LIKE 'volunteer:%:' || short.volunteer
            GROUP BY account, community
            HAVING sum(amount) > 0
            ORDER BY community
        LOOP
            EXIT WHEN owed = 0;
            moved := least(owed, spare.available);
            grp := gen_random_uuid();
            INSERT INTO ledger_entries
                (entry_group, community, account, amount, entry_kind, note, created_by)
            VALUES
                (grp, spare.community, spare.account, -moved, 'transfer',
                 'redeemed in ' || short.community || ' before balances were per community',
                 'migration:partners_0003'),
                (grp, short.community, short.account, moved, 'transfer',
                 'earned in ' || spare.community || ' before balances were per community',
                 'migration:partners_0003');
            owed := owed - moved;
        END LOOP;
    END LOOP;
END
$$;

UPDATE balances AS b SET balance = s.total, updated_at = now()
FROM (SELECT account, sum(amount) AS total FROM ledger_entries GROUP BY account) AS s
WHERE b.account = s.account AND b.account_kind = 'volunteer';

DELETE FROM balances WHERE account ~ '^volunteer:[0-9a-f-]{36}$';

-- A volunteer's balances in every community (the volunteer's own view).
CREATE INDEX balances_by_volunteer ON balances (split_part(account, ':', 3))
    WHERE account_kind = 'volunteer';

-- 2. Redemptions, each with its entry group, and the Idempotency-Keys that created them
--    (ADR 0008: per community and credential; the same key and body answer the first
--    redemption, another body 409).
CREATE TABLE redemptions (
    id            uuid        PRIMARY KEY,
    community     text        NOT NULL,
    volunteer_id  uuid        NOT NULL,
    points        bigint      NOT NULL CHECK (points > 0),
    balance_after bigint      NOT NULL CHECK (balance_after >= 0),
    entry_group   uuid        NOT NULL,
    note          text,
    created_by    text        NOT NULL,
    redeemed_at   timestamptz NOT NULL
);
CREATE INDEX redemptions_by_volunteer ON redemptions (community, volunteer_id, redeemed_at DESC);

CREATE TABLE idempotency_keys (
    community      text        NOT NULL,
    credential_id  uuid        NOT NULL,
    key            text        NOT NULL,
    request_sha256 bytea       NOT NULL,
    redemption_id  uuid        NOT NULL REFERENCES redemptions (id) DEFERRABLE INITIALLY DEFERRED,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (community, credential_id, key)
);
