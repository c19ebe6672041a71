-- XEP-0357 `message-count` (rookery-store push.rs): per account with a push registration,
-- the messages held or pushed since one of its resources was last bound. In the store so
-- that it is the account's, whichever cluster node holds a message or binds a resource,
-- and survives the death of any of them. Deleting the account deletes it.
CREATE TABLE push_counts (
    domain   TEXT NOT NULL,
    username TEXT NOT NULL,
    held     INTEGER NOT NULL,
    PRIMARY KEY (domain, username),
    FOREIGN KEY (domain, username) REFERENCES accounts (domain, username) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;
