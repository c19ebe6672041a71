//! The node engine: every use case of XEP-0060 §5–§8 as a method, independent of the wire.
//!
//! One [`Engine`] serves one kind of service ([`Profile`]): the pubsub component, or PEP for
//! all accounts (XEP-0163, where each account's bare JID is a service). Store, broadcaster and
//! access policy are injected (design.md point 9).
//!
//! # State and ordering
//! A service's nodes (configuration, affiliations, subscriptions, item count, last item) are
//! loaded from the store on first use and kept in memory; items stay in the store. Each node
//! sits behind its own async mutex: operations on one node run one at a time, in order —
//! a publication is committed to the store, then its notification is handed to the
//! broadcaster, then the caller gets its result — so notifications of one node leave in the
//! order the publications were acknowledged. Different nodes never wait for each other.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use dashmap::DashMap;
use rand::Rng;
use rookery_jid::{BareJid, Jid};
use rookery_proto::rsm::{self, Anchor};
use rookery_proto::time::{delay, now_unix};
use rookery_proto::Stanza;
use rookery_xml::Element;
use tokio::sync::{broadcast, Mutex, OnceCell, OwnedMutexGuard, RwLock};

use crate::broadcast::{
    message, message_id, recipients, AccessSnapshot, Broadcaster, EventKind, Notification,
};
use crate::config::{
    AccessModel, CreatePolicy, NodeConfig, Profile, PublishModel, SendLast, ServiceKind,
};
use crate::error::PubsubError;
use crate::form::{Field, Form};
use crate::model::{Affiliation, Item, SubOptions, SubState, Subscription};
use crate::ns;
use crate::peers::NodeChange;
use crate::policy::AccessPolicy;
use crate::store::{counted_bytes, within_budget, NodeStore, PageLimit, Scan};

type Result<T> = std::result::Result<T, PubsubError>;

/// Longest NodeID accepted, in bytes.
const MAX_NODE_ID: usize = 1024;
/// Longest ItemID accepted, in bytes.
const MAX_ITEM_ID: usize = 1024;
/// Most item ids listed by disco#items on a node.
const MAX_DISCO_ITEMS: u64 = 1000;
/// Most subscriptions one bare JID holds on one node (XEP-0060 §6.1.6 multi-subscribe; over
/// it, §6.1.3.9 `too-many-subscriptions`, matched on the bare JID as that section allows):
/// enough for a subscription per resource with its own options, while one account can no
/// longer take the node's whole `max_subscriptions_per_node` and shut everyone else out.
const MAX_SUBSCRIPTIONS_PER_JID: usize = 16;
/// Events a node's [`Engine::watch`] channel holds for its slowest watcher; one behind by
/// more has lagged (and is expected to reconnect and replay from the store).
const WATCH_CAPACITY: usize = 64;

/// A published item as every watcher of its node gets it: one allocation shared by all,
/// with a slot for the one rendering they share (serialize once, as the XMPP fan-out does).
#[derive(Debug)]
pub struct WatchedItem {
    /// The item.
    pub item: Item,
    rendered: std::sync::OnceLock<bytes::Bytes>,
}

impl WatchedItem {
    /// Wraps `item` for watchers.
    pub fn new(item: Item) -> WatchedItem {
        WatchedItem {
            item,
            rendered: std::sync::OnceLock::new(),
        }
    }

    /// The item rendered by `render`, run by the first watcher to ask; the others share
    /// its bytes. Every watcher of a node must render the same way (one wire format).
    pub fn rendered(&self, render: impl FnOnce(&Item) -> bytes::Bytes) -> bytes::Bytes {
        self.rendered.get_or_init(|| render(&self.item)).clone()
    }
}

/// A committed change of a node, for watchers outside XMPP (the HTTP face's Server-Sent
/// Events). Sent after the store commit, under the node's lock: in publish order.
#[derive(Debug, Clone)]
pub enum NodeEvent {
    /// An item was published (with its payload and sequence number).
    Item(Arc<WatchedItem>),
    /// The item with this ItemID was retracted.
    Retract(String),
    /// Every item was purged.
    Purge,
    /// The node was deleted.
    Delete,
}

/// 16 random bytes in hex: ItemIDs, SubIDs and instant NodeIDs (§7.1.1, §6.1.6, §8.1.2).
pub fn random_id() -> String {
    let b: [u8; 16] = rand::thread_rng().gen();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `not-acceptable` for a NodeID longer than [`MAX_NODE_ID`] (created or auto-created).
fn check_node_id(name: &str) -> Result<()> {
    if name.len() > MAX_NODE_ID {
        return Err(PubsubError::NotAcceptable("node id too long"));
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum LastItem {
    /// Not read from the store yet.
    Unknown,
    None,
    Some(Box<Item>),
}

/// A node in memory.
#[derive(Debug)]
struct Node {
    name: String,
    config: NodeConfig,
    created_at: i64,
    affiliations: HashMap<BareJid, Affiliation>,
    subs: Vec<Subscription>,
    item_count: u64,
    next_seq: i64,
    last_item: LastItem,
    /// Set when the node is deleted while someone still holds it.
    deleted: bool,
    /// Recipients and access facts of notifications, computed once per change of
    /// subscriptions, affiliations or configuration (not once per publication).
    cache: Option<NodeCache>,
    /// The channel of [`Engine::watch`]ers; created by the first, dropped when none is left.
    watchers: Option<broadcast::Sender<NodeEvent>>,
}

/// What every notification of a node shares until the node changes.
#[derive(Debug, Clone)]
struct NodeCache {
    recipients: Arc<[crate::broadcast::Recipient]>,
    access: Arc<AccessSnapshot>,
}

type NodeCell = Arc<Mutex<Node>>;
type NodeGuard = OwnedMutexGuard<Node>;

/// The nodes of one service.
#[derive(Debug, Default)]
struct Service {
    nodes: RwLock<BTreeMap<String, NodeCell>>,
    /// Held by [`Engine::create`] from counting the creator's nodes to inserting the new
    /// one, so that requests sent at once cannot all pass the per-owner cap.
    creating: Mutex<()>,
    /// Held by [`Engine::publish`] under a byte budget ([`Profile::max_stored_bytes`]) while
    /// the store checks and commits (after the node's lock, never before): a node's lock
    /// serializes only that node, and publications to several nodes at once must not all
    /// pass the budget (on SQLite the store's writer serializes them anyway, on PostgreSQL
    /// this does).
    publishing: Mutex<()>,
}

/// A subscription as reported to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionInfo {
    /// The node.
    pub node: String,
    /// The subscribed JID.
    pub jid: Jid,
    /// Its state.
    pub state: SubState,
    /// Its SubID.
    pub subid: String,
}

impl SubscriptionInfo {
    fn of(node: &str, s: &Subscription) -> SubscriptionInfo {
        SubscriptionInfo {
            node: node.to_string(),
            jid: s.jid.clone(),
            state: s.state,
            subid: s.subid.clone(),
        }
    }
}

/// What a subscription request produced.
#[derive(Debug, Clone)]
pub struct SubscribeOutcome {
    /// The subscription (new or existing).
    pub subscription: SubscriptionInfo,
    /// The last published item, to send after the IQ result (§6.1.7), if configured.
    pub last_item: Option<Stanza>,
}

/// Node meta-data for disco#info (§5.4).
#[derive(Debug, Clone)]
pub struct NodeMeta {
    /// The configuration.
    pub config: NodeConfig,
    /// Owners.
    pub owners: Vec<BareJid>,
    /// Publishers.
    pub publishers: Vec<BareJid>,
    /// Creation time, seconds since the Unix epoch.
    pub created_at: i64,
    /// Number of approved subscriptions.
    pub num_subscribers: usize,
}

/// A change an owner makes to a subscription (§8.8.2).
#[derive(Debug, Clone)]
pub struct SubscriptionChange {
    /// The subscriber.
    pub jid: Jid,
    /// The new state; `None` removes.
    pub state: Option<SubState>,
    /// Which subscription, when the JID has several.
    pub subid: Option<String>,
}

/// An item retrieval request (§6.5).
#[derive(Debug, Clone, Default)]
pub struct ItemsQuery {
    /// `max_items`: the newest N.
    pub max: Option<u64>,
    /// Specific ItemIDs.
    pub ids: Vec<String>,
    /// The SubID the request names.
    pub subid: Option<String>,
    /// An RSM page (§6.5.4, XEP-0059) of the node's items ordered newest first, as
    /// `max_items` counts them: `after` an ItemID are older items, `before` it newer ones.
    pub rsm: Option<rsm::Request>,
}

/// The answer to an items request: one page, however many items the node keeps.
#[derive(Debug, Clone, Default)]
pub struct ItemsPage {
    /// The items, newest first.
    pub items: Vec<Item>,
    /// How many items the node keeps: the size of the result set.
    pub count: u64,
    /// Where `items[0]` is in the result set (newest first), when known.
    pub first_index: Option<u64>,
    /// Whether the page holds all the request asked for; if not, the answer says so with
    /// an RSM `<set/>` (§6.5.4).
    pub complete: bool,
}

impl ItemsPage {
    /// Whether items older than the page's remain: the next page is `after` its last.
    pub fn more_older(&self) -> bool {
        self.first_index
            .is_some_and(|i| i.saturating_add(self.items.len() as u64) < self.count)
    }

    /// The RSM `<set/>` of the page (XEP-0059 §2.1): `<first/>` is its newest item,
    /// `<last/>` its oldest, as the result set is ordered.
    pub fn result_set(&self) -> Element {
        let ends = self.items.first().zip(self.items.last());
        rsm::result_set(
            ends.map(|(f, l)| (f.id.as_str(), l.id.as_str())),
            self.first_index,
            Some(self.count),
        )
    }
}

/// A publication request (§7.1).
#[derive(Debug, Clone, Default)]
pub struct PublishRequest {
    /// The node (`None`: missing NodeID).
    pub node: Option<String>,
    /// Whether an `<item/>` was present.
    pub has_item: bool,
    /// The ItemID, if the publisher chose one.
    pub item_id: Option<String>,
    /// The payload.
    pub payload: Option<Element>,
    /// publish-options (§7.1.5).
    pub options: Option<Form>,
}

/// `<items node='…'>` in namespace `ns_` (`pubsub` for retrieval, `pubsub#event` for
/// notifications) with an `<item/>` per item, each with its payload when `with_payload`.
pub fn items_list(ns_: &str, node: &str, items: &[Item], with_payload: bool) -> Element {
    let mut list = Element::new("items", ns_).with_attr("node", node);
    for i in items {
        let mut el = Element::new("item", ns_).with_attr("id", i.id.clone());
        if with_payload {
            if let Some(p) = &i.payload {
                el.push_child(p.clone());
            }
        }
        list.push_child(el);
    }
    list
}

/// `<event><items node='…'>…</items></event>`.
pub fn items_event(node: &str, items: &[Item], with_payload: bool) -> Element {
    event(items_list(ns::EVENT, node, items, with_payload))
}

fn event(child: Element) -> Element {
    Element::new("event", ns::EVENT).with_child(child)
}

/// `<event><subscription node='…' jid='…' subscription='…'/></event>` (§8.8.4, `notify_sub`).
fn subscription_event(node: &str, jid: &Jid, state: &str) -> Element {
    event(
        Element::new("subscription", ns::EVENT)
            .with_attr("node", node)
            .with_attr("jid", jid.as_str())
            .with_attr("subscription", state),
    )
}

impl Node {
    fn from_stored(s: crate::store::StoredNode) -> Node {
        Node {
            name: s.name,
            config: s.config,
            created_at: s.created_at,
            affiliations: s.affiliations.into_iter().collect(),
            subs: s.subscriptions,
            item_count: s.item_count,
            next_seq: s.max_seq + 1,
            last_item: if s.item_count == 0 {
                LastItem::None
            } else {
                LastItem::Unknown
            },
            deleted: false,
            cache: None,
            watchers: None,
        }
    }

    /// Tells the watchers of this node, if any, about a committed change (`ev` is built only
    /// when there is one).
    fn tell_watchers(&mut self, ev: impl FnOnce() -> NodeEvent) {
        if let Some(tx) = &self.watchers {
            if tx.send(ev()).is_err() {
                // No receiver left.
                self.watchers = None;
            }
        }
    }

    /// Forgets cached notification facts after a change of subscriptions, affiliations or
    /// configuration.
    fn changed(&mut self) {
        self.cache = None;
    }

    /// Approved subscriptions that want delivery, grouped by JID.
    fn delivery_recipients(&self) -> Vec<crate::broadcast::Recipient> {
        recipients(
            self.subs
                .iter()
                .filter(|s| s.state == SubState::Subscribed && s.options.deliver)
                .map(|s| (&s.jid, s.subid.as_str())),
        )
    }

    /// The JIDs whose affiliation satisfies `pred`.
    fn affiliated(&self, pred: impl Fn(Affiliation) -> bool) -> Vec<BareJid> {
        self.affiliations
            .iter()
            .filter(|(_, a)| pred(**a))
            .map(|(j, _)| j.clone())
            .collect()
    }

    fn subs_of<'a>(&'a self, jid: &'a Jid) -> impl Iterator<Item = &'a Subscription> + 'a {
        self.subs.iter().filter(move |s| &s.jid == jid)
    }

    fn subscribed_bare(&self, bare: &BareJid) -> bool {
        self.subs
            .iter()
            .any(|s| s.state == SubState::Subscribed && s.jid.bare_str() == bare.as_str())
    }
}

/// The engine.
pub struct Engine {
    profile: Profile,
    store: Arc<dyn NodeStore>,
    broadcaster: Arc<dyn Broadcaster>,
    policy: Arc<dyn AccessPolicy>,
    services: DashMap<BareJid, Arc<OnceCell<Arc<Service>>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("kind", &self.profile.kind)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine with its profile and its injected store, broadcaster and access policy.
    pub fn new(
        profile: Profile,
        store: Arc<dyn NodeStore>,
        broadcaster: Arc<dyn Broadcaster>,
        policy: Arc<dyn AccessPolicy>,
    ) -> Engine {
        Engine {
            profile,
            store,
            broadcaster,
            policy,
            services: DashMap::new(),
        }
    }

    /// The profile.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The broadcaster.
    pub fn broadcaster(&self) -> &Arc<dyn Broadcaster> {
        &self.broadcaster
    }

    fn is_pep(&self) -> bool {
        self.profile.kind == ServiceKind::Pep
    }

    // ---- state ------------------------------------------------------------------------------

    async fn service(&self, svc: &BareJid) -> Result<Arc<Service>> {
        let cell = self
            .services
            .entry(svc.clone())
            .or_insert_with(|| Arc::new(OnceCell::new()))
            .clone();
        let s = cell
            .get_or_try_init(|| async {
                let stored = self
                    .store
                    .load(svc.as_str(), &self.profile.defaults)
                    .await?;
                let mut nodes = BTreeMap::new();
                for n in stored {
                    nodes.insert(n.name.clone(), Arc::new(Mutex::new(Node::from_stored(n))));
                }
                Ok::<_, PubsubError>(Arc::new(Service {
                    nodes: RwLock::new(nodes),
                    creating: Mutex::new(()),
                    publishing: Mutex::new(()),
                }))
            })
            .await?;
        Ok(s.clone())
    }

    async fn node(&self, svc: &BareJid, name: &str) -> Result<NodeCell> {
        let s = self.service(svc).await?;
        let nodes = s.nodes.read().await;
        nodes.get(name).cloned().ok_or(PubsubError::NodeNotFound)
    }

    /// Locks a node that exists (and was not deleted meanwhile).
    async fn lock(cell: NodeCell) -> Result<NodeGuard> {
        let n = cell.lock_owned().await;
        if n.deleted {
            return Err(PubsubError::NodeNotFound);
        }
        Ok(n)
    }

    /// Looks up and locks the node `name` of `svc`.
    async fn locked(&self, svc: &BareJid, name: &str) -> Result<NodeGuard> {
        Self::lock(self.node(svc, name).await?).await
    }

    /// `forbidden` unless `actor` owns the node.
    fn require_owner(&self, svc: &BareJid, node: &Node, actor: &Jid) -> Result<()> {
        if self.affiliation(svc, node, &actor.to_bare()) != Affiliation::Owner {
            return Err(PubsubError::Forbidden);
        }
        Ok(())
    }

    /// The node an owner use case (§8) names, locked, once `actor` is found to own it.
    async fn owned<'a>(
        &self,
        svc: &BareJid,
        actor: &Jid,
        node: Option<&'a str>,
    ) -> Result<(&'a str, NodeGuard)> {
        let node = node.ok_or(PubsubError::NodeIdRequired)?;
        let n = self.locked(svc, node).await?;
        self.require_owner(svc, &n, actor)?;
        Ok((node, n))
    }

    fn affiliation(&self, svc: &BareJid, node: &Node, who: &BareJid) -> Affiliation {
        // The service's own JID owns every node: for PEP that is the account; for a
        // service it is the server acting as the service (the admin API), since no client,
        // peer or component can send from the service's domain.
        if who == svc {
            return Affiliation::Owner;
        }
        node.affiliations
            .get(who)
            .copied()
            .unwrap_or(Affiliation::None)
    }

    fn owners(&self, svc: &BareJid, node: &Node) -> Vec<BareJid> {
        let mut v = node.affiliated(|a| a == Affiliation::Owner);
        if self.is_pep() && !v.contains(svc) {
            v.push(svc.clone());
        }
        v.sort();
        v
    }

    fn snapshot(&self, svc: &BareJid, node: &Node) -> AccessSnapshot {
        let mut members = node.affiliated(Affiliation::is_member);
        if self.is_pep() && !members.contains(svc) {
            members.push(svc.clone());
        }
        let mut subscribed: Vec<BareJid> = node
            .subs
            .iter()
            .filter(|s| s.state == SubState::Subscribed)
            .map(|s| s.jid.to_bare())
            .collect();
        subscribed.sort();
        subscribed.dedup();
        AccessSnapshot {
            model: node.config.access_model,
            roster_groups: node.config.roster_groups_allowed.clone(),
            members,
            outcasts: node.affiliated(|a| a == Affiliation::Outcast),
            subscribed,
        }
    }

    /// §4.5 and the access error cases of §6.1.3 / §6.5.9: may `who` see this node's items?
    /// `for_items` applies the `authorize` rule for retrieval (an approved subscription).
    async fn check_access(
        &self,
        svc: &BareJid,
        node: &Node,
        who: &BareJid,
        for_items: bool,
    ) -> Result<()> {
        let aff = self.affiliation(svc, node, who);
        match aff {
            Affiliation::Outcast => return Err(PubsubError::Forbidden),
            Affiliation::PublishOnly => return Err(PubsubError::Forbidden),
            a if a.is_member() => return Ok(()),
            _ => {}
        }
        match node.config.access_model {
            AccessModel::Open => Ok(()),
            AccessModel::Presence => {
                for owner in self.owners(svc, node) {
                    if self.policy.has_presence_subscription(&owner, who).await {
                        return Ok(());
                    }
                }
                Err(PubsubError::PresenceSubscriptionRequired)
            }
            AccessModel::Roster => {
                for owner in self.owners(svc, node) {
                    if let Some(groups) = self.policy.roster_groups(&owner, who).await {
                        if groups
                            .iter()
                            .any(|g| node.config.roster_groups_allowed.contains(g))
                        {
                            return Ok(());
                        }
                    }
                }
                Err(PubsubError::NotInRosterGroup)
            }
            AccessModel::Whitelist => Err(PubsubError::ClosedNode),
            AccessModel::Authorize => {
                if !for_items || node.subscribed_bare(who) {
                    Ok(())
                } else {
                    Err(PubsubError::NotSubscribedForItems)
                }
            }
        }
    }

    /// [`Engine::check_access`] for a reader who may be anonymous (the HTTP face without a
    /// token): an anonymous reader sees `open` nodes only.
    async fn reader_access(&self, svc: &BareJid, node: &Node, who: Option<&BareJid>) -> Result<()> {
        match who {
            Some(who) => self.check_access(svc, node, who, true).await,
            None if node.config.access_model == AccessModel::Open => Ok(()),
            None => Err(PubsubError::AuthenticationRequired),
        }
    }

    /// Whether `who` may see the node (for listings and +notify delivery): access checks
    /// without errors.
    async fn may_see(&self, svc: &BareJid, node: &Node, who: &BareJid) -> bool {
        self.check_access(svc, node, who, true).await.is_ok()
    }

    fn may_create(&self, svc: &BareJid, actor: &BareJid) -> bool {
        if self.is_pep() {
            return actor == svc;
        }
        match &self.profile.create {
            CreatePolicy::Local => {
                actor.local().is_some() && self.profile.is_local(svc, actor.domain())
            }
            CreatePolicy::Anyone => true,
            CreatePolicy::Only(list) => list.contains(actor),
        }
    }

    fn limit(&self) -> u64 {
        self.profile.max_items_limit
    }

    async fn notify(&self, svc: &BareJid, node: &mut Node, kind: EventKind, ev: Element) {
        let cache = match &node.cache {
            Some(c) => c.clone(),
            None => {
                let c = NodeCache {
                    recipients: node.delivery_recipients().into(),
                    access: Arc::new(self.snapshot(svc, node)),
                };
                node.cache = Some(c.clone());
                c
            }
        };
        let n = Notification {
            service: svc.clone(),
            node: node.name.clone(),
            kind,
            event: ev,
            message_type: node.config.notification_type,
            recipients: cache.recipients,
            access: cache.access,
        };
        self.broadcaster.broadcast(&n).await;
    }

    /// Tells the other nodes of a cluster the node's item count and next sequence number
    /// after a committed publication, retraction or purge.
    fn tell_items(&self, svc: &BareJid, n: &Node) {
        let change = NodeChange::Items {
            count: n.item_count,
            next_seq: n.next_seq,
        };
        self.tell_peers(svc, Some(&n.name), change);
    }

    /// Forgets cached notification facts after a committed change of the node's
    /// subscriptions, affiliations or configuration, and tells the other nodes of a cluster.
    fn changed(&self, svc: &BareJid, n: &mut Node) {
        n.changed();
        self.tell_peers(svc, Some(&n.name), NodeChange::State);
    }

    /// Tells the other nodes of a cluster (if any) that `node` of `svc` changed in the
    /// store (crate::peers); call after the commit, before notifying.
    fn tell_peers(&self, svc: &BareJid, node: Option<&str>, change: NodeChange) {
        if let Some(core) = self.broadcaster.peers() {
            core.tell_peers(crate::peers::TOPIC_CHANGE, || {
                crate::peers::Change {
                    service: svc.clone(),
                    node: node.map(str::to_string),
                    change,
                }
                .encode()
            });
        }
    }

    /// Another node of a cluster committed `change` to `node` of `svc` (every node of it
    /// when `None`): the copy in memory, if this engine loaded the service, follows. Items
    /// changes are taken as told; anything else reads the node from the store again. A
    /// node's watchers stay attached across a reload (they are told when it is gone).
    pub async fn peer_changed(&self, svc: &BareJid, node: Option<&str>, change: NodeChange) {
        let Some(s) = self.services.get(svc).and_then(|c| c.get().cloned()) else {
            // Not loaded here: its first use reads the store.
            return;
        };
        if let (NodeChange::Items { count, next_seq }, Some(name)) = (change, node) {
            let cell = s.nodes.read().await.get(name).cloned();
            if let Some(cell) = cell {
                let mut n = cell.lock().await;
                n.item_count = count;
                n.next_seq = n.next_seq.max(next_seq);
                n.last_item = if count == 0 {
                    LastItem::None
                } else {
                    LastItem::Unknown
                };
                return;
            }
        }
        let stored = match self.store.load(svc.as_str(), &self.profile.defaults).await {
            Ok(v) => v,
            Err(e) => {
                return tracing::error!(service = %svc, error = %e, "reloading pubsub nodes a peer changed failed");
            }
        };
        let concerned = |name: &str| node.is_none_or(|n| n == name);
        let mut fresh: HashMap<String, crate::store::StoredNode> = stored
            .into_iter()
            .filter(|n| concerned(&n.name))
            .map(|n| (n.name.clone(), n))
            .collect();
        // The map first, then each node (the order `delete` takes them in).
        let (gone, kept) = {
            let mut nodes = s.nodes.write().await;
            let names: Vec<String> = nodes.keys().filter(|k| concerned(k)).cloned().collect();
            let mut gone = Vec::new();
            let mut kept = Vec::new();
            for name in names {
                match fresh.remove(&name) {
                    Some(st) => kept.extend(nodes.get(&name).cloned().map(|c| (c, st))),
                    None => gone.extend(nodes.remove(&name)),
                }
            }
            for (name, st) in fresh {
                nodes.insert(name, Arc::new(Mutex::new(Node::from_stored(st))));
            }
            (gone, kept)
        };
        for cell in gone {
            let mut n = cell.lock().await;
            n.deleted = true;
            n.tell_watchers(|| NodeEvent::Delete);
            n.watchers = None;
        }
        for (cell, st) in kept {
            let mut n = cell.lock().await;
            let watchers = n.watchers.take();
            let next_seq = n.next_seq;
            *n = Node::from_stored(st);
            n.next_seq = n.next_seq.max(next_seq);
            n.watchers = watchers;
        }
    }

    /// `notify_sub`: tells the owners about a subscription change (§8.? "subscription
    /// notifications").
    async fn notify_owners_of_sub(&self, svc: &BareJid, node: &Node, jid: &Jid, state: &str) {
        if !node.config.notify_sub {
            return;
        }
        let ev = subscription_event(&node.name, jid, state);
        for owner in self.owners(svc, node) {
            self.notify_one(svc, node, &ev, owner.as_str()).await;
        }
    }

    /// Sends the notification `ev` of `node` to `to` alone (not to the node's subscribers).
    async fn notify_one(&self, svc: &BareJid, node: &Node, ev: &Element, to: &str) {
        let m = message(
            svc.as_str(),
            node.config.notification_type.as_str(),
            &message_id(),
            ev,
            &[],
        )
        .with_attr("to", to);
        if let Ok(s) = Stanza::from_element(m) {
            self.broadcaster.send(s).await;
        }
    }

    async fn last_item(&self, svc: &BareJid, node: &mut Node) -> Result<Option<Item>> {
        if let LastItem::Unknown = node.last_item {
            let newest = Scan::NewestFirst { below: None };
            let one = PageLimit {
                max: 1,
                max_bytes: usize::MAX,
            };
            let items = self
                .store
                .items_page(svc.as_str(), &node.name, newest, one)
                .await?;
            node.last_item = match items.into_iter().next() {
                Some(i) => LastItem::Some(Box::new(i)),
                None => LastItem::None,
            };
        }
        Ok(match &node.last_item {
            LastItem::Some(i) => Some((**i).clone()),
            _ => None,
        })
    }

    /// The last item of `node` as a notification to `to`, with its publication time
    /// (XEP-0203 delay, §6.1.7).
    fn last_item_message(
        &self,
        svc: &BareJid,
        node: &Node,
        item: &Item,
        to: &Jid,
    ) -> Option<Stanza> {
        let ev = items_event(
            &node.name,
            std::slice::from_ref(item),
            node.config.deliver_payloads,
        );
        let mut msg = Element::new("message", rookery_xml::CONTENT_NS)
            .with_attr("from", svc.as_str())
            .with_attr("to", to.as_str())
            .with_attr("type", node.config.notification_type.as_str())
            .with_attr("id", message_id())
            .with_child(ev);
        msg.push_child(delay(svc.as_str(), item.updated_at, None));
        Stanza::from_element(msg).ok()
    }

    // ---- entity use cases (§5) ----------------------------------------------------------------

    /// §5.2: the nodes `actor` may discover, with their titles.
    pub async fn list_nodes(&self, svc: &BareJid, actor: &Jid) -> Result<Vec<(String, String)>> {
        let cells = self.cells(svc, None).await?;
        let who = actor.to_bare();
        let mut out = Vec::new();
        for c in cells {
            let Ok(n) = Self::lock(c).await else {
                continue;
            };
            // PEP lists only what the requester may see (XEP-0163 §?: disco#items of an
            // account); a service lists every node not closed to the requester.
            let visible = if self.is_pep() {
                self.may_see(svc, &n, &who).await
            } else {
                self.affiliation(svc, &n, &who) != Affiliation::Outcast
            };
            if visible {
                out.push((n.name.clone(), n.config.title.clone()));
            }
        }
        Ok(out)
    }

    /// §5.3/§5.4: node information and meta-data.
    pub async fn node_meta(&self, svc: &BareJid, actor: &Jid, node: &str) -> Result<NodeMeta> {
        let n = self.locked(svc, node).await?;
        if self.is_pep() {
            self.check_access(svc, &n, &actor.to_bare(), true).await?;
        } else if self.affiliation(svc, &n, &actor.to_bare()) == Affiliation::Outcast {
            return Err(PubsubError::Forbidden);
        }
        Ok(NodeMeta {
            config: n.config.clone(),
            owners: self.owners(svc, &n),
            publishers: n.affiliated(|a| a == Affiliation::Publisher),
            created_at: n.created_at,
            num_subscribers: n
                .subs
                .iter()
                .filter(|s| s.state == SubState::Subscribed)
                .count(),
        })
    }

    /// §5.5: the ItemIDs of a node (newest first).
    pub async fn item_ids(&self, svc: &BareJid, actor: &Jid, node: &str) -> Result<Vec<String>> {
        let n = self.locked(svc, node).await?;
        self.check_access(svc, &n, &actor.to_bare(), true).await?;
        if !n.config.persist_items {
            return Ok(Vec::new());
        }
        self.store
            .item_ids(svc.as_str(), node, MAX_DISCO_ITEMS)
            .await
    }

    /// §5.6: `actor`'s subscriptions (all nodes, or one).
    pub async fn subscriptions_of(
        &self,
        svc: &BareJid,
        actor: &Jid,
        node: Option<&str>,
    ) -> Result<Vec<SubscriptionInfo>> {
        let cells = self.cells(svc, node).await?;
        let who = actor.to_bare();
        let mut out = Vec::new();
        for c in cells {
            let Ok(n) = Self::lock(c).await else {
                continue;
            };
            for s in &n.subs {
                if s.jid.bare_str() == who.as_str() {
                    out.push(SubscriptionInfo::of(&n.name, s));
                }
            }
        }
        Ok(out)
    }

    /// §5.7: `actor`'s affiliations (all nodes, or one).
    pub async fn affiliations_of(
        &self,
        svc: &BareJid,
        actor: &Jid,
        node: Option<&str>,
    ) -> Result<Vec<(String, Affiliation)>> {
        let cells = self.cells(svc, node).await?;
        let who = actor.to_bare();
        let mut out = Vec::new();
        for c in cells {
            let Ok(n) = Self::lock(c).await else {
                continue;
            };
            let a = self.affiliation(svc, &n, &who);
            if a != Affiliation::None {
                out.push((n.name.clone(), a));
            }
        }
        Ok(out)
    }

    async fn cells(&self, svc: &BareJid, node: Option<&str>) -> Result<Vec<NodeCell>> {
        match node {
            Some(name) => Ok(vec![self.node(svc, name).await?]),
            None => {
                let s = self.service(svc).await?;
                let v = s.nodes.read().await.values().cloned().collect();
                Ok(v)
            }
        }
    }

    // ---- subscriber use cases (§6) -----------------------------------------------------------

    /// §6.1: subscribes `jid` (which must be `actor`'s, unless `actor` owns the node).
    pub async fn subscribe(
        &self,
        svc: &BareJid,
        actor: &Jid,
        node: &str,
        jid: &Jid,
        options: Option<&Form>,
    ) -> Result<SubscribeOutcome> {
        let mut n = self.locked(svc, node).await?;
        let actor_bare = actor.to_bare();
        let who = jid.to_bare();
        let actor_owner = self.affiliation(svc, &n, &actor_bare) == Affiliation::Owner;
        if who != actor_bare && !actor_owner {
            return Err(PubsubError::InvalidJid);
        }
        let aff = self.affiliation(svc, &n, &who);
        if matches!(aff, Affiliation::Outcast | Affiliation::PublishOnly) {
            return Err(PubsubError::Forbidden);
        }
        if n.subs_of(jid).any(|s| s.state == SubState::Pending) {
            return Err(PubsubError::PendingSubscription);
        }
        let opts = match options {
            Some(f) => SubOptions::default()
                .apply(f)
                .ok_or(PubsubError::InvalidOptions)?,
            None => SubOptions::default(),
        };
        // Without options, subscribing again returns the existing subscription; with options,
        // a further subscription is created (multi-subscribe).
        if options.is_none() {
            if let Some(existing) = n.subs_of(jid).next() {
                return Ok(SubscribeOutcome {
                    subscription: SubscriptionInfo::of(&n.name, existing),
                    last_item: None,
                });
            }
        }
        let state = if n.config.access_model == AccessModel::Authorize
            && !aff.is_member()
            && !actor_owner
        {
            SubState::Pending
        } else {
            self.check_access(svc, &n, &who, false).await?;
            SubState::Subscribed
        };
        let of_who = n.subs.iter().filter(|s| s.jid.to_bare() == who).count();
        if n.subs.len() >= self.profile.max_subscriptions_per_node
            || of_who >= MAX_SUBSCRIPTIONS_PER_JID
        {
            return Err(PubsubError::TooManySubscriptions);
        }
        let sub = Subscription {
            subid: random_id(),
            jid: jid.clone(),
            state,
            options: opts,
        };
        self.store
            .set_subscription(svc.as_str(), node, &sub)
            .await?;
        n.subs.push(sub.clone());
        self.changed(svc, &mut n);
        let info = SubscriptionInfo::of(&n.name, &sub);
        if state == SubState::Pending {
            self.request_approval(svc, &n, &sub).await;
            return Ok(SubscribeOutcome {
                subscription: info,
                last_item: None,
            });
        }
        self.notify_owners_of_sub(svc, &n, jid, "subscribed").await;
        let last_item =
            if n.config.send_last_published_item != SendLast::Never && sub.options.deliver {
                let node_ref: &mut Node = &mut n;
                match self.last_item(svc, node_ref).await? {
                    Some(item) => self.last_item_message(svc, &n, &item, jid),
                    None => None,
                }
            } else {
                None
            };
        Ok(SubscribeOutcome {
            subscription: info,
            last_item,
        })
    }

    /// §8.6: asks the owners to approve a pending subscription with a
    /// `pubsub#subscribe_authorization` form.
    async fn request_approval(&self, svc: &BareJid, node: &Node, sub: &Subscription) {
        let form = Form::new("form", ns::SUBSCRIBE_AUTHORIZATION)
            .with(Field::new("pubsub#subid", "hidden", sub.subid.clone()))
            .with(Field::new("pubsub#node", "text-single", node.name.clone()).label("Node ID"))
            .with(
                Field::new("pubsub#subscriber_jid", "jid-single", sub.jid.as_str())
                    .label("Subscriber Address"),
            )
            .with(
                Field::new("pubsub#allow", "boolean", "false")
                    .label("Allow this JID to subscribe to this pubsub node?"),
            );
        for owner in self.owners(svc, node) {
            let msg = Element::new("message", rookery_xml::CONTENT_NS)
                .with_attr("from", svc.as_str())
                .with_attr("to", owner.as_str())
                .with_attr("id", message_id())
                .with_child(form.to_element());
            if let Ok(s) = Stanza::from_element(msg) {
                self.broadcaster.send(s).await;
            }
        }
    }

    /// §8.6: an owner's answer to an approval request (or §8.8.2 approval by state change).
    pub async fn authorize(
        &self,
        svc: &BareJid,
        actor: &Jid,
        node: &str,
        subscriber: &Jid,
        subid: Option<&str>,
        allow: bool,
    ) -> Result<()> {
        let mut n = self.locked(svc, node).await?;
        self.require_owner(svc, &n, actor)?;
        let Some(pos) = n.subs.iter().position(|s| {
            &s.jid == subscriber
                && s.state == SubState::Pending
                && subid.is_none_or(|id| s.subid == id)
        }) else {
            return Err(PubsubError::NotSubscribed);
        };
        let state = if allow {
            let Some(sub) = n.subs.get_mut(pos) else {
                return Err(PubsubError::NotSubscribed);
            };
            self.change_subscription(svc, node, sub, |s| s.state = SubState::Subscribed)
                .await?;
            "subscribed"
        } else {
            let subid = n.subs.get(pos).map(|s| s.subid.clone()).unwrap_or_default();
            self.store
                .remove_subscription(svc.as_str(), node, &subid)
                .await?;
            n.subs.remove(pos);
            "none"
        };
        self.changed(svc, &mut n);
        let ev = subscription_event(node, subscriber, state);
        self.notify_one(svc, &n, &ev, subscriber.as_str()).await;
        self.notify_owners_of_sub(svc, &n, subscriber, state).await;
        if allow && n.config.send_last_published_item != SendLast::Never {
            // §12.6: the last item goes to new subscribers "upon … approval by a node owner".
            if let Some(item) = self.last_item(svc, &mut n).await? {
                if let Some(m) = self.last_item_message(svc, &n, &item, subscriber) {
                    self.broadcaster.send(m).await;
                }
            }
        }
        Ok(())
    }

    /// §6.2: unsubscribes `jid`.
    pub async fn unsubscribe(
        &self,
        svc: &BareJid,
        actor: &Jid,
        node: &str,
        jid: &Jid,
        subid: Option<&str>,
    ) -> Result<()> {
        let mut n = self.locked(svc, node).await?;
        let subid = self.pick_subid(svc, &n, actor, jid, subid)?;
        self.store
            .remove_subscription(svc.as_str(), node, &subid)
            .await?;
        n.subs.retain(|s| s.subid != subid);
        self.changed(svc, &mut n);
        self.notify_owners_of_sub(svc, &n, jid, "none").await;
        Ok(())
    }

    /// The SubID a request of `actor` is about, once `actor` is found to be `jid` or to own
    /// the node: the given one (which must be `jid`'s), or the only subscription of `jid`
    /// (§6.2.3.1, §6.2.3.2, §6.2.3.5).
    fn pick_subid(
        &self,
        svc: &BareJid,
        n: &Node,
        actor: &Jid,
        jid: &Jid,
        subid: Option<&str>,
    ) -> Result<String> {
        if jid.to_bare() != actor.to_bare() {
            self.require_owner(svc, n, actor)?;
        }
        let mine: Vec<&Subscription> = n.subs_of(jid).collect();
        if mine.is_empty() {
            return Err(PubsubError::NotSubscribed);
        }
        match subid {
            Some(id) => mine
                .iter()
                .find(|s| s.subid == id)
                .map(|s| s.subid.clone())
                .ok_or(PubsubError::InvalidSubid),
            None => match mine.as_slice() {
                [one] => Ok(one.subid.clone()),
                _ => Err(PubsubError::SubidRequired),
            },
        }
    }

    /// §6.3.2: the options form of a subscription.
    pub async fn options(
        &self,
        svc: &BareJid,
        actor: &Jid,
        node: &str,
        jid: Option<&Jid>,
        subid: Option<&str>,
    ) -> Result<(Jid, String, SubOptions)> {
        let n = self.locked(svc, node).await?;
        let jid = jid.ok_or(PubsubError::JidRequired)?;
        let subid = self.pick_subid(svc, &n, actor, jid, subid)?;
        let opts = n
            .subs
            .iter()
            .find(|s| s.subid == subid)
            .map(|s| s.options)
            .unwrap_or_default();
        Ok((jid.clone(), subid, opts))
    }

    /// §6.3.5: submits subscription options.
    pub async fn set_options(
        &self,
        svc: &BareJid,
        actor: &Jid,
        node: &str,
        jid: Option<&Jid>,
        subid: Option<&str>,
        form: &Form,
    ) -> Result<()> {
        let mut n = self.locked(svc, node).await?;
        let jid = jid.ok_or(PubsubError::JidRequired)?;
        let subid = self.pick_subid(svc, &n, actor, jid, subid)?;
        let Some(sub) = n.subs.iter_mut().find(|s| s.subid == subid) else {
            return Err(PubsubError::NotSubscribed);
        };
        let opts = sub.options.apply(form).ok_or(PubsubError::InvalidOptions)?;
        self.change_subscription(svc, node, sub, |s| s.options = opts)
            .await?;
        self.changed(svc, &mut n);
        Ok(())
    }

    /// §6.5: retrieves items.
    pub async fn items(
        &self,
        svc: &BareJid,
        actor: &Jid,
        node: &str,
        q: &ItemsQuery,
    ) -> Result<ItemsPage> {
        self.read_items(svc, Some(&actor.to_bare()), node, q, true)
            .await
    }

    /// [`Engine::items`] for a reader who may be anonymous (`None`: `open` nodes only), as
    /// the HTTP face reads (it knows no SubIDs).
    pub async fn items_as(
        &self,
        svc: &BareJid,
        who: Option<&BareJid>,
        node: &str,
        q: &ItemsQuery,
    ) -> Result<ItemsPage> {
        self.read_items(svc, who, node, q, false).await
    }

    /// Items retrieval; `by_subid`: a reader holding several subscriptions must name one
    /// (§6.5.9.1 `subid-required`), as over XMPP.
    async fn read_items(
        &self,
        svc: &BareJid,
        who: Option<&BareJid>,
        node: &str,
        q: &ItemsQuery,
        by_subid: bool,
    ) -> Result<ItemsPage> {
        let n = self.locked(svc, node).await?;
        self.reader_access(svc, &n, who).await?;
        let mut held = n
            .subs
            .iter()
            .filter(|s| who.is_some_and(|w| s.jid.bare_str() == w.as_str()));
        match &q.subid {
            Some(id) if !held.any(|s| &s.subid == id) => return Err(PubsubError::InvalidSubid),
            None if by_subid && held.nth(1).is_some() => return Err(PubsubError::SubidRequired),
            _ => {}
        }
        if !n.config.persist_items {
            return Err(PubsubError::NotPersistent);
        }
        if !q.ids.is_empty() {
            return self.items_by_id(svc, &n, &q.ids).await;
        }
        self.items_page(svc, &n, q).await
    }

    /// The page of `n`'s items that `q` asks for (§6.5.7 `max_items`, §6.5.4 RSM), within the
    /// service's page limits.
    async fn items_page(&self, svc: &BareJid, n: &Node, q: &ItemsQuery) -> Result<ItemsPage> {
        let request = q.rsm.clone().unwrap_or_default();
        let asked = q.max.into_iter().chain(request.max).min();
        let limit = PageLimit {
            max: asked.map_or(self.profile.max_page_items, |m| {
                m.min(self.profile.max_page_items)
            }),
            max_bytes: self.profile.max_page_bytes,
        };
        let scan = match &request.anchor {
            Anchor::First => Scan::NewestFirst { below: None },
            Anchor::After(id) => Scan::NewestFirst {
                below: Some(self.seq_of(svc, n, id).await?),
            },
            Anchor::Before(id) => Scan::OldestFirst {
                above: Some(self.seq_of(svc, n, id).await?),
            },
            Anchor::Last => Scan::OldestFirst { above: None },
        };
        let mut items = self
            .store
            .items_page(svc.as_str(), &n.name, scan, limit)
            .await?;
        if matches!(scan, Scan::OldestFirst { .. }) {
            items.reverse();
        }
        let count = n.item_count;
        let taken = items.len() as u64;
        let first_index = match (&request.anchor, items.first()) {
            (_, None) => None,
            (Anchor::First, _) => Some(0),
            (Anchor::Last, _) => Some(count.saturating_sub(taken)),
            (_, Some(newest)) => Some(
                self.store
                    .count_newer(svc.as_str(), &n.name, newest.seq)
                    .await?,
            ),
        };
        Ok(ItemsPage {
            complete: taken >= asked.unwrap_or(count).min(count),
            items,
            count,
            first_index,
        })
    }

    /// The items of `n` named in `ids`, as many as fit a page's bytes (§6.5.4: a page that
    /// leaves some out says so).
    async fn items_by_id(&self, svc: &BareJid, n: &Node, ids: &[String]) -> Result<ItemsPage> {
        let budget = self.profile.max_page_bytes;
        let found = self
            .store
            .items_by_id(svc.as_str(), &n.name, ids, budget)
            .await?;
        Ok(ItemsPage {
            complete: found.complete,
            items: found.items,
            count: n.item_count,
            first_index: None,
        })
    }

    /// The sequence number of the item an RSM anchor names; XEP-0059 §2.6: `item-not-found`
    /// when it is gone (an ItemID does not tell where it stood).
    async fn seq_of(&self, svc: &BareJid, n: &Node, id: &str) -> Result<i64> {
        self.store
            .item_seq(svc.as_str(), &n.name, id)
            .await?
            .ok_or(PubsubError::ItemNotFound)
    }

    /// For clients of the engine other than a pubsub IQ (the WebSub hub, a node's history):
    /// may `who` — `None` for an anonymous HTTP caller — read the node's items? The rules of
    /// item retrieval (§6.5):
    /// the access model and affiliations decide as over XMPP (`authorize` needs an approved
    /// subscription), an anonymous caller is admitted on `open` nodes only, and a node that
    /// keeps no items has nothing to read (`NotPersistent`).
    pub async fn check_reader(
        &self,
        svc: &BareJid,
        node: &str,
        who: Option<&BareJid>,
    ) -> Result<()> {
        let n = self.locked(svc, node).await?;
        self.reader_access(svc, &n, who).await?;
        if !n.config.persist_items {
            return Err(PubsubError::NotPersistent);
        }
        Ok(())
    }

    // ---- publisher use cases (§7) --------------------------------------------------------------

    /// §7.1: publishes an item; returns its ItemID. With PEP, a missing node is created with
    /// the publish-options as configuration (XEP-0163 §3, "auto-create").
    pub async fn publish(&self, svc: &BareJid, actor: &Jid, req: PublishRequest) -> Result<String> {
        let name = req
            .node
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or(PubsubError::NodeIdRequired)?;
        let cell = match self.node(svc, &name).await {
            Ok(c) => c,
            Err(PubsubError::NodeNotFound) if self.is_pep() && actor.to_bare() == *svc => {
                self.auto_create(svc, &name, &req).await?
            }
            Err(e) => return Err(e),
        };
        let mut n = Self::lock(cell).await?;
        let who = actor.to_bare();
        let aff = self.affiliation(svc, &n, &who);
        if aff == Affiliation::Outcast {
            return Err(PubsubError::Forbidden);
        }
        let allowed = match n.config.publish_model {
            PublishModel::Publishers => aff.can_publish(),
            PublishModel::Subscribers => aff.can_publish() || n.subscribed_bare(&who),
            PublishModel::Open => true,
        };
        if !allowed {
            return Err(PubsubError::Forbidden);
        }
        if let Some(opts) = &req.options {
            if !n.config.meets(opts, self.limit()) {
                return Err(PubsubError::PreconditionNotMet);
            }
        }
        let id = self.check_item(&n.config, &req)?;
        let item = Item {
            id: id.clone(),
            publisher: actor.as_str().to_string(),
            payload: req.payload,
            seq: n.next_seq,
            updated_at: now_unix(),
        };
        if n.config.persist_items {
            self.store_item(svc, &mut n, &item).await?;
        }
        n.next_seq += 1;
        self.tell_items(svc, &n);
        rookery_metrics::get().pubsub_publish();
        n.tell_watchers(|| NodeEvent::Item(Arc::new(WatchedItem::new(item.clone()))));
        if n.config.deliver_notifications {
            let ev = items_event(
                &name,
                std::slice::from_ref(&item),
                n.config.deliver_payloads,
            );
            self.notify(svc, &mut n, EventKind::Items, ev).await;
        }
        n.last_item = LastItem::Some(Box::new(item));
        Ok(id)
    }

    /// Stores `item` on the node `n` of `svc` (committed when this returns), within the node's
    /// `max_items` and the service's byte budget.
    async fn store_item(&self, svc: &BareJid, n: &mut Node, item: &Item) -> Result<()> {
        let max = n.config.max_items.effective(self.limit());
        let s = self.service(svc).await?;
        let _turn = match self.profile.max_stored_bytes {
            Some(_) => Some(s.publishing.lock().await),
            None => None,
        };
        let replaced = self
            .store
            .publish(
                svc.as_str(),
                &n.name,
                item,
                Some(max),
                n.item_count,
                self.profile.max_stored_bytes,
            )
            .await?;
        n.item_count = if replaced {
            n.item_count
        } else {
            n.item_count + 1
        }
        .min(max);
        Ok(())
    }

    /// XEP-0163 §3 "auto-create" (XEP-0060 §7.1.5): the account publishes to a node it does
    /// not have; it is created with the publish-options as configuration, but only once
    /// the request is found valid against it, so that a refused publication leaves no node
    /// behind. The same NodeID limit as [`Engine::create`]; an unknown option field is a
    /// precondition not met, as on an existing node; so is an item the byte budget has no
    /// room for (a new node's item frees nothing; the store checks again as it publishes).
    async fn auto_create(
        &self,
        svc: &BareJid,
        name: &str,
        req: &PublishRequest,
    ) -> Result<NodeCell> {
        check_node_id(name)?;
        let mut config = self.profile.defaults.clone();
        if let Some(opts) = &req.options {
            if !config.knows_every_field(opts) {
                return Err(PubsubError::PreconditionNotMet);
            }
            config
                .apply(opts)
                .map_err(|_| PubsubError::PreconditionNotMet)?;
        }
        self.check_item(&config, req)?;
        self.check_room(svc, &config, req).await?;
        match self.create_inner(svc, svc, name, config).await {
            Ok(c) => Ok(c),
            // Created by a concurrent request meanwhile.
            Err(PubsubError::NodeExists) => self.node(svc, name).await,
            Err(e) => Err(e),
        }
    }

    /// `resource-constraint` if the item of `req`, stored as a new item on a node configured
    /// as `c`, would take the service past its byte budget.
    async fn check_room(&self, svc: &BareJid, c: &NodeConfig, req: &PublishRequest) -> Result<()> {
        let Some(budget) = self.profile.max_stored_bytes.filter(|_| c.persist_items) else {
            return Ok(());
        };
        let used = self.store.stored_bytes(svc.as_str()).await?;
        let size = counted_bytes(
            req.payload
                .as_ref()
                .map_or(0, |p| crate::xml::to_string(p).len()),
        );
        if !within_budget(used, used.saturating_add(size), budget) {
            return Err(PubsubError::ResourceConstraint);
        }
        Ok(())
    }

    /// §7.1.3.4–§7.1.3.7: whether the item of `req` suits a node configured as `c`; its
    /// ItemID (the publisher's, or a new one).
    fn check_item(&self, c: &NodeConfig, req: &PublishRequest) -> Result<String> {
        if !req.has_item {
            if c.persist_items || c.deliver_payloads {
                return Err(PubsubError::ItemRequired);
            }
        } else if !c.persist_items && !c.deliver_payloads && req.payload.is_some() {
            return Err(PubsubError::ItemForbidden);
        }
        if c.deliver_payloads && req.payload.is_none() {
            return Err(PubsubError::PayloadRequired);
        }
        if let Some(p) = &req.payload {
            if p.to_bytes().len() > self.profile.max_payload_bytes {
                return Err(PubsubError::PayloadTooBig);
            }
        }
        match &req.item_id {
            Some(id) if !id.is_empty() => {
                if id.len() > MAX_ITEM_ID {
                    return Err(PubsubError::BadRequest("item id too long"));
                }
                Ok(id.clone())
            }
            _ => Ok(random_id()),
        }
    }

    /// §7.2: retracts an item; notifies when `notify` asks for it (or, without the attribute,
    /// when the node's `notify_retract` does).
    pub async fn retract(
        &self,
        svc: &BareJid,
        actor: &Jid,
        node: Option<&str>,
        item_id: Option<&str>,
        notify: Option<bool>,
    ) -> Result<()> {
        let node = node.ok_or(PubsubError::NodeIdRequired)?;
        let mut n = self.locked(svc, node).await?;
        let id = item_id
            .filter(|i| !i.is_empty())
            .ok_or(PubsubError::ItemRequired)?;
        let who = actor.to_bare();
        match self.affiliation(svc, &n, &who) {
            Affiliation::Owner | Affiliation::Publisher => {}
            Affiliation::PublishOnly => {
                // Own items only.
                let items = self
                    .store
                    .items_by_id(svc.as_str(), node, &[id.to_string()], usize::MAX)
                    .await?
                    .items;
                match items.first() {
                    Some(i) if Jid::parse(&i.publisher).is_ok_and(|p| p.to_bare() == who) => {}
                    Some(_) => return Err(PubsubError::Forbidden),
                    None => return Err(PubsubError::ItemNotFound),
                }
            }
            _ => return Err(PubsubError::Forbidden),
        }
        if !n.config.persist_items {
            return Err(PubsubError::NotPersistent);
        }
        if !self.store.retract(svc.as_str(), node, id).await? {
            return Err(PubsubError::ItemNotFound);
        }
        n.item_count = n.item_count.saturating_sub(1);
        if matches!(&n.last_item, LastItem::Some(i) if i.id == id) {
            n.last_item = LastItem::Unknown;
        }
        self.tell_items(svc, &n);
        n.tell_watchers(|| NodeEvent::Retract(id.to_string()));
        if notify.unwrap_or(n.config.notify_retract) && n.config.deliver_notifications {
            let ev = event(
                Element::new("items", ns::EVENT)
                    .with_attr("node", node)
                    .with_child(Element::new("retract", ns::EVENT).with_attr("id", id)),
            );
            self.notify(svc, &mut n, EventKind::Retract, ev).await;
        }
        Ok(())
    }

    // ---- owner use cases (§8) ------------------------------------------------------------------

    /// Inserts a new node, stored first.
    async fn create_inner(
        &self,
        svc: &BareJid,
        owner: &BareJid,
        name: &str,
        config: NodeConfig,
    ) -> Result<NodeCell> {
        let s = self.service(svc).await?;
        let mut nodes = s.nodes.write().await;
        if nodes.contains_key(name) {
            return Err(PubsubError::NodeExists);
        }
        if nodes.len() >= self.profile.max_nodes {
            return Err(PubsubError::ResourceConstraint);
        }
        self.store
            .create_node(svc.as_str(), name, &config, owner)
            .await?;
        let mut affiliations = HashMap::new();
        affiliations.insert(owner.clone(), Affiliation::Owner);
        let cell = Arc::new(Mutex::new(Node {
            name: name.to_string(),
            config,
            created_at: now_unix(),
            affiliations,
            subs: Vec::new(),
            item_count: 0,
            next_seq: 1,
            last_item: LastItem::None,
            deleted: false,
            cache: None,
            watchers: None,
        }));
        nodes.insert(name.to_string(), cell.clone());
        self.tell_peers(svc, Some(name), NodeChange::State);
        Ok(cell)
    }

    /// §8.1: creates a node (instant when `node` is `None`), with an optional configuration
    /// form (§8.1.3); returns its NodeID.
    pub async fn create(
        &self,
        svc: &BareJid,
        actor: &Jid,
        node: Option<&str>,
        config: Option<&Form>,
    ) -> Result<String> {
        let owner = actor.to_bare();
        if !self.may_create(svc, &owner) {
            return Err(PubsubError::Forbidden);
        }
        let name = match node {
            Some(n) if !n.is_empty() => {
                check_node_id(n)?;
                n.to_string()
            }
            _ if self.is_pep() => return Err(PubsubError::InstantNotSupported),
            _ => random_id(),
        };
        let mut c = self.profile.defaults.clone();
        if let Some(f) = config {
            if f.kind != "cancel" {
                c.apply(f)?;
            }
        }
        let s = self.service(svc).await?;
        let _one_at_a_time = s.creating.lock().await;
        if !self.is_pep()
            && self.nodes_owned_by(&s, &owner).await >= self.profile.max_nodes_per_owner
        {
            return Err(PubsubError::MaxNodesExceeded);
        }
        self.create_inner(svc, &owner, &name, c).await?;
        Ok(name)
    }

    /// How many nodes of `s` name `who` as an owner. Counted when a node is created, which
    /// is rare, rather than kept in step with every affiliation change and cluster reload.
    async fn nodes_owned_by(&self, s: &Service, who: &BareJid) -> usize {
        let cells: Vec<NodeCell> = s.nodes.read().await.values().cloned().collect();
        let mut owned = 0;
        for cell in cells {
            let n = cell.lock().await;
            if !n.deleted && n.affiliations.get(who) == Some(&Affiliation::Owner) {
                owned += 1;
            }
        }
        owned
    }

    /// §8.2.1: the configuration of a node, for its owner.
    pub async fn configuration(
        &self,
        svc: &BareJid,
        actor: &Jid,
        node: Option<&str>,
    ) -> Result<NodeConfig> {
        let (_, n) = self.owned(svc, actor, node).await?;
        Ok(n.config.clone())
    }

    /// §8.2.5: applies a submitted configuration form (a `cancel` form changes nothing).
    pub async fn configure(
        &self,
        svc: &BareJid,
        actor: &Jid,
        node: Option<&str>,
        form: &Form,
    ) -> Result<()> {
        let (node, mut n) = self.owned(svc, actor, node).await?;
        if form.kind == "cancel" {
            return Ok(());
        }
        let mut next = n.config.clone();
        next.apply(form)?;
        if next == n.config {
            return Ok(());
        }
        self.store.set_config(svc.as_str(), node, &next).await?;
        let before = std::mem::replace(&mut n.config, next);
        self.changed(svc, &mut n);
        // Fewer items kept, or none: drop the excess now.
        let keep = if n.config.persist_items {
            n.config.max_items.effective(self.limit())
        } else {
            0
        };
        if n.item_count > keep {
            if keep == 0 {
                self.store.purge(svc.as_str(), node).await?;
            } else {
                self.store
                    .trim(svc.as_str(), node, n.item_count, keep)
                    .await?;
            }
            n.item_count = keep;
            if keep == 0 {
                n.last_item = LastItem::None;
            }
        }
        // A stricter access model ends the subscriptions it no longer admits.
        if before.access_model != n.config.access_model
            || before.roster_groups_allowed != n.config.roster_groups_allowed
        {
            self.prune_subscriptions(svc, &mut n).await?;
        }
        if n.config.notify_config && n.config.deliver_notifications {
            let mut conf = Element::new("configuration", ns::EVENT).with_attr("node", node);
            if n.config.deliver_payloads {
                conf.push_child(n.config.to_form("result").to_element());
            }
            self.notify(svc, &mut n, EventKind::Configuration, event(conf))
                .await;
        }
        Ok(())
    }

    async fn prune_subscriptions(&self, svc: &BareJid, n: &mut Node) -> Result<()> {
        let mut gone = Vec::new();
        let mut checked: HashMap<BareJid, bool> = HashMap::new();
        for s in &n.subs {
            let who = s.jid.to_bare();
            let ok = match checked.get(&who) {
                Some(ok) => *ok,
                None => {
                    let ok = match n.config.access_model {
                        AccessModel::Authorize => true,
                        _ => self.check_access(svc, n, &who, false).await.is_ok(),
                    };
                    checked.insert(who, ok);
                    ok
                }
            };
            if !ok {
                gone.push(s.subid.clone());
            }
        }
        self.revoke_subscriptions(svc, n, &gone).await
    }

    /// Removes the subscriptions `gone` (SubIDs) that the service itself ends — access lost,
    /// the entity outcast — and tells each subscriber (§12.5: "the service SHOULD send a
    /// notification … `subscription='none'`").
    async fn revoke_subscriptions(
        &self,
        svc: &BareJid,
        n: &mut Node,
        gone: &[String],
    ) -> Result<()> {
        let told: Vec<Jid> = n
            .subs
            .iter()
            .filter(|s| gone.contains(&s.subid) && s.state == SubState::Subscribed)
            .map(|s| s.jid.clone())
            .collect();
        self.remove_subscriptions(svc, n, gone).await?;
        for jid in told {
            let ev = subscription_event(&n.name, &jid, "none");
            self.notify_one(svc, n, &ev, jid.as_str()).await;
        }
        Ok(())
    }

    /// XEP-0163 §8.1, XEP-0060 §12.5: `svc`'s roster changed about `who` (its presence
    /// subscription or its groups): on each node whose access model follows the roster and
    /// no longer admits `who`, its subscriptions are cancelled. Nodes are checked one at a
    /// time; a store failure is logged and leaves that node as it was.
    pub async fn access_changed(&self, svc: &BareJid, who: &BareJid) {
        let Ok(cells) = self.cells(svc, None).await else {
            return;
        };
        for c in cells {
            let Ok(mut n) = Self::lock(c).await else {
                continue;
            };
            let gone: Vec<String> = n
                .subs
                .iter()
                .filter(|s| s.jid.bare_str() == who.as_str())
                .map(|s| s.subid.clone())
                .collect();
            if gone.is_empty()
                || !matches!(
                    n.config.access_model,
                    AccessModel::Presence | AccessModel::Roster
                )
                || self.check_access(svc, &n, who, false).await.is_ok()
            {
                continue;
            }
            if let Err(e) = self.revoke_subscriptions(svc, &mut n, &gone).await {
                tracing::error!(service = %svc, node = %n.name, error = %e, "cancelling subscriptions after a roster change failed");
            }
        }
    }

    /// Applies `change` to the subscription `sub` of `node`, in the store first.
    async fn change_subscription(
        &self,
        svc: &BareJid,
        node: &str,
        sub: &mut Subscription,
        change: impl FnOnce(&mut Subscription),
    ) -> Result<()> {
        let mut next = sub.clone();
        change(&mut next);
        self.store
            .set_subscription(svc.as_str(), node, &next)
            .await?;
        *sub = next;
        Ok(())
    }

    /// Removes the subscriptions `gone` (SubIDs) of a node, from the store first.
    async fn remove_subscriptions(
        &self,
        svc: &BareJid,
        n: &mut Node,
        gone: &[String],
    ) -> Result<()> {
        for id in gone {
            self.store
                .remove_subscription(svc.as_str(), &n.name, id)
                .await?;
        }
        n.subs.retain(|s| !gone.contains(&s.subid));
        self.changed(svc, n);
        Ok(())
    }

    /// §8.3: the default configuration of new nodes.
    pub fn default_config(&self) -> NodeConfig {
        self.profile.defaults.clone()
    }

    /// §8.4: deletes a node, optionally naming a replacement (`redirect` URI).
    pub async fn delete(
        &self,
        svc: &BareJid,
        actor: &Jid,
        node: Option<&str>,
        redirect: Option<&str>,
    ) -> Result<()> {
        let node = node.ok_or(PubsubError::NodeIdRequired)?;
        let s = self.service(svc).await?;
        let mut nodes = s.nodes.write().await;
        let cell = nodes.get(node).cloned().ok_or(PubsubError::NodeNotFound)?;
        let mut n = Self::lock(cell).await?;
        self.require_owner(svc, &n, actor)?;
        self.store.delete_node(svc.as_str(), node).await?;
        nodes.remove(node);
        drop(nodes);
        n.deleted = true;
        n.tell_watchers(|| NodeEvent::Delete);
        // Dropping the sender ends every watcher's stream.
        n.watchers = None;
        if n.config.notify_delete && n.config.deliver_notifications {
            let mut d = Element::new("delete", ns::EVENT).with_attr("node", node);
            if let Some(uri) = redirect {
                d.push_child(Element::new("redirect", ns::EVENT).with_attr("uri", uri));
            }
            self.notify(svc, &mut n, EventKind::Delete, event(d)).await;
        }
        n.subs.clear();
        self.changed(svc, &mut n);
        Ok(())
    }

    /// §8.5: deletes every item of a node.
    pub async fn purge(&self, svc: &BareJid, actor: &Jid, node: Option<&str>) -> Result<()> {
        let (node, mut n) = self.owned(svc, actor, node).await?;
        if !n.config.persist_items {
            return Err(PubsubError::NotPersistent);
        }
        self.store.purge(svc.as_str(), node).await?;
        n.item_count = 0;
        n.last_item = LastItem::None;
        self.tell_items(svc, &n);
        n.tell_watchers(|| NodeEvent::Purge);
        if n.config.notify_retract && n.config.deliver_notifications {
            let ev = event(Element::new("purge", ns::EVENT).with_attr("node", node));
            self.notify(svc, &mut n, EventKind::Purge, ev).await;
        }
        Ok(())
    }

    /// §8.8.1: every subscription of a node, for its owner.
    pub async fn node_subscriptions(
        &self,
        svc: &BareJid,
        actor: &Jid,
        node: Option<&str>,
    ) -> Result<Vec<SubscriptionInfo>> {
        let (_, n) = self.owned(svc, actor, node).await?;
        Ok(n.subs
            .iter()
            .map(|s| SubscriptionInfo::of(&n.name, s))
            .collect())
    }

    /// §8.8.2: an owner changes subscriptions: approves, creates or removes them. All
    /// changes are checked before any is made.
    pub async fn set_node_subscriptions(
        &self,
        svc: &BareJid,
        actor: &Jid,
        node: Option<&str>,
        changes: &[SubscriptionChange],
    ) -> Result<()> {
        let (node, mut n) = self.owned(svc, actor, node).await?;
        for c in changes {
            if let Some(id) = &c.subid {
                if !n.subs_of(&c.jid).any(|s| &s.subid == id) {
                    return Err(PubsubError::InvalidSubid);
                }
            }
            if self.affiliation(svc, &n, &c.jid.to_bare()) == Affiliation::Outcast
                && c.state.is_some()
            {
                return Err(PubsubError::NotAcceptable("the entity is an outcast"));
            }
        }
        for c in changes {
            let matching: Vec<String> = n
                .subs_of(&c.jid)
                .filter(|s| c.subid.as_ref().is_none_or(|id| &s.subid == id))
                .map(|s| s.subid.clone())
                .collect();
            match c.state {
                None => self.remove_subscriptions(svc, &mut n, &matching).await?,
                Some(state) => {
                    if matching.is_empty() {
                        let sub = Subscription {
                            subid: random_id(),
                            jid: c.jid.clone(),
                            state,
                            options: SubOptions::default(),
                        };
                        self.store
                            .set_subscription(svc.as_str(), node, &sub)
                            .await?;
                        n.subs.push(sub);
                        self.changed(svc, &mut n);
                    } else {
                        for s in n.subs.iter_mut().filter(|s| matching.contains(&s.subid)) {
                            self.change_subscription(svc, node, s, |s| s.state = state)
                                .await?;
                        }
                        self.changed(svc, &mut n);
                    }
                }
            }
            // §8.8.4: the entity is told of its new state.
            let state_str = c.state.map_or("none", SubState::as_str);
            let ev = subscription_event(node, &c.jid, state_str);
            self.notify_one(svc, &n, &ev, c.jid.as_str()).await;
        }
        Ok(())
    }

    /// §8.9.1: every affiliation of a node, for its owner.
    pub async fn node_affiliations(
        &self,
        svc: &BareJid,
        actor: &Jid,
        node: Option<&str>,
    ) -> Result<Vec<(BareJid, Affiliation)>> {
        let (_, n) = self.owned(svc, actor, node).await?;
        let mut v: Vec<(BareJid, Affiliation)> = n
            .affiliations
            .iter()
            .map(|(j, a)| (j.clone(), *a))
            .collect();
        if self.is_pep() && !n.affiliations.contains_key(svc) {
            v.push((svc.clone(), Affiliation::Owner));
        }
        v.sort();
        Ok(v)
    }

    /// §8.9.2: an owner changes affiliations (`none` removes). The node keeps at least one
    /// owner (§8.9.2.4); outcasts lose their subscriptions.
    pub async fn set_node_affiliations(
        &self,
        svc: &BareJid,
        actor: &Jid,
        node: Option<&str>,
        changes: &[(BareJid, Affiliation)],
    ) -> Result<()> {
        let (node, mut n) = self.owned(svc, actor, node).await?;
        let mut named = HashSet::new();
        if !changes.iter().all(|(jid, _)| named.insert(jid)) {
            // §8.9.2.4: one element per entity.
            return Err(PubsubError::BadRequest("an entity named twice"));
        }
        let mut after = n.affiliations.clone();
        for (jid, a) in changes {
            if self.is_pep() && jid == svc {
                return Err(PubsubError::NotAcceptable("the account owns its PEP nodes"));
            }
            if *a == Affiliation::None {
                after.remove(jid);
            } else {
                after.insert(jid.clone(), *a);
            }
        }
        if !self.is_pep() && !after.values().any(|a| *a == Affiliation::Owner) {
            return Err(PubsubError::NotAcceptable("a node needs an owner"));
        }
        for (jid, a) in changes {
            self.store
                .set_affiliation(svc.as_str(), node, jid, *a)
                .await?;
        }
        n.affiliations = after;
        self.changed(svc, &mut n);
        let outcasts: HashSet<String> = changes
            .iter()
            .filter(|(_, a)| *a == Affiliation::Outcast)
            .map(|(j, _)| j.as_str().to_string())
            .collect();
        if !outcasts.is_empty() {
            let gone: Vec<String> = n
                .subs
                .iter()
                .filter(|s| outcasts.contains(s.jid.bare_str()))
                .map(|s| s.subid.clone())
                .collect();
            self.revoke_subscriptions(svc, &mut n, &gone).await?;
        }
        // A changed affiliation can close a whitelist: re-check.
        if n.config.access_model == AccessModel::Whitelist {
            self.prune_subscriptions(svc, &mut n).await?;
        }
        Ok(())
    }

    // ---- PEP: last items on presence (XEP-0163 §4.3.2) -----------------------------------------

    /// The last items of the nodes of `svc` that send them on presence and that `contact`
    /// may see and wants (`wants(node)`: its `+notify` interest), as messages to `contact`.
    pub async fn last_items_for(
        &self,
        svc: &BareJid,
        contact: &Jid,
        wants: &(dyn Fn(&str) -> bool + Send + Sync),
    ) -> Vec<Stanza> {
        let Ok(cells) = self.cells(svc, None).await else {
            return Vec::new();
        };
        let who = contact.to_bare();
        let mut out = Vec::new();
        for c in cells {
            let Ok(mut n) = Self::lock(c).await else {
                continue;
            };
            if n.config.send_last_published_item != SendLast::OnSubAndPresence
                || !wants(&n.name)
                || !self.may_see(svc, &n, &who).await
            {
                continue;
            }
            if let Ok(Some(item)) = self.last_item(svc, &mut n).await {
                if let Some(m) = self.last_item_message(svc, &n, &item, contact) {
                    out.push(m);
                }
            }
        }
        out
    }

    // ---- watchers (the HTTP face) ---------------------------------------------------------------

    /// Watches a node that `who` (`None`: anonymous, `open` nodes only) may read: every
    /// change committed after this call, in order ([`NodeEvent`]). A receiver that falls
    /// [`WATCH_CAPACITY`] events behind gets `Lagged` and should replay from the store.
    pub async fn watch(
        &self,
        svc: &BareJid,
        who: Option<&BareJid>,
        node: &str,
    ) -> Result<broadcast::Receiver<NodeEvent>> {
        let mut n = self.locked(svc, node).await?;
        self.reader_access(svc, &n, who).await?;
        Ok(match &n.watchers {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = broadcast::channel(WATCH_CAPACITY);
                n.watchers = Some(tx);
                rx
            }
        })
    }

    /// Deletes every node of a service (its account was deleted), from the store and memory.
    pub async fn delete_service(&self, svc: &BareJid) {
        if let Ok(s) = self.service(svc).await {
            let mut nodes = s.nodes.write().await;
            for cell in nodes.values() {
                let mut n = cell.lock().await;
                n.deleted = true;
            }
            nodes.clear();
        }
        self.services.remove(svc);
        if let Err(e) = self.store.delete_service(svc.as_str()).await {
            tracing::error!(service = %svc, error = %e, "deleting the pubsub nodes of a service failed");
        }
        self.tell_peers(svc, None, NodeChange::State);
    }
}
