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
//! Events: `available` (on every available presence: initial or a change of `show`/`status`)
//! and `unavailable`, `data:` a JSON object `{"jid", "show"?, "status"?, "priority"?}`. A
//! stream starts with an `available` event per resource available at that moment.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use rookery_core::{
    priority, Core, Declaration, Event, EventKind, Flow, HookPoint, Module, SessionEvent,
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

    /// The SSE event.
    pub fn to_event(&self) -> String {
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
        let kind = if self.available {
            "available"
        } else {
            "unavailable"
        };
        format_event(kind, None, &serde_json::Value::from(data).to_string())
    }
}

/// One watched account: its channel and its resources known to be available (so that a
/// session ending after an explicit `unavailable` is not announced twice).
struct Watched {
    tx: broadcast::Sender<Change>,
    available: HashSet<Jid>,
}

/// The presence watchers of every local account, and the module feeding them.
pub struct PresenceStreams {
    watched: Mutex<HashMap<BareJid, Watched>>,
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
            policy,
        }
    }

    /// Passes `change` to the watchers of its account, if any (and forgets an account
    /// nobody watches any more).
    fn tell(&self, change: Change) {
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
        });
        entry.available.extend(now.iter().map(|c| c.jid.clone()));
        (entry.tx.subscribe(), now)
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
            events: vec![(EventKind::Session, priority::OBSERVE)],
            ..Declaration::default()
        }
    }

    async fn hook(&self, _core: &Arc<Core>, _point: HookPoint, stanza: Stanza) -> Flow {
        let available = match stanza.kind() {
            StanzaKind::Presence(PresenceType::Available) => Some(true),
            StanzaKind::Presence(PresenceType::Unavailable) => Some(false),
            _ => None,
        };
        if let (Some(available), Some(from)) = (available, stanza.from()) {
            if from.is_full() {
                self.tell(Change::of_presence(from, available, &stanza));
            }
        }
        Flow::Continue(stanza)
    }

    async fn event(&self, _core: &Arc<Core>, event: &Event) {
        if let Event::Session(SessionEvent::Closed(jid)) = event {
            self.tell(Change {
                jid: jid.clone(),
                available: false,
                show: None,
                status: None,
                priority: None,
            });
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
    let (rx, now) = streams.watch(&ctx.c2s.core, &target);
    let mut first = format!("retry: {RETRY_MS}\n\n");
    for c in &now {
        first.push_str(&c.to_event());
    }
    // Fell behind or the account is gone: the stream ends; the client reconnects.
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        let c = rx.recv().await.ok()?;
        Some((Bytes::from(c.to_event()), rx))
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
        s.tell(change(true));
        s.tell(change(false));
        s.tell(change(false));
        assert!(rx.try_recv().unwrap().available);
        assert!(!rx.try_recv().unwrap().available);
        assert!(rx.try_recv().is_err());
    }
}
