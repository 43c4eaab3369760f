-- A partner's own webhook (ADR 0043): a subscription row naming the partner, one per
-- partner and community. Partner subscriptions get only what is pushed to that partner
-- (its offers with signed links, its reminders), never the community's events.
ALTER TABLE subscriptions ADD COLUMN partner_id uuid;
CREATE UNIQUE INDEX subscriptions_partner ON subscriptions (partner_id, communities)
    WHERE partner_id IS NOT NULL;
