-- Ends request $1 if none of its items is left to run: CANCELLED if it was cancelling, else SUCCEEDED, FAILED or
-- PARTIALLY_FAILED by its items. Returns the new state, or no row if the request is not done.
WITH counts AS (
    SELECT count(*) FILTER (WHERE state IN ('PENDING', 'APPLYING', 'WAITING', 'DEFERRED')) AS open,
           count(*) FILTER (WHERE state = 'SUCCEEDED') AS succeeded,
           count(*) FILTER (WHERE state = 'FAILED') AS failed
    FROM change_items WHERE request_id = $1
)
UPDATE change_requests r
SET state = CASE
        WHEN r.state = 'CANCELLING' THEN 'CANCELLED'
        WHEN c.failed = 0 THEN 'SUCCEEDED'
        WHEN c.succeeded = 0 THEN 'FAILED'
        ELSE 'PARTIALLY_FAILED' END,
    finish_time = now(), update_time = now()
FROM counts c
WHERE r.request_id = $1 AND c.open = 0
  AND r.state IN ('QUEUED', 'RUNNING', 'PAUSED', 'CANCELLING')
RETURNING r.state
