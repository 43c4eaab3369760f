-- Partners owns the supply side: partner organisations (HSDS-like), volunteers, published
-- capacity, the dispatch inbox of offers, completion reports and the points ledger.
-- Communities are not a table here: intake owns them; credentials scope the access.

CREATE TABLE partners (
    id          uuid        PRIMARY KEY,
    name        text        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN (
                    'canteen', 'hospital', 'elder_care_centre', 'repair_firm', 'barber',
                    'pharmacy', 'social_work_org', 'property_manager', 'other')),
    description text,
    communities text[]      NOT NULL CHECK (cardinality(communities) >= 1),
    created_by  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX partners_by_community ON partners USING gin (communities);

-- HSDS "service": what a partner offers, the need kind it serves and at what cost.
CREATE TABLE partner_services (
    id          uuid PRIMARY KEY,
    partner_id  uuid NOT NULL REFERENCES partners (id) ON DELETE CASCADE,
    name        text NOT NULL,
    need_kind   text NOT NULL,
    cost_option text NOT NULL CHECK (cost_option IN ('free', 'low_cost', 'paid')),
    description text
);
CREATE INDEX partner_services_by_partner ON partner_services (partner_id);

-- Staff contacts are personal data: they stay here and never enter an event.
CREATE TABLE partner_contacts (
    id         uuid PRIMARY KEY,
    partner_id uuid NOT NULL REFERENCES partners (id) ON DELETE CASCADE,
    name       text NOT NULL,
    title      text,
    phone      text,
    email      text
);
CREATE INDEX partner_contacts_by_partner ON partner_contacts (partner_id);

CREATE TABLE volunteers (
    id           uuid        PRIMARY KEY,
    display_name text        NOT NULL,
    skills       text[]      NOT NULL DEFAULT '{}',
    communities  text[]      NOT NULL CHECK (cardinality(communities) >= 1),
    active       boolean     NOT NULL DEFAULT true,
    created_by   text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX volunteers_by_community ON volunteers USING gin (communities);

-- Weekly availability; end before start means the period runs past midnight.
CREATE TABLE volunteer_availability (
    id           bigserial PRIMARY KEY,
    volunteer_id uuid      NOT NULL REFERENCES volunteers (id) ON DELETE CASCADE,
    weekday      smallint  NOT NULL CHECK (weekday BETWEEN 1 AND 7),
    start_time   time      NOT NULL,
    end_time     time      NOT NULL CHECK (end_time <> start_time)
);
CREATE INDEX volunteer_availability_by_volunteer ON volunteer_availability (volunteer_id);

CREATE TABLE slots (
    id              uuid        PRIMARY KEY,
    community       text        NOT NULL,
    kind            text        NOT NULL,
    provider_kind   text        NOT NULL CHECK (provider_kind IN ('partner', 'volunteer')),
    provider_id     uuid        NOT NULL,
    window_earliest timestamptz NOT NULL,
    window_latest   timestamptz NOT NULL CHECK (window_latest > window_earliest),
    capacity        integer     NOT NULL CHECK (capacity BETWEEN 1 AND 1000),
    compounds       text[]      NOT NULL DEFAULT '{}',
    published_by    text        NOT NULL,
    published_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX slots_by_community ON slots (community, published_at DESC, id DESC);
CREATE INDEX slots_by_provider ON slots (provider_kind, provider_id, published_at DESC);

-- The dispatch inbox: one row per assignment offered to a partner or volunteer.
CREATE TABLE offers (
    assignment_id   uuid        PRIMARY KEY,
    community       text        NOT NULL,
    need_id         uuid        NOT NULL,
    slot_id         uuid        NOT NULL,
    party_kind      text        NOT NULL CHECK (party_kind IN ('partner', 'volunteer')),
    party_id        uuid        NOT NULL,
    kind            text        NOT NULL,
    urgency         text        NOT NULL,
    window_earliest timestamptz NOT NULL,
    window_latest   timestamptz NOT NULL,
    details         jsonb       NOT NULL,
    compound        text,
    attempt         integer     NOT NULL,
    offered_at      timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    status          text        NOT NULL DEFAULT 'open' CHECK (status IN (
                        'open', 'accepted', 'declined', 'withdrawn', 'completed', 'failed')),
    status_reason   text,
    answered_at     timestamptz,
    received_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX offers_by_party ON offers (party_kind, party_id, offered_at DESC);
CREATE INDEX offers_by_need ON offers (need_id);

-- Withdrawals that arrived before their offer (redelivery can reorder): a late offer is
-- stored already withdrawn instead of reappearing as open.
CREATE TABLE offer_withdrawals (
    assignment_id uuid        PRIMARY KEY,
    reason        text        NOT NULL,
    at            timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE closed_needs (
    need_id   uuid        PRIMARY KEY,
    community text        NOT NULL,
    reason    text        NOT NULL CHECK (reason IN ('need_cancelled', 'need_fulfilled')),
    at        timestamptz NOT NULL DEFAULT now()
);

-- One report per assignment (the primary key), with the proof as the party gave it.
CREATE TABLE completion_reports (
    assignment_id uuid        PRIMARY KEY REFERENCES offers (assignment_id),
    community     text        NOT NULL,
    need_id       uuid        NOT NULL,
    party_kind    text        NOT NULL,
    party_id      uuid        NOT NULL,
    outcome       text        NOT NULL CHECK (outcome IN (
                      'meal_delivered', 'visit_completed', 'repair_completed', 'failed')),
    proof         jsonb       NOT NULL,
    reported_at   timestamptz NOT NULL DEFAULT now()
);

-- Double-entry points ledger. Accounts: volunteer:<id> (must never go below zero),
-- pool:<community> (issues points, so it runs negative) and redeemed:<community>.
CREATE TABLE balances (
    account      text        PRIMARY KEY,
    account_kind text        NOT NULL CHECK (account_kind IN ('volunteer', 'pool', 'redeemed')),
    balance      bigint      NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT volunteer_balance_not_negative CHECK (account_kind <> 'volunteer' OR balance >= 0)
);

CREATE TABLE ledger_entries (
    id            bigserial   PRIMARY KEY,
    entry_group   uuid        NOT NULL,
    community     text        NOT NULL,
    account       text        NOT NULL REFERENCES balances (account),
    amount        bigint      NOT NULL CHECK (amount <> 0),
    entry_kind    text        NOT NULL CHECK (entry_kind IN ('award', 'redemption')),
    need_id       uuid,
    assignment_id uuid,
    note          text,
    created_by    text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_entries_by_account ON ledger_entries (account, id DESC);
CREATE INDEX ledger_entries_by_group ON ledger_entries (entry_group);
-- A completion is credited once, whatever retries happen.
CREATE UNIQUE INDEX ledger_one_award_per_assignment
    ON ledger_entries (assignment_id, account) WHERE entry_kind = 'award';

-- Every entry group sums to zero when its transaction commits.
CREATE FUNCTION ledger_group_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT coalesce(sum(amount), 0) FROM ledger_entries
        WHERE entry_group = NEW.entry_group) <> 0 THEN
        RAISE EXCEPTION 'ledger entry group % does not balance', NEW.entry_group
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END;
$$;
CREATE CONSTRAINT TRIGGER ledger_entries_balanced
    AFTER INSERT ON ledger_entries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_group_balanced();
