-- $1-$3 cursor (account, region, table; exclusive), $4 account ids, $5-$8 account label selector (as in
-- list_accounts.sql), $9 regions, $10 mode, $11 key ARNs (table or replica key), $12 name prefix,
-- $13 inaccessible only, $14 include gone, $15 limit, $16-$19 table tag selector (as the account label selector,
-- over the tags the last scan read; a table whose tags were never read matches no tag term).
SELECT i.account_id, i.region, i.table_name, i.mode, i.kms_key_arn, i.sse_status, i.table_status,
       i.inaccessible_since, i.replicas, i.observe_time, i.gone_time, i.tags
FROM table_inventory i
JOIN accounts a ON a.account_id = i.account_id
WHERE ($1::text IS NULL OR (i.account_id, i.region, i.table_name) > ($1, $2::text, $3::text))
  AND (cardinality($4::text[]) = 0 OR i.account_id = ANY($4))
  AND a.labels @> $5::jsonb
  AND a.labels ?& $6::text[]
  AND NOT (a.labels ?| $7::text[])
  AND NOT EXISTS (
      SELECT 1 FROM jsonb_array_elements($8::jsonb) AS ne(pair)
      WHERE a.labels ->> (ne.pair ->> 0) = ne.pair ->> 1
  )
  AND (cardinality($9::text[]) = 0 OR i.region = ANY($9))
  AND ($10::text IS NULL OR i.mode = $10)
  AND (cardinality($11::text[]) = 0
       OR i.kms_key_arn = ANY($11)
       OR EXISTS (SELECT 1 FROM jsonb_array_elements(i.replicas) r WHERE r ->> 'key_arn' = ANY($11)))
  AND ($12::text IS NULL OR starts_with(i.table_name, $12))
  AND (NOT $13::bool OR i.inaccessible_since IS NOT NULL)
  AND ($14::bool OR i.gone_time IS NULL)
  AND (($16::jsonb = '{}'::jsonb AND cardinality($17::text[]) = 0 AND cardinality($18::text[]) = 0
        AND $19::jsonb = '[]'::jsonb)
       OR (i.tags @> $16::jsonb
           AND i.tags ?& $17::text[]
           AND NOT (i.tags ?| $18::text[])
           AND NOT EXISTS (
               SELECT 1 FROM jsonb_array_elements($19::jsonb) AS tne(pair)
               WHERE i.tags ->> (tne.pair ->> 0) = tne.pair ->> 1
           )))
ORDER BY i.account_id, i.region, i.table_name
LIMIT $15
