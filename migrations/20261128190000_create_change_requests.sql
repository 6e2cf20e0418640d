-- Change requests, their items, the key-rotation history and the shared rate-limit slots the workers use.

CREATE TABLE change_requests (
    request_id          uuid        PRIMARY KEY,
    -- The caller's idempotency key: the same key returns the same request.
    idempotency_key     text        NULL UNIQUE CHECK (idempotency_key IS NULL OR length(idempotency_key) BETWEEN 1 AND 128),
    state               text        NOT NULL CHECK (state IN ('PENDING_APPROVAL', 'QUEUED', 'RUNNING', 'PAUSED',
                                        'CANCELLING', 'SUCCEEDED', 'PARTIALLY_FAILED', 'FAILED', 'CANCELLED')),
    description         text        NOT NULL DEFAULT '' CHECK (length(description) <= 1024),
    -- What the request asked for, as given (selector or table list), for audit and display.
    targets             jsonb       NOT NULL,
    -- NULL only for a rollback, whose items each return to their own earlier mode and key.
    target_mode         text        NULL CHECK (target_mode IN ('AWS_OWNED', 'AWS_MANAGED', 'CUSTOMER_MANAGED')),
    -- The key as the caller gave it (ARN, id or alias); items hold the ARN it resolved to per account-region.
    target_key          text        NULL CHECK ((target_mode = 'CUSTOMER_MANAGED') = (target_key IS NOT NULL)),
    -- Caps that may only lower the service's limits (NULL: the service's).
    max_updates_per_second double precision NULL CHECK (max_updates_per_second IS NULL OR max_updates_per_second > 0),
    max_in_flight       integer     NULL CHECK (max_in_flight IS NULL OR max_in_flight BETWEEN 1 AND 500),
    -- Failed items that pause the request (NULL: never pause).
    failure_threshold   integer     NULL CHECK (failure_threshold IS NULL OR failure_threshold >= 1),
    -- Items applied and verified before the rest start.
    canary_count        integer     NOT NULL DEFAULT 0 CHECK (canary_count >= 0),
    canary_passed       boolean     NOT NULL DEFAULT false,
    -- The request this one rolls back, if it is a rollback.
    rollback_of         uuid        NULL REFERENCES change_requests (request_id),
    pause_reason        text        NULL,
    created_by          text        NOT NULL,
    approved_by         text        NULL,
    create_time         timestamptz NOT NULL DEFAULT now(),
    approve_time        timestamptz NULL,
    start_time          timestamptz NULL,
    finish_time         timestamptz NULL,
    update_time         timestamptz NOT NULL DEFAULT now(),
    CHECK (approved_by IS NULL OR approved_by <> created_by),
    CHECK (target_mode IS NOT NULL OR rollback_of IS NOT NULL),
    CHECK ((state IN ('SUCCEEDED', 'PARTIALLY_FAILED', 'FAILED', 'CANCELLED')) = (finish_time IS NOT NULL))
);

CREATE INDEX change_requests_state_idx ON change_requests (state, create_time DESC);

CREATE TABLE change_items (
    item_id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id          uuid        NOT NULL REFERENCES change_requests (request_id) ON DELETE CASCADE,
    -- Position in the plan: canaries are the first `canary_count` items that change something.
    ordinal             integer     NOT NULL,
    account_id          text        NOT NULL CHECK (account_id ~ '^[0-9]{12}$'),
    region              text        NOT NULL CHECK (region ~ '^[a-z]{2}(-[a-z]+)+-[0-9]+$'),
    table_name          text        NOT NULL CHECK (table_name ~ '^[A-Za-z0-9_.-]{3,255}$'),
    state               text        NOT NULL CHECK (state IN ('PENDING', 'APPLYING', 'WAITING', 'DEFERRED',
                                        'SUCCEEDED', 'FAILED', 'SKIPPED', 'BLOCKED', 'CANCELLED')),
    canary              boolean     NOT NULL DEFAULT false,
    -- What the table had when planned (the rollback target), and what it must end with.
    from_mode           text        NOT NULL CHECK (from_mode IN ('AWS_OWNED', 'AWS_MANAGED', 'CUSTOMER_MANAGED')),
    from_key_arn        text        NULL,
    to_mode             text        NOT NULL CHECK (to_mode IN ('AWS_OWNED', 'AWS_MANAGED', 'CUSTOMER_MANAGED')),
    to_key_arn          text        NULL,
    -- Global tables: [{"region": ..., "from_key_arn": ..., "to_key_arn": ...}] for every replica.
    replicas            jsonb       NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(replicas) = 'array'),
    -- Why the item is blocked, deferred or failed: a reason code and a sentence.
    reason              text        NULL,
    message             text        NULL,
    attempts            integer     NOT NULL DEFAULT 0,
    next_attempt_time   timestamptz NOT NULL DEFAULT now(),
    -- Set once UpdateTable was sent: from then on the table may be changing, so a reclaimed item polls first.
    apply_time          timestamptz NULL,
    lease_owner         uuid        NULL,
    lease_expire_time   timestamptz NULL,
    finish_time         timestamptz NULL,
    update_time         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (request_id, account_id, region, table_name),
    UNIQUE (request_id, ordinal),
    CHECK ((to_mode = 'CUSTOMER_MANAGED') = (to_key_arn IS NOT NULL)),
    CHECK ((state IN ('SUCCEEDED', 'FAILED', 'SKIPPED', 'BLOCKED', 'CANCELLED')) = (finish_time IS NOT NULL)),
    CHECK ((state IN ('APPLYING', 'WAITING')) = (lease_owner IS NOT NULL))
);

-- What workers claim: due items of live requests, and items whose lease expired.
CREATE INDEX change_items_claimable_idx ON change_items (next_attempt_time)
    WHERE state IN ('PENDING', 'DEFERRED');
CREATE INDEX change_items_leased_idx ON change_items (lease_expire_time)
    WHERE state IN ('APPLYING', 'WAITING');
CREATE INDEX change_items_request_idx ON change_items (request_id, state, ordinal);
-- WatchChangeRequest reads what changed since its last look.
CREATE INDEX change_items_update_idx ON change_items (request_id, update_time);

-- One row per table change tablecrypt actually made. Append-only: it drives the switch quota and rollback and is
-- the audit record, so the database refuses UPDATE and DELETE.
CREATE TABLE key_rotation_history (
    history_id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id          text        NOT NULL,
    region              text        NOT NULL,
    table_name          text        NOT NULL,
    from_mode           text        NOT NULL,
    from_key_arn        text        NULL,
    to_mode             text        NOT NULL,
    to_key_arn          text        NULL,
    request_id          uuid        NOT NULL,
    -- At most one row per item: a reclaimed item that finds its change done records nothing twice.
    item_id             bigint      NOT NULL UNIQUE,
    requested_by        text        NOT NULL,
    approved_by         text        NULL,
    start_time          timestamptz NOT NULL,
    finish_time         timestamptz NOT NULL
);

CREATE INDEX key_rotation_history_table_idx ON key_rotation_history (account_id, region, table_name, finish_time DESC);
CREATE INDEX key_rotation_history_request_idx ON key_rotation_history (request_id);

CREATE FUNCTION key_rotation_history_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'key_rotation_history is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER key_rotation_history_no_update_or_delete
    BEFORE UPDATE OR DELETE ON key_rotation_history
    FOR EACH ROW EXECUTE FUNCTION key_rotation_history_append_only();

CREATE TRIGGER key_rotation_history_no_truncate
    BEFORE TRUNCATE ON key_rotation_history
    FOR EACH STATEMENT EXECUTE FUNCTION key_rotation_history_append_only();

-- Rate-limit slots shared by every replica: one row per limited scope ("update:<account>:<region>", ...). A
-- worker reserves the next free instant atomically (a generic cell rate algorithm in one UPDATE) and waits for it.
CREATE TABLE rate_slots (
    scope               text        PRIMARY KEY,
    next_free_time      timestamptz NOT NULL
);
