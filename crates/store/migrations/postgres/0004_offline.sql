-- XEP-0160 offline messages (rookery-store offline.rs), delivered oldest first.
CREATE TABLE offline_messages (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    domain     TEXT COLLATE "C" NOT NULL,
    username   TEXT COLLATE "C" NOT NULL,
    stanza     TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    FOREIGN KEY (domain, username) REFERENCES accounts (domain, username) ON DELETE CASCADE
);
CREATE INDEX offline_messages_owner ON offline_messages (domain, username, id);
