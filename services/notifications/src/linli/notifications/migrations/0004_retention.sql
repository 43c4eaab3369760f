-- Retention (ADR 0029): finished deliveries and messages to people are purged after their
-- periods, picked by these indexes. Deleting a delivery cascades to its attempts, which
-- needs an index on delivery_attempts.delivery_id (without it, a sequential scan of the
-- attempts per deleted delivery).
CREATE INDEX IF NOT EXISTS deliveries_finished_at ON deliveries (finished_at)
    WHERE state <> 'pending';
CREATE INDEX IF NOT EXISTS delivery_attempts_delivery ON delivery_attempts (delivery_id);
CREATE INDEX IF NOT EXISTS people_messages_finished ON people_messages (created_at)
    WHERE status <> 'pending';
