-- The accounts of the requests whose items were written before change_request_accounts was kept. A migration of
-- its own: it starts after the trigger committed, and CREATE TRIGGER had waited for every insert in progress, so
-- whatever the isolation level every item is either read here or fired the trigger. It only reads change_items
-- (no lock that holds item writes), however long the history.
INSERT INTO change_request_accounts (request_id, account_id)
SELECT DISTINCT request_id, account_id FROM change_items
ON CONFLICT DO NOTHING;
