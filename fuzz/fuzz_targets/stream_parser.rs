//! Fuzzes the XMPP stream parser (RFC 6120 §4, §11) with three properties:
//! - no input panics;
//! - chunking does not matter: fed whole or in chunks, the parser yields the same events and
//!   fails (or not) alike;
//! - what the writer writes parses back to the same element.
//!
//! Input layout: one control byte (bits 0-3: how many following bytes are chunk sizes; bit 6:
//! pre-auth limits; bit 7: prepend a valid stream header), the chunk sizes, then the stream.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rookery_xml::{Element, Event, Limits, StreamParser, XmlError};

const HEADER: &[u8] =
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";

/// For re-parsing writer output, whose size can exceed that of the input.
const UNLIMITED: Limits = Limits {
    max_stanza_bytes: usize::MAX,
    max_depth: usize::MAX,
    max_attrs: usize::MAX,
    max_elements: usize::MAX,
};

/// Events of `input` fed in chunks of `sizes` (cycled; empty: all at once), and the error.
fn parse(input: &[u8], sizes: &[u8], limits: Limits) -> (Vec<Event>, Option<XmlError>) {
    let mut parser = StreamParser::new(limits);
    let mut events = Vec::new();
    let mut sizes = sizes.iter().map(|&s| usize::from(s).max(1)).cycle();
    let mut rest = input;
    loop {
        loop {
            match parser.next_event() {
                Ok(Some(event)) => events.push(event),
                Ok(None) => break,
                Err(err) => return (events, Some(err)),
            }
        }
        if rest.is_empty() {
            return (events, None);
        }
        let n = sizes.next().unwrap_or(rest.len()).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        parser.feed(chunk);
        rest = tail;
    }
}

/// Attributes with a namespace prefix other than `xml` are kept under their qualified name,
/// which the writer cannot declare: such elements do not round-trip.
fn round_trips(el: &Element) -> bool {
    el.attrs()
        .all(|(k, _)| !k.contains(':') || k.starts_with("xml:"))
        && el.children().all(round_trips)
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let (sizes, body) = rest.split_at(usize::from(control & 0x0F).min(rest.len()));
    let limits = if control & 0x40 != 0 {
        Limits::PRE_AUTH
    } else {
        Limits::C2S
    };
    let input = if control & 0x80 != 0 {
        [HEADER, body].concat()
    } else {
        body.to_vec()
    };

    let (whole, whole_err) = parse(&input, &[], limits);
    let (chunked, chunked_err) = parse(&input, sizes, limits);
    assert_eq!(whole, chunked, "chunking changed the events");
    assert_eq!(
        whole_err.is_some(),
        chunked_err.is_some(),
        "{whole_err:?} vs {chunked_err:?}"
    );

    for event in &whole {
        if let Event::Element(el) = event {
            if round_trips(el) {
                let written = [HEADER, &el.to_bytes()].concat();
                // The writer may repeat namespace declarations the input made once.
                let (again, err) = parse(&written, &[], UNLIMITED);
                assert_eq!(err, None, "{el}");
                assert_eq!(again.get(1), Some(event), "{el}");
            }
        }
    }
});
