-- The retention purge (ADR 0029) picks expired rows by these columns. On a large inbox,
-- build the index beforehand without blocking writes:
--   CREATE INDEX CONCURRENTLY IF NOT EXISTS inbox_processed_at ON <schema>.inbox (processed_at);
-- and this migration then finds it.
CREATE INDEX IF NOT EXISTS inbox_processed_at ON inbox (processed_at);
CREATE INDEX IF NOT EXISTS dead_letters_replayed_at ON dead_letters (replayed_at)
    WHERE replayed_at IS NOT NULL;
