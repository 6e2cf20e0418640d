INSERT INTO accounts (account_id, display_name, role_arn, external_id, regions, labels, update_rate, poll_rate,
                      max_tables_in_flight, settle_timeout_seconds)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (account_id) DO NOTHING
RETURNING account_id, display_name, role_arn, external_id, regions, labels, update_rate, poll_rate,
       max_tables_in_flight, settle_timeout_seconds, version, create_time, update_time
