-- Every replica scans: the account-regions of a scan are claimed one by one under a lease, like change items
-- (../shared/QUEUE-NOTES.md). A replica that dies leaves its targets to be claimed again once their lease
-- expires, so several replicas share one scan and a dead one's share is finished by the others. Each claim takes
-- a new token; the outcome is written only under the token that claimed it.
CREATE SEQUENCE inventory_scan_targets_lease_token_seq;
ALTER TABLE inventory_scan_targets
    ADD COLUMN lease_owner       uuid        NULL,
    ADD COLUMN lease_token       bigint      NULL,
    ADD COLUMN lease_expire_time timestamptz NULL,
    -- Claims so far; a target whose replica stopped this often is failed instead of claimed again.
    ADD COLUMN attempts          integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0);

-- What a claiming replica reads: pending targets, and running ones whose lease may have expired.
CREATE INDEX inventory_scan_targets_open ON inventory_scan_targets (lease_expire_time NULLS FIRST)
    WHERE state IN ('PENDING', 'RUNNING');

-- Targets a replica of the previous version was running when it stopped: claimable again.
UPDATE inventory_scan_targets SET state = 'PENDING' WHERE state = 'RUNNING';

-- The scan-wide lease is no longer used: a scan ends when its last target does. New scans set it to 'infinity'
-- so a replica of the previous version, during a rolling upgrade, never closes a scan that is alive.
COMMENT ON COLUMN inventory_scans.lease_expire_time IS
    'unused since target leases (20261202090000); infinity for new scans, read only by older replicas';
