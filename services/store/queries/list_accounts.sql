-- $1 page cursor (exclusive), $2 labels that must be equal (object), $3 keys that must exist,
-- $4 keys that must be absent, $5 [key, value] pairs that must not be equal, $6 row limit.
SELECT account_id, display_name, role_arn, external_id, regions, labels, update_rate, poll_rate,
       max_tables_in_flight, settle_timeout_seconds, version, create_time, update_time
FROM accounts
WHERE ($1::text IS NULL OR account_id > $1)
  AND labels @> $2::jsonb
  AND labels ?& $3::text[]
  AND NOT (labels ?| $4::text[])
  AND NOT EXISTS (
      SELECT 1 FROM jsonb_array_elements($5::jsonb) AS ne(pair)
      WHERE accounts.labels ->> (ne.pair ->> 0) = ne.pair ->> 1
  )
ORDER BY account_id
LIMIT $6
