-- The timer loops wake on NOTIFY <schema>_timers, sent by servicekit's notify_on_insert
-- once per transaction that added timers (no round trip per timer).
CREATE TRIGGER timers_notify AFTER INSERT ON timers
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION notify_on_insert('timers');
