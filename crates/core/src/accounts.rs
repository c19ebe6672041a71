//! The account directory the core and its modules work through: whether an account exists
//! (routing, RFC 6121 §8.5.2/§8.5.3), its SCRAM credentials (SASL, RFC 6120 §6) and the
//! in-band registration changes (XEP-0077 §3).
//!
//! The core owns no database. The server wires the SQL store in behind [`Accounts`]
//! (`crates/server/src/wiring/accounts.rs`); tests use [`MemoryAccounts`].

use async_trait::async_trait;
use dashmap::DashMap;
use rookery_sasl::Credentials;

/// Why a directory operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// An account with that name already exists.
    #[error("account already exists")]
    Conflict,
    /// The backend failed; the text is for the log, never for the wire.
    #[error("account directory failed: {0}")]
    Backend(String),
}

/// Accounts of the hosted domains, by domain and normalized localpart.
#[async_trait]
pub trait Accounts: Send + Sync + 'static {
    /// Whether the account exists.
    async fn exists(&self, domain: &str, local: &str) -> Result<bool, AccountError>;

    /// The account's credentials; `None` when there is no such account.
    async fn credentials(
        &self,
        domain: &str,
        local: &str,
    ) -> Result<Option<Credentials>, AccountError>;

    /// Creates an account; [`AccountError::Conflict`] when the name is taken.
    async fn create(
        &self,
        domain: &str,
        local: &str,
        credentials: &Credentials,
    ) -> Result<(), AccountError>;

    /// Replaces an existing account's credentials; `false` when there is no such account.
    async fn set_credentials(
        &self,
        domain: &str,
        local: &str,
        credentials: &Credentials,
    ) -> Result<bool, AccountError>;

    /// Deletes the account and everything stored for it; `false` when it did not exist.
    async fn delete(&self, domain: &str, local: &str) -> Result<bool, AccountError>;
}

/// An in-memory directory: for tests and benchmarks, and for a core built without storage.
#[derive(Debug, Default)]
pub struct MemoryAccounts {
    accounts: DashMap<(String, String), Credentials>,
}

impl MemoryAccounts {
    /// An empty directory.
    pub fn new() -> MemoryAccounts {
        MemoryAccounts::default()
    }
}

fn key(domain: &str, local: &str) -> (String, String) {
    (domain.to_string(), local.to_string())
}

#[async_trait]
impl Accounts for MemoryAccounts {
    async fn exists(&self, domain: &str, local: &str) -> Result<bool, AccountError> {
        Ok(self.accounts.contains_key(&key(domain, local)))
    }

    async fn credentials(
        &self,
        domain: &str,
        local: &str,
    ) -> Result<Option<Credentials>, AccountError> {
        Ok(self.accounts.get(&key(domain, local)).map(|c| c.clone()))
    }

    async fn create(
        &self,
        domain: &str,
        local: &str,
        credentials: &Credentials,
    ) -> Result<(), AccountError> {
        match self.accounts.entry(key(domain, local)) {
            dashmap::Entry::Occupied(_) => Err(AccountError::Conflict),
            dashmap::Entry::Vacant(v) => {
                v.insert(credentials.clone());
                Ok(())
            }
        }
    }

    async fn set_credentials(
        &self,
        domain: &str,
        local: &str,
        credentials: &Credentials,
    ) -> Result<bool, AccountError> {
        Ok(match self.accounts.get_mut(&key(domain, local)) {
            Some(mut c) => {
                *c = credentials.clone();
                true
            }
            None => false,
        })
    }

    async fn delete(&self, domain: &str, local: &str) -> Result<bool, AccountError> {
        Ok(self.accounts.remove(&key(domain, local)).is_some())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn memory_directory_creates_once_and_deletes() {
        let d = MemoryAccounts::new();
        let c = Credentials::derive("secret", 4096).unwrap();
        assert!(!d.exists("localhost", "a").await.unwrap());
        d.create("localhost", "a", &c).await.unwrap();
        assert!(d.exists("localhost", "a").await.unwrap());
        assert!(!d.exists("example.org", "a").await.unwrap());
        assert!(matches!(
            d.create("localhost", "a", &c).await,
            Err(AccountError::Conflict)
        ));
        assert!(d.credentials("localhost", "a").await.unwrap().is_some());
        assert!(d.delete("localhost", "a").await.unwrap());
        assert!(!d.delete("localhost", "a").await.unwrap());
        assert!(d.credentials("localhost", "a").await.unwrap().is_none());
    }
}
