//! Hostile input: each case must fail with the RFC 6120 §4.9.3 condition it deserves, fed
//! whole or byte by byte, without expanding anything or buffering without bound.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use common::{parse_bytewise, parse_whole};
use rookery_xml::{Event, Limits, StreamParser, XmlError};

const OPEN: &str =
    "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.com'>";

/// The condition `input` fails with, the same whether fed whole or byte by byte.
fn condition(input: &str, limits: Limits) -> &'static str {
    let (_, whole) = parse_whole(input.as_bytes(), limits);
    let (_, bytewise) = parse_bytewise(input.as_bytes(), limits);
    let whole = whole.unwrap_or_else(|| panic!("accepted: {input}"));
    assert_eq!(
        Some(whole.condition()),
        bytewise.as_ref().map(XmlError::condition),
        "{input}"
    );
    whole.condition()
}

/// The condition of `stanza` sent after a valid header.
fn in_stream(stanza: &str) -> &'static str {
    condition(&format!("{OPEN}{stanza}"), Limits::C2S)
}

const BILLION_LAUGHS: &str = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'><message><body>&lol9;</body></message>"#;

#[test]
fn dtd_and_entities_are_restricted() {
    assert_eq!(condition(BILLION_LAUGHS, Limits::C2S), "restricted-xml");
    assert_eq!(
        condition(&format!("<!DOCTYPE stream:stream>{OPEN}"), Limits::C2S),
        "restricted-xml"
    );
    assert_eq!(in_stream("<!DOCTYPE x>"), "restricted-xml");
    assert_eq!(
        in_stream("<message><body>&lol9;</body></message>"),
        "restricted-xml"
    );
    assert_eq!(in_stream("<message to='&ent;'/>"), "restricted-xml");
}

#[test]
fn processing_instructions_and_comments_are_restricted() {
    assert_eq!(in_stream("<?php echo 1; ?>"), "restricted-xml");
    assert_eq!(
        in_stream("<message><?xml version='1.0'?></message>"),
        "restricted-xml"
    );
    assert_eq!(
        condition(&format!("<?xml-stylesheet href='a'?>{OPEN}"), Limits::C2S),
        "restricted-xml"
    );
    assert_eq!(
        condition(&format!(" <?xml version='1.0'?>{OPEN}"), Limits::C2S),
        "restricted-xml"
    );
    assert_eq!(in_stream("<!-- hello -->"), "restricted-xml");
    assert_eq!(
        in_stream("<message><!-- hello --></message>"),
        "restricted-xml"
    );
    assert_eq!(
        condition(&format!("<!---->{OPEN}"), Limits::C2S),
        "restricted-xml"
    );
}

#[test]
fn bad_references_are_not_well_formed() {
    for body in [
        "&#0;",
        "&#x0;",
        "&#xD800;",
        "&#1;",
        "&#xFFFE;",
        "&#x110000;",
        "&#;",
        "&#x;",
        "&#-1;",
        "&#+1;",
        "&#X41;",
        "a & b",
        "&amp",
        "& lt;",
    ] {
        assert_eq!(
            in_stream(&format!("<message><body>{body}</body></message>")),
            "not-well-formed",
            "{body}"
        );
    }
    assert_eq!(in_stream("<message id='&#0;'/>"), "not-well-formed");
}

#[test]
fn namespaces_must_be_declared() {
    // RFC 6120 §4.9.3.13: violations of XML-NAMES are not-well-formed (invalid-namespace is
    // for the stream's own namespace, §4.9.3.10).
    assert_eq!(in_stream("<foo:bar/>"), "not-well-formed");
    assert_eq!(
        in_stream("<message><x:y xmlns:z='urn:z'/></message>"),
        "not-well-formed"
    );
    assert_eq!(in_stream("<message foo:bar='1'/>"), "not-well-formed");
    assert_eq!(in_stream("<message xmlns:p=''/>"), "not-well-formed");
    assert_eq!(
        in_stream("<message xmlns:xml='urn:not-xml'/>"),
        "not-well-formed"
    );
    // Scopes end with their element.
    assert_eq!(
        in_stream("<message><a:x xmlns:a='urn:a'/><a:y/></message>"),
        "not-well-formed"
    );
}

#[test]
fn malformed_markup_is_not_well_formed() {
    for stanza in [
        "<message><body></message>",
        "<message></body>",
        "<a:message xmlns:a='jabber:client' xmlns:b='jabber:client'></b:message>",
        "</message>",
        "<message to='a' to='b'/>",
        "<message to=foo/>",
        "<message to/>",
        "<message <body/>",
        "<message a='<'/>",
        "< message/>",
        "<1message/>",
        "<message/ >",
        "<>",
        "<![CDATX[x]]>",
        "<!x>",
        "hello",
        "<![CDATA[ ]]>",
        "<message><body>\u{1}</body></message>",
        "<message><body>\u{FFFF}</body></message>",
    ] {
        assert_eq!(in_stream(stanza), "not-well-formed", "{stanza}");
    }
}

#[test]
fn invalid_utf8_is_not_well_formed() {
    let mut input = format!("{OPEN}<message><body>").into_bytes();
    input.extend_from_slice(b"caf\xC3(\xFF</body></message>");
    let (_, err) = parse_whole(&input, Limits::C2S);
    assert_eq!(err.unwrap().condition(), "not-well-formed");
    let (_, err) = parse_bytewise(&input, Limits::C2S);
    assert_eq!(err.unwrap().condition(), "not-well-formed");
}

#[test]
fn stream_header_is_checked() {
    let wrong_root = "<foo xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
    assert_eq!(condition(wrong_root, Limits::C2S), "bad-format");
    let wrong_ns =
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streamz'>";
    assert_eq!(condition(wrong_ns, Limits::C2S), "invalid-namespace");
    let unbound = "<stream:stream xmlns='jabber:client'>";
    assert_eq!(condition(unbound, Limits::C2S), "invalid-namespace");
    let closed =
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'/>";
    assert_eq!(condition(closed, Limits::C2S), "bad-format");
    assert_eq!(condition("<message/>", Limits::C2S), "bad-format");
    assert_eq!(condition("hello", Limits::C2S), "not-well-formed");
    assert_eq!(
        condition(&format!("{OPEN}</stream:stream><message/>"), Limits::C2S),
        "not-well-formed"
    );
}

#[test]
fn only_utf8_is_accepted() {
    let decl = format!("<?xml version='1.0' encoding='ISO-8859-1'?>{OPEN}");
    assert_eq!(condition(&decl, Limits::C2S), "unsupported-encoding");
    let (_, err) = parse_whole(b"\xFF\xFE<\0s\0", Limits::C2S);
    assert_eq!(err, Some(XmlError::UnsupportedEncoding));
    assert_eq!(
        condition(&format!("<?xml encoding='UTF-8'?>{OPEN}"), Limits::C2S),
        "not-well-formed"
    );
}

#[test]
fn depth_attribute_and_element_limits() {
    let deep = format!("{}{}", "<a>".repeat(40), "</a>".repeat(40));
    assert_eq!(in_stream(&deep), "policy-violation");
    let ok = format!("{}{}", "<a>".repeat(32), "</a>".repeat(32));
    assert_eq!(
        parse_whole(format!("{OPEN}{ok}").as_bytes(), Limits::C2S).1,
        None
    );

    let attrs: String = (0..100).map(|i| format!(" a{i}='v'")).collect();
    assert_eq!(in_stream(&format!("<message{attrs}/>")), "policy-violation");

    let children = "<x/>".repeat(40);
    let input = format!("{OPEN}<message>{children}</message>");
    assert_eq!(condition(&input, Limits::PRE_AUTH), "policy-violation");
}

/// Feeds `prefix` then endless `filler` in 4 KiB chunks; the parser must fail with a limit as
/// soon as the stanza is known to be too large, holding no more than the limit plus one chunk.
fn assert_bounded(prefix: &str, filler: u8, limits: Limits) {
    const CHUNK: usize = 4096;
    let mut parser = StreamParser::new(limits);
    parser.feed(OPEN.as_bytes());
    parser.feed(prefix.as_bytes());
    let chunk = vec![filler; CHUNK];
    let mut fed = prefix.len();
    loop {
        match parser.next_event() {
            Ok(Some(Event::StreamOpen(_))) => continue,
            Ok(None) => {}
            Ok(Some(other)) => panic!("unexpected {other:?}"),
            Err(err) => {
                assert_eq!(err.condition(), "policy-violation");
                assert!(
                    fed <= limits.max_stanza_bytes + CHUNK,
                    "failed late, after {fed} bytes"
                );
                return;
            }
        }
        assert!(parser.buffered_len() <= limits.max_stanza_bytes + CHUNK);
        parser.feed(&chunk);
        fed += CHUNK;
    }
}

#[test]
fn oversized_stanzas_fail_early_with_bounded_buffer() {
    assert_bounded("<message><body>", b'a', Limits::C2S);
    assert_bounded("<message><body a='", b'a', Limits::C2S);
    assert_bounded("<message><body><![CDATA[", b'a', Limits::C2S);
    assert_bounded("<message><body>", b' ', Limits::PRE_AUTH);
    assert_bounded("<message", b' ', Limits::PRE_AUTH);
    // Many small complete elements (each token is short, the stanza is not).
    let mut parser = StreamParser::new(Limits::PRE_AUTH);
    parser.feed(OPEN.as_bytes());
    parser.feed(b"<message><body>");
    parser.feed("<x/>".repeat(3000).as_bytes());
    assert!(matches!(
        parser.next_event(),
        Ok(Some(Event::StreamOpen(_)))
    ));
    assert_eq!(
        parser.next_event().unwrap_err().condition(),
        "policy-violation"
    );
}

#[test]
fn oversized_stanza_in_one_piece_and_header() {
    let body = "a".repeat(300 * 1024);
    assert_eq!(
        in_stream(&format!("<message><body>{body}</body></message>")),
        "policy-violation"
    );
    let big_header = format!("<stream:stream a='{}'", "b".repeat(10 * 1024));
    assert_eq!(condition(&big_header, Limits::PRE_AUTH), "policy-violation");
}

#[test]
fn parser_is_dead_after_an_error() {
    let mut parser = StreamParser::new(Limits::C2S);
    parser.feed(format!("{OPEN}<!-- x -->").as_bytes());
    assert!(matches!(
        parser.next_event(),
        Ok(Some(Event::StreamOpen(_)))
    ));
    let err = parser.next_event().unwrap_err();
    assert_eq!(err, XmlError::Restricted("comment"));
    parser.feed(b"<message/>");
    assert_eq!(parser.next_event(), Err(err.clone()));
    assert_eq!(parser.next_event(), Err(err));
    assert_eq!(parser.buffered_len(), 0);
}

#[test]
fn only_the_first_bytes_may_be_a_bom() {
    // Found by fuzzing: a second, partial BOM waited for more bytes when fed byte by byte.
    for input in [
        b"\xEF\xBB\xBF\xEF\xBB".as_slice(),
        b"\xEF\xBB\xBF\xEF\xBB\xBF<stream:stream/>",
    ] {
        let (_, whole) = parse_whole(input, Limits::PRE_AUTH);
        let (_, bytewise) = parse_bytewise(input, Limits::PRE_AUTH);
        assert_eq!(whole.unwrap().condition(), "not-well-formed");
        assert_eq!(bytewise.unwrap().condition(), "not-well-formed");
    }
}
