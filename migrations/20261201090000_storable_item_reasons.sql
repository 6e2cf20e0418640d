-- Every reason the planner can give must be storable. A BLOCKED item may have no target key ARN: its key could
-- not be resolved in the table's account-region (KEY_MISSING, KEY_IN_OTHER_REGION, KEY_IN_OTHER_ACCOUNT, an
-- unreachable account), and the old check refused such a plan with an internal error. Every item that may still
-- be applied keeps its key ARN whenever its target is a customer managed key.
ALTER TABLE change_items DROP CONSTRAINT change_items_check;
ALTER TABLE change_items ADD CONSTRAINT change_items_target_key_check
    CHECK (state = 'BLOCKED' OR (to_mode = 'CUSTOMER_MANAGED') = (to_key_arn IS NOT NULL));

-- Reasons are tablecrypt_core::ItemReason names (a store test checks this list against the enum).
ALTER TABLE change_items ADD CONSTRAINT change_items_reason_check
    CHECK (reason IS NULL OR reason IN ('KEY_MISSING', 'KEY_DISABLED', 'KEY_PENDING_DELETION', 'KEY_ASYMMETRIC',
        'KEY_IN_OTHER_REGION', 'KEY_IN_OTHER_ACCOUNT', 'SWITCH_QUOTA_EXHAUSTED', 'GLOBAL_TABLE_NOT_COVERED',
        'TABLE_NOT_ACTIVE', 'TABLE_INACCESSIBLE', 'TABLE_NOT_FOUND', 'ACCOUNT_UNREACHABLE', 'ACCESS_DENIED',
        'THROTTLED', 'AWS_ERROR'));
