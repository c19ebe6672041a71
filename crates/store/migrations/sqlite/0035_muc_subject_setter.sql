-- The subject a room sends a newcomer (XEP-0045 §7.2.15) carries who set it as every
-- message from an occupant does: its XEP-0421 occupant id (the setter may have left, so the
-- id is kept, not recomputed), and when (Unix seconds, for its `<delay/>`). NULL for a
-- subject set before (or by the room itself): sent without them, as before.
ALTER TABLE muc_rooms ADD COLUMN subject_occupant_id TEXT;
ALTER TABLE muc_rooms ADD COLUMN subject_at INTEGER;
