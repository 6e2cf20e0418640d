SELECT account_id, region, table_name, mode, kms_key_arn, sse_status, table_status, inaccessible_since,
       replicas, observe_time, gone_time, tags
FROM table_inventory
WHERE account_id = $1 AND region = $2 AND table_name = $3
