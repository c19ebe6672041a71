//! Helpers shared by the integration tests: drive a parser over an input in given chunk sizes.

#![allow(dead_code)]

use rookery_xml::{Event, Limits, StreamParser, XmlError};

/// Events produced from `input` fed in chunks of the given sizes (cycled; 0 counts as 1), and
/// the error that stopped the parser, if any.
pub fn parse_chunked(
    input: &[u8],
    sizes: &[usize],
    limits: Limits,
) -> (Vec<Event>, Option<XmlError>) {
    let mut parser = StreamParser::new(limits);
    let mut events = Vec::new();
    let mut rest = input;
    let mut sizes = sizes.iter().copied().cycle();
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
        let n = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(n);
        parser.feed(chunk);
        rest = tail;
    }
}

/// Events of `input` fed all at once.
pub fn parse_whole(input: &[u8], limits: Limits) -> (Vec<Event>, Option<XmlError>) {
    parse_chunked(input, &[input.len()], limits)
}

/// Events of `input` fed one byte at a time.
pub fn parse_bytewise(input: &[u8], limits: Limits) -> (Vec<Event>, Option<XmlError>) {
    parse_chunked(input, &[1], limits)
}
