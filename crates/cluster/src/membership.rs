//! Which nodes are alive: the lease table (sans-IO: every call is given the time).
//!
//! A node is alive while it has been heard from within the lease (any control message
//! counts, heartbeats are sent every `heartbeat_ms`). A node heard with another epoch than
//! the one known restarted: its old sessions are gone. While this node itself is cut off
//! from the bus it hears nobody, which says nothing about the others, so the caller stops
//! asking for expiries then and [`Membership::touch_all`]s when the bus is back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What hearing from a node means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// A node not known alive until now (first start, or back after being taken for dead).
    New,
    /// A node known alive.
    Known,
    /// A known node with a new epoch: it restarted; its old sessions are gone.
    Restarted,
}

#[derive(Debug, Clone)]
struct Peer {
    epoch: u64,
    last: Instant,
}

/// The nodes heard from within the lease.
#[derive(Debug)]
pub struct Membership {
    lease: Duration,
    peers: HashMap<String, Peer>,
}

impl Membership {
    /// An empty table with `lease`.
    pub fn new(lease: Duration) -> Self {
        Membership {
            lease,
            peers: HashMap::new(),
        }
    }

    /// `node` (in `epoch`) was heard at `now`.
    pub fn heard(&mut self, node: &str, epoch: u64, now: Instant) -> Heard {
        match self.peers.get_mut(node) {
            Some(p) if p.epoch == epoch => {
                p.last = now;
                Heard::Known
            }
            Some(p) => {
                *p = Peer { epoch, last: now };
                Heard::Restarted
            }
            None => {
                self.peers
                    .insert(node.to_string(), Peer { epoch, last: now });
                Heard::New
            }
        }
    }

    /// The nodes silent for longer than the lease at `now`, forgotten.
    pub fn expired(&mut self, now: Instant) -> Vec<String> {
        let lease = self.lease;
        let dead: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.last) > lease)
            .map(|(n, _)| n.clone())
            .collect();
        for n in &dead {
            self.peers.remove(n);
        }
        dead
    }

    /// Forgets `node` (found dead some other way).
    pub fn forget(&mut self, node: &str) {
        self.peers.remove(node);
    }

    /// Counts every known node as heard at `now` (this node's bus connection came back: the
    /// silence was ours).
    pub fn touch_all(&mut self, now: Instant) {
        for p in self.peers.values_mut() {
            p.last = now;
        }
    }

    /// Whether `node` is known alive.
    pub fn is_alive(&self, node: &str) -> bool {
        self.peers.contains_key(node)
    }

    /// The node that serves what lives on one node of the cluster (the MUC rooms): the
    /// oldest alive, this one (`me`, started at `epoch`) included, by start time and then by
    /// id, so that every node with the same view names the same one and a node joining
    /// never takes it over. `None` when it is this node.
    pub fn home(&self, me: &str, epoch: u64) -> Option<String> {
        let oldest = self
            .peers
            .iter()
            .map(|(n, p)| (p.epoch, n.as_str()))
            .chain(std::iter::once((epoch, me)))
            .min()?;
        (oldest.1 != me).then(|| oldest.1.to_string())
    }

    /// The nodes known alive, sorted.
    pub fn alive(&self) -> Vec<String> {
        let mut v: Vec<String> = self.peers.keys().cloned().collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_node_expires_after_the_lease_and_only_then() {
        let t0 = Instant::now();
        let mut m = Membership::new(Duration::from_secs(6));
        assert_eq!(m.heard("a", 1, t0), Heard::New);
        assert_eq!(m.heard("b", 1, t0), Heard::New);
        assert_eq!(m.heard("a", 1, t0 + Duration::from_secs(5)), Heard::Known);
        assert!(m.expired(t0 + Duration::from_secs(6)).is_empty());
        assert_eq!(m.expired(t0 + Duration::from_secs(7)), ["b"]);
        assert_eq!(m.alive(), ["a"]);
        assert!(m.is_alive("a") && !m.is_alive("b"));
        // Heard again after being taken for dead: new, so it is asked for its sessions.
        assert_eq!(m.heard("b", 1, t0 + Duration::from_secs(8)), Heard::New);
    }

    #[test]
    fn the_home_is_the_oldest_node_alive() {
        let t0 = Instant::now();
        let mut m = Membership::new(Duration::from_secs(6));
        assert_eq!(m.home("me", 20), None, "alone");
        m.heard("b", 30, t0);
        assert_eq!(
            m.home("me", 20),
            None,
            "a younger node does not take it over"
        );
        m.heard("a", 10, t0);
        assert_eq!(m.home("me", 20).as_deref(), Some("a"));
        // Same start time: the smaller id.
        m.heard("a", 20, t0);
        assert_eq!(m.home("me", 20).as_deref(), Some("a"));
        assert_eq!(m.home("0", 20), None);
        // The home restarted: now the youngest.
        m.heard("a", 40, t0);
        assert_eq!(m.home("me", 20), None);
        m.forget("a");
        m.forget("b");
        assert_eq!(m.home("me", 20), None);
    }

    #[test]
    fn a_new_epoch_is_a_restart() {
        let t0 = Instant::now();
        let mut m = Membership::new(Duration::from_secs(6));
        m.heard("a", 1, t0);
        assert_eq!(m.heard("a", 2, t0), Heard::Restarted);
        assert_eq!(m.heard("a", 2, t0), Heard::Known);
    }

    #[test]
    fn our_own_outage_does_not_kill_the_others() {
        let t0 = Instant::now();
        let mut m = Membership::new(Duration::from_secs(6));
        m.heard("a", 1, t0);
        m.touch_all(t0 + Duration::from_secs(30));
        assert!(m.expired(t0 + Duration::from_secs(31)).is_empty());
        m.forget("a");
        assert!(m.alive().is_empty());
    }
}
