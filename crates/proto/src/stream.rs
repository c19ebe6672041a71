//! Stream-level framing (RFC 6120 §4): the opening header and top-level stream elements.

use rookery_xml::{escape_into, Element};

use crate::ns;

/// The opening `<stream:stream>` we send (RFC 6120 §4.7), as bytes, with the XML declaration.
pub fn header(content_ns: &str, from: &str, to: Option<&str>, id: &str, extra: &str) -> Vec<u8> {
    header_versioned(content_ns, from, to, id, extra, true)
}

/// [`header`], with or without `version='1.0'`: a peer that sent no version (XEP-0114
/// components, pre-RFC 3920 peers) gets none back (RFC 6120 §4.7.5).
pub fn header_versioned(
    content_ns: &str,
    from: &str,
    to: Option<&str>,
    id: &str,
    extra: &str,
    version: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"<?xml version='1.0'?><stream:stream xmlns='");
    escape_into(&mut out, content_ns, true);
    out.extend_from_slice(b"' xmlns:stream='");
    out.extend_from_slice(ns::STREAM.as_bytes());
    out.extend_from_slice(b"'");
    out.extend_from_slice(extra.as_bytes());
    out.extend_from_slice(b" from='");
    escape_into(&mut out, from, true);
    out.push(b'\'');
    if let Some(to) = to {
        out.extend_from_slice(b" to='");
        escape_into(&mut out, to, true);
        out.push(b'\'');
    }
    out.extend_from_slice(b" id='");
    escape_into(&mut out, id, true);
    out.push(b'\'');
    if version {
        out.extend_from_slice(b" version='1.0'");
    }
    out.extend_from_slice(b" xml:lang='en'>");
    out
}

/// The closing tag.
pub const CLOSE: &[u8] = b"</stream:stream>";

/// Serializes a top-level element. Elements in the stream namespace get the `stream:` prefix
/// that every peer expects (`<stream:features/>`, `<stream:error/>`); everything else is written
/// against the content namespace, the stream's default.
pub fn to_bytes(el: &Element) -> Vec<u8> {
    if el.ns() != ns::STREAM {
        return el.to_bytes();
    }
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"<stream:");
    out.extend_from_slice(el.name().as_bytes());
    for (k, v) in el.attrs() {
        out.push(b' ');
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b"=\"");
        escape_into(&mut out, v, true);
        out.push(b'"');
    }
    out.push(b'>');
    for child in el.children() {
        child.write_to(&mut out, ns::STREAM);
    }
    out.extend_from_slice(b"</stream:");
    out.extend_from_slice(el.name().as_bytes());
    out.push(b'>');
    out
}

/// An empty `<stream:features/>` to fill.
pub fn features() -> Element {
    Element::new("features", ns::STREAM)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{StreamError, StreamErrorCondition};

    #[test]
    fn stream_elements_use_the_stream_prefix() {
        let e = StreamError::new(StreamErrorCondition::HostUnknown).to_element();
        assert_eq!(
            String::from_utf8_lossy(&to_bytes(&e)),
            "<stream:error><host-unknown xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/></stream:error>"
        );
    }
}
