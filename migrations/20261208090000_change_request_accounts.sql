-- The accounts each change request's items are in, one row per request and account. Authorizing a scoped
-- caller's call on a request (GetChangeRequest, the control calls, a watch at its start) and a scoped
-- ListChangeRequests read these instead of every item of the request: SELECT DISTINCT over a 10,000-item
-- request's items took 18.7 ms per GetChangeRequest in the migration benchmark, more database time than any
-- statement of the workers; a million-item request would take seconds per call.
CREATE TABLE change_request_accounts (
    request_id uuid NOT NULL REFERENCES change_requests (request_id) ON DELETE CASCADE,
    account_id text NOT NULL,
    PRIMARY KEY (request_id, account_id)
);

-- Kept by the database as items are written, one statement per insert of items, so a replica of any version
-- (one still running the binary before this migration, during a rolling upgrade) fills it too. Items never move
-- to another account and are only deleted with their request.
CREATE FUNCTION change_request_accounts_of_new_items() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO change_request_accounts (request_id, account_id)
    SELECT DISTINCT request_id, account_id FROM new_items
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;

-- old replicas: their item inserts fire it like the new binary's and it refuses nothing (ON CONFLICT DO NOTHING).
-- CREATE TRIGGER waits for item inserts in progress and holds item writes only until this short migration
-- commits; the items already there are copied by the next migration, in a transaction of its own.
CREATE TRIGGER change_items_request_accounts AFTER INSERT ON change_items
    REFERENCING NEW TABLE AS new_items
    FOR EACH STATEMENT EXECUTE FUNCTION change_request_accounts_of_new_items();
