//! `[cluster]`: joins this node to a cluster over NATS (crates/cluster, docs/clustering.md)
//! when `nats_url` is set; otherwise nothing of the cluster runs.

use std::sync::Arc;

use anyhow::{anyhow, bail};
use rookery_cluster::Cluster;
use rookery_core::Core;

use crate::config::Config;

/// Why a configuration cannot run clustered, if it cannot: every node must see one
/// database, and SQLite is a file of one process.
pub fn refusal(cfg: &Config) -> Option<String> {
    if !cfg.cluster.enabled() {
        return None;
    }
    if let Err(e) = cfg.cluster.validate() {
        return Some(e.to_string());
    }
    let url = cfg.store_url();
    (!url.starts_with("postgres:") && !url.starts_with("postgresql:")).then(|| {
        "[cluster] needs PostgreSQL: all nodes share one database, and SQLite is a file of \
         one process; set [store] url = \"postgres://…\" (the same on every node)"
            .to_string()
    })
}

/// What a cluster's configuration leaves per node that the nodes must share, as warnings:
/// each node would otherwise make up its own (the upload signing key and files, the dialback
/// secret), and what one node hands out another refuses.
pub fn unshared(cfg: &Config) -> Vec<&'static str> {
    let mut why = Vec::new();
    if !cfg.cluster.enabled() {
        return why;
    }
    if cfg.upload.enabled && (cfg.upload.dir.is_none() || cfg.upload.key_file.is_none()) {
        why.push(
            "[upload] dir and key_file are per node: in a cluster put dir on shared storage \
             and key_file the same on every node, or a slot handed out by one node fails on \
             another",
        );
    }
    if cfg.s2s.enabled && cfg.s2s.dialback_secret.is_none() {
        why.push(
            "[s2s] dialback_secret is per node: in a cluster set the same on every node, or \
             a peer that checks one node's dialback key with another refuses it",
        );
    }
    why
}

/// Starts the cluster node when `[cluster] nats_url` is set; before any listener opens.
pub async fn start(cfg: &Config, core: &Arc<Core>) -> anyhow::Result<Option<Cluster>> {
    if !cfg.cluster.enabled() {
        return Ok(None);
    }
    if let Some(why) = refusal(cfg) {
        bail!(why);
    }
    for why in unshared(cfg) {
        tracing::warn!("{why}");
    }
    let port = cfg
        .listen
        .c2s
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .unwrap_or(5222);
    let node = cfg
        .cluster
        .node_id(&rookery_cluster::config::host_name(), port)
        .map_err(|e| anyhow!("{e}"))?;
    let cluster = Cluster::start(core.clone(), cfg.cluster.clone(), node)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    Ok(Some(cluster))
}
