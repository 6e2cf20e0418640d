UPDATE accounts
SET display_name = $3,
    role_arn = $4,
    external_id = $5,
    regions = $6,
    labels = $7,
    update_rate = $8,
    poll_rate = $9,
    max_tables_in_flight = $10,
    settle_timeout_seconds = $11,
    version = version + 1,
    update_time = greatest(now(), create_time)
WHERE account_id = $1 AND version = $2
RETURNING account_id, display_name, role_arn, external_id, regions, labels, update_rate, poll_rate,
       max_tables_in_flight, settle_timeout_seconds, version, create_time, update_time
