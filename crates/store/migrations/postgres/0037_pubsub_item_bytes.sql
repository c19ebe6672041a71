-- What each stored pubsub item counts for against a byte budget (`[pubsub]
-- pep_max_bytes_per_user`, rookery-store pubsub.rs): its payload's bytes, at least 1 KiB (so
-- a budget bounds the number of items, and the cost of summing them, too). The budget is a
-- sum over an index rather than a read of every stored payload at each publication. Rows
-- from before are counted here, so an account already over its budget stays refused.
ALTER TABLE pubsub_items ADD COLUMN counted_bytes BIGINT NOT NULL DEFAULT 0;
UPDATE pubsub_items SET counted_bytes = GREATEST(1024, COALESCE(octet_length(payload), 0));
CREATE INDEX pubsub_items_counted_bytes ON pubsub_items (service, counted_bytes);
