-- The trace of the need an offer belongs to (W3C traceparent of the span that stored the
-- offer). A party answers or reports in a request of its own; the events that answer
-- carries continue the need's trace from here (ADR 0025).
ALTER TABLE offers ADD COLUMN traceparent text;
