//! XEP-0484 FAST tokens of `rookery-c2s` ([`TokenStore`]) over the SQL store's
//! `fast_tokens` table (`rookery_store::fast`).

use async_trait::async_trait;
use rookery_c2s::fast::{DeviceTokens, TokenStore, Used};
use rookery_store::fast::Used as StoreUsed;
use rookery_store::Store;

/// [`TokenStore`] answered by the SQL store.
pub struct StoreTokens(pub Store);

#[async_trait]
impl TokenStore for StoreTokens {
    async fn get(
        &self,
        domain: &str,
        local: &str,
        device: &str,
    ) -> Result<Option<DeviceTokens>, String> {
        let t = self.0.fast().get(domain, local, device).await;
        t.map_err(|e| e.to_string()).map(|t| {
            t.map(|t| DeviceTokens {
                current: (t.current_key, t.current_expires),
                previous: t.previous,
                last_count: t.last_count,
            })
        })
    }

    async fn issue(
        &self,
        domain: &str,
        local: &str,
        device: &str,
        key: &[u8],
        expires: i64,
        issued_at_ms: i64,
        max_devices: u32,
    ) -> Result<(), String> {
        self.0
            .fast()
            .issue(
                domain,
                local,
                device,
                key,
                expires,
                issued_at_ms,
                max_devices,
            )
            .await
            .map_err(|e| e.to_string())
    }

    async fn use_token(
        &self,
        domain: &str,
        local: &str,
        device: &str,
        used: Used,
        count: i64,
    ) -> Result<bool, String> {
        let used = match used {
            Used::Current => StoreUsed::Current,
            Used::Previous => StoreUsed::Previous,
        };
        self.0
            .fast()
            .use_token(domain, local, device, used, count)
            .await
            .map_err(|e| e.to_string())
    }
}
