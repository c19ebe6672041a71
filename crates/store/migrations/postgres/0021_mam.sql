-- Message archives (XEP-0313) of accounts (rookery-store mam.rs): both directions of their
-- one-to-one messages, oldest first by `id`. `with_jid` is the other party's bare JID,
-- `stanza_id` the archive's XEP-0359 id (unique per account), `ts` Unix seconds.
CREATE TABLE mam_messages (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    domain    TEXT COLLATE "C" NOT NULL,
    username  TEXT COLLATE "C" NOT NULL,
    stanza_id TEXT COLLATE "C" NOT NULL,
    with_jid  TEXT COLLATE "C" NOT NULL,
    ts        BIGINT NOT NULL,
    stanza    TEXT   NOT NULL,
    FOREIGN KEY (domain, username) REFERENCES accounts (domain, username) ON DELETE CASCADE
);
CREATE UNIQUE INDEX mam_messages_stanza_id ON mam_messages (domain, username, stanza_id);
CREATE INDEX mam_messages_with ON mam_messages (domain, username, with_jid, id);
CREATE INDEX mam_messages_owner ON mam_messages (domain, username, id);
CREATE INDEX mam_messages_ts ON mam_messages (ts);

-- Archiving preferences (XEP-0313 §6): the default (always, never, roster) and the JIDs
-- always and never archived, one bare JID per line.
CREATE TABLE mam_prefs (
    domain   TEXT COLLATE "C" NOT NULL,
    username TEXT COLLATE "C" NOT NULL,
    default_ TEXT NOT NULL,
    always   TEXT NOT NULL,
    never    TEXT NOT NULL,
    PRIMARY KEY (domain, username),
    FOREIGN KEY (domain, username) REFERENCES accounts (domain, username) ON DELETE CASCADE
);
