-- The size of each stored offline message in bytes, for the per-account byte cap
-- (`[im.offline] max_bytes_per_user`, rookery-store offline.rs): the cap is a sum over an
-- index rather than a read of every stored stanza (up to 256 MB per account) at each push.
-- Rows from before are counted here, so an account already over the cap stays refused.
ALTER TABLE offline_messages ADD COLUMN bytes BIGINT NOT NULL DEFAULT 0;
UPDATE offline_messages SET bytes = octet_length(stanza);
CREATE INDEX offline_messages_bytes ON offline_messages (domain, username, bytes);
