-- The public directory (issue #13, ADR 0051): what a partner organisation lists about
-- itself for residents and for the HSDS export. These are the organisation's own public
-- channels (a front desk, not a person); staff contacts stay in partner_contacts and
-- never reach the directory. Nothing here is shown until the partner agrees
-- (directory_public), whoever filled it in.
ALTER TABLE partners
    ADD COLUMN directory_public boolean NOT NULL DEFAULT false,
    -- {address_1, address_2, city, region, state_province, postal_code, country}
    ADD COLUMN address          jsonb,
    ADD COLUMN latitude         double precision CHECK (latitude BETWEEN -90 AND 90),
    ADD COLUMN longitude        double precision CHECK (longitude BETWEEN -180 AND 180),
    ADD COLUMN public_phone     text,
    ADD COLUMN public_email     text,
    ADD COLUMN website          text,
    -- [{weekdays: [1..7], opens_at: "HH:MM", closes_at: "HH:MM"}], local time
    ADD COLUMN opening_hours    jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN directory_updated_at timestamptz,
    ADD CONSTRAINT partners_geo_pair CHECK ((latitude IS NULL) = (longitude IS NULL));
