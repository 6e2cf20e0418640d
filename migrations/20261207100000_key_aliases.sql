-- Each account-region's KMS aliases as its last scan listed them (ListAliases), so keys are shown by alias next
-- to their ARNs.
-- old replicas: a new table and its index; older releases never read or write it.
CREATE TABLE key_aliases (
    account_id   text        NOT NULL REFERENCES accounts (account_id) ON DELETE CASCADE,
    region       text        NOT NULL CHECK (region ~ '^[a-z]{2}(-[a-z]+)+-[0-9]+$'),
    alias_name   text        NOT NULL CHECK (alias_name LIKE 'alias/%' AND length(alias_name) <= 256),
    key_arn      text        NOT NULL CHECK (key_arn LIKE 'arn:%:kms:%:key/%'),
    observe_time timestamptz NOT NULL,
    PRIMARY KEY (account_id, region, alias_name)
);
CREATE INDEX key_aliases_key_idx ON key_aliases (key_arn);
