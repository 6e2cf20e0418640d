-- Rate slots are now reserved at most a second ahead. Rows that an earlier version pushed far into the future
-- (a request paced at 1e-300 per second moved its account-region's slot weeks ahead) would refuse every
-- reservation until then: free them now.
UPDATE rate_slots SET next_free_time = now() WHERE next_free_time > now();
