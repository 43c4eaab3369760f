-- Offers received before ADR 0031 kept a repair's description in their details; the
-- description stays in intake now (the accepted helper reads it from there), so the
-- dispatch inbox forgets it.
UPDATE offers SET details = details - 'description' WHERE details ? 'description';
