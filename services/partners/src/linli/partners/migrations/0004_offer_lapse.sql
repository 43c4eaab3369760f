-- Partners decides whether an offer was answered in time or lapsed (ADR 0026): the
-- lapse sweep moves an open offer past its expiry to `expired`, under the same row lock
-- an answer takes, and emits `offer.lapsed`.
ALTER TABLE offers DROP CONSTRAINT offers_status_check;
ALTER TABLE offers ADD CONSTRAINT offers_status_check CHECK (status IN (
    'open', 'accepted', 'declined', 'expired', 'withdrawn', 'completed', 'failed'));

-- The sweep reads the open offers by expiry.
CREATE INDEX offers_open_by_expiry ON offers (expires_at) WHERE status = 'open';

-- The sweep wakes on NOTIFY <schema>_offers when an offer arrives (one per statement), so
-- an offer that expires sooner than the one it sleeps for is not missed until the poll.
CREATE TRIGGER offers_notify AFTER INSERT ON offers
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION notify_on_insert('offers');
