-- Reserves the next free instant of a rate-limited scope, shared by every replica (a generic cell rate
-- algorithm: one slot every $2 seconds, no burst). Returns how many seconds the caller waits before acting.
INSERT INTO rate_slots AS s (scope, next_free_time)
VALUES ($1, clock_timestamp() + make_interval(secs => $2))
ON CONFLICT (scope) DO UPDATE
    SET next_free_time = GREATEST(s.next_free_time, clock_timestamp()) + make_interval(secs => $2)
RETURNING GREATEST(0, EXTRACT(EPOCH FROM (s.next_free_time - make_interval(secs => $2) - clock_timestamp())))::float8
    AS "wait_seconds!"
