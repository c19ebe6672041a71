-- XEP-0484 FAST tokens (rookery-store fast.rs): per account and device (the XEP-0388
-- user-agent id), the current token and the one it replaced, which stays valid until the
-- current one is used. Only SHA-256 of a token is kept (the HMAC key HT uses). `last_count`
-- is the highest `count` a client used, so a replayed or older one is refused.
CREATE TABLE fast_tokens (
    domain           TEXT    NOT NULL,
    username         TEXT    NOT NULL,
    device           TEXT    NOT NULL,
    current_key      BLOB    NOT NULL,
    current_expires  INTEGER NOT NULL,
    previous_key     BLOB,
    previous_expires INTEGER,
    last_count       INTEGER NOT NULL DEFAULT 0,
    issued_at        INTEGER NOT NULL, -- Unix milliseconds: the order of issue
    PRIMARY KEY (domain, username, device),
    FOREIGN KEY (domain, username) REFERENCES accounts (domain, username) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- A password change ends every token of the account, whatever path changed it.
CREATE TRIGGER IF NOT EXISTS fast_tokens_password_changed AFTER UPDATE OF argon2 ON accounts
BEGIN
    DELETE FROM fast_tokens WHERE domain = NEW.domain AND username = NEW.username;
END;
