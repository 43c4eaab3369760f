-- A partner's duty contacts (ADR 0043): recipients with role `partner`, told of the
-- offers and reminders pushed to that partner. Touches only people_recipients, so the
-- messages part still runs without the webhooks tables.
ALTER TABLE people_recipients ADD COLUMN IF NOT EXISTS partner_id uuid;
ALTER TABLE people_recipients DROP CONSTRAINT IF EXISTS people_recipients_role_check;
ALTER TABLE people_recipients ADD CONSTRAINT people_recipients_role_check
    CHECK (role IN ('family', 'operator', 'volunteer', 'partner'));
ALTER TABLE people_recipients ADD CONSTRAINT people_recipients_partner_check
    CHECK ((role = 'partner') = (partner_id IS NOT NULL));
CREATE INDEX IF NOT EXISTS people_recipients_partner
    ON people_recipients (community, partner_id) WHERE partner_id IS NOT NULL;
