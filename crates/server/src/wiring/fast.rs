//! XEP-0484 FAST tokens of `rookery-c2s` ([`TokenStore`]) over the SQL store's
//! `fast_tokens` table (`rookery_store::fast`).

use async_trait::async_trait;
use rookery_c2s::fast::{DeviceTokens, Token, TokenStore, Used};
use rookery_sasl::ht::HtMechanism;
use rookery_store::fast::{Token as StoreToken, Used as StoreUsed};
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
        let Some(t) = self
            .0
            .fast()
            .get(domain, local, device)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        Ok(Some(DeviceTokens {
            current: token(t.current)?,
            previous: t.previous.map(token).transpose()?,
        }))
    }

    async fn issue(
        &self,
        domain: &str,
        local: &str,
        device: &str,
        key: &[u8],
        expires: i64,
        mechanism: HtMechanism,
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
                mechanism.name(),
                issued_at_ms,
                max_devices,
            )
            .await
            .map_err(|e| e.to_string())
    }

    async fn invalidate(
        &self,
        domain: &str,
        local: &str,
        device: &str,
        key: &[u8],
    ) -> Result<bool, String> {
        self.0
            .fast()
            .invalidate(domain, local, device, key)
            .await
            .map_err(|e| e.to_string())
    }

    async fn use_token(
        &self,
        domain: &str,
        local: &str,
        device: &str,
        used: Used,
        key: &[u8],
        count: i64,
    ) -> Result<bool, String> {
        let used = match used {
            Used::Current => StoreUsed::Current,
            Used::Previous => StoreUsed::Previous,
        };
        self.0
            .fast()
            .use_token(domain, local, device, used, key, count)
            .await
            .map_err(|e| e.to_string())
    }
}

/// A stored token as `rookery-c2s` reads it. A mechanism name this server does not know is
/// an error, not a token of unknown mechanism (which would pass for `-NONE`).
fn token(t: StoreToken) -> Result<Token, String> {
    let mechanism = match t.mechanism {
        Some(name) => Some(
            HtMechanism::from_name(&name)
                .ok_or_else(|| format!("a FAST token for an unknown mechanism {name:?}"))?,
        ),
        None => None,
    };
    Ok(Token {
        key: t.key,
        expires: t.expires,
        mechanism,
        last_count: t.last_count,
    })
}
