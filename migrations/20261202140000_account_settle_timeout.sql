-- An account's own settle timeout (seconds): how long a table may show no sign of an accepted UpdateTable before
-- the item sends it again. NULL: the service's worker_settle_timeout.
ALTER TABLE accounts ADD COLUMN settle_timeout_seconds double precision NULL
    CHECK (settle_timeout_seconds >= 1 AND settle_timeout_seconds <= 86400);
