-- Rosters (RFC 6121 §2, §3; XEP-0237), rookery-store rosters.rs.
-- Contacts are normalized bare JIDs. Groups are joined with U+001F (forbidden in XML text).
-- Booleans are 0/1 integers.
CREATE TABLE roster_items (
    domain       TEXT    NOT NULL,
    username     TEXT    NOT NULL,
    contact      TEXT    NOT NULL,
    name         TEXT,
    subscription TEXT    NOT NULL CHECK (subscription IN ('none', 'to', 'from', 'both')),
    ask_out      INTEGER NOT NULL DEFAULT 0,
    approved     INTEGER NOT NULL DEFAULT 0,
    groups       TEXT    NOT NULL DEFAULT '',
    ver          INTEGER NOT NULL,
    PRIMARY KEY (domain, username, contact),
    FOREIGN KEY (domain, username) REFERENCES accounts (domain, username) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- The roster version of each account: bumped by every change.
CREATE TABLE roster_versions (
    domain   TEXT    NOT NULL,
    username TEXT    NOT NULL,
    ver      INTEGER NOT NULL,
    PRIMARY KEY (domain, username),
    FOREIGN KEY (domain, username) REFERENCES accounts (domain, username) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- Tombstones: the version at which a contact was removed (for XEP-0237 diffs).
CREATE TABLE roster_removed (
    domain   TEXT    NOT NULL,
    username TEXT    NOT NULL,
    contact  TEXT    NOT NULL,
    ver      INTEGER NOT NULL,
    PRIMARY KEY (domain, username, contact),
    FOREIGN KEY (domain, username) REFERENCES accounts (domain, username) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- Inbound subscription requests not answered yet (RFC 6121 §3.1.3), as received.
CREATE TABLE roster_pending_in (
    domain     TEXT    NOT NULL,
    username   TEXT    NOT NULL,
    contact    TEXT    NOT NULL,
    stanza     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (domain, username, contact),
    FOREIGN KEY (domain, username) REFERENCES accounts (domain, username) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;
