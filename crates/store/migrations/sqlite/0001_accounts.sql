-- Accounts of every hosted domain (rookery-store accounts.rs).
-- Usernames are normalized localparts (RFC 7622 §3.3); domains are normalized domainparts.
-- Credentials are SCRAM verifiers (RFC 5802 §3) per hash and an Argon2id PHC string for
-- PLAIN: never a password. STRICT makes SQLite enforce the column types.
CREATE TABLE accounts (
    domain                  TEXT    NOT NULL,
    username                TEXT    NOT NULL,
    scram_sha1_salt         BLOB    NOT NULL,
    scram_sha1_iterations   INTEGER NOT NULL CHECK (scram_sha1_iterations > 0),
    scram_sha1_stored_key   BLOB    NOT NULL,
    scram_sha1_server_key   BLOB    NOT NULL,
    scram_sha256_salt       BLOB    NOT NULL,
    scram_sha256_iterations INTEGER NOT NULL CHECK (scram_sha256_iterations > 0),
    scram_sha256_stored_key BLOB    NOT NULL,
    scram_sha256_server_key BLOB    NOT NULL,
    scram_sha512_salt       BLOB    NOT NULL,
    scram_sha512_iterations INTEGER NOT NULL CHECK (scram_sha512_iterations > 0),
    scram_sha512_stored_key BLOB    NOT NULL,
    scram_sha512_server_key BLOB    NOT NULL,
    argon2                  TEXT    NOT NULL,
    created_at              INTEGER NOT NULL,
    PRIMARY KEY (domain, username)
) STRICT, WITHOUT ROWID;
