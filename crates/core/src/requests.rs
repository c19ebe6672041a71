//! IQ requests the server sent ([`crate::Core::request`]) and are waiting for their answer.
//!
//! RFC 6120 §8.2.3: a `result` or `error` answers the request with the same `id`, and only
//! when it comes from the entity the request was addressed to (a bare-JID addressee may
//! answer from any of its resources). Anything else is no answer and is dropped by the router.
//!
//! In a cluster a request's id names the node that sent it (`rk-<node>-<n>`): the answer
//! reaches the server through the addressee's node, which hands it to the asking node
//! ([`Requests::origin`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use dashmap::DashMap;
use rookery_jid::Jid;
use rookery_proto::Stanza;
use tokio::sync::oneshot;

/// Outstanding requests: id → (addressee, waiter).
#[derive(Debug, Default)]
pub struct Requests {
    pending: DashMap<String, (Jid, oneshot::Sender<Stanza>)>,
    next: AtomicU64,
    /// This node's id, in a cluster.
    node: OnceLock<String>,
}

impl Requests {
    /// Opens a request to `to`: its fresh id and the receiver of its answer.
    pub fn open(&self, to: Jid) -> (String, oneshot::Receiver<Stanza>) {
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let id = match self.node.get() {
            Some(node) => format!("rk-{node}-{n}"),
            None => format!("rk-{n}"),
        };
        let (tx, rx) = oneshot::channel();
        self.pending.insert(id.clone(), (to, tx));
        (id, rx)
    }

    /// Names this node in the ids of its requests from now on (it joined a cluster). Only the
    /// first call takes effect.
    pub fn set_node(&self, node: &str) {
        let _ = self.node.set(node.to_string());
    }

    /// The other node of a cluster whose request `id` answers, if it is one (`rk-<node>-<n>`
    /// with another node than this one).
    pub fn origin<'a>(&self, id: &'a str) -> Option<&'a str> {
        let own = self.node.get()?;
        let (node, n) = id.strip_prefix("rk-")?.rsplit_once('-')?;
        (n.parse::<u64>().is_ok() && !node.is_empty() && node != own).then_some(node)
    }

    /// Forgets request `id` (answered or timed out).
    pub fn close(&self, id: &str) {
        self.pending.remove(id);
    }

    /// Hands an IQ result/error to the request waiting for it; `false` if none is.
    pub fn answer(&self, stanza: Stanza) -> bool {
        let Some(id) = stanza.id() else { return false };
        let from_ok = |to: &Jid| match stanza.from() {
            Some(f) => f == to || (to.is_bare() && f.bare_str() == to.as_str()),
            None => false,
        };
        match self.pending.remove_if(id, |_, (to, _)| from_ok(to)) {
            Some((_, (_, tx))) => {
                let _ = tx.send(stanza);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn result(id: &str, from: &str) -> Stanza {
        let xml = format!("<iq xmlns='jabber:client' type='result' id='{id}' from='{from}'/>");
        Stanza::from_element(
            rookery_xml::first_element(xml.as_bytes(), Default::default()).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn only_the_addressee_answers() {
        let r = Requests::default();
        let (id, mut rx) = r.open(Jid::parse("bob@example.org").unwrap());
        assert_eq!(id, "rk-1");
        assert!(!r.answer(result(&id, "mallory@example.org/x")));
        assert!(!r.answer(result("rk-9", "bob@example.org/phone")));
        // A bare addressee answers from any resource.
        assert!(r.answer(result(&id, "bob@example.org/phone")));
        assert!(rx.try_recv().is_ok());
        assert!(!r.answer(result(&id, "bob@example.org/phone")));
    }

    #[test]
    fn in_a_cluster_ids_name_the_asking_node() {
        let r = Requests::default();
        assert_eq!(r.origin("rk-n2:5222-4"), None, "no cluster, no origin");
        r.set_node("n1:5222");
        let (id, _rx) = r.open(Jid::parse("bob@example.org").unwrap());
        assert_eq!(id, "rk-n1:5222-1");
        assert_eq!(r.origin(&id), None, "our own");
        assert_eq!(r.origin("rk-host-a:5222-17"), Some("host-a:5222"));
        assert_eq!(r.origin("rk-n2-x"), None);
        assert_eq!(r.origin("rk--3"), None);
        assert_eq!(r.origin("other"), None);
    }

    #[test]
    fn a_full_addressee_answers_only_from_that_resource() {
        let r = Requests::default();
        let (id, _rx) = r.open(Jid::parse("bob@example.org/phone").unwrap());
        assert!(!r.answer(result(&id, "bob@example.org/laptop")));
        assert!(!r.answer(result(&id, "bob@example.org")));
        r.close(&id);
        assert!(!r.answer(result(&id, "bob@example.org/phone")));
    }
}
