//! Delivery of event notifications (XEP-0060 §7.1.2, §7.2.2, §8.2.5.3, §8.4.2, §8.5.2),
//! injected into the engine (design.md point 9).
//!
//! The engine decides *what* happened and *who subscribed*; a [`Broadcaster`] delivers. The
//! service uses [`CoreBroadcaster`]; PEP wraps it to add the contacts whose entity
//! capabilities show interest (`+notify`, XEP-0163 §4.3).
//!
//! # Serialize once
//! A notification goes to many recipients that differ only in `to`: [`template`] builds the
//! message (event and payload) once, without `to`, as the core's [`Template`], and
//! [`Core::deliver_rendered`] — the server's one fan-out path — splices each recipient's `to`
//! into those bytes, applies XEP-0191 blocking and the delivery rules. SubID headers
//! (XEP-0131) are added only for a recipient holding several subscriptions (§12.?
//! "Multiple subscriptions"): it alone gets its own template.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use async_trait::async_trait;
use rookery_core::{Core, Template};
use rookery_jid::{BareJid, Jid};
use rookery_proto::Stanza;
use rookery_xml::{Element, CONTENT_NS};

use crate::config::{AccessModel, NotificationType};
use rookery_proto::ns;

/// What an event notification reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Published items.
    Items,
    /// Retracted items.
    Retract,
    /// All items purged.
    Purge,
    /// The node was deleted.
    Delete,
    /// The configuration changed.
    Configuration,
    /// A subscription changed (to the subscriber on approval, to owners with `notify_sub`).
    Subscription,
}

/// One recipient of a notification: a subscribed JID and, when it holds several
/// subscriptions, their SubIDs (carried in SHIM headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// Where to send.
    pub jid: Jid,
    /// SubIDs to list in headers; empty when the JID has one subscription.
    pub subids: Vec<String>,
}

/// The access facts of a node at the time of an event, for broadcasters that add
/// recipients of their own (PEP) and must not widen access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessSnapshot {
    /// The node's access model.
    pub model: AccessModel,
    /// Its allowed roster groups.
    pub roster_groups: Vec<String>,
    /// Bare JIDs affiliated as owner, publisher or member.
    pub members: Vec<BareJid>,
    /// Bare JIDs affiliated as outcast.
    pub outcasts: Vec<BareJid>,
    /// Bare JIDs with an approved subscription.
    pub subscribed: Vec<BareJid>,
}

/// One event, built once by the engine.
#[derive(Debug, Clone)]
pub struct Notification {
    /// The service (its domain, or the PEP account).
    pub service: BareJid,
    /// The node.
    pub node: String,
    /// What happened.
    pub kind: EventKind,
    /// The `<event xmlns='…pubsub#event'/>` child.
    pub event: Element,
    /// The message `type`.
    pub message_type: NotificationType,
    /// Subscribers to notify (after `pubsub#deliver` and state filtering); shared by every
    /// notification of the node until its subscriptions change.
    pub recipients: Arc<[Recipient]>,
    /// Access facts of the node.
    pub access: Arc<AccessSnapshot>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh id for a server-generated message, unique within the service (§12.1, for
/// tracking delivery errors): a counter behind a prefix drawn at random once per process,
/// since the counter starts again on a restart and on every node of a cluster.
pub fn message_id() -> String {
    static BOOT: OnceLock<u64> = OnceLock::new();
    let boot = BOOT.get_or_init(rand::random::<u64>);
    format!("ps-{boot:016x}-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

/// The notification message, without `to`: from `from`, of `kind`, with `id`, carrying
/// `payload` (and SubID headers when `subids` has more than one).
pub fn message(from: &str, kind: &str, id: &str, payload: &Element, subids: &[String]) -> Element {
    let mut msg = Element::new("message", CONTENT_NS)
        .with_attr("from", from)
        .with_attr("type", kind)
        .with_attr("id", id)
        .with_child(payload.clone());
    if subids.len() > 1 {
        let mut h = Element::new("headers", ns::SHIM);
        for s in subids {
            h.push_child(
                Element::new("header", ns::SHIM)
                    .with_attr("name", "SubID")
                    .with_text(s.clone()),
            );
        }
        msg.push_child(h);
    }
    msg
}

/// The notification message of [`message`], serialized once for the core's fan-out.
/// `None` only when `from` is not a JID (never for a service or account).
pub fn template(
    from: &str,
    kind: &str,
    id: &str,
    payload: &Element,
    subids: &[String],
) -> Option<Template> {
    Stanza::from_element(message(from, kind, id, payload, subids))
        .ok()
        .map(Template::new)
}

/// Delivers notifications and single messages for the engine.
#[async_trait]
pub trait Broadcaster: Send + Sync + 'static {
    /// Delivers a notification to its recipients (and whoever else this broadcaster adds).
    async fn broadcast(&self, n: &Notification);

    /// Sends one message (approval requests, the last item to a new subscriber).
    async fn send(&self, stanza: Stanza);

    /// The core through which the engine tells the other nodes of a cluster what it
    /// committed (`crate::peers`); `None` for a broadcaster outside a server.
    fn peers(&self) -> Option<Arc<Core>> {
        None
    }

    /// Delivers a notification another node of a cluster relayed (`crate::peers`) to the
    /// recipients only this node knows of; its subscribers were reached already.
    async fn relayed(&self, _n: &Notification) {}
}

/// A broadcaster that drops everything (tests of the engine alone).
#[derive(Debug, Default)]
pub struct Discard;

#[async_trait]
impl Broadcaster for Discard {
    async fn broadcast(&self, _n: &Notification) {}
    async fn send(&self, _stanza: Stanza) {}
}

/// Delivers through the core's one fan-out path ([`Core::deliver_rendered`]: blocking and
/// the delivery rules for local, remote and component recipients alike).
#[derive(Default)]
pub struct CoreBroadcaster {
    core: OnceLock<Weak<Core>>,
}

impl std::fmt::Debug for CoreBroadcaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreBroadcaster").finish_non_exhaustive()
    }
}

impl CoreBroadcaster {
    /// A broadcaster to attach once the core is built.
    pub fn new() -> CoreBroadcaster {
        CoreBroadcaster::default()
    }

    /// Connects it to the core (the first call wins). A weak reference: the core owns the
    /// routes that own this broadcaster.
    pub fn attach(&self, core: &Arc<Core>) {
        let _ = self.core.set(Arc::downgrade(core));
    }

    /// The core, while it lives.
    pub fn core(&self) -> Option<Arc<Core>> {
        self.core.get().and_then(Weak::upgrade)
    }

    /// Delivers `n` to each of `targets`: one template for all, and one of its own for a
    /// target with several SubIDs (it alone gets the headers).
    pub async fn deliver(&self, n: &Notification, targets: &[Recipient]) {
        let Some(core) = self.core() else { return };
        rookery_metrics::get().pubsub_notifications(targets.len() as u64);
        let from = n.service.as_str();
        let kind = n.message_type.as_str();
        let id = message_id();
        if let Some(t) = template(from, kind, &id, &n.event, &[]) {
            let plain: Vec<&Jid> = targets
                .iter()
                .filter(|r| r.subids.len() <= 1)
                .map(|r| &r.jid)
                .collect();
            core.deliver_rendered(&t, plain).await;
        }
        for r in targets.iter().filter(|r| r.subids.len() > 1) {
            if let Some(t) = template(from, kind, &id, &n.event, &r.subids) {
                core.deliver_rendered(&t, [&r.jid]).await;
            }
        }
    }
}

#[async_trait]
impl Broadcaster for CoreBroadcaster {
    async fn broadcast(&self, n: &Notification) {
        self.deliver(n, &n.recipients).await;
    }

    async fn send(&self, stanza: Stanza) {
        if let Some(core) = self.core() {
            core.route(stanza).await;
        }
    }

    fn peers(&self) -> Option<Arc<Core>> {
        self.core()
    }
}

/// Groups subscriptions by JID: one recipient per JID, with SubIDs when it has several.
pub fn recipients<'a>(subs: impl Iterator<Item = (&'a Jid, &'a str)>) -> Vec<Recipient> {
    let mut order: Vec<Jid> = Vec::new();
    let mut by: HashMap<Jid, Vec<String>> = HashMap::new();
    for (jid, subid) in subs {
        let e = by.entry(jid.clone()).or_insert_with(|| {
            order.push(jid.clone());
            Vec::new()
        });
        e.push(subid.to_string());
    }
    order
        .into_iter()
        .map(|jid| {
            let subids = by.remove(&jid).unwrap_or_default();
            Recipient {
                jid,
                subids: if subids.len() > 1 { subids } else { Vec::new() },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn template_splices_to() {
        let ev = Element::new("event", ns::pubsub::EVENT)
            .with_child(Element::new("items", ns::pubsub::EVENT).with_attr("node", "n"));
        let t = template("pubsub.example.org", "headline", "x1", &ev, &[]).unwrap();
        let a = t.render("a@example.org/r\"");
        let s = std::str::from_utf8(&a).unwrap();
        assert_eq!(
            s,
            "<message to=\"a@example.org/r&quot;\" from=\"pubsub.example.org\" type=\"headline\" \
             id=\"x1\"><event xmlns=\"http://jabber.org/protocol/pubsub#event\"><items node=\"n\"/>\
             </event></message>"
        );
        let st = t.addressed(&Jid::parse("b@example.org").unwrap());
        assert_eq!(st.to().unwrap().as_str(), "b@example.org");
        let h = template("p", "headline", "x2", &ev, &["1".into(), "2".into()]).unwrap();
        let s = String::from_utf8(h.render("c@d").to_vec()).unwrap();
        assert!(s.contains("<header name=\"SubID\">1</header><header name=\"SubID\">2</header>"));
    }

    #[test]
    fn recipients_group_subids() {
        let a = Jid::parse("a@x").unwrap();
        let b = Jid::parse("b@x/r").unwrap();
        let r = recipients([(&a, "1"), (&b, "2"), (&a, "3")].into_iter());
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].jid, a);
        assert_eq!(r[0].subids, ["1", "3"]);
        assert!(r[1].subids.is_empty());
    }
}
