-- Account archives whose rows SQLite's archiver numbers itself (rookery-store mam.rs,
-- `ArchiveId`): such a row's stanza-id is derived from its id and its stored name is empty,
-- so the index of names leaves it out and costs it nothing (it was a third of SQLite's work
-- per archived row). Rows written before keep their names, found by this index as before.
-- Queries by name say `stanza_id <> ''`, which is how SQLite knows it may use it.
DROP INDEX mam_messages_stanza_id;
CREATE UNIQUE INDEX mam_messages_stanza_id ON mam_messages (domain, username, stanza_id)
    WHERE stanza_id <> '';
