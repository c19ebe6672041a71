//! Valid streams: the events they yield, whatever the chunking, and the writer round trip.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

mod common;

use common::{parse_bytewise, parse_chunked, parse_whole};
use proptest::prelude::*;
use rookery_xml::{Element, Event, Limits, StreamHeader, CONTENT_NS};

const CLIENT_STREAM: &str = "<?xml version='1.0' encoding='UTF-8'?>\
<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' \
to='example.com' version='1.0' xml:lang='en'>
<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>\n \t
<message to='juliet@example.com/balcony' type='chat' id=\"m&amp;1\" xml:lang='en'>\
<body>Wherefore art thou &amp; why &lt;3 &#x263A;&#169; caf\u{e9} \u{1F600}</body>\
<body xml:lang='fr'><![CDATA[<o\u{f9} es-tu> & ]]>pourquoi</body>\
<active xmlns='http://jabber.org/protocol/chatstates'/></message>
<presence><show>away</show><status>Gone\r\nfishing\r</status>\
<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='https://example.org/client' \
ver='QgayPKawpkPSDYmwT/WM94uAlu0='/></presence>
<iq type='set' id='p1'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
<publish node='urn:xmpp:microblog:0'><item id='1'>\
<atom:entry xmlns:atom='http://www.w3.org/2005/Atom'><atom:title type='text'>Hi &quot;there&quot;</atom:title>\
<content xmlns='urn:example' a='tab\there'/></atom:entry></item></publish></pubsub></iq>
</stream:stream>";

const SERVER_STREAM: &str = "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' \
xmlns='jabber:server' xmlns:db='jabber:server:dialback' from='a.example' to='b.example' version='1.0'>\
<db:result from='a.example' to='b.example'>b4835385f37fe2895af6c196b59097b16862406db80559900d596b7a2bf6f67c</db:result>\
<db:verify from='b.example' to='a.example' id='417GAF25'>deadbeef</db:verify>
<message from='romeo@a.example' to='juliet@b.example' type='chat'><body>hi</body>\
<forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' to='x@y'/></forwarded></message>\
</stream:stream>";

fn header(default_ns: &str, prefixes: &[(&str, &str)], attrs: &[(&str, &str)]) -> Event {
    let own = |v: &[(&str, &str)]| {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    Event::StreamOpen(StreamHeader {
        default_ns: default_ns.into(),
        prefixes: own(prefixes),
        attrs: own(attrs),
    })
}

fn client_events() -> Vec<Event> {
    let stanza = |name| Element::new(name, CONTENT_NS);
    vec![
        header(
            "jabber:client",
            &[],
            &[
                ("to", "example.com"),
                ("version", "1.0"),
                ("xml:lang", "en"),
            ],
        ),
        Event::Element(
            stanza("iq")
                .with_attr("type", "get")
                .with_attr("id", "r1")
                .with_child(Element::new("query", "jabber:iq:roster")),
        ),
        Event::Element(
            stanza("message")
                .with_attr("to", "juliet@example.com/balcony")
                .with_attr("type", "chat")
                .with_attr("id", "m&1")
                .with_attr("xml:lang", "en")
                .with_child(
                    stanza("body").with_text(
                        "Wherefore art thou & why <3 \u{263A}\u{a9} caf\u{e9} \u{1F600}",
                    ),
                )
                .with_child(
                    stanza("body")
                        .with_attr("xml:lang", "fr")
                        .with_text("<o\u{f9} es-tu> & pourquoi"),
                )
                .with_child(Element::new(
                    "active",
                    "http://jabber.org/protocol/chatstates",
                )),
        ),
        Event::Element(
            stanza("presence")
                .with_child(stanza("show").with_text("away"))
                .with_child(stanza("status").with_text("Gone\nfishing\n"))
                .with_child(
                    Element::new("c", "http://jabber.org/protocol/caps")
                        .with_attr("hash", "sha-1")
                        .with_attr("node", "https://example.org/client")
                        .with_attr("ver", "QgayPKawpkPSDYmwT/WM94uAlu0="),
                ),
        ),
        Event::Element(
            stanza("iq")
                .with_attr("type", "set")
                .with_attr("id", "p1")
                .with_child(
                    Element::new("pubsub", "http://jabber.org/protocol/pubsub").with_child(
                        Element::new("publish", "http://jabber.org/protocol/pubsub")
                            .with_attr("node", "urn:xmpp:microblog:0")
                            .with_child(
                                Element::new("item", "http://jabber.org/protocol/pubsub")
                                    .with_attr("id", "1")
                                    .with_child(
                                        Element::new("entry", "http://www.w3.org/2005/Atom")
                                            .with_child(
                                                Element::new(
                                                    "title",
                                                    "http://www.w3.org/2005/Atom",
                                                )
                                                .with_attr("type", "text")
                                                .with_text("Hi \"there\""),
                                            )
                                            .with_child(
                                                Element::new("content", "urn:example")
                                                    .with_attr("a", "tab here"),
                                            ),
                                    ),
                            ),
                    ),
                ),
        ),
        Event::StreamClose,
    ]
}

fn server_events() -> Vec<Event> {
    let dialback = "jabber:server:dialback";
    vec![
        header(
            "jabber:server",
            &[("db", dialback)],
            &[
                ("from", "a.example"),
                ("to", "b.example"),
                ("version", "1.0"),
            ],
        ),
        Event::Element(
            Element::new("result", dialback)
                .with_attr("from", "a.example")
                .with_attr("to", "b.example")
                .with_text("b4835385f37fe2895af6c196b59097b16862406db80559900d596b7a2bf6f67c"),
        ),
        Event::Element(
            Element::new("verify", dialback)
                .with_attr("from", "b.example")
                .with_attr("to", "a.example")
                .with_attr("id", "417GAF25")
                .with_text("deadbeef"),
        ),
        Event::Element(
            Element::new("message", CONTENT_NS)
                .with_attr("from", "romeo@a.example")
                .with_attr("to", "juliet@b.example")
                .with_attr("type", "chat")
                .with_child(Element::new("body", CONTENT_NS).with_text("hi"))
                .with_child(
                    Element::new("forwarded", "urn:xmpp:forward:0")
                        .with_child(Element::new("message", CONTENT_NS).with_attr("to", "x@y")),
                ),
        ),
        Event::StreamClose,
    ]
}

#[test]
fn client_stream_whole_and_bytewise() {
    for parse in [parse_whole, parse_bytewise] {
        let (events, err) = parse(CLIENT_STREAM.as_bytes(), Limits::C2S);
        assert_eq!(err, None);
        assert_eq!(events, client_events());
    }
}

#[test]
fn server_stream_with_dialback_whole_and_bytewise() {
    for parse in [parse_whole, parse_bytewise] {
        let (events, err) = parse(SERVER_STREAM.as_bytes(), Limits::S2S);
        assert_eq!(err, None);
        assert_eq!(events, server_events());
    }
}

#[test]
fn utf8_bom_is_skipped() {
    let input = [b"\xEF\xBB\xBF".as_slice(), CLIENT_STREAM.as_bytes()].concat();
    assert_eq!(parse_bytewise(&input, Limits::C2S), (client_events(), None));
}

#[test]
fn writer_output_parses_back_to_the_same_elements() {
    for (input, open) in [
        (
            CLIENT_STREAM,
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
        ),
        (
            SERVER_STREAM,
            "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>",
        ),
    ] {
        let (events, err) = parse_whole(input.as_bytes(), Limits::C2S);
        assert_eq!(err, None);
        let elements: Vec<_> = events
            .into_iter()
            .filter(|e| matches!(e, Event::Element(_)))
            .collect();
        let mut written = open.as_bytes().to_vec();
        for event in &elements {
            if let Event::Element(el) = event {
                written.extend_from_slice(&el.to_bytes());
            }
        }
        let (again, err) = parse_bytewise(&written, Limits::C2S);
        assert_eq!(err, None);
        assert_eq!(&again[1..], &elements[..]);
    }
}

#[test]
fn text_with_control_characters_round_trips_as_references() {
    let el = Element::new("message", CONTENT_NS)
        .with_attr("a", "x\ty\nz\r")
        .with_child(Element::new("body", CONTENT_NS).with_text("1\r\n2 <&> \"'"));
    let mut input =
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
            .to_vec();
    input.extend_from_slice(&el.to_bytes());
    let (events, err) = parse_whole(&input, Limits::C2S);
    assert_eq!(err, None);
    assert_eq!(events.get(1), Some(&Event::Element(el)));
}

#[test]
fn large_stanza_in_one_byte_chunks_is_linear() {
    // Quadratic rescanning would make this take minutes.
    let body = "x".repeat(250 * 1024);
    let quoted = "y".repeat(1024);
    let input = format!(
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>\
         <message a='{quoted}'><body>{body}</body></message>"
    );
    let (events, err) = parse_bytewise(input.as_bytes(), Limits::C2S);
    assert_eq!(err, None);
    let Some(Event::Element(msg)) = events.get(1) else {
        panic!("no message: {events:?}")
    };
    assert_eq!(
        msg.child_text("body", CONTENT_NS).map(|t| t.len()),
        Some(body.len())
    );
}

#[test]
fn whitespace_keepalives_are_dropped_as_they_arrive() {
    let mut parser = rookery_xml::StreamParser::new(Limits::PRE_AUTH);
    parser.feed(
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
    );
    assert!(matches!(
        parser.next_event(),
        Ok(Some(Event::StreamOpen(_)))
    ));
    for _ in 0..20_000 {
        parser.feed(b" \n");
        assert_eq!(parser.next_event(), Ok(None));
        assert_eq!(parser.buffered_len(), 0);
    }
    parser.feed(b"<presence/>");
    assert!(matches!(parser.next_event(), Ok(Some(Event::Element(e))) if e.name() == "presence"));
}

#[test]
fn reset_starts_a_new_stream() {
    let mut parser = rookery_xml::StreamParser::new(Limits::PRE_AUTH);
    parser.feed(
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>\
        <starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><garbage-before-tls",
    );
    assert!(matches!(
        parser.next_event(),
        Ok(Some(Event::StreamOpen(_)))
    ));
    assert!(matches!(parser.next_event(), Ok(Some(Event::Element(e))) if e.name() == "starttls"));
    parser.reset();
    assert_eq!(parser.buffered_len(), 0);
    parser.feed(b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>");
    assert!(matches!(
        parser.next_event(),
        Ok(Some(Event::StreamOpen(_)))
    ));
    assert_eq!(parser.next_event(), Ok(None));
}

proptest! {
    #[test]
    fn any_chunking_yields_the_same_events(sizes in proptest::collection::vec(1usize..48, 1..64)) {
        prop_assert_eq!(parse_chunked(CLIENT_STREAM.as_bytes(), &sizes, Limits::C2S), (client_events(), None));
        prop_assert_eq!(parse_chunked(SERVER_STREAM.as_bytes(), &sizes, Limits::S2S), (server_events(), None));
    }

    #[test]
    fn any_split_point_yields_the_same_events(cut in 0usize..CLIENT_STREAM.len()) {
        let (events, err) = parse_chunked(CLIENT_STREAM.as_bytes(), &[cut, CLIENT_STREAM.len()], Limits::C2S);
        prop_assert_eq!(err, None);
        prop_assert_eq!(events, client_events());
    }
}
