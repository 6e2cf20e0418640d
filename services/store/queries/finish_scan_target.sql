-- Records a target's outcome, only under the lease that claimed it: a replica that lost its lease (it stalled and
-- another replica claimed the target) writes nothing.
UPDATE inventory_scan_targets
SET state = $4, tables_seen = $5, tables_gone = $6, failure_kind = $7, failure_message = $8, finish_time = now(),
    lease_owner = NULL, lease_token = NULL, lease_expire_time = NULL
WHERE scan_id = $1 AND account_id = $2 AND region = $3 AND lease_token = $9 AND state = 'RUNNING'
