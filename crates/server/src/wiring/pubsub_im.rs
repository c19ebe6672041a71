//! The IM layer's answers to the questions pubsub asks (rosters for the `presence` and
//! `roster` access models, presence and XEP-0115 capabilities for PEP interest), from
//! `rookery-im`'s shared state.

use std::sync::Arc;

use async_trait::async_trait;
use rookery_core::Core;
use rookery_im::Im;
use rookery_jid::{BareJid, Jid};
use rookery_store::rosters::Subscription;

use rookery_pubsub::broadcast::CoreBroadcaster;
use rookery_pubsub::pep::Interest;
use rookery_pubsub::AccessPolicy;

/// Roster facts from the IM layer (local owners only; a remote owner has no roster here).
pub struct ImPolicy {
    im: Arc<Im>,
    core: Arc<CoreBroadcaster>,
}

impl ImPolicy {
    /// A policy reading `im`'s rosters; `core` tells it, once built, which domain is local.
    pub fn new(im: Arc<Im>, core: Arc<CoreBroadcaster>) -> ImPolicy {
        ImPolicy { im, core }
    }

    async fn item(
        &self,
        owner: &BareJid,
        who: &BareJid,
    ) -> Option<rookery_store::rosters::RosterItem> {
        let core = self.core.core()?;
        if owner.local().is_none() || !core.is_local_domain(owner.domain()) {
            return None;
        }
        match self.im.roster_item(owner, who).await {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(error = %e, "roster lookup for pubsub access failed");
                None
            }
        }
    }
}

#[async_trait]
impl AccessPolicy for ImPolicy {
    async fn has_presence_subscription(&self, owner: &BareJid, who: &BareJid) -> bool {
        owner == who
            || self
                .item(owner, who)
                .await
                .is_some_and(|i| matches!(i.subscription, Subscription::From | Subscription::Both))
    }

    async fn roster_groups(&self, owner: &BareJid, who: &BareJid) -> Option<Vec<String>> {
        self.item(owner, who).await.map(|i| i.groups)
    }
}

/// PEP interest from the IM layer: presence subscriptions, available resources and their
/// capabilities — of local sessions, and of resources on other servers as their presence
/// told us ([`rookery_im::caps::observe_remote`]).
pub struct ImInterest {
    im: Arc<Im>,
}

impl ImInterest {
    /// Interest read from `im`.
    pub fn new(im: Arc<Im>) -> ImInterest {
        ImInterest { im }
    }

    /// The contacts (accounts, here or elsewhere) of `owner` whose roster subscription
    /// matches `pred`.
    async fn contacts(
        &self,
        core: &Arc<Core>,
        owner: &BareJid,
        pred: impl Fn(Subscription) -> bool,
    ) -> Vec<BareJid> {
        let account = match self.im.account(core, owner).await {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "roster load for PEP failed");
                return Vec::new();
            }
        };
        let roster = rookery_im::state::read(&account.roster);
        roster
            .items
            .iter()
            .filter(|(j, i)| pred(i.subscription) && j.local().is_some())
            .map(|(j, _)| j.clone())
            .collect()
    }
}

#[async_trait]
impl Interest for ImInterest {
    async fn interested(&self, core: &Arc<Core>, owner: &BareJid, node: &str) -> Vec<Jid> {
        let mut out = self.im.resources_wanting(core, owner, node);
        for c in self
            .contacts(core, owner, |s| {
                matches!(s, Subscription::From | Subscription::Both)
            })
            .await
        {
            if core.is_local_domain(c.domain()) {
                out.extend(self.im.resources_wanting(core, &c, node));
            } else {
                out.extend(self.im.remote_resources_wanting(&c, node));
            }
        }
        out
    }

    fn wanted_nodes(&self, jid: &Jid) -> Option<Vec<String>> {
        let caps = self.im.caps_of(jid)?;
        Some(
            caps.features
                .iter()
                .filter_map(|f| f.strip_suffix("+notify").map(str::to_string))
                .collect(),
        )
    }

    fn available_resources(&self, core: &Arc<Core>, bare: &BareJid) -> Vec<Jid> {
        if !core.is_local_domain(bare.domain()) {
            return self
                .im
                .remote_caps
                .resources(bare)
                .into_iter()
                .map(|(j, _)| j)
                .collect();
        }
        self.im
            .available(core, bare)
            .into_iter()
            .map(|(h, _)| h.jid().clone())
            .collect()
    }

    async fn sources_for(&self, core: &Arc<Core>, who: &BareJid) -> Vec<BareJid> {
        let mut v = vec![who.clone()];
        // Remote contacts' events come from their own servers.
        v.extend(
            self.contacts(core, who, |s| {
                matches!(s, Subscription::To | Subscription::Both)
            })
            .await
            .into_iter()
            .filter(|c| core.is_local_domain(c.domain())),
        );
        v
    }
}
