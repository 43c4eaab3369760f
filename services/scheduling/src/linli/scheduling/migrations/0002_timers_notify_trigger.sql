-- The timer loops wake on NOTIFY <schema>_timers so a short timer does not wait for a
-- poll. A statement trigger sends it inside the server, once per transaction at commit:
-- no round trip per timer.
CREATE FUNCTION timers_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '_timers', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER timers_notify AFTER INSERT ON timers
    FOR EACH STATEMENT EXECUTE FUNCTION timers_notify();
