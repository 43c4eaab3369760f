-- CSV import of residents (issue #11, ADR 0035): a resident imported from a community's
-- own records keeps its id there, the key that makes a second import change nothing.
-- Residents registered over the API have none.
ALTER TABLE residents ADD COLUMN external_ref text;
ALTER TABLE residents ADD COLUMN updated_at timestamptz;
CREATE UNIQUE INDEX residents_by_external_ref ON residents (community, external_ref)
    WHERE external_ref IS NOT NULL;
