-- Ends a scan once none of its targets is pending or running: SUCCEEDED, PARTIALLY_FAILED or FAILED.
UPDATE inventory_scans s
SET state = CASE
        WHEN NOT EXISTS (SELECT 1 FROM inventory_scan_targets t WHERE t.scan_id = s.scan_id AND t.state = 'FAILED')
            THEN 'SUCCEEDED'
        WHEN EXISTS (SELECT 1 FROM inventory_scan_targets t WHERE t.scan_id = s.scan_id AND t.state = 'SUCCEEDED')
            THEN 'PARTIALLY_FAILED'
        ELSE 'FAILED'
    END,
    finish_time = now()
WHERE s.scan_id = ANY($1::uuid[])
  AND s.state = 'RUNNING'
  AND NOT EXISTS (SELECT 1 FROM inventory_scan_targets t
                  WHERE t.scan_id = s.scan_id AND t.state IN ('PENDING', 'RUNNING'))
