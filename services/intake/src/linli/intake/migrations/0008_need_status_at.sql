-- When the newest lifecycle event that set or confirmed a need's status happened (its
-- CloudEvent time, not its arrival): an older event delivered late (a redelivery after a
-- paused consumer) must not move an escalated need back to offered.
ALTER TABLE needs ADD COLUMN status_at timestamptz;
