//! Accounts: one row per (domain, username) with the SASL verifiers of RFC 5802 §3 (per
//! SCRAM hash) and an Argon2id hash for PLAIN (RFC 4616). No password is ever stored.
//!
//! Usernames and domains are stored as given: the caller normalizes them first (RFC 7622
//! localpart and domainpart), so that lookups are exact matches.

use rookery_sasl::{Credentials, ScramKeys};

use crate::db::{execute, with_pool, write_tx};
use crate::{now_unix, Store, StoreError};

/// The credential columns, in the order [`bind_credentials!`] binds and [`CredentialsRow`]
/// reads them.
macro_rules! credential_columns {
    () => {
        "scram_sha1_salt, scram_sha1_iterations, scram_sha1_stored_key, scram_sha1_server_key, \
         scram_sha256_salt, scram_sha256_iterations, scram_sha256_stored_key, scram_sha256_server_key, \
         scram_sha512_salt, scram_sha512_iterations, scram_sha512_stored_key, scram_sha512_server_key, \
         argon2"
    };
}

/// Binds the 13 credential values in [`credential_columns!`] order.
macro_rules! bind_credentials {
    ($query:expr, $creds:expr) => {{
        let c: &Credentials = $creds;
        $query
            .bind(c.scram_sha1.salt.as_slice())
            .bind(i64::from(c.scram_sha1.iterations))
            .bind(c.scram_sha1.stored_key.as_slice())
            .bind(c.scram_sha1.server_key.as_slice())
            .bind(c.scram_sha256.salt.as_slice())
            .bind(i64::from(c.scram_sha256.iterations))
            .bind(c.scram_sha256.stored_key.as_slice())
            .bind(c.scram_sha256.server_key.as_slice())
            .bind(c.scram_sha512.salt.as_slice())
            .bind(i64::from(c.scram_sha512.iterations))
            .bind(c.scram_sha512.stored_key.as_slice())
            .bind(c.scram_sha512.server_key.as_slice())
            .bind(c.argon2.as_str())
    }};
}

const INSERT: &str = concat!(
    "INSERT INTO accounts (domain, username, ",
    credential_columns!(),
    ", created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
     ON CONFLICT (domain, username) DO NOTHING"
);

const SELECT_CREDENTIALS: &str = concat!(
    "SELECT ",
    credential_columns!(),
    " FROM accounts WHERE domain = $1 AND username = $2"
);

const UPDATE_CREDENTIALS: &str = "UPDATE accounts SET \
     scram_sha1_salt = $3, scram_sha1_iterations = $4, scram_sha1_stored_key = $5, scram_sha1_server_key = $6, \
     scram_sha256_salt = $7, scram_sha256_iterations = $8, scram_sha256_stored_key = $9, scram_sha256_server_key = $10, \
     scram_sha512_salt = $11, scram_sha512_iterations = $12, scram_sha512_stored_key = $13, scram_sha512_server_key = $14, \
     argon2 = $15 \
     WHERE domain = $1 AND username = $2";

/// One hash's columns as read: salt, iterations, stored key, server key.
type KeysRow = (Vec<u8>, i64, Vec<u8>, Vec<u8>);

/// The credential columns as read, in [`credential_columns!`] order.
type CredentialsRow = (
    Vec<u8>,
    i64,
    Vec<u8>,
    Vec<u8>,
    Vec<u8>,
    i64,
    Vec<u8>,
    Vec<u8>,
    Vec<u8>,
    i64,
    Vec<u8>,
    Vec<u8>,
    String,
);

/// The accounts of every hosted domain, from [`Store::accounts`].
#[derive(Clone, Copy, Debug)]
pub struct Accounts<'a> {
    store: &'a Store,
}

impl<'a> Accounts<'a> {
    /// The accounts of `store`.
    pub(crate) fn new(store: &'a Store) -> Accounts<'a> {
        Accounts { store }
    }

    /// Creates an account; [`StoreError::Conflict`] if `username@domain` exists already.
    pub async fn create(
        &self,
        domain: &str,
        username: &str,
        creds: &Credentials,
    ) -> Result<(), StoreError> {
        let created_at = now_unix();
        let (domain, username, creds) = (domain.to_owned(), username.to_owned(), creds.clone());
        let result = write_tx!(self.store, conn => {
            bind_credentials!(sqlx::query(INSERT).bind(&domain).bind(&username), &creds)
                .bind(created_at)
                .execute(&mut *conn)
                .await?
                .rows_affected()
        });
        if result == 0 {
            return Err(StoreError::Conflict);
        }
        Ok(())
    }

    /// The stored credentials of `username@domain`, `None` if there is no such account.
    pub async fn credentials(
        &self,
        domain: &str,
        username: &str,
    ) -> Result<Option<Credentials>, StoreError> {
        let row: Option<CredentialsRow> = with_pool!(self.store, pool => {
            sqlx::query_as(SELECT_CREDENTIALS)
                .bind(domain)
                .bind(username)
                .fetch_optional(pool)
                .await?
        });
        row.map(credentials_from_row).transpose()
    }

    /// Replaces the credentials of `username@domain` (password change); `false` if there is
    /// no such account.
    pub async fn set_credentials(
        &self,
        domain: &str,
        username: &str,
        creds: &Credentials,
    ) -> Result<bool, StoreError> {
        let (domain, username, creds) = (domain.to_owned(), username.to_owned(), creds.clone());
        let result = write_tx!(self.store, conn => {
            bind_credentials!(
                sqlx::query(UPDATE_CREDENTIALS).bind(&domain).bind(&username),
                &creds
            )
            .execute(&mut *conn)
            .await?
            .rows_affected()
        });
        Ok(result > 0)
    }

    /// Deletes `username@domain`; `false` if there was no such account.
    pub async fn delete(&self, domain: &str, username: &str) -> Result<bool, StoreError> {
        let n = execute(
            self.store,
            "DELETE FROM accounts WHERE domain = $1 AND username = $2",
            &[domain, username],
        )
        .await?;
        Ok(n > 0)
    }

    /// Whether `username@domain` exists.
    pub async fn exists(&self, domain: &str, username: &str) -> Result<bool, StoreError> {
        // Selecting the key column rather than a literal: `1` is INT4 on PostgreSQL and
        // INTEGER on SQLite, and no one Rust type decodes from both.
        let found: Option<String> = with_pool!(self.store, pool => {
            sqlx::query_scalar("SELECT username FROM accounts WHERE domain = $1 AND username = $2")
                .bind(domain)
                .bind(username)
                .fetch_optional(pool)
                .await?
        });
        Ok(found.is_some())
    }

    /// The usernames of `domain`, sorted by code point.
    pub async fn list(&self, domain: &str) -> Result<Vec<String>, StoreError> {
        let names = with_pool!(self.store, pool => {
            sqlx::query_scalar("SELECT username FROM accounts WHERE domain = $1 ORDER BY username")
                .bind(domain)
                .fetch_all(pool)
                .await?
        });
        Ok(names)
    }

    /// The number of accounts of `domain`.
    pub async fn count(&self, domain: &str) -> Result<u64, StoreError> {
        let count: i64 = with_pool!(self.store, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM accounts WHERE domain = $1")
                .bind(domain)
                .fetch_one(pool)
                .await?
        });
        u64::try_from(count).map_err(|_| StoreError::Corrupt(format!("negative count {count}")))
    }
}

/// Turns the stored columns back into [`Credentials`].
fn credentials_from_row(row: CredentialsRow) -> Result<Credentials, StoreError> {
    let (s1, i1, st1, sv1, s256, i256, st256, sv256, s512, i512, st512, sv512, argon2) = row;
    Ok(Credentials {
        scram_sha1: keys((s1, i1, st1, sv1))?,
        scram_sha256: keys((s256, i256, st256, sv256))?,
        scram_sha512: keys((s512, i512, st512, sv512))?,
        argon2,
    })
}

/// One hash's verifiers, checking the iteration count fits the type it was written from.
fn keys((salt, iterations, stored_key, server_key): KeysRow) -> Result<ScramKeys, StoreError> {
    let iterations = u32::try_from(iterations)
        .map_err(|_| StoreError::Corrupt(format!("iteration count {iterations} out of range")))?;
    Ok(ScramKeys {
        salt,
        iterations,
        stored_key,
        server_key,
    })
}
