//! Stored XML back into elements: payloads and configurations are kept as serialized XML and
//! parsed with the same restricted parser the streams use (no DOCTYPE, no entities).

use rookery_xml::{Element, Limits};

/// Limits for stored fragments: generous (they were accepted once), still bounded.
const STORED: Limits = Limits {
    max_stanza_bytes: 4 * 1024 * 1024,
    max_depth: 64,
    max_attrs: 128,
    max_elements: 100_000,
};

/// Parses one element serialized by [`Element::to_bytes`]; `None` if it is not one.
pub fn parse(text: &str) -> Option<Element> {
    rookery_xml::first_element(text.as_bytes(), STORED)
}

/// Serializes an element for storage.
pub fn to_string(el: &Element) -> String {
    String::from_utf8_lossy(&el.to_bytes()).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip() {
        let el = Element::new("tune", "http://jabber.org/protocol/tune").with_child(
            Element::new("title", "http://jabber.org/protocol/tune").with_text("a & <b>"),
        );
        assert_eq!(parse(&to_string(&el)).unwrap(), el);
        assert!(parse("<a>").is_none());
        assert!(parse("not xml").is_none());
    }
}
