-- Ends request $1 if none of its items is left to run: CANCELLED if it was cancelling, else SUCCEEDED, FAILED or
-- PARTIALLY_FAILED by its items. Returns the new state, or no row if the request is not done.
-- Runs after every item ends, so it only probes change_items_request_idx (request_id, state) instead of counting
-- the request's items: a count would make a request of n items cost O(n^2).
UPDATE change_requests r
SET state = CASE
        WHEN r.state = 'CANCELLING' THEN 'CANCELLED'
        WHEN NOT EXISTS (SELECT 1 FROM change_items WHERE request_id = $1 AND state = 'FAILED') THEN 'SUCCEEDED'
        WHEN NOT EXISTS (SELECT 1 FROM change_items WHERE request_id = $1 AND state = 'SUCCEEDED') THEN 'FAILED'
        ELSE 'PARTIALLY_FAILED' END,
    finish_time = now(), update_time = now()
WHERE r.request_id = $1
  AND r.state IN ('QUEUED', 'RUNNING', 'PAUSED', 'CANCELLING')
  AND NOT EXISTS (SELECT 1 FROM change_items
                  WHERE request_id = $1 AND state IN ('PENDING', 'APPLYING', 'WAITING', 'DEFERRED'))
RETURNING r.state
