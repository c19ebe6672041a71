-- XEP-0191 block lists (rookery-store blocking.rs): normalized JIDs per account.
CREATE TABLE blocklist (
    domain   TEXT NOT NULL,
    username TEXT NOT NULL,
    jid      TEXT NOT NULL,
    PRIMARY KEY (domain, username, jid),
    FOREIGN KEY (domain, username) REFERENCES accounts (domain, username) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;
