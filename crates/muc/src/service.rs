//! The MUC service on its own domain: a [`DomainRoute`] that drives [`Room`] values.
//!
//! Each room sits behind its own async lock; a stanza for it is handled under that lock and
//! its outputs are stored (persistent rooms: before anything is sent, so what an owner is
//! told is committed) and delivered before the lock is released, so every occupant sees a
//! room's stanzas in the order the room produced them, and a busy room holds back the
//! senders that keep it busy. Broadcasts go through [`Core::deliver_rendered`]: serialized
//! once per audience.
//!
//! Routing answers some stanzas at once, in the sending task: an error for a resource that
//! just went away or a domain that cannot be reached comes back to the room (§17.1.2: the
//! room drops such "ghosts") before the send returns. A stanza that reaches the service while
//! the same task is sending a room's output ([`SENDING`]) is therefore served from a task of
//! its own, once the lock is free; served inline it would wait for a lock its own task
//! holds. The same goes for what a room sends to a room of the service (an invitation to a
//! room JID): rooms never wait for each other.
//!
//! Room archives (XEP-0313 on the room JID): a groupchat message the room archives is stored
//! before it is sent; queries are answered by `rookery-mam`'s query code over the SQL store,
//! once the room said the requester may read; a room's archive goes with the room. At start,
//! each stored room's history for newcomers is read back from its archive.
//!
//! The service itself answers disco (XEP-0045 §6.1–§6.3: identity, features, public rooms)
//! and pings; it creates a room when someone enters one that does not exist (§10.1), within
//! `[muc] create_rooms` and the per-user room limit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use async_trait::async_trait;
use base64::Engine as _;
use dashmap::DashMap;
use rand::RngCore;
use tokio::sync::Mutex;

use rookery_core::modules::disco::{feature, identity};
use rookery_core::{Core, DomainRoute, Template, Undelivered};
use rookery_jid::{BareJid, Jid};
use rookery_proto::{
    ns as pns, IqType, MessageType, PresenceType, Stanza, StanzaError, StanzaErrorCondition,
    StanzaKind,
};
use rookery_xml::Element;

use crate::config::MucConfig;
use crate::error::MucError;
use crate::ns;
use crate::room::{not_in_room, Limits, Output, Persist, Room};
use crate::roomconfig::RoomConfig;
use crate::store::RoomStore;
use rookery_store::mam::{ArchiveId, Archived, Filter, NewArchived, Owner};
use rookery_store::page::PageLimit;
use rookery_store::Store;

tokio::task_local! {
    /// Set while a task sends a room's output ([`MucService::dispatch`]), under that room's
    /// lock.
    static SENDING: ();
}

/// A room and whether it is gone (a stanza that found it just before it went looks again).
struct Slot {
    room: Room,
    gone: bool,
}

/// The multi-user chat service.
pub struct MucService {
    jid: BareJid,
    config: MucConfig,
    /// The hosted domain whose service this is: its accounts may create rooms by default
    /// (each virtual host has its own service; another host's accounts join, as remote
    /// ones do, but do not create).
    host: String,
    rooms: DashMap<String, Arc<Mutex<Slot>>>,
    /// Rooms alive per creator, for `max_rooms_per_user`.
    created: DashMap<BareJid, usize>,
    store: Arc<dyn RoomStore>,
    /// Where room archives are kept (`None`: `[muc] archive = false`).
    archive: Option<Store>,
    core: OnceLock<Weak<Core>>,
    /// Whether this node serves the rooms: always, but in a cluster, where rooms live on
    /// one node (`Core::home_node`) and the others hand their stanzas there.
    serving: AtomicBool,
    /// Held while the rooms are dropped or read again (when `serving` changes).
    switching: Mutex<()>,
}

impl std::fmt::Debug for MucService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MucService")
            .field("jid", &self.jid)
            .field("rooms", &self.rooms.len())
            .finish_non_exhaustive()
    }
}

/// Replaces the `result` to `request` in `out` with `internal-server-error`.
fn fail_result(out: &mut [Output], request: &Stanza) {
    for o in out.iter_mut() {
        if let Output::Send(s) = o {
            if s.kind() == StanzaKind::Iq(IqType::Result) && s.id() == request.id() {
                if let Some(e) = request.error_reply(&MucError::Store.into()) {
                    *s = e;
                }
            }
        }
    }
}

/// Whether `s` is an archive query to a room (XEP-0313 §4 with the room as the archive).
/// What the room lets a requester read of its archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    /// Nothing (`forbidden`).
    Refused,
    /// The messages as the room relayed them.
    Anonymous,
    /// The messages with their senders' real JIDs ([`archived_message`]).
    SeesJids,
}

/// The message an archive result forwards: the stored one, and for a reader who sees real
/// JIDs the sender's in `<x xmlns='muc#user'><item jid/></x>` (XEP-0313 §5.1.2; the room
/// removed any `muc#user` content the occupant sent before it stored the message).
fn archived_message(r: &Archived, real_jids: bool) -> Option<Element> {
    let mut el = Stanza::from_serialized(r.stanza.as_bytes())?.into_element();
    if let Some(jid) = r.real_jid.as_deref().filter(|_| real_jids) {
        let item = Element::new("item", ns::USER).with_attr("jid", jid);
        el.push_child(Element::new("x", ns::USER).with_child(item));
    }
    Some(el)
}

fn is_archive_query(s: &Stanza) -> bool {
    matches!(s.kind(), StanzaKind::Iq(IqType::Get | IqType::Set))
        && s.to().is_some_and(Jid::is_bare)
        && s.payload().is_some_and(|p| {
            p.ns() == rookery_mam::ns::MAM && matches!(p.name(), "query" | "metadata")
        })
}

fn unavailable(stanza: Stanza) -> Box<Undelivered> {
    Undelivered::new(
        stanza,
        StanzaError::new(StanzaErrorCondition::ServiceUnavailable),
    )
}

impl MucService {
    /// The service of the hosted `domain` under `config` (at `config.service_domain(domain)`),
    /// with the persistent rooms of `store` loaded.
    pub async fn load(
        config: MucConfig,
        domain: &str,
        store: Arc<dyn RoomStore>,
        archive: Option<Store>,
    ) -> Result<Arc<MucService>, String> {
        config.validate()?;
        let host = config.service_domain(domain);
        let jid = BareJid::new(None, &host).map_err(|e| format!("[muc] domain {host:?}: {e}"))?;
        let archive = archive.filter(|_| config.archive);
        let svc = MucService {
            jid,
            config,
            host: domain.to_string(),
            rooms: DashMap::new(),
            created: DashMap::new(),
            store,
            archive,
            core: OnceLock::new(),
            serving: AtomicBool::new(true),
            switching: Mutex::new(()),
        };
        svc.load_rooms()
            .await
            .map_err(|e| format!("loading MUC rooms: {e}"))?;
        Ok(Arc::new(svc))
    }

    /// Puts the stored rooms in memory, with their history from the archive.
    async fn load_rooms(&self) -> Result<(), rookery_store::StoreError> {
        for (name, snap) in self.store.load(self.jid.as_str()).await? {
            let Ok(jid) = BareJid::new(Some(&name), self.jid.domain()) else {
                tracing::error!(room = %name, "skipping a stored room with an invalid name");
                continue;
            };
            *self.created.entry(snap.creator.clone()).or_default() += 1;
            let mut room = Room::restore(jid, snap, self.limits());
            self.recall_history(&mut room, &name).await;
            self.rooms
                .insert(name, Arc::new(Mutex::new(Slot { room, gone: false })));
        }
        Ok(())
    }

    /// In a cluster, makes this node the rooms' home if it was not (the home before it died,
    /// or this node just started and another was older): the rooms are read from the store
    /// again, since what this node held in memory may be stale. Occupants of the old home
    /// are not known here; their clients' self-pings (XEP-0410) find out and rejoin.
    async fn take_home(&self) {
        if self.serving.load(Ordering::Acquire) {
            return;
        }
        let _switching = self.switching.lock().await;
        if self.serving.load(Ordering::Acquire) {
            return;
        }
        self.drop_rooms().await;
        if let Err(e) = self.load_rooms().await {
            tracing::error!(service = %self.jid, error = %e, "loading MUC rooms failed");
        }
        tracing::info!(service = %self.jid, rooms = self.rooms.len(), "this cluster node now serves the rooms");
        self.serving.store(true, Ordering::Release);
    }

    /// In a cluster, another node is the rooms' home: what this node held goes (a stanza
    /// holding a room's slot finds it gone and is handed on).
    async fn leave_home(&self) {
        if !self.serving.load(Ordering::Acquire) {
            return;
        }
        let _switching = self.switching.lock().await;
        if !self.serving.load(Ordering::Acquire) {
            return;
        }
        self.serving.store(false, Ordering::Release);
        self.drop_rooms().await;
    }

    async fn drop_rooms(&self) {
        let slots: Vec<Arc<Mutex<Slot>>> = self.rooms.iter().map(|e| e.value().clone()).collect();
        self.rooms.clear();
        self.created.clear();
        for slot in slots {
            slot.lock().await.gone = true;
        }
    }

    /// The service's domain.
    pub fn jid(&self) -> &BareJid {
        &self.jid
    }

    /// Registers the service's domain with the core.
    pub fn attach(self: &Arc<Self>, core: &Arc<Core>) {
        let _ = self.core.set(Arc::downgrade(core));
        core.register_domain(self.jid.domain(), self.clone());
    }

    /// The number of rooms alive (for tests and status).
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    fn limits(&self) -> Limits {
        Limits {
            max_occupants: self.config.max_occupants,
            history: self.config.history_length,
            history_bytes: self.config.history_max_bytes,
            max_affiliations: self.config.max_affiliations,
            archive: self.archive.is_some(),
        }
    }

    /// Whose archive room `name` is.
    fn owner(&self, name: &str) -> Owner {
        Owner::Room {
            service: self.jid.as_str().to_string(),
            room: name.to_string(),
        }
    }

    /// Puts the last messages of room `name`'s archive into its history for newcomers: as
    /// many as the history holds, in count and in bytes, and no more read (a room's messages
    /// may weigh 256 KiB each; the rooms are recalled as the service starts).
    async fn recall_history(&self, room: &mut Room, name: &str) {
        let Some(store) = &self.archive else { return };
        let limit = PageLimit {
            max: u64::try_from(self.config.history_length).unwrap_or(u64::MAX),
            max_bytes: self.config.history_max_bytes,
        };
        match store
            .mam()
            .page(&self.owner(name), &Filter::default(), limit, true)
            .await
        {
            Ok(page) => {
                for r in page.rows {
                    if let Some(s) = Stanza::from_serialized(r.stanza.as_bytes()) {
                        room.recall(s, r.ts);
                    }
                }
            }
            Err(e) => tracing::error!(room = %name, error = %e, "reading a room's history failed"),
        }
    }

    /// XEP-0313 on the room JID: `reader` is the room's answer for the requester.
    async fn archive_query(
        &self,
        core: &Arc<Core>,
        name: &str,
        room: BareJid,
        iq: Stanza,
        reader: Reader,
    ) -> Result<(), Box<Undelivered>> {
        let Some(store) = &self.archive else {
            return Err(unavailable(iq));
        };
        if reader == Reader::Refused {
            return Err(Undelivered::new(
                iq,
                StanzaError::new(StanzaErrorCondition::Forbidden),
            ));
        }
        let owner = self.owner(name);
        let render = |r: &Archived| archived_message(r, reader == Reader::SeesJids);
        match rookery_mam::serve::answer_with(
            core,
            store,
            &owner,
            &room,
            &iq,
            self.config.archive_page_limit(),
            render,
        )
        .await
        {
            Ok(fin) => core.route(iq.iq_result(Some(fin))).await,
            Err(e) => core.reply_error(&iq, e.into()).await,
        }
        Ok(())
    }

    fn new_room_config(&self) -> RoomConfig {
        RoomConfig {
            persistent: self.config.default_persistent,
            public: self.config.default_public,
            max_occupants: self.config.default_max_occupants,
            ..RoomConfig::default()
        }
    }

    /// A new room `name` for `creator`, within the creation policy and limit.
    fn create(&self, name: &str, creator: &Jid) -> Result<Arc<Mutex<Slot>>, MucError> {
        if self.config.create_rooms == "local" && creator.domain() != self.host {
            return Err(MucError::NotAllowed("only local users may create rooms"));
        }
        let bare = creator.to_bare();
        let jid = BareJid::new(Some(name), self.jid.domain()).map_err(|_| MucError::NoRoom)?;
        let entry = self.rooms.entry(name.to_string());
        if let dashmap::Entry::Occupied(e) = &entry {
            return Ok(e.get().clone());
        }
        let mut count = self.created.entry(bare.clone()).or_default();
        let max = self.config.max_rooms_per_user;
        if max > 0 && *count >= max {
            return Err(MucError::CreationLimit);
        }
        *count += 1;
        drop(count);
        let mut salt = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut salt);
        let salt = base64::engine::general_purpose::STANDARD.encode(salt);
        let room = Room::new(jid, bare, self.new_room_config(), self.limits(), salt);
        let slot = Arc::new(Mutex::new(Slot { room, gone: false }));
        entry.or_insert(slot.clone());
        Ok(slot)
    }

    /// The room a stanza is for: the existing one, or a new one for a presence entering it.
    fn room_for(&self, name: &str, stanza: &Stanza) -> Result<Arc<Mutex<Slot>>, MucError> {
        if let Some(r) = self.rooms.get(name) {
            return Ok(r.clone());
        }
        let to_occupant = stanza.to().is_some_and(Jid::is_full);
        let joins = stanza.element().has_child("x", ns::MUC);
        match (stanza.kind(), stanza.from()) {
            (StanzaKind::Presence(PresenceType::Available), Some(from)) if to_occupant => {
                // Without the MUC extension, a client that lost track of a room (§7.2
                // "Groupchat 1.0 Protocol"): not created, told it is not in it.
                if joins {
                    self.create(name, from)
                } else {
                    Err(MucError::Desynchronized)
                }
            }
            // Nobody is joined to a room that does not exist: a self-ping says so (XEP-0410).
            (StanzaKind::Iq(IqType::Get | IqType::Set), _) if to_occupant => {
                Err(MucError::NotJoined)
            }
            _ => Err(MucError::NoRoom),
        }
    }

    async fn to_room(
        &self,
        core: &Arc<Core>,
        name: &str,
        stanza: Stanza,
    ) -> Result<(), Box<Undelivered>> {
        // A stanza that found a room just destroyed looks once more (it may create it anew).
        for _ in 0..2 {
            let slot = match self.room_for(name, &stanza) {
                Ok(s) => s,
                Err(MucError::Desynchronized) => {
                    if let Some(kick) = not_in_room(&stanza) {
                        core.route(kick).await;
                    }
                    return Ok(());
                }
                Err(e) => return self.refuse(stanza, e),
            };
            let mut guard = slot.lock().await;
            if guard.gone {
                continue;
            }
            if is_archive_query(&stanza) {
                let reader = match stanza.from() {
                    Some(f) if guard.room.archive_shows_jids(f) => Reader::SeesJids,
                    Some(f) if guard.room.may_read_archive(f) => Reader::Anonymous,
                    _ => Reader::Refused,
                };
                let room = guard.room.jid().clone();
                drop(guard);
                return self.archive_query(core, name, room, stanza, reader).await;
            }
            let now = rookery_proto::time::now_unix();
            // An owner's or admin's request, kept to answer it with an error if storing fails.
            let request = (stanza.kind() == StanzaKind::Iq(IqType::Set)).then(|| stanza.clone());
            let mut outcome = guard
                .room
                .handle(stanza, now, &rookery_store::mam::new_name());
            if let (Some(a), Some(store)) = (&outcome.archive, &self.archive) {
                let row = NewArchived {
                    owner: self.owner(name),
                    id: ArchiveId::Named(a.id.clone()),
                    with_jid: a.with.as_str().to_string(),
                    ts: now,
                    stanza: rookery_mam::archive::serialized(&a.stanza),
                    real_jid: Some(a.real.to_string()),
                };
                let rows = std::sync::Arc::from(vec![row]);
                if let Err(e) = rookery_mam::archiver::append_patiently(store, rows).await {
                    tracing::error!(room = %name, error = %e, "archiving a room message failed");
                }
            }
            match outcome.persist {
                Persist::Nothing => {}
                Persist::Save | Persist::Delete => {
                    let stored = if outcome.persist == Persist::Save {
                        self.store
                            .save(self.jid.as_str(), name, &guard.room.stored())
                            .await
                    } else {
                        self.store.delete(self.jid.as_str(), name).await
                    };
                    if let Err(e) = stored {
                        tracing::error!(room = %name, error = %e, "storing a room failed");
                        // Nobody is told a change succeeded that is not stored.
                        if let Some(req) = &request {
                            fail_result(&mut outcome.out, req);
                        }
                    }
                }
            }
            if outcome.gone {
                guard.gone = true;
                if let Some(store) = &self.archive {
                    if let Err(e) = store.mam().clear(&self.owner(name)).await {
                        tracing::error!(room = %name, error = %e, "deleting a room's archive failed");
                    }
                }
                self.rooms.remove_if(name, |_, v| Arc::ptr_eq(v, &slot));
                let creator = guard.room.creator().clone();
                self.created.remove_if_mut(&creator, |_, n| {
                    *n = n.saturating_sub(1);
                    *n == 0
                });
            }
            self.dispatch(core, outcome.out).await;
            return Ok(());
        }
        Ok(())
    }

    /// Sends what a room produced, in order, marked as [`SENDING`] for what comes back.
    async fn dispatch(&self, core: &Arc<Core>, out: Vec<Output>) {
        SENDING
            .scope((), async {
                for out in out {
                    match out {
                        Output::Send(s) => core.route(s).await,
                        Output::Broadcast(s, to) => {
                            core.deliver_rendered(&Template::new(s), to.iter()).await;
                        }
                    }
                }
            })
            .await;
    }

    /// Answers a stanza refused before any room saw it (error stanzas and departures from
    /// rooms that do not exist get nothing).
    fn refuse(&self, stanza: Stanza, e: MucError) -> Result<(), Box<Undelivered>> {
        match stanza.kind() {
            StanzaKind::Presence(PresenceType::Available)
            | StanzaKind::Message(
                MessageType::Normal | MessageType::Chat | MessageType::Groupchat,
            )
            | StanzaKind::Iq(IqType::Get | IqType::Set) => Err(Undelivered::new(stanza, e.into())),
            _ => Ok(()),
        }
    }

    /// Serves a stanza on this node: from a task of its own when it arrives while this task
    /// sends a room's output (see the module documentation).
    async fn serve(&self, core: &Arc<Core>, stanza: Stanza) -> Result<(), Box<Undelivered>> {
        if SENDING.try_with(|()| ()).is_ok() {
            let core = core.clone();
            tokio::spawn(async move { core.route(stanza).await });
            return Ok(());
        }
        self.take_home().await;
        match stanza.to().and_then(Jid::local).map(str::to_string) {
            None => self.to_service(core, stanza).await,
            Some(name) => self.to_room(core, &name, stanza).await,
        }
    }

    /// disco#info and disco#items of the service (§6.1, §6.3), pings.
    async fn to_service(&self, core: &Arc<Core>, stanza: Stanza) -> Result<(), Box<Undelivered>> {
        if stanza.kind() != StanzaKind::Iq(IqType::Get) {
            return match stanza.kind() {
                StanzaKind::Iq(IqType::Set)
                | StanzaKind::Message(MessageType::Normal | MessageType::Chat) => {
                    Err(unavailable(stanza))
                }
                _ => Ok(()),
            };
        }
        let Some(payload) = stanza.payload() else {
            return Err(unavailable(stanza));
        };
        let answer = if payload.is("query", pns::DISCO_INFO) && payload.attr("node").is_none() {
            let mut q = Element::new("query", pns::DISCO_INFO).with_child(identity(
                "conference",
                "text",
                Some("Chatrooms"),
            ));
            for f in [pns::DISCO_INFO, pns::DISCO_ITEMS, ns::MUC, ns::STABLE_ID] {
                q.push_child(feature(f));
            }
            Some(q)
        } else if payload.is("query", pns::DISCO_ITEMS) && payload.attr("node").is_none() {
            Some(self.public_rooms().await)
        } else if payload.is("ping", pns::PING) {
            None
        } else {
            return Err(unavailable(stanza));
        };
        core.route(stanza.iq_result(answer)).await;
        Ok(())
    }

    /// The public, unlocked rooms as disco items, by JID.
    async fn public_rooms(&self) -> Element {
        let slots: Vec<Arc<Mutex<Slot>>> = self.rooms.iter().map(|e| e.value().clone()).collect();
        let mut items = Vec::new();
        for slot in slots {
            let s = slot.lock().await;
            let r = &s.room;
            if s.gone || r.is_locked() || !r.config().public {
                continue;
            }
            let name = if r.config().name.is_empty() {
                r.jid().local().unwrap_or_default().to_string()
            } else {
                r.config().name.clone()
            };
            items.push((r.jid().as_str().to_string(), name));
        }
        items.sort();
        let mut q = Element::new("query", pns::DISCO_ITEMS);
        for (jid, name) in items {
            q.push_child(
                Element::new("item", pns::DISCO_ITEMS)
                    .with_attr("jid", jid)
                    .with_attr("name", name),
            );
        }
        q
    }
}

#[async_trait]
impl DomainRoute for MucService {
    async fn deliver(&self, stanza: Stanza) -> Result<(), Box<Undelivered>> {
        let Some(core) = self.core.get().and_then(Weak::upgrade) else {
            return Err(unavailable(stanza));
        };
        if stanza.from().is_none() {
            return Ok(());
        }
        // In a cluster the rooms live on one node: the others hand it their stanzas.
        if let Some(home) = core.home_node() {
            self.leave_home().await;
            if core.to_domain_on(&home, &self.jid.clone().into(), &stanza) {
                return Ok(());
            }
            let e = StanzaError::new(StanzaErrorCondition::RecipientUnavailable)
                .with_text("the cluster node serving the rooms cannot be reached");
            return Err(Undelivered::new(stanza, e));
        }
        self.serve(&core, stanza).await
    }

    async fn deliver_here(&self, stanza: Stanza) -> Result<(), Box<Undelivered>> {
        let Some(core) = self.core.get().and_then(Weak::upgrade) else {
            return Err(unavailable(stanza));
        };
        // Handed over by a node that takes this one for the rooms' home: served here, never
        // handed on (while two nodes' views differ, a stanza must not go back and forth).
        self.serve(&core, stanza).await
    }

    async fn shutdown(&self) {
        let Some(core) = self.core.get().and_then(Weak::upgrade) else {
            return;
        };
        let slots: Vec<Arc<Mutex<Slot>>> = self.rooms.iter().map(|e| e.value().clone()).collect();
        for slot in slots {
            let mut guard = slot.lock().await;
            let outcome = guard.room.shut_down();
            self.dispatch(&core, outcome.out).await;
        }
    }

    async fn sessions_lost(&self, jids: &[Jid]) {
        let Some(core) = self.core.get().and_then(Weak::upgrade) else {
            return;
        };
        let slots: Vec<(String, Arc<Mutex<Slot>>)> = self
            .rooms
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        for (name, slot) in slots {
            let (room, ghosts): (Jid, Vec<Jid>) = {
                let guard = slot.lock().await;
                let ghosts = jids
                    .iter()
                    .filter(|j| guard.room.is_occupant(j))
                    .cloned()
                    .collect();
                (guard.room.jid().clone().into(), ghosts)
            };
            for jid in ghosts {
                // As if the room's presence to it had bounced (§17.1.2): it leaves with 333.
                let to_ghost =
                    Stanza::presence(PresenceType::Available, Some(room.clone()), Some(jid));
                let gone = StanzaError::new(StanzaErrorCondition::RecipientUnavailable)
                    .with_text("its cluster node died");
                if let Some(bounce) = to_ghost.error_reply(&gone) {
                    let _ = self.to_room(&core, &name, bounce).await;
                }
            }
        }
    }

    fn name(&self) -> Option<String> {
        Some("Chatrooms".into())
    }

    fn host(&self) -> Option<&str> {
        Some(&self.host)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn a_change_not_stored_is_answered_with_an_error() {
        let room: Jid = Jid::parse("coven@conference.localhost").unwrap();
        let owner: Jid = Jid::parse("crone@localhost/a").unwrap();
        let req = Stanza::iq(
            IqType::Set,
            "c1",
            Some(owner.clone()),
            Some(room.clone()),
            Element::new("query", ns::OWNER),
        );
        let notice = Stanza::presence(PresenceType::Available, Some(room), Some(owner));
        let mut out = vec![
            Output::Send(req.iq_result(None)),
            Output::Send(notice.clone()),
        ];
        fail_result(&mut out, &req);
        let Output::Send(first) = &out[0] else {
            panic!()
        };
        assert_eq!(first.kind(), StanzaKind::Iq(IqType::Error));
        assert_eq!(first.id(), Some("c1"));
        let Output::Send(second) = &out[1] else {
            panic!()
        };
        assert_eq!(second, &notice);
    }
}
