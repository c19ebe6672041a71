//! XEP-0280: Message Carbons — copies of a user's one-to-one messages for the user's other
//! resources that asked for them.
//!
//! - `<enable/>`/`<disable/>` (§4, §5) set a flag on the session.
//! - Sent carbons (§7): a message a local resource sends is copied, wrapped in
//!   `<sent><forwarded/></sent>`, to the account's other carbons-enabled resources.
//! - Received carbons (§6): a message delivered to one resource of an account is copied,
//!   wrapped in `<received><forwarded/></received>`, to its other carbons-enabled resources
//!   that did not get the message itself (messages to the bare JID delivered by
//!   [`crate::delivery`], messages to a full JID through the core's `MessageToFull` hook).
//! - Eligible messages (§6.1, [`eligible`]): type `chat`; `normal` with a `<body/>` or an IM
//!   payload (XEP-0184 receipts, XEP-0085 chat states, XEP-0333 markers); errors echoing
//!   such content; XEP-0249 and mediated invitations. Never groupchat, headlines, carbons
//!   themselves, private messages from a MUC occupant (received side), or messages with
//!   `<private/>` or the XEP-0334 `<no-copy/>` hint.

use std::sync::Arc;

use async_trait::async_trait;
use rookery_core::module::IqResult;
use rookery_core::{priority, Core, Declaration, Flow, HookPoint, IqTarget, Module, Template};
use rookery_jid::{BareJid, Jid};
use rookery_proto::stanza::is_stanza_id_by;
use rookery_proto::{
    ns, IqType, MessageType, Stanza, StanzaError, StanzaErrorCondition as Cond, StanzaKind,
};
use rookery_xml::{Element, CONTENT_NS};

use crate::state::Im;
use crate::util::own_account;

/// The carbons module.
pub struct Carbons {
    im: Arc<Im>,
}

impl Carbons {
    /// A carbons module on the shared state.
    pub fn new(im: Arc<Im>) -> Self {
        Carbons { im }
    }
}

/// Which copy of a message the user's other resources get: of one a resource sent, or of
/// one a resource received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A `<sent/>` carbon (§7).
    Sent,
    /// A `<received/>` carbon (§6).
    Received,
}

impl Direction {
    /// The wrapper element's name.
    fn element(self) -> &'static str {
        match self {
            Direction::Sent => "sent",
            Direction::Received => "received",
        }
    }
}

/// Payloads typically used in IM (§6.1): they make a message without a body eligible.
const IM_PAYLOADS: [&str; 3] = [ns::RECEIPTS, ns::CHATSTATES, ns::CHAT_MARKERS];

/// Whether `message`, going in `direction`, is copied (XEP-0280 §6.1.1, the recommended
/// rules):
/// - never with `<private/>`, `<no-copy/>`, or when it is a carbon itself;
/// - never `groupchat` or `headline`;
/// - invitations, XEP-0249 direct or XEP-0045 mediated (a muc#user `<x/>` with
///   `<invite/>`), are copied;
/// - any other muc#user `<x/>` marks a private message between a user and a MUC occupant:
///   copied when sent, not when received (the MUC service already gives it to every
///   joined client of the user);
/// - `chat` is copied; `normal` with a `<body/>` or an IM payload too; so is an `error` with
///   either, since a bounce echoes the original (RFC 6120 §8.3.1), which stands in for
///   "in reply to an eligible message" without tracking every message sent.
pub fn eligible(message: &Stanza, direction: Direction) -> bool {
    let el = message.element();
    let never = el.has_child("private", ns::CARBONS)
        || el.has_child("no-copy", ns::HINTS)
        || el.has_child("sent", ns::CARBONS)
        || el.has_child("received", ns::CARBONS);
    if never {
        return false;
    }
    let StanzaKind::Message(kind) = message.kind() else {
        return false;
    };
    if matches!(kind, MessageType::Groupchat | MessageType::Headline) {
        return false;
    }
    let muc = el.get_child("x", ns::MUC_USER);
    if el.has_child("x", ns::CONFERENCE) || muc.is_some_and(|x| x.has_child("invite", ns::MUC_USER))
    {
        return true;
    }
    if muc.is_some() && direction == Direction::Received {
        return false;
    }
    kind == MessageType::Chat
        || el.has_child("body", CONTENT_NS)
        || el.children().any(|c| IM_PAYLOADS.contains(&c.ns()))
}

/// `message` wrapped as a `direction` carbon from `owner`, without `to` (each copy gets its
/// resource's). A sent message its sender's archive took carries that archive's
/// `<stanza-id/>` inside the copy (XEP-0313 §5.1.1 SHOULD), which the recipient's copy never
/// does.
pub fn wrap(direction: Direction, owner: &BareJid, message: &Stanza) -> Element {
    let mut el = Element::new("message", CONTENT_NS).with_attr("from", owner.as_str());
    if let Some(t) = message.element().attr("type") {
        el.set_attr("type", t);
    }
    let mut copy = message.element().clone();
    if let (Direction::Sent, Some(id)) = (direction, message.sender_archive_id()) {
        // One the sending client put there itself is not the archive's (XEP-0359 §4).
        copy.remove_children_where(|c| is_stanza_id_by(c, owner.as_str()));
        copy.push_child(
            Element::new("stanza-id", ns::SID)
                .with_attr("by", owner.as_str())
                .with_attr("id", id),
        );
    }
    el.with_child(
        Element::new(direction.element(), ns::CARBONS)
            .with_child(Element::new("forwarded", ns::FORWARD).with_child(copy)),
    )
}

/// Sends `direction` carbons of `message` to the carbons-enabled resources of `owner`, except
/// `exclude`: wrapped and serialized once, through the core's fan-out.
///
/// Runs for every one-to-one message, twice (sent and received), and most accounts have no
/// other resource that wants a copy: that check is synchronous, and the fan-out, whose future
/// is kilobytes, is boxed on the rare path, so the modules' hook futures stay small (an
/// `async_trait` hook allocates and moves its whole future on every call).
pub async fn copies(
    im: &Im,
    core: &Arc<Core>,
    direction: Direction,
    owner: &BareJid,
    message: &Stanza,
    exclude: &[&Jid],
) {
    if !eligible(message, direction) {
        return;
    }
    let Some(targets) = targets(im, core, owner, exclude) else {
        return;
    };
    if let Ok(carbon) = Stanza::from_element(wrap(direction, owner, message)) {
        Box::pin(core.deliver_rendered(&Template::new(carbon), &targets)).await;
    }
}

/// The resources of `owner` that get a carbon, if any: those here that enabled carbons,
/// and those of other nodes of a cluster whose node said they did.
fn targets(im: &Im, core: &Core, owner: &BareJid, exclude: &[&Jid]) -> Option<Vec<Jid>> {
    let targets: Vec<Jid> = im
        .sessions_where(
            core,
            owner,
            |s| s.carbons,
            |h, _| core.carbons_enabled(h.jid()),
        )
        .iter()
        .map(|h| h.jid())
        .filter(|j| !exclude.contains(j))
        .cloned()
        .collect();
    (!targets.is_empty()).then_some(targets)
}

#[async_trait]
impl Module for Carbons {
    fn name(&self) -> &'static str {
        "carbons"
    }

    fn declare(&self) -> Declaration {
        Declaration {
            iqs: vec![
                (IqTarget::Account, ns::CARBONS, "enable"),
                (IqTarget::Account, ns::CARBONS, "disable"),
            ],
            hooks: vec![
                (HookPoint::MessageFromLocal, priority::DEFAULT),
                (HookPoint::MessageToFull, priority::DEFAULT),
            ],
            server_features: vec![ns::CARBONS],
            ..Declaration::default()
        }
    }

    async fn handle_iq(&self, core: &Arc<Core>, to: &BareJid, iq: &Stanza) -> IqResult {
        own_account(iq, to)?;
        if iq.kind() != StanzaKind::Iq(IqType::Set) {
            return Err(StanzaError::new(Cond::BadRequest));
        }
        let (Some(from), Some(p)) = (iq.from(), iq.payload()) else {
            return Err(StanzaError::new(Cond::BadRequest));
        };
        let on = p.name() == "enable";
        self.im.session_mut(from, |s| s.carbons = on);
        core.set_carbons(from, on);
        Ok(None)
    }

    async fn hook(&self, core: &Arc<Core>, point: HookPoint, stanza: Stanza) -> Flow {
        match point {
            HookPoint::MessageFromLocal => {
                if let Some(from) = stanza.from() {
                    let owner = from.to_bare();
                    copies(&self.im, core, Direction::Sent, &owner, &stanza, &[from]).await;
                }
            }
            HookPoint::MessageToFull => {
                if let Some(to) = stanza.to() {
                    // A message between two resources of one account is not copied back.
                    let own = stanza.from().is_some_and(|f| f.bare_eq(to));
                    if !own {
                        let owner = to.to_bare();
                        copies(&self.im, core, Direction::Received, &owner, &stanza, &[to]).await;
                    }
                }
            }
            _ => {}
        }
        Flow::Continue(stanza)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::util::parse_stanza;

    #[test]
    fn eligibility() {
        use Direction::{Received, Sent};
        let cases = [
            ("<message type='chat'><body>x</body></message>", true, true),
            ("<message type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>", true, true),
            ("<message><body>x</body></message>", true, true),
            ("<message/>", false, false),
            ("<message><active xmlns='http://jabber.org/protocol/chatstates'/></message>", true, true),
            ("<message><received xmlns='urn:xmpp:receipts' id='1'/></message>", true, true),
            ("<message><displayed xmlns='urn:xmpp:chat-markers:0' id='1'/></message>", true, true),
            ("<message type='error'><body>x</body><error type='cancel'/></message>", true, true),
            ("<message type='error'><error type='cancel'/></message>", false, false),
            ("<message><x xmlns='jabber:x:conference' jid='r@muc'/></message>", true, true),
            ("<message><x xmlns='http://jabber.org/protocol/muc#user'><invite from='a@b'/></x></message>", true, true),
            ("<message type='chat'><body>x</body><x xmlns='http://jabber.org/protocol/muc#user'/></message>", true, false),
            ("<message type='groupchat'><body>x</body></message>", false, false),
            ("<message type='groupchat'><x xmlns='jabber:x:conference' jid='r@muc'/></message>", false, false),
            ("<message type='headline'><body>x</body></message>", false, false),
            ("<message type='chat'><body>x</body><private xmlns='urn:xmpp:carbons:2'/></message>", false, false),
            ("<message type='chat'><body>x</body><no-copy xmlns='urn:xmpp:hints'/></message>", false, false),
            ("<message type='chat'><received xmlns='urn:xmpp:carbons:2'/></message>", false, false),
        ];
        for (xml, sent, received) in cases {
            let m = parse_stanza(xml).unwrap();
            assert_eq!(eligible(&m, Sent), sent, "sent {xml}");
            assert_eq!(eligible(&m, Received), received, "received {xml}");
        }
    }

    #[test]
    fn wrapping() {
        let m = parse_stanza("<message type='chat' from='a@b/c' to='d@e'><body>x</body></message>")
            .unwrap();
        let owner = BareJid::parse("a@b").unwrap();
        let w = wrap(Direction::Sent, &owner, &m);
        assert_eq!(w.attr("from"), Some("a@b"));
        assert_eq!(w.attr("type"), Some("chat"));
        let inner = w
            .get_child("sent", ns::CARBONS)
            .and_then(|s| s.get_child("forwarded", ns::FORWARD))
            .and_then(|f| f.get_child("message", CONTENT_NS))
            .unwrap();
        assert_eq!(inner.child_text("body", CONTENT_NS).as_deref(), Some("x"));
    }
}
