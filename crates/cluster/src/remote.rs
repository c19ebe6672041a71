//! The sessions of the other nodes as this node knows them: for each node, its full JIDs
//! with the remote [`SessionHandle`] that stands for each in the core's registry.
//!
//! Pure bookkeeping behind one lock, never held across an `.await`: registering the handles
//! with the core and forwarding what they take is the runtime's job (`node.rs`).

use std::collections::HashMap;

use rookery_core::SessionHandle;
use rookery_jid::Jid;

/// One session of another node.
#[derive(Debug, Clone)]
pub struct Proxy {
    /// The handle registered with the core.
    pub handle: SessionHandle,
    /// When it was bound (ms since the epoch), to decide a conflict.
    pub at: u64,
}

/// The sessions of the other nodes.
#[derive(Debug, Default)]
pub struct Remote {
    nodes: HashMap<String, HashMap<Jid, Proxy>>,
}

impl Remote {
    /// The proxy of `jid` on any node, with that node.
    pub fn find(&self, jid: &Jid) -> Option<(&str, &Proxy)> {
        self.nodes
            .iter()
            .find_map(|(n, s)| s.get(jid).map(|p| (n.as_str(), p)))
    }

    /// The proxy of `jid` on `node`.
    pub fn get(&self, node: &str, jid: &Jid) -> Option<&Proxy> {
        self.nodes.get(node)?.get(jid)
    }

    /// Records a proxy of `node`; returns one `jid` had on any node before.
    pub fn insert(&mut self, node: &str, jid: Jid, proxy: Proxy) -> Option<Proxy> {
        let old = self.remove_anywhere(&jid);
        self.nodes
            .entry(node.to_string())
            .or_default()
            .insert(jid, proxy);
        old
    }

    /// Forgets `jid` on `node`.
    pub fn remove(&mut self, node: &str, jid: &Jid) -> Option<Proxy> {
        self.nodes.get_mut(node)?.remove(jid)
    }

    /// Forgets `jid` on whatever node had it.
    pub fn remove_anywhere(&mut self, jid: &Jid) -> Option<Proxy> {
        self.nodes.values_mut().find_map(|s| s.remove(jid))
    }

    /// Forgets every session of `node`, returning them.
    pub fn take_node(&mut self, node: &str) -> Vec<(Jid, Proxy)> {
        self.nodes
            .remove(node)
            .map(|s| s.into_iter().collect())
            .unwrap_or_default()
    }

    /// The full JIDs `node` has.
    pub fn jids_of(&self, node: &str) -> Vec<Jid> {
        self.nodes
            .get(node)
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Sessions per node, sorted by node (for the admin view).
    pub fn counts(&self) -> Vec<(String, usize)> {
        let mut v: Vec<(String, usize)> = self
            .nodes
            .iter()
            .map(|(n, s)| (n.clone(), s.len()))
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn proxy(id: u64, jid: &str, at: u64) -> (Jid, Proxy) {
        let jid = Jid::parse(jid).unwrap();
        let (handle, _end) = SessionHandle::new(id, jid.clone(), 4);
        (jid, Proxy { handle, at })
    }

    #[test]
    fn a_full_jid_lives_on_one_node_at_a_time() {
        let mut r = Remote::default();
        let (j, p) = proxy(1, "a@localhost/x", 10);
        assert!(r.insert("n1", j.clone(), p).is_none());
        let (j2, p2) = proxy(2, "a@localhost/x", 20);
        assert_eq!(r.insert("n2", j2, p2).unwrap().handle.id(), 1);
        assert_eq!(r.find(&j).unwrap().0, "n2");
        assert!(r.get("n1", &j).is_none());
        assert_eq!(r.counts(), [("n1".to_string(), 0), ("n2".to_string(), 1)]);
        assert_eq!(r.take_node("n2").len(), 1);
        assert!(r.find(&j).is_none());
    }
}
