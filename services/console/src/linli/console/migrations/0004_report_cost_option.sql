-- What the resident paid for a partner's completed work (free, low_cost or paid), from
-- the completion event's cost_option; NULL for volunteers and for events recorded before
-- the events carried it (reported as unknown).
ALTER TABLE report_work ADD COLUMN cost_option text
    CHECK (cost_option IN ('free', 'low_cost', 'paid'));
