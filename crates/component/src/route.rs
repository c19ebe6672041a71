//! The router's side of one configured component: a [`DomainRoute`] registered for its domain
//! at start-up and kept while the component comes and goes, so that stanzas for a
//! disconnected component are answered here (`service-unavailable` for IQ get/set and
//! messages, presence and replies dropped) instead of leaking to the remote (s2s) route.
//!
//! The connection is a [`SessionHandle`]: a bounded queue of serialized stanzas plus a kill
//! switch. When the component does not read and its queue fills up, the handle disconnects it
//! (logged with the domain) and the stanza that did not fit is bounced like one sent while it
//! was away; other components and clients never wait for it.
//!
//! In a cluster (docs/clustering.md, "Components"), the same component may be connected to
//! several nodes, one connection each: the route also holds the connections of the other
//! nodes ([`DomainRoute::peer`], remote handles the cluster drains to their nodes). A stanza
//! goes to the connection here when there is one, else to one of the others; one that came
//! over the bus for this node's connection ([`DomainRoute::deliver_here`]) never crosses
//! again.

use std::sync::{PoisonError, RwLock};

use async_trait::async_trait;
use bytes::Bytes;
use rookery_core::{DomainRoute, SessionHandle, SessionId, Undelivered};
use rookery_jid::Jid;
use rookery_proto::{
    IqType, MessageType, Stanza, StanzaError, StanzaErrorCondition, StanzaKind, StreamError,
};

use crate::config::OnConflict;

/// One configured component domain and its connection, if any.
pub struct ComponentRoute {
    jid: Jid,
    name: Option<String>,
    secret: String,
    current: RwLock<Option<SessionHandle>>,
    /// The connections on other nodes of a cluster, by node.
    peers: RwLock<Vec<(String, SessionHandle)>>,
}

/// The connection already serving a domain refused a new one ([`OnConflict::Conflict`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

impl ComponentRoute {
    /// A route for the component at `jid` (a domain JID), not connected.
    pub fn new(jid: Jid, name: Option<String>, secret: String) -> Self {
        ComponentRoute {
            jid,
            name,
            secret,
            current: RwLock::new(None),
            peers: RwLock::new(Vec::new()),
        }
    }

    /// The component's domain.
    pub fn domain(&self) -> &str {
        self.jid.domain()
    }

    /// The component's domain as a JID.
    pub fn jid(&self) -> &Jid {
        &self.jid
    }

    /// The shared secret.
    pub(crate) fn secret(&self) -> &str {
        &self.secret
    }

    /// Whether a component is connected now (and not being disconnected).
    pub fn is_connected(&self) -> bool {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|h| !h.is_closed())
    }

    /// Makes `handle` the connection of this domain. With a connection already there,
    /// `policy` decides: refuse the new one, or replace the old one, which is returned for the
    /// caller to close.
    pub fn attach(
        &self,
        handle: SessionHandle,
        policy: OnConflict,
    ) -> Result<Option<SessionHandle>, Busy> {
        let mut cur = self.current.write().unwrap_or_else(PoisonError::into_inner);
        // A connection already told to close (its queue overflowed) no longer counts.
        let live = cur.as_ref().is_some_and(|h| !h.is_closed());
        if live && policy == OnConflict::Conflict {
            return Err(Busy);
        }
        Ok(cur.replace(handle))
    }

    /// Forgets the connection `id` if it is still the current one; true if it was.
    pub fn detach(&self, id: SessionId) -> bool {
        let mut cur = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if cur.as_ref().is_some_and(|h| h.id() == id) {
            *cur = None;
            return true;
        }
        false
    }

    /// Queues `bytes` on the connection here, if there is one that takes them.
    fn send_here(&self, bytes: &Bytes) -> bool {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|h| !h.is_closed())
            .is_some_and(|h| h.send(bytes.clone()))
    }

    /// Queues `bytes` for the connection of another node, the first that takes them.
    fn send_to_peer(&self, bytes: &Bytes) -> bool {
        self.peers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|(_, h)| !h.is_closed() && h.send(bytes.clone()))
    }

    /// Whether another node of a cluster has a connection for this domain.
    fn has_peers(&self) -> bool {
        !self
            .peers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Closes the connection, if any, with `reason`.
    pub fn close(&self, reason: &StreamError) {
        if let Some(h) = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            h.close(reason.clone());
        }
    }
}

/// What a stanza that cannot reach the component gets: `service-unavailable` for IQ get/set
/// and messages (RFC 6120 §8.3.3.19), nothing for presence, IQ results and errors.
pub(crate) fn unavailable(stanza: &Stanza) -> Result<(), StanzaError> {
    match stanza.kind() {
        StanzaKind::Iq(IqType::Get | IqType::Set) => {}
        StanzaKind::Message(t) if t != MessageType::Error => {}
        _ => return Ok(()),
    }
    Err(StanzaError::new(StanzaErrorCondition::ServiceUnavailable)
        .with_text("the component is not connected"))
}

#[async_trait]
impl DomainRoute for ComponentRoute {
    async fn deliver(&self, stanza: Stanza) -> Result<(), Box<Undelivered>> {
        // Serialized outside the lock; on a component stream the default namespace is
        // jabber:component:accept, so the unprefixed stanza lands in it.
        let bytes = Bytes::from(stanza.to_bytes());
        if self.send_here(&bytes) || self.send_to_peer(&bytes) {
            Ok(())
        } else {
            unavailable(&stanza).map_err(|e| Undelivered::new(stanza, e))
        }
    }

    async fn deliver_here(&self, stanza: Stanza) -> Result<(), Box<Undelivered>> {
        if self.send_here(&Bytes::from(stanza.to_bytes())) {
            Ok(())
        } else {
            unavailable(&stanza).map_err(|e| Undelivered::new(stanza, e))
        }
    }

    fn peer(&self, node: &str, handle: Option<SessionHandle>) {
        let mut peers = self.peers.write().unwrap_or_else(PoisonError::into_inner);
        peers.retain(|(n, _)| n != node);
        if let Some(h) = handle {
            peers.push((node.to_string(), h));
        }
    }

    fn listed(&self) -> bool {
        self.is_connected() || self.has_peers()
    }

    fn name(&self) -> Option<String> {
        self.name.clone()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rookery_xml::{Element, CONTENT_NS};

    fn route() -> ComponentRoute {
        ComponentRoute::new(Jid::parse("bot.example.org").unwrap(), None, "s".into())
    }

    fn stanza(name: &str, ty: Option<&str>) -> Stanza {
        let mut el = Element::new(name, CONTENT_NS)
            .with_attr("to", "bot.example.org")
            .with_attr("from", "a@example.org/r")
            .with_attr("id", "1");
        if let Some(t) = ty {
            el.set_attr("type", t);
        }
        if name == "iq" {
            el.push_child(Element::new("ping", "urn:xmpp:ping"));
        }
        Stanza::from_element(el).unwrap()
    }

    #[tokio::test]
    async fn disconnected_bounces_iq_and_message_and_drops_the_rest() {
        let r = route();
        for (n, t) in [("iq", Some("get")), ("iq", Some("set")), ("message", None)] {
            let e = r.deliver(stanza(n, t)).await.unwrap_err().error;
            assert_eq!(e.condition, StanzaErrorCondition::ServiceUnavailable);
        }
        for (n, t) in [
            ("presence", None),
            ("presence", Some("subscribe")),
            ("presence", Some("probe")),
            ("iq", Some("result")),
            ("message", Some("error")),
        ] {
            assert!(r.deliver(stanza(n, t)).await.is_ok(), "{n} {t:?}");
        }
        assert!(!r.listed());
    }

    #[tokio::test]
    async fn connected_queues_bytes_and_overflow_disconnects() {
        let r = route();
        let (h, mut end) = SessionHandle::new(7, r.jid().clone(), 1);
        assert!(r.attach(h, OnConflict::Conflict).unwrap().is_none());
        assert!(r.listed());
        r.deliver(stanza("message", Some("chat"))).await.unwrap();
        // The queue holds one stanza: the second kills the component but is still queued
        // (bounced when the connection ends, with what else was queued); later ones are
        // bounced at once.
        r.deliver(stanza("message", Some("chat"))).await.unwrap();
        let reason = end.kill.fired().await;
        assert_eq!(
            reason.condition,
            rookery_proto::StreamErrorCondition::PolicyViolation
        );
        let e = r
            .deliver(stanza("message", Some("chat")))
            .await
            .unwrap_err()
            .error;
        assert_eq!(e.condition, StanzaErrorCondition::ServiceUnavailable);
        assert_eq!(end.rx.close_and_drain().len(), 2);
    }

    /// In a cluster: without a connection here, another node's takes the traffic; what
    /// came over the bus for this node's connection is bounced rather than sent back.
    #[tokio::test]
    async fn another_nodes_connection_shares_the_traffic() {
        let r = route();
        let (forwarder, mut bus) = tokio::sync::mpsc::unbounded_channel();
        let peer = SessionHandle::forwarded(1, r.jid().clone(), forwarder);
        r.peer("n2", Some(peer));
        assert!(r.listed() && !r.is_connected());
        r.deliver(stanza("message", Some("chat"))).await.unwrap();
        assert!(bus.try_recv().is_ok() && bus.try_recv().is_err());
        let e = r
            .deliver_here(stanza("message", Some("chat")))
            .await
            .unwrap_err()
            .error;
        assert_eq!(e.condition, StanzaErrorCondition::ServiceUnavailable);
        // A connection here takes precedence; the peer gone, nothing is listed.
        let (h, mut end) = SessionHandle::new(2, r.jid().clone(), 4);
        r.attach(h, OnConflict::Conflict).unwrap();
        r.deliver(stanza("message", Some("chat"))).await.unwrap();
        r.deliver_here(stanza("message", Some("chat")))
            .await
            .unwrap();
        assert_eq!(end.rx.close_and_drain().len(), 2);
        r.detach(2);
        r.peer("n2", None);
        assert!(!r.listed());
    }

    #[test]
    fn conflict_policy() {
        let r = route();
        let (a, _ea) = SessionHandle::new(1, r.jid().clone(), 4);
        let (b, _eb) = SessionHandle::new(2, r.jid().clone(), 4);
        let (c, _ec) = SessionHandle::new(3, r.jid().clone(), 4);
        r.attach(a, OnConflict::Conflict).unwrap();
        assert_eq!(r.attach(b, OnConflict::Conflict).unwrap_err(), Busy);
        let old = r.attach(c, OnConflict::Replace).unwrap().unwrap();
        assert_eq!(old.id(), 1);
        // The replaced connection ending later must not detach its successor.
        assert!(!r.detach(1));
        assert!(r.is_connected());
        assert!(r.detach(3));
        assert!(!r.is_connected());
    }
}
