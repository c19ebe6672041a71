//! The namespaces of XEP-0045 (§19.1) and the extensions rooms speak.

/// The MUC protocol (join requests, `<x/>` in presence).
pub const MUC: &str = "http://jabber.org/protocol/muc";
/// Occupant-facing extensions (`<x/>` with items and status codes, invitations).
pub const USER: &str = rookery_proto::ns::MUC_USER;
/// Moderator and admin lists (roles and affiliations).
pub const ADMIN: &str = "http://jabber.org/protocol/muc#admin";
/// Owner use cases (configuration, destruction).
pub const OWNER: &str = "http://jabber.org/protocol/muc#owner";
/// The room configuration form (`FORM_TYPE`).
pub const ROOMCONFIG: &str = "http://jabber.org/protocol/muc#roomconfig";
/// The room information form in disco#info (`FORM_TYPE`).
pub const ROOMINFO: &str = "http://jabber.org/protocol/muc#roominfo";
/// XEP-0045 (a registered feature): the room reflects a groupchat message's `id` unchanged,
/// so its sender recognizes its own message (relayed messages keep every attribute but the
/// addresses).
pub const STABLE_ID: &str = "http://jabber.org/protocol/muc#stable_id";
/// XEP-0421 anonymous unique occupant identifiers.
pub const OCCUPANT_ID: &str = "urn:xmpp:occupant-id:0";
/// XEP-0410 MUC self-ping: the service answers pings to an occupant JID itself.
pub const SELF_PING: &str = "http://jabber.org/protocol/muc#self-ping-optimization";
/// Voice requests and their approval (§7.13, §8.6: `FORM_TYPE`).
pub const REQUEST: &str = "http://jabber.org/protocol/muc#request";
