-- Bearer tokens of the public HTTP face (rookery-store tokens.rs; docs/http.md): each names an
-- account, scopes and an expiry. Only the SHA-256 of the token's 32-byte random secret is
-- stored: a database leak reveals no usable token. `id` is a short public handle for
-- `rookery token list|revoke`. Deleted with the account.
CREATE TABLE http_tokens (
    id         TEXT    NOT NULL PRIMARY KEY,
    hash       BLOB    NOT NULL UNIQUE,
    domain     TEXT    NOT NULL,
    username   TEXT    NOT NULL,
    scopes     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    FOREIGN KEY (domain, username) REFERENCES accounts (domain, username) ON DELETE CASCADE
) STRICT;

CREATE INDEX http_tokens_by_account ON http_tokens (domain, username);
