-- Per-account documents (rookery-store userdata.rs): XEP-0054 vCards, XEP-0049 private XML,
-- XEP-0012 last activity. XML is stored serialized.
CREATE TABLE vcards (
    domain   TEXT NOT NULL,
    username TEXT NOT NULL,
    xml      TEXT NOT NULL,
    PRIMARY KEY (domain, username),
    FOREIGN KEY (domain, username) REFERENCES accounts (domain, username) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

CREATE TABLE private_storage (
    domain   TEXT NOT NULL,
    username TEXT NOT NULL,
    name     TEXT NOT NULL,
    ns       TEXT NOT NULL,
    xml      TEXT NOT NULL,
    PRIMARY KEY (domain, username, name, ns),
    FOREIGN KEY (domain, username) REFERENCES accounts (domain, username) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

CREATE TABLE last_activity (
    domain   TEXT    NOT NULL,
    username TEXT    NOT NULL,
    at       INTEGER NOT NULL,
    status   TEXT    NOT NULL,
    PRIMARY KEY (domain, username),
    FOREIGN KEY (domain, username) REFERENCES accounts (domain, username) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;
