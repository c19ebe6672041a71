//! XEP-0191 block lists: per account, the JIDs (full, bare, domain or domain/resource, as
//! normalized strings) whose stanzas the server drops or bounces.

use crate::db::{execute, execute_each, with_pool};
use crate::{Store, StoreError};

/// The statement parameters (domain, username, JID) for each of `jids`.
fn rows<'a>(domain: &'a str, username: &'a str, jids: &'a [String]) -> Vec<[&'a str; 3]> {
    jids.iter()
        .map(|j| [domain, username, j.as_str()])
        .collect()
}

/// The block lists of every account, from [`Store::blocking`].
#[derive(Clone, Copy, Debug)]
pub struct Blocking<'a> {
    store: &'a Store,
}

impl<'a> Blocking<'a> {
    /// The block lists of `store`.
    pub(crate) fn new(store: &'a Store) -> Blocking<'a> {
        Blocking { store }
    }

    /// The block list of `username@domain`, sorted.
    pub async fn list(&self, domain: &str, username: &str) -> Result<Vec<String>, StoreError> {
        let rows = with_pool!(self.store, pool => {
            sqlx::query_scalar(
                "SELECT jid FROM blocklist WHERE domain = $1 AND username = $2 ORDER BY jid",
            )
            .bind(domain)
            .bind(username)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// Whether any of `jids` is on the block list of `username@domain`.
    pub async fn any_blocked(
        &self,
        domain: &str,
        username: &str,
        jids: &[&str],
    ) -> Result<bool, StoreError> {
        for jid in jids {
            let found: Option<String> = with_pool!(self.store, pool => {
                sqlx::query_scalar(
                    "SELECT jid FROM blocklist WHERE domain = $1 AND username = $2 AND jid = $3",
                )
                .bind(domain)
                .bind(username)
                .bind(*jid)
                .fetch_optional(pool)
                .await?
            });
            if found.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Adds `jids` (already present ones are kept), in one transaction.
    pub async fn add(
        &self,
        domain: &str,
        username: &str,
        jids: &[String],
    ) -> Result<(), StoreError> {
        execute_each(
            self.store,
            "INSERT INTO blocklist (domain, username, jid) VALUES ($1, $2, $3) \
             ON CONFLICT (domain, username, jid) DO NOTHING",
            &rows(domain, username, jids),
        )
        .await
    }

    /// Removes `jids`, in one transaction.
    pub async fn remove(
        &self,
        domain: &str,
        username: &str,
        jids: &[String],
    ) -> Result<(), StoreError> {
        execute_each(
            self.store,
            "DELETE FROM blocklist WHERE domain = $1 AND username = $2 AND jid = $3",
            &rows(domain, username, jids),
        )
        .await
    }

    /// Empties the block list of `username@domain`.
    pub async fn clear(&self, domain: &str, username: &str) -> Result<(), StoreError> {
        execute(
            self.store,
            "DELETE FROM blocklist WHERE domain = $1 AND username = $2",
            &[domain, username],
        )
        .await?;
        Ok(())
    }
}
