//! XEP-0163 Personal Eventing Protocol: every account is a pubsub service, run by the same
//! engine as the service with the PEP [`Profile`] (presence access, one item, auto-create on
//! first publish, last item on presence).
//!
//! - [`Pep`] is a [`Module`]: the account's `pubsub` and `pubsub#owner` IQs, its disco
//!   identity (`pubsub/pep`), features, nodes (disco#items) and node info.
//! - [`PepBroadcaster`] delivers to explicit subscribers (one by bare JID on its interested
//!   resources when their presence is known here, §4.3.2) and to the *interested* resources
//!   (§4.3 filtered notifications): available resources of the owner and of contacts with a
//!   presence subscription to the owner whose XEP-0115 capabilities contain `node+notify`,
//!   never beyond what the node's access model admits.
//! - Last items (§4.3.2, XEP-0060 `on_sub_and_presence`): when a resource sends available
//!   presence it receives, once its capabilities are known ([`Event::ResourceCaps`]), the
//!   last item of each node it wants, of its own account and of the contacts it is
//!   subscribed to; when an owner approves a contact's presence subscription
//!   ([`Event::SubscriptionApproved`]), the contact's interested resources receive them.
//! - Contacts on other servers are served the same way, from what their presence to a local
//!   account tells: notifications reach their interested resources, and a resource's first
//!   available presence to an account (with a presence subscription to it) brings it that
//!   account's last items.
//! - The facts about presence, rosters and capabilities come from the IM layer through the
//!   [`Interest`] trait (`ImInterest` in the server's wiring), and its events through the
//!   core: nothing here sleeps or polls for them. PEP watches presence at
//!   [`priority::OBSERVE`], before the IM layer consumes it.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use dashmap::DashMap;
use rookery_core::module::IqResult;
use rookery_core::{
    priority, Core, Declaration, Event, EventKind as CoreEventKind, Flow, HookPoint, Identity,
    IqAnswer, IqReply, IqTarget, Module, SessionEvent,
};
use rookery_jid::{BareJid, Jid};
use rookery_proto::{ns as pns, PresenceType, Stanza, StanzaKind};
use rookery_xml::Element;

use crate::broadcast::{Broadcaster, CoreBroadcaster, EventKind, Notification, Recipient};
use crate::config::{AccessModel, Profile, ServiceKind};
use crate::engine::Engine;
use crate::error::PubsubError;
use crate::ns;
use crate::policy::AccessPolicy;
use crate::service::{feature_uris, node_info};
use crate::store::NodeStore;

/// Most remote resources remembered as served with last items (then the record starts over:
/// at worst a resource gets the last items twice).
const MAX_SERVED_REMOTE: usize = 50_000;

/// What PEP needs to know about presence, rosters and capabilities.
#[async_trait]
pub trait Interest: Send + Sync + 'static {
    /// The available resources that want notifications of `owner`'s `node`: the owner's own
    /// and those of contacts with a presence subscription to the owner, whose capabilities
    /// contain `node+notify`.
    async fn interested(&self, core: &Arc<Core>, owner: &BareJid, node: &str) -> Vec<Jid>;

    /// The nodes a resource (local or remote) wants (`+notify` stripped); `None` while its
    /// capabilities are not known yet.
    fn wanted_nodes(&self, jid: &Jid) -> Option<Vec<String>>;

    /// The available resources of `bare`: local sessions, or for a remote account those
    /// whose presence we were sent.
    fn available_resources(&self, core: &Arc<Core>, bare: &BareJid) -> Vec<Jid>;

    /// The accounts whose PEP events `who` receives through presence: itself and the local
    /// contacts it is subscribed to.
    async fn sources_for(&self, core: &Arc<Core>, who: &BareJid) -> Vec<BareJid>;
}

/// Delivers PEP notifications: to subscribers, and to interested resources the node admits.
pub struct PepBroadcaster {
    core: Arc<CoreBroadcaster>,
    interest: Arc<dyn Interest>,
    policy: Arc<dyn AccessPolicy>,
}

impl PepBroadcaster {
    /// A broadcaster over the router, with the interest and roster facts of the IM layer.
    pub fn new(
        core: Arc<CoreBroadcaster>,
        interest: Arc<dyn Interest>,
        policy: Arc<dyn AccessPolicy>,
    ) -> Self {
        PepBroadcaster {
            core,
            interest,
            policy,
        }
    }

    /// Whether the node's access model admits `who` as a +notify recipient.
    async fn admits(&self, n: &Notification, who: &BareJid) -> bool {
        let a = &n.access;
        if who == &n.service {
            return true;
        }
        if a.outcasts.contains(who) {
            return false;
        }
        if a.members.contains(who) {
            return true;
        }
        match a.model {
            // Interested contacts hold a presence subscription to the owner by construction.
            AccessModel::Open | AccessModel::Presence => true,
            AccessModel::Whitelist => false,
            AccessModel::Authorize => a.subscribed.contains(who),
            AccessModel::Roster => self
                .policy
                .roster_groups(&n.service, who)
                .await
                .is_some_and(|g| g.iter().any(|g| a.roster_groups.contains(g))),
        }
    }

    /// The resources of this node (and of other servers, as their presence here told) that
    /// want `n` through their capabilities and that `targets` do not already reach; added
    /// to them.
    async fn add_interested(
        &self,
        core: &Arc<Core>,
        n: &Notification,
        targets: &mut Vec<Recipient>,
    ) {
        for jid in self.interest.interested(core, &n.service, &n.node).await {
            // A bare subscriber already reaches every available resource of its account.
            let covered = targets
                .iter()
                .any(|t| t.jid == jid || (t.jid.is_bare() && t.jid.bare_str() == jid.bare_str()));
            if covered || !self.admits(n, &jid.to_bare()).await {
                continue;
            }
            targets.push(Recipient {
                jid,
                subids: Vec::new(),
            });
        }
    }

    /// The node's subscribers as addressed ([`addressed`], XEP-0163 §4.3.2 "Number of
    /// Notifications").
    fn subscribers(&self, core: &Arc<Core>, n: &Notification) -> Vec<Recipient> {
        let mut out: Vec<Recipient> = Vec::with_capacity(n.recipients.len());
        for r in n.recipients.iter() {
            for jid in addressed(self.interest.as_ref(), core, &r.jid, &n.node) {
                if !out.iter().any(|t| t.jid == jid) {
                    out.push(Recipient {
                        jid,
                        subids: r.subids.clone(),
                    });
                }
            }
        }
        out
    }
}

/// Where a notification for `node` to the subscriber `jid` goes (XEP-0163 §4.3.2 "Number
/// of Notifications"): a full JID as subscribed (1); a bare JID whose available resources
/// with a non-negative priority show interest (`node+notify`), one per such resource (3) —
/// the bare JID would reach every resource, interested or not; without that presence
/// information, the bare JID (2).
fn addressed(interest: &dyn Interest, core: &Arc<Core>, jid: &Jid, node: &str) -> Vec<Jid> {
    let resources = if jid.is_bare() && jid.local().is_some() {
        interested_resources(interest, core, &jid.to_bare(), node)
    } else {
        Vec::new()
    };
    if resources.is_empty() {
        vec![jid.clone()]
    } else {
        resources
    }
}

/// The available resources of `bare` with a non-negative priority whose capabilities want
/// `node`; none when some of its sessions are bound on another node of a cluster (their
/// presence is known there only: the bare JID reaches them).
fn interested_resources(
    interest: &dyn Interest,
    core: &Arc<Core>,
    bare: &BareJid,
    node: &str,
) -> Vec<Jid> {
    let wants = |j: &Jid| {
        interest
            .wanted_nodes(j)
            .is_some_and(|w| w.iter().any(|w| w == node))
    };
    if !core.is_local_domain(bare.domain()) {
        let mut v = interest.available_resources(core, bare);
        v.retain(wants);
        return v;
    }
    let sessions = core.sessions_of(bare);
    if sessions.iter().any(|(h, _)| h.is_remote()) {
        return Vec::new();
    }
    sessions
        .into_iter()
        .filter(|(_, p)| p.is_some_and(|p| p >= 0))
        .map(|(h, _)| h.jid().clone())
        .filter(|j| wants(j))
        .collect()
}

/// A notification an IQ's answer carries (the last item after a subscription, §4.3.2)
/// addressed as live ones are ([`addressed`]).
fn to_interested(interest: &dyn Interest, core: &Arc<Core>, m: Stanza) -> Vec<Stanza> {
    let node = m
        .element()
        .get_child("event", pns::pubsub::EVENT)
        .and_then(|e| e.get_child("items", pns::pubsub::EVENT))
        .and_then(|i| i.attr("node"))
        .map(str::to_owned);
    let (Some(to), Some(node)) = (m.to().cloned(), node) else {
        return vec![m];
    };
    addressed(interest, core, &to, &node)
        .into_iter()
        .map(|r| {
            let mut copy = m.clone();
            copy.set_to(r);
            copy
        })
        .collect()
}

#[async_trait]
impl Broadcaster for PepBroadcaster {
    async fn broadcast(&self, n: &Notification) {
        let Some(core) = self.core.core() else { return };
        if n.kind == EventKind::Subscription {
            // To the subscriber it is about, as addressed.
            return self.core.deliver(n, &n.recipients).await;
        }
        let mut targets = self.subscribers(&core, n);
        self.add_interested(&core, n, &mut targets).await;
        // The interested resources bound on other nodes are known there only.
        core.tell_peers(crate::peers::TOPIC_RELAY, || crate::peers::encode_relay(n));
        self.core.deliver(n, &targets).await;
    }

    async fn send(&self, stanza: Stanza) {
        self.core.send(stanza).await;
    }

    fn peers(&self) -> Option<Arc<Core>> {
        self.core.core()
    }

    async fn relayed(&self, n: &Notification) {
        let Some(core) = self.core.core() else { return };
        // The subscribers were reached by the node that published; they are here only to
        // say whom not to reach twice.
        let mut targets = n.recipients.to_vec();
        let reached = targets.len();
        self.add_interested(&core, n, &mut targets).await;
        if targets.len() > reached {
            self.core
                .deliver(n, targets.get(reached..).unwrap_or_default())
                .await;
        }
    }
}

/// The PEP module.
pub struct Pep {
    engine: Arc<Engine>,
    core: Arc<CoreBroadcaster>,
    interest: Arc<dyn Interest>,
    /// Resources that sent available presence since their session began.
    served: DashMap<Jid, ()>,
    /// Of those, the ones owed last items once their capabilities are known.
    waiting: DashMap<Jid, ()>,
    /// Remote resources, with the local accounts that served them last items since they
    /// became available (their first presence to each account).
    served_remote: DashMap<Jid, HashSet<BareJid>>,
    /// Of those, the accounts that owe them last items once their capabilities are known.
    waiting_remote: DashMap<Jid, HashSet<BareJid>>,
    policy: Arc<dyn AccessPolicy>,
}

impl std::fmt::Debug for Pep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pep").finish_non_exhaustive()
    }
}

impl Pep {
    /// PEP with `profile`, its store, and the IM layer's interest and roster facts (blocking is
    /// the core's, applied by its fan-out).
    pub fn new(
        profile: Profile,
        store: Arc<dyn NodeStore>,
        interest: Arc<dyn Interest>,
        policy: Arc<dyn AccessPolicy>,
    ) -> Pep {
        let core = Arc::new(CoreBroadcaster::new());
        let broadcaster = Arc::new(PepBroadcaster::new(
            core.clone(),
            interest.clone(),
            policy.clone(),
        ));
        Pep {
            engine: Arc::new(Engine::new(profile, store, broadcaster, policy.clone())),
            core,
            interest,
            served: DashMap::new(),
            waiting: DashMap::new(),
            served_remote: DashMap::new(),
            waiting_remote: DashMap::new(),
            policy,
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    fn is_account(core: &Core, jid: &BareJid) -> bool {
        jid.local().is_some() && core.is_local_domain(jid.domain())
    }

    /// Routes to `resource`, whose capabilities are known, the last items it wants (its
    /// `+notify` features) of each of `sources` that its access models admit (XEP-0163
    /// §4.3.2). A source that blocks the resource sends it nothing (§4.3.3 (3)): `route`
    /// asks only the recipient's block list, so the owner's is asked here, as the core's
    /// fan-out does for live notifications.
    async fn send_last_items(&self, core: &Arc<Core>, sources: &[BareJid], resource: &Jid) {
        let Some(wanted) = self.interest.wanted_nodes(resource) else {
            return;
        };
        if wanted.is_empty() {
            return;
        }
        let wants = move |n: &str| wanted.iter().any(|w| w == n);
        for source in sources {
            let own = source.as_str() == resource.bare_str();
            if !own && core.blocks(source, resource).await {
                continue;
            }
            for m in self.engine.last_items_for(source, resource, &wants).await {
                core.route(m).await;
            }
        }
    }

    /// Records that `owner` saw the remote `resource` available; `true` the first time since
    /// it became available.
    fn first_remote_presence(&self, resource: &Jid, owner: &BareJid) -> bool {
        if self.served_remote.len() >= MAX_SERVED_REMOTE
            && !self.served_remote.contains_key(resource)
        {
            self.served_remote.clear();
            self.waiting_remote.clear();
        }
        self.served_remote
            .entry(resource.clone())
            .or_default()
            .insert(owner.clone())
    }

    /// Forgets the remote `resource` (every resource of it, if bare) went unavailable.
    fn remote_gone(&self, resource: &Jid) {
        if resource.is_full() {
            self.served_remote.remove(resource);
            self.waiting_remote.remove(resource);
        } else {
            let other = |j: &Jid| j.bare_str() != resource.as_str();
            self.served_remote.retain(|j, _| other(j));
            self.waiting_remote.retain(|j, _| other(j));
        }
    }

    /// The capabilities of `resource` are known: the last items it is owed (by `to`, for a
    /// remote resource) go out.
    async fn caps_known(&self, core: &Arc<Core>, resource: &Jid, to: Option<&BareJid>) {
        match to {
            None => {
                if self.waiting.remove(resource).is_some() {
                    // Its own account's and those of the contacts it is subscribed to.
                    let sources = self.interest.sources_for(core, &resource.to_bare()).await;
                    self.send_last_items(core, &sources, resource).await;
                }
            }
            Some(owner) => {
                let owed = self
                    .waiting_remote
                    .get_mut(resource)
                    .is_some_and(|mut owners| owners.remove(owner));
                if owed
                    && self
                        .policy
                        .has_presence_subscription(owner, &resource.to_bare())
                        .await
                {
                    self.send_last_items(core, std::slice::from_ref(owner), resource)
                        .await;
                }
            }
        }
    }

    /// `owner` approved `contact`'s presence subscription (the IM layer recorded it): the
    /// contact's interested resources receive the owner's last items.
    async fn last_items_on_subscription(
        &self,
        core: &Arc<Core>,
        owner: &BareJid,
        contact: &BareJid,
    ) {
        for r in self.interest.available_resources(core, contact) {
            self.send_last_items(core, std::slice::from_ref(owner), &r)
                .await;
        }
    }
}

impl Pep {
    /// XEP-0060 §8.6 on a PEP node: the approval request went from the account to itself,
    /// so the owner's answer (the submitted form) comes back to its own bare JID; it is
    /// applied here instead of reaching the owner's clients. Any other message goes on.
    async fn owner_answer(&self, core: &Arc<Core>, stanza: Stanza) -> Flow {
        let account = match (stanza.from(), stanza.to()) {
            (Some(f), Some(t)) if f.bare_str() == t.bare_str() => t.to_bare(),
            _ => return Flow::Continue(stanza),
        };
        let Some(from) = stanza.from().cloned() else {
            return Flow::Continue(stanza);
        };
        match crate::wire::approval(&self.engine, &account, &from, &stanza).await {
            Ok(true) => Flow::Handled,
            Ok(false) => Flow::Continue(stanza),
            Err(e) => {
                core.reply_error(&stanza, e.into()).await;
                Flow::Handled
            }
        }
    }
}

/// Whether a presence carries XEP-0115 capabilities.
fn announces_caps(stanza: &Stanza) -> bool {
    stanza.element().get_child("c", pns::CAPS).is_some()
}

#[async_trait]
impl Module for Pep {
    fn name(&self) -> &'static str {
        "pep"
    }

    /// Whether the session was served its last items (or waits for its capabilities to be),
    /// so that its node does not serve them again at its next presence.
    fn session_state(&self, jid: &Jid) -> Option<String> {
        if !self.served.contains_key(jid) {
            return None;
        }
        let waiting = self.waiting.contains_key(jid);
        Some(if waiting { "waiting" } else { "served" }.to_string())
    }

    fn adopt_session_state(&self, _core: &Arc<Core>, jid: &Jid, state: &str) {
        self.served.insert(jid.clone(), ());
        if state == "waiting" {
            self.waiting.insert(jid.clone(), ());
        }
    }

    fn declare(&self) -> Declaration {
        let mut account_features = vec![ns::PUBSUB];
        account_features.extend(feature_uris(ServiceKind::Pep));
        Declaration {
            iqs: vec![
                (IqTarget::Account, ns::PUBSUB, "pubsub"),
                (IqTarget::Account, ns::OWNER, "pubsub"),
            ],
            // Watches presence before the IM layer handles it.
            hooks: vec![
                (HookPoint::PresenceBroadcast, priority::OBSERVE),
                (HookPoint::PresenceToAccount, priority::OBSERVE),
                // The owner's answers to approval requests, before archiving and delivery
                // take them for messages to her clients.
                (HookPoint::MessageToBare, priority::POLICY),
            ],
            events: vec![
                (CoreEventKind::Session, priority::DEFAULT),
                (CoreEventKind::SubscriptionApproved, priority::DEFAULT),
                (CoreEventKind::RosterItemChanged, priority::DEFAULT),
                (CoreEventKind::ResourceCaps, priority::DEFAULT),
                (CoreEventKind::AccountDeleted, priority::DEFAULT),
            ],
            account_features,
            account_identities: vec![Identity {
                category: "pubsub",
                kind: "pep",
                name: None,
            }],
            ..Declaration::default()
        }
    }

    async fn reply_iq(&self, core: &Arc<Core>, to: &BareJid, iq: &Stanza) -> IqAnswer {
        self.core.attach(core);
        let from = iq
            .from()
            .cloned()
            .ok_or_else(|| PubsubError::BadRequest("no sender").to_stanza_error())?;
        let reply = crate::wire::handle(&self.engine, to, &from, iq).await?;
        let after = reply
            .after
            .into_iter()
            .flat_map(|m| to_interested(self.interest.as_ref(), core, m))
            .collect();
        Ok(IqReply::new(reply.payload, after))
    }

    async fn hook(&self, core: &Arc<Core>, point: HookPoint, stanza: Stanza) -> Flow {
        self.core.attach(core);
        if point == HookPoint::MessageToBare {
            return self.owner_answer(core, stanza).await;
        }
        match (point, stanza.kind(), stanza.from()) {
            (
                HookPoint::PresenceBroadcast,
                StanzaKind::Presence(PresenceType::Available),
                Some(f),
                // The first available presence of the session; one without capabilities wants
                // nothing.
            ) if self.served.insert(f.clone(), ()).is_none() && announces_caps(&stanza) => {
                self.waiting.insert(f.clone(), ());
            }
            (
                HookPoint::PresenceBroadcast,
                StanzaKind::Presence(PresenceType::Unavailable),
                Some(f),
            ) => {
                self.served.remove(f);
                self.waiting.remove(f);
            }
            (
                HookPoint::PresenceToAccount,
                StanzaKind::Presence(PresenceType::Available),
                Some(f),
            ) if f.is_full() && !core.is_local_domain(f.domain()) => {
                if let Some(owner) = stanza.to().filter(|t| t.is_bare()).map(Jid::to_bare) {
                    if self.first_remote_presence(f, &owner) && announces_caps(&stanza) {
                        self.waiting_remote
                            .entry(f.clone())
                            .or_default()
                            .insert(owner);
                    }
                }
            }
            (
                HookPoint::PresenceToAccount,
                StanzaKind::Presence(PresenceType::Unavailable | PresenceType::Error),
                Some(f),
            ) if !core.is_local_domain(f.domain()) => self.remote_gone(f),
            _ => {}
        }
        Flow::Continue(stanza)
    }

    async fn event(&self, core: &Arc<Core>, event: &Event) {
        self.core.attach(core);
        match event {
            Event::Session(SessionEvent::Closed(jid) | SessionEvent::Moved(jid)) => {
                self.served.remove(jid);
                self.waiting.remove(jid);
            }
            Event::ResourceCaps { resource, to } => {
                self.caps_known(core, resource, to.as_ref()).await;
            }
            // To an account here or elsewhere (a remote contact's resources are those whose
            // presence we were sent).
            Event::SubscriptionApproved { owner, contact } if contact.local().is_some() => {
                self.last_items_on_subscription(core, owner, contact).await;
            }
            // XEP-0163 §8.1: access is re-calculated; a subscriber that lost it loses its
            // subscription.
            Event::RosterItemChanged { owner, contact } => {
                self.engine.access_changed(owner, contact).await;
            }
            Event::AccountDeleted(account) => self.engine.delete_service(account).await,
            _ => {}
        }
    }

    async fn disco_items(&self, core: &Arc<Core>, to: &BareJid, from: &Jid) -> Vec<Element> {
        if !Self::is_account(core, to) {
            return Vec::new();
        }
        let Ok(nodes) = self.engine.list_nodes(to, from).await else {
            return Vec::new();
        };
        nodes
            .into_iter()
            .map(|(n, title)| {
                let mut item = Element::new("item", pns::DISCO_ITEMS)
                    .with_attr("jid", to.as_str())
                    .with_attr("node", n);
                if !title.is_empty() {
                    item.set_attr("name", title);
                }
                item
            })
            .collect()
    }

    async fn disco_node(
        &self,
        core: &Arc<Core>,
        to: &BareJid,
        from: &Jid,
        query: &Element,
    ) -> Option<IqResult> {
        if !Self::is_account(core, to) {
            return None;
        }
        let node = query.attr("node")?;
        let answer = if query.is("query", pns::DISCO_INFO) {
            self.engine
                .node_meta(to, from, node)
                .await
                .map(|meta| node_info(node, &meta))
        } else {
            self.engine.item_ids(to, from, node).await.map(|ids| {
                let mut q = Element::new("query", pns::DISCO_ITEMS).with_attr("node", node);
                for id in ids {
                    q.push_child(
                        Element::new("item", pns::DISCO_ITEMS)
                            .with_attr("jid", to.as_str())
                            .with_attr("name", id),
                    );
                }
                q
            })
        };
        match answer {
            Ok(q) => Some(Ok(Some(q))),
            Err(PubsubError::NodeNotFound) => None,
            Err(e) => Some(Err(e.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::policy::NoRosters;
    use crate::store::MemoryStore;

    struct NoInterest;

    #[async_trait]
    impl Interest for NoInterest {
        async fn interested(&self, _: &Arc<Core>, _: &BareJid, _: &str) -> Vec<Jid> {
            Vec::new()
        }
        fn wanted_nodes(&self, _: &Jid) -> Option<Vec<String>> {
            None
        }
        fn available_resources(&self, _: &Arc<Core>, _: &BareJid) -> Vec<Jid> {
            Vec::new()
        }
        async fn sources_for(&self, _: &Arc<Core>, _: &BareJid) -> Vec<BareJid> {
            Vec::new()
        }
    }

    fn pep() -> Pep {
        Pep::new(
            Profile::pep("example.org"),
            Arc::new(MemoryStore::new()),
            Arc::new(NoInterest),
            Arc::new(NoRosters),
        )
    }

    #[tokio::test]
    async fn whether_last_items_were_served_moves_with_a_session() {
        let (from, to) = (pep(), pep());
        let core = rookery_core::CoreBuilder::new(
            rookery_core::CoreConfig::default(),
            Arc::new(rookery_core::MemoryAccounts::new()),
        )
        .build()
        .unwrap();
        let jid = Jid::parse("alice@localhost/r").unwrap();
        assert_eq!(from.session_state(&jid), None);
        from.served.insert(jid.clone(), ());
        from.waiting.insert(jid.clone(), ());
        let state = from.session_state(&jid).unwrap();
        to.adopt_session_state(&core, &jid, &state);
        assert!(to.served.contains_key(&jid) && to.waiting.contains_key(&jid));
    }

    /// Alice and Bob are contacts; Bob's resources want node `n`.
    struct Contacts;

    #[async_trait]
    impl Interest for Contacts {
        async fn interested(&self, _: &Arc<Core>, _: &BareJid, _: &str) -> Vec<Jid> {
            Vec::new()
        }
        fn wanted_nodes(&self, _: &Jid) -> Option<Vec<String>> {
            Some(vec!["n".into()])
        }
        fn available_resources(&self, _: &Arc<Core>, bare: &BareJid) -> Vec<Jid> {
            vec![Jid::parse(&format!("{bare}/r")).unwrap()]
        }
        async fn sources_for(&self, _: &Arc<Core>, who: &BareJid) -> Vec<BareJid> {
            vec![who.clone(), BareJid::parse("alice@localhost").unwrap()]
        }
    }

    /// Everyone is subscribed to everyone's presence.
    struct Subscribed;

    #[async_trait]
    impl AccessPolicy for Subscribed {
        async fn has_presence_subscription(&self, _: &BareJid, _: &BareJid) -> bool {
            true
        }
        async fn roster_groups(&self, _: &BareJid, _: &BareJid) -> Option<Vec<String>> {
            None
        }
    }

    /// A core with PEP (Alice has published an item to `n`) and Bob's session bound.
    async fn with_item() -> (Arc<Core>, rookery_core::session::SessionEnd) {
        let pep = Arc::new(Pep::new(
            Profile::pep("localhost"),
            Arc::new(MemoryStore::new()),
            Arc::new(Contacts),
            Arc::new(Subscribed),
        ));
        let alice = Jid::parse("alice@localhost/home").unwrap();
        let item = crate::engine::PublishRequest {
            node: Some("n".into()),
            has_item: true,
            item_id: Some("i1".into()),
            payload: Some(Element::new("entry", "urn:test")),
            options: None,
        };
        pep.engine()
            .publish(&alice.to_bare(), &alice, item)
            .await
            .unwrap();
        let core = rookery_core::CoreBuilder::new(
            rookery_core::CoreConfig::default(),
            Arc::new(rookery_core::MemoryAccounts::new()),
        )
        .module(pep)
        .build()
        .unwrap();
        let bob = Jid::parse("bob@localhost/r").unwrap();
        let (h, end) = rookery_core::SessionHandle::new(core.next_session_id(), bob.clone(), 16);
        core.bind(h).await;
        core.set_available(&bob, Some(0));
        (core, end)
    }

    /// What Bob's session was sent so far (no waiting: what is not there yet was not sent).
    fn sent(end: &mut rookery_core::session::SessionEnd) -> Vec<String> {
        let mut v = Vec::new();
        while let Ok(rookery_core::Outbound::Bytes(b)) = end.rx.try_recv() {
            v.push(String::from_utf8_lossy(&b).into_owned());
        }
        v
    }

    // Paused time: a sleep or a poll anywhere would leave the queue empty at the assert.
    #[tokio::test(start_paused = true)]
    async fn last_items_follow_an_approval_without_waiting() {
        let (core, mut bob) = with_item().await;
        core.emit(&Event::SubscriptionApproved {
            owner: BareJid::parse("alice@localhost").unwrap(),
            contact: BareJid::parse("bob@localhost").unwrap(),
        })
        .await;
        let got = sent(&mut bob);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].contains("i1") && got[0].contains("alice@localhost"));
    }

    #[tokio::test(start_paused = true)]
    async fn last_items_follow_the_caps_event_once_per_session() {
        let (core, mut bob) = with_item().await;
        let caps = "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='x' ver='v'/>";
        let presence = |xml: &str| Stanza::from_serialized(xml.as_bytes()).unwrap();
        core.route_from_session(presence(&format!(
            "<presence from='bob@localhost/r'>{caps}</presence>"
        )))
        .await;
        // Owed, not sent: the capabilities are not known yet.
        let caps_known = Event::ResourceCaps {
            resource: Jid::parse("bob@localhost/r").unwrap(),
            to: None,
        };
        sent(&mut bob);
        core.emit(&caps_known).await;
        let got = sent(&mut bob);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].contains("i1"));
        // Once per session: later presence and caps events owe nothing.
        core.route_from_session(presence(&format!(
            "<presence from='bob@localhost/r'>{caps}</presence>"
        )))
        .await;
        core.emit(&caps_known).await;
        assert!(sent(&mut bob).iter().all(|s| !s.contains("i1")));
    }

    #[test]
    fn remote_resources_get_last_items_once_per_account_while_available() {
        let p = pep();
        let r1 = Jid::parse("bob@remote.example/phone").unwrap();
        let r2 = Jid::parse("bob@remote.example/desk").unwrap();
        let alice = BareJid::parse("alice@example.org").unwrap();
        let carol = BareJid::parse("carol@example.org").unwrap();
        // The first presence to each account counts, updates do not.
        assert!(p.first_remote_presence(&r1, &alice));
        assert!(!p.first_remote_presence(&r1, &alice));
        assert!(p.first_remote_presence(&r1, &carol));
        assert!(p.first_remote_presence(&r2, &alice));
        // Unavailable: the next available presence is a first one again.
        p.remote_gone(&r1);
        assert!(p.first_remote_presence(&r1, &alice));
        // A presence error from the bare JID forgets every resource.
        p.remote_gone(&Jid::parse("bob@remote.example").unwrap());
        assert!(p.served_remote.is_empty());
    }

    #[test]
    fn remote_served_record_is_bounded() {
        let p = pep();
        let alice = BareJid::parse("alice@example.org").unwrap();
        for i in 0..(MAX_SERVED_REMOTE + 5) {
            let r = Jid::parse(&format!("u{i}@remote.example/r")).unwrap();
            assert!(p.first_remote_presence(&r, &alice));
        }
        assert!(p.served_remote.len() <= MAX_SERVED_REMOTE);
    }
}
