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
//! - Eligible messages (§6.1): type `chat`, or `normal` with a `<body/>`; never errors,
//!   groupchat, headlines, carbons themselves, or messages with `<private/>` or the XEP-0334
//!   `<no-copy/>` hint.

use std::sync::Arc;

use async_trait::async_trait;
use rookery_core::module::IqResult;
use rookery_core::{priority, Core, Declaration, Flow, HookPoint, IqTarget, Module, Template};
use rookery_jid::{BareJid, Jid};
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

/// Whether `message` is copied (XEP-0280 §6.1).
pub fn eligible(message: &Stanza) -> bool {
    let el = message.element();
    let kind_ok = match message.kind() {
        StanzaKind::Message(MessageType::Chat) => true,
        StanzaKind::Message(MessageType::Normal) => el.has_child("body", CONTENT_NS),
        _ => false,
    };
    kind_ok
        && !el.has_child("private", ns::CARBONS)
        && !el.has_child("no-copy", ns::HINTS)
        && !el.has_child("sent", ns::CARBONS)
        && !el.has_child("received", ns::CARBONS)
}

/// `message` wrapped as a `kind` (`sent` or `received`) carbon from `owner`, without `to`
/// (each copy gets its resource's).
pub fn wrap(kind: &str, owner: &BareJid, message: &Stanza) -> Element {
    let mut el = Element::new("message", CONTENT_NS).with_attr("from", owner.as_str());
    if let Some(t) = message.element().attr("type") {
        el.set_attr("type", t);
    }
    el.with_child(
        Element::new(kind, ns::CARBONS).with_child(
            Element::new("forwarded", ns::FORWARD).with_child(message.element().clone()),
        ),
    )
}

/// Sends `kind` carbons of `message` to the carbons-enabled resources of `owner`, except
/// `exclude`: wrapped and serialized once, through the core's fan-out.
///
/// Runs for every one-to-one message, twice (sent and received), and most accounts have no
/// other resource that wants a copy: that check is synchronous, and the fan-out, whose future
/// is kilobytes, is boxed on the rare path, so the modules' hook futures stay small (an
/// `async_trait` hook allocates and moves its whole future on every call).
pub async fn copies(
    im: &Im,
    core: &Arc<Core>,
    kind: &str,
    owner: &BareJid,
    message: &Stanza,
    exclude: &[&Jid],
) {
    let Some(targets) = targets(im, core, owner, message, exclude) else {
        return;
    };
    if let Ok(carbon) = Stanza::from_element(wrap(kind, owner, message)) {
        Box::pin(core.deliver_rendered(&Template::new(carbon), &targets)).await;
    }
}

/// The resources that get a carbon of `message`, if any.
fn targets(
    im: &Im,
    core: &Core,
    owner: &BareJid,
    message: &Stanza,
    exclude: &[&Jid],
) -> Option<Vec<Jid>> {
    if !eligible(message) {
        return None;
    }
    let targets: Vec<Jid> = im
        .sessions_where(core, owner, |s| s.carbons)
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

    async fn handle_iq(&self, _core: &Arc<Core>, to: &BareJid, iq: &Stanza) -> IqResult {
        own_account(iq, to)?;
        if iq.kind() != StanzaKind::Iq(IqType::Set) {
            return Err(StanzaError::new(Cond::BadRequest));
        }
        let (Some(from), Some(p)) = (iq.from(), iq.payload()) else {
            return Err(StanzaError::new(Cond::BadRequest));
        };
        let on = p.name() == "enable";
        self.im.session_mut(from, |s| s.carbons = on);
        Ok(None)
    }

    async fn hook(&self, core: &Arc<Core>, point: HookPoint, stanza: Stanza) -> Flow {
        match point {
            HookPoint::MessageFromLocal => {
                if let Some(from) = stanza.from() {
                    copies(&self.im, core, "sent", &from.to_bare(), &stanza, &[from]).await;
                }
            }
            HookPoint::MessageToFull => {
                if let Some(to) = stanza.to() {
                    // A message between two resources of one account is not copied back.
                    let own = stanza.from().is_some_and(|f| f.bare_eq(to));
                    if !own {
                        copies(&self.im, core, "received", &to.to_bare(), &stanza, &[to]).await;
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
        let cases = [
            ("<message type='chat'><body>x</body></message>", true),
            ("<message type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>", true),
            ("<message><body>x</body></message>", true),
            ("<message/>", false),
            ("<message type='groupchat'><body>x</body></message>", false),
            ("<message type='headline'><body>x</body></message>", false),
            ("<message type='error'><body>x</body></message>", false),
            ("<message type='chat'><body>x</body><private xmlns='urn:xmpp:carbons:2'/></message>", false),
            ("<message type='chat'><body>x</body><no-copy xmlns='urn:xmpp:hints'/></message>", false),
            ("<message type='chat'><received xmlns='urn:xmpp:carbons:2'/></message>", false),
        ];
        for (xml, want) in cases {
            assert_eq!(eligible(&parse_stanza(xml).unwrap()), want, "{xml}");
        }
    }

    #[test]
    fn wrapping() {
        let m = parse_stanza("<message type='chat' from='a@b/c' to='d@e'><body>x</body></message>")
            .unwrap();
        let owner = BareJid::parse("a@b").unwrap();
        let w = wrap("sent", &owner, &m);
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
