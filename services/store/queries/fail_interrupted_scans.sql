-- Scans left RUNNING by a replica that died (their lease expired) cannot finish; close them so nobody waits
-- forever. A scan whose replica is alive keeps its lease fresh and is left alone.
WITH abandoned AS (
    SELECT scan_id FROM inventory_scans
    WHERE state = 'RUNNING' AND (lease_expire_time IS NULL OR lease_expire_time <= now())
    FOR UPDATE SKIP LOCKED
),
failed_targets AS (
    UPDATE inventory_scan_targets
    SET state = 'FAILED', failure_kind = 'TRANSIENT',
        failure_message = 'the server stopped before this account-region was scanned; refresh again',
        finish_time = now()
    WHERE state IN ('PENDING', 'RUNNING') AND scan_id IN (SELECT scan_id FROM abandoned)
    RETURNING scan_id
)
UPDATE inventory_scans
SET state = CASE WHEN EXISTS (SELECT 1 FROM inventory_scan_targets t
                              WHERE t.scan_id = inventory_scans.scan_id AND t.state = 'SUCCEEDED')
                 THEN 'PARTIALLY_FAILED' ELSE 'FAILED' END,
    finish_time = now()
WHERE scan_id IN (SELECT scan_id FROM abandoned)
