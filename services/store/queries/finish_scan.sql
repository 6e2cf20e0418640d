-- Ends a scan once none of its targets is pending or running: SUCCEEDED, PARTIALLY_FAILED or FAILED. A target
-- whose region cannot be used in its account (REGION_UNAVAILABLE: not enabled, or denied by an SCP) is not a
-- failure: it has nothing to scan.
UPDATE inventory_scans s
SET state = CASE
        WHEN NOT EXISTS (SELECT 1 FROM inventory_scan_targets t WHERE t.scan_id = s.scan_id AND t.state = 'FAILED'
                         AND t.failure_kind IS DISTINCT FROM 'REGION_UNAVAILABLE')
            THEN 'SUCCEEDED'
        WHEN EXISTS (SELECT 1 FROM inventory_scan_targets t WHERE t.scan_id = s.scan_id
                     AND (t.state = 'SUCCEEDED' OR t.failure_kind = 'REGION_UNAVAILABLE'))
            THEN 'PARTIALLY_FAILED'
        ELSE 'FAILED'
    END,
    finish_time = now()
WHERE s.scan_id = ANY($1::uuid[])
  AND s.state = 'RUNNING'
  AND NOT EXISTS (SELECT 1 FROM inventory_scan_targets t
                  WHERE t.scan_id = s.scan_id AND t.state IN ('PENDING', 'RUNNING'))
