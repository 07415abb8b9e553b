-- Every change to the invoices table tells the finance backends which company's
-- cached reads to drop: NOTIFY kisum_records 'invoices:<company>' (delivered
-- at commit; 'invoices:*' after a TRUNCATE). See src/record_cache.rs.
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

CREATE TRIGGER invoices_notify AFTER INSERT OR UPDATE OR DELETE ON invoices
    FOR EACH ROW EXECUTE FUNCTION kisum_notify_record_change();
CREATE TRIGGER invoices_notify_truncate AFTER TRUNCATE ON invoices
    FOR EACH STATEMENT EXECUTE FUNCTION kisum_notify_record_change();
