//! The one delivery path for pre-rendered fan-out: pubsub and PEP notifications (XEP-0060
//! §7.1.2, XEP-0163 §4.3), message carbons (XEP-0280 §6, §7) and presence broadcasts
//! (RFC 6121 §4.2.2, §4.4.2, §4.5.2).
//!
//! Such a stanza goes to many recipients that differ only in `to`. A [`Template`] holds it
//! serialized once, without `to`; [`Core::deliver_rendered`] decides per recipient:
//!
//! | recipient                                   | delivery                                        |
//! |---------------------------------------------|-------------------------------------------------|
//! | local full JID, online (message, available/unavailable presence) | that session: the shared bytes with `to` spliced in |
//! | local bare JID, message, available resources of priority ≥ 0 | each of them, one buffer for the account (RFC 6121 §8.5.2.1: all non-negative resources) |
//! | local bare JID, headline, none available    | dropped (RFC 6121 §8.5.2.2.3)                   |
//! | local bare JID, available/unavailable presence from a local sender | each available resource, one buffer (RFC 6121 §4.2.2, §4.4.2); none available: nobody |
//! | anything else local (offline, other presence) | [`Core::route`]: the modules' rules (offline storage, §8.5.3, presence to an account) |
//! | another domain (s2s, component, service)    | [`Core::route`], to the domain's route          |
//!
//! XEP-0191 blocking is applied here, for every recipient, by the same modules and the same
//! check the router uses for [`HookPoint::ToLocalAccount`] ([`Module::blocks`]): nothing
//! reaches a local account that blocks the sender, and nothing a local account sends reaches
//! whom it blocks, on this server or another. The recipients routed onward get the router's
//! own hooks instead of the inbound check, so it never runs twice.
//!
//! What is written straight into a session skips the route table's `MessageToFull` hooks:
//! nothing sent this way is carbon-copied (XEP-0280 §6.1: headlines, presence and messages
//! without a body are not eligible, carbons never are), and the archive's removal of a
//! `<stanza-id/>` forged in the recipient's name is done here instead
//! (`Template::render_for_account`).

use std::sync::Arc;

use bytes::Bytes;
use rookery_jid::{BareJid, Jid};
use rookery_proto::stanza::is_stanza_id_by;
use rookery_proto::{ns, MessageType, PresenceType, Stanza, StanzaKind};
use rookery_xml::escape_into;

use crate::module::HookPoint;
use crate::router::Core;
use crate::session::SessionHandle;

/// A stanza serialized once without `to`; each recipient costs one copy of the bytes with
/// its `to` spliced in.
#[derive(Debug, Clone)]
pub struct Template {
    /// The stanza, for recipients routed onward (readdressed, never parsed back).
    stanza: Stanza,
    /// `<message`, `<presence` or `<iq`.
    head: &'static [u8],
    /// Everything after the element name.
    rest: Bytes,
    /// The `by` of each `<stanza-id/>` the stanza carries (XEP-0359): none, or a room's
    /// own, in the usual case.
    ids_by: Box<[String]>,
}

impl Template {
    /// Serializes `stanza` once; its `to`, if any, is dropped (each recipient gets its own).
    pub fn new(stanza: Stanza) -> Template {
        let mut stanza = stanza;
        stanza.clear_to();
        let head: &'static [u8] = match stanza.kind() {
            StanzaKind::Message(_) => b"<message",
            StanzaKind::Presence(_) => b"<presence",
            StanzaKind::Iq(_) => b"<iq",
        };
        let bytes = stanza.to_bytes();
        // A stanza is in the stream's namespace: its serialization begins with its name.
        let rest = bytes.get(head.len()..).unwrap_or_default();
        let ids_by = stanza
            .element()
            .children()
            .filter(|c| c.is("stanza-id", ns::SID))
            .filter_map(|c| c.attr("by").map(str::to_owned))
            .collect();
        Template {
            rest: Bytes::copy_from_slice(rest),
            head,
            stanza,
            ids_by,
        }
    }

    /// The stanza (without `to`).
    pub fn stanza(&self) -> &Stanza {
        &self.stanza
    }

    /// The serialized stanza for `to`.
    pub fn render(&self, to: &str) -> Bytes {
        let mut buf = Vec::with_capacity(self.head.len() + self.rest.len() + to.len() + 8);
        buf.extend_from_slice(self.head);
        buf.extend_from_slice(b" to=\"");
        escape_into(&mut buf, to, true);
        buf.push(b'"');
        buf.extend_from_slice(&self.rest);
        Bytes::from(buf)
    }

    /// The serialized stanza for the local account `to`, without a `<stanza-id/>` in its
    /// account's name: only its own archive gives those, so one in a stanza fanned out (a
    /// room's relay of what an occupant wrote) is forged (XEP-0359 §4 rule 2). The usual
    /// stanza names no recipient: its shared bytes, at the cost of a comparison.
    fn render_for_account(&self, to: &Jid) -> Bytes {
        if !self.ids_by.iter().any(|by| by == to.bare_str()) {
            return self.render(to.as_str());
        }
        let mut s = self.addressed(to);
        s.remove_payload_where(|c| is_stanza_id_by(c, to.bare_str()));
        Bytes::from(s.to_bytes())
    }

    /// The stanza addressed to `to`, for the router.
    pub fn addressed(&self, to: &Jid) -> Stanza {
        let mut s = self.stanza.clone();
        s.set_to(to.clone());
        s
    }
}

/// The sessions a local recipient gets the bytes on (no allocation for the common single one).
enum Sessions {
    One(SessionHandle),
    Each(Vec<(SessionHandle, Option<i8>)>),
}

impl Core {
    /// Delivers `template` to each of `recipients` (see the module documentation): the one
    /// entry point for fan-out, local, remote and component recipients alike.
    pub async fn deliver_rendered<'a, I>(self: &Arc<Self>, template: &Template, recipients: I)
    where
        I: IntoIterator<Item = &'a Jid>,
        I::IntoIter: Send,
    {
        // The sender's account when it is local: its block list applies to every recipient.
        let sender = template
            .stanza
            .from()
            .filter(|f| f.local().is_some() && self.is_local_domain(f.domain()))
            .map(Jid::to_bare);
        // Without a blocking module there is nothing to ask per recipient.
        let checks = self
            .tables()
            .hooked(HookPoint::ToLocalAccount)
            .next()
            .is_some();
        for to in recipients {
            self.deliver_one(template, sender.as_ref(), checks, to)
                .await;
        }
    }

    async fn deliver_one(
        self: &Arc<Self>,
        t: &Template,
        sender: Option<&BareJid>,
        checks: bool,
        to: &Jid,
    ) {
        // Between two resources of one account nobody is blocked (an account never blocks
        // itself; carbons and presence to one's own resources skip the look-ups).
        let checks = checks && sender.is_none_or(|s| to.bare_str() != s.as_str());
        if let Some(s) = sender.filter(|_| checks) {
            if self.blocks(s, to).await {
                return;
            }
        }
        if self.is_local_domain(to.domain()) && to.local().is_some() {
            if let Some(sessions) = self.direct_targets(t, to) {
                let Some(sessions) = sessions else { return };
                if checks {
                    if let Some(from) = t.stanza.from() {
                        if self.blocks(&to.to_bare(), from).await {
                            return;
                        }
                    }
                }
                let bytes = t.render_for_account(to);
                match sessions {
                    Sessions::One(s) => {
                        s.send(bytes);
                    }
                    Sessions::Each(all) => {
                        for (s, _) in all {
                            s.send(bytes.clone());
                        }
                    }
                }
                return;
            }
        }
        // Offline accounts, presence for an account, other domains: the route table (whose
        // `ToLocalAccount` hooks apply the inbound block check).
        self.route(t.addressed(to)).await;
    }

    /// How a local recipient is served directly: `Some(Some(sessions))` gets the bytes,
    /// `Some(None)` nothing (a headline nobody can take), `None` goes to the route table (see
    /// the table in the module documentation).
    fn direct_targets(&self, t: &Template, to: &Jid) -> Option<Option<Sessions>> {
        match t.stanza.kind() {
            StanzaKind::Message(_)
            | StanzaKind::Presence(PresenceType::Available | PresenceType::Unavailable)
                if to.is_full() =>
            {
                self.session(to).map(|s| Some(Sessions::One(s)))
            }
            // A local account's presence broadcast to a local contact. The route table would
            // run the `PresenceToAccount` hooks on a copy of the stanza per contact, and for a
            // sender on this server they do only this (they watch remote senders: caps, PEP's
            // interest; and subscription presence, which never comes this way).
            StanzaKind::Presence(PresenceType::Available | PresenceType::Unavailable)
                if to.is_bare()
                    && t.stanza
                        .from()
                        .is_some_and(|f| self.is_local_domain(f.domain())) =>
            {
                let mut available = self.sessions_of(&to.to_bare());
                available.retain(|(_, p)| p.is_some());
                Some((!available.is_empty()).then_some(Sessions::Each(available)))
            }
            StanzaKind::Message(kind) if to.is_bare() => {
                // Filtered in place: no second allocation per recipient.
                let mut available = self.sessions_of(&to.to_bare());
                available.retain(|(_, p)| p.is_some_and(|p| p >= 0));
                if !available.is_empty() {
                    Some(Some(Sessions::Each(available)))
                } else if kind == MessageType::Headline {
                    // §8.5.2.2.3: a headline nobody can take is dropped; other types go to
                    // the modules (offline storage) through the route table.
                    Some(None)
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    /// Whether the local account `owner` shares its presence with `other`
    /// ([`Module::shares_presence`], asked of the modules until one knows).
    pub async fn shares_presence(self: &Arc<Self>, owner: &BareJid, other: &BareJid) -> bool {
        for m in self.modules() {
            if let Some(shared) = m.shares_presence(self, owner, other).await {
                return shared;
            }
        }
        false
    }

    /// Whether the local account `owner` blocks `other` (XEP-0191), asked of the modules
    /// hooked at [`HookPoint::ToLocalAccount`] — the check the router applies there.
    pub async fn blocks(self: &Arc<Self>, owner: &BareJid, other: &Jid) -> bool {
        for m in self.tables().hooked(HookPoint::ToLocalAccount) {
            let blocked = match m.blocks_now(owner, other) {
                Some(known) => known,
                None => m.blocks(self, owner, other).await,
            };
            if blocked {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
#[path = "fanout_tests.rs"]
mod tests;
