-- A partner's own delivery preferences (ADR 0043): its webhook is a subscription row
-- naming the partner (one per partner and community), and its duty contacts are
-- recipients with role `partner`. Partner subscriptions get only what is pushed to that
-- partner (its offers with signed links, its reminders), never the community's events.
ALTER TABLE subscriptions ADD COLUMN partner_id uuid;
CREATE UNIQUE INDEX subscriptions_partner ON subscriptions (partner_id, communities)
    WHERE partner_id IS NOT NULL;

ALTER TABLE people_recipients ADD COLUMN partner_id uuid;
ALTER TABLE people_recipients DROP CONSTRAINT people_recipients_role_check;
ALTER TABLE people_recipients ADD CONSTRAINT people_recipients_role_check
    CHECK (role IN ('family', 'operator', 'volunteer', 'partner'));
ALTER TABLE people_recipients ADD CONSTRAINT people_recipients_partner_check
    CHECK ((role = 'partner') = (partner_id IS NOT NULL));
CREATE INDEX people_recipients_partner
    ON people_recipients (community, partner_id) WHERE partner_id IS NOT NULL;
