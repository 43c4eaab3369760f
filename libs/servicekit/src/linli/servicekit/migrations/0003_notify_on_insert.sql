-- Background loops wake on NOTIFY <schema>_<name> (the outbox relay on <schema>_outbox,
-- scheduling's timers, notifications' delivery workers). A statement trigger sends it
-- inside the server, once per transaction at commit, and only when the statement added
-- rows: no round trip per row. The channel's suffix is the trigger's argument.
CREATE FUNCTION notify_on_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM added) THEN
        PERFORM pg_notify(TG_TABLE_SCHEMA || '_' || TG_ARGV[0], '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION notify_on_insert('outbox');
