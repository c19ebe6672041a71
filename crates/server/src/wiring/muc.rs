//! The `[muc]` service, its persistent rooms and room archives in the SQL store.

use std::sync::Arc;

use anyhow::anyhow;
use rookery_muc::{MucConfig, MucService, SqlRooms};
use rookery_store::Store;

/// The service `config` enables for `domain` (its stored rooms loaded), or `None`.
pub async fn service(
    config: &MucConfig,
    domain: &str,
    store: &Store,
) -> anyhow::Result<Option<Arc<MucService>>> {
    if !config.enabled {
        return Ok(None);
    }
    let svc = MucService::load(
        config.clone(),
        domain,
        Arc::new(SqlRooms(store.clone())),
        Some(store.clone()),
    )
    .await
    .map_err(|e| anyhow!("{e}"))?;
    tracing::info!(domain = %svc.jid(), rooms = svc.room_count(), "multi-user chat");
    Ok(Some(svc))
}
