INSERT INTO inventory_scan_targets (scan_id, account_id, region, state)
SELECT $1, t.account_id, t.region, 'PENDING'
FROM unnest($2::text[], $3::text[]) AS t(account_id, region)
