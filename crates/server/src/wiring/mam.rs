//! The `[mam]` archive module over the SQL store.

use std::sync::Arc;

use anyhow::anyhow;
use rookery_mam::{Mam, MamConfig};
use rookery_store::Store;

/// The module `config` enables, or `None`.
pub fn module(config: &MamConfig, store: &Store) -> anyhow::Result<Option<Arc<Mam>>> {
    if !config.enabled {
        return Ok(None);
    }
    Ok(Some(Arc::new(
        Mam::new(config.clone(), store.clone()).map_err(|e| anyhow!("{e}"))?,
    )))
}
