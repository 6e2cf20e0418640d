-- Reserves the next send time of a rate-limited scope, shared by every replica (a generic cell rate algorithm:
-- one slot every $2 seconds, no burst). A slot is handed out only if it is at most $3 seconds ahead: reserving
-- further ahead would let a stalled or dead worker sit on slots nobody uses, and let slots pile up into a burst
-- after a stall. No row returned: nothing within reach, ask again later. Returns how many seconds the caller
-- waits before acting; a slot not used at its time is simply lost, never saved up.
INSERT INTO rate_slots AS s (scope, next_free_time)
VALUES ($1, clock_timestamp() + make_interval(secs => $2))
ON CONFLICT (scope) DO UPDATE
    SET next_free_time = GREATEST(s.next_free_time, clock_timestamp()) + make_interval(secs => $2)
    WHERE s.next_free_time <= clock_timestamp() + make_interval(secs => $3)
RETURNING GREATEST(0, EXTRACT(EPOCH FROM (s.next_free_time - make_interval(secs => $2) - clock_timestamp())))::float8
    AS "wait_seconds!"
