-- Repeated refusals are audited as one row per caller (or, unauthenticated, peer address), method, outcome and
-- target per interval, with how many calls it stands for: an unauthenticated flood wrote a row per call (~1,040
-- rows/s from one client). Additive: a release without these columns writes rows that count one call each. The
-- check is added NOT VALID (existing rows all hold 1, the default), so the table is not scanned under a lock.
ALTER TABLE audit_events
    ADD COLUMN call_count integer NOT NULL DEFAULT 1,
    ADD COLUMN peer text NULL,
    ADD COLUMN first_time timestamptz NULL;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_call_count_positive CHECK (call_count >= 1) NOT VALID;
