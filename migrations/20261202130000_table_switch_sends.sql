-- Every UpdateTable AWS accepted, per table: the switch quota (4 encryption changes per table per 24 h) is spent
-- by accepted sends, not by completed changes. AWS as observed accepts a re-send during a change and counts it,
-- and a change whose later call failed still spent its first; the key-rotation history stays one row per change,
-- so the quota reads these rows (with the history, for switches found done whose send went unrecorded).
-- A global table's replica calls are recorded in the regions they change. Rows older than the quota's window are
-- pruned as the table's next send is recorded, so each table keeps a handful.
CREATE TABLE table_switch_sends (
    send_id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id          text        NOT NULL,
    region              text        NOT NULL,
    table_name          text        NOT NULL,
    -- When the UpdateTable was sent (the item's apply_time: the clock the history's start_time uses).
    sent_time           timestamptz NOT NULL,
    request_id          uuid        NULL,
    item_id             bigint      NULL
);

CREATE INDEX table_switch_sends_table_idx ON table_switch_sends (account_id, region, table_name, sent_time);
-- A change in the history counts only if its item has no recorded send (the quota query looks it up).
CREATE INDEX table_switch_sends_item_idx ON table_switch_sends (item_id);

-- The switches of the last day so far known only from the history.
INSERT INTO table_switch_sends (account_id, region, table_name, sent_time, request_id, item_id)
SELECT account_id, region, table_name, start_time, request_id, item_id
FROM key_rotation_history
WHERE start_time > now() - interval '24 hours';
