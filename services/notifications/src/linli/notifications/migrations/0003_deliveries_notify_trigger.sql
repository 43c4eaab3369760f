-- The delivery workers wake on NOTIFY <schema>_deliveries. A statement trigger sends it
-- inside the server, once per transaction at commit, and only when the statement added
-- deliveries: no round trip per consumed event.
CREATE FUNCTION deliveries_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM added) THEN
        PERFORM pg_notify(TG_TABLE_SCHEMA || '_deliveries', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER deliveries_notify AFTER INSERT ON deliveries
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION deliveries_notify();
