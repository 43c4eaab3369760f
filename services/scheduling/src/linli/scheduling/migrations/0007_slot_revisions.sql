-- Slots follow partners' edits and withdrawals (issue #12, ADR 0042): the latest
-- revision applied (a later one wins whatever the arrival order) and when the slot was
-- withdrawn (matching never reserves a withdrawn slot).
ALTER TABLE slots
    ADD COLUMN revision     integer NOT NULL DEFAULT 0,
    ADD COLUMN withdrawn_at timestamptz;
