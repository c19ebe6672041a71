//! The engines a server runs, found by service JID: what every client of the engines outside
//! XMPP (the HTTP face, the WebSub hub) uses to turn a URL's service into an engine.

use std::sync::Arc;

use rookery_jid::BareJid;
use rookery_store::{Store, StoreError};

use crate::engine::Engine;

/// The pubsub services (one per host, at their JIDs, all on one engine) and PEP (every
/// account of the hosted `domains`), when enabled.
#[derive(Clone, Default)]
pub struct Engines {
    /// The services' JIDs (`pubsub.<host>` of each host) and the engine serving them all.
    pub services: Option<(Vec<BareJid>, Arc<Engine>)>,
    /// The PEP engine.
    pub pep: Option<Arc<Engine>>,
    /// The hosted domains: PEP services are their accounts.
    pub domains: Vec<String>,
}

impl std::fmt::Debug for Engines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engines")
            .field("services", &self.services.as_ref().map(|(j, _)| j))
            .field("pep", &self.pep.is_some())
            .field("domains", &self.domains)
            .finish()
    }
}

impl Engines {
    /// Whether `domain` is hosted here (its accounts are PEP services).
    pub fn is_hosted(&self, domain: &str) -> bool {
        self.domains.iter().any(|d| d == domain)
    }

    /// The engine that would serve `svc`: the services' for one of their JIDs, PEP's for an
    /// account of a hosted domain (existing or not).
    pub fn engine_of(&self, svc: &BareJid) -> Option<&Arc<Engine>> {
        match &self.services {
            Some((jids, e)) if jids.contains(svc) => Some(e),
            _ if svc.local().is_some() && self.is_hosted(svc.domain()) => self.pep.as_ref(),
            _ => None,
        }
    }

    /// The engine serving `svc`, or `None` for a service not served here. A PEP service must
    /// be an existing local account: an engine keeps every service it is asked about in
    /// memory, and a URL must not make it remember accounts that do not exist.
    pub async fn resolve(
        &self,
        store: &Store,
        svc: &BareJid,
    ) -> Result<Option<&Arc<Engine>>, StoreError> {
        let Some(e) = self.engine_of(svc) else {
            return Ok(None);
        };
        let Some(local) = svc.local() else {
            return Ok(Some(e));
        };
        Ok(store
            .accounts()
            .exists(svc.domain(), local)
            .await?
            .then_some(e))
    }
}
