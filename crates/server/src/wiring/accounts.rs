//! The core's account directory over the SQL store.
//!
//! The trait lives in `rookery-core` and the store knows nothing of the core, so the bridge
//! is here, in the one crate that depends on both; deleting an account goes through
//! [`Store::delete_account`], which removes everything stored for it.

use async_trait::async_trait;
use rookery_core::{AccountError, Accounts};
use rookery_sasl::Credentials;
use rookery_store::{Store, StoreError};

/// [`Accounts`] answered by the SQL store.
pub struct StoreAccounts(pub Store);

fn map(e: StoreError) -> AccountError {
    match e {
        StoreError::Conflict => AccountError::Conflict,
        other => AccountError::Backend(other.to_string()),
    }
}

#[async_trait]
impl Accounts for StoreAccounts {
    async fn exists(&self, domain: &str, local: &str) -> Result<bool, AccountError> {
        self.0.accounts().exists(domain, local).await.map_err(map)
    }

    async fn credentials(
        &self,
        domain: &str,
        local: &str,
    ) -> Result<Option<Credentials>, AccountError> {
        self.0
            .accounts()
            .credentials(domain, local)
            .await
            .map_err(map)
    }

    async fn create(
        &self,
        domain: &str,
        local: &str,
        credentials: &Credentials,
    ) -> Result<(), AccountError> {
        self.0
            .accounts()
            .create(domain, local, credentials)
            .await
            .map_err(map)
    }

    async fn set_credentials(
        &self,
        domain: &str,
        local: &str,
        credentials: &Credentials,
    ) -> Result<bool, AccountError> {
        self.0
            .accounts()
            .set_credentials(domain, local, credentials)
            .await
            .map_err(map)
    }

    async fn delete(&self, domain: &str, local: &str) -> Result<bool, AccountError> {
        self.0.delete_account(domain, local).await.map_err(map)
    }
}
