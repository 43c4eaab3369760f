-- The relay wakes on NOTIFY <schema>_outbox. A statement trigger sends it inside the
-- server, at commit, once per transaction whatever the number of rows: no round trip
-- per enqueued event.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '_outbox', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
