-- A change request's request_id (idempotency key) belongs to the caller who used it: one team can no longer squat
-- another's id, nor learn of another's request by replaying it. Keys are unique per creator; NULL keys never
-- conflict.
ALTER TABLE change_requests DROP CONSTRAINT change_requests_idempotency_key_key;
ALTER TABLE change_requests
    ADD CONSTRAINT change_requests_creator_idempotency_key_key UNIQUE (created_by, idempotency_key);
