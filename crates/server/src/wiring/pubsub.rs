//! The services and PEP from `[pubsub]`, sharing the SQL store and the IM layer's roster,
//! presence and capability facts.
//!
//! Each host has its own service (`pubsub.<host>`, as Prosody's per-`VirtualHost` component
//! and ejabberd's `pubsub.@HOST@`), all on one engine: the engine keys nodes by service JID
//! already, so a host costs one route, not an engine with its caches and limits.

use std::sync::Arc;

use rookery_core::{Core, Module};
use rookery_im::Im;
use rookery_jid::BareJid;
use rookery_store::page::PageLimit;
use rookery_store::Store;

use rookery_pubsub::peers::PeerSync;
use rookery_pubsub::pep::Pep;
use rookery_pubsub::{CoreBroadcaster, Engine, PubsubConfig, PubsubService, SqlStore};

use super::pubsub_im::{ImInterest, ImPolicy};
use crate::config::HostService;

/// The most items of a page of a node's history (XEP-0442), as `[mam] max_page` by default
/// (its bytes are bounded by `[pubsub] max_page_bytes`, as item retrieval's).
const HISTORY_MAX_PAGE: u64 = 100;

/// The pubsub parts of a server.
pub struct Pubsub {
    /// Each host's service, primary first.
    services: Vec<Arc<PubsubService>>,
    pep: Option<Arc<Pep>>,
    core: Arc<CoreBroadcaster>,
    policy: Arc<ImPolicy>,
    /// The hosted domains.
    domains: Vec<String>,
}

impl std::fmt::Debug for Pubsub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pubsub")
            .field("services", &self.services)
            .field("pep", &self.pep.is_some())
            .finish()
    }
}

impl Pubsub {
    /// Builds what `config` enables for `hosts`: the `services` (each host's; none when the
    /// service is disabled) and PEP. Fails on invalid settings.
    pub fn new(
        config: &PubsubConfig,
        services: &[HostService],
        hosts: &rookery_core::Hosts,
        store: &Store,
        im: Arc<Im>,
    ) -> Result<Pubsub, String> {
        let domain = hosts.primary().domain();
        let core = Arc::new(CoreBroadcaster::new());
        let policy = Arc::new(ImPolicy::new(im.clone(), core.clone()));
        let sql = Arc::new(SqlStore::new(store.clone()));
        let domains: Vec<String> = hosts.iter().map(|h| h.domain().to_string()).collect();
        let jids = services
            .iter()
            .map(|s| {
                BareJid::new(None, &s.service)
                    .map(|j| (j, s.host.clone()))
                    .map_err(|e| format!("[pubsub] service {:?}: {e}", s.service))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let services = if jids.is_empty() {
            Vec::new()
        } else {
            let mut profile = config
                .service_profile(domain)
                .map_err(|e| format!("[pubsub] {e}"))?;
            profile.local_domains = domains.clone();
            profile.service_hosts = jids.clone();
            let history = PageLimit {
                max: HISTORY_MAX_PAGE,
                max_bytes: profile.max_page_bytes,
            };
            let broadcaster = Arc::new(CoreBroadcaster::new());
            let engine = Arc::new(Engine::new(
                profile,
                sql.clone(),
                broadcaster.clone(),
                policy.clone(),
            ));
            jids.into_iter()
                .map(|(jid, host)| {
                    Arc::new(
                        PubsubService::new(jid, engine.clone(), broadcaster.clone())
                            .with_history(store.clone(), history)
                            .for_host(&host),
                    )
                })
                .collect()
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
            services,
            pep,
            core,
            policy,
            domains,
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
        if !self.services.is_empty() || self.pep.is_some() {
            v.push(Arc::new(PeerSync::new(self.engines())));
        }
        v
    }

    /// Each host's service, the primary's first (what the admin API lists).
    pub fn services(&self) -> &[Arc<PubsubService>] {
        &self.services
    }

    /// The roster facts the access models ask (also asked by the HTTP presence streams).
    pub fn policy(&self) -> Arc<dyn rookery_pubsub::AccessPolicy> {
        self.policy.clone()
    }

    /// The engines by service JID, for the public HTTP listener's `/pubsub/…` (docs/http.md)
    /// and the WebSub hub's topics.
    pub fn engines(&self) -> rookery_pubsub::Engines {
        rookery_pubsub::Engines {
            services: self.services.first().map(|s| {
                let jids = self.services.iter().map(|s| s.jid().clone()).collect();
                (jids, s.engine().clone())
            }),
            pep: self.pep.as_ref().map(|p| p.engine().clone()),
            domains: self.domains.clone(),
        }
    }

    /// Connects to the built core: registers the services' domains.
    pub fn attach(&self, core: &Arc<Core>) {
        self.core.attach(core);
        for s in &self.services {
            s.attach(core);
        }
    }
}
