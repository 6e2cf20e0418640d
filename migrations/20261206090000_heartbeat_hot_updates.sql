-- Lease heartbeats rewrite the lease_expire_time of every item a worker holds every third of a lease (2,000 rows
-- every 1.7 s in the migration benchmark). With lease_expire_time in an index each of those rewrites was a
-- non-HOT update, adding an entry to every one of change_items' seven indexes while it held the row, and the
-- items' own writes (marked applying, waiting, finished) queued behind the heartbeat: sampled in that benchmark,
-- every row-lock wait of an item write was on the heartbeat. The in-flight index now leaves lease_expire_time
-- out (the claim filters the in-flight rows, a few thousand at most, by it), and new pages keep a fifth free for
-- the next row version, so a heartbeat is a HOT update that touches no index.
-- Not built CONCURRENTLY: that waits for every transaction open when it starts, including another replica's
-- migrator waiting on the migration lock this one holds, a deadlock (seen when two replicas start together).
-- The build reads the whole table and holds item writes for as long (about a second per million items).
CREATE INDEX change_items_in_flight_idx ON change_items (account_id, region)
    WHERE state IN ('APPLYING', 'WAITING');

-- old replicas: their claim query filters in-flight items by lease_expire_time, and reads the same rows through
-- change_items_in_flight_idx instead; nothing they write or read changes.
DROP INDEX change_items_leased_idx;

ALTER TABLE change_items SET (fillfactor = 80);
