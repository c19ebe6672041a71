//! Roles and affiliations changed and listed by moderators (§8: kick, voice; §9.8 moderator
//! list), admins (§9: ban, members, moderators) and owners (§10.3–§10.8: owners, admins).
//! A set with several items is checked whole before anything changes.

use std::collections::HashSet;

use rookery_jid::{BareJid, Jid};
use rookery_proto::{PresenceType, Stanza};
use rookery_xml::Element;

use super::{status, Affiliated, Item, Outcome, Room};
use crate::error::{bounded, MucError};
use crate::nick::Nick;
use crate::ns;
use crate::role::{may_read_list, may_set_affiliation, may_set_role, Affiliation, Role};
use crate::roomconfig::Whois;

/// One checked change of a `muc#admin` set.
enum Change {
    Role {
        key: String,
        role: Role,
        reason: Option<String>,
    },
    Affiliation {
        jid: BareJid,
        affiliation: Affiliation,
        reason: Option<String>,
        nick: Option<String>,
    },
}

impl Room {
    /// The requester's affiliation and role (role `none` outside the room).
    fn actor(&self, from: &Jid) -> (Affiliation, Role) {
        let role = self
            .by_jid
            .get(from)
            .and_then(|k| self.occupants.get(k))
            .map_or(Role::None, |o| o.role);
        (self.affiliation(from), role)
    }

    pub(super) fn admin_get(&mut self, iq: &Stanza, q: &Element) -> Result<Outcome, MucError> {
        let from = iq.from().ok_or(MucError::NotOccupant)?;
        let (aff, role) = self.actor(from);
        let item = q.get_child("item", ns::ADMIN).ok_or(MucError::BadRequest(
            "a list request names an affiliation or a role",
        ))?;
        let mut result = Element::new("query", ns::ADMIN);
        if let Some(list) = item.attr("affiliation") {
            let list =
                Affiliation::parse(list).ok_or(MucError::BadRequest("unknown affiliation"))?;
            if list == Affiliation::None {
                return Err(MucError::BadRequest("there is no list of 'none'"));
            }
            let members_see_members =
                self.config.members_only && self.config.whois == Whois::Anyone;
            if !may_read_list(aff, list, members_see_members) {
                return Err(MucError::Forbidden("you may not see that list"));
            }
            for (jid, a) in self
                .affiliations
                .iter()
                .filter(|(_, a)| a.affiliation == list)
            {
                let mut el = Element::new("item", ns::ADMIN)
                    .with_attr("affiliation", list.as_str())
                    .with_attr("jid", jid.as_str());
                if let Some(n) = &a.nick {
                    el.set_attr("nick", n.clone());
                }
                if let Some(r) = &a.reason {
                    el.push_child(Element::new("reason", ns::ADMIN).with_text(r.clone()));
                }
                result.push_child(el);
            }
        } else if let Some(list) = item.attr("role") {
            let list = Role::parse(list).ok_or(MucError::BadRequest("unknown role"))?;
            if role != Role::Moderator {
                return Err(MucError::Forbidden("only moderators see the role lists"));
            }
            for occ in self.occupants.values().filter(|o| o.role == list) {
                result.push_child(
                    Element::new("item", ns::ADMIN)
                        .with_attr("role", list.as_str())
                        .with_attr("affiliation", self.affiliation(&occ.jid).as_str())
                        .with_attr("nick", occ.nick.clone())
                        .with_attr("jid", occ.jid.as_str()),
                );
            }
        } else {
            return Err(MucError::BadRequest(
                "a list request names an affiliation or a role",
            ));
        }
        let mut o = Outcome::default();
        o.send(Some(iq.iq_result(Some(result))));
        Ok(o)
    }

    pub(super) fn admin_set(&mut self, iq: &Stanza, q: &Element) -> Result<Outcome, MucError> {
        let from = iq.from().ok_or(MucError::NotOccupant)?.clone();
        let actor = self.actor(&from);
        let mut changes = Vec::new();
        for item in q.children().filter(|c| c.is("item", ns::ADMIN)) {
            changes.push(self.check(&from, actor, item)?);
        }
        if changes.is_empty() {
            return Err(MucError::BadRequest("no item"));
        }
        self.check_owners_remain(&changes)?;
        let added: HashSet<&BareJid> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Affiliation {
                    jid, affiliation, ..
                } if *affiliation != Affiliation::None && !self.affiliations.contains_key(jid) => {
                    Some(jid)
                }
                _ => None,
            })
            .collect();
        self.room_for_affiliations(added.len())?;
        let actor_nick = self
            .by_jid
            .get(&from)
            .and_then(|k| self.occupants.get(k))
            .map(|o| o.nick.clone());
        let mut o = Outcome::default();
        for c in changes {
            match c {
                Change::Role { key, role, reason } => {
                    let item = Item {
                        actor: actor_nick.as_deref(),
                        reason: reason.as_deref(),
                        ..Item::default()
                    };
                    self.set_role(&mut o, &key, role, &item);
                }
                Change::Affiliation {
                    jid,
                    affiliation,
                    reason,
                    nick,
                } => {
                    let item = Item {
                        actor: actor_nick.as_deref(),
                        reason: reason.as_deref(),
                        ..Item::default()
                    };
                    self.set_affiliation(&mut o, &jid, affiliation, &item, nick);
                }
            }
        }
        o.out.insert(0, super::Output::Send(iq.iq_result(None)));
        self.vacate_if_empty(&mut o);
        Ok(o)
    }

    /// Checks one item of a set by `from` against its privileges (§5.1.2, §5.2.1).
    fn check(
        &self,
        from: &Jid,
        actor: (Affiliation, Role),
        item: &Element,
    ) -> Result<Change, MucError> {
        let reason = item.child_text("reason", ns::ADMIN);
        if let Some(r) = &reason {
            bounded(r, super::MAX_REASON_BYTES, "the reason")?;
        }
        if item.attr("role").is_some() && item.attr("affiliation").is_some() {
            // §18.4: which of the two changes is meant (and who may make it) is unclear.
            return Err(MucError::BadRequest(
                "an item sets a role or an affiliation, not both",
            ));
        }
        if let Some(role) = item.attr("role") {
            let role = Role::parse(role).ok_or(MucError::BadRequest("unknown role"))?;
            let key = item
                .attr("nick")
                .and_then(Nick::key_of)
                .ok_or(MucError::BadRequest("a role change names a nickname"))?;
            let target = self.occupants.get(&key).ok_or(MucError::NoOccupant)?;
            let target_aff = self.affiliation(&target.jid);
            if !may_set_role(actor, target_aff, target.role, role) {
                return Err(if actor.1 == Role::Moderator {
                    MucError::NotAllowed("you may not change that occupant's role")
                } else {
                    MucError::Forbidden("only moderators change roles")
                });
            }
            return Ok(Change::Role { key, role, reason });
        }
        let Some(affiliation) = item.attr("affiliation") else {
            return Err(MucError::BadRequest(
                "an item sets a role or an affiliation",
            ));
        };
        let affiliation =
            Affiliation::parse(affiliation).ok_or(MucError::BadRequest("unknown affiliation"))?;
        let jid = match (item.attr("jid"), item.attr("nick")) {
            (Some(j), _) => Jid::parse(j)
                .map_err(|_| MucError::BadRequest("invalid jid"))?
                .to_bare(),
            (None, Some(n)) => Nick::key_of(n)
                .and_then(|k| self.occupants.get(&k))
                .map(|o| o.jid.to_bare())
                .ok_or(MucError::NoOccupant)?,
            (None, None) => return Err(MucError::BadRequest("an affiliation change names a jid")),
        };
        if affiliation == Affiliation::Outcast && jid.as_str() == from.bare_str() {
            return Err(MucError::SelfBan);
        }
        let old = self
            .affiliations
            .get(&jid)
            .map_or(Affiliation::None, |a| a.affiliation);
        if !may_set_affiliation(actor.0, old, affiliation) {
            return Err(if actor.0.is_admin() {
                MucError::NotAllowed("you may not change that affiliation")
            } else {
                MucError::Forbidden("only admins and owners change affiliations")
            });
        }
        let nick = item.attr("nick").map(str::to_string);
        Ok(Change::Affiliation {
            jid,
            affiliation,
            reason,
            nick,
        })
    }

    /// §10.6: the last owner cannot be removed.
    fn check_owners_remain(&self, changes: &[Change]) -> Result<(), MucError> {
        let mut owners: Vec<&BareJid> = self
            .affiliations
            .iter()
            .filter(|(_, a)| a.affiliation == Affiliation::Owner)
            .map(|(j, _)| j)
            .collect();
        for c in changes {
            if let Change::Affiliation {
                jid, affiliation, ..
            } = c
            {
                if *affiliation == Affiliation::Owner {
                    owners.push(jid);
                } else {
                    owners.retain(|o| *o != jid);
                }
            }
        }
        if owners.is_empty() {
            Err(MucError::LastOwner)
        } else {
            Ok(())
        }
    }

    pub(super) fn set_role(&mut self, o: &mut Outcome, key: &str, role: Role, item: &Item<'_>) {
        if role == Role::None {
            self.remove(o, key, status::KICKED, item);
            return;
        }
        let Some(occ) = self.occupants.get_mut(key) else {
            return;
        };
        occ.role = role;
        let occ = occ.clone();
        self.broadcast_presence(o, &occ, PresenceType::Available, item, &[], &[]);
    }

    fn set_affiliation(
        &mut self,
        o: &mut Outcome,
        jid: &BareJid,
        affiliation: Affiliation,
        item: &Item<'_>,
        nick: Option<String>,
    ) {
        let old = self
            .affiliations
            .get(jid)
            .map_or(Affiliation::None, |a| a.affiliation);
        if affiliation == Affiliation::None {
            self.affiliations.remove(jid);
        } else {
            self.affiliations.insert(
                jid.clone(),
                Affiliated {
                    affiliation,
                    nick,
                    reason: item.reason.map(str::to_string),
                },
            );
        }
        if self.config.persistent {
            o.save();
        }
        let keys: Vec<String> = self
            .occupants
            .iter()
            .filter(|(_, occ)| occ.jid.bare_str() == jid.as_str())
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            if affiliation == Affiliation::Outcast {
                self.remove(o, &key, status::BANNED, item);
                continue;
            }
            if self.config.members_only && affiliation < Affiliation::Member {
                self.remove(o, &key, status::AFFILIATION_CHANGED, item);
                continue;
            }
            let moderated = self.config.moderated;
            let Some(occ) = self.occupants.get_mut(&key) else {
                continue;
            };
            occ.role = if affiliation.is_admin() {
                Role::Moderator
            } else if old.is_admin() {
                Role::default_for(affiliation, moderated)
            } else if occ.role == Role::Visitor && affiliation >= Affiliation::Member {
                Role::Participant
            } else {
                occ.role
            };
            let occ = occ.clone();
            self.broadcast_presence(o, &occ, PresenceType::Available, item, &[], &[]);
        }
    }
}
