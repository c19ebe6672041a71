//! Pubsub and PEP across the nodes of a cluster (docs/clustering.md, "Pubsub and PEP").
//!
//! Every node's engines keep the nodes of the services they served in memory (engine.rs,
//! "State and ordering"), while all nodes share one store. So that a node acts on what
//! another committed, each engine tells its peers (`Core::tell_peers`, in order, one bus
//! message reaching every node) two kinds of note:
//!
//! - a **change** ([`TOPIC_CHANGE`]): a node's items changed (with its item count and next
//!   sequence number, which the receiver takes as they are) or its state did (configuration,
//!   affiliations, subscriptions, creation, deletion — the receiver reads the node from the
//!   store again). A node that never loaded the service ignores it: its first use reads the
//!   store anyway.
//! - a **PEP relay** ([`TOPIC_RELAY`]): a PEP notification, for the resources of *this* node
//!   that want it through their XEP-0115 `+notify` capabilities (XEP-0163 §4.3). Those
//!   capabilities are known only to the IM layer of the node where the resource is bound,
//!   so each node picks its own interested resources; the explicit subscribers were already
//!   reached by the publishing node, whose fan-out covers every node (one batch per node).
//!
//! Both are XML in a namespace of Rookery's own ([`NS`]), parsed with the stored-fragment
//! limits: a note that does not read is dropped, never a panic. [`PeerSync`] is the module
//! that receives them.

use std::sync::Arc;

use async_trait::async_trait;
use rookery_core::{priority, Core, Declaration, Event, EventKind as CoreEventKind, Module};
use rookery_jid::{BareJid, Jid};
use rookery_xml::Element;

use crate::broadcast::{AccessSnapshot, EventKind, Notification, Recipient};
use crate::config::{AccessModel, NotificationType};
use crate::engines::Engines;

/// The notes' namespace (never on the wire to clients).
pub const NS: &str = "urn:rookery:cluster:pubsub";
/// The topic of [`Change`] notes.
pub const TOPIC_CHANGE: &str = "pubsub.change";
/// The topic of PEP relays.
pub const TOPIC_RELAY: &str = "pubsub.relay";

/// What changed in a pubsub node, as the other nodes are told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeChange {
    /// Items were published, retracted or purged: the node's item count and next sequence
    /// number after the change.
    Items {
        /// Items stored.
        count: u64,
        /// The sequence number of the next item.
        next_seq: i64,
    },
    /// Configuration, affiliations or subscriptions changed, or the node was created or
    /// deleted: read it again.
    State,
}

/// A change note: `node` of `service` (every node of it when `None`) changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The service.
    pub service: BareJid,
    /// The node; `None` for the whole service (deleted with its account).
    pub node: Option<String>,
    /// What changed.
    pub change: NodeChange,
}

impl Change {
    /// The note's body.
    pub fn encode(&self) -> String {
        let mut el = Element::new("change", NS).with_attr("service", self.service.as_str());
        if let Some(n) = &self.node {
            el.set_attr("node", n.clone());
        }
        if let NodeChange::Items { count, next_seq } = self.change {
            el.set_attr("count", count.to_string());
            el.set_attr("next", next_seq.to_string());
        }
        crate::xml::to_string(&el)
    }

    /// From a note's body.
    pub fn decode(body: &str) -> Option<Change> {
        let el = crate::xml::parse(body).filter(|e| e.is("change", NS))?;
        let service = BareJid::parse(el.attr("service")?).ok()?;
        let change = match (el.attr("count"), el.attr("next")) {
            (Some(c), Some(n)) => NodeChange::Items {
                count: c.parse().ok()?,
                next_seq: n.parse().ok()?,
            },
            _ => NodeChange::State,
        };
        Some(Change {
            service,
            node: el.attr("node").map(str::to_string),
            change,
        })
    }
}

fn kind_str(k: EventKind) -> &'static str {
    match k {
        EventKind::Items => "items",
        EventKind::Retract => "retract",
        EventKind::Purge => "purge",
        EventKind::Delete => "delete",
        EventKind::Configuration => "configuration",
        EventKind::Subscription => "subscription",
    }
}

fn parse_kind(s: &str) -> Option<EventKind> {
    Some(match s {
        "items" => EventKind::Items,
        "retract" => EventKind::Retract,
        "purge" => EventKind::Purge,
        "delete" => EventKind::Delete,
        "configuration" => EventKind::Configuration,
        "subscription" => EventKind::Subscription,
        _ => return None,
    })
}

/// A PEP relay's body: the notification with the facts the receiver needs to pick its own
/// recipients (the access snapshot, and the subscribers already reached).
pub fn encode_relay(n: &Notification) -> String {
    let a = &n.access;
    let mut el = Element::new("relay", NS)
        .with_attr("service", n.service.as_str())
        .with_attr("node", n.node.clone())
        .with_attr("kind", kind_str(n.kind))
        .with_attr("type", n.message_type.as_str())
        .with_attr("model", a.model.as_str());
    let mut list = |name: &str, values: &mut dyn Iterator<Item = &str>| {
        for v in values {
            el.push_child(Element::new(name, NS).with_text(v.to_string()));
        }
    };
    list("group", &mut a.roster_groups.iter().map(String::as_str));
    list("member", &mut a.members.iter().map(BareJid::as_str));
    list("outcast", &mut a.outcasts.iter().map(BareJid::as_str));
    list("subscribed", &mut a.subscribed.iter().map(BareJid::as_str));
    list(
        "recipient",
        &mut n.recipients.iter().map(|r| r.jid.as_str()),
    );
    el.push_child(n.event.clone());
    crate::xml::to_string(&el)
}

/// A PEP relay from its body.
pub fn decode_relay(body: &str) -> Option<Notification> {
    let el = crate::xml::parse(body).filter(|e| e.is("relay", NS))?;
    let texts = |name: &str| -> Vec<String> {
        el.children()
            .filter(|c| c.is(name, NS))
            .map(Element::text)
            .collect()
    };
    let bares = |name: &str| -> Option<Vec<BareJid>> {
        texts(name).iter().map(|t| BareJid::parse(t).ok()).collect()
    };
    let recipients = texts("recipient")
        .iter()
        .map(|t| {
            Jid::parse(t).ok().map(|jid| Recipient {
                jid,
                subids: Vec::new(),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    let access = AccessSnapshot {
        model: AccessModel::parse(el.attr("model")?)?,
        roster_groups: texts("group"),
        members: bares("member")?,
        outcasts: bares("outcast")?,
        subscribed: bares("subscribed")?,
    };
    let event = el
        .children()
        .find(|c| c.is("event", crate::ns::EVENT))?
        .clone();
    Some(Notification {
        service: BareJid::parse(el.attr("service")?).ok()?,
        node: el.attr("node")?.to_string(),
        kind: parse_kind(el.attr("kind")?)?,
        event,
        message_type: NotificationType::parse(el.attr("type")?)?,
        recipients: recipients.into(),
        access: Arc::new(access),
    })
}

/// The module that receives the other nodes' pubsub notes and hands each to the engine of
/// its service (the pubsub service's, or PEP's for an account).
#[derive(Debug)]
pub struct PeerSync {
    engines: Engines,
}

impl PeerSync {
    /// Receives notes for `engines`.
    pub fn new(engines: Engines) -> PeerSync {
        PeerSync { engines }
    }

    fn engine(&self, svc: &BareJid) -> Option<&Arc<crate::Engine>> {
        self.engines.engine_of(svc)
    }
}

#[async_trait]
impl Module for PeerSync {
    fn name(&self) -> &'static str {
        "pubsub-cluster"
    }

    fn declare(&self) -> Declaration {
        Declaration {
            events: vec![(CoreEventKind::ClusterNote, priority::DEFAULT)],
            ..Declaration::default()
        }
    }

    async fn event(&self, _core: &Arc<Core>, event: &Event) {
        let Event::ClusterNote { topic, body } = event else {
            return;
        };
        match topic.as_str() {
            TOPIC_CHANGE => {
                let Some(c) = Change::decode(body) else {
                    return tracing::warn!("unreadable pubsub change from a peer");
                };
                if let Some(e) = self.engine(&c.service) {
                    e.peer_changed(&c.service, c.node.as_deref(), c.change)
                        .await;
                }
            }
            TOPIC_RELAY => {
                let Some(n) = decode_relay(body) else {
                    return tracing::warn!("unreadable PEP relay from a peer");
                };
                if let Some(e) = self.engine(&n.service) {
                    e.broadcaster().relayed(&n).await;
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn changes_round_trip() {
        let svc = BareJid::parse("alice@localhost").unwrap();
        for c in [
            Change {
                service: svc.clone(),
                node: Some("urn:xmpp:tune".into()),
                change: NodeChange::Items {
                    count: 3,
                    next_seq: 17,
                },
            },
            Change {
                service: svc.clone(),
                node: None,
                change: NodeChange::State,
            },
        ] {
            assert_eq!(Change::decode(&c.encode()).unwrap(), c);
        }
        assert!(Change::decode("<change xmlns='x' service='a@b'/>").is_none());
        assert!(Change::decode("<change").is_none());
    }

    #[test]
    fn a_relay_carries_what_the_receiver_needs() {
        let ev = crate::engine::items_event("n", &[], false);
        let n = Notification {
            service: BareJid::parse("alice@localhost").unwrap(),
            node: "n".into(),
            kind: EventKind::Retract,
            event: ev.clone(),
            message_type: NotificationType::Normal,
            recipients: vec![Recipient {
                jid: Jid::parse("bob@localhost/x").unwrap(),
                subids: vec!["1".into(), "2".into()],
            }]
            .into(),
            access: Arc::new(AccessSnapshot {
                model: AccessModel::Roster,
                roster_groups: vec!["friends & <family>".into()],
                members: vec![BareJid::parse("alice@localhost").unwrap()],
                outcasts: vec![BareJid::parse("eve@localhost").unwrap()],
                subscribed: Vec::new(),
            }),
        };
        let back = decode_relay(&encode_relay(&n)).unwrap();
        assert_eq!(back.service, n.service);
        assert_eq!(back.node, "n");
        assert_eq!(back.kind, EventKind::Retract);
        assert_eq!(back.event, ev);
        assert_eq!(back.message_type, NotificationType::Normal);
        assert_eq!(back.access, n.access);
        assert_eq!(back.recipients[0].jid, n.recipients[0].jid);
        let bad = encode_relay(&n).replace("eve@localhost", "@@");
        assert!(decode_relay(&bad).is_none(), "a bad JID drops the note");
    }
}
