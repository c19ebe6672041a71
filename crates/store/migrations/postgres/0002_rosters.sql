-- Rosters (RFC 6121 §2, §3; XEP-0237), rookery-store rosters.rs.
-- Contacts are normalized bare JIDs. Groups are joined with U+001F (forbidden in XML text).
CREATE TABLE roster_items (
    domain       TEXT COLLATE "C" NOT NULL,
    username     TEXT COLLATE "C" NOT NULL,
    contact      TEXT COLLATE "C" NOT NULL,
    name         TEXT,
    subscription TEXT    NOT NULL CHECK (subscription IN ('none', 'to', 'from', 'both')),
    ask_out      BOOLEAN NOT NULL DEFAULT FALSE,
    approved     BOOLEAN NOT NULL DEFAULT FALSE,
    groups       TEXT    NOT NULL DEFAULT '',
    ver          BIGINT  NOT NULL,
    PRIMARY KEY (domain, username, contact),
    FOREIGN KEY (domain, username) REFERENCES accounts (domain, username) ON DELETE CASCADE
);

-- The roster version of each account: bumped by every change.
CREATE TABLE roster_versions (
    domain   TEXT COLLATE "C" NOT NULL,
    username TEXT COLLATE "C" NOT NULL,
    ver      BIGINT NOT NULL,
    PRIMARY KEY (domain, username),
    FOREIGN KEY (domain, username) REFERENCES accounts (domain, username) ON DELETE CASCADE
);

-- Tombstones: the version at which a contact was removed (for XEP-0237 diffs).
CREATE TABLE roster_removed (
    domain   TEXT COLLATE "C" NOT NULL,
    username TEXT COLLATE "C" NOT NULL,
    contact  TEXT COLLATE "C" NOT NULL,
    ver      BIGINT NOT NULL,
    PRIMARY KEY (domain, username, contact),
    FOREIGN KEY (domain, username) REFERENCES accounts (domain, username) ON DELETE CASCADE
);

-- Inbound subscription requests not answered yet (RFC 6121 §3.1.3), as received.
CREATE TABLE roster_pending_in (
    domain     TEXT COLLATE "C" NOT NULL,
    username   TEXT COLLATE "C" NOT NULL,
    contact    TEXT COLLATE "C" NOT NULL,
    stanza     TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (domain, username, contact),
    FOREIGN KEY (domain, username) REFERENCES accounts (domain, username) ON DELETE CASCADE
);
