//! Small helpers shared by the IM modules: stored XML back into elements and the "own
//! account only" check of IQ handlers.

use rookery_jid::BareJid;
use rookery_proto::{Stanza, StanzaError, StanzaErrorCondition as Cond};
use rookery_xml::{Element, Limits};

/// Parses one element serialized by [`Element::to_bytes`] (stored offline messages, vCards,
/// private XML). `None` if it is not a single well-formed element.
pub fn parse_element(xml: &str) -> Option<Element> {
    rookery_xml::first_element(
        xml.as_bytes(),
        Limits {
            max_stanza_bytes: xml.len() + 1024,
            max_depth: 64,
            max_attrs: 256,
            max_elements: 1_000_000,
        },
    )
}

/// Parses a stored stanza.
pub fn parse_stanza(xml: &str) -> Option<Stanza> {
    Stanza::from_element(parse_element(xml)?).ok()
}

/// A stanza error with a human-readable text.
pub fn err(c: Cond, text: &str) -> StanzaError {
    StanzaError::new(c).with_text(text)
}

/// For IQs a user may only send about their own account (roster, block list, carbons,
/// private storage): the requesting account, or `forbidden` when `to` is someone else.
pub fn own_account(iq: &Stanza, to: &BareJid) -> Result<BareJid, StanzaError> {
    let from = iq
        .from()
        .map(|f| f.to_bare())
        .ok_or_else(|| StanzaError::new(Cond::BadRequest))?;
    if &from != to || from.local().is_none() {
        return Err(err(Cond::Forbidden, "only for your own account"));
    }
    Ok(from)
}

/// An IQ get with `payload` from juliet@example.com/balcony to her own account, and that
/// account (unit tests of answers an account gives itself).
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub fn own_get(payload: Element) -> (BareJid, Stanza) {
    let from = rookery_jid::Jid::parse("juliet@example.com/balcony").unwrap();
    let iq = Stanza::iq(
        rookery_proto::IqType::Get,
        "g1",
        Some(from.clone()),
        None,
        payload,
    );
    (from.to_bare(), iq)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rookery_proto::ns;
    use rookery_xml::CONTENT_NS;

    #[test]
    fn elements_round_trip_through_text() {
        let el = Element::new("message", CONTENT_NS)
            .with_attr("to", "a@b")
            .with_child(Element::new("body", CONTENT_NS).with_text("x < y & \"z\""))
            .with_child(Element::new("delay", ns::DELAY).with_attr("stamp", "s"));
        let text = String::from_utf8(el.to_bytes()).unwrap();
        assert_eq!(parse_element(&text).unwrap(), el);
        assert!(parse_element("<a>").is_none());
        assert!(parse_element("not xml").is_none());
    }
}
