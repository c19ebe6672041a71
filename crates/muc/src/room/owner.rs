//! Owner use cases: the configuration form (§10.2), instant and reserved rooms (§10.1.2,
//! §10.1.3), and destruction with an alternate venue (§10.9).

use rookery_proto::form::Form;
use rookery_proto::{PresenceType, Stanza};
use rookery_xml::Element;

use super::{status, wire, Outcome, Output, Persist, Room};
use crate::error::MucError;
use crate::ns;
use crate::role::{Affiliation, Role};
use crate::roomconfig::Whois;

impl Room {
    fn require_owner(&self, iq: &Stanza) -> Result<(), MucError> {
        match iq.from() {
            Some(f) if self.affiliation(f) == Affiliation::Owner => Ok(()),
            _ => Err(MucError::Forbidden("only owners configure the room")),
        }
    }

    pub(super) fn owner_get(&mut self, iq: &Stanza) -> Result<Outcome, MucError> {
        self.require_owner(iq)?;
        let q = Element::new("query", ns::OWNER)
            .with_child(self.config.to_form(self.limits.max_occupants).to_element());
        let mut o = Outcome::default();
        o.send(Some(iq.iq_result(Some(q))));
        Ok(o)
    }

    pub(super) fn owner_set(&mut self, iq: &Stanza, q: &Element) -> Result<Outcome, MucError> {
        self.require_owner(iq)?;
        if let Some(d) = q.get_child("destroy", ns::OWNER) {
            let mut o = self.destroy(d);
            o.out.insert(0, Output::Send(iq.iq_result(None)));
            return Ok(o);
        }
        let form = Form::child_of(q).ok_or(MucError::BadRequest("no configuration form"))?;
        if form.kind == "cancel" {
            let mut o = Outcome::default();
            o.send(Some(iq.iq_result(None)));
            if self.locked {
                // §10.1.3: cancelling the configuration of a new room destroys it.
                let d = self.destroy(&Element::new("destroy", ns::OWNER));
                o.out.extend(d.out);
                o.persist = d.persist;
                o.gone = true;
            }
            return Ok(o);
        }
        if form.kind != "submit" {
            return Err(MucError::BadRequest("the form is not submitted"));
        }
        let new = self.config.apply(&form, self.limits.max_occupants)?;
        let old = std::mem::replace(&mut self.config, new);
        let mut o = Outcome::default();
        o.send(Some(iq.iq_result(None)));
        o.persist = match (old.persistent, self.config.persistent) {
            (_, true) => Persist::Save,
            (true, false) => Persist::Delete,
            (false, false) => Persist::Nothing,
        };
        let was_locked = std::mem::replace(&mut self.locked, false);
        if !was_locked {
            let mut codes = vec![status::CONFIG_CHANGED];
            match (old.whois, self.config.whois) {
                (Whois::Moderators, Whois::Anyone) => codes.push(status::NOW_NON_ANONYMOUS),
                (Whois::Anyone, Whois::Moderators) => codes.push(status::NOW_SEMI_ANONYMOUS),
                _ => {}
            }
            let everyone = self.everyone();
            o.broadcast(wire::notice(self, &codes), everyone);
        }
        if self.config.members_only && !old.members_only {
            let outsiders: Vec<String> = self
                .occupants
                .iter()
                .filter(|(_, occ)| self.affiliation(&occ.jid) < Affiliation::Member)
                .map(|(k, _)| k.clone())
                .collect();
            for key in outsiders {
                self.remove(&mut o, &key, status::MEMBERS_ONLY, &super::Item::default());
            }
        }
        self.vacate_if_empty(&mut o);
        Ok(o)
    }

    /// The service shuts down (§17.1.4, status 332): every occupant gets its own
    /// unavailable presence with 110 and 332, so that its client knows it left for that and
    /// may join again later; the room itself (persistent or not) stays as it is.
    pub fn shut_down(&mut self) -> Outcome {
        self.dismiss_all(&[wire::status(status::SELF), wire::status(status::SHUTDOWN)])
    }

    /// Every occupant leaves: an unavailable presence to each of its sessions, with the item
    /// `none`/`none`, `extra` in its `muc#user` element and its occupant id.
    fn dismiss_all(&mut self, extra: &[Element]) -> Outcome {
        let mut o = Outcome::default();
        for occ in std::mem::take(&mut self.occupants).into_values() {
            let mut x = Element::new("x", ns::USER).with_child(
                Element::new("item", ns::USER)
                    .with_attr("affiliation", Affiliation::None.as_str())
                    .with_attr("role", Role::None.as_str()),
            );
            for e in extra {
                x.push_child(e.clone());
            }
            let mut p =
                Stanza::presence(PresenceType::Unavailable, Some(occ.room_jid.clone()), None);
            p.push_payload(x);
            p.push_payload(wire::occupant_id(&occ));
            for session in occ.sessions {
                let mut s = p.clone();
                s.set_to(session);
                o.send(Some(s));
            }
        }
        self.by_jid.clear();
        o
    }

    /// §10.9: every occupant gets an unavailable presence with the destroy element (and
    /// the alternate venue, if any); the room is gone.
    fn destroy(&mut self, d: &Element) -> Outcome {
        let mut destroy = Element::new("destroy", ns::USER);
        if let Some(j) = d.attr("jid") {
            destroy.set_attr("jid", j);
        }
        for name in ["reason", "password"] {
            if let Some(t) = d.child_text(name, ns::OWNER) {
                destroy.push_child(Element::new(name, ns::USER).with_text(t));
            }
        }
        let mut o = self.dismiss_all(&[destroy]);
        o.gone = true;
        if self.config.persistent {
            o.persist = Persist::Delete;
        }
        o
    }
}
