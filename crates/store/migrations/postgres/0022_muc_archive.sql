-- Archives of multi-user chat rooms (XEP-0313 on a room JID; rookery-store mam.rs): the
-- groupchat messages of each room, oldest first by `id`. `with_jid` is the sender's
-- occupant JID (room@service/nick), `stanza_id` the room's XEP-0359 id. Deleted with the
-- room by the MUC service (rooms are not rows here when temporary, so no foreign key).
CREATE TABLE muc_archive (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    service   TEXT COLLATE "C" NOT NULL,
    room      TEXT COLLATE "C" NOT NULL,
    stanza_id TEXT COLLATE "C" NOT NULL,
    with_jid  TEXT COLLATE "C" NOT NULL,
    ts        BIGINT  NOT NULL,
    stanza    TEXT    NOT NULL
);
CREATE UNIQUE INDEX muc_archive_stanza_id ON muc_archive (service, room, stanza_id);
CREATE INDEX muc_archive_with ON muc_archive (service, room, with_jid, id);
CREATE INDEX muc_archive_room ON muc_archive (service, room, id);
CREATE INDEX muc_archive_ts ON muc_archive (ts);
