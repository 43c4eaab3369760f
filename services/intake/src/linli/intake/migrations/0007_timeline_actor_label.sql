-- Who acted, as people read it (ADR 0034): the label of the staff credential behind a
-- cancel, an escalation action, a dispatch or a re-offer. `actor` keeps the role and
-- credential id.
ALTER TABLE need_timeline ADD COLUMN actor_label text;
