-- XEP-0484 FAST tokens (rookery-store fast.rs): per account and device (the XEP-0388
-- user-agent id), the current token and the one it replaced, which stays valid until the
-- current one is used. Only SHA-256 of a token is kept (the HMAC key HT uses). `last_count`
-- is the highest `count` a client used, so a replayed or older one is refused.
CREATE TABLE fast_tokens (
    domain           TEXT COLLATE "C" NOT NULL,
    username         TEXT COLLATE "C" NOT NULL,
    device           TEXT COLLATE "C" NOT NULL,
    current_key      BYTEA  NOT NULL,
    current_expires  BIGINT NOT NULL,
    previous_key     BYTEA,
    previous_expires BIGINT,
    last_count       BIGINT NOT NULL DEFAULT 0,
    issued_at        BIGINT NOT NULL, -- Unix milliseconds: the order of issue
    PRIMARY KEY (domain, username, device),
    FOREIGN KEY (domain, username) REFERENCES accounts (domain, username) ON DELETE CASCADE
);

-- A password change ends every token of the account, whatever path changed it.
CREATE OR REPLACE FUNCTION fast_tokens_password_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM fast_tokens WHERE domain = NEW.domain AND username = NEW.username;
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS fast_tokens_password_changed ON accounts;
CREATE TRIGGER fast_tokens_password_changed AFTER UPDATE OF argon2 ON accounts
    FOR EACH ROW EXECUTE FUNCTION fast_tokens_password_changed();
