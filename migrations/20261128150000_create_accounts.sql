-- The fleet registry: one row per AWS member account tablecrypt may assume a role in.
-- The API validates everything first; these constraints are the last line, so the database itself refuses
-- rows that must never exist even if a bug or a hand-written UPDATE tries.
CREATE TABLE accounts (
    account_id    text        PRIMARY KEY
                              CHECK (account_id ~ '^[0-9]{12}$'),
    display_name  text        NOT NULL DEFAULT ''
                              CHECK (char_length(display_name) <= 256),
    -- The role must be an IAM role in this same account (aws, aws-cn or aws-us-gov partition).
    role_arn      text        NOT NULL
                              CHECK (role_arn ~ '^arn:aws(-cn|-us-gov)?:iam::[0-9]{12}:role/.+$'
                                     AND split_part(role_arn, ':', 5) = account_id),
    -- sts:ExternalId; never returned by the API.
    external_id   text        NULL
                              CHECK (external_id IS NULL OR char_length(external_id) BETWEEN 2 AND 1224),
    regions       text[]      NOT NULL
                              CHECK (cardinality(regions) > 0
                                     AND array_position(regions, NULL) IS NULL),
    labels        jsonb       NOT NULL DEFAULT '{}'::jsonb
                              CHECK (jsonb_typeof(labels) = 'object'),
    -- Optimistic concurrency: bumped on every update, exposed as the etag.
    version       bigint      NOT NULL DEFAULT 1 CHECK (version > 0),
    create_time   timestamptz NOT NULL DEFAULT now(),
    update_time   timestamptz NOT NULL DEFAULT now(),
    CHECK (update_time >= create_time)
);

-- Label selectors use jsonb containment and key existence.
CREATE INDEX accounts_labels_idx ON accounts USING gin (labels);
