-- Records what DescribeTable returned for a batch of tables of one scan (or a live read: $11 NULL), with the tags
-- a scan read ($12; NULL keeps the tags known before).
INSERT INTO table_inventory (account_id, region, table_name, mode, kms_key_arn, sse_status, table_status,
                             inaccessible_since, replicas, observe_time, last_scan_id, gone_time, tags)
SELECT t.account_id, t.region, t.table_name, t.mode, t.kms_key_arn, t.sse_status, t.table_status,
       t.inaccessible_since, t.replicas, t.observe_time, $11, NULL, t.tags
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::timestamptz[], $9::jsonb[], $10::timestamptz[], $12::jsonb[])
     AS t(account_id, region, table_name, mode, kms_key_arn, sse_status, table_status, inaccessible_since,
          replicas, observe_time, tags)
ON CONFLICT (account_id, region, table_name) DO UPDATE
SET mode = EXCLUDED.mode,
    kms_key_arn = EXCLUDED.kms_key_arn,
    sse_status = EXCLUDED.sse_status,
    table_status = EXCLUDED.table_status,
    inaccessible_since = EXCLUDED.inaccessible_since,
    replicas = EXCLUDED.replicas,
    observe_time = EXCLUDED.observe_time,
    last_scan_id = COALESCE(EXCLUDED.last_scan_id, table_inventory.last_scan_id),
    gone_time = NULL,
    tags = COALESCE(EXCLUDED.tags, table_inventory.tags)
-- A slower writer must not overwrite a newer observation.
WHERE table_inventory.observe_time <= EXCLUDED.observe_time
