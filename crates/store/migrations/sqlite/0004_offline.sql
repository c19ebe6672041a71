-- XEP-0160 offline messages (rookery-store offline.rs), delivered oldest first.
CREATE TABLE offline_messages (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    domain     TEXT    NOT NULL,
    username   TEXT    NOT NULL,
    stanza     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    FOREIGN KEY (domain, username) REFERENCES accounts (domain, username) ON DELETE CASCADE
) STRICT;
CREATE INDEX offline_messages_owner ON offline_messages (domain, username, id);
