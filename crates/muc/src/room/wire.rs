//! The `muc#user` elements and the stanzas a room builds from them (§15.6, §19.1.2).

use rookery_jid::Jid;
use rookery_proto::{PresenceType, Stanza};
use rookery_xml::{Element, CONTENT_NS};

use super::{status, Occupant, Room};
use crate::nick::Nick;
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

/// The subject message (§7.2.15): from the occupant JID of who set it, with its occupant id
/// (XEP-0421: on every message from an occupant), and when it was set as a `<delay/>` from
/// the room; empty if none. The setter is found by occupant id, so a nickname changed since
/// is followed; a setter who left is named by the nickname they had, unless someone else
/// holds it now (then the subject comes from the room, not from them).
pub fn subject(room: &Room, to: &Jid) -> Option<Stanza> {
    let s = &room.subject;
    let present = s
        .occupant_id
        .as_deref()
        .and_then(|id| room.occupants.values().find(|o| o.id == id));
    let setter = match present {
        Some(o) => Some((o.room_jid.clone(), o.id.as_str())),
        None => {
            s.by.as_deref()
                .filter(|n| Nick::key_of(n).is_some_and(|k| !room.occupants.contains_key(&k)))
                .and_then(|n| room.jid.with_resource(n).ok())
                .zip(s.occupant_id.as_deref())
        }
    };
    let mut children = vec![Element::new("subject", CONTENT_NS).with_text(s.text.clone())];
    if let Some(at) = s.at {
        children.push(rookery_proto::time::delay(room.jid.as_str(), at, None));
    }
    let from = match setter {
        Some((jid, id)) => {
            children.push(occupant_id_element(id));
            jid
        }
        None => room.jid.clone().into(),
    };
    message(from, Some(to), Some("groupchat"), children)
}

/// The answer to an available presence without the MUC extension from a full JID that is
/// not in the room (§7.2 "Groupchat 1.0 Protocol"): a client that lost track of a room sends
/// such presence, and a kick (110, 307, 333) tells it so, where entering would leave it
/// half-joined — or create the room anew.
pub fn not_in_room(p: &Stanza) -> Option<Stanza> {
    let x = [status::SELF, status::KICKED, status::ERROR]
        .into_iter()
        .fold(
            Element::new("x", ns::USER).with_child(
                Element::new("item", ns::USER)
                    .with_attr("affiliation", "none")
                    .with_attr("role", "none"),
            ),
            |x, c| x.with_child(status(c)),
        );
    let mut s = Stanza::presence(
        PresenceType::Unavailable,
        p.to().cloned(),
        p.from().cloned(),
    );
    s.push_payload(x);
    Some(s)
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
