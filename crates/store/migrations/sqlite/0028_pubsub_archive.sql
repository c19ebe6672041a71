-- A pubsub node's history as a message archive (XEP-0313 on a pubsub service, XEP-0442): the
-- node's retained items in publish order, read through the archive queries of mam.rs
-- (Owner::Node) with the columns those queries name. Read-only: items are written by the
-- pubsub engine. `with_jid` is the publisher's bare JID (a JID's first '/' starts its resource).
CREATE VIEW pubsub_archive AS
SELECT seq AS id,
       service,
       node,
       item_id AS stanza_id,
       CASE WHEN instr(publisher, '/') > 0 THEN substr(publisher, 1, instr(publisher, '/') - 1) ELSE publisher END AS with_jid,
       updated_at AS ts,
       COALESCE(payload, '') AS stanza
FROM pubsub_items;
