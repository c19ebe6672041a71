//! The harness's account directory: users `u0` … `u{n-1}`, all with one password whose
//! verifiers were derived once.
//!
//! A million accounts in the SQL store would cost a million Argon2id hashes to create (the
//! `PLAIN` verifier, ~20 MiB and tens of ms each) and their rows would be the directory's
//! memory, not the sessions'. Here every account answers with the same [`Credentials`], so
//! a login is the real SCRAM exchange against the stored iteration count (the server never
//! runs PBKDF2 for SCRAM: it checks the client's proof against `StoredKey`), and the client
//! side computes `SaltedPassword` once through a shared cache.

use async_trait::async_trait;
use rookery_core::{AccountError, Accounts};
use rookery_sasl::Credentials;

/// The password of every harness account.
pub const PASSWORD: &str = "harness-password";

/// A fixed directory of `count` accounts on one domain.
pub struct Directory {
    domain: String,
    count: usize,
    credentials: Credentials,
}

impl Directory {
    /// `u0` … `u{count-1}` at `domain`, with [`PASSWORD`] derived at `iterations`.
    pub fn new(domain: &str, count: usize, iterations: u32) -> anyhow::Result<Directory> {
        Ok(Directory {
            domain: domain.to_string(),
            count,
            credentials: Credentials::derive(PASSWORD, iterations)?,
        })
    }

    fn has(&self, domain: &str, local: &str) -> bool {
        domain == self.domain
            && local
                .strip_prefix('u')
                .and_then(|i| i.parse::<usize>().ok())
                .is_some_and(|i| i < self.count && local == user(i))
    }
}

/// The localpart of account `i`.
pub fn user(i: usize) -> String {
    format!("u{i}")
}

fn fixed() -> AccountError {
    AccountError::Backend("the harness directory is fixed".into())
}

#[async_trait]
impl Accounts for Directory {
    async fn exists(&self, domain: &str, local: &str) -> Result<bool, AccountError> {
        Ok(self.has(domain, local))
    }

    async fn credentials(
        &self,
        domain: &str,
        local: &str,
    ) -> Result<Option<Credentials>, AccountError> {
        Ok(self.has(domain, local).then(|| self.credentials.clone()))
    }

    async fn create(&self, _: &str, _: &str, _: &Credentials) -> Result<(), AccountError> {
        Err(fixed())
    }

    async fn set_credentials(
        &self,
        _: &str,
        _: &str,
        _: &Credentials,
    ) -> Result<bool, AccountError> {
        Err(fixed())
    }

    async fn delete(&self, _: &str, _: &str) -> Result<bool, AccountError> {
        Err(fixed())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn only_its_own_users_exist() {
        let d = Directory::new("localhost", 3, 1).unwrap();
        assert!(d.exists("localhost", "u0").await.unwrap());
        assert!(d.exists("localhost", "u2").await.unwrap());
        assert!(!d.exists("localhost", "u3").await.unwrap());
        assert!(!d.exists("localhost", "u01").await.unwrap());
        assert!(!d.exists("example.org", "u0").await.unwrap());
        assert!(d.credentials("localhost", "u1").await.unwrap().is_some());
    }
}
