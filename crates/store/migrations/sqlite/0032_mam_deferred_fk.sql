-- Account archives (0021_mam.sql) with their foreign key deferred (SQLite only). An INSERT
-- of many rows whose constraints could abort it midway keeps a statement journal (an undo
-- copy of every page it touches, to take back the rows before a failing one): a tenth of
-- archiving's CPU. The archive's INSERT (rookery-store mam.rs, `insert_sql`) cannot abort:
-- it skips a row whose account is gone (`WHERE EXISTS`) or whose id is taken (`OR IGNORE`),
-- and a deferred key is checked at the commit instead of by the statement. The key still
-- deletes an account's rows with it (cascades run at once, deferred or not). Same columns,
-- rows, ids and indexes; SQLite cannot alter a constraint, so the table is rebuilt.
CREATE TABLE mam_messages_rebuilt (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    domain    TEXT    NOT NULL,
    username  TEXT    NOT NULL,
    stanza_id TEXT    NOT NULL,
    with_jid  TEXT    NOT NULL,
    ts        INTEGER NOT NULL,
    stanza    TEXT    NOT NULL,
    FOREIGN KEY (domain, username) REFERENCES accounts (domain, username) ON DELETE CASCADE
        DEFERRABLE INITIALLY DEFERRED
) STRICT;
INSERT INTO mam_messages_rebuilt (id, domain, username, stanza_id, with_jid, ts, stanza)
    SELECT id, domain, username, stanza_id, with_jid, ts, stanza FROM mam_messages ORDER BY id;
DROP TABLE mam_messages;
ALTER TABLE mam_messages_rebuilt RENAME TO mam_messages;
CREATE UNIQUE INDEX mam_messages_stanza_id ON mam_messages (domain, username, stanza_id);
CREATE INDEX mam_messages_with ON mam_messages (domain, username, with_jid, id);
CREATE INDEX mam_messages_owner ON mam_messages (domain, username, id);
CREATE INDEX mam_messages_ts ON mam_messages (ts);
