DELETE FROM accounts
WHERE account_id = $1
  AND ($2::bigint IS NULL OR version = $2)
