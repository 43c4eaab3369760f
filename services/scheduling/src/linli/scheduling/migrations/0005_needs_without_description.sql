-- Needs received before ADR 0031 kept a repair's description in their details (and put it
-- in every offer); the description stays in intake now, so scheduling forgets it.
UPDATE needs SET details = details - 'description' WHERE details ? 'description';
