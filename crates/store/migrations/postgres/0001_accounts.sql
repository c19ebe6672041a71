-- Accounts of every hosted domain (rookery-store accounts.rs).
-- Usernames are normalized localparts (RFC 7622 §3.3); domains are normalized domainparts.
-- Credentials are SCRAM verifiers (RFC 5802 §3) per hash and an Argon2id PHC string for
-- PLAIN: never a password. COLLATE "C" sorts by code point, like SQLite's BINARY, so that
-- listings are ordered the same on both backends whatever the database locale.
CREATE TABLE accounts (
    domain                  TEXT COLLATE "C" NOT NULL,
    username                TEXT COLLATE "C" NOT NULL,
    scram_sha1_salt         BYTEA  NOT NULL,
    scram_sha1_iterations   BIGINT NOT NULL CHECK (scram_sha1_iterations > 0),
    scram_sha1_stored_key   BYTEA  NOT NULL,
    scram_sha1_server_key   BYTEA  NOT NULL,
    scram_sha256_salt       BYTEA  NOT NULL,
    scram_sha256_iterations BIGINT NOT NULL CHECK (scram_sha256_iterations > 0),
    scram_sha256_stored_key BYTEA  NOT NULL,
    scram_sha256_server_key BYTEA  NOT NULL,
    scram_sha512_salt       BYTEA  NOT NULL,
    scram_sha512_iterations BIGINT NOT NULL CHECK (scram_sha512_iterations > 0),
    scram_sha512_stored_key BYTEA  NOT NULL,
    scram_sha512_server_key BYTEA  NOT NULL,
    argon2                  TEXT   NOT NULL,
    created_at              BIGINT NOT NULL,
    PRIMARY KEY (domain, username)
);
