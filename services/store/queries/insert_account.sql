INSERT INTO accounts (account_id, display_name, role_arn, external_id, regions, labels)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (account_id) DO NOTHING
RETURNING account_id, display_name, role_arn, external_id, regions, labels, version, create_time, update_time
