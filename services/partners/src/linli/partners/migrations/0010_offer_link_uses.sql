-- Signed offer links (ADR 0043): the first answer given through any link of an offer.
-- One row per offer (the primary key), written in the transaction that answers the
-- offer, so a second use of a link (or of the offer's other link) is refused, also when
-- two arrive at once. No personal data: the offer id, the action and when.
CREATE TABLE offer_link_uses (
    assignment_id uuid        PRIMARY KEY REFERENCES offers (assignment_id) ON DELETE CASCADE,
    action        text        NOT NULL CHECK (action IN ('accept', 'decline')),
    used_at       timestamptz NOT NULL
);
