-- The delivery workers wake on NOTIFY <schema>_deliveries, sent by servicekit's
-- notify_on_insert once per transaction that added deliveries (no round trip per event).
CREATE TRIGGER deliveries_notify AFTER INSERT ON deliveries
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION notify_on_insert('deliveries');
