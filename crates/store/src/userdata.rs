//! Small per-account documents: XEP-0054 vCards, XEP-0049 private XML (keyed by element name
//! and namespace) and XEP-0012 last activity (time and status of the last logout).

use crate::db::{execute, execute_each, with_pool};
use crate::{Store, StoreError};

/// vCards, private XML and last activity of every account, from [`Store::userdata`].
#[derive(Clone, Copy, Debug)]
pub struct UserData<'a> {
    store: &'a Store,
}

/// The last logout of an account (XEP-0012).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastActivity {
    /// When (Unix seconds).
    pub at: i64,
    /// The status text of the last unavailable presence (may be empty).
    pub status: String,
}

impl<'a> UserData<'a> {
    /// The documents of `store`.
    pub(crate) fn new(store: &'a Store) -> UserData<'a> {
        UserData { store }
    }

    /// The vCard of `username@domain` (serialized XML), if one was stored.
    pub async fn vcard(&self, domain: &str, username: &str) -> Result<Option<String>, StoreError> {
        let v = with_pool!(self.store, pool => {
            sqlx::query_scalar("SELECT xml FROM vcards WHERE domain = $1 AND username = $2")
                .bind(domain)
                .bind(username)
                .fetch_optional(pool)
                .await?
        });
        Ok(v)
    }

    /// Replaces the vCard of `username@domain`.
    pub async fn set_vcard(
        &self,
        domain: &str,
        username: &str,
        xml: &str,
    ) -> Result<(), StoreError> {
        execute(
            self.store,
            "INSERT INTO vcards (domain, username, xml) VALUES ($1, $2, $3) \
             ON CONFLICT (domain, username) DO UPDATE SET xml = $3",
            &[domain, username, xml],
        )
        .await?;
        Ok(())
    }

    /// The private XML element `name` in namespace `ns` of `username@domain`.
    pub async fn private(
        &self,
        domain: &str,
        username: &str,
        name: &str,
        ns: &str,
    ) -> Result<Option<String>, StoreError> {
        let v = with_pool!(self.store, pool => {
            sqlx::query_scalar(
                "SELECT xml FROM private_storage \
                 WHERE domain = $1 AND username = $2 AND name = $3 AND ns = $4",
            )
            .bind(domain)
            .bind(username)
            .bind(name)
            .bind(ns)
            .fetch_optional(pool)
            .await?
        });
        Ok(v)
    }

    /// The `(name, ns)` keys of the private XML elements `username@domain` holds.
    pub async fn private_keys(
        &self,
        domain: &str,
        username: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let v = with_pool!(self.store, pool => {
            sqlx::query_as(
                "SELECT name, ns FROM private_storage WHERE domain = $1 AND username = $2",
            )
            .bind(domain)
            .bind(username)
            .fetch_all(pool)
            .await?
        });
        Ok(v)
    }

    /// Replaces the private XML elements `(name, ns, xml)` of `username@domain`, in one
    /// transaction.
    pub async fn set_private(
        &self,
        domain: &str,
        username: &str,
        docs: &[(String, String, String)],
    ) -> Result<(), StoreError> {
        execute_each(
            self.store,
            "INSERT INTO private_storage (domain, username, name, ns, xml) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (domain, username, name, ns) DO UPDATE SET xml = $5",
            &docs
                .iter()
                .map(|(name, ns, xml)| [domain, username, name.as_str(), ns.as_str(), xml.as_str()])
                .collect::<Vec<_>>(),
        )
        .await
    }

    /// The last logout of `username@domain`, if recorded (including one recorded but not
    /// written yet).
    pub async fn last_activity(
        &self,
        domain: &str,
        username: &str,
    ) -> Result<Option<LastActivity>, StoreError> {
        if let Some(last) = self.store.last.get(domain, username) {
            return Ok(Some(last));
        }
        let row: Option<(i64, String)> = with_pool!(self.store, pool => {
            sqlx::query_as(
                "SELECT at, status FROM last_activity WHERE domain = $1 AND username = $2",
            )
            .bind(domain)
            .bind(username)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(|(at, status)| LastActivity { at, status }))
    }

    /// Records the last logout of `username@domain`. Returns at once: the value is written
    /// shortly after, coalesced per account and batched with other logouts (see
    /// `last_queue.rs`; nobody is told it was stored, so it is not awaited), and
    /// [`last_activity`](Self::last_activity) sees it meanwhile.
    pub async fn set_last_activity(
        &self,
        domain: &str,
        username: &str,
        last: &LastActivity,
    ) -> Result<(), StoreError> {
        self.store
            .last
            .record(self.store, domain, username, last.clone());
        Ok(())
    }
}
