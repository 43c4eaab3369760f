-- Partners can be deactivated (issue #12, ADR 0042): not erased, so history, reports and
-- rewards stay; a deactivated partner publishes no capacity and gets no new offers.
ALTER TABLE partners
    ADD COLUMN active         boolean     NOT NULL DEFAULT true,
    ADD COLUMN deactivated_at timestamptz;
