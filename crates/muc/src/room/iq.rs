//! IQs to an occupant JID: forwarded to the occupant's real JID from the sender's room JID,
//! under an id of the room's own, and the answer brought back with the original id, so that
//! neither side learns the other's real JID (XEP-0045: an IQ to an occupant JID; vCards,
//! version, pings between occupants). A ping to one's own occupant JID is answered by the room
//! (XEP-0410 §4: the client is still joined); from someone not in the room, `not-acceptable`.

use std::collections::{HashMap, VecDeque};

use rookery_jid::Jid;
use rookery_proto::Stanza;
use rookery_xml::Element;

use super::{Outcome, Room};
use crate::error::MucError;
use crate::nick::Nick;

/// The most IQs a room keeps waiting for their answer; the oldest is forgotten beyond it
/// (its answer is then dropped).
const MAX_PENDING: usize = 256;

/// A forwarded IQ.
#[derive(Debug, Clone)]
struct Forwarded {
    /// Who asked (real full JID) and its id.
    requester: Jid,
    id: String,
    /// Where it went (real full JID) and under which room JID that is.
    target: Jid,
    target_room_jid: Jid,
}

/// The IQs a room forwarded and awaits answers for, by the room's id.
#[derive(Debug, Clone, Default)]
pub(super) struct Pending {
    by_id: HashMap<String, Forwarded>,
    order: VecDeque<String>,
}

impl Pending {
    fn insert(&mut self, id: String, f: Forwarded) {
        if self.order.len() >= MAX_PENDING {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
        self.order.push_back(id.clone());
        self.by_id.insert(id, f);
    }

    fn take(&mut self, id: &str) -> Option<Forwarded> {
        let f = self.by_id.remove(id)?;
        self.order.retain(|i| i != id);
        Some(f)
    }
}

/// `s` readdressed from `from` to `to` under `id` (`None` if it does not parse back, which
/// never happens to a stanza).
fn readdressed(s: &Stanza, from: &Jid, to: &Jid, id: &str) -> Option<Stanza> {
    let mut el: Element = s.element().clone();
    el.set_attr("from", from.as_str());
    el.set_attr("to", to.as_str());
    el.set_attr("id", id);
    Stanza::from_element(el).ok()
}

impl Room {
    /// An IQ get/set to an occupant JID.
    pub(super) fn iq_to_occupant(
        &mut self,
        iq: &Stanza,
        payload: &Element,
    ) -> Result<Outcome, MucError> {
        let from = iq.from().ok_or(MucError::NotOccupant)?;
        let sender = self.by_jid.get(from).ok_or(MucError::NotJoined)?.clone();
        let target = iq
            .to()
            .and_then(Jid::resource)
            .and_then(Nick::key_of)
            .filter(|k| self.occupants.contains_key(k))
            .ok_or(MucError::NoOccupant)?;
        let mut o = Outcome::default();
        if target == sender && payload.is("ping", rookery_proto::ns::PING) {
            o.send(Some(iq.iq_result(None)));
            return Ok(o);
        }
        let (Some(s), Some(t)) = (self.occupants.get(&sender), self.occupants.get(&target)) else {
            return Err(MucError::NoOccupant);
        };
        let id = self.next_id.clone();
        let forwarded = Forwarded {
            requester: from.clone(),
            id: iq.id().unwrap_or_default().to_string(),
            target: t.jid.clone(),
            target_room_jid: t.room_jid.clone(),
        };
        o.send(readdressed(iq, &s.room_jid, &t.jid, &id));
        self.pending.insert(id, forwarded);
        Ok(o)
    }

    /// An IQ result or error: the answer to an IQ the room forwarded, from the occupant it
    /// went to, goes back to who asked.
    pub(super) fn iq_response(&mut self, r: &Stanza) -> Outcome {
        let mut o = Outcome::default();
        let Some(id) = r.id() else { return o };
        let answered_by_target = self
            .pending
            .by_id
            .get(id)
            .is_some_and(|f| r.from() == Some(&f.target));
        if !answered_by_target {
            return o;
        }
        if let Some(f) = self.pending.take(id) {
            o.send(readdressed(r, &f.target_room_jid, &f.requester, &f.id));
        }
        o
    }
}
