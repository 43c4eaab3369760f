-- Outbox rows the server refuses (no stream for the subject, over max payload, denied
-- by permissions) are retried with a growing delay and, after LINLI_OUTBOX_MAX_ATTEMPTS
-- refusals, quarantined with the reason, so they no longer hold up the relay (ADR 0029).
-- `last_error` holds a reason code, the error class and the server's description:
-- never the payload. `attempts` still counts every try, outages included.
ALTER TABLE outbox
    ADD COLUMN refusals        integer NOT NULL DEFAULT 0,
    ADD COLUMN next_attempt_at timestamptz,
    ADD COLUMN last_error      text,
    ADD COLUMN quarantined_at  timestamptz;

DROP INDEX outbox_unsent;
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL AND quarantined_at IS NULL;
CREATE INDEX outbox_quarantined ON outbox (id) WHERE quarantined_at IS NOT NULL;
