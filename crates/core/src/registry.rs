//! The session registry: the bound resources of every local account and their presence
//! priority (RFC 6120 §7, RFC 6121 §4.7.2.3).
//!
//! A sharded map keyed by bare JID, so the routing path takes no global lock; the account's
//! resources are a short list. Pure bookkeeping: telling the modules a session started or
//! ended is [`crate::Core::bind`]'s job.
//!
//! In a cluster the map also holds the sessions bound on other nodes, as handles marked
//! [`SessionHandle::is_remote`] (crates/cluster keeps them current): routing sees every
//! resource of an account wherever it is bound (RFC 6121 §8.5), while listing, counting and
//! closing ([`Registry::all`], [`Registry::count`], [`Registry::close_all`]) stay local.

use dashmap::DashMap;
use rookery_jid::{BareJid, Jid};

use crate::session::{SessionHandle, SessionId, Transport};

/// One bound resource of an account.
#[derive(Debug, Clone)]
struct Resource {
    handle: SessionHandle,
    /// `Some(priority)` once the session sent available presence.
    priority: Option<i8>,
    /// Whether it enabled XEP-0280 carbons. Kept here for the sessions of other nodes of a
    /// cluster (a local session's flag is the IM layer's).
    carbons: bool,
}

/// Bound sessions by account.
#[derive(Debug, Default)]
pub struct Registry {
    sessions: DashMap<BareJid, Vec<Resource>>,
}

impl Registry {
    /// Registers a bound session, not yet available. Returns the session it replaces (same
    /// full JID), which the caller closes with `conflict` (RFC 6120 §7.7.2.2).
    pub fn bind(&self, handle: SessionHandle) -> Option<SessionHandle> {
        let jid = handle.jid().clone();
        let mut entry = self.sessions.entry(jid.to_bare()).or_default();
        let old = entry
            .iter()
            .position(|r| r.handle.jid() == &jid)
            .map(|i| entry.remove(i).handle);
        entry.push(Resource {
            handle,
            priority: None,
            carbons: false,
        });
        old
    }

    /// Removes the session `id` if it is still the one registered under `jid`; whether it was.
    pub fn unbind(&self, jid: &Jid, id: SessionId) -> bool {
        let bare = jid.to_bare();
        let removed = match self.sessions.get_mut(&bare) {
            Some(mut list) => {
                let before = list.len();
                list.retain(|r| r.handle.id() != id);
                before != list.len()
            }
            None => false,
        };
        self.sessions.remove_if(&bare, |_, v| v.is_empty());
        removed
    }

    /// Records a session's availability: `Some(priority)` after available presence, `None`
    /// after unavailable.
    pub fn set_available(&self, jid: &Jid, priority: Option<i8>) {
        if let Some(mut list) = self.sessions.get_mut(&jid.to_bare()) {
            if let Some(r) = list.iter_mut().find(|r| r.handle.jid() == jid) {
                r.priority = priority;
            }
        }
    }

    /// Records whether a session enabled XEP-0280 carbons.
    pub fn set_carbons(&self, jid: &Jid, on: bool) {
        if let Some(mut list) = self.sessions.get_mut(&jid.to_bare()) {
            if let Some(r) = list.iter_mut().find(|r| r.handle.jid() == jid) {
                r.carbons = on;
            }
        }
    }

    /// Whether the session `jid` enabled XEP-0280 carbons, as recorded here.
    pub fn carbons(&self, jid: &Jid) -> bool {
        self.sessions
            .get(&jid.to_bare())
            .is_some_and(|l| l.iter().any(|r| r.handle.jid() == jid && r.carbons))
    }

    /// The session bound to a full JID, if it is a target ([`SessionHandle::is_target`]).
    ///
    /// A session whose queue overflowed stays registered until its task unbinds it, but is
    /// no target any more: what is addressed to it meanwhile is handled as for a resource
    /// that is not online (RFC 6121 §8.5.3.2), instead of piling up in a queue nobody reads.
    pub fn session(&self, jid: &Jid) -> Option<SessionHandle> {
        self.sessions
            .get(&jid.to_bare())?
            .iter()
            .find(|r| r.handle.jid() == jid && r.handle.is_target())
            .map(|r| r.handle.clone())
    }

    /// All sessions of an account that are targets (see [`Registry::session`]), with their
    /// priority if available.
    pub fn sessions_of(&self, bare: &BareJid) -> Vec<(SessionHandle, Option<i8>)> {
        self.sessions
            .get(bare)
            .map(|l| {
                l.iter()
                    .filter(|r| r.handle.is_target())
                    .map(|r| (r.handle.clone(), r.priority))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every local session that is a target (see [`Registry::session`]): a snapshot, for the
    /// admin API's session list and announcements, not for routing.
    pub fn all(&self) -> Vec<SessionHandle> {
        self.sessions
            .iter()
            .flat_map(|e| {
                e.value()
                    .iter()
                    .filter(|r| r.handle.is_target() && !r.handle.is_remote())
                    .map(|r| r.handle.clone())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Whether `bare` has a bound session (no allocation).
    pub fn has_sessions(&self, bare: &BareJid) -> bool {
        self.sessions.contains_key(bare)
    }

    /// Whether `bare` has a session bound on this node (remote handles aside).
    pub fn has_local_sessions(&self, bare: &BareJid) -> bool {
        self.sessions
            .get(bare)
            .is_some_and(|l| l.iter().any(|r| !r.handle.is_remote()))
    }

    /// Number of sessions bound on this node.
    pub fn count(&self) -> usize {
        self.sessions
            .iter()
            .map(|e| e.value().iter().filter(|r| !r.handle.is_remote()).count())
            .sum()
    }

    /// Sessions bound on this node by the transport their listener recorded, every transport
    /// named (with 0 when none); a session without one (not from a client listener) is left
    /// out.
    pub fn count_by_transport(&self) -> [(Transport, usize); 3] {
        let mut out = [
            (Transport::Tcp, 0),
            (Transport::WebSocket, 0),
            (Transport::Bosh, 0),
        ];
        for e in self.sessions.iter() {
            for r in e.value().iter().filter(|r| !r.handle.is_remote()) {
                let Some((_, t)) = r.handle.origin() else {
                    continue;
                };
                // Exhaustive: a new transport cannot be left out of the count.
                let slot = match t {
                    Transport::Tcp => 0,
                    Transport::WebSocket => 1,
                    Transport::Bosh => 2,
                };
                if let Some((_, n)) = out.get_mut(slot) {
                    *n += 1;
                }
            }
        }
        out
    }

    /// Closes every local session (server shutdown).
    pub fn close_all(&self, reason: &rookery_proto::StreamError) {
        for e in self.sessions.iter() {
            for r in e.value().iter().filter(|r| !r.handle.is_remote()) {
                r.handle.close(reason.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    /// A handle and its connection end (a handle whose end is gone is no target).
    fn handle(id: SessionId, jid: &str) -> (SessionHandle, crate::session::SessionEnd) {
        SessionHandle::new(id, Jid::parse(jid).unwrap(), 4)
    }

    #[test]
    fn binding_the_same_full_jid_replaces_the_old_session() {
        let r = Registry::default();
        let (h1, _e1) = handle(1, "a@localhost/x");
        let (h2, _e2) = handle(2, "a@localhost/y");
        let (h3, _e3) = handle(3, "a@localhost/x");
        assert!(r.bind(h1).is_none());
        assert!(r.bind(h2).is_none());
        let old = r.bind(h3).unwrap();
        assert_eq!(old.id(), 1);
        assert_eq!(r.count(), 2);
        // The replaced session's own unbind finds nothing.
        assert!(!r.unbind(&Jid::parse("a@localhost/x").unwrap(), 1));
        assert!(r.unbind(&Jid::parse("a@localhost/x").unwrap(), 3));
        assert!(r.unbind(&Jid::parse("a@localhost/y").unwrap(), 2));
        assert!(!r.has_sessions(&BareJid::parse("a@localhost").unwrap()));
    }

    #[test]
    fn priorities_follow_presence() {
        let r = Registry::default();
        let jid = Jid::parse("a@localhost/x").unwrap();
        let (h, _end) = handle(1, "a@localhost/x");
        r.bind(h);
        let bare = jid.to_bare();
        assert_eq!(r.sessions_of(&bare)[0].1, None);
        r.set_available(&jid, Some(5));
        assert_eq!(r.sessions_of(&bare)[0].1, Some(5));
        r.set_available(&jid, None);
        assert_eq!(r.sessions_of(&bare)[0].1, None);
        assert_eq!(r.session(&jid).unwrap().id(), 1);
        assert!(r.session(&Jid::parse("a@localhost/z").unwrap()).is_none());
    }

    #[test]
    fn remote_sessions_route_but_are_not_listed_or_counted() {
        let r = Registry::default();
        let (local, _e1) = handle(1, "a@localhost/x");
        let (forwarder, _bus) = tokio::sync::mpsc::unbounded_channel();
        let remote = SessionHandle::forwarded(2, Jid::parse("a@localhost/y").unwrap(), forwarder);
        r.bind(local);
        r.bind(remote);
        r.set_available(&Jid::parse("a@localhost/y").unwrap(), Some(1));
        let bare = BareJid::parse("a@localhost").unwrap();
        assert_eq!(r.sessions_of(&bare).len(), 2);
        assert!(r.session(&Jid::parse("a@localhost/y").unwrap()).is_some());
        assert_eq!(r.count(), 1);
        assert_eq!(r.all().len(), 1);
        assert!(r.has_local_sessions(&bare));
        r.unbind(&Jid::parse("a@localhost/x").unwrap(), 1);
        assert!(r.has_sessions(&bare) && !r.has_local_sessions(&bare));
    }
}
