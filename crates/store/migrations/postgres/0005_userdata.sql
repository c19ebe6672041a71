-- Per-account documents (rookery-store userdata.rs): XEP-0054 vCards, XEP-0049 private XML,
-- XEP-0012 last activity. XML is stored serialized.
CREATE TABLE vcards (
    domain   TEXT COLLATE "C" NOT NULL,
    username TEXT COLLATE "C" NOT NULL,
    xml      TEXT NOT NULL,
    PRIMARY KEY (domain, username),
    FOREIGN KEY (domain, username) REFERENCES accounts (domain, username) ON DELETE CASCADE
);

CREATE TABLE private_storage (
    domain   TEXT COLLATE "C" NOT NULL,
    username TEXT COLLATE "C" NOT NULL,
    name     TEXT COLLATE "C" NOT NULL,
    ns       TEXT COLLATE "C" NOT NULL,
    xml      TEXT NOT NULL,
    PRIMARY KEY (domain, username, name, ns),
    FOREIGN KEY (domain, username) REFERENCES accounts (domain, username) ON DELETE CASCADE
);

CREATE TABLE last_activity (
    domain   TEXT COLLATE "C" NOT NULL,
    username TEXT COLLATE "C" NOT NULL,
    at       BIGINT NOT NULL,
    status   TEXT   NOT NULL,
    PRIMARY KEY (domain, username),
    FOREIGN KEY (domain, username) REFERENCES accounts (domain, username) ON DELETE CASCADE
);
