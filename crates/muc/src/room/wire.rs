//! The `muc#user` elements and the stanzas a room builds from them (§15.6, §19.1.2).

use rookery_jid::Jid;
use rookery_proto::{PresenceType, Stanza};
use rookery_xml::{Element, CONTENT_NS};

use super::{Occupant, Room};
use crate::ns;

/// What an `<item/>` says besides affiliation, role and JID.
#[derive(Debug, Clone, Copy, Default)]
pub struct Item<'a> {
    /// The new nickname (status 303).
    pub nick: Option<&'a str>,
    /// The nickname of the moderator who acted (kick, ban).
    pub actor: Option<&'a str>,
    /// The reason given.
    pub reason: Option<&'a str>,
}

/// `<status code='…'/>`.
pub fn status(code: u16) -> Element {
    Element::new("status", ns::USER).with_attr("code", code.to_string())
}

/// The XEP-0421 `<occupant-id/>` of `occ`.
pub fn occupant_id(occ: &Occupant) -> Element {
    occupant_id_element(&occ.id)
}

/// The XEP-0421 `<occupant-id/>` carrying `id`.
fn occupant_id_element(id: &str) -> Element {
    Element::new("occupant-id", ns::OCCUPANT_ID).with_attr("id", id)
}

/// `occ`'s presence of type `t` from its room JID (no `to`): its forwarded payload, the
/// `muc#user` item (with the real JID if `with_jid`), the status `codes`, its occupant id.
pub fn presence(
    room: &Room,
    occ: &Occupant,
    t: PresenceType,
    with_jid: bool,
    item: &Item<'_>,
    codes: &[u16],
) -> Option<Stanza> {
    let mut s = Stanza::presence(t, Some(occ.room_jid.clone()), None);
    for c in &occ.payload {
        s.push_payload(c.clone());
    }
    let mut el = Element::new("item", ns::USER)
        .with_attr("affiliation", room.affiliation(&occ.jid).as_str())
        .with_attr("role", occ.role.as_str());
    if with_jid {
        el.set_attr("jid", occ.jid.as_str());
    }
    if let Some(n) = item.nick {
        el.set_attr("nick", n);
    }
    if let Some(a) = item.actor {
        el.push_child(Element::new("actor", ns::USER).with_attr("nick", a));
    }
    if let Some(r) = item.reason {
        el.push_child(Element::new("reason", ns::USER).with_text(r));
    }
    let mut x = Element::new("x", ns::USER).with_child(el);
    for c in codes {
        x.push_child(status(*c));
    }
    s.push_payload(x);
    s.push_payload(occupant_id(occ));
    Some(s)
}

/// A `<message/>` from `from` of `kind` (if any) with `children`, for `to` (if any).
pub fn message(
    from: Jid,
    to: Option<&Jid>,
    kind: Option<&str>,
    children: Vec<Element>,
) -> Option<Stanza> {
    let mut el = Element::new("message", CONTENT_NS).with_attr("from", from.as_str());
    if let Some(t) = to {
        el.set_attr("to", t.as_str());
    }
    if let Some(k) = kind {
        el.set_attr("type", k);
    }
    for c in children {
        el.push_child(c);
    }
    Stanza::from_element(el).ok()
}

/// The subject message (§7.2.15): from who set it, with its occupant id (XEP-0421: on every
/// message from an occupant) and when it was set as a `<delay/>` from the room, else from
/// the room; empty if none.
pub fn subject(room: &Room, to: &Jid) -> Option<Stanza> {
    let s = &room.subject;
    let from =
        s.by.as_deref()
            .and_then(|n| room.jid.with_resource(n).ok())
            .unwrap_or_else(|| room.jid.clone().into());
    let mut children = vec![Element::new("subject", CONTENT_NS).with_text(s.text.clone())];
    if let Some(at) = s.at {
        children.push(rookery_proto::time::delay(room.jid.as_str(), at, None));
    }
    if let Some(id) = s.occupant_id.as_ref().filter(|_| s.by.is_some()) {
        children.push(occupant_id_element(id));
    }
    message(from, Some(to), Some("groupchat"), children)
}

/// A message from the room to its occupants with status `codes` (§10.2.1: configuration
/// changes).
pub fn notice(room: &Room, codes: &[u16]) -> Option<Stanza> {
    let mut x = Element::new("x", ns::USER);
    for c in codes {
        x.push_child(status(*c));
    }
    message(room.jid.clone().into(), None, Some("groupchat"), vec![x])
}
