//! Messages in a room: groupchat (§7.4), the subject (§8.1), private messages (§7.5),
//! mediated invitations (§7.8.2, declines §7.8.2 end) and voice requests (§7.13, §8.6).

use std::collections::HashSet;

use rookery_jid::{BareJid, Jid};
use rookery_proto::form::{Field, Form};
use rookery_proto::stanza::is_stanza_id_by;
use rookery_proto::{MessageType, Stanza, StanzaKind};
use rookery_xml::{Element, CONTENT_NS};

use super::{wire, Affiliated, Outcome, Room};
use crate::error::{bounded, MucError};
use crate::ns;
use crate::role::{Affiliation, Role};
use crate::roomconfig::AllowPm;

/// Whether the error message `m` says its recipient cannot be reached (XEP-0045 §17.1.2's
/// delivery-related conditions), not that it refused the content.
fn undeliverable(m: &Stanza) -> bool {
    use rookery_proto::StanzaErrorCondition as C;
    // The stanza's own namespace, whichever stream it came over.
    m.element()
        .children()
        .find(|c| c.name() == "error")
        .and_then(rookery_proto::StanzaError::from_element)
        .is_some_and(|e| {
            matches!(
                e.condition,
                C::Gone
                    | C::ItemNotFound
                    | C::RecipientUnavailable
                    | C::Redirect
                    | C::RemoteServerNotFound
                    | C::RemoteServerTimeout
            )
        })
}

impl Room {
    pub(super) fn message(&mut self, m: &Stanza) -> Result<Outcome, MucError> {
        let StanzaKind::Message(t) = m.kind() else {
            return Ok(Outcome::default());
        };
        let from = m.from().cloned().ok_or(MucError::NotOccupant)?;
        let to_occupant = m.to().and_then(Jid::resource).map(str::to_string);
        match (t, to_occupant) {
            // What the room sent an occupant bounced: if it says the occupant cannot be
            // reached, it is a ghost and leaves (§17.1.2 SHOULD, with 333 as for a bounced
            // presence); other errors change nothing.
            (MessageType::Error, _) if undeliverable(m) => {
                Ok(self.leave(&from, m, Some(super::status::ERROR)))
            }
            (MessageType::Error, _) => Ok(Outcome::default()),
            (MessageType::Groupchat, None) => self.groupchat(&from, m),
            (MessageType::Groupchat, Some(_)) => {
                Err(MucError::BadRequest("groupchat messages go to the room"))
            }
            (_, Some(nick)) => self.private(&from, &nick, m),
            (_, None) => {
                if let Some(x) = m.element().get_child("x", ns::USER) {
                    if x.has_child("invite", ns::USER) {
                        return self.invite(&from, x);
                    }
                    if let Some(d) = x.get_child("decline", ns::USER) {
                        return Ok(self.decline(&from, d));
                    }
                }
                if let Some(form) =
                    Form::child_of(m.element()).filter(|f| f.form_type() == Some(ns::REQUEST))
                {
                    return self.voice(&from, &form);
                }
                Err(MucError::NotAllowed("messages to the room are groupchat"))
            }
        }
    }

    /// The element of `m` readdressed from `occ_jid`, without `to`, its occupant ids
    /// replaced by `id` (XEP-0421 §4: never trust one a client sent), without anything in
    /// the `muc#user` namespace: only the room speaks it, and an occupant's forged
    /// `<item jid=…/>` would pass for the room's word on who sent it (XEP-0045 §18.2 rule 6;
    /// XEP-0313 §5.1 asks the same before archiving), and without a `<stanza-id/>` in the
    /// room's name, archived or not (XEP-0359 §4 rule 2: only the room gives those). `extra`
    /// is the room's own addition.
    fn relayed(m: &Stanza, from: &Jid, id: Element, extra: Option<Element>) -> Option<Stanza> {
        let mut el = m.element().clone();
        let room = from.bare_str();
        el.remove_children_where(|c| {
            c.is("occupant-id", ns::OCCUPANT_ID) || c.ns() == ns::USER || is_stanza_id_by(c, room)
        });
        el.remove_attr("to");
        el.set_attr("from", from.as_str());
        if let Some(x) = extra {
            el.push_child(x);
        }
        el.push_child(id);
        Stanza::from_element(el).ok()
    }

    fn groupchat(&mut self, from: &Jid, m: &Stanza) -> Result<Outcome, MucError> {
        let key = self.key_of(from)?.clone();
        let occ = self
            .occupants
            .get(&key)
            .ok_or(MucError::NotOccupant)?
            .clone();
        if !occ.role.has_voice() {
            return Err(MucError::Forbidden("visitors have no voice in this room"));
        }
        let el = m.element();
        let has_body = el.has_child("body", CONTENT_NS);
        // §8.1: a subject with a body (or a thread) is a message that happens to carry one.
        let subject = el
            .get_child("subject", CONTENT_NS)
            .filter(|_| !has_body && !el.has_child("thread", CONTENT_NS));
        let mut o = Outcome::default();
        if let Some(s) = subject {
            if occ.role != Role::Moderator && !self.config.change_subject {
                return Err(MucError::Forbidden(
                    "only moderators may change the subject",
                ));
            }
            let text = s.text();
            bounded(&text, super::MAX_SUBJECT_BYTES, "the subject")?;
            self.subject = super::Subject {
                text,
                by: Some(occ.nick.clone()),
                occupant_id: Some(occ.id.clone()),
                at: Some(self.now),
            };
            if self.config.persistent {
                o.save();
            }
        }
        let everyone = self.everyone();
        let mut relayed = Self::relayed(m, &occ.room_jid, wire::occupant_id(&occ), None);
        // XEP-0334 §4.1/§4.2: `no-permanent-store` keeps a message out of the room's archive,
        // `no-store` also out of the history later occupants get.
        let hint = |name| el.has_child(name, rookery_proto::ns::HINTS);
        let (no_store, no_permanent_store) = (hint("no-store"), hint("no-permanent-store"));
        // XEP-0313 §5.1.2: messages with a body are archived, "as should subject change
        // stanzas"; only the former are history (the subject is sent apart, §7.2.15).
        if has_body || subject.is_some() {
            if self.limits.archive && !no_store && !no_permanent_store {
                // XEP-0359: the room's id for the message, in what everyone gets.
                relayed = relayed.map(|r| rookery_mam::archive::stamp(r, &self.jid, &self.next_id));
                if let Some(r) = &relayed {
                    o.archive = Some(super::ToArchive {
                        id: self.next_id.clone(),
                        with: occ.room_jid.clone(),
                        real: from.to_bare(),
                        stanza: r.clone(),
                    });
                }
            }
            if let Some(r) = relayed.as_ref().filter(|_| has_body && !no_store) {
                self.remember(r.clone());
            }
        }
        o.broadcast(relayed, everyone);
        Ok(o)
    }

    fn private(&mut self, from: &Jid, nick: &str, m: &Stanza) -> Result<Outcome, MucError> {
        let key = self.key_of(from)?.clone();
        let sender = self.occupants.get(&key).ok_or(MucError::NotOccupant)?;
        let allowed = match self.config.allow_pm {
            AllowPm::Anyone => true,
            AllowPm::Participants => sender.role.has_voice(),
            AllowPm::Moderators => sender.role == Role::Moderator,
            AllowPm::None => false,
        };
        if !allowed {
            return Err(MucError::Forbidden("private messages are not allowed here"));
        }
        let target = crate::nick::Nick::key_of(nick)
            .and_then(|k| self.occupants.get(&k))
            .ok_or(MucError::NoOccupant)?;
        let mut o = Outcome::default();
        let relayed = Self::relayed(
            m,
            &sender.room_jid,
            wire::occupant_id(sender),
            Some(Element::new("x", ns::USER)),
        );
        for session in &target.sessions {
            o.send(relayed.clone().map(|mut s| {
                s.set_to(session.clone());
                s
            }));
        }
        Ok(o)
    }

    /// §7.8.2: the room relays the invitation; in a members-only room only admins and owners
    /// (or anyone, with `allowinvites`) may invite, and the invitee becomes a member.
    fn invite(&mut self, from: &Jid, x: &Element) -> Result<Outcome, MucError> {
        self.key_of(from)?;
        let inviter = self.affiliation(from);
        if self.config.members_only && !inviter.is_admin() && !self.config.allow_invites {
            return Err(MucError::Forbidden("only admins may invite to this room"));
        }
        // Every invitation is checked before any is acted on: a refused one leaves no
        // membership granted by the others (nor unsaved).
        let invites = x
            .children()
            .filter(|c| c.is("invite", ns::USER))
            .map(|inv| {
                let to = inv
                    .attr("to")
                    .and_then(|t| Jid::parse(t).ok())
                    .ok_or(MucError::BadRequest("an invitation needs a valid 'to'"))?;
                if self.config.members_only && self.affiliation(&to) == Affiliation::Outcast {
                    return Err(MucError::NotAllowed("the invitee is banned"));
                }
                Ok((inv, to))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let new_members: HashSet<BareJid> = invites
            .iter()
            .filter(|(_, to)| {
                self.config.members_only && self.affiliation(to) < Affiliation::Member
            })
            .map(|(_, to)| to.to_bare())
            .collect();
        self.room_for_affiliations(new_members.len())?;
        let mut o = Outcome::default();
        for (inv, to) in invites {
            if self.config.members_only && self.affiliation(&to) < Affiliation::Member {
                self.affiliations.insert(
                    to.to_bare(),
                    Affiliated {
                        affiliation: Affiliation::Member,
                        nick: None,
                        reason: None,
                    },
                );
                if self.config.persistent {
                    o.save();
                }
            }
            // §7.8.2: the reason and a `<continue/>` (the invitee continues a one-to-one
            // chat in the room) go on with the room's invitation.
            let mut invite = Element::new("invite", ns::USER).with_attr("from", from.as_str());
            for c in inv
                .children()
                .filter(|c| c.is("reason", ns::USER) || c.is("continue", ns::USER))
            {
                invite.push_child(c.clone());
            }
            let mut ux = Element::new("x", ns::USER).with_child(invite);
            if let Some(p) = &self.config.password {
                ux.push_child(Element::new("password", ns::USER).with_text(p.clone()));
            }
            o.send(wire::message(
                self.jid.clone().into(),
                Some(&to),
                None,
                vec![ux],
            ));
        }
        Ok(o)
    }

    /// A `muc#request` form: from a visitor, a voice request every moderator gets as a form
    /// (§7.13); from a moderator, the request submitted back, which grants voice if
    /// `muc#request_allow` is true (§8.6).
    fn voice(&mut self, from: &Jid, form: &Form) -> Result<Outcome, MucError> {
        let key = self.key_of(from)?.clone();
        let occ = self
            .occupants
            .get(&key)
            .ok_or(MucError::NotOccupant)?
            .clone();
        let mut o = Outcome::default();
        if occ.role == Role::Moderator {
            let allow = form
                .value("muc#request_allow")
                .and_then(rookery_proto::form::parse_bool)
                .unwrap_or(false);
            let target = form
                .value("muc#roomnick")
                .and_then(crate::nick::Nick::key_of)
                .filter(|k| {
                    self.occupants
                        .get(k)
                        .is_some_and(|t| t.role == Role::Visitor)
                });
            if let (true, Some(target)) = (allow, target) {
                let item = super::Item {
                    actor: Some(&occ.nick),
                    ..super::Item::default()
                };
                self.set_role(&mut o, &target, Role::Participant, &item);
            }
            return Ok(o);
        }
        if occ.role != Role::Visitor {
            return Ok(o);
        }
        let request = Form::new("form", ns::REQUEST)
            .with(
                Field::new("muc#role", "list-single", Role::Participant.as_str())
                    .label("Requested role"),
            )
            .with(Field::new("muc#jid", "jid-single", occ.jid.as_str()).label("User ID"))
            .with(
                Field::new("muc#roomnick", "text-single", occ.nick.clone()).label("Room Nickname"),
            )
            .with(
                Field::new("muc#request_allow", "boolean", "0")
                    .label("Grant voice to this person?"),
            );
        let moderators: Vec<Jid> = self
            .occupants
            .values()
            .filter(|m| m.role == Role::Moderator)
            .flat_map(|m| m.sessions.iter().cloned())
            .collect();
        let message = wire::message(
            self.jid.clone().into(),
            None,
            None,
            vec![request.to_element()],
        );
        o.broadcast(message, moderators);
        Ok(o)
    }

    /// A declined invitation goes back to the inviter, from the room.
    fn decline(&self, from: &Jid, d: &Element) -> Outcome {
        let mut o = Outcome::default();
        let Some(to) = d.attr("to").and_then(|t| Jid::parse(t).ok()) else {
            return o;
        };
        let mut decline = Element::new("decline", ns::USER).with_attr("from", from.as_str());
        if let Some(r) = d.get_child("reason", ns::USER) {
            decline.push_child(r.clone());
        }
        o.send(wire::message(
            self.jid.clone().into(),
            Some(&to),
            None,
            vec![Element::new("x", ns::USER).with_child(decline)],
        ));
        o
    }
}
