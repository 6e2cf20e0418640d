-- Newest first. $1 cursor (history id, exclusive; NULL for the first page), $2 account, $3 region, $4 table,
-- $5 key ARN (from or to), $6 request, $7 finished at or after, $8 finished before, $9 limit, $10 the accounts the
-- caller may see (NULL: every account). The scope is applied here, before the limit, so a page (and the token made
-- from its last row) holds only rows the caller may see.
SELECT history_id, account_id, region, table_name, from_mode, from_key_arn, to_mode, to_key_arn, request_id,
       item_id, requested_by, approved_by, start_time, finish_time
FROM key_rotation_history
WHERE ($1::bigint IS NULL OR history_id < $1)
  AND ($2::text IS NULL OR account_id = $2)
  AND ($3::text IS NULL OR region = $3)
  AND ($4::text IS NULL OR table_name = $4)
  AND ($5::text IS NULL OR from_key_arn = $5 OR to_key_arn = $5)
  AND ($6::uuid IS NULL OR request_id = $6)
  AND ($7::timestamptz IS NULL OR finish_time >= $7)
  AND ($8::timestamptz IS NULL OR finish_time < $8)
  AND ($10::text[] IS NULL OR account_id = ANY($10))
ORDER BY history_id DESC
LIMIT $9
