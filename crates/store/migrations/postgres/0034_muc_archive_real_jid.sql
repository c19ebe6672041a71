-- The sender's real bare JID with each message of a room's archive, for those the room
-- shows real JIDs to (XEP-0313 §5.1.2: everyone in a non-anonymous room, moderators in a
-- semi-anonymous one). NULL for rows archived before: their results carry none.
ALTER TABLE muc_archive ADD COLUMN real_jid TEXT;
