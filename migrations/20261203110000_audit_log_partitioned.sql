-- The audit log with a retention the append-only guarantee allows: audit_log is partitioned by month of
-- event_time, so old months are dropped whole (DROP TABLE audit_log_YYYY_MM, by whoever maintains the database;
-- tablecrypt never drops one), while single rows still cannot be changed or deleted. An existing table cannot be
-- turned into a partitioned one, so new rows go here and audit_events keeps the rows written before, read
-- together with these (event ids continue from its sequence).
CREATE TABLE audit_log (
    event_id         bigint      NOT NULL DEFAULT nextval('audit_events_event_id_seq'),
    event_time       timestamptz NOT NULL DEFAULT now(),
    caller           text        NOT NULL CHECK (char_length(caller) BETWEEN 1 AND 512),
    authenticated_by text        NOT NULL CHECK (authenticated_by IN ('token', 'jwt', 'mtls', 'insecure', 'none')),
    method           text        NOT NULL CHECK (char_length(method) BETWEEN 1 AND 128),
    target           text        NOT NULL DEFAULT '' CHECK (char_length(target) <= 2048),
    outcome          text        NOT NULL CHECK (outcome ~ '^[A-Z_]+$'),
    message          text        NOT NULL DEFAULT '' CHECK (char_length(message) <= 2048),
    peer             text        NULL,
    call_count       integer     NOT NULL DEFAULT 1 CHECK (call_count >= 1),
    first_time       timestamptz NULL,
    PRIMARY KEY (event_id, event_time)
) PARTITION BY RANGE (event_time);

CREATE INDEX audit_log_newest_idx ON audit_log (event_id DESC);
CREATE INDEX audit_log_caller_idx ON audit_log (caller, event_id DESC);

-- Rows of a month without its partition (the service was down when it should have made it) land here.
CREATE TABLE audit_log_default PARTITION OF audit_log DEFAULT;

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused (drop a whole old month instead)', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

-- Row triggers on the parent are cloned to every partition, present and future.
CREATE TRIGGER audit_log_no_update_or_delete
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

-- Creates the partition of the month starting at `month` (UTC) unless it exists; false when it cannot: the
-- default partition already holds rows of that month (they stay there), or the lock on audit_log was not had
-- within 2 s (creating a partition locks the table against the audit inserts for that moment; a long reader must
-- not make every audited call wait behind it; the next try is hours later). Replicas creating the same month at
-- once take turns on an advisory lock.
CREATE FUNCTION audit_log_ensure_month(month date) RETURNS boolean LANGUAGE plpgsql
SET timezone = 'UTC' AS $$
DECLARE
    first date := date_trunc('month', month)::date;
    name  text := format('audit_log_%s', to_char(first, 'YYYY_MM'));
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('audit_log_ensure_month'));
    IF to_regclass(name) IS NOT NULL THEN
        RETURN true;
    END IF;
    IF EXISTS (SELECT 1 FROM audit_log_default
               WHERE event_time >= first AND event_time < first + interval '1 month') THEN
        RETURN false;
    END IF;
    SET LOCAL lock_timeout = '2s';
    BEGIN
        EXECUTE format('CREATE TABLE %I PARTITION OF audit_log FOR VALUES FROM (%L) TO (%L)',
                       name, first::timestamptz, (first + interval '1 month')::timestamptz);
        -- A partition created later does not get the parent's TRUNCATE trigger: give it its own.
        EXECUTE format('CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON %I
                        FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()', name);
    EXCEPTION
        WHEN duplicate_table THEN RETURN true;
        WHEN lock_not_available THEN RETURN false;
    END;
    RETURN true;
END;
$$;

SELECT audit_log_ensure_month(now()::date);
SELECT audit_log_ensure_month((now() + interval '1 month')::date);
CREATE TRIGGER audit_log_default_no_truncate BEFORE TRUNCATE ON audit_log_default
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
