//! The service and PEP from `[pubsub]`, sharing the SQL store and the IM layer's roster,
//! presence and capability facts.

use std::sync::Arc;

use rookery_core::{Core, Module};
use rookery_im::Im;
use rookery_jid::BareJid;
use rookery_store::Store;

use rookery_pubsub::peers::PeerSync;
use rookery_pubsub::pep::Pep;
use rookery_pubsub::{CoreBroadcaster, Engine, PubsubConfig, PubsubService, SqlStore};

use super::pubsub_im::{ImInterest, ImPolicy};

/// The largest page of a node's history (XEP-0442), as `[mam] max_page` by default.
const HISTORY_MAX_PAGE: u64 = 100;

/// The pubsub parts of a server.
pub struct Pubsub {
    service: Option<Arc<PubsubService>>,
    pep: Option<Arc<Pep>>,
    core: Arc<CoreBroadcaster>,
    policy: Arc<ImPolicy>,
    domain: String,
}

impl std::fmt::Debug for Pubsub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pubsub")
            .field("service", &self.service)
            .field("pep", &self.pep.is_some())
            .finish()
    }
}

impl Pubsub {
    /// Builds what `config` enables for `domain` (the primary host; the service lets the
    /// accounts of every one of `hosts` create nodes). Fails on invalid settings.
    pub fn new(
        config: &PubsubConfig,
        domain: &str,
        hosts: &rookery_core::Hosts,
        store: &Store,
        im: Arc<Im>,
    ) -> Result<Pubsub, String> {
        let core = Arc::new(CoreBroadcaster::new());
        let policy = Arc::new(ImPolicy::new(im.clone(), core.clone()));
        let sql = Arc::new(SqlStore::new(store.clone()));
        let service = if config.enabled {
            let host = config.service_host(domain);
            let jid =
                BareJid::new(None, &host).map_err(|e| format!("[pubsub] host {host:?}: {e}"))?;
            let mut profile = config
                .service_profile(domain)
                .map_err(|e| format!("[pubsub] {e}"))?;
            profile.local_domains = hosts.iter().map(|h| h.domain().to_string()).collect();
            let broadcaster = Arc::new(CoreBroadcaster::new());
            let engine = Arc::new(Engine::new(
                profile,
                sql.clone(),
                broadcaster.clone(),
                policy.clone(),
            ));
            Some(Arc::new(
                PubsubService::new(jid, engine, broadcaster)
                    .with_history(store.clone(), HISTORY_MAX_PAGE),
            ))
        } else {
            None
        };
        let pep = config.pep.then(|| {
            Arc::new(Pep::new(
                config.pep_profile(domain),
                sql,
                Arc::new(ImInterest::new(im)),
                policy.clone(),
            ))
        });
        Ok(Pubsub {
            service,
            pep,
            core,
            policy,
            domain: domain.to_string(),
        })
    }

    /// The modules to add to the core: PEP, and what receives the pubsub notes of the other
    /// nodes of a cluster (`rookery_pubsub::peers`; it hears nothing on a single node). The
    /// order does not matter: PEP's presence hooks declare `priority::OBSERVE`, so they run
    /// before the IM layer consumes presence.
    pub fn modules(&self) -> Vec<Arc<dyn Module>> {
        let mut v: Vec<Arc<dyn Module>> = self
            .pep
            .iter()
            .map(|p| p.clone() as Arc<dyn Module>)
            .collect();
        if self.service.is_some() || self.pep.is_some() {
            v.push(Arc::new(PeerSync::new(self.engines(&self.domain))));
        }
        v
    }

    /// The service at `pubsub.<domain>`, when enabled.
    pub fn service(&self) -> Option<&Arc<PubsubService>> {
        self.service.as_ref()
    }

    /// The roster facts the access models ask (also asked by the HTTP presence streams).
    pub fn policy(&self) -> Arc<dyn rookery_pubsub::AccessPolicy> {
        self.policy.clone()
    }

    /// The engines by service JID, for the public HTTP listener's `/pubsub/…` (docs/http.md)
    /// and the WebSub hub's topics.
    pub fn engines(&self, domain: &str) -> rookery_pubsub::Engines {
        rookery_pubsub::Engines {
            service: self
                .service
                .as_ref()
                .map(|s| (s.jid().clone(), s.engine().clone())),
            pep: self.pep.as_ref().map(|p| p.engine().clone()),
            domain: domain.to_string(),
        }
    }

    /// Connects to the built core: registers the service's domain.
    pub fn attach(&self, core: &Arc<Core>) {
        self.core.attach(core);
        if let Some(s) = &self.service {
            s.attach(core);
        }
    }
}
