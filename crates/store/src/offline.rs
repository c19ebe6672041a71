//! XEP-0160 offline messages: stanzas kept for an account until it next comes online, oldest
//! first, with a per-account cap in messages and in bytes enforced at insert.

use crate::db::{with_pool, write_tx};
use crate::{now_unix, Store, StoreError};

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineMessage {
    /// Row id, to delete it once delivered.
    pub id: i64,
    /// The stanza as serialized XML.
    pub stanza: String,
    /// When it was stored (Unix seconds).
    pub created_at: i64,
}

/// How much one account's offline storage holds at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfflineCap {
    /// Messages.
    pub messages: u64,
    /// Bytes of the stored stanzas, together: the message count alone let one account hold
    /// `messages` × the largest stanza.
    pub bytes: u64,
}

impl OfflineCap {
    /// Whether an account that holds `messages` may hold one more, making `bytes` in all.
    fn admits(&self, messages: i64, bytes: i64) -> bool {
        let within = |n: i64, max: u64| u64::try_from(n).is_ok_and(|n| n <= max);
        within(messages.saturating_add(1), self.messages) && within(bytes, self.bytes)
    }
}

/// The offline messages of every account, from [`Store::offline`].
#[derive(Clone, Copy, Debug)]
pub struct Offline<'a> {
    store: &'a Store,
}

impl<'a> Offline<'a> {
    /// The offline messages of `store`.
    pub(crate) fn new(store: &'a Store) -> Offline<'a> {
        Offline { store }
    }

    /// Number of messages stored for `username@domain`.
    pub async fn count(&self, domain: &str, username: &str) -> Result<u64, StoreError> {
        let n: i64 = with_pool!(self.store, pool => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM offline_messages WHERE domain = $1 AND username = $2",
            )
            .bind(domain)
            .bind(username)
            .fetch_one(pool)
            .await?
        });
        u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("negative count {n}")))
    }

    /// Stores `stanza` for `username@domain` unless that would take the account past `cap`
    /// (it holds `cap.messages` messages already, or its stored bytes and this stanza's would
    /// be more than `cap.bytes`); returns whether it was stored (committed when this returns
    /// `true`). The check and the insert are one transaction, reading the account's count
    /// and bytes from an index (each row keeps its stanza's size); on PostgreSQL callers
    /// serialize pushes to one account so the cap is exact (on SQLite the writer serializes
    /// every write).
    pub async fn push(
        &self,
        domain: &str,
        username: &str,
        stanza: &str,
        cap: OfflineCap,
    ) -> Result<bool, StoreError> {
        let now = now_unix();
        let size = i64::try_from(stanza.len()).unwrap_or(i64::MAX);
        let (domain, username, stanza) =
            (domain.to_owned(), username.to_owned(), stanza.to_owned());
        let stored = write_tx!(self.store, conn => {
            let (n, bytes): (i64, i64) = sqlx::query_as(
                "SELECT COUNT(*), CAST(COALESCE(SUM(bytes), 0) AS BIGINT) FROM offline_messages \
                 WHERE domain = $1 AND username = $2",
            )
            .bind(&domain)
            .bind(&username)
            .fetch_one(&mut *conn)
            .await?;
            if !cap.admits(n, bytes.saturating_add(size)) {
                false
            } else {
                sqlx::query(
                    "INSERT INTO offline_messages (domain, username, stanza, created_at, bytes) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&domain)
                .bind(&username)
                .bind(&stanza)
                .bind(now)
                .bind(size)
                .execute(&mut *conn)
                .await?;
                true
            }
        });
        Ok(stored)
    }

    /// Up to `limit` messages of `username@domain` after the one with id `after` (0: from
    /// the first), oldest first.
    pub async fn list(
        &self,
        domain: &str,
        username: &str,
        after: i64,
        limit: u64,
    ) -> Result<Vec<OfflineMessage>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<(i64, String, i64)> = with_pool!(self.store, pool => {
            sqlx::query_as(
                "SELECT id, stanza, created_at FROM offline_messages \
                 WHERE domain = $1 AND username = $2 AND id > $3 ORDER BY id LIMIT $4",
            )
            .bind(domain)
            .bind(username)
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(id, stanza, created_at)| OfflineMessage {
                id,
                stanza,
                created_at,
            })
            .collect())
    }

    /// Deletes the messages `ids` of `username@domain` (once delivered).
    pub async fn delete(
        &self,
        domain: &str,
        username: &str,
        ids: &[i64],
    ) -> Result<(), StoreError> {
        let (domain, username, ids) = (domain.to_owned(), username.to_owned(), ids.to_vec());
        write_tx!(self.store, conn => {
            for id in ids {
                sqlx::query(
                    "DELETE FROM offline_messages WHERE domain = $1 AND username = $2 AND id = $3",
                )
                .bind(&domain)
                .bind(&username)
                .bind(id)
                .execute(&mut *conn)
                .await?;
            }
        });
        Ok(())
    }
}
