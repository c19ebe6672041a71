-- XEP-0357 push registrations (rookery-store push.rs): per account, the app servers and
-- nodes its devices enabled, with the publish-options form they gave (serialized XML, or
-- empty). Deleting the account deletes them.
CREATE TABLE push_registrations (
    domain   TEXT COLLATE "C" NOT NULL,
    username TEXT COLLATE "C" NOT NULL,
    service  TEXT COLLATE "C" NOT NULL,
    node     TEXT COLLATE "C" NOT NULL,
    options  TEXT NOT NULL,
    PRIMARY KEY (domain, username, service, node),
    FOREIGN KEY (domain, username) REFERENCES accounts (domain, username) ON DELETE CASCADE
);
