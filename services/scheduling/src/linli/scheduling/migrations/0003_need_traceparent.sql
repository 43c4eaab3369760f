-- The trace of each need (W3C traceparent of the span that received need.submitted), so
-- that work done for a need on another trigger (a slot published later fills it) goes on
-- in the need's own trace (ADR 0025).
ALTER TABLE needs ADD COLUMN traceparent text;
