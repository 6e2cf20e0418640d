-- Reserves one send time (or a batch of up to $7, see `batch`) in every scope of $1 at once (a generic cell rate
-- algorithm per scope: scope i hands out one slot every $2[i] seconds, no burst), shared by every replica. The
-- slot is the latest of the scopes' next free times (or now), and every scope's next free time moves past it,
-- all or nothing, so a call limited by several scopes never spends a slot in one while it waits for another.
-- The rows are locked (in scope order, so concurrent reservations cannot deadlock) and read after any
-- concurrent reservation committed.
-- A slot is handed out only if it is at most $3 seconds ahead: reserving further ahead would let a stalled or
-- dead worker sit on slots nobody uses, and let slots pile up into a burst after a stall. No wait returned:
-- nothing within reach, ask again later. Returns how many seconds the caller waits before acting; a slot not
-- used at its time is simply lost, never saved up. The scopes' rows must exist (ensure_rate_slots.sql); how many
-- were found is returned.
-- The slot is at least $4 seconds from now: the caller's time to check its lease before the slot, so that it
-- sends at the slot instead of late (an idle scope gives away those seconds, a busy one nothing).
-- $5 names a scope that is left out when it cannot bind: its rate at least the sum, over every registered
-- account-region, of its UpdateTable rate (the account's own, else $6) plus one, since a scope's second may hold
-- one send more than its rate (a send up to a window late, first slots of idle scopes together). Each
-- account-region holds its own rate, so the fleet then stays under that sum, and the scope's row, which every
-- account-region's reservation would share, would only couple them: a slot one account-region reserved ahead
-- pushed that row's next free time ahead for all (measured: the fleet-wide row sat about 1 s ahead of now and a
-- 200/s migration sent 70/s). Decided here, in the reservation's own statement, so an account registered a moment
-- ago counts at once. Not covered (the sum is of the registry as it is now): items still sending for a region
-- removed from their account, or at a rate read before an account's was lowered, or from a replica whose $6
-- differs during a rolling change of update_rate.
WITH bound AS (
    SELECT coalesce(sum(cardinality(a.regions) * (coalesce(a.update_rate, $6::float8) + 1)), 0) AS fleet_rate
    FROM accounts a
),
wanted AS (
    SELECT w.* FROM unnest($1::text[], $2::float8[]) AS w(scope, spacing), bound
    WHERE w.scope IS DISTINCT FROM $5::text OR bound.fleet_rate * w.spacing > 1
),
locked AS (
    SELECT s.scope, s.next_free_time, w.spacing
    FROM rate_slots s JOIN wanted w USING (scope)
    ORDER BY s.scope
    FOR UPDATE OF s
),
slot AS (
    SELECT GREATEST(max(next_free_time), clock_timestamp() + make_interval(secs => $4)) AS at,
           max(spacing) AS step
    FROM locked
),
-- $7 slots at most, one step (the slowest scope's spacing) apart, as many as fit within the lookahead: a batch
-- costs one statement for many calls of a busy scope (polls), and every slot in it is still this caller's alone.
batch AS (
    SELECT slot.at, slot.step,
           LEAST($7::int, 1 + floor(GREATEST(0, EXTRACT(EPOCH FROM (
               clock_timestamp() + make_interval(secs => $3) - slot.at))) / slot.step))::int AS slots
    FROM slot
),
updated AS (
    UPDATE rate_slots s
    SET next_free_time = b.at + make_interval(secs => b.step * (b.slots - 1) + l.spacing)
    FROM locked l, batch b
    WHERE s.scope = l.scope AND b.at <= clock_timestamp() + make_interval(secs => $3)
      -- All or nothing: with a scope's row missing, no other scope spends a slot.
      AND (SELECT count(*) FROM locked) = (SELECT count(*) FROM wanted)
    RETURNING GREATEST(0, EXTRACT(EPOCH FROM (b.at - clock_timestamp())))::float8 AS wait_seconds, b.slots
)
-- missing: how many of the wanted scopes' rows do not exist (create them, ensure_rate_slots.sql); wait_seconds:
-- NULL when no slot was within reach (the first slot's wait when one was); reach_seconds: how long until the
-- next slot comes within reach, as the scopes stand now (0 when one was handed out), so a caller that got none
-- asks again then instead of polling the rows; slots: how many slots, one step_seconds apart; spacing_seconds:
-- the smallest spacing of the scopes the slot was taken in (how late a send may go without falling together
-- with the next slot's).
SELECT (SELECT count(*) FROM wanted) - (SELECT count(*) FROM locked) AS "missing!",
       (SELECT wait_seconds FROM updated LIMIT 1) AS wait_seconds,
       (SELECT GREATEST(0, EXTRACT(EPOCH FROM (slot.at - clock_timestamp() - make_interval(secs => $3))))::float8
        FROM slot) AS "reach_seconds!",
       (SELECT slots FROM updated LIMIT 1) AS slots,
       (SELECT min(spacing) FROM locked) AS spacing_seconds,
       (SELECT max(spacing) FROM locked) AS step_seconds
