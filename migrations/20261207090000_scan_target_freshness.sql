-- GetKeyUsage says when the key's account-region was last scanned: "unused" is only as true as that scan.
-- old replicas: an index only; no statement of an older release changes or depends on it.
CREATE INDEX inventory_scan_targets_succeeded_idx ON inventory_scan_targets (account_id, region, finish_time DESC)
    WHERE state = 'SUCCEEDED';
