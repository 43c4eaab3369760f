-- Two-leg meals (ADR 0044): a canteen prepares a meal (the `prepare` leg) and a
-- volunteer carries it (the `carry` leg). Each leg is reserved, offered and accepted on
-- its own, with the same slots, assignments and exclusions as a need served whole.

-- The leg a slot serves: NULL = the whole need (as before), 'prepare' = the provider
-- cooks but does not carry, 'carry' = the provider carries what others prepared.
ALTER TABLE slots ADD COLUMN leg text CHECK (leg IN ('prepare', 'carry'));

-- The leg an assignment serves (NULL = the whole need).
ALTER TABLE assignments ADD COLUMN leg text CHECK (leg IN ('prepare', 'carry'));

-- A two-leg need has at most one active prepare assignment and at most one other active
-- assignment (whole or carry): the old index allowed one per need.
DROP INDEX assignments_one_active_per_need;
CREATE UNIQUE INDEX assignments_one_active_per_need_leg
    ON assignments (need_id, (leg IS NOT DISTINCT FROM 'prepare'))
    WHERE state IN ('offered', 'accepted');

-- A need becomes two-leg when it is matched on a `prepare` slot. From then on its own
-- state machine (state, current_assignment, attempts) follows the carry leg, the one that
-- fulfils it; the prepare leg is `prepare_assignment` (its current assignment, NULL while
-- no canteen holds it).
ALTER TABLE needs
    ADD COLUMN two_leg            boolean NOT NULL DEFAULT false,
    ADD COLUMN prepare_assignment uuid;

-- Two-leg needs whose prepare leg waits for a canteen, for filling new prepare slots.
CREATE INDEX needs_prepare_leg_waiting ON needs (community, kind, rank, submitted_at, id)
    WHERE two_leg AND prepare_assignment IS NULL
      AND state NOT IN ('fulfilled', 'cancelled', 'failed');
