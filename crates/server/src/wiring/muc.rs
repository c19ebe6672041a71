//! The `[muc]` services (one per host), their persistent rooms and room archives in the SQL
//! store.

use std::sync::Arc;

use anyhow::anyhow;
use rookery_muc::{MucConfig, MucService, SqlRooms};
use rookery_store::Store;

use crate::config::HostService;

/// Each of `services` under `config` (its stored rooms loaded). One service per host, as
/// ejabberd's `conference.@HOST@`: a service is its rooms, so a host's are its own (room
/// creation limits count per host too).
pub async fn services(
    config: &MucConfig,
    services: &[HostService],
    store: &Store,
) -> anyhow::Result<Vec<Arc<MucService>>> {
    let mut out = Vec::with_capacity(services.len());
    for s in services {
        let config = MucConfig {
            domain: s.service.clone(),
            ..config.clone()
        };
        let svc = MucService::load(
            config,
            &s.host,
            Arc::new(SqlRooms(store.clone())),
            Some(store.clone()),
        )
        .await
        .map_err(|e| anyhow!("{e}"))?;
        tracing::info!(domain = %svc.jid(), host = %s.host, rooms = svc.room_count(), "multi-user chat");
        out.push(svc);
    }
    Ok(out)
}
