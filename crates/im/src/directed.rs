//! Directed presence to other servers across the nodes of a cluster (RFC 6121 §4.6.3).
//!
//! A session's directed-presence set (the entities it sent presence to outside its roster's
//! broadcast — a room on another server, typically) lives in its node's memory: when the
//! session ends, that node sends them `unavailable`. When the node *dies*, nobody can —
//! unless another node knew the set. So each node tells its peers (a module note,
//! [`Core::tell_peers`], one bus message to every node) when one of its sessions adds an
//! entity **on another server** to its set or drops it, and when the set goes with the
//! session; each node keeps what it heard in [`Peers`], and the node that speaks for a dead
//! node ([`rookery_core::Event::SessionsLost`], the rooms' home) sends the `unavailable`.
//!
//! Only entities on other servers cross: this cluster's own users were shown the presence by
//! their node, which tells them itself when the sender's node dies (the cluster crate's
//! `seen`), and this cluster's rooms drop a dead node's occupants themselves. (An XEP-0114
//! component is not told either: it hears of users only through what they send it.) A note goes
//! only when a set changes (an entity added the first time, or dropped), not for every
//! presence update to a room. One node alone sends nothing and keeps nothing here.
//!
//! What a node keeps for its peers is bounded like the sessions' own sets (`[im.presence]
//! max_directed` per session) and forgotten with the session's set, or when the account has
//! no session left anywhere ([`rookery_core::Event::AccountOffline`]).
//! Not covered: a node that joined the cluster after a session sent its directed presence
//! never heard of it (the notes are not replayed to newcomers).

use std::collections::{HashMap, HashSet};

use dashmap::DashMap;
use rookery_core::Core;
use rookery_jid::{BareJid, Jid};

/// The note topic (see [`Core::tell_peers`]).
pub(crate) const TOPIC: &str = "im.directed";

/// What the other nodes' sessions sent directed presence to on other servers: by account,
/// then by session.
#[derive(Debug, Default)]
pub struct Peers(DashMap<BareJid, HashMap<Jid, HashSet<Jid>>>);

/// A change to a session's set, as a note's body: lines of a tag and JIDs (a resourcepart
/// may hold spaces, never a line break).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Note {
    /// `from` added `to`.
    Added(Jid, Jid),
    /// `from` dropped `to` (directed `unavailable`).
    Dropped(Jid, Jid),
    /// `from`'s set is gone (its unavailable went out, or it ended).
    Cleared(Jid),
}

impl Note {
    fn encode(&self) -> String {
        match self {
            Note::Added(from, to) => format!("+\n{from}\n{to}"),
            Note::Dropped(from, to) => format!("-\n{from}\n{to}"),
            Note::Cleared(from) => format!("0\n{from}"),
        }
    }

    fn decode(body: &str) -> Option<Note> {
        let mut parts = body.split('\n');
        let tag = parts.next()?;
        let from = Jid::parse(parts.next()?).ok().filter(Jid::is_full)?;
        let to = parts.next().map(Jid::parse);
        let note = match (tag, to) {
            ("+", Some(Ok(to))) => Note::Added(from, to),
            ("-", Some(Ok(to))) => Note::Dropped(from, to),
            ("0", None) => Note::Cleared(from),
            _ => return None,
        };
        parts.next().is_none().then_some(note)
    }
}

/// Whether `to` is on another server (the only entities the peers need to know of): not a
/// hosted domain, nor a service or component domain served here.
fn elsewhere(core: &Core, to: &Jid) -> bool {
    !core.is_local_domain(to.domain()) && !core.has_domain_route(to.domain())
}

/// Session `from` of this node added `to` to its set.
pub(crate) fn added(core: &Core, from: &Jid, to: &Jid) {
    if core.is_clustered() && elsewhere(core, to) {
        core.tell_peers(TOPIC, || Note::Added(from.clone(), to.clone()).encode());
    }
}

/// Session `from` of this node dropped `to` from its set.
pub(crate) fn dropped(core: &Core, from: &Jid, to: &Jid) {
    if core.is_clustered() && elsewhere(core, to) {
        core.tell_peers(TOPIC, || Note::Dropped(from.clone(), to.clone()).encode());
    }
}

/// Session `from` of this node let its set go (it was `set`).
pub(crate) fn cleared(core: &Core, from: &Jid, set: &HashSet<Jid>) {
    if core.is_clustered() && set.iter().any(|to| elsewhere(core, to)) {
        core.tell_peers(TOPIC, || Note::Cleared(from.clone()).encode());
    }
}

impl Peers {
    /// A peer's note (see [`TOPIC`]); one that does not read is ignored (logged).
    /// At most `max` entities are kept per session, as its node keeps (`[im.presence]
    /// max_directed`).
    pub(crate) fn heard(&self, max: usize, body: &str) {
        let Some(note) = Note::decode(body) else {
            return tracing::warn!(body, "unreadable directed-presence note from a peer");
        };
        match note {
            Note::Added(from, to) => {
                let mut account = self.0.entry(from.to_bare()).or_default();
                let set = account.entry(from).or_default();
                if set.len() < max {
                    set.insert(to);
                }
            }
            Note::Dropped(from, to) => self.change(&from, |set| {
                set.remove(&to);
            }),
            Note::Cleared(from) => self.change(&from, HashSet::clear),
        }
    }

    /// Applies `f` to `from`'s set, forgetting it (and its account) once empty.
    fn change(&self, from: &Jid, f: impl FnOnce(&mut HashSet<Jid>)) {
        let bare = from.to_bare();
        let Some(mut account) = self.0.get_mut(&bare) else {
            return;
        };
        if let Some(set) = account.get_mut(from) {
            f(set);
            if set.is_empty() {
                account.remove(from);
            }
        }
        let empty = account.is_empty();
        drop(account);
        if empty {
            self.0.remove_if(&bare, |_, a| a.is_empty());
        }
    }

    /// What session `jid` of another node had sent directed presence to on other servers,
    /// forgotten here (its node died, or it is now this node's: it moved here).
    pub(crate) fn take(&self, jid: &Jid) -> HashSet<Jid> {
        let mut taken = HashSet::new();
        self.change(jid, |set| taken = std::mem::take(set));
        taken
    }

    /// Session `jid` of this node went on on another node (XEP-0198 resumption there): its
    /// set is now a peer's, kept as if that node had told it.
    pub(crate) fn moved_away(&self, core: &Core, jid: &Jid, set: &HashSet<Jid>) {
        let theirs: HashSet<Jid> = set
            .iter()
            .filter(|to| elsewhere(core, to))
            .cloned()
            .collect();
        if core.is_clustered() && !theirs.is_empty() {
            self.0
                .entry(jid.to_bare())
                .or_default()
                .insert(jid.clone(), theirs);
        }
    }

    /// `bare` has no session left anywhere: nothing of it is owed by anyone.
    pub(crate) fn forget(&self, bare: &BareJid) {
        self.0.remove(bare);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn jid(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    #[test]
    fn notes_read_back_and_bad_ones_do_not() {
        for note in [
            Note::Added(jid("a@x/phone one"), jid("room@muc.elsewhere/nick two")),
            Note::Dropped(jid("a@x/r"), jid("elsewhere")),
            Note::Cleared(jid("a@x/r")),
        ] {
            assert_eq!(Note::decode(&note.encode()), Some(note));
        }
        for bad in [
            "",
            "+",
            "+\na@x/r",
            "0\na@x/r\nb@y",
            "+\na@x\nb@y",
            "?\na@x/r\nb@y",
            "+\na@x/r\nb@y\nc@z",
            "-\na@x/r\n@@",
        ] {
            assert_eq!(Note::decode(bad), None, "{bad:?}");
        }
    }

    fn hear(peers: &Peers, note: Note) {
        peers.heard(2, &note.encode());
    }

    #[test]
    fn a_peers_sets_follow_its_notes_within_the_bound() {
        let peers = Peers::default();
        let (phone, desk) = (jid("a@x/phone"), jid("a@x/desk"));
        for room in ["r1@muc.y/a", "r2@muc.y/a", "r3@muc.y/a"] {
            hear(&peers, Note::Added(phone.clone(), jid(room)));
        }
        hear(&peers, Note::Added(desk.clone(), jid("r1@muc.y/a")));
        hear(&peers, Note::Dropped(phone.clone(), jid("r1@muc.y/a")));
        // Two kept of three (the bound), one of them dropped since.
        assert_eq!(peers.take(&phone), HashSet::from([jid("r2@muc.y/a")]));
        assert!(peers.take(&phone).is_empty());
        hear(&peers, Note::Cleared(desk.clone()));
        assert!(peers.take(&desk).is_empty());
        assert!(peers.0.is_empty(), "nothing left of a@x");
        hear(&peers, Note::Added(desk.clone(), jid("r1@muc.y/a")));
        peers.forget(&desk.to_bare());
        assert!(peers.take(&desk).is_empty());
        peers.heard(2, "not a note");
        assert!(peers.0.is_empty());
    }
}
