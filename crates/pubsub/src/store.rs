//! Persistence, injected into the engine (design.md point 9): the [`NodeStore`] trait, the
//! SQL implementation over `rookery-store` ([`SqlStore`], SQLite or PostgreSQL) and an
//! in-memory one for tests and benchmarks ([`MemoryStore`]).
//!
//! The engine keeps node metadata (configuration, affiliations, subscriptions) in memory once
//! a service is loaded and writes every change through; items live in the store only, with
//! the last one cached. Every write returns once committed.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Mutex;

use async_trait::async_trait;
use rookery_jid::{BareJid, Jid};
pub use rookery_store::page::PageLimit;
pub(crate) use rookery_store::pubsub::{counted_bytes, within_budget};
pub use rookery_store::pubsub::{ById, Scan};
use rookery_store::pubsub::{ItemRow, SubscriptionRow};
use rookery_store::Store;

use crate::config::NodeConfig;
use crate::error::PubsubError;
use crate::model::{Affiliation, Item, SubOptions, SubState, Subscription};

/// A node as loaded from the store.
#[derive(Debug, Clone)]
pub struct StoredNode {
    /// The NodeID.
    pub name: String,
    /// Its configuration.
    pub config: NodeConfig,
    /// Creation time, seconds since the Unix epoch.
    pub created_at: i64,
    /// Affiliations other than `none`.
    pub affiliations: Vec<(BareJid, Affiliation)>,
    /// Subscriptions.
    pub subscriptions: Vec<Subscription>,
    /// Number of stored items.
    pub item_count: u64,
    /// Highest item sequence number (0 without items).
    pub max_seq: i64,
}

/// Result of store operations; failures become [`PubsubError::Storage`] (the cause is
/// logged where it happens).
pub type StoreResult<T> = Result<T, PubsubError>;

/// Where the engine keeps nodes and items.
#[async_trait]
pub trait NodeStore: Send + Sync + 'static {
    /// Every node of `service`; stored configurations are read over `defaults`.
    async fn load(&self, service: &str, defaults: &NodeConfig) -> StoreResult<Vec<StoredNode>>;
    /// Creates a node with `owner` as owner; [`PubsubError::NodeExists`] if it exists.
    async fn create_node(
        &self,
        service: &str,
        node: &str,
        config: &NodeConfig,
        owner: &BareJid,
    ) -> StoreResult<()>;
    /// Replaces a node's configuration.
    async fn set_config(&self, service: &str, node: &str, config: &NodeConfig) -> StoreResult<()>;
    /// Deletes a node with everything on it.
    async fn delete_node(&self, service: &str, node: &str) -> StoreResult<()>;
    /// Sets an affiliation; [`Affiliation::None`] removes it.
    async fn set_affiliation(
        &self,
        service: &str,
        node: &str,
        jid: &BareJid,
        affiliation: Affiliation,
    ) -> StoreResult<()>;
    /// Creates or replaces a subscription (by SubID).
    async fn set_subscription(
        &self,
        service: &str,
        node: &str,
        sub: &Subscription,
    ) -> StoreResult<()>;
    /// Removes a subscription.
    async fn remove_subscription(&self, service: &str, node: &str, subid: &str) -> StoreResult<()>;
    /// Stores an item, trimming the oldest beyond `max_items`; returns whether an item with
    /// that id was replaced. `count_before` is the node's item count before the call. With
    /// `max_bytes`, [`PubsubError::ResourceConstraint`] (and nothing stored) if the payloads
    /// of the service's items, each counted as at least
    /// [`rookery_store::pubsub::MIN_ITEM_BYTES`], would hold more than that, and more than
    /// before (what the item replaces and what is trimmed count as freed).
    async fn publish(
        &self,
        service: &str,
        node: &str,
        item: &Item,
        max_items: Option<u64>,
        count_before: u64,
        max_bytes: Option<u64>,
    ) -> StoreResult<bool>;
    /// What the items of a service count for against a byte budget (see `publish`).
    async fn stored_bytes(&self, service: &str) -> StoreResult<u64>;
    /// Deletes the oldest items so that at most `keep` of `count` remain.
    async fn trim(&self, service: &str, node: &str, count: u64, keep: u64) -> StoreResult<u64>;
    /// Deletes one item; `false` if it did not exist.
    async fn retract(&self, service: &str, node: &str, id: &str) -> StoreResult<bool>;
    /// Deletes every item of a node.
    async fn purge(&self, service: &str, node: &str) -> StoreResult<()>;
    /// A page of items in the order of `scan`, within `limit`: at most `limit.max`, and none
    /// after the one whose payload brings the page to `limit.max_bytes` (so at least one).
    async fn items_page(
        &self,
        service: &str,
        node: &str,
        scan: Scan,
        limit: PageLimit,
    ) -> StoreResult<Vec<Item>>;
    /// The items with these ids (those that exist), newest first, as many as fit
    /// `max_bytes` of payload (taken in the order of `ids`), and whether none was left out.
    async fn items_by_id(
        &self,
        service: &str,
        node: &str,
        ids: &[String],
        max_bytes: usize,
    ) -> StoreResult<ById<Item>>;
    /// The sequence number of the item `id`, if there is one.
    async fn item_seq(&self, service: &str, node: &str, id: &str) -> StoreResult<Option<i64>>;
    /// How many items are newer than the sequence number `seq`.
    async fn count_newer(&self, service: &str, node: &str, seq: i64) -> StoreResult<u64>;
    /// The ids of the newest `max` items, newest first.
    async fn item_ids(&self, service: &str, node: &str, max: u64) -> StoreResult<Vec<String>>;
    /// Deletes every node of a service.
    async fn delete_service(&self, service: &str) -> StoreResult<()>;
}

// ---- SQL -----------------------------------------------------------------------------------

/// The store of the server: `rookery-store`'s pubsub tables (SQLite or PostgreSQL).
#[derive(Debug, Clone)]
pub struct SqlStore {
    store: Store,
}

impl SqlStore {
    /// Wraps the server's store.
    pub fn new(store: Store) -> SqlStore {
        SqlStore { store }
    }
}

fn db(e: rookery_store::StoreError) -> PubsubError {
    tracing::error!(error = %e, "pubsub store failure");
    PubsubError::Storage
}

fn item_from_row(r: ItemRow) -> Item {
    let payload = r.payload.as_deref().and_then(|p| {
        let el = crate::xml::parse(p);
        if el.is_none() {
            tracing::warn!(item = %r.id, "stored pubsub payload does not parse; dropped");
        }
        el
    });
    Item {
        id: r.id,
        publisher: r.publisher,
        payload,
        seq: r.seq,
        updated_at: r.updated_at,
    }
}

#[async_trait]
impl NodeStore for SqlStore {
    async fn load(&self, service: &str, defaults: &NodeConfig) -> StoreResult<Vec<StoredNode>> {
        let ps = self.store.pubsub();
        let nodes = ps.nodes(service).await.map_err(db)?;
        let affs = ps.affiliations(service).await.map_err(db)?;
        let subs = ps.subscriptions(service).await.map_err(db)?;
        let stats: HashMap<String, rookery_store::pubsub::ItemStats> = ps
            .item_stats(service)
            .await
            .map_err(db)?
            .into_iter()
            .collect();
        let mut out: Vec<StoredNode> = nodes
            .into_iter()
            .map(|n| {
                let config = NodeConfig::from_stored(defaults, &n.config).unwrap_or_else(|| {
                    tracing::warn!(service, node = %n.node, "stored node config unreadable; defaults used");
                    defaults.clone()
                });
                let st = stats.get(&n.node);
                StoredNode {
                    config,
                    created_at: n.created_at,
                    affiliations: Vec::new(),
                    subscriptions: Vec::new(),
                    item_count: st.map_or(0, |s| s.count),
                    max_seq: st.map_or(0, |s| s.max_seq),
                    name: n.node,
                }
            })
            .collect();
        let mut index: HashMap<String, usize> = HashMap::new();
        for (i, n) in out.iter().enumerate() {
            index.insert(n.name.clone(), i);
        }
        for a in affs {
            let (Some(&i), Ok(jid), Some(aff)) = (
                index.get(&a.node),
                BareJid::parse(&a.jid),
                Affiliation::parse(&a.affiliation),
            ) else {
                continue;
            };
            if let Some(n) = out.get_mut(i) {
                n.affiliations.push((jid, aff));
            }
        }
        for s in subs {
            let (Some(&i), Ok(jid), Some(state)) = (
                index.get(&s.node),
                Jid::parse(&s.jid),
                SubState::parse(&s.state),
            ) else {
                continue;
            };
            if let Some(n) = out.get_mut(i) {
                n.subscriptions.push(Subscription {
                    subid: s.subid,
                    jid,
                    state,
                    options: SubOptions::from_stored(&s.options),
                });
            }
        }
        Ok(out)
    }

    async fn create_node(
        &self,
        service: &str,
        node: &str,
        config: &NodeConfig,
        owner: &BareJid,
    ) -> StoreResult<()> {
        match self
            .store
            .pubsub()
            .create_node(service, node, &config.to_stored(), owner.as_str())
            .await
        {
            Ok(()) => Ok(()),
            Err(rookery_store::StoreError::Conflict) => Err(PubsubError::NodeExists),
            Err(e) => Err(db(e)),
        }
    }

    async fn set_config(&self, service: &str, node: &str, config: &NodeConfig) -> StoreResult<()> {
        self.store
            .pubsub()
            .set_config(service, node, &config.to_stored())
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn delete_node(&self, service: &str, node: &str) -> StoreResult<()> {
        self.store
            .pubsub()
            .delete_node(service, node)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn set_affiliation(
        &self,
        service: &str,
        node: &str,
        jid: &BareJid,
        affiliation: Affiliation,
    ) -> StoreResult<()> {
        let a = (affiliation != Affiliation::None).then(|| affiliation.as_str());
        self.store
            .pubsub()
            .set_affiliation(service, node, jid.as_str(), a)
            .await
            .map_err(db)
    }

    async fn set_subscription(
        &self,
        service: &str,
        node: &str,
        sub: &Subscription,
    ) -> StoreResult<()> {
        let row = SubscriptionRow {
            node: node.to_string(),
            subid: sub.subid.clone(),
            jid: sub.jid.as_str().to_string(),
            state: sub.state.as_str().to_string(),
            options: sub.options.to_stored(),
        };
        self.store
            .pubsub()
            .set_subscription(service, &row)
            .await
            .map_err(db)
    }

    async fn remove_subscription(&self, service: &str, node: &str, subid: &str) -> StoreResult<()> {
        self.store
            .pubsub()
            .remove_subscription(service, node, subid)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn publish(
        &self,
        service: &str,
        node: &str,
        item: &Item,
        max_items: Option<u64>,
        count_before: u64,
        max_bytes: Option<u64>,
    ) -> StoreResult<bool> {
        let row = ItemRow {
            id: item.id.clone(),
            seq: item.seq,
            publisher: item.publisher.clone(),
            payload: item.payload.as_ref().map(crate::xml::to_string),
            updated_at: item.updated_at,
        };
        match self
            .store
            .pubsub()
            .publish(service, node, &row, max_items, count_before, max_bytes)
            .await
        {
            Err(rookery_store::StoreError::OverBudget) => Err(PubsubError::ResourceConstraint),
            other => other.map_err(db),
        }
    }

    async fn stored_bytes(&self, service: &str) -> StoreResult<u64> {
        self.store.pubsub().stored_bytes(service).await.map_err(db)
    }

    async fn trim(&self, service: &str, node: &str, count: u64, keep: u64) -> StoreResult<u64> {
        self.store
            .pubsub()
            .trim(service, node, count, keep)
            .await
            .map_err(db)
    }

    async fn retract(&self, service: &str, node: &str, id: &str) -> StoreResult<bool> {
        self.store
            .pubsub()
            .retract(service, node, id)
            .await
            .map_err(db)
    }

    async fn purge(&self, service: &str, node: &str) -> StoreResult<()> {
        self.store.pubsub().purge(service, node).await.map_err(db)?;
        Ok(())
    }

    async fn items_page(
        &self,
        service: &str,
        node: &str,
        scan: Scan,
        limit: PageLimit,
    ) -> StoreResult<Vec<Item>> {
        let rows = self
            .store
            .pubsub()
            .items_page(service, node, scan, limit)
            .await
            .map_err(db)?;
        Ok(rows.into_iter().map(item_from_row).collect())
    }

    async fn items_by_id(
        &self,
        service: &str,
        node: &str,
        ids: &[String],
        max_bytes: usize,
    ) -> StoreResult<ById<Item>> {
        let rows = self
            .store
            .pubsub()
            .items_by_id(service, node, ids, max_bytes)
            .await
            .map_err(db)?;
        Ok(ById {
            items: rows.items.into_iter().map(item_from_row).collect(),
            complete: rows.complete,
        })
    }

    async fn item_seq(&self, service: &str, node: &str, id: &str) -> StoreResult<Option<i64>> {
        self.store
            .pubsub()
            .item_seq(service, node, id)
            .await
            .map_err(db)
    }

    async fn count_newer(&self, service: &str, node: &str, seq: i64) -> StoreResult<u64> {
        self.store
            .pubsub()
            .count_newer(service, node, seq)
            .await
            .map_err(db)
    }

    async fn item_ids(&self, service: &str, node: &str, max: u64) -> StoreResult<Vec<String>> {
        self.store
            .pubsub()
            .item_ids(service, node, max)
            .await
            .map_err(db)
    }

    async fn delete_service(&self, service: &str) -> StoreResult<()> {
        self.store
            .pubsub()
            .delete_service(service)
            .await
            .map_err(db)?;
        Ok(())
    }
}

// ---- memory --------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct MemNode {
    config: Option<NodeConfig>,
    created_at: i64,
    affiliations: BTreeMap<BareJid, Affiliation>,
    subscriptions: BTreeMap<String, Subscription>,
    items: BTreeMap<i64, Item>,
    by_id: HashMap<String, i64>,
}

/// A store in memory, for tests and benchmarks (nothing survives the process).
#[derive(Debug, Default)]
pub struct MemoryStore {
    nodes: Mutex<MemNodes>,
}

/// The nodes in memory by (service, node).
type MemNodes = HashMap<(String, String), MemNode>;

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> StoreResult<std::sync::MutexGuard<'_, MemNodes>> {
        self.nodes.lock().map_err(|_| PubsubError::Storage)
    }

    fn with<T>(
        &self,
        service: &str,
        node: &str,
        f: impl FnOnce(&mut MemNode) -> T,
    ) -> StoreResult<T> {
        let mut nodes = self.lock()?;
        let n = nodes
            .get_mut(&(service.to_string(), node.to_string()))
            .ok_or(PubsubError::NodeNotFound)?;
        Ok(f(n))
    }
}

impl MemNode {
    /// What publishing `item` frees of the budget: the item it replaces, and the oldest
    /// others beyond `max_items`.
    fn freed_by(&self, item: &Item, max_items: Option<u64>) -> u64 {
        let replaced = self.by_id.get(&item.id).and_then(|s| self.items.get(s));
        let count_after = self.items.len() + usize::from(replaced.is_none());
        let trimmed = max_items.map_or(0, |max| {
            count_after.saturating_sub(usize::try_from(max).unwrap_or(usize::MAX))
        });
        let oldest = self
            .items
            .values()
            .filter(|i| i.id != item.id)
            .take(trimmed);
        replaced.into_iter().chain(oldest).map(counted).sum()
    }

    /// Removes the item `id`; whether there was one.
    fn remove_item(&mut self, id: &str) -> bool {
        match self.by_id.remove(id) {
            Some(seq) => self.items.remove(&seq).is_some(),
            None => false,
        }
    }
}

/// The items of `items`, in order, that a page within `limit` holds (as the SQL store fills
/// one: see [`NodeStore::items_page`]).
fn fill<'a>(items: impl Iterator<Item = &'a Item>, limit: PageLimit) -> Vec<Item> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for i in items {
        if !limit.admits(out.len(), bytes) {
            break;
        }
        bytes = bytes.saturating_add(payload_len(i));
        out.push(i.clone());
    }
    out
}

/// The payload bytes of an item, as stored.
fn payload_len(i: &Item) -> usize {
    i.payload
        .as_ref()
        .map_or(0, |p| crate::xml::to_string(p).len())
}

/// What an item counts for against a byte budget, as the SQL store counts it.
fn counted(i: &Item) -> u64 {
    counted_bytes(payload_len(i))
}

/// What the items of `service` count for against its byte budget.
fn service_bytes(nodes: &MemNodes, service: &str) -> u64 {
    nodes
        .iter()
        .filter(|((s, _), _)| s == service)
        .flat_map(|(_, n)| n.items.values())
        .map(counted)
        .sum()
}

fn trim_oldest(n: &mut MemNode, keep: u64) -> u64 {
    let mut removed = 0;
    while n.items.len() as u64 > keep {
        let Some((_, item)) = n.items.pop_first() else {
            break;
        };
        n.by_id.remove(&item.id);
        removed += 1;
    }
    removed
}

#[async_trait]
impl NodeStore for MemoryStore {
    async fn load(&self, service: &str, _defaults: &NodeConfig) -> StoreResult<Vec<StoredNode>> {
        let nodes = self.lock()?;
        let mut out: Vec<StoredNode> = nodes
            .iter()
            .filter(|((s, _), _)| s == service)
            .filter_map(|((_, name), n)| {
                Some(StoredNode {
                    name: name.clone(),
                    config: n.config.clone()?,
                    created_at: n.created_at,
                    affiliations: n
                        .affiliations
                        .iter()
                        .map(|(j, a)| (j.clone(), *a))
                        .collect(),
                    subscriptions: n.subscriptions.values().cloned().collect(),
                    item_count: n.items.len() as u64,
                    max_seq: n.items.keys().next_back().copied().unwrap_or(0),
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn create_node(
        &self,
        service: &str,
        node: &str,
        config: &NodeConfig,
        owner: &BareJid,
    ) -> StoreResult<()> {
        let mut nodes = self.lock()?;
        let key = (service.to_string(), node.to_string());
        if nodes.contains_key(&key) {
            return Err(PubsubError::NodeExists);
        }
        let mut n = MemNode {
            config: Some(config.clone()),
            created_at: rookery_proto::time::now_unix(),
            ..MemNode::default()
        };
        n.affiliations.insert(owner.clone(), Affiliation::Owner);
        nodes.insert(key, n);
        Ok(())
    }

    async fn set_config(&self, service: &str, node: &str, config: &NodeConfig) -> StoreResult<()> {
        self.with(service, node, |n| n.config = Some(config.clone()))
    }

    async fn delete_node(&self, service: &str, node: &str) -> StoreResult<()> {
        let mut nodes = self.lock()?;
        nodes.remove(&(service.to_string(), node.to_string()));
        Ok(())
    }

    async fn set_affiliation(
        &self,
        service: &str,
        node: &str,
        jid: &BareJid,
        affiliation: Affiliation,
    ) -> StoreResult<()> {
        self.with(service, node, |n| {
            if affiliation == Affiliation::None {
                n.affiliations.remove(jid);
            } else {
                n.affiliations.insert(jid.clone(), affiliation);
            }
        })
    }

    async fn set_subscription(
        &self,
        service: &str,
        node: &str,
        sub: &Subscription,
    ) -> StoreResult<()> {
        self.with(service, node, |n| {
            n.subscriptions.insert(sub.subid.clone(), sub.clone());
        })
    }

    async fn remove_subscription(&self, service: &str, node: &str, subid: &str) -> StoreResult<()> {
        self.with(service, node, |n| {
            n.subscriptions.remove(subid);
        })
    }

    async fn publish(
        &self,
        service: &str,
        node: &str,
        item: &Item,
        max_items: Option<u64>,
        _count_before: u64,
        max_bytes: Option<u64>,
    ) -> StoreResult<bool> {
        let mut nodes = self.lock()?;
        if let Some(budget) = max_bytes {
            let used = service_bytes(&nodes, service);
            let n = nodes
                .get(&(service.to_string(), node.to_string()))
                .ok_or(PubsubError::NodeNotFound)?;
            let after = used.saturating_sub(n.freed_by(item, max_items)) + counted(item);
            if !within_budget(used, after, budget) {
                return Err(PubsubError::ResourceConstraint);
            }
        }
        let n = nodes
            .get_mut(&(service.to_string(), node.to_string()))
            .ok_or(PubsubError::NodeNotFound)?;
        let replaced = n.remove_item(&item.id);
        n.items.insert(item.seq, item.clone());
        n.by_id.insert(item.id.clone(), item.seq);
        if let Some(max) = max_items {
            trim_oldest(n, max);
        }
        Ok(replaced)
    }

    async fn stored_bytes(&self, service: &str) -> StoreResult<u64> {
        Ok(service_bytes(&*self.lock()?, service))
    }

    async fn trim(&self, service: &str, node: &str, _count: u64, keep: u64) -> StoreResult<u64> {
        self.with(service, node, |n| trim_oldest(n, keep))
    }

    async fn retract(&self, service: &str, node: &str, id: &str) -> StoreResult<bool> {
        self.with(service, node, |n| n.remove_item(id))
    }

    async fn purge(&self, service: &str, node: &str) -> StoreResult<()> {
        self.with(service, node, |n| {
            n.items.clear();
            n.by_id.clear();
        })
    }

    async fn items_page(
        &self,
        service: &str,
        node: &str,
        scan: Scan,
        limit: PageLimit,
    ) -> StoreResult<Vec<Item>> {
        self.with(service, node, |n| {
            let items: Box<dyn Iterator<Item = &Item>> = match scan {
                Scan::NewestFirst { below } => Box::new(
                    n.items
                        .range(..below.unwrap_or(i64::MAX))
                        .rev()
                        .map(|(_, i)| i),
                ),
                Scan::OldestFirst { above } => Box::new(
                    n.items
                        .range((Bound::Excluded(above.unwrap_or(i64::MIN)), Bound::Unbounded))
                        .map(|(_, i)| i),
                ),
            };
            fill(items, limit)
        })
    }

    async fn items_by_id(
        &self,
        service: &str,
        node: &str,
        ids: &[String],
        max_bytes: usize,
    ) -> StoreResult<ById<Item>> {
        self.with(service, node, |n| {
            let mut seqs: Vec<i64> = Vec::new();
            for seq in ids.iter().filter_map(|id| n.by_id.get(id).copied()) {
                if !seqs.contains(&seq) {
                    seqs.push(seq);
                }
            }
            let limit = PageLimit {
                max: u64::MAX,
                max_bytes,
            };
            let mut items = fill(seqs.iter().filter_map(|s| n.items.get(s)), limit);
            let complete = items.len() == seqs.len();
            items.sort_by_key(|i| std::cmp::Reverse(i.seq));
            ById { items, complete }
        })
    }

    async fn item_seq(&self, service: &str, node: &str, id: &str) -> StoreResult<Option<i64>> {
        self.with(service, node, |n| n.by_id.get(id).copied())
    }

    async fn count_newer(&self, service: &str, node: &str, seq: i64) -> StoreResult<u64> {
        self.with(service, node, |n| {
            n.items
                .range((Bound::Excluded(seq), Bound::Unbounded))
                .count() as u64
        })
    }

    async fn item_ids(&self, service: &str, node: &str, max: u64) -> StoreResult<Vec<String>> {
        self.with(service, node, |n| {
            let take = usize::try_from(max).unwrap_or(usize::MAX);
            n.items
                .values()
                .rev()
                .take(take)
                .map(|i| i.id.clone())
                .collect()
        })
    }

    async fn delete_service(&self, service: &str) -> StoreResult<()> {
        let mut nodes = self.lock()?;
        nodes.retain(|(s, _), _| s != service);
        Ok(())
    }
}
