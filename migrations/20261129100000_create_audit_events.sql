-- The audit log: one row per mutating call, allowed or refused, and per refused call of any kind. Append-only
-- like the key-rotation history: the database refuses UPDATE, DELETE and TRUNCATE.
CREATE TABLE audit_events (
    event_id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_time       timestamptz NOT NULL DEFAULT now(),
    -- The authenticated identity, or "unauthenticated" when the credentials were missing or bad.
    caller           text        NOT NULL CHECK (char_length(caller) BETWEEN 1 AND 512),
    -- token, jwt, mtls, insecure, or none.
    authenticated_by text        NOT NULL CHECK (authenticated_by IN ('token', 'jwt', 'mtls', 'insecure', 'none')),
    -- The RPC's method name, e.g. "CreateChangeRequest".
    method           text        NOT NULL CHECK (char_length(method) BETWEEN 1 AND 128),
    -- What the call was about, e.g. "account 123456789012" or "change request <uuid>"; never a secret.
    target           text        NOT NULL DEFAULT '' CHECK (char_length(target) <= 2048),
    -- The gRPC status code name the caller got: OK, INVALID_ARGUMENT, PERMISSION_DENIED, ...
    outcome          text        NOT NULL CHECK (outcome ~ '^[A-Z_]+$'),
    message          text        NOT NULL DEFAULT '' CHECK (char_length(message) <= 2048)
);

CREATE INDEX audit_events_newest_idx ON audit_events (event_id DESC);
CREATE INDEX audit_events_caller_idx ON audit_events (caller, event_id DESC);

CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_events_no_update_or_delete
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();

CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();
