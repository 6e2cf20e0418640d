-- Notifications as an outbox. A trigger records every change of a change request's state that someone may be
-- waiting for (approval needed, paused, failed, succeeded), in the transaction that made it, whatever code path
-- made it; the servers' notifiers fan each event out to the configured sinks and deliver with retries. A crash
-- between a state change and its delivery loses nothing; a crash during a delivery repeats it (at least once).

CREATE TABLE request_events (
    event_id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id          uuid        NOT NULL REFERENCES change_requests (request_id) ON DELETE CASCADE,
    state               text        NOT NULL,
    -- The request's pause_reason when it paused (failure threshold, canary, or the operator and why).
    reason              text        NULL,
    event_time          timestamptz NOT NULL DEFAULT now(),
    -- Set once a notifier has decided which sinks hear of the event (their rows are in notification_deliveries).
    routed              boolean     NOT NULL DEFAULT false
);

CREATE INDEX request_events_unrouted_idx ON request_events (event_id) WHERE NOT routed;

CREATE FUNCTION record_request_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state IN ('PENDING_APPROVAL', 'PAUSED', 'SUCCEEDED', 'PARTIALLY_FAILED', 'FAILED')
       AND (TG_OP = 'INSERT' OR OLD.state IS DISTINCT FROM NEW.state) THEN
        INSERT INTO request_events (request_id, state, reason)
        VALUES (NEW.request_id, NEW.state, CASE WHEN NEW.state = 'PAUSED' THEN NEW.pause_reason END);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER change_requests_record_events
    AFTER INSERT OR UPDATE OF state ON change_requests
    FOR EACH ROW EXECUTE FUNCTION record_request_event();

-- One row per event and sink that hears of it: delivered, given up after the configured attempts, or due again.
CREATE TABLE notification_deliveries (
    event_id            bigint      NOT NULL REFERENCES request_events (event_id) ON DELETE CASCADE,
    sink                text        NOT NULL CHECK (length(sink) BETWEEN 1 AND 64),
    attempts            integer     NOT NULL DEFAULT 0,
    -- When the next attempt is due; while an attempt is under way, when its lease ends (another replica may
    -- then try: an endpoint slower than the lease may hear of an event twice).
    next_attempt_time   timestamptz NOT NULL DEFAULT now(),
    delivered_time      timestamptz NULL,
    abandoned_time      timestamptz NULL,
    last_error          text        NULL CHECK (last_error IS NULL OR length(last_error) <= 1024),
    PRIMARY KEY (event_id, sink),
    CHECK (delivered_time IS NULL OR abandoned_time IS NULL)
);

CREATE INDEX notification_deliveries_due_idx ON notification_deliveries (next_attempt_time)
    WHERE delivered_time IS NULL AND abandoned_time IS NULL;

-- Deliveries are audited with the server itself as the caller (`tablecrypt:notifier`), authenticated by nobody
-- but being the server: widen the check.
-- old replicas: the wider check refuses nothing an older replica writes (it allowed a subset of these values).
ALTER TABLE audit_log DROP CONSTRAINT audit_log_authenticated_by_check;
ALTER TABLE audit_log ADD CONSTRAINT audit_log_authenticated_by_check
    CHECK (authenticated_by IN ('token', 'jwt', 'mtls', 'insecure', 'none', 'server'));
