-- Fails the account-regions whose replica stopped (their lease expired) $1 times: scanning them keeps killing
-- replicas, or the fleet keeps restarting; either way an operator should look. Returns their scans.
UPDATE inventory_scan_targets
SET state = 'FAILED', failure_kind = 'TRANSIENT',
    failure_message = 'the replica scanning this account-region stopped ' || attempts || ' times; refresh again',
    finish_time = now(), lease_owner = NULL, lease_token = NULL, lease_expire_time = NULL
WHERE state = 'RUNNING' AND lease_expire_time <= now() AND attempts >= $1
RETURNING scan_id
