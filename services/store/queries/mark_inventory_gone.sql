-- Tables of an account-region that a completed listing did not return: mark gone, keep the row.
UPDATE table_inventory
SET gone_time = $4
WHERE account_id = $1
  AND region = $2
  AND gone_time IS NULL
  AND observe_time < $4
  AND NOT (table_name = ANY($3::text[]))
