//! The state the IM modules share: per-session flags and a write-through cache of the roster
//! and block list of accounts that have sessions.
//!
//! The block list is cached apart from the roster: every message between local users checks
//! the block lists of both ends (XEP-0191 §3.5, §3.6), also for sessions that never fetched
//! their roster or sent presence, and an indexed SQL lookup per message cost more CPU than
//! the rest of routing. Loading a (possibly huge) roster just to answer that would be worse.
//!
//! # Ownership and order
//! - Changes to one account's roster, pending requests or block list happen under that
//!   account's lock (a striped `tokio::sync::Mutex`, see [`Im::lock`]) and are written to the
//!   store before the cache and before anyone is told (pushes, forwarded stanzas).
//! - The cache of an account is loaded on first need while it has sessions and dropped when its
//!   last session ends; both under the account's lock, so a cache never misses a change. In a
//!   cluster, sessions on other nodes count too: every message to such a session checks its
//!   account's block list on the sending node (a store query per message, most of a
//!   crossing's CPU, before it was cached); the other nodes' changes evict it
//!   ([`rookery_core::Event::AccountChanged`]) and so does the end of its last session
//!   anywhere ([`rookery_core::Event::AccountOffline`]).
//! - Readers (presence broadcast, delivery checks) take short `std::sync::RwLock` read locks and
//!   copy what they need out: no lock is held across an `.await`, and a large roster is never
//!   walked under a lock other sessions wait for. A roster get serializes the roster under a
//!   read lock (copying it out first would double it): only a change to that account waits,
//!   for a roster bounded by `[im.roster] max_bytes`.
//! - Per-session state is keyed by full JID in a sharded map; it is created at `Bound` and
//!   removed at `Closed` (which also fires when a session is replaced).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use dashmap::DashMap;
use rookery_core::{Core, SessionHandle};
use rookery_jid::{BareJid, Jid};
use rookery_proto::Stanza;
use rookery_store::rosters::{Request, RosterItem};
use rookery_store::{Store, StoreError};
use rookery_xml::{Element, CONTENT_NS};
use tokio::sync::{Mutex, MutexGuard};

use crate::caps::{CapsCache, RemoteCaps};
use crate::config::ImConfig;

/// Number of account lock stripes.
const LOCK_STRIPES: usize = 1024;

/// What the server keeps about one bound session.
#[derive(Debug, Default, Clone)]
pub struct SessionState {
    /// Requested the roster (RFC 6121 §2.1.6 "interested resource"): gets roster pushes and
    /// subscription requests.
    pub interested: bool,
    /// The last available presence it broadcast (`None`: unavailable, or no initial presence
    /// yet). `from` is the session's full JID, `to` absent.
    pub presence: Option<Stanza>,
    /// Entities it sent directed presence to while not subscribed to its presence (RFC 6121
    /// §4.6): they are owed an unavailable presence when it goes offline.
    pub directed: HashSet<Jid>,
    /// XEP-0280 carbons enabled.
    pub carbons: bool,
    /// Requested the block list (XEP-0191 §3.1): gets block/unblock pushes.
    pub blocklist_requested: bool,
    /// XEP-0115 capabilities it announced, as `node#ver` (see [`crate::caps`]).
    pub caps: Option<Arc<str>>,
}

/// A session's state as it crosses to another node of a cluster, where its client resumed
/// it (XEP-0198; [`SessionState::carry`]): the presence as our serialization, the JIDs as
/// text.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Carried {
    interested: bool,
    presence: Option<String>,
    directed: Vec<String>,
    carbons: bool,
    blocklist_requested: bool,
    caps: Option<String>,
}

impl SessionState {
    /// The state as text, for the node the session moves to.
    pub fn carry(&self) -> String {
        let carried = Carried {
            interested: self.interested,
            presence: self
                .presence
                .as_ref()
                .map(|p| String::from_utf8_lossy(&p.to_bytes()).into_owned()),
            directed: self.directed.iter().map(ToString::to_string).collect(),
            carbons: self.carbons,
            blocklist_requested: self.blocklist_requested,
            caps: self.caps.as_deref().map(str::to_string),
        };
        // Plain strings and flags: serializing cannot fail.
        serde_json::to_string(&carried).unwrap_or_default()
    }

    /// The state [`SessionState::carry`] wrote on another node; `None` when it does not read.
    pub fn carried(text: &str) -> Option<SessionState> {
        let c: Carried = serde_json::from_str(text).ok()?;
        let presence = match c.presence {
            Some(p) => Some(Stanza::from_serialized(p.as_bytes())?),
            None => None,
        };
        Some(SessionState {
            interested: c.interested,
            presence,
            directed: c
                .directed
                .iter()
                .filter_map(|j| Jid::parse(j).ok())
                .collect(),
            carbons: c.carbons,
            blocklist_requested: c.blocklist_requested,
            caps: c.caps.map(Arc::from),
        })
    }
}

/// A cached roster.
#[derive(Debug, Default)]
pub struct RosterCache {
    /// The roster version.
    pub ver: i64,
    /// Items by contact.
    pub items: HashMap<BareJid, RosterItem>,
    /// What the items hold, counted against `[im.roster] max_bytes` ([`roster_bytes`]):
    /// summed when the roster is loaded from the store, then kept with each change.
    pub bytes: usize,
    /// Contacts with a stored inbound subscription request (pending in).
    pub pending_in: HashSet<BareJid>,
}

/// The cached data of an account with sessions.
#[derive(Debug, Default)]
pub struct Account {
    /// Roster, versions and pending requests.
    pub roster: RwLock<RosterCache>,
}

/// What an account's roster has room for ([`Im::roster_room_locked`]).
#[derive(Debug, Clone, Copy)]
pub struct RosterRoom {
    /// Items it can take before `[im.roster] max_items`.
    items: usize,
    /// Bytes ([`roster_bytes`]) it can take before `[im.roster] max_bytes`.
    bytes: usize,
    /// One more stored inbound subscription request.
    pub requests: bool,
}

impl RosterRoom {
    /// Whether the roster can take `new` in place of `old` (`None`: `new` is a new item):
    /// one more item if it is new, and the bytes it adds. A change that adds nothing always
    /// fits — also to a roster past limits lowered since it grew —, so a full roster stays
    /// usable: items can be removed, renamed shorter, have their subscription change.
    pub fn fits(&self, old: Option<&RosterItem>, new: &RosterItem) -> bool {
        let added = roster_bytes(new).saturating_sub(old.map_or(0, roster_bytes));
        (old.is_some() || self.items > 0) && added <= self.bytes
    }
}

/// What a roster item counts against its roster's byte budget (`[im.roster] max_bytes`):
/// the bytes of its contact's JID, its name and its group names. That text is what differs
/// from item to item, and what the roster costs in memory while cached and on the wire at
/// each roster get grows with it (the rest of an item is a few flags, bounded by
/// `max_items`). The same on every store, and derived from what is stored, so nothing needs
/// migrating and a restart finds the same count.
pub fn roster_bytes(item: &RosterItem) -> usize {
    item.contact.len()
        + item.name.as_ref().map_or(0, String::len)
        + item.groups.iter().map(String::len).sum::<usize>()
}

/// An account's XEP-0191 block list: normalized JIDs (full, bare, domain or
/// domain/resource). Changed only under the account's lock, right after the store.
pub type BlockList = RwLock<HashSet<String>>;

/// The shared IM state; see the module docs.
pub struct Im {
    config: ImConfig,
    /// The store the IM data lives in, handed over by the wiring.
    store: Store,
    accounts: DashMap<BareJid, Arc<Account>>,
    locks: Box<[Mutex<()>]>,
    /// Never used in practice: the stripe index is always in range.
    fallback_lock: Mutex<()>,
    hasher: std::collections::hash_map::RandomState,
    /// Block lists of accounts with sessions (see the module docs).
    blocklists: DashMap<BareJid, Arc<BlockList>>,
    sessions: DashMap<Jid, SessionState>,
    next_id: AtomicU64,
    started: Instant,
    /// XEP-0115 verification-string cache.
    pub caps: CapsCache,
    /// XEP-0115 caps of available resources on other servers.
    pub remote_caps: RemoteCaps,
    /// Accounts whose offline messages are being delivered (one delivery at a time), each
    /// with the session that asked for one meanwhile (`offline::deliver`).
    pub(crate) offline_delivering: DashMap<BareJid, Option<SessionHandle>>,
    /// In a cluster: what the other nodes' sessions sent directed presence to on other
    /// servers (see [`crate::directed`]).
    pub(crate) peers_directed: crate::directed::Peers,
}

fn store_key(bare: &BareJid) -> Result<(&str, &str), StoreError> {
    match bare.local() {
        Some(l) => Ok((bare.domain(), l)),
        None => Err(StoreError::Corrupt(format!("{bare} is not an account"))),
    }
}

/// The entry of `bare` in `cache`, or `load`ed from the store and kept while the account has
/// sessions (see the module docs). The caller holds the account's lock.
async fn cached_or_load<T>(
    core: &Core,
    cache: &DashMap<BareJid, Arc<T>>,
    bare: &BareJid,
    load: impl Future<Output = Result<T, StoreError>>,
) -> Result<Arc<T>, StoreError> {
    if let Some(v) = cache.get(bare) {
        return Ok(v.value().clone());
    }
    let v = Arc::new(load.await?);
    // Sessions here or on another node of a cluster: the end of the last one evicts it (see
    // the module docs).
    if core.has_sessions(bare) {
        cache.insert(bare.clone(), v.clone());
    }
    Ok(v)
}

/// The roster and pending requests of `bare` from the store.
async fn load_account(store: &Store, bare: &BareJid) -> Result<Account, StoreError> {
    let (domain, user) = store_key(bare)?;
    let roster = store.rosters().load(domain, user).await?;
    let pending = store.rosters().pending_in_contacts(domain, user).await?;
    let mut cache = RosterCache {
        ver: roster.ver,
        items: HashMap::with_capacity(roster.items.len()),
        bytes: 0,
        pending_in: HashSet::new(),
    };
    for item in roster.items {
        match BareJid::parse(&item.contact) {
            Ok(j) => {
                cache.bytes += roster_bytes(&item);
                cache.items.insert(j, item);
            }
            Err(_) => tracing::warn!(contact = %item.contact, "unparsable roster contact"),
        }
    }
    for contact in pending {
        if let Ok(j) = BareJid::parse(&contact) {
            cache.pending_in.insert(j);
        }
    }
    Ok(Account {
        roster: RwLock::new(cache),
    })
}

impl Im {
    /// Fresh state.
    pub fn new(config: ImConfig, store: Store) -> Im {
        Im {
            config,
            store,
            accounts: DashMap::new(),
            locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            fallback_lock: Mutex::new(()),
            hasher: std::collections::hash_map::RandomState::new(),
            blocklists: DashMap::new(),
            sessions: DashMap::new(),
            next_id: AtomicU64::new(1),
            started: Instant::now(),
            caps: CapsCache::default(),
            remote_caps: RemoteCaps::default(),
            offline_delivering: DashMap::new(),
            peers_directed: crate::directed::Peers::default(),
        }
    }

    /// Settings.
    pub fn config(&self) -> &ImConfig {
        &self.config
    }

    /// The store the IM data lives in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// When the IM state was created (server start), for XEP-0012 server uptime.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// A fresh stanza id with `prefix`.
    pub fn next_id(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    // ---- per-account serialization and cache ---------------------------------------------

    /// Locks `bare`'s roster and block list for a change (striped: unrelated accounts may
    /// share a stripe, never deadlock as long as no one holds two guards).
    pub async fn lock(&self, bare: &BareJid) -> MutexGuard<'_, ()> {
        let h = self.hasher.hash_one(bare);
        let i = usize::try_from(h % LOCK_STRIPES as u64).unwrap_or(0);
        self.locks
            .get(i)
            .unwrap_or(&self.fallback_lock)
            .lock()
            .await
    }

    /// The cached data of `bare`, if loaded.
    pub fn cached(&self, bare: &BareJid) -> Option<Arc<Account>> {
        self.accounts.get(bare).map(|a| a.value().clone())
    }

    /// The data of `bare`: cached, or loaded from the store (and cached if the account has
    /// sessions). Takes the account's lock to load.
    pub async fn account(&self, core: &Core, bare: &BareJid) -> Result<Arc<Account>, StoreError> {
        if let Some(a) = self.cached(bare) {
            return Ok(a);
        }
        let _g = self.lock(bare).await;
        self.account_locked(core, bare).await
    }

    /// [`Im::account`] for a caller that holds the account's lock.
    pub async fn account_locked(
        &self,
        core: &Core,
        bare: &BareJid,
    ) -> Result<Arc<Account>, StoreError> {
        cached_or_load(core, &self.accounts, bare, load_account(&self.store, bare)).await
    }

    /// What `owner`'s roster has room for, and whether its stored inbound requests can take
    /// one more request: `[im.roster] max_items` bounds both, and `max_bytes` what the items
    /// hold, which a client (roster sets, subscriptions, pre-approvals) or another server
    /// (requests) could otherwise grow without end (RFC 6120 §13.12) — and every roster get
    /// sends whole. For a caller holding the account's lock.
    pub async fn roster_room_locked(
        &self,
        core: &Core,
        owner: &BareJid,
    ) -> Result<RosterRoom, StoreError> {
        let account = self.account_locked(core, owner).await?;
        let roster = read(&account.roster);
        let limits = &self.config.roster;
        Ok(RosterRoom {
            items: limits.max_items.saturating_sub(roster.items.len()),
            bytes: limits.max_bytes.saturating_sub(roster.bytes),
            requests: roster.pending_in.len() < limits.max_items,
        })
    }

    /// The cached block list of `bare`, if loaded.
    pub fn cached_blocklist(&self, bare: &BareJid) -> Option<Arc<BlockList>> {
        self.blocklists.get(bare).map(|l| l.value().clone())
    }

    /// The block list of `bare`: cached, or loaded from the store (and cached if the account
    /// has sessions). Takes the account's lock to load, so a load never races a change.
    pub async fn blocklist(
        &self,
        core: &Core,
        bare: &BareJid,
    ) -> Result<Arc<BlockList>, StoreError> {
        if let Some(l) = self.cached_blocklist(bare) {
            return Ok(l);
        }
        let _g = self.lock(bare).await;
        self.blocklist_locked(core, bare).await
    }

    /// [`Im::blocklist`] for a caller that holds the account's lock.
    pub async fn blocklist_locked(
        &self,
        core: &Core,
        bare: &BareJid,
    ) -> Result<Arc<BlockList>, StoreError> {
        cached_or_load(core, &self.blocklists, bare, async {
            let (domain, user) = store_key(bare)?;
            let items = self.store.blocking().list(domain, user).await?;
            Ok(RwLock::new(items.into_iter().collect::<HashSet<String>>()))
        })
        .await
    }

    /// Drops the caches of `bare` (roster and block list) if it has no session left, here or
    /// on another node of a cluster.
    pub async fn evict_if_offline(&self, core: &Core, bare: &BareJid) {
        let _g = self.lock(bare).await;
        if !core.has_sessions(bare) {
            self.accounts.remove(bare);
            self.blocklists.remove(bare);
        }
    }

    /// Drops the caches of `bare` whatever its sessions: another node of a cluster changed
    /// its data in the store, which the next read loads again.
    pub async fn evict(&self, bare: &BareJid) {
        let _g = self.lock(bare).await;
        self.accounts.remove(bare);
        self.blocklists.remove(bare);
    }

    // ---- roster reads and writes ---------------------------------------------------------

    /// One roster item of `owner` (cache or store).
    pub async fn roster_item(
        &self,
        owner: &BareJid,
        contact: &BareJid,
    ) -> Result<Option<RosterItem>, StoreError> {
        if let Some(a) = self.cached(owner) {
            return Ok(read(&a.roster).items.get(contact).cloned());
        }
        let (domain, user) = store_key(owner)?;
        self.store
            .rosters()
            .get(domain, user, contact.as_str())
            .await
    }

    /// Whether `owner` shares its presence with `contact` (a `from` or `both` subscription,
    /// RFC 6121 §3); a store that cannot be read says no.
    pub async fn shares_presence(&self, owner: &BareJid, contact: &BareJid) -> bool {
        match self.roster_item(owner, contact).await {
            Ok(item) => item.is_some_and(|i| i.subscription.has_from()),
            Err(e) => {
                tracing::error!(error = %e, "roster lookup failed");
                false
            }
        }
    }

    /// Whether `owner` has a stored inbound request from `contact` (cache or store).
    pub async fn has_pending_in(
        &self,
        owner: &BareJid,
        contact: &BareJid,
    ) -> Result<bool, StoreError> {
        if let Some(a) = self.cached(owner) {
            return Ok(read(&a.roster).pending_in.contains(contact));
        }
        let (domain, user) = store_key(owner)?;
        self.store
            .rosters()
            .has_pending_in(domain, user, contact.as_str())
            .await
    }

    /// Stores `item` in `owner`'s roster (caller holds the lock); returns it with its version.
    /// With [`Request::Forget`] it also forgets `contact`'s inbound request, in the same
    /// write (what answering the request changes).
    pub async fn roster_put(
        &self,
        core: &Core,
        owner: &BareJid,
        contact: &BareJid,
        mut item: RosterItem,
        request: Request,
    ) -> Result<RosterItem, StoreError> {
        let (domain, user) = store_key(owner)?;
        item.contact = contact.as_str().to_string();
        let ver = self
            .store
            .rosters()
            .put(domain, user, &item, request)
            .await?;
        core.account_changed(owner);
        item.ver = ver;
        if let Some(a) = self.cached(owner) {
            let mut r = write(&a.roster);
            r.ver = ver;
            let old = r.items.insert(contact.clone(), item.clone());
            r.bytes = (r.bytes + roster_bytes(&item))
                .saturating_sub(old.as_ref().map_or(0, roster_bytes));
            if request == Request::Forget {
                r.pending_in.remove(contact);
            }
        }
        Ok(item)
    }

    /// Removes `contact` from `owner`'s roster (caller holds the lock); the new version, or
    /// `None` if it was not there.
    pub async fn roster_remove(
        &self,
        core: &Core,
        owner: &BareJid,
        contact: &BareJid,
    ) -> Result<Option<i64>, StoreError> {
        let (domain, user) = store_key(owner)?;
        let ver = self
            .store
            .rosters()
            .remove(domain, user, contact.as_str())
            .await?;
        core.account_changed(owner);
        if let (Some(v), Some(a)) = (ver, self.cached(owner)) {
            let mut r = write(&a.roster);
            r.ver = v;
            if let Some(old) = r.items.remove(contact) {
                r.bytes = r.bytes.saturating_sub(roster_bytes(&old));
            }
        }
        Ok(ver)
    }

    /// Records (`Some(stanza)`) or forgets (`None`) the inbound request from `contact`
    /// (caller holds the lock). Returns whether one was stored before.
    pub async fn set_pending_in(
        &self,
        core: &Core,
        owner: &BareJid,
        contact: &BareJid,
        stanza: Option<&Stanza>,
    ) -> Result<bool, StoreError> {
        let (domain, user) = store_key(owner)?;
        let rosters = self.store.rosters();
        let had = match stanza {
            Some(s) => {
                let xml = String::from_utf8_lossy(&stored_request(s).to_bytes()).into_owned();
                let had = self.has_pending_in(owner, contact).await?;
                rosters
                    .set_pending_in(domain, user, contact.as_str(), &xml)
                    .await?;
                had
            }
            None => {
                rosters
                    .remove_pending_in(domain, user, contact.as_str())
                    .await?
            }
        };
        core.account_changed(owner);
        if let Some(a) = self.cached(owner) {
            let mut r = write(&a.roster);
            if stanza.is_some() {
                r.pending_in.insert(contact.clone());
            } else {
                r.pending_in.remove(contact);
            }
        }
        Ok(had)
    }

    // ---- sessions ------------------------------------------------------------------------

    /// Creates the state of a newly bound session.
    pub fn session_bound(&self, jid: &Jid) {
        self.sessions.insert(jid.clone(), SessionState::default());
    }

    /// Removes and returns the state of an ended session.
    pub fn session_closed(&self, jid: &Jid) -> Option<SessionState> {
        self.sessions.remove(jid).map(|(_, s)| s)
    }

    /// Reads a session's state.
    pub fn session<R>(&self, jid: &Jid, f: impl FnOnce(&SessionState) -> R) -> Option<R> {
        self.sessions.get(jid).map(|s| f(s.value()))
    }

    /// Changes a session's state (no-op for an unknown session).
    pub fn session_mut<R>(&self, jid: &Jid, f: impl FnOnce(&mut SessionState) -> R) -> Option<R> {
        self.sessions.get_mut(jid).map(|mut s| f(s.value_mut()))
    }

    /// The sessions of `bare` that requested the roster. A session on another node of a
    /// cluster has its state there: it gets the push (a client that never asked for the
    /// roster ignores one), since only its own node could tell.
    pub fn interested(&self, core: &Core, bare: &BareJid) -> Vec<SessionHandle> {
        self.sessions_where(core, bare, |s| s.interested, |_, _| true)
    }

    /// The available sessions of `bare` that requested the roster: where a subscription
    /// request goes (RFC 6121 §3.1.3). A session on another node of a cluster counts by the
    /// availability its node replicated (its interest is known only there; a client that
    /// never asked for the roster ignores the request), as in [`Im::interested`].
    pub fn interested_available(&self, core: &Core, bare: &BareJid) -> Vec<SessionHandle> {
        self.sessions_where(
            core,
            bare,
            |s| s.interested && s.presence.is_some(),
            replicated_available,
        )
    }

    /// The available sessions of `bare` with their last presence.
    pub fn available(&self, core: &Core, bare: &BareJid) -> Vec<(SessionHandle, Stanza)> {
        if !core.has_sessions(bare) {
            return Vec::new();
        }
        core.sessions_of(bare)
            .into_iter()
            .filter_map(|(h, _)| {
                let p = self.session(h.jid(), |s| s.presence.clone()).flatten()?;
                Some((h, p))
            })
            .collect()
    }

    /// The available sessions of `bare` (without copying their presence), those on other
    /// nodes of a cluster included.
    pub fn available_handles(&self, core: &Core, bare: &BareJid) -> Vec<SessionHandle> {
        self.sessions_where(core, bare, available_here, replicated_available)
    }

    /// Whether `bare` has an available session, here or on another node of a cluster.
    pub fn has_available(&self, core: &Core, bare: &BareJid) -> bool {
        core.has_sessions(bare)
            && core
                .sessions_of(bare)
                .iter()
                .any(|(h, priority)| self.holds(h, *priority, available_here, replicated_available))
    }

    /// The sessions of `bare` for which [`Im::holds`] holds.
    pub fn sessions_where(
        &self,
        core: &Core,
        bare: &BareJid,
        here: impl Fn(&SessionState) -> bool,
        elsewhere: impl Fn(&SessionHandle, Option<i8>) -> bool,
    ) -> Vec<SessionHandle> {
        if !core.has_sessions(bare) {
            return Vec::new();
        }
        // Pushed one by one, not collected in place: most calls match nothing, and an
        // in-place collect would shrink (reallocate) the sessions' vector each time.
        let mut matching = Vec::new();
        for (h, priority) in core.sessions_of(bare) {
            if self.holds(&h, priority, &here, &elsewhere) {
                matching.push(h);
            }
        }
        matching
    }

    /// Whether the session `h` (with the priority the registry knows) satisfies `here` by its
    /// state on this node — or, a session of another node of a cluster, whose state is
    /// there, `elsewhere` by what its node replicated (its availability, a flag).
    fn holds(
        &self,
        h: &SessionHandle,
        priority: Option<i8>,
        here: impl Fn(&SessionState) -> bool,
        elsewhere: impl Fn(&SessionHandle, Option<i8>) -> bool,
    ) -> bool {
        self.session(h.jid(), here)
            .unwrap_or_else(|| h.is_remote() && elsewhere(h, priority))
    }
}

/// Available, by a session's state on this node.
fn available_here(s: &SessionState) -> bool {
    s.presence.is_some()
}

/// Available, for a session of another node: by the availability its node replicated (the
/// rule of the core's fan-out).
fn replicated_available(_: &SessionHandle, priority: Option<i8>) -> bool {
    priority.is_some()
}

/// Reads a lock, recovering from poisoning (a panic elsewhere must not wedge the server).
pub fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

/// Writes a lock, recovering from poisoning.
pub fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// XEP-0172 user nickname, which a subscription request may carry.
const NICK: &str = "http://jabber.org/protocol/nick";

/// Most bytes of a stored subscription request with its status and nickname; a larger one
/// is stored without them.
const MAX_STORED_REQUEST: usize = 4096;

/// What of an inbound subscription request is stored until it is answered (RFC 6121
/// §3.1.3): a presence rebuilt from its `from`, `to` and `type` with only what a client shows
/// of it — its `<status/>` and an XEP-0172 `<nick/>` — within [`MAX_STORED_REQUEST`], or
/// without them if larger (then it is the two JIDs, bounded by RFC 7622). Another server may
/// send a request as large as its stanza limit, in its children or its attributes (an `id`
/// of 200 KB): kept whole, the requests of every address at a hostile domain would be stored
/// and replayed at each login that large.
fn stored_request(request: &Stanza) -> Element {
    let original = request.element();
    let mut el = Element::new(original.name(), original.ns());
    for attr in ["from", "to", "type"] {
        if let Some(value) = original.attr(attr) {
            el.set_attr(attr, value);
        }
    }
    let shown = |c: &&Element| c.is("status", CONTENT_NS) || c.is("nick", NICK);
    for child in original.children().filter(shown) {
        el.push_child(child.clone());
    }
    if el.to_bytes().len() > MAX_STORED_REQUEST {
        el.remove_children_where(|_| true);
    }
    el
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_session_state_crosses_to_another_node_whole() {
        let presence = "<presence xmlns='jabber:client' from='a@localhost/r'><priority>5</priority><status>\"here\"</status></presence>";
        let state = SessionState {
            interested: true,
            presence: Stanza::from_serialized(presence.as_bytes()),
            directed: [Jid::parse("room@conference.localhost/me").unwrap()].into(),
            carbons: true,
            blocklist_requested: true,
            caps: Some(Arc::from("http://x#ver")),
        };
        let back = SessionState::carried(&state.carry()).unwrap();
        assert!(back.interested && back.carbons && back.blocklist_requested);
        assert_eq!(back.directed, state.directed);
        assert_eq!(back.caps, state.caps);
        assert_eq!(
            back.presence.unwrap().to_bytes(),
            state.presence.unwrap().to_bytes()
        );
        assert!(SessionState::carried("{").is_none());
    }

    fn item(contact: &str, name: &str, groups: &[&str]) -> RosterItem {
        RosterItem {
            contact: contact.into(),
            name: (!name.is_empty()).then(|| name.to_owned()),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..RosterItem::default()
        }
    }

    /// The budget counts the JID, name and group names; a change fits when what it adds
    /// fits, and one that adds nothing always does (a roster over limits lowered since
    /// stays usable).
    #[test]
    fn room_counts_what_a_change_adds() {
        let a = item("a@b.c", "nm", &["g1", "g2"]);
        assert_eq!(roster_bytes(&a), 5 + 2 + 4);
        let room = RosterRoom {
            items: 1,
            bytes: 11,
            requests: true,
        };
        assert!(room.fits(None, &a));
        assert!(!room.fits(None, &item("a@b.c", "nm", &["g1", "g2", "x"])));
        let grown = item("a@b.c", "name", &["g1", "g2"]);
        assert!(room.fits(Some(&a), &grown));
        let full = RosterRoom {
            items: 0,
            bytes: 0,
            requests: false,
        };
        assert!(!full.fits(None, &item("a@b.c", "", &[])));
        assert!(!full.fits(Some(&a), &grown));
        assert!(full.fits(Some(&grown), &a));
        assert!(full.fits(Some(&a), &a));
    }
}
