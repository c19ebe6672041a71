//! Bearer tokens of the public HTTP face (design.md, "The HTTP face"; RFC 6750): each names an
//! account, scopes and an expiry; `rookery token issue|list|revoke` manages them and the web
//! listener checks them.
//!
//! # Why SHA-256 and not Argon2 as for passwords
//! A token is 32 random bytes from the OS generator: 256 bits of entropy, nothing to guess
//! from a dictionary. A slow, salted hash exists to make guessing *low-entropy* secrets
//! expensive; for a full-entropy secret one SHA-256 is as hard to invert, and it lets a
//! request find its token by an indexed equality on the hash (no per-request Argon2, no scan).
//! A leaked table then yields no usable token. The lookup by hash needs no constant-time
//! comparison either: learning bytes of a *hash* by timing does not help to find a preimage.
//!
//! Revoking deletes the row; an expired row is refused by [`Tokens::verify`] and listed until
//! revoked. Rows go with their account (`ON DELETE CASCADE`).

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::db::{execute, with_pool, write_tx};
use crate::{now_unix, Store, StoreError};

/// Bytes of a token's secret.
const SECRET_BYTES: usize = 32;
/// Bytes of a token's public id.
const ID_BYTES: usize = 8;

/// What a token lets its holder do, besides what the node's access model allows anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Read nodes (SSE, item retrieval) and presence streams as the token's JID.
    Read,
    /// Publish and retract items as the token's JID.
    Publish,
}

impl Scope {
    /// The name in tokens, the CLI and docs.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Publish => "publish",
        }
    }

    /// Parses a scope name.
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "read" => Some(Scope::Read),
            "publish" => Some(Scope::Publish),
            _ => None,
        }
    }

    /// Parses a comma- or space-separated list (`"read,publish"`); `None` if a name is
    /// unknown or the list is empty.
    pub fn parse_list(s: &str) -> Option<Vec<Scope>> {
        let mut v = s
            .split([',', ' '])
            .filter(|p| !p.is_empty())
            .map(Scope::parse)
            .collect::<Option<Vec<_>>>()?;
        v.sort();
        v.dedup();
        (!v.is_empty()).then_some(v)
    }

    /// The stored form: names separated by spaces.
    fn join(scopes: &[Scope]) -> String {
        scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A stored token, as listed and as a verified request sees it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// The public id (for `list` and `revoke`).
    pub id: String,
    /// The account's domain.
    pub domain: String,
    /// The account's username.
    pub username: String,
    /// What it allows.
    pub scopes: Vec<Scope>,
    /// When it was issued, seconds since the Unix epoch.
    pub created_at: i64,
    /// When it stops being accepted, seconds since the Unix epoch.
    pub expires_at: i64,
}

/// A freshly issued token: its secret is shown once and never stored.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The public id.
    pub id: String,
    /// The bearer secret, hex: what the client sends.
    pub secret: String,
}

/// The SHA-256 of a presented secret, or `None` when it is not a token's shape (then no
/// lookup is made).
fn hash_of(secret: &str) -> Option<Vec<u8>> {
    let raw = hex::decode(secret.trim()).ok()?;
    (raw.len() == SECRET_BYTES).then(|| Sha256::digest(&raw).to_vec())
}

type Row = (String, String, String, String, i64, i64);

fn info(r: Row) -> TokenInfo {
    let (id, domain, username, scopes, created_at, expires_at) = r;
    TokenInfo {
        id,
        domain,
        username,
        // A scope this version does not know is dropped, not widened.
        scopes: scopes.split(' ').filter_map(Scope::parse).collect(),
        created_at,
        expires_at,
    }
}

/// The HTTP tokens of every account, from [`Store::tokens`].
#[derive(Clone, Copy, Debug)]
pub struct Tokens<'a> {
    store: &'a Store,
}

impl<'a> Tokens<'a> {
    /// The tokens of `store`.
    pub(crate) fn new(store: &'a Store) -> Tokens<'a> {
        Tokens { store }
    }

    /// Issues a token for `username@domain` (which must exist: `Database` error otherwise,
    /// by the foreign key) valid until `expires_at`.
    pub async fn issue(
        &self,
        domain: &str,
        username: &str,
        scopes: &[Scope],
        expires_at: i64,
    ) -> Result<Issued, StoreError> {
        let mut secret = [0u8; SECRET_BYTES];
        let mut id = [0u8; ID_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        rand::rngs::OsRng.fill_bytes(&mut id);
        let hash = Sha256::digest(secret).to_vec();
        let id = hex::encode(id);
        let (i, d, u, s) = (
            id.clone(),
            domain.to_owned(),
            username.to_owned(),
            Scope::join(scopes),
        );
        let now = now_unix();
        write_tx!(self.store, conn => {
            sqlx::query(
                "INSERT INTO http_tokens (id, hash, domain, username, scopes, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&i)
            .bind(hash.as_slice())
            .bind(&d)
            .bind(&u)
            .bind(&s)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *conn)
            .await?;
        });
        Ok(Issued {
            id,
            secret: hex::encode(secret),
        })
    }

    /// The token `secret` stands for, if it exists and has not expired at `now`.
    pub async fn verify(&self, secret: &str, now: i64) -> Result<Option<TokenInfo>, StoreError> {
        let Some(hash) = hash_of(secret) else {
            return Ok(None);
        };
        let row: Option<Row> = with_pool!(self.store, pool => {
            sqlx::query_as(
                "SELECT id, domain, username, scopes, created_at, expires_at \
                 FROM http_tokens WHERE hash = $1",
            )
            .bind(hash.as_slice())
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(info).filter(|t| t.expires_at > now))
    }

    /// The tokens of `username@domain`, or of every account when `username` is `None`
    /// (oldest first).
    pub async fn list(
        &self,
        domain: &str,
        username: Option<&str>,
    ) -> Result<Vec<TokenInfo>, StoreError> {
        let rows: Vec<Row> = with_pool!(self.store, pool => {
            sqlx::query_as(
                "SELECT id, domain, username, scopes, created_at, expires_at \
                 FROM http_tokens WHERE domain = $1 AND ($2 = '' OR username = $2) \
                 ORDER BY created_at, id",
            )
            .bind(domain)
            .bind(username.unwrap_or(""))
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(info).collect())
    }

    /// Revokes (deletes) the token `id`; `false` if there was none.
    pub async fn revoke(&self, id: &str) -> Result<bool, StoreError> {
        Ok(execute(self.store, "DELETE FROM http_tokens WHERE id = $1", &[id]).await? > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_lists() {
        assert_eq!(
            Scope::parse_list("publish, read,read"),
            Some(vec![Scope::Read, Scope::Publish])
        );
        assert_eq!(Scope::parse_list(""), None);
        assert_eq!(Scope::parse_list("read,admin"), None);
        assert_eq!(Scope::join(&[Scope::Read, Scope::Publish]), "read publish");
    }

    #[test]
    fn only_token_shaped_secrets_are_hashed() {
        assert!(hash_of(&"ab".repeat(32)).is_some());
        assert!(hash_of(&"ab".repeat(31)).is_none());
        assert!(hash_of("not hex").is_none());
    }
}
