//! A room as a value (XEP-0045): a stanza in, the stanzas to send out. No I/O, no clock, no
//! locks: the service (`service.rs`) owns each room behind a lock, feeds it, stores what it
//! says to store and delivers what it returns, in order.
//!
//! Layout:
//! - this file: the room's state, entering, presence updates, nickname changes and leaving
//!   (§7.1–§7.2, §7.6, §7.14), and the presence it broadcasts (§7.2.3, serialized once for
//!   every occupant that sees the same thing);
//! - [`message`]: groupchat messages, the subject, private messages and mediated
//!   invitations (§7.4, §7.5, §7.8.2, §8.1);
//! - [`admin`]: roles and affiliations by moderators, admins and owners (§8, §9, §10.3–§10.8);
//! - [`owner`]: configuration, instant and reserved rooms, destruction (§10.1, §10.2, §10.9);
//! - [`history`]: the recent groupchat messages a newcomer gets (§7.2.14);
//! - [`iq`]: IQs between occupants, forwarded under room JIDs (an IQ to an occupant JID),
//!   and the XEP-0410 self-ping;
//! - [`wire`]: the `muc#user` elements and stanzas the others build.
//!
//! The room has no clock: the service passes the time with each stanza.

mod admin;
mod history;
mod iq;
mod message;
mod owner;
mod wire;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use sha2::{Digest, Sha256};

use rookery_jid::{BareJid, Jid};
use rookery_proto::{IqType, PresenceType, Stanza, StanzaError, StanzaKind};
use rookery_xml::{Element, CONTENT_NS};

use crate::error::MucError;
use crate::nick::Nick;
use crate::ns;
use crate::role::{Affiliation, Role};
use crate::roomconfig::{RoomConfig, Whois};

use history::History;
pub use history::Past;
pub use wire::{not_in_room, Item};

/// Status codes of `muc#user` presence and messages (§15.6.2).
pub mod status {
    /// Any occupant may see real JIDs (on entering a non-anonymous room).
    pub const NON_ANONYMOUS: u16 = 100;
    /// A non-privacy-related room configuration change.
    pub const CONFIG_CHANGED: u16 = 104;
    /// The presence is about the recipient itself.
    pub const SELF: u16 = 110;
    /// The room is now non-anonymous.
    pub const NOW_NON_ANONYMOUS: u16 = 172;
    /// The room is now semi-anonymous.
    pub const NOW_SEMI_ANONYMOUS: u16 = 173;
    /// A new room was created.
    pub const CREATED: u16 = 201;
    /// The service changed the occupant's nickname.
    pub const NICK_MODIFIED: u16 = 210;
    /// Banned.
    pub const BANNED: u16 = 301;
    /// The occupant's new nickname (in the unavailable presence of a nickname change).
    pub const NEW_NICK: u16 = 303;
    /// Kicked.
    pub const KICKED: u16 = 307;
    /// Removed because of an affiliation change.
    pub const AFFILIATION_CHANGED: u16 = 321;
    /// Removed because the room became members-only.
    pub const MEMBERS_ONLY: u16 = 322;
    /// Removed because the service is shutting down.
    pub const SHUTDOWN: u16 = 332;
    /// Removed because of an error (its client bounced presence).
    pub const ERROR: u16 = 333;
}

/// An occupant: one account in the room under one nickname, with one or more of its
/// resources (a user on several devices is one occupant, as Prosody and ejabberd do it).
#[derive(Debug, Clone)]
pub struct Occupant {
    /// The nickname (enforced form).
    pub nick: String,
    /// The occupant's room JID (`room@service/nick`).
    pub room_jid: Jid,
    /// The real full JID shown to those who see real JIDs: its first session.
    pub jid: Jid,
    /// Every real full JID in the room under this nickname, `jid` first.
    pub sessions: Vec<Jid>,
    /// The role in this visit.
    pub role: Role,
    /// The children of its last available presence worth forwarding (show, status,
    /// priority, capabilities), without the MUC extensions.
    pub payload: Vec<Element>,
    /// XEP-0421 occupant id: stable per real bare JID and room, opaque.
    pub id: String,
}

/// The disco#info node at which a user finds the nickname reserved for them (§7.12).
/// Longest subject, in bytes: kept in memory (and the store) and sent to every newcomer.
const MAX_SUBJECT_BYTES: usize = 4096;
/// Longest `<reason/>` of an affiliation or role change, in bytes: an affiliation keeps it
/// (in memory and the store) and every list get sends it again.
const MAX_REASON_BYTES: usize = 1024;

const RESERVED_NICK_NODE: &str = "x-roomuser-item";

/// The disco#info node describing the extensions a room lets through (§17.1.2).
const TRAFFIC_NODE: &str = "http://jabber.org/protocol/muc#traffic";

/// An affiliation with what goes with it (a reserved nickname, the reason given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Affiliated {
    /// The affiliation.
    pub affiliation: Affiliation,
    /// The nickname reserved for the user, if any.
    pub nick: Option<String>,
    /// The reason given when it was set.
    pub reason: Option<String>,
}

/// The current subject, who set it and when.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    /// The subject text (empty: none).
    pub text: String,
    /// The nickname of who set it (none: the room).
    pub by: Option<String>,
    /// Its setter's XEP-0421 occupant id, kept (the setter may have left): the subject a
    /// newcomer gets is a message from an occupant, which carries it.
    pub occupant_id: Option<String>,
    /// When it was set (Unix seconds), for the `<delay/>` of that message.
    pub at: Option<i64>,
}

/// What happens to the stored room after a stanza.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Persist {
    /// Nothing stored changed.
    #[default]
    Nothing,
    /// Save the room (configuration, affiliations, subject).
    Save,
    /// Delete the stored room.
    Delete,
}

/// One stanza out of a room.
#[derive(Debug, Clone)]
pub enum Output {
    /// A stanza to its `to`.
    Send(Stanza),
    /// A stanza for many: serialized once, each recipient's `to` spliced in.
    Broadcast(Stanza, Vec<Jid>),
}

/// What a stanza did to a room: the stanzas to send, in order, and what to store first.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The stanzas to send, in order.
    pub out: Vec<Output>,
    /// What to store before sending them.
    pub persist: Persist,
    /// The room is gone (destroyed, or temporary and empty): forget it (and its archive).
    pub gone: bool,
    /// A message to archive before sending anything.
    pub archive: Option<ToArchive>,
}

impl Outcome {
    fn send(&mut self, s: Option<Stanza>) {
        if let Some(s) = s {
            self.out.push(Output::Send(s));
        }
    }

    fn broadcast(&mut self, s: Option<Stanza>, to: Vec<Jid>) {
        if let Some(s) = s.filter(|_| !to.is_empty()) {
            self.out.push(Output::Broadcast(s, to));
        }
    }

    fn save(&mut self) {
        if self.persist == Persist::Nothing {
            self.persist = Persist::Save;
        }
    }
}

/// A room: configuration, affiliations, occupants and subject.
#[derive(Debug, Clone)]
pub struct Room {
    jid: BareJid,
    config: RoomConfig,
    affiliations: BTreeMap<BareJid, Affiliated>,
    /// Occupants by nickname key (case-folded).
    occupants: BTreeMap<String, Occupant>,
    /// Nickname key by real full JID.
    by_jid: HashMap<Jid, String>,
    subject: Subject,
    /// Created and waiting for its first occupant, who becomes its owner.
    fresh: bool,
    /// A reserved room not configured yet: only owners may enter (§10.1.1).
    locked: bool,
    creator: BareJid,
    salt: String,
    limits: Limits,
    /// The last groupchat messages, oldest first, within `limits.history` and
    /// `limits.history_bytes`.
    history: History,
    /// The time of the stanza being handled (Unix seconds).
    now: i64,
    /// The archive id a groupchat message handled now gets (also the id of a forwarded IQ).
    next_id: String,
    /// IQs forwarded to an occupant and not answered yet.
    pending: iq::Pending,
}

/// What the service allows every room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest `max_occupants` a room may be configured for.
    pub max_occupants: u32,
    /// How many recent messages a room keeps for newcomers.
    pub history: usize,
    /// How many bytes of them at most.
    pub history_bytes: usize,
    /// The most JIDs with an affiliation in one room.
    pub max_affiliations: usize,
    /// Whether rooms archive their groupchat messages (XEP-0313 on the room JID).
    pub archive: bool,
}

/// A groupchat message for the room's archive (stored by the service before it is sent).
#[derive(Debug, Clone)]
pub struct ToArchive {
    /// The room's XEP-0359 id for it (also in the broadcast message).
    pub id: String,
    /// The sender's occupant JID.
    pub with: Jid,
    /// The sender's real bare JID, shown in archive results to those who see real JIDs.
    pub real: BareJid,
    /// The message as broadcast (no `to`).
    pub stanza: Stanza,
}

/// A room as stored (see [`Room::stored`] and [`Room::restore`]).
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The room's configuration.
    pub config: RoomConfig,
    /// Its affiliations.
    pub affiliations: Vec<(BareJid, Affiliated)>,
    /// Its subject.
    pub subject: Subject,
    /// Who created it.
    pub creator: BareJid,
    /// The salt of its occupant ids.
    pub salt: String,
}

impl Room {
    /// A new room at `jid`, about to be entered by `creator` (who becomes its owner).
    pub fn new(
        jid: BareJid,
        creator: BareJid,
        config: RoomConfig,
        limits: Limits,
        salt: String,
    ) -> Room {
        Room {
            jid,
            config,
            affiliations: BTreeMap::new(),
            occupants: BTreeMap::new(),
            by_jid: HashMap::new(),
            subject: Subject::default(),
            fresh: true,
            locked: false,
            creator,
            salt,
            limits,
            history: History::default(),
            now: 0,
            next_id: String::new(),
            pending: iq::Pending::default(),
        }
    }

    /// A stored room, with no occupants.
    pub fn restore(jid: BareJid, s: Snapshot, limits: Limits) -> Room {
        Room {
            jid,
            config: s.config,
            affiliations: s.affiliations.into_iter().collect(),
            occupants: BTreeMap::new(),
            by_jid: HashMap::new(),
            subject: s.subject,
            fresh: false,
            locked: false,
            creator: s.creator,
            salt: s.salt,
            limits,
            history: History::default(),
            now: 0,
            next_id: String::new(),
            pending: iq::Pending::default(),
        }
    }

    /// What to store of this room.
    pub fn stored(&self) -> Snapshot {
        Snapshot {
            config: self.config.clone(),
            affiliations: self
                .affiliations
                .iter()
                .map(|(j, a)| (j.clone(), a.clone()))
                .collect(),
            subject: self.subject.clone(),
            creator: self.creator.clone(),
            salt: self.salt.clone(),
        }
    }

    /// The room's bare JID.
    pub fn jid(&self) -> &BareJid {
        &self.jid
    }

    /// The configuration.
    pub fn config(&self) -> &RoomConfig {
        &self.config
    }

    /// Who created the room (counted against their room limit).
    pub fn creator(&self) -> &BareJid {
        &self.creator
    }

    /// The occupants, by nickname key.
    pub fn occupants(&self) -> impl Iterator<Item = &Occupant> {
        self.occupants.values()
    }

    /// The current subject.
    pub fn subject(&self) -> &Subject {
        &self.subject
    }

    /// Whether the room is locked awaiting configuration (§10.1.1).
    pub fn is_locked(&self) -> bool {
        self.locked
    }

    /// Whether `from` may query the room's archive: whoever has the right to enter it
    /// (XEP-0313 §6.1.2): not an outcast, and, where entering takes more than asking (a
    /// members-only or password-protected room), a member or someone in the room.
    pub fn may_read_archive(&self, from: &Jid) -> bool {
        let a = self.affiliation(from);
        let guarded = self.config.members_only || self.config.password.is_some();
        a != Affiliation::Outcast
            && (!guarded || a >= Affiliation::Member || self.is_occupant(from))
    }

    /// Whether `from` is shown the senders' real JIDs in the room's archive (XEP-0313
    /// §5.1.2) — as in the room: everyone in a non-anonymous room, a moderator in a
    /// semi-anonymous one; an admin or owner, who is a moderator once in the room, also from
    /// outside it.
    pub fn archive_shows_jids(&self, from: &Jid) -> bool {
        let role = self
            .key_of(from)
            .ok()
            .and_then(|k| self.occupants.get(k))
            .map_or(Role::None, |o| o.role);
        self.sees_jids(role) || self.affiliation(from) >= Affiliation::Admin
    }

    /// Puts a message from the archive back into the history for newcomers (at start, for a
    /// stored room), oldest first; a subject change in the archive is not history.
    pub fn recall(&mut self, stanza: Stanza, ts: i64) {
        if !stanza.element().has_child("body", CONTENT_NS) {
            return;
        }
        self.now = ts;
        self.remember(stanza);
    }

    /// Whether `added` more JIDs fit in the affiliation list (`[muc] max_affiliations`), for a
    /// change that adds them: the list is kept in memory with the room (from startup, for a
    /// persistent one) and sent whole at each list get.
    fn room_for_affiliations(&self, added: usize) -> Result<(), MucError> {
        if added > 0 && self.affiliations.len() + added > self.limits.max_affiliations {
            return Err(MucError::AffiliationsFull);
        }
        Ok(())
    }

    /// Whether `from` is in the room.
    pub fn is_occupant(&self, from: &Jid) -> bool {
        self.by_jid.contains_key(from)
    }

    /// The affiliation of `jid` (bare JID, else its domain; §9.1: a server can be banned).
    pub fn affiliation(&self, jid: &Jid) -> Affiliation {
        self.affiliations
            .get(&jid.to_bare())
            .or_else(|| self.affiliations.get(&jid.domain_jid()))
            .map_or(Affiliation::None, |a| a.affiliation)
    }

    /// Handles a stanza addressed to the room or one of its occupants, received at `now`
    /// (Unix seconds); a groupchat message it archives gets the archive id `id` (a fresh one
    /// from the service each time: the room holds no random source).
    pub fn handle(&mut self, stanza: Stanza, now: i64, id: &str) -> Outcome {
        self.now = now;
        id.clone_into(&mut self.next_id);
        let result = match stanza.kind() {
            StanzaKind::Presence(t) => self.presence(t, &stanza),
            StanzaKind::Message(_) => self.message(&stanza),
            StanzaKind::Iq(IqType::Get | IqType::Set) => self.iq(&stanza),
            StanzaKind::Iq(_) => Ok(self.iq_response(&stanza)),
        };
        let mut o = match result {
            Ok(o) => o,
            Err(e) => {
                let mut o = Outcome::default();
                o.send(stanza.error_reply(&StanzaError::from(e)));
                o
            }
        };
        // A room whose creator could not enter was never made.
        if self.fresh {
            o.gone = true;
        }
        o
    }

    fn iq(&mut self, iq: &Stanza) -> Result<Outcome, MucError> {
        let payload = iq.payload().ok_or(MucError::BadRequest("empty iq"))?;
        let to_occupant = iq.to().is_some_and(Jid::is_full);
        if to_occupant {
            return self.iq_to_occupant(iq, payload);
        }
        let set = iq.kind() == StanzaKind::Iq(IqType::Set);
        if payload.is("query", ns::ADMIN) {
            if set {
                self.admin_set(iq, payload)
            } else {
                self.admin_get(iq, payload)
            }
        } else if payload.is("query", ns::OWNER) {
            if set {
                self.owner_set(iq, payload)
            } else {
                self.owner_get(iq)
            }
        } else if payload.is("query", rookery_proto::ns::DISCO_INFO) && !set {
            let info = match payload.attr("node") {
                None => self.disco_info(),
                Some(node @ RESERVED_NICK_NODE) => self.reserved_nick(iq.from(), node),
                // §17.1.2: the room does not filter extensions, so offers no `#traffic`
                // description, which is "feature-not-implemented"; other nodes do not exist.
                Some(TRAFFIC_NODE) => return Err(MucError::UnsupportedNode),
                Some(_) => return Err(MucError::NoNode),
            };
            let mut o = Outcome::default();
            o.send(Some(iq.iq_result(Some(info))));
            Ok(o)
        } else if payload.is("query", rookery_proto::ns::DISCO_ITEMS) && !set {
            // Occupants are not listed: in a semi-anonymous room nobody outside sees them,
            // and §6.5 lets a room return none.
            let mut o = Outcome::default();
            o.send(Some(iq.iq_result(Some(Element::new(
                "query",
                rookery_proto::ns::DISCO_ITEMS,
            )))));
            Ok(o)
        } else if payload.is("ping", rookery_proto::ns::PING) {
            let mut o = Outcome::default();
            o.send(Some(iq.iq_result(None)));
            Ok(o)
        } else {
            // RFC 6120 §8.3.3.19; XEP-0045 §7.10 for `jabber:iq:register`.
            Err(MucError::UnsupportedIq)
        }
    }

    /// disco#info at `x-roomuser-item` (§7.12): the nickname reserved for the asking user as
    /// the identity's name, or an empty answer when none is.
    fn reserved_nick(&self, from: Option<&Jid>, node: &str) -> Element {
        let q = Element::new("query", rookery_proto::ns::DISCO_INFO).with_attr("node", node);
        let nick = from
            .and_then(|f| self.affiliations.get(&f.to_bare()))
            .and_then(|a| a.nick.as_deref());
        match nick {
            Some(nick) => q.with_child(rookery_core::modules::disco::identity(
                "conference",
                "text",
                Some(nick),
            )),
            None => q,
        }
    }

    /// disco#info of the room (§6.4): identity, features by configuration, `muc#roominfo`.
    pub fn disco_info(&self) -> Element {
        let name = if self.config.name.is_empty() {
            self.jid.local().unwrap_or_default()
        } else {
            self.config.name.as_str()
        };
        let mut q = Element::new("query", rookery_proto::ns::DISCO_INFO).with_child(
            rookery_core::modules::disco::identity("conference", "text", Some(name)),
        );
        let mut features = vec![
            ns::MUC,
            ns::STABLE_ID,
            ns::OCCUPANT_ID,
            ns::SELF_PING,
            rookery_proto::ns::DISCO_INFO,
            rookery_proto::ns::DISCO_ITEMS,
        ];
        if self.limits.archive {
            features.extend([
                rookery_mam::ns::MAM,
                rookery_mam::ns::MAM_EXTENDED,
                rookery_mam::ns::SID,
            ]);
        }
        features.extend(self.config.features());
        for f in features {
            q.push_child(rookery_core::modules::disco::feature(f));
        }
        use rookery_proto::form::{Field, Form};
        let info = Form::new("result", ns::ROOMINFO)
            .with(Field::new(
                "muc#roominfo_description",
                "text-single",
                self.config.description.clone(),
            ))
            .with(Field::new(
                "muc#roominfo_occupants",
                "text-single",
                self.occupants.len().to_string(),
            ))
            .with(Field::new(
                "muc#roominfo_subject",
                "text-single",
                self.subject.text.clone(),
            ))
            .with(Field::new("muc#roomconfig_roomname", "text-single", name));
        q.push_child(info.to_element());
        q
    }

    // ---- presence -------------------------------------------------------------------------

    fn presence(&mut self, t: PresenceType, p: &Stanza) -> Result<Outcome, MucError> {
        let Some(from) = p.from().cloned() else {
            return Ok(Outcome::default());
        };
        match t {
            PresenceType::Available => {
                let nick = p
                    .to()
                    .and_then(Jid::resource)
                    .ok_or(MucError::InvalidNick)?;
                match self.by_jid.get(&from).cloned() {
                    None => match p.element().get_child("x", ns::MUC) {
                        Some(join) => self.enter(&from, nick, p, join),
                        None => {
                            let mut o = Outcome::default();
                            o.send(wire::not_in_room(p));
                            Ok(o)
                        }
                    },
                    // The same nickname as enforced; another spelling of it (`Firstwitch`
                    // for `firstwitch`) is a nickname change (§7.6).
                    Some(key) if self.is_nick_of(&key, nick) => {
                        match p.element().get_child("x", ns::MUC) {
                            Some(join) => Ok(self.rejoin(&key, &from, p, join, nick)),
                            None => Ok(self.update_presence(&key, p)),
                        }
                    }
                    Some(key) => self.change_nick(&key, nick, p),
                }
            }
            PresenceType::Unavailable => Ok(self.leave(&from, p, None)),
            // A bounced presence: the occupant's client is gone (§7.2.? "ghosts").
            PresenceType::Error => Ok(self.leave(&from, p, Some(status::ERROR))),
            _ => Ok(Outcome::default()),
        }
    }

    /// Whether `raw`, enforced, is the nickname of `key`'s occupant.
    fn is_nick_of(&self, key: &str, raw: &str) -> bool {
        let nick = Nick::parse(raw).map(|n| n.display);
        self.occupants
            .get(key)
            .is_some_and(|o| nick.as_deref() == Ok(o.nick.as_str()))
    }

    /// The presence children to keep and forward (no MUC extensions, no occupant-id).
    fn forwarded_payload(p: &Stanza) -> Vec<Element> {
        p.element()
            .children()
            .filter(|c| !(c.ns() == ns::MUC || c.ns() == ns::USER || c.ns() == ns::OCCUPANT_ID))
            .cloned()
            .collect()
    }

    fn occupant_id(&self, jid: &Jid) -> String {
        let mut h = Sha256::new();
        h.update(self.salt.as_bytes());
        h.update([0]);
        h.update(self.jid.as_str().as_bytes());
        h.update([0]);
        h.update(jid.bare_str().as_bytes());
        let digest = h.finalize();
        base64::engine::general_purpose::STANDARD.encode(digest.get(..16).unwrap_or_default())
    }

    /// §7.2: the checks in the order the XEP lists them, then the presence exchange.
    fn enter(
        &mut self,
        from: &Jid,
        raw_nick: &str,
        p: &Stanza,
        join: &Element,
    ) -> Result<Outcome, MucError> {
        let nick = Nick::parse(raw_nick)?;
        let room_jid = self
            .jid
            .with_resource(&nick.display)
            .map_err(|_| MucError::InvalidNick)?;
        let created = self.fresh;
        if created {
            // The creator becomes the owner, of a room locked until configured (§10.1.1).
            self.fresh = false;
            self.locked = true;
            self.affiliations.insert(
                from.to_bare(),
                Affiliated {
                    affiliation: Affiliation::Owner,
                    nick: None,
                    reason: None,
                },
            );
        }
        let affiliation = self.affiliation(from);
        if affiliation == Affiliation::Outcast {
            return Err(MucError::Banned);
        }
        if self.locked && affiliation != Affiliation::Owner {
            return Err(MucError::NoRoom);
        }
        if self.config.members_only && affiliation < Affiliation::Member {
            return Err(MucError::MembersOnly);
        }
        if let Some(password) = &self.config.password {
            let given = join.child_text("password", ns::MUC);
            if !affiliation.is_admin() && given.as_deref() != Some(password.as_str()) {
                return Err(MucError::Password);
            }
        }
        if let Some(occ) = self.occupants.get(&nick.key) {
            if occ.jid.bare_str() != from.bare_str() {
                return Err(MucError::NickConflict);
            }
            return Ok(self.add_session(&nick.key, from, join, raw_nick));
        }
        if self.reserved_by_other(&nick.key, from) {
            return Err(MucError::NickConflict);
        }
        if self.occupants.len() >= self.config.max_occupants as usize && !affiliation.is_admin() {
            return Err(MucError::Full);
        }
        let occupant = Occupant {
            nick: nick.display.clone(),
            room_jid,
            jid: from.clone(),
            sessions: vec![from.clone()],
            role: Role::default_for(affiliation, self.config.moderated),
            payload: Self::forwarded_payload(p),
            id: self.occupant_id(from),
        };
        let mut o = Outcome::default();
        // 1. the others' presence, to the newcomer.
        let sees = self.sees_jids(occupant.role);
        for other in self.occupants.values() {
            o.send(
                wire::presence(
                    self,
                    other,
                    PresenceType::Available,
                    sees,
                    &Item::default(),
                    &[],
                )
                .map(|mut s| {
                    s.set_to(occupant.jid.clone());
                    s
                }),
            );
        }
        self.by_jid.insert(from.clone(), nick.key.clone());
        self.occupants.insert(nick.key.clone(), occupant.clone());
        // 2. the newcomer's presence, to the others and itself.
        let mut codes = Vec::new();
        if self.config.whois == Whois::Anyone {
            codes.push(status::NON_ANONYMOUS);
        }
        if created {
            codes.push(status::CREATED);
        }
        if nick.display != raw_nick {
            codes.push(status::NICK_MODIFIED);
        }
        self.broadcast_presence(
            &mut o,
            &occupant,
            PresenceType::Available,
            &Item::default(),
            &[],
            &codes,
        );
        // 3. the history it asked for (§7.2.14), then the subject, always (§7.2.15), last.
        for s in self.history_for(join, &occupant.jid) {
            o.send(Some(s));
        }
        o.send(wire::subject(self, &occupant.jid));
        if created && self.config.persistent {
            o.save();
        }
        Ok(o)
    }

    /// Another resource of an occupant's account enters under its nickname (as `raw`, maybe
    /// spelled otherwise): it gets what entering brings; the others see nothing new (the
    /// occupant was there already).
    fn add_session(&mut self, key: &str, from: &Jid, join: &Element, raw: &str) -> Outcome {
        let mut o = Outcome::default();
        let Some(occ) = self.occupants.get_mut(key) else {
            return o;
        };
        occ.sessions.push(from.clone());
        let occ = occ.clone();
        self.by_jid.insert(from.clone(), key.to_string());
        self.welcome(&mut o, &occ, from, join, raw);
        o
    }

    /// A join from a session already in the room under that nickname: its client lost track
    /// of the room (a reconnection the room did not see, XEP-0410's self-ping failing) and
    /// asks again. §7.2.1 and §18.2 rule 3 make it a join all the same, so it gets what
    /// entering brings; the others hear of it only if its presence changed.
    fn rejoin(&mut self, key: &str, from: &Jid, p: &Stanza, join: &Element, raw: &str) -> Outcome {
        let mut o = Outcome::default();
        let payload = Self::forwarded_payload(p);
        let Some(occ) = self.occupants.get_mut(key) else {
            return o;
        };
        let changed = occ.payload != payload;
        occ.payload = payload;
        let occ = occ.clone();
        if changed {
            self.broadcast_presence_skipping(
                &mut o,
                &occ,
                PresenceType::Available,
                &Item::default(),
                (&[], &[]),
                Some(from),
            );
        }
        self.welcome(&mut o, &occ, from, join, raw);
        o
    }

    /// What an entering session of the occupant `occ` gets, in §7.2.3's order: the others'
    /// presence, its own (110; 210 if it asked for the nickname as `raw`, spelled otherwise),
    /// the history `join` asks for, the subject.
    fn welcome(&self, o: &mut Outcome, occ: &Occupant, from: &Jid, join: &Element, raw: &str) {
        let sees = self.sees_jids(occ.role);
        for other in self
            .occupants
            .values()
            .filter(|x| x.room_jid != occ.room_jid)
        {
            let p = wire::presence(
                self,
                other,
                PresenceType::Available,
                sees,
                &Item::default(),
                &[],
            );
            o.send(p.map(|mut s| {
                s.set_to(from.clone());
                s
            }));
        }
        let mut codes = Vec::new();
        if self.config.whois == Whois::Anyone {
            codes.push(status::NON_ANONYMOUS);
        }
        if occ.nick != raw {
            codes.push(status::NICK_MODIFIED);
        }
        codes.push(status::SELF);
        let own = wire::presence(
            self,
            occ,
            PresenceType::Available,
            sees,
            &Item::default(),
            &codes,
        );
        o.send(own.map(|mut s| {
            s.set_to(from.clone());
            s
        }));
        for s in self.history_for(join, from) {
            o.send(Some(s));
        }
        o.send(wire::subject(self, from));
    }

    /// Every real full JID in the room (each occupant's every session).
    fn everyone(&self) -> Vec<Jid> {
        self.occupants
            .values()
            .flat_map(|o| o.sessions.iter().cloned())
            .collect()
    }

    /// Whether the nickname `key` is reserved by a user other than `from` (§7.2.9).
    fn reserved_by_other(&self, key: &str, from: &Jid) -> bool {
        let bare = from.to_bare();
        self.affiliations.iter().any(|(jid, a)| {
            *jid != bare && a.nick.as_deref().and_then(Nick::key_of).as_deref() == Some(key)
        })
    }

    /// Whether an occupant of `role` sees real JIDs.
    fn sees_jids(&self, role: Role) -> bool {
        self.config.whois == Whois::Anyone || role == Role::Moderator
    }

    /// The real JIDs of every occupant but the one at `except` (a room JID), split into
    /// those who see real JIDs and those who do not.
    fn audiences(&self, except: &Jid) -> (Vec<Jid>, Vec<Jid>) {
        let mut seers = Vec::new();
        let mut others = Vec::new();
        for occ in self.occupants.values().filter(|o| o.room_jid != *except) {
            let to = if self.sees_jids(occ.role) {
                &mut seers
            } else {
                &mut others
            };
            to.extend(occ.sessions.iter().cloned());
        }
        (seers, others)
    }

    /// Sends `occ`'s presence to every occupant (one serialization per audience) and to
    /// `occ` itself with status 110 and `self_codes` (§7.2.3). `occ` may already have left
    /// the occupant list (an unavailable presence).
    fn broadcast_presence(
        &self,
        o: &mut Outcome,
        occ: &Occupant,
        t: PresenceType,
        item: &Item<'_>,
        codes: &[u16],
        self_codes: &[u16],
    ) {
        self.broadcast_presence_skipping(o, occ, t, item, (codes, self_codes), None);
    }

    /// [`Room::broadcast_presence`], but not to `occ`'s session `skip` if given (a rejoining
    /// session, sent its own presence by [`Room::welcome`], in entering's order).
    fn broadcast_presence_skipping(
        &self,
        o: &mut Outcome,
        occ: &Occupant,
        t: PresenceType,
        item: &Item<'_>,
        (codes, self_codes): (&[u16], &[u16]),
        skip: Option<&Jid>,
    ) {
        let (seers, others) = self.audiences(&occ.room_jid);
        o.broadcast(wire::presence(self, occ, t, true, item, codes), seers);
        o.broadcast(wire::presence(self, occ, t, false, item, codes), others);
        let mut mine: Vec<u16> = codes.to_vec();
        mine.extend_from_slice(self_codes);
        mine.push(status::SELF);
        let own = wire::presence(self, occ, t, self.sees_jids(occ.role), item, &mine);
        for session in occ.sessions.iter().filter(|s| Some(*s) != skip) {
            o.send(own.clone().map(|mut s| {
                s.set_to(session.clone());
                s
            }));
        }
    }

    /// A presence update from an occupant under its nickname (§7.7).
    fn update_presence(&mut self, key: &str, p: &Stanza) -> Outcome {
        let mut o = Outcome::default();
        let Some(occ) = self.occupants.get_mut(key) else {
            return o;
        };
        occ.payload = Self::forwarded_payload(p);
        let occ = occ.clone();
        self.broadcast_presence(
            &mut o,
            &occ,
            PresenceType::Available,
            &Item::default(),
            &[],
            &[],
        );
        o
    }

    /// §7.6: unavailable with 303 and the new nickname, then available under it.
    fn change_nick(&mut self, key: &str, raw: &str, p: &Stanza) -> Result<Outcome, MucError> {
        let nick = Nick::parse(raw)?;
        let from = p.from().ok_or(MucError::NotOccupant)?;
        // The occupant's own nickname spelled anew is no conflict.
        let taken = nick.key != key && self.occupants.contains_key(&nick.key);
        if taken || self.reserved_by_other(&nick.key, from) {
            return Err(MucError::NickConflict);
        }
        let room_jid = self
            .jid
            .with_resource(&nick.display)
            .map_err(|_| MucError::InvalidNick)?;
        let Some(old) = self.occupants.remove(key) else {
            return Err(MucError::NotOccupant);
        };
        let mut o = Outcome::default();
        let item = Item {
            nick: Some(&nick.display),
            ..Item::default()
        };
        self.broadcast_presence(
            &mut o,
            &old,
            PresenceType::Unavailable,
            &item,
            &[status::NEW_NICK],
            &[],
        );
        let mut new = old;
        new.nick = nick.display.clone();
        new.room_jid = room_jid;
        new.payload = Self::forwarded_payload(p);
        for session in &new.sessions {
            self.by_jid.insert(session.clone(), nick.key.clone());
        }
        self.occupants.insert(nick.key.clone(), new.clone());
        let modified: &[u16] = if nick.display != raw {
            &[status::NICK_MODIFIED]
        } else {
            &[]
        };
        self.broadcast_presence(
            &mut o,
            &new,
            PresenceType::Available,
            &Item::default(),
            &[],
            modified,
        );
        Ok(o)
    }

    /// Removes the occupant at `from` (if any), telling everyone; `code` says why when it was
    /// not its own choice. A temporary room is gone with its last occupant (§10.9).
    fn leave(&mut self, from: &Jid, p: &Stanza, code: Option<u16>) -> Outcome {
        let mut o = Outcome::default();
        let Some(key) = self.by_jid.remove(from) else {
            return o;
        };
        if let Some(occ) = self
            .occupants
            .get_mut(&key)
            .filter(|x| x.sessions.len() > 1)
        {
            // One of several sessions leaves: only it is told; the occupant stays.
            occ.sessions.retain(|j| j != from);
            if occ.jid == *from {
                if let Some(first) = occ.sessions.first() {
                    occ.jid = first.clone();
                }
            }
            let role = occ.role;
            let mut gone = occ.clone();
            gone.role = Role::None;
            gone.payload.clear();
            let sees = self.sees_jids(role);
            let p = wire::presence(
                self,
                &gone,
                PresenceType::Unavailable,
                sees,
                &Item::default(),
                &[status::SELF],
            );
            o.send(p.map(|mut s| {
                s.set_to(from.clone());
                s
            }));
            return o;
        }
        let Some(mut occ) = self.occupants.remove(&key) else {
            return o;
        };
        occ.role = Role::None;
        // The leaving occupant's status text travels with its unavailable presence.
        occ.payload = Self::forwarded_payload(p)
            .into_iter()
            .filter(|c| c.name() == "status")
            .collect();
        let codes: Vec<u16> = code.into_iter().collect();
        self.broadcast_presence(
            &mut o,
            &occ,
            PresenceType::Unavailable,
            &Item::default(),
            &codes,
            &[],
        );
        self.vacate_if_empty(&mut o);
        o
    }

    /// Removes `key`'s occupant for an action of someone else (kick, ban, affiliation
    /// change), with `code` and the actor and reason in its item.
    fn remove(&mut self, o: &mut Outcome, key: &str, code: u16, item: &Item<'_>) {
        let Some(mut occ) = self.occupants.remove(key) else {
            return;
        };
        for session in &occ.sessions {
            self.by_jid.remove(session);
        }
        occ.role = Role::None;
        occ.payload.clear();
        self.broadcast_presence(o, &occ, PresenceType::Unavailable, item, &[code], &[]);
    }

    /// A temporary room without occupants is destroyed (§10.9, "temporary room").
    fn vacate_if_empty(&mut self, o: &mut Outcome) {
        if self.occupants.is_empty() && (!self.config.persistent || self.locked) {
            o.gone = true;
            if self.config.persistent {
                o.persist = Persist::Delete;
            }
        }
    }

    /// The occupant key of `from`, or [`MucError::NotOccupant`].
    fn key_of(&self, from: &Jid) -> Result<&String, MucError> {
        self.by_jid.get(from).ok_or(MucError::NotOccupant)
    }
}
