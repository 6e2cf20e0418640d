SELECT account_id, display_name, role_arn, external_id, regions, labels, version, create_time, update_time
FROM accounts
WHERE account_id = $1
