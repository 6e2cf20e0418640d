-- UpdateTable was accepted: the item waits for the table (and the run of 5xx answers is over), fenced by the
-- claim's token $2, and the send is recorded against the switch quota of the table in each region of $3 (the
-- item's own region, or the replica regions a replica call changes), at the item's recorded send time. The
-- table's sends older than the quota's window are pruned in the same statement. Returns 1 if the item was
-- updated, 0 if the claim lost its lease (then nothing is recorded).
WITH waiting AS (
    UPDATE change_items SET state = 'WAITING', server_errors = 0, update_time = now()
    WHERE item_id = $1 AND lease_token = $2 AND state IN ('APPLYING', 'WAITING')
    RETURNING item_id, request_id, account_id, table_name, coalesce(apply_time, now()) AS sent_time
),
recorded AS (
    INSERT INTO table_switch_sends (account_id, region, table_name, sent_time, request_id, item_id)
    SELECT w.account_id, r.region, w.table_name, w.sent_time, w.request_id, w.item_id
    FROM waiting w, unnest($3::text[]) AS r(region)
    RETURNING 1
),
pruned AS (
    DELETE FROM table_switch_sends s
    USING waiting w, unnest($3::text[]) AS r(region)
    WHERE s.account_id = w.account_id AND s.region = r.region AND s.table_name = w.table_name
      AND s.sent_time < now() - interval '24 hours'
    RETURNING 1
)
SELECT count(*) AS "updated!" FROM waiting
