-- Repeated refusals are audited as one row per caller (or, unauthenticated, peer address), method and outcome per
-- interval, with how many calls it stands for: an unauthenticated flood wrote a row per call (~1,040 rows/s from
-- one client). Additive: a release without these columns writes rows that count one call each.
ALTER TABLE audit_events
    ADD COLUMN call_count integer NOT NULL DEFAULT 1 CHECK (call_count >= 1),
    ADD COLUMN peer text NULL,
    ADD COLUMN first_time timestamptz NULL;
