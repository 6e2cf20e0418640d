-- Fencing (../shared/QUEUE-NOTES.md): every claim of an item takes a new token from this sequence, and every write
-- that records something about the item names it. A lease owner per process is no fence: two tasks of one process
-- share it, and a heartbeat could revive a lease that had expired and been claimed again.
CREATE SEQUENCE change_items_lease_token_seq;
ALTER TABLE change_items ADD COLUMN lease_token bigint NULL;
