-- A running scan is held under a lease its replica keeps extending. A scan whose lease expired (its replica
-- died) is closed by any replica; one whose replica is alive is left alone (starting a replica used to fail
-- every running scan). NULL: a scan from before leases, treated as expired.
ALTER TABLE inventory_scans ADD COLUMN lease_expire_time timestamptz NULL;
