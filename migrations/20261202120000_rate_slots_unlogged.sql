-- Rate slots are the hottest rows in the database (every UpdateTable, every poll reserves one, all replicas on one
-- fleet-wide row), and worth nothing after a crash: a slot is at most a second ahead and unusable once missed.
-- Unlogged, a reservation writes no WAL and commits without waiting for a flush, so the fleet-wide row is not
-- held for a disk sync per send. After a crash (or a failover) the table is empty and every scope is re-created
-- free at once: the first slot after a database outage is immediate, then spaced as before.
ALTER TABLE rate_slots SET UNLOGGED;
