-- Table tags as the last scan read them (ListTagsOfResource): selectors choose tables by tag, and tags say which
-- tables belong to infrastructure as code. NULL: never read (a member role without dynamodb:ListTagsOfResource
-- cannot, and a failed read keeps what was known).
-- A new nullable column without a default: no rewrite, and nothing to check in existing rows. (No index: tag terms
-- narrow rows already chosen by account, region and key; a GIN index would cost every scan's upsert.)
ALTER TABLE table_inventory ADD COLUMN tags jsonb NULL;
-- old replicas: they never write the column (their upserts keep it). NOT VALID: no scan under the lock.
ALTER TABLE table_inventory ADD CONSTRAINT table_inventory_tags_check
    CHECK (tags IS NULL OR jsonb_typeof(tags) = 'object') NOT VALID;

-- A request that changes tables owned by infrastructure as code too (tablecrypt_core::iac); planned BLOCKED
-- IAC_OWNED otherwise.
ALTER TABLE change_requests ADD COLUMN include_iac_owned boolean NOT NULL DEFAULT false;

-- One more reason (tablecrypt_core::ItemReason::IacOwned).
-- old replicas: the wider check refuses nothing an older replica writes (it allowed a subset of these values); an
-- older replica never claims a BLOCKED item, and one asked to list an IAC_OWNED item reports the row as unreadable
-- until it is upgraded.
ALTER TABLE change_items DROP CONSTRAINT change_items_reason_check;
ALTER TABLE change_items ADD CONSTRAINT change_items_reason_check
    CHECK (reason IS NULL OR reason IN ('KEY_MISSING', 'KEY_DISABLED', 'KEY_PENDING_DELETION', 'KEY_ASYMMETRIC',
        'KEY_IN_OTHER_REGION', 'KEY_IN_OTHER_ACCOUNT', 'SWITCH_QUOTA_EXHAUSTED', 'GLOBAL_TABLE_NOT_COVERED',
        'TABLE_NOT_ACTIVE', 'TABLE_INACCESSIBLE', 'TABLE_NOT_FOUND', 'ACCOUNT_UNREACHABLE', 'ACCESS_DENIED',
        'THROTTLED', 'AWS_ERROR', 'TABLE_ARCHIVED', 'CURRENT_KEY_UNUSABLE', 'IAC_OWNED')) NOT VALID;
-- NOT VALID: existing rows were checked by the narrower check already, so change_items is not scanned under the lock.
