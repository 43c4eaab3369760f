-- Every read of personal data or free text a service serves (ADR 0031): who read what
-- of which need, and when. Written in the transaction that reads the data, so nothing is
-- served unrecorded. Kept: this is the audit record (ADR 0029 purges no row of it).
CREATE TABLE personal_data_reads (
    id                bigserial   PRIMARY KEY,
    community         text        NOT NULL,
    need_id           uuid        NOT NULL,
    item              text        NOT NULL CHECK (item ~ '^[a-z][a-z_]*$'),
    reader_role       text        NOT NULL,
    reader_credential uuid        NOT NULL,
    on_behalf_of      text,
    read_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX personal_data_reads_by_need ON personal_data_reads (community, need_id, id);
CREATE INDEX personal_data_reads_by_community ON personal_data_reads (community, id);
