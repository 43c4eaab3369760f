-- Intake follows the lifecycle events so that GET need tells the truth, and remembers
-- who accepted, so only that helper may see the resident's contact details.
ALTER TABLE needs
    ADD COLUMN assignee_kind   text,
    ADD COLUMN assignee_id     uuid,
    ADD COLUMN assignment_id   uuid;
