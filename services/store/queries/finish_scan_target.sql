UPDATE inventory_scan_targets
SET state = $4, tables_seen = $5, tables_gone = $6, failure_kind = $7, failure_message = $8, finish_time = now()
WHERE scan_id = $1 AND account_id = $2 AND region = $3
