//! XEP-0484 FAST tokens: per account and device, the current token and the one it
//! replaced (valid until the current one is used, so a client that missed the success
//! carrying its new token can still log in), each with its expiry, the HT mechanism it was
//! issued for (§3.3 binds it to that one) and the highest `count` used with it (§3.1: the
//! count restarts with each token).
//!
//! Only keys are stored (`rookery_sasl::ht::token_key`: SHA-256 of the token, the HMAC
//! key HT uses). Deleting the account deletes its tokens (`ON DELETE CASCADE`); changing its
//! password does too (a trigger on the credential columns, so every path that changes a
//! password is covered). Times are Unix seconds.

use crate::db::{with_pool, write_tx};
use crate::{Store, StoreError};

/// One stored token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Its key.
    pub key: Vec<u8>,
    /// When it expires.
    pub expires: i64,
    /// The mechanism it was issued for (`HT-SHA-256-NONE`…); `None` for a token stored
    /// before mechanisms were (migration 0034 on SQLite, 0032 on PostgreSQL).
    pub mechanism: Option<String>,
    /// The highest `count` used with it (0: none yet).
    pub last_count: i64,
}

/// The tokens of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceTokens {
    /// The current token.
    pub current: Token,
    /// The token it replaced, until the current one is used.
    pub previous: Option<Token>,
}

/// Which of a device's tokens an authentication used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Used {
    /// The current one: the previous one is no longer valid.
    Current,
    /// The previous one (the client did not get, or not yet use, the current one).
    Previous,
}

/// FAST tokens, from [`Store::fast`].
#[derive(Clone, Copy, Debug)]
pub struct Fast<'a> {
    store: &'a Store,
}

/// A `fast_tokens` row: the current token's columns, then the previous one's.
type Row = (
    Vec<u8>,
    i64,
    Option<String>,
    i64,
    Option<Vec<u8>>,
    Option<i64>,
    Option<String>,
    i64,
);

impl<'a> Fast<'a> {
    pub(crate) fn new(store: &'a Store) -> Fast<'a> {
        Fast { store }
    }

    /// The tokens of `device` of `username@domain`, if any.
    pub async fn get(
        &self,
        domain: &str,
        username: &str,
        device: &str,
    ) -> Result<Option<DeviceTokens>, StoreError> {
        let row: Option<Row> = with_pool!(self.store, pool => {
            sqlx::query_as(
                "SELECT current_key, current_expires, current_mechanism, last_count, \
                 previous_key, previous_expires, previous_mechanism, previous_count \
                 FROM fast_tokens WHERE domain = $1 AND username = $2 AND device = $3",
            )
            .bind(domain)
            .bind(username)
            .bind(device)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(
            |(key, expires, mechanism, last_count, pk, pe, pm, pc)| DeviceTokens {
                current: Token {
                    key,
                    expires,
                    mechanism,
                    last_count,
                },
                previous: pk.zip(pe).map(|(key, expires)| Token {
                    key,
                    expires,
                    mechanism: pm,
                    last_count: pc,
                }),
            },
        ))
    }

    /// Issues a new token for `device`, for `mechanism`, at `issued_at_ms` (Unix
    /// milliseconds, the order of issue): it becomes the current one, with no count used yet,
    /// and the current one (if any, with its count) the previous one.
    /// An account keeps at most `max_devices` devices with tokens: beyond that, those issued
    /// longest ago are forgotten, so a client cannot fill the store with tokens for made-up
    /// devices.
    #[allow(clippy::too_many_arguments, reason = "one row's columns")]
    pub async fn issue(
        &self,
        domain: &str,
        username: &str,
        device: &str,
        key: &[u8],
        expires: i64,
        mechanism: &str,
        issued_at_ms: i64,
        max_devices: u32,
    ) -> Result<(), StoreError> {
        let (d, u, dev, key, mech) = (
            domain.to_owned(),
            username.to_owned(),
            device.to_owned(),
            key.to_vec(),
            mechanism.to_owned(),
        );
        let keep = i64::from(max_devices.max(1));
        write_tx!(self.store, conn => {
            sqlx::query(
                "INSERT INTO fast_tokens (domain, username, device, current_key, \
                 current_expires, current_mechanism, last_count, issued_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, 0, $7) \
                 ON CONFLICT (domain, username, device) DO UPDATE SET \
                 previous_key = fast_tokens.current_key, \
                 previous_expires = fast_tokens.current_expires, \
                 previous_mechanism = fast_tokens.current_mechanism, \
                 previous_count = fast_tokens.last_count, \
                 current_key = excluded.current_key, \
                 current_expires = excluded.current_expires, \
                 current_mechanism = excluded.current_mechanism, \
                 last_count = 0, \
                 issued_at = excluded.issued_at",
            )
            .bind(d.as_str())
            .bind(u.as_str())
            .bind(dev.as_str())
            .bind(key.as_slice())
            .bind(expires)
            .bind(mech.as_str())
            .bind(issued_at_ms)
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "DELETE FROM fast_tokens WHERE domain = $1 AND username = $2 AND \
                 (SELECT COUNT(*) FROM fast_tokens AS newer \
                  WHERE newer.domain = $1 AND newer.username = $2 \
                  AND (newer.issued_at > fast_tokens.issued_at \
                       OR (newer.issued_at = fast_tokens.issued_at \
                           AND newer.device < fast_tokens.device))) >= $3",
            )
            .bind(d.as_str())
            .bind(u.as_str())
            .bind(keep)
            .execute(&mut *conn)
            .await?;
        });
        Ok(())
    }

    /// Records that `device` authenticated with the token `used`, whose key is `key`, and
    /// `count`: `false` (and nothing changes) when `count` is not above every count used with
    /// that token before, a replay — or when that token is no longer `used` (a login that
    /// issued a new token came in between: its count belongs to the token it checked, not
    /// to the one that took its place). Using the current token ends the previous one.
    #[allow(clippy::too_many_arguments, reason = "the row's key and the use")]
    pub async fn use_token(
        &self,
        domain: &str,
        username: &str,
        device: &str,
        used: Used,
        key: &[u8],
        count: i64,
    ) -> Result<bool, StoreError> {
        let sql = match used {
            Used::Current => {
                "UPDATE fast_tokens SET last_count = $5, previous_key = NULL, \
                 previous_expires = NULL, previous_mechanism = NULL, previous_count = 0 \
                 WHERE domain = $1 AND username = $2 AND device = $3 AND current_key = $4 \
                 AND last_count < $5"
            }
            Used::Previous => {
                "UPDATE fast_tokens SET previous_count = $5 \
                 WHERE domain = $1 AND username = $2 AND device = $3 \
                 AND previous_key = $4 AND previous_count < $5"
            }
        };
        self.write_device(sql, domain, username, device, key, Some(count))
            .await
    }

    /// Forgets the tokens of `device`, which authenticated with the one whose key is `key`
    /// and asked to invalidate it (XEP-0484 `invalidate`: the device logs out, so its other
    /// token goes too). `false` (nothing changes) when that token is no longer the device's.
    pub async fn invalidate(
        &self,
        domain: &str,
        username: &str,
        device: &str,
        key: &[u8],
    ) -> Result<bool, StoreError> {
        self.write_device(
            "DELETE FROM fast_tokens WHERE domain = $1 AND username = $2 AND device = $3 \
             AND (current_key = $4 OR previous_key = $4)",
            domain,
            username,
            device,
            key,
            None,
        )
        .await
    }

    /// Runs `sql`, a write of one device's row, with `$1`–`$4` bound to the account, the
    /// device and the key of the token it authenticated with, and `$5` to `count` if given;
    /// whether a row changed.
    async fn write_device(
        &self,
        sql: &'static str,
        domain: &str,
        username: &str,
        device: &str,
        key: &[u8],
        count: Option<i64>,
    ) -> Result<bool, StoreError> {
        let (d, u, dev, key) = (
            domain.to_owned(),
            username.to_owned(),
            device.to_owned(),
            key.to_vec(),
        );
        let n = write_tx!(self.store, conn => {
            let q = sqlx::query(sql)
                .bind(d.as_str())
                .bind(u.as_str())
                .bind(dev.as_str())
                .bind(key.as_slice());
            let q = match count {
                Some(c) => q.bind(c),
                None => q,
            };
            q.execute(&mut *conn).await?.rows_affected()
        });
        Ok(n > 0)
    }
}
