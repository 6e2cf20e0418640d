-- Claims up to $1 account-regions to scan, oldest scan first: pending ones, and running ones whose replica
-- stopped extending their lease, unless they have been claimed $4 times already (fail_exhausted_scan_targets
-- closes those). Each claim takes a new fencing token.
WITH claimable AS (
    SELECT t.scan_id, t.account_id, t.region
    FROM inventory_scan_targets t
    JOIN inventory_scans s USING (scan_id)
    WHERE s.state = 'RUNNING'
      AND (t.state = 'PENDING' OR (t.state = 'RUNNING' AND t.lease_expire_time <= now()))
      AND t.attempts < $4
    ORDER BY s.create_time, t.account_id, t.region
    LIMIT $1
    FOR UPDATE OF t SKIP LOCKED
)
UPDATE inventory_scan_targets t
SET state = 'RUNNING',
    lease_owner = $2,
    lease_token = nextval('inventory_scan_targets_lease_token_seq'),
    lease_expire_time = now() + make_interval(secs => $3),
    attempts = t.attempts + 1
FROM claimable c
WHERE t.scan_id = c.scan_id AND t.account_id = c.account_id AND t.region = c.region
RETURNING t.scan_id, t.account_id, t.region, t.lease_token AS "lease_token!", t.attempts
