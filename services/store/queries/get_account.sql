SELECT account_id, display_name, role_arn, external_id, regions, labels, update_rate, poll_rate,
       max_tables_in_flight, settle_timeout_seconds, version, create_time, update_time
FROM accounts
WHERE account_id = $1
