-- Inserts a request's planned items in plan order. $1 request id, then one array per column (same length).
INSERT INTO change_items (request_id, ordinal, account_id, region, table_name, state, canary, from_mode,
                          from_key_arn, to_mode, to_key_arn, replicas, reason, message, next_attempt_time,
                          finish_time)
SELECT $1, t.ordinal::integer, t.account_id, t.region, t.table_name, t.state, t.canary, t.from_mode, t.from_key_arn,
       t.to_mode, t.to_key_arn, t.replicas, t.reason, t.message, coalesce(t.next_attempt_time, now()),
       CASE WHEN t.state IN ('SKIPPED', 'BLOCKED') THEN now() END
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::bool[], $7::text[], $8::text[], $9::text[],
            $10::text[], $11::jsonb[], $12::text[], $13::text[], $14::timestamptz[])
     WITH ORDINALITY AS t(account_id, region, table_name, state, canary, from_mode, from_key_arn, to_mode,
                          to_key_arn, replicas, reason, message, next_attempt_time, ordinal)
