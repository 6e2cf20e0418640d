-- Creates the rows of rate-limited scopes not seen before, free at once.
INSERT INTO rate_slots (scope, next_free_time)
SELECT scope, now() FROM unnest($1::text[]) AS scope
ON CONFLICT (scope) DO NOTHING
