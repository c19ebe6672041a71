//! Presence as a stream (docs/http.md, "Presence"): `GET /presence/{bare-jid}` with
//! `Accept: text/event-stream` shows a local account's resources coming and going — an IoT
//! meter fleet on a web dashboard.
//!
//! Who may watch: the token's own account, or a holder whose presence subscription to that
//! account is approved (RFC 6121 §3: subscription `from` or `both` in the watched account's
//! roster) — exactly who would receive the presence over XMPP. The roster question is the
//! pubsub engine's injected [`AccessPolicy`] (the `presence` access model asks the same).
//!
//! [`PresenceStreams`] is a core module that observes ([`priority::OBSERVE`]) the broadcast
//! presence of local sessions (RFC 6121 §4.2, §4.4, §4.5) and session ends (a dead socket
//! sends no `unavailable`), and passes them on untouched; only accounts someone watches
//! cost anything (a per-account broadcast channel, created by the first watcher).
//!
//! In a cluster (docs/clustering.md, "The HTTP presence stream") the watchers follow every
//! node: a node with watchers of an account tells its peers so ([`WATCH_TOPIC`], a module
//! note, again every [`REFRESH`] while they stay), and a node where that account has
//! sessions sends each [`Change`] of them to its peers ([`CHANGE_TOPIC`]). The home node
//! (the oldest) speaks for the sessions of a dead node. An account nobody watches sends
//! nothing, and a node stops sending at most [`WATCH_LEASE`] after its last watcher left.
//!
//! Events: `available` (on every available presence: initial or a change of `show`/`status`)
//! and `unavailable`, `data:` a JSON object `{"jid", "show"?, "status"?, "priority"?}`. A
//! stream starts with an `available` event per resource available at that moment.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use rookery_core::{
    priority, Core, Declaration, Event, EventKind, Flow, HookPoint, LostSession, Module,
    SessionEvent,
};
use rookery_jid::{BareJid, Jid};
use rookery_proto::{PresenceType, Stanza, StanzaKind};
use rookery_pubsub::AccessPolicy;
use rookery_store::tokens::Scope;
use rookery_xml::CONTENT_NS;
use tokio::sync::broadcast;

use crate::auth::{AuthError, Caller};
use crate::pubsub::sse::{self, format_event, RETRY_MS};
use crate::pubsub::HttpError;
use crate::WebContext;

/// Changes one watched account's channel holds for its slowest watcher.
const CAPACITY: usize = 64;
/// How often a node with watchers of an account tells its peers again (so that a node
/// joining the cluster learns of them within that time).
const REFRESH: Duration = Duration::from_secs(10);
/// How long a peer's watch lasts without being told again: after that, the account's
/// changes stop crossing to it (its watchers left, or the node died).
const WATCH_LEASE: Duration = Duration::from_secs(30);
/// The note topic of "this node watches these accounts" (bare JIDs, one a line).
const WATCH_TOPIC: &str = "presence-stream.watch";
/// The note topic of one [`Change`] of a resource of this node (see [`Change::to_note`]).
const CHANGE_TOPIC: &str = "presence-stream.change";
/// Not a local account (or the feature is off).
const NOT_FOUND: HttpError = HttpError::Status(StatusCode::NOT_FOUND, "item-not-found");

/// A resource's availability changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The resource.
    pub jid: Jid,
    /// Available (`true`) or gone.
    pub available: bool,
    /// `<show/>`, if any.
    pub show: Option<String>,
    /// `<status/>`, if any.
    pub status: Option<String>,
    /// `<priority/>`, if any.
    pub priority: Option<i8>,
}

impl Change {
    /// The change an available or unavailable presence from `jid` announces.
    pub fn of_presence(jid: &Jid, available: bool, presence: &Stanza) -> Change {
        let child = |name: &str| {
            presence
                .element()
                .children()
                .find(|c| c.name() == name && c.ns() == CONTENT_NS)
                .map(|c| c.text())
        };
        Change {
            jid: jid.clone(),
            available,
            show: child("show").filter(|_| available),
            status: child("status"),
            priority: child("priority").and_then(|p| p.trim().parse().ok()),
        }
    }

    /// The event's data: `jid`, and `show`, `status`, `priority` if set.
    fn data(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut data = serde_json::Map::new();
        data.insert("jid".into(), self.jid.as_str().into());
        for (k, v) in [("show", &self.show), ("status", &self.status)] {
            if let Some(v) = v {
                data.insert(k.into(), v.clone().into());
            }
        }
        if let Some(p) = self.priority {
            data.insert("priority".into(), p.into());
        }
        data
    }

    /// `jid` ended (no presence to say more).
    fn gone(jid: &Jid) -> Change {
        Change {
            jid: jid.clone(),
            available: false,
            show: None,
            status: None,
            priority: None,
        }
    }

    /// The SSE event.
    pub fn to_event(&self) -> String {
        let kind = if self.available {
            "available"
        } else {
            "unavailable"
        };
        format_event(
            kind,
            None,
            &serde_json::Value::from(self.data()).to_string(),
        )
    }

    /// As a note to the peers: the event's data and `available`.
    fn to_note(&self) -> String {
        let mut data = self.data();
        data.insert("available".into(), self.available.into());
        serde_json::Value::from(data).to_string()
    }

    /// A peer's note (see [`Change::to_note`]); `None` if it does not read.
    fn from_note(body: &str) -> Option<Change> {
        let v: serde_json::Value = serde_json::from_str(body).ok()?;
        let text = |k: &str| v.get(k).and_then(|s| s.as_str()).map(str::to_string);
        Some(Change {
            jid: Jid::parse(v.get("jid")?.as_str()?)
                .ok()
                .filter(Jid::is_full)?,
            available: v.get("available")?.as_bool()?,
            show: text("show"),
            status: text("status"),
            priority: v
                .get("priority")
                .and_then(serde_json::Value::as_i64)
                .and_then(|p| i8::try_from(p).ok()),
        })
    }
}

/// One watched account: its channel and its resources known to be available (so that a
/// session ending after an explicit `unavailable` is not announced twice).
struct Watched {
    tx: broadcast::Sender<Change>,
    available: HashSet<Jid>,
    /// When the peers were last told that this node watches it.
    announced: Option<Instant>,
}

/// The accounts the other nodes of a cluster watch, each with when a peer last said so.
#[derive(Default)]
struct PeerWatches {
    until: HashMap<BareJid, Instant>,
    /// When expired entries were last dropped (at most every [`REFRESH`]).
    pruned: Option<Instant>,
}

/// The presence watchers of every local account, and the module feeding them.
pub struct PresenceStreams {
    watched: Mutex<HashMap<BareJid, Watched>>,
    peers: Mutex<PeerWatches>,
    policy: Arc<dyn AccessPolicy>,
}

impl std::fmt::Debug for PresenceStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresenceStreams").finish_non_exhaustive()
    }
}

impl PresenceStreams {
    /// Watchers deciding access with `policy` (the roster facts).
    pub fn new(policy: Arc<dyn AccessPolicy>) -> PresenceStreams {
        PresenceStreams {
            watched: Mutex::new(HashMap::new()),
            peers: Mutex::new(PeerWatches::default()),
            policy,
        }
    }

    /// Passes `change` of a resource of this node to the watchers of its account, here and,
    /// in a cluster, on the nodes that watch it.
    fn tell(&self, core: &Core, change: Change) {
        if core.is_clustered() && self.watched_by_peers(&change.jid.to_bare()) {
            core.tell_peers(CHANGE_TOPIC, || change.to_note());
        }
        self.tell_here(change);
    }

    /// Passes `change` to this node's watchers of its account, if any (and forgets an
    /// account nobody watches any more).
    fn tell_here(&self, change: Change) {
        let Ok(mut w) = self.watched.lock() else {
            return;
        };
        let bare = change.jid.to_bare();
        let Some(entry) = w.get_mut(&bare) else {
            return;
        };
        let news = if change.available {
            entry.available.insert(change.jid.clone());
            true
        } else {
            entry.available.remove(&change.jid)
        };
        if news && entry.tx.send(change).is_err() {
            w.remove(&bare);
        }
    }

    /// Whether a peer said it watches `bare` within [`WATCH_LEASE`].
    fn watched_by_peers(&self, bare: &BareJid) -> bool {
        let p = self
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        p.until.get(bare).is_some_and(|t| t.elapsed() < WATCH_LEASE)
    }

    /// A peer watches the accounts of `body` (bare JIDs, one a line); lines that do not
    /// read are ignored.
    fn peer_watches(&self, body: &str) {
        let now = Instant::now();
        let mut p = self
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for bare in body.lines().filter_map(|l| BareJid::parse(l).ok()) {
            p.until.insert(bare, now);
        }
        if p.pruned.is_none_or(|t| t.elapsed() >= REFRESH) {
            p.until.retain(|_, t| t.elapsed() < WATCH_LEASE);
            p.pruned = Some(now);
        }
    }

    /// In a cluster, tells the peers that this node watches `bare`, unless it did within
    /// [`REFRESH`] (so several watchers of one account cost one note). Nothing once nobody
    /// watches it here.
    fn announce(&self, core: &Core, bare: &BareJid) {
        if !core.is_clustered() {
            return;
        }
        let due = {
            let mut w = self
                .watched
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            w.get_mut(bare)
                .filter(|e| e.tx.receiver_count() > 0)
                .filter(|e| e.announced.is_none_or(|t| t.elapsed() >= REFRESH))
                .map(|e| e.announced = Some(Instant::now()))
                .is_some()
        };
        if due {
            core.tell_peers(WATCH_TOPIC, || bare.to_string());
        }
    }

    /// Starts watching `bare`: the receiver, and the resources available now (`core`'s
    /// sessions with a priority have sent available presence).
    fn watch(&self, core: &Core, bare: &BareJid) -> (broadcast::Receiver<Change>, Vec<Change>) {
        let now: Vec<Change> = core
            .sessions_of(bare)
            .into_iter()
            .filter_map(|(h, prio)| {
                prio.map(|p| Change {
                    jid: h.jid().clone(),
                    available: true,
                    show: None,
                    status: None,
                    priority: Some(p),
                })
            })
            .collect();
        let mut w = self
            .watched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Accounts whose watchers all left and that said nothing since: forget them here,
        // so the map holds only watched accounts.
        w.retain(|_, e| e.tx.receiver_count() > 0);
        let entry = w.entry(bare.clone()).or_insert_with(|| Watched {
            tx: broadcast::channel(CAPACITY).0,
            available: HashSet::new(),
            announced: None,
        });
        entry.available.extend(now.iter().map(|c| c.jid.clone()));
        let rx = entry.tx.subscribe();
        drop(w);
        self.announce(core, bare);
        (rx, now)
    }

    /// The sessions of a dead node (told on the home node only): each that was available
    /// goes `unavailable` for the watchers, here and on the watching peers.
    fn lost(&self, core: &Core, lost: &[LostSession]) {
        for s in lost.iter().filter(|s| s.available) {
            self.tell(core, Change::gone(&s.jid));
        }
    }
}

#[async_trait]
impl Module for PresenceStreams {
    fn name(&self) -> &'static str {
        "presence-stream"
    }

    fn declare(&self) -> Declaration {
        Declaration {
            hooks: vec![(HookPoint::PresenceBroadcast, priority::OBSERVE)],
            events: vec![
                (EventKind::Session, priority::OBSERVE),
                (EventKind::SessionsLost, priority::OBSERVE),
                (EventKind::ClusterNote, priority::OBSERVE),
            ],
            ..Declaration::default()
        }
    }

    async fn hook(&self, core: &Arc<Core>, _point: HookPoint, stanza: Stanza) -> Flow {
        let available = match stanza.kind() {
            StanzaKind::Presence(PresenceType::Available) => Some(true),
            StanzaKind::Presence(PresenceType::Unavailable) => Some(false),
            _ => None,
        };
        if let (Some(available), Some(from)) = (available, stanza.from()) {
            if from.is_full() {
                self.tell(core, Change::of_presence(from, available, &stanza));
            }
        }
        Flow::Continue(stanza)
    }

    async fn event(&self, core: &Arc<Core>, event: &Event) {
        match event {
            Event::Session(SessionEvent::Closed(jid)) => self.tell(core, Change::gone(jid)),
            Event::SessionsLost(lost) => self.lost(core, lost),
            Event::ClusterNote { topic, body } if topic == WATCH_TOPIC => self.peer_watches(body),
            Event::ClusterNote { topic, body } if topic == CHANGE_TOPIC => {
                match Change::from_note(body) {
                    Some(c) => self.tell_here(c),
                    None => tracing::warn!(body, "unreadable presence-stream note from a peer"),
                }
            }
            _ => {}
        }
    }
}

/// One stream's watch of `bare`.
struct Watcher {
    rx: broadcast::Receiver<Change>,
    /// Ticks every [`REFRESH`]: the peers are told again while the watcher stays.
    refresh: tokio::time::Interval,
    streams: Arc<PresenceStreams>,
    core: Arc<Core>,
    bare: BareJid,
}

impl Watcher {
    /// The next change; `None` when the watcher fell behind or the account is gone.
    async fn next(&mut self) -> Option<Change> {
        loop {
            tokio::select! {
                c = self.rx.recv() => return c.ok(),
                _ = self.refresh.tick() => self.streams.announce(&self.core, &self.bare),
            }
        }
    }
}

/// `GET /presence/{bare-jid}` as `text/event-stream`.
pub async fn stream(
    State(ctx): State<Arc<WebContext>>,
    Path(target): Path<String>,
    headers: HeaderMap,
    caller: Caller,
) -> Result<Response, HttpError> {
    if !sse::wants_event_stream(&headers) {
        return Err(HttpError::NotAcceptable(
            "this URL streams text/event-stream",
        ));
    }
    let who = caller
        .jid_for(Scope::Read)?
        .ok_or(AuthError::Required)?
        .clone();
    let Some(streams) = ctx.presence.as_ref() else {
        return Err(NOT_FOUND);
    };
    let target = BareJid::parse(&target).map_err(|_| NOT_FOUND)?;
    if target.local().is_none() || !ctx.nodes.is_hosted(target.domain()) {
        return Err(NOT_FOUND);
    }
    if who != target
        && !streams
            .policy
            .has_presence_subscription(&target, &who)
            .await
    {
        return Err(HttpError::Status(
            StatusCode::FORBIDDEN,
            "presence-subscription-required",
        ));
    }
    let core = ctx.c2s.core.clone();
    let (rx, now) = streams.watch(&core, &target);
    let mut first = format!("retry: {RETRY_MS}\n\n");
    for c in &now {
        first.push_str(&c.to_event());
    }
    let watcher = Watcher {
        rx,
        refresh: tokio::time::interval_at(tokio::time::Instant::now() + REFRESH, REFRESH),
        streams: streams.clone(),
        core,
        bare: target,
    };
    // Fell behind or the account is gone: the stream ends; the client reconnects.
    let events = futures_util::stream::unfold(watcher, |mut w| async move {
        let c = w.next().await?;
        Some((Bytes::from(c.to_event()), w))
    });
    Ok(sse::respond(ctx.stopped.clone(), first, events))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rookery_xml::Element;

    #[test]
    fn presence_to_event() {
        let jid = Jid::parse("meter@example.org/m1").unwrap();
        let mut el = Element::new("presence", CONTENT_NS).with_attr("from", jid.as_str());
        el.push_child(Element::new("show", CONTENT_NS).with_text("away"));
        el.push_child(Element::new("priority", CONTENT_NS).with_text("5"));
        let p = Stanza::from_element(el).unwrap();
        let c = Change::of_presence(&jid, true, &p);
        assert_eq!(
            c.to_event(),
            "event: available\ndata: {\"jid\":\"meter@example.org/m1\",\"priority\":5,\"show\":\"away\"}\n\n"
        );
        let gone = Change::of_presence(&jid, false, &p);
        assert!(gone.to_event().starts_with("event: unavailable\n"));
    }

    #[test]
    fn changes_cross_as_notes_and_bad_notes_do_not() {
        let c = Change {
            jid: Jid::parse("meter@example.org/m 1").unwrap(),
            available: true,
            show: Some("dnd".into()),
            status: Some("two\nlines".into()),
            priority: Some(-3),
        };
        assert_eq!(Change::from_note(&c.to_note()), Some(c.clone()));
        let gone = Change::gone(&c.jid);
        assert_eq!(Change::from_note(&gone.to_note()), Some(gone));
        for bad in [
            "",
            "{}",
            "{\"jid\":\"meter@example.org\",\"available\":true}",
            "[1]",
        ] {
            assert_eq!(Change::from_note(bad), None, "{bad}");
        }
    }

    #[test]
    fn peer_watches_last_a_lease() {
        let s = PresenceStreams::new(Arc::new(rookery_pubsub::policy::NoRosters));
        let (a, b) = (
            BareJid::parse("a@x").unwrap(),
            BareJid::parse("b@x").unwrap(),
        );
        s.peer_watches("a@x\nnot a jid@@\n");
        assert!(s.watched_by_peers(&a));
        assert!(!s.watched_by_peers(&b));
        s.peers
            .lock()
            .unwrap()
            .until
            .insert(b.clone(), Instant::now() - WATCH_LEASE);
        assert!(!s.watched_by_peers(&b));
    }

    #[test]
    fn unavailable_is_told_once() {
        let s = PresenceStreams::new(Arc::new(rookery_pubsub::policy::NoRosters));
        let bare = BareJid::parse("a@x").unwrap();
        let jid = Jid::parse("a@x/r").unwrap();
        let mut rx = {
            let mut w = s.watched.lock().unwrap();
            let (tx, rx) = broadcast::channel(4);
            w.insert(
                bare,
                Watched {
                    tx,
                    available: HashSet::new(),
                    announced: None,
                },
            );
            rx
        };
        let change = |available| Change {
            jid: jid.clone(),
            available,
            show: None,
            status: None,
            priority: None,
        };
        s.tell_here(change(true));
        s.tell_here(change(false));
        s.tell_here(change(false));
        assert!(rx.try_recv().unwrap().available);
        assert!(!rx.try_recv().unwrap().available);
        assert!(rx.try_recv().is_err());
    }
}
