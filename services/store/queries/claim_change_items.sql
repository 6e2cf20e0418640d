-- Picks up to $2 items a worker may start now, within the in-flight limits. Run under the claim lock (see
-- ChangeItemRepository::claim), so the in-flight counts cannot change underneath.
-- $1 default tables in flight per account-region (an account may override it), $2 limit, $3 items the claiming
-- process still works on (never claimed again by it, even if their lease expired during a stall), $4 the schema
-- migrations the claiming binary knows: nothing is claimed once the database has another one (checked in this
-- statement's snapshot, so an item a newer replica wrote after migrating is never seen with the old fence).
-- Claimable: PENDING or DEFERRED items that are due, of QUEUED or RUNNING requests, canaries first; and items
-- whose lease expired while APPLYING or WAITING (their worker died), of any request not yet terminal.
WITH busy AS (
    SELECT account_id, region, request_id, count(*) AS n
    FROM change_items
    WHERE state IN ('APPLYING', 'WAITING') AND lease_expire_time > now()
    GROUP BY account_id, region, request_id
),
busy_region AS (
    SELECT account_id, region, sum(n)::bigint AS n FROM busy GROUP BY account_id, region
),
candidates AS (
    SELECT i.item_id, i.request_id, i.account_id, i.region, i.next_attempt_time,
           row_number() OVER (PARTITION BY i.account_id, i.region ORDER BY i.next_attempt_time, i.item_id)
               AS rank_region,
           row_number() OVER (PARTITION BY i.request_id, i.account_id, i.region
                              ORDER BY i.next_attempt_time, i.item_id) AS rank_request,
           r.max_in_flight,
           coalesce(a.max_tables_in_flight::bigint, $1::bigint) AS region_limit
    FROM change_items i
    JOIN change_requests r ON r.request_id = i.request_id
    LEFT JOIN accounts a ON a.account_id = i.account_id
    WHERE (i.state IN ('PENDING', 'DEFERRED') AND i.next_attempt_time <= now()
           AND r.state IN ('QUEUED', 'RUNNING') AND (i.canary OR r.canary_passed))
       -- A deferred item whose UpdateTable may already have been sent finishes even if paused or cancelling.
       OR (i.state = 'DEFERRED' AND i.apply_time IS NOT NULL AND i.next_attempt_time <= now()
           AND r.state IN ('PAUSED', 'CANCELLING'))
       OR (i.state IN ('APPLYING', 'WAITING') AND i.lease_expire_time <= now()
           AND r.state NOT IN ('SUCCEEDED', 'PARTIALLY_FAILED', 'FAILED', 'CANCELLED')
           AND NOT (i.item_id = ANY($3::bigint[])))
)
SELECT c.item_id AS "item_id!"
FROM candidates c
LEFT JOIN busy_region br ON br.account_id = c.account_id AND br.region = c.region
LEFT JOIN busy b ON b.account_id = c.account_id AND b.region = c.region AND b.request_id = c.request_id
WHERE c.rank_region + coalesce(br.n, 0) <= c.region_limit
  AND NOT EXISTS (SELECT 1 FROM _sqlx_migrations WHERE success AND NOT (version = ANY($4::bigint[])))
  AND (c.max_in_flight IS NULL OR c.rank_request + coalesce(b.n, 0) <= c.max_in_flight)
-- Fair share over account-regions: the account-region with the fewest items in flight goes first (its first
-- candidate, then the next-fewest, ...). Claiming in plan order would feed the first accounts only and leave
-- the others idle; ranking without the in-flight count would refill the lowest-numbered accounts first.
ORDER BY c.rank_region + coalesce(br.n, 0), c.next_attempt_time, c.item_id
LIMIT $2::bigint
