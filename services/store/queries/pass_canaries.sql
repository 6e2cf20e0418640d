-- Releases request $1's other items once every canary has ended and none failed (a failed canary pauses the
-- request instead; resuming it is how an operator accepts the failure).
UPDATE change_requests r
SET canary_passed = true, update_time = now()
WHERE r.request_id = $1 AND NOT r.canary_passed
  AND NOT EXISTS (SELECT 1 FROM change_items
                  WHERE request_id = $1 AND canary AND state IN ('PENDING', 'APPLYING', 'WAITING', 'DEFERRED', 'FAILED'))
