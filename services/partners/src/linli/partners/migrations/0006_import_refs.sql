-- CSV imports (issue #11, ADR 0035): a partner or volunteer imported from a community's
-- own records keeps its id there. The key is per community: partners and volunteers may
-- serve several communities, each with its own records, and one community's key never
-- reaches another's row. Rows created over the API have none.
CREATE TABLE import_refs (
    community    text        NOT NULL,
    entity_kind  text        NOT NULL CHECK (entity_kind IN ('partner', 'volunteer')),
    external_ref text        NOT NULL,
    entity_id    uuid        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (community, entity_kind, external_ref)
);
CREATE INDEX import_refs_by_entity ON import_refs (entity_kind, entity_id);
