-- Kinds added through the catalogue (ADR 0045) are proven by the generic outcome
-- `service_completed` (event `service.completed`): accept it in completion reports, beside
-- the canteen's `meal_prepared` of a two-leg meal (0012, ADR 0044).
ALTER TABLE completion_reports DROP CONSTRAINT IF EXISTS completion_reports_outcome_check;
ALTER TABLE completion_reports ADD CONSTRAINT completion_reports_outcome_check CHECK (outcome IN (
    'meal_delivered', 'meal_prepared', 'visit_completed', 'repair_completed', 'service_completed',
    'failed'));
