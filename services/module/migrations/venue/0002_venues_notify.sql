-- Every change to the venues table tells the venue backends which company's
-- cached reads to drop: NOTIFY kisum_records 'venues:<company>' (delivered
-- at commit; 'venues:*' after a TRUNCATE). See src/record_cache.rs.
CREATE OR REPLACE FUNCTION kisum_notify_record_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('kisum_records', TG_TABLE_NAME || ':*');
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM pg_notify('kisum_records', TG_TABLE_NAME || ':' || OLD.company);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM pg_notify('kisum_records', TG_TABLE_NAME || ':' || NEW.company);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER venues_notify AFTER INSERT OR UPDATE OR DELETE ON venues
    FOR EACH ROW EXECUTE FUNCTION kisum_notify_record_change();
CREATE TRIGGER venues_notify_truncate AFTER TRUNCATE ON venues
    FOR EACH STATEMENT EXECUTE FUNCTION kisum_notify_record_change();
