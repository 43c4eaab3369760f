-- CSV files uploaded for an import (ADR 0037): kept between the dry run and the explicit
-- import, for the session that uploaded them only, so no file and no personal data ever
-- travel in a URL. Deleted after the import, with the session, and by retention (1 h).
CREATE TABLE import_uploads (
    id             uuid PRIMARY KEY,
    session_sha256 bytea NOT NULL REFERENCES sessions (id_sha256) ON DELETE CASCADE,
    community      text NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('residents', 'partners', 'volunteers', 'capacity')),
    body           bytea NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX import_uploads_created ON import_uploads (created_at);
