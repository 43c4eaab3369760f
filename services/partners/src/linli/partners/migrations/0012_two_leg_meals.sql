-- Two-leg meals (ADR 0044): a canteen that does not deliver publishes `prepare` capacity
-- and a volunteer `carry` capacity; each offer says which leg it is, and the canteen
-- reports its leg done as `meal_prepared`.
ALTER TABLE slots ADD COLUMN leg text CHECK (leg IN ('prepare', 'carry'));
ALTER TABLE offers ADD COLUMN leg text CHECK (leg IN ('prepare', 'carry'));

ALTER TABLE completion_reports DROP CONSTRAINT completion_reports_outcome_check;
ALTER TABLE completion_reports ADD CONSTRAINT completion_reports_outcome_check CHECK (outcome IN (
    'meal_delivered', 'meal_prepared', 'visit_completed', 'repair_completed', 'failed'));

-- The production list reads a canteen's meal offers by window.
CREATE INDEX offers_production ON offers (community, party_id, window_earliest)
    WHERE kind = 'meal_delivery';
