-- Persistent multi-user chat rooms (XEP-0045) of every MUC service (rookery-store muc.rs).
-- `config` is the room configuration as JSON (rookery-muc RoomConfig); `salt` makes the
-- room's XEP-0421 occupant ids stable across restarts.
CREATE TABLE muc_rooms (
    service    TEXT COLLATE "C" NOT NULL,
    room       TEXT COLLATE "C" NOT NULL,
    config     TEXT   NOT NULL,
    subject    TEXT   NOT NULL,
    subject_by TEXT,
    creator    TEXT COLLATE "C" NOT NULL,
    salt       TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (service, room)
);
CREATE INDEX muc_rooms_creator ON muc_rooms (creator);

-- Affiliations (XEP-0045 §5.2) by bare JID; 'none' is never stored.
CREATE TABLE muc_affiliations (
    service     TEXT COLLATE "C" NOT NULL,
    room        TEXT COLLATE "C" NOT NULL,
    jid         TEXT COLLATE "C" NOT NULL,
    affiliation TEXT NOT NULL,
    nick        TEXT,
    reason      TEXT,
    PRIMARY KEY (service, room, jid),
    FOREIGN KEY (service, room) REFERENCES muc_rooms (service, room) ON DELETE CASCADE
);
