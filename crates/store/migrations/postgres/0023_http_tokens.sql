-- Bearer tokens of the public HTTP face (rookery-store tokens.rs; docs/http.md): each names an
-- account, scopes and an expiry. Only the SHA-256 of the token's 32-byte random secret is
-- stored: a database leak reveals no usable token. `id` is a short public handle for
-- `rookery token list|revoke`. Deleted with the account.
CREATE TABLE http_tokens (
    id         TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    hash       BYTEA  NOT NULL UNIQUE,
    domain     TEXT COLLATE "C" NOT NULL,
    username   TEXT COLLATE "C" NOT NULL,
    scopes     TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    FOREIGN KEY (domain, username) REFERENCES accounts (domain, username) ON DELETE CASCADE
);

CREATE INDEX http_tokens_by_account ON http_tokens (domain, username);
