-- XEP-0191 block lists (rookery-store blocking.rs): normalized JIDs per account.
CREATE TABLE blocklist (
    domain   TEXT COLLATE "C" NOT NULL,
    username TEXT COLLATE "C" NOT NULL,
    jid      TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (domain, username, jid),
    FOREIGN KEY (domain, username) REFERENCES accounts (domain, username) ON DELETE CASCADE
);
