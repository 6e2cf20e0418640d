-- Creates the rows of rate-limited scopes not seen before, free $2 seconds from now (the longest a slot is
-- reserved ahead): a row re-created after a crash emptied the table must not hand out slots that fall together
-- with the ones workers still hold from before it.
INSERT INTO rate_slots (scope, next_free_time)
SELECT scope, now() + make_interval(secs => $2) FROM unnest($1::text[]) AS scope
ON CONFLICT (scope) DO NOTHING
