-- Inventory scans: one row per RefreshInventory (or periodic scan), one row per account-region it covers.
CREATE TABLE inventory_scans (
    scan_id       uuid        PRIMARY KEY,
    state         text        NOT NULL CHECK (state IN ('RUNNING', 'SUCCEEDED', 'PARTIALLY_FAILED', 'FAILED')),
    -- Who asked (the caller identity header until authentication exists), or "periodic".
    requested_by  text        NOT NULL,
    create_time   timestamptz NOT NULL DEFAULT now(),
    finish_time   timestamptz NULL,
    CHECK ((state = 'RUNNING') = (finish_time IS NULL))
);

CREATE TABLE inventory_scan_targets (
    scan_id        uuid        NOT NULL REFERENCES inventory_scans (scan_id) ON DELETE CASCADE,
    account_id     text        NOT NULL CHECK (account_id ~ '^[0-9]{12}$'),
    region         text        NOT NULL CHECK (region ~ '^[a-z]{2}(-[a-z]+)+-[0-9]+$'),
    state          text        NOT NULL CHECK (state IN ('PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED')),
    tables_seen    integer     NOT NULL DEFAULT 0 CHECK (tables_seen >= 0),
    tables_gone    integer     NOT NULL DEFAULT 0 CHECK (tables_gone >= 0),
    failure_kind   text        NULL,
    failure_message text       NULL,
    finish_time    timestamptz NULL,
    PRIMARY KEY (scan_id, account_id, region),
    CHECK ((state = 'FAILED') = (failure_kind IS NOT NULL))
);

-- What every table was last seen encrypted with. One row per (account, region, table); a table that a scan no
-- longer finds is marked gone, not deleted.
CREATE TABLE table_inventory (
    account_id         text        NOT NULL REFERENCES accounts (account_id) ON DELETE CASCADE,
    region             text        NOT NULL CHECK (region ~ '^[a-z]{2}(-[a-z]+)+-[0-9]+$'),
    table_name         text        NOT NULL CHECK (table_name ~ '^[A-Za-z0-9_.-]{3,255}$'),
    mode               text        NOT NULL CHECK (mode IN ('AWS_OWNED', 'AWS_MANAGED', 'CUSTOMER_MANAGED')),
    kms_key_arn        text        NULL CHECK (kms_key_arn IS NULL OR kms_key_arn LIKE 'arn:%:kms:%:key/%'),
    sse_status         text        NOT NULL,
    table_status       text        NOT NULL,
    inaccessible_since timestamptz NULL,
    replicas           jsonb       NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(replicas) = 'array'),
    observe_time       timestamptz NOT NULL,
    last_scan_id       uuid        NULL REFERENCES inventory_scans (scan_id) ON DELETE SET NULL,
    gone_time          timestamptz NULL,
    PRIMARY KEY (account_id, region, table_name),
    CHECK ((mode = 'AWS_OWNED') = (kms_key_arn IS NULL))
);

CREATE INDEX table_inventory_key_idx ON table_inventory (kms_key_arn) WHERE kms_key_arn IS NOT NULL;
CREATE INDEX table_inventory_inaccessible_idx ON table_inventory (account_id, region) WHERE inaccessible_since IS NOT NULL;
