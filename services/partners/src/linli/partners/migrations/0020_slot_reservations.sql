-- Live capacity for the HSDS export (issue #13, ADR 0051). Scheduling owns reservations;
-- partners keeps what it hears (slot.reserved, slot.released), one row per reservation,
-- so a slot's remaining places are its capacity less the reservations still held. A
-- release that arrives before its reservation (redelivery can reorder) is kept, and the
-- late reservation then does not count.
CREATE TABLE slot_reservations (
    reservation_id uuid        PRIMARY KEY,
    community      text        NOT NULL,
    slot_id        uuid        NOT NULL,
    reserved_at    timestamptz,
    released_at    timestamptz
);
CREATE INDEX slot_reservations_held ON slot_reservations (slot_id)
    WHERE reserved_at IS NOT NULL AND released_at IS NULL;
-- The directory reads upcoming slots per community and provider.
CREATE INDEX slots_upcoming ON slots (community, window_latest) WHERE status = 'published';
