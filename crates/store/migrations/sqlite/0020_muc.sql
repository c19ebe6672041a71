-- Persistent multi-user chat rooms (XEP-0045) of every MUC service (rookery-store muc.rs).
-- `config` is the room configuration as JSON (rookery-muc RoomConfig); `salt` makes the
-- room's XEP-0421 occupant ids stable across restarts.
CREATE TABLE muc_rooms (
    service    TEXT    NOT NULL,
    room       TEXT    NOT NULL,
    config     TEXT    NOT NULL,
    subject    TEXT    NOT NULL,
    subject_by TEXT,
    creator    TEXT    NOT NULL,
    salt       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (service, room)
) STRICT, WITHOUT ROWID;
CREATE INDEX muc_rooms_creator ON muc_rooms (creator);

-- Affiliations (XEP-0045 §5.2) by bare JID; 'none' is never stored.
CREATE TABLE muc_affiliations (
    service     TEXT NOT NULL,
    room        TEXT NOT NULL,
    jid         TEXT NOT NULL,
    affiliation TEXT NOT NULL,
    nick        TEXT,
    reason      TEXT,
    PRIMARY KEY (service, room, jid),
    FOREIGN KEY (service, room) REFERENCES muc_rooms (service, room) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;
