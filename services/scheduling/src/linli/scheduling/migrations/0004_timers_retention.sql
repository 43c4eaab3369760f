-- Fired timers are purged after LINLI_TIMERS_RETENTION_S (ADR 0029), picked by this index.
CREATE INDEX IF NOT EXISTS timers_fired_at ON timers (fired_at) WHERE fired_at IS NOT NULL;
