-- XEP-0357 push registrations (rookery-store push.rs): per account, the app servers and
-- nodes its devices enabled, with the publish-options form they gave (serialized XML, or
-- empty). Deleting the account deletes them.
CREATE TABLE push_registrations (
    domain   TEXT NOT NULL,
    username TEXT NOT NULL,
    service  TEXT NOT NULL,
    node     TEXT NOT NULL,
    options  TEXT NOT NULL,
    PRIMARY KEY (domain, username, service, node),
    FOREIGN KEY (domain, username) REFERENCES accounts (domain, username) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;
