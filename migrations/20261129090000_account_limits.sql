-- Per-account overrides of the change workers' limits (NULL: the service's default). They apply to each
-- region of the account; a change request may still only lower them.
ALTER TABLE accounts
    ADD COLUMN update_rate double precision NULL
        CHECK (update_rate IS NULL OR (update_rate > 0 AND update_rate <= 1000)),
    ADD COLUMN poll_rate double precision NULL
        CHECK (poll_rate IS NULL OR (poll_rate > 0 AND poll_rate <= 1000)),
    -- AWS allows 500 tables updating at once per account-region.
    ADD COLUMN max_tables_in_flight integer NULL
        CHECK (max_tables_in_flight IS NULL OR max_tables_in_flight BETWEEN 1 AND 500);
