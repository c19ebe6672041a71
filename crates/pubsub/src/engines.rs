//! The engines a server runs, found by service JID: what every client of the engines outside
//! XMPP (the HTTP face, the WebSub hub) uses to turn a URL's service into an engine.

use std::sync::Arc;

use rookery_jid::BareJid;
use rookery_store::{Store, StoreError};

use crate::engine::Engine;

/// The pubsub service (at its JID) and PEP (every account of `domain`), when enabled.
#[derive(Clone, Default)]
pub struct Engines {
    /// The service at `pubsub.<domain>` and its engine.
    pub service: Option<(BareJid, Arc<Engine>)>,
    /// The PEP engine.
    pub pep: Option<Arc<Engine>>,
    /// The served domain: PEP services are its accounts.
    pub domain: String,
}

impl std::fmt::Debug for Engines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engines")
            .field("service", &self.service.as_ref().map(|(j, _)| j))
            .field("pep", &self.pep.is_some())
            .field("domain", &self.domain)
            .finish()
    }
}

impl Engines {
    /// The engine serving `svc`, or `None` for a service not served here. A PEP service must
    /// be an existing local account: an engine keeps every service it is asked about in
    /// memory, and a URL must not make it remember accounts that do not exist.
    pub async fn resolve(
        &self,
        store: &Store,
        svc: &BareJid,
    ) -> Result<Option<&Arc<Engine>>, StoreError> {
        if let Some((jid, e)) = &self.service {
            if jid == svc {
                return Ok(Some(e));
            }
        }
        let (Some(e), Some(local)) = (&self.pep, svc.local()) else {
            return Ok(None);
        };
        if svc.domain() != self.domain {
            return Ok(None);
        }
        Ok(store
            .accounts()
            .exists(&self.domain, local)
            .await?
            .then_some(e))
    }
}
