//! The three stanza kinds of RFC 6120 §8, validated once at the boundary.
//!
//! A [`Stanza`] keeps its [`Element`] (payloads stay generic XML for modules to interpret) and
//! adds the parsed addresses and type. Parsing distinguishes "not a stanza" (a negotiation
//! element, or something the stream must reject) from "a stanza, but malformed", which gets
//! a stanza error reply built by [`StanzaParseError::reply`].

use rookery_jid::Jid;
use rookery_xml::{Element, Limits, CONTENT_NS};

use crate::error::{StanzaError, StanzaErrorCondition};
use crate::ns;

/// RFC 6121 §5.2.2 message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// Standalone message (also used for unknown or missing types, per RFC 6121 §5.2.2).
    Normal,
    /// One-to-one conversation.
    Chat,
    /// Multi-user chat.
    Groupchat,
    /// Alert or notification: never stored offline.
    Headline,
    /// Error reply.
    Error,
}

/// RFC 6121 §4.7.1 presence types (`Available` is the absence of a type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PresenceType {
    /// Available (no type attribute).
    Available,
    /// No longer available.
    Unavailable,
    /// Subscription request.
    Subscribe,
    /// Subscription approved.
    Subscribed,
    /// Unsubscribe request.
    Unsubscribe,
    /// Subscription denied or cancelled.
    Unsubscribed,
    /// Request for current presence (server-generated).
    Probe,
    /// Error reply.
    Error,
}

/// RFC 6120 §8.2.3 IQ types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IqType {
    /// Request for information.
    Get,
    /// Request to change state.
    Set,
    /// Successful response.
    Result,
    /// Error response.
    Error,
}

/// What a stanza is, with its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StanzaKind {
    /// `<message/>`.
    Message(MessageType),
    /// `<presence/>`.
    Presence(PresenceType),
    /// `<iq/>`.
    Iq(IqType),
}

impl StanzaKind {
    /// True for error stanzas, which must never be answered with an error.
    pub fn is_error(self) -> bool {
        matches!(
            self,
            StanzaKind::Message(MessageType::Error)
                | StanzaKind::Presence(PresenceType::Error)
                | StanzaKind::Iq(IqType::Error)
        )
    }

    /// The element name.
    pub fn name(self) -> &'static str {
        match self {
            StanzaKind::Message(_) => "message",
            StanzaKind::Presence(_) => "presence",
            StanzaKind::Iq(_) => "iq",
        }
    }
}

/// Why an element could not become a [`Stanza`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StanzaParseError {
    /// Not `message`, `presence` or `iq` in the content namespace: not for this parser.
    #[error("not a stanza: <{0}/>")]
    NotAStanza(String),
    /// A stanza, but malformed; the error to send back, and the element it is about.
    #[error("malformed stanza: {error}")]
    Malformed {
        /// The stanza error for the sender.
        error: StanzaError,
        /// The offending element.
        element: Box<Element>,
    },
}

impl StanzaParseError {
    /// The error reply for a malformed stanza, from `answering` (the domain of the server
    /// that answers) where the stanza's own `to` cannot stand for the sender of the reply.
    /// None for error stanzas, IQ results (RFC 6120 §8.2.3: never answered with a further IQ
    /// response), an IQ without `id` (its reply could not say which request it answers, and
    /// an IQ needs one) and non-stanzas.
    ///
    /// The addresses are swapped as for any error reply (RFC 6120 §8.3.1), except one that is
    /// not a valid JID (often the very reason, `jid-malformed`): it is left out rather than
    /// echoed, so the reply never claims to come from, or go to, an address that does not
    /// exist. A reply the server generates because of such a `to` comes from `answering`
    /// (§8.1.2.1: without `from` it would seem to come from the client's own account).
    pub fn reply(&self, answering: &str) -> Option<Element> {
        match self {
            StanzaParseError::NotAStanza(_) => None,
            StanzaParseError::Malformed { error, element } => {
                let is_iq = element.name() == "iq";
                match element.attr("type") {
                    Some("error") => return None,
                    Some("result") if is_iq => return None,
                    _ if is_iq && element.attr("id").is_none() => return None,
                    _ => {}
                }
                let mut reply = error_element(element, error);
                if reply.attr("to").is_some_and(|a| Jid::parse(a).is_err()) {
                    reply.remove_attr("to");
                }
                if reply.attr("from").is_some_and(|a| Jid::parse(a).is_err()) {
                    reply.set_attr("from", answering);
                }
                Some(reply)
            }
        }
    }
}

/// A validated stanza.
#[derive(Debug, Clone, PartialEq)]
pub struct Stanza {
    kind: StanzaKind,
    from: Option<Jid>,
    to: Option<Jid>,
    element: Element,
    marks: Marks,
}

/// What the server knows of a stanza's way through it that its XML does not say. Never
/// serialized: a stanza parsed or built anew has none, which is the safe default (nothing
/// vouched for).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Marks {
    /// See [`Stanza::mark_routed_again`].
    routed_again: bool,
    /// See [`Stanza::mark_archived`].
    archived: bool,
    /// See [`Stanza::mark_sender_archive_id`].
    sender_archive_id: Option<Box<str>>,
}

fn malformed(el: Element, cond: StanzaErrorCondition, text: &str) -> StanzaParseError {
    StanzaParseError::Malformed {
        error: StanzaError::new(cond).with_text(text),
        element: Box::new(el),
    }
}

fn parse_addr(el: &Element, attr: &str) -> Result<Option<Jid>, StanzaErrorCondition> {
    match el.attr(attr) {
        None => Ok(None),
        Some(s) => Jid::parse(s)
            .map(Some)
            .map_err(|_| StanzaErrorCondition::JidMalformed),
    }
}

impl Stanza {
    /// Validates `element` as a stanza: known kind and type, well-formed addresses, and for
    /// IQs an `id` and exactly one payload for `get`/`set` (RFC 6120 §8.2.3).
    pub fn from_element(element: Element) -> Result<Stanza, StanzaParseError> {
        if element.ns() != CONTENT_NS {
            return Err(StanzaParseError::NotAStanza(element.name().to_string()));
        }
        let ty = element.attr("type");
        let kind = match element.name() {
            "message" => StanzaKind::Message(match ty {
                Some("chat") => MessageType::Chat,
                Some("groupchat") => MessageType::Groupchat,
                Some("headline") => MessageType::Headline,
                Some("error") => MessageType::Error,
                _ => MessageType::Normal,
            }),
            "presence" => StanzaKind::Presence(match ty {
                None => PresenceType::Available,
                Some("unavailable") => PresenceType::Unavailable,
                Some("subscribe") => PresenceType::Subscribe,
                Some("subscribed") => PresenceType::Subscribed,
                Some("unsubscribe") => PresenceType::Unsubscribe,
                Some("unsubscribed") => PresenceType::Unsubscribed,
                Some("probe") => PresenceType::Probe,
                Some("error") => PresenceType::Error,
                Some(_) => {
                    return Err(malformed(
                        element,
                        StanzaErrorCondition::BadRequest,
                        "unknown presence type",
                    ))
                }
            }),
            "iq" => {
                let t = match ty {
                    Some("get") => IqType::Get,
                    Some("set") => IqType::Set,
                    Some("result") => IqType::Result,
                    Some("error") => IqType::Error,
                    _ => {
                        return Err(malformed(
                            element,
                            StanzaErrorCondition::BadRequest,
                            "missing or unknown iq type",
                        ))
                    }
                };
                if element.attr("id").is_none() {
                    return Err(malformed(
                        element,
                        StanzaErrorCondition::BadRequest,
                        "iq without id",
                    ));
                }
                if matches!(t, IqType::Get | IqType::Set) && element.children().count() != 1 {
                    return Err(malformed(
                        element,
                        StanzaErrorCondition::BadRequest,
                        "iq get/set must have exactly one child",
                    ));
                }
                StanzaKind::Iq(t)
            }
            other => return Err(StanzaParseError::NotAStanza(other.to_string())),
        };
        let to = match parse_addr(&element, "to") {
            Ok(j) => j,
            Err(c) => return Err(malformed(element, c, "malformed 'to' address")),
        };
        let from = match parse_addr(&element, "from") {
            Ok(j) => j,
            Err(c) => return Err(malformed(element, c, "malformed 'from' address")),
        };
        Ok(Stanza {
            kind,
            from,
            to,
            element,
            marks: Marks::default(),
        })
    }

    /// Kind and type.
    pub fn kind(&self) -> StanzaKind {
        self.kind
    }

    /// The `from` address.
    pub fn from(&self) -> Option<&Jid> {
        self.from.as_ref()
    }

    /// The `to` address.
    pub fn to(&self) -> Option<&Jid> {
        self.to.as_ref()
    }

    /// The `id` attribute.
    pub fn id(&self) -> Option<&str> {
        self.element.attr("id")
    }

    /// Sets `from` (the server stamps it on everything a client sends).
    pub fn set_from(&mut self, from: Jid) {
        self.element.set_attr("from", from.as_str());
        self.from = Some(from);
    }

    /// Sets `to`.
    pub fn set_to(&mut self, to: Jid) {
        self.element.set_attr("to", to.as_str());
        self.to = Some(to);
    }

    /// Gives the stanza the language `lang` unless it names its own (RFC 6120 §4.7.4: a
    /// stanza without `xml:lang` is in its stream's language, which its recipients must be
    /// told, since their stream may say another).
    pub fn default_lang(&mut self, lang: &str) {
        if self.element.attr("xml:lang").is_none() {
            self.element.set_attr("xml:lang", lang);
        }
    }

    /// Removes `to` (a stanza readdressed per recipient, see `rookery_core::fanout`).
    pub fn clear_to(&mut self) {
        self.element.remove_attr("to");
        self.to = None;
    }

    /// The element.
    pub fn element(&self) -> &Element {
        &self.element
    }

    /// Mutable access to the payload. Addresses and type must be changed through the typed
    /// setters so that they stay in step with the element.
    pub fn payload_mut(&mut self) -> impl Iterator<Item = &mut Element> {
        self.element.children_mut()
    }

    /// Appends a payload child.
    pub fn push_payload(&mut self, child: Element) {
        self.element.push_child(child);
    }

    /// Removes every payload child for which `unwanted` holds (addresses and type are
    /// attributes, untouched); how many went.
    pub fn remove_payload_where(&mut self, unwanted: impl FnMut(&Element) -> bool) -> usize {
        self.element.remove_children_where(unwanted)
    }

    /// Marks a stanza the server routes a second time: it was handed to a session (or
    /// another node) that ended before its client took it. What it carries was put there by
    /// the server's first routing — the recipient archive's `<stanza-id/>` (XEP-0359 §3: it
    /// never changes), the server's `<delay/>` — and a copy is in the archives already
    /// (XEP-0313 §5.1.1: stored only once).
    pub fn mark_routed_again(&mut self) {
        self.marks.routed_again = true;
    }

    /// Whether [`Stanza::mark_routed_again`] was called on this stanza.
    pub fn is_routed_again(&self) -> bool {
        self.marks.routed_again
    }

    /// Marks a message its recipient's archive took in this routing: the `<stanza-id/>` in
    /// the recipient's name is the archive's own, so a bounce of this message takes the
    /// copy back (XEP-0313 §5.1: a message the entity did not take is not in its archive).
    pub fn mark_archived(&mut self) {
        self.marks.archived = true;
    }

    /// Whether [`Stanza::mark_archived`] was called on this stanza.
    pub fn is_archived(&self) -> bool {
        self.marks.archived
    }

    /// Records the id of a message's row in its sender's archive. That id must not reach
    /// the recipient (XEP-0313 §5.1.1: no `<stanza-id/>` to JIDs without access to the
    /// archive), but the sender's other clients SHOULD get it in their sent carbon (ibid.,
    /// XEP-0280), where they take it as their place in the archive.
    pub fn mark_sender_archive_id(&mut self, id: &str) {
        self.marks.sender_archive_id = Some(id.into());
    }

    /// The id given by [`Stanza::mark_sender_archive_id`].
    pub fn sender_archive_id(&self) -> Option<&str> {
        self.marks.sender_archive_id.as_deref()
    }

    /// Consumes the stanza into its element.
    pub fn into_element(self) -> Element {
        self.element
    }

    /// The single payload of an IQ get/set (or the first child of any stanza).
    pub fn payload(&self) -> Option<&Element> {
        self.element.children().next()
    }

    /// Serialized bytes for a stream whose default namespace is the content namespace.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.element.to_bytes()
    }

    /// Parses back what [`Stanza::to_bytes`] produced (as queued for a session), to route
    /// again what a session could not deliver. The same for every listener: unprefixed
    /// stanzas land in the content namespace of any stream. `None` for bytes that are not
    /// exactly one stanza (never expected of our own serialization).
    pub fn from_serialized(bytes: &[u8]) -> Option<Stanza> {
        let limits = Limits {
            max_stanza_bytes: bytes.len().saturating_add(1024),
            max_elements: usize::MAX,
            ..Limits::S2S
        };
        Stanza::from_element(rookery_xml::first_element(bytes, limits)?).ok()
    }

    /// The error reply to this stanza (RFC 6120 §8.3.1): addresses swapped, `type='error'`,
    /// the original payload kept — but for a `<stanza-id/>` in the addressee's name: that is
    /// its archive's id, for those who may read the archive, never for the sender (XEP-0313
    /// §5). `None` for error stanzas, which are never answered.
    pub fn error_reply(&self, error: &StanzaError) -> Option<Stanza> {
        if self.kind.is_error() {
            return None;
        }
        let kind = match self.kind {
            StanzaKind::Message(_) => StanzaKind::Message(MessageType::Error),
            StanzaKind::Presence(_) => StanzaKind::Presence(PresenceType::Error),
            StanzaKind::Iq(_) => StanzaKind::Iq(IqType::Error),
        };
        let mut element = error_element(&self.element, error);
        if let Some(to) = &self.to {
            element.remove_children_where(|c| is_stanza_id_by(c, to.bare_str()));
        }
        Some(Stanza {
            kind,
            from: self.to.clone(),
            to: self.from.clone(),
            element,
            marks: Marks::default(),
        })
    }

    /// The `result` reply to an IQ get/set, with an optional payload.
    pub fn iq_result(&self, payload: Option<Element>) -> Stanza {
        let mut el = Element::new("iq", CONTENT_NS).with_attr("type", "result");
        if let Some(id) = self.id() {
            el.set_attr("id", id);
        }
        if let Some(to) = &self.from {
            el.set_attr("to", to.as_str());
        }
        if let Some(from) = &self.to {
            el.set_attr("from", from.as_str());
        }
        if let Some(p) = payload {
            el.push_child(p);
        }
        Stanza {
            kind: StanzaKind::Iq(IqType::Result),
            from: self.to.clone(),
            to: self.from.clone(),
            element: el,
            marks: Marks::default(),
        }
    }

    /// Builds a presence stanza of type `t` (RFC 6121 §4.7.1) with no child elements:
    /// subscription management, probes, and the unavailable presence the server sends for a
    /// resource. Typed, so nothing is serialized or parsed to build it.
    pub fn presence(t: PresenceType, from: Option<Jid>, to: Option<Jid>) -> Stanza {
        let mut el = Element::new("presence", CONTENT_NS);
        if let Some(f) = &from {
            el.set_attr("from", f.as_str());
        }
        if let Some(t) = &to {
            el.set_attr("to", t.as_str());
        }
        if let Some(ty) = presence_type_attr(t) {
            el.set_attr("type", ty);
        }
        Stanza {
            kind: StanzaKind::Presence(t),
            from,
            to,
            element: el,
            marks: Marks::default(),
        }
    }

    /// Builds an IQ request.
    pub fn iq(t: IqType, id: &str, from: Option<Jid>, to: Option<Jid>, payload: Element) -> Stanza {
        let ty = match t {
            IqType::Get => "get",
            IqType::Set => "set",
            IqType::Result => "result",
            IqType::Error => "error",
        };
        let mut el = Element::new("iq", CONTENT_NS)
            .with_attr("type", ty)
            .with_attr("id", id)
            .with_child(payload);
        if let Some(f) = &from {
            el.set_attr("from", f.as_str());
        }
        if let Some(t) = &to {
            el.set_attr("to", t.as_str());
        }
        Stanza {
            kind: StanzaKind::Iq(t),
            from,
            to,
            element: el,
            marks: Marks::default(),
        }
    }
}

/// The `type` attribute of a presence of type `t` (none for available, RFC 6121 §4.7.1).
fn presence_type_attr(t: PresenceType) -> Option<&'static str> {
    Some(match t {
        PresenceType::Available => return None,
        PresenceType::Unavailable => "unavailable",
        PresenceType::Subscribe => "subscribe",
        PresenceType::Subscribed => "subscribed",
        PresenceType::Unsubscribe => "unsubscribe",
        PresenceType::Unsubscribed => "unsubscribed",
        PresenceType::Probe => "probe",
        PresenceType::Error => "error",
    })
}

/// Whether `el` is an XEP-0359 `<stanza-id/>` given in `by`'s name (an archive's or a
/// room's): only `by` itself may give those, so one found elsewhere on a stanza addressed
/// to `by` or passing through it is forged (§4 rule 2).
pub fn is_stanza_id_by(el: &Element, by: &str) -> bool {
    el.is("stanza-id", ns::SID) && el.attr("by") == Some(by)
}

/// The error version of `original`: same name and id, addresses swapped, payload kept.
fn error_element(original: &Element, error: &StanzaError) -> Element {
    let mut el = original.clone();
    // One `<error/>` (RFC 6120 §8.3.2): one the sender put in its request does not stay.
    el.remove_children_where(|c| c.is("error", CONTENT_NS));
    let from = el.remove_attr("from");
    let to = el.remove_attr("to");
    if let Some(f) = from {
        el.set_attr("to", f);
    }
    if let Some(t) = to {
        el.set_attr("from", t);
    }
    el.set_attr("type", "error");
    el.push_child(error.to_element());
    el
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_error_reply_carries_one_error() {
        let el = rookery_xml::first_element(
            b"<message xmlns='jabber:client' type='chat' from='a@localhost/r' \
              to='b@localhost'><body>hi</body><error type='cancel'><bad-request \
              xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>",
            Limits::C2S,
        )
        .unwrap();
        let message = Stanza::from_element(el).unwrap();
        let reply = message
            .error_reply(&StanzaError::new(StanzaErrorCondition::ServiceUnavailable))
            .unwrap();
        let conditions: Vec<&str> = reply
            .element()
            .children()
            .filter(|c| c.is("error", CONTENT_NS))
            .flat_map(|e| e.children().map(Element::name))
            .collect();
        assert_eq!(conditions, ["service-unavailable"]);
    }

    #[test]
    fn built_presence_equals_the_parsed_one() {
        let a = Jid::parse("a@localhost/r").unwrap();
        let b = Jid::parse("b@example.org").unwrap();
        for t in [
            PresenceType::Available,
            PresenceType::Unavailable,
            PresenceType::Subscribe,
            PresenceType::Subscribed,
            PresenceType::Unsubscribe,
            PresenceType::Unsubscribed,
            PresenceType::Probe,
            PresenceType::Error,
        ] {
            let built = Stanza::presence(t, Some(a.clone()), Some(b.clone()));
            let parsed = Stanza::from_serialized(&built.to_bytes()).unwrap();
            assert_eq!(parsed.kind(), StanzaKind::Presence(t));
            assert_eq!(parsed.from(), Some(&a));
            assert_eq!(parsed.to(), Some(&b));
            assert_eq!(parsed.element(), built.element());
        }
        let bare = Stanza::presence(PresenceType::Unavailable, Some(a.clone()), None);
        assert!(bare.to().is_none());
        assert_eq!(bare.element().attr("to"), None);
    }

    fn iq(children: usize) -> Element {
        let mut el = Element::new("iq", CONTENT_NS)
            .with_attr("type", "get")
            .with_attr("id", "1")
            .with_attr("to", "example.com");
        for _ in 0..children {
            el.push_child(Element::new("ping", "urn:xmpp:ping"));
        }
        el
    }

    #[test]
    fn a_malformed_address_is_not_echoed_in_the_error_reply() {
        let el = Element::new("message", CONTENT_NS)
            .with_attr("to", "a@@b")
            .with_attr("id", "m1")
            .with_child(Element::new("body", CONTENT_NS).with_text("hi"));
        let err = Stanza::from_element(el).unwrap_err();
        let reply = err.reply("example.com").unwrap();
        assert_eq!(reply.attr("type"), Some("error"));
        assert_eq!(reply.attr("id"), Some("m1"));
        // The server answers, and says so (RFC 6120 §8.1.2.1).
        assert_eq!(reply.attr("from"), Some("example.com"));
        assert!(reply.to_string().contains("jid-malformed"), "{reply}");
        // From a peer that also sent a bad `from`: no `to` either.
        let el = Element::new("message", CONTENT_NS)
            .with_attr("from", "x@y/z")
            .with_attr("to", "@bad");
        let reply = Stanza::from_element(el).unwrap_err().reply("y").unwrap();
        assert_eq!(reply.attr("to"), Some("x@y/z"));
        assert_eq!(reply.attr("from"), Some("y"));
        let el = Element::new("message", CONTENT_NS)
            .with_attr("from", "@bad")
            .with_attr("to", "x@y");
        let reply = Stanza::from_element(el).unwrap_err().reply("y").unwrap();
        assert_eq!((reply.attr("to"), reply.attr("from")), (None, Some("x@y")));
    }

    /// RFC 6120 §8.2.3: an IQ result is never answered with an IQ error, nor is an IQ
    /// without an id (the reply could not carry one); a get or set with one is.
    #[test]
    fn iq_results_and_iqs_without_id_get_no_reply() {
        let iq = |attrs: &[(&str, &str)]| {
            let mut el = Element::new("iq", CONTENT_NS);
            for (k, v) in attrs {
                el.set_attr(*k, *v);
            }
            Stanza::from_element(el).unwrap_err().reply("x")
        };
        assert_eq!(
            iq(&[("type", "result"), ("id", "r1"), ("to", "a@@b")]),
            None
        );
        assert_eq!(iq(&[("type", "result")]), None);
        assert_eq!(iq(&[("type", "get")]), None);
        let reply = iq(&[("type", "get"), ("id", "g1")]).unwrap();
        assert_eq!(
            (reply.attr("type"), reply.attr("id")),
            (Some("error"), Some("g1"))
        );
    }

    #[test]
    fn serialized_stanzas_parse_back() {
        let st = Stanza::from_serialized(
            b"<message from=\"a@x/r\" to=\"b@x/s\" type=\"chat\"><body>hi &amp; bye</body></message>",
        )
        .unwrap();
        assert_eq!(st.to().unwrap().as_str(), "b@x/s");
        assert_eq!(
            st.element().child_text("body", CONTENT_NS).as_deref(),
            Some("hi & bye")
        );
        let again = Stanza::from_serialized(&st.to_bytes()).unwrap();
        assert_eq!(again, st);
        assert!(Stanza::from_serialized(b"<message").is_none());
        assert!(Stanza::from_serialized(b"<message/><message/>").is_some_and(|s| s.to().is_none()));
    }

    #[test]
    fn iq_needs_exactly_one_payload() {
        assert!(Stanza::from_element(iq(1)).is_ok());
        for n in [0, 2] {
            let err = Stanza::from_element(iq(n)).unwrap_err();
            let reply = err.reply("example.com").unwrap();
            assert_eq!(reply.attr("type"), Some("error"));
            assert_eq!(reply.attr("from"), Some("example.com"));
        }
    }

    #[test]
    fn unknown_message_type_is_normal() {
        let el = Element::new("message", CONTENT_NS).with_attr("type", "weird");
        let s = Stanza::from_element(el).unwrap();
        assert_eq!(s.kind(), StanzaKind::Message(MessageType::Normal));
    }

    #[test]
    fn error_stanzas_are_never_answered() {
        let el = Element::new("message", CONTENT_NS).with_attr("type", "error");
        let s = Stanza::from_element(el).unwrap();
        assert!(s
            .error_reply(&StanzaError::new(StanzaErrorCondition::BadRequest))
            .is_none());
    }

    #[test]
    fn an_error_reply_drops_the_addressees_stanza_id_and_every_mark() {
        let sid = |by: &str| {
            Element::new("stanza-id", ns::SID)
                .with_attr("by", by)
                .with_attr("id", "x")
        };
        let el = Element::new("message", CONTENT_NS)
            .with_attr("from", "alice@a.example/r")
            .with_attr("to", "bob@b.example/phone")
            .with_child(sid("bob@b.example"))
            .with_child(sid("room@muc.example"));
        let mut s = Stanza::from_element(el).unwrap();
        s.mark_archived();
        s.mark_routed_again();
        let reply = s
            .error_reply(&StanzaError::new(StanzaErrorCondition::ServiceUnavailable))
            .unwrap();
        let by: Vec<_> = reply
            .element()
            .children()
            .filter(|c| c.is("stanza-id", ns::SID))
            .map(|c| c.attr("by"))
            .collect();
        assert_eq!(by, [Some("room@muc.example")]);
        assert!(!reply.is_archived() && !reply.is_routed_again());
        // A stanza parsed anew knows nothing of its way.
        let again = Stanza::from_serialized(&s.to_bytes()).unwrap();
        assert!(!again.is_archived() && !again.is_routed_again());
    }

    #[test]
    fn other_elements_are_not_stanzas() {
        let el = Element::new("auth", crate::ns::SASL);
        assert!(matches!(
            Stanza::from_element(el),
            Err(StanzaParseError::NotAStanza(_))
        ));
    }
}
