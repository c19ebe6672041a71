//! The admin listener's wiring: its bearer token (from the config, or generated once into
//! the data directory) and what it reports about the running server.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::{bail, Context};
use async_trait::async_trait;
use rand::RngCore;
use rookery_http::admin::services::{
    Component, PubsubNode, S2sIncoming, S2sList, S2sStream, Services,
};
use rookery_jid::Jid;
use rookery_proto::{StreamError, StreamErrorCondition};

use crate::config::Config;

/// The token file inside the data directory.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.token")
}

/// The admin token: `[admin] token`, else the content of `<data_dir>/admin.token`; with
/// `create`, a file that does not exist yet is made with a fresh random token, readable by
/// the server's user only (mode 0600), as `rookery serve` does at first start.
pub fn token(cfg: &Config, create: bool) -> anyhow::Result<String> {
    if let Some(t) = cfg.admin.token.as_deref().filter(|t| !t.is_empty()) {
        return Ok(t.to_string());
    }
    let path = token_path(&cfg.data_dir);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => bail!("{} is empty", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {}
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "reading the admin token {} (or set [admin] token)",
                    path.display()
                )
            })
        }
    }
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{token}").with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(path = %path.display(), "generated the admin API token");
    Ok(token)
}

/// Federation, components and the pubsub service, as the admin API sees them.
pub struct ServerServices {
    /// Set once federation is up (after the admin listener started).
    pub s2s: Arc<OnceLock<Arc<rookery_s2s::S2s>>>,
    /// The declared components.
    pub components: Arc<rookery_component::Components>,
    /// Each host's pubsub service, the primary's first (none when disabled).
    pub pubsub: Vec<Arc<rookery_pubsub::PubsubService>>,
}

impl ServerServices {
    /// The pubsub service at `jid`, the primary host's without it.
    fn pubsub(&self, jid: Option<&str>) -> Option<&Arc<rookery_pubsub::PubsubService>> {
        match jid {
            None => self.pubsub.first(),
            Some(j) => self.pubsub.iter().find(|s| s.jid().as_str() == j),
        }
    }
}

#[async_trait]
impl Services for ServerServices {
    fn s2s(&self) -> Option<S2sList> {
        let s2s = self.s2s.get()?;
        let outgoing = s2s
            .outgoing()
            .into_iter()
            .map(|(local, remote, auth)| S2sStream {
                local,
                remote,
                auth: auth.as_str(),
            })
            .collect();
        let incoming_streams = s2s
            .incoming()
            .into_iter()
            .map(|remote| S2sIncoming { remote })
            .collect();
        Some(S2sList {
            outgoing,
            incoming: s2s.incoming_count(),
            incoming_streams,
        })
    }

    fn close_s2s(&self, domain: &str, reason: &str) -> Option<usize> {
        Some(self.s2s.get()?.close_remote(domain, reason))
    }

    fn components(&self) -> Vec<Component> {
        self.components
            .domains()
            .into_iter()
            .filter_map(|d| self.components.route(&d))
            .map(|r| Component {
                domain: r.domain().to_string(),
                name: rookery_core::DomainRoute::name(r.as_ref()),
                connected: r.is_connected(),
            })
            .collect()
    }

    fn disconnect_component(&self, domain: &str, reason: &str) -> bool {
        let Some(route) = self.components.route(domain).filter(|r| r.is_connected()) else {
            return false;
        };
        route.close(&StreamError::with_text(
            StreamErrorCondition::PolicyViolation,
            reason,
        ));
        true
    }

    async fn pubsub_nodes(&self, jid: Option<&str>) -> Option<Result<Vec<PubsubNode>, String>> {
        let service = self.pubsub(jid)?;
        // As the service itself, which owns (and so sees) every node.
        let me = Jid::from(service.jid().clone());
        Some(
            service
                .engine()
                .list_nodes(service.jid(), &me)
                .await
                .map(|nodes| {
                    nodes
                        .into_iter()
                        .map(|(node, title)| PubsubNode { node, title })
                        .collect()
                })
                .map_err(|e| e.to_string()),
        )
    }

    async fn delete_pubsub_node(
        &self,
        jid: Option<&str>,
        node: &str,
    ) -> Option<Result<bool, String>> {
        let service = self.pubsub(jid)?;
        let me = Jid::from(service.jid().clone());
        Some(
            match service
                .engine()
                .delete(service.jid(), &me, Some(node), None)
                .await
            {
                Ok(()) => Ok(true),
                Err(rookery_pubsub::PubsubError::NodeNotFound) => Ok(false),
                Err(e) => Err(e.to_string()),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn generated_once_private_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        assert!(token(&cfg, false).is_err());
        let t = token(&cfg, true).unwrap();
        assert_eq!(t.len(), 64);
        assert_eq!(token(&cfg, true).unwrap(), t);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(token_path(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let configured = Config {
            admin: crate::config::AdminConfig {
                token: Some("set".into()),
            },
            ..cfg
        };
        assert_eq!(token(&configured, true).unwrap(), "set");
    }
}
