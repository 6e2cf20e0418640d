-- The W3C traceparent of the call that created a change request (when the server exports traces): each item is
-- its own trace, on whichever replica works it, linked back to the request's creation through this.
ALTER TABLE change_requests
    ADD COLUMN trace_parent text NULL CHECK (trace_parent IS NULL OR length(trace_parent) <= 256);
