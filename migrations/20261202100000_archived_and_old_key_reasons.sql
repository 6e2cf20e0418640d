-- Two more reasons (tablecrypt_core::ItemReason): an archived table, and a table whose current key DynamoDB can no
-- longer use (disabled or pending deletion), which no switch can rescue until the key is enabled again.
ALTER TABLE change_items DROP CONSTRAINT change_items_reason_check;
ALTER TABLE change_items ADD CONSTRAINT change_items_reason_check
    CHECK (reason IS NULL OR reason IN ('KEY_MISSING', 'KEY_DISABLED', 'KEY_PENDING_DELETION', 'KEY_ASYMMETRIC',
        'KEY_IN_OTHER_REGION', 'KEY_IN_OTHER_ACCOUNT', 'SWITCH_QUOTA_EXHAUSTED', 'GLOBAL_TABLE_NOT_COVERED',
        'TABLE_NOT_ACTIVE', 'TABLE_INACCESSIBLE', 'TABLE_NOT_FOUND', 'ACCOUNT_UNREACHABLE', 'ACCESS_DENIED',
        'THROTTLED', 'AWS_ERROR', 'TABLE_ARCHIVED', 'CURRENT_KEY_UNUSABLE'));

-- Which UpdateTable an item last sent (tablecrypt_core::change::apply::CallKind), with apply_time: a global table
-- is changed in calls of one concern each, and the settle rule waits only for the call that was sent.
ALTER TABLE change_items ADD COLUMN apply_call text NULL
    CHECK (apply_call IN ('SSE', 'REPLICA_KEYS', 'REPLICA_SSE'));

-- HTTP 5xx answers to this item's UpdateTable since one was last accepted: sent a bounded number of times, then
-- failed with AWS's message (an asymmetric key answers 500 on every try).
ALTER TABLE change_items ADD COLUMN server_errors integer NOT NULL DEFAULT 0 CHECK (server_errors >= 0);
