//! Message framing: a client stream carried as separate messages, each one complete XML
//! element, instead of one XML byte stream — XMPP over WebSocket (RFC 7395 §3.3) and, fed by
//! its session manager, BOSH (XEP-0206 §3).
//!
//! The connection ([`crate::Conn`]) stays the one the negotiation and the session loop know:
//! only how its elements arrive and leave differs. This module is the sans-IO part of that:
//! reading one message with the stream parser (same limits as on TCP), turning RFC 7395's
//! `<open/>` and `<close/>` into the stream header and close events, and making each
//! element we send stand alone (its namespace declarations written on it, RFC 7395 §3.3.3).
//! What carries the messages is a [`MessageTransport`] the connection drives itself: the
//! WebSocket (crates/web) reads and writes its socket within the connection's own polls, so a
//! stanza costs no task hand-over; BOSH, whose messages come and go with HTTP requests
//! handled elsewhere, reads them from and writes its frames into the session's request
//! window, also within the connection's polls.

use std::collections::VecDeque;
use std::task::{Context, Poll};

use bytes::Bytes;
use rookery_proto::{ns, StreamError, StreamErrorCondition};
use rookery_sasl::ChannelBindings;
use rookery_xml::{Element, Event, StreamHeader, StreamParser};

/// The namespace of RFC 7395's `<open/>` and `<close/>` (§3.3.2).
pub const NS_FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";

/// What a message-framed connection hands its transport adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Our stream header: RFC 7395's `<open/>`; for BOSH, the attributes of the session
    /// creation (or restart) response. Boxed: it is rare, and every queue of frames is as
    /// large per slot as the largest frame.
    Open(Box<Header>),
    /// One top-level element, with every namespace declaration it needs.
    Element(Bytes),
    /// The end of the stream (RFC 7395 `<close/>`); the adapter closes its transport after it.
    Close,
}

/// What our stream header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Our domain.
    pub from: String,
    /// The peer's JID, when it said who it is.
    pub to: Option<String>,
    /// The stream id.
    pub id: String,
}

/// How a message-framed connection's messages travel, driven by the connection itself from
/// its own polls (poll-style, so the connection's futures stay cancel-safe without a task
/// of their own: the session loop drops a pending read whenever something else comes
/// first, and the next read must resume, losing nothing).
///
/// Object-safe: the connection holds a `Box<dyn MessageTransport>`, one allocation per
/// connection, so the stream crate needs to know no web transport. `Sync` because the
/// connection is (negotiation holds `&Conn` across awaits); only `&mut` methods exist.
pub trait MessageTransport: Send + Sync {
    /// The next message from the peer, each one XML element (or `<open/>`/`<close/>`);
    /// `None` once its input ended: the peer closed or went away, or it sent something the
    /// transport itself refuses (a WebSocket closes with the fitting code before this).
    /// Cancel-safe: a message is returned in the poll that takes it from the transport.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>>;

    /// Sends `frames` from the front, in order, and flushes. A frame leaves the queue once
    /// the transport took it, so a send dropped while pending resumes where it stopped. An
    /// error means the peer is gone (or stopped reading for too long); nothing more will be
    /// sent.
    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        frames: &mut VecDeque<Frame>,
    ) -> Poll<std::io::Result<()>>;

    /// Ends the transport's output: the peer learns nothing more comes (WebSocket: the
    /// closing handshake; BOSH: its session's next response terminates it). Idempotent.
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<()>;

    /// Takes the elements the transport accepted from [`MessageTransport::poll_send`] but
    /// never got to the peer, for the session to route them again as it routes what is
    /// still in its own queue when it ends. A transport that hands its frames on at once
    /// (WebSocket) keeps none; BOSH keeps them in its request window until the client asks,
    /// and a client that stopped asking never does (XEP-0124 §7.1 `inactivity`).
    fn take_unsent(&mut self) -> Vec<Bytes> {
        Vec::new()
    }
}

/// The connection's end of a message transport, built by the transport's adapter.
pub struct Messages {
    /// The messages themselves.
    pub transport: Box<dyn MessageTransport>,
    /// Whether the HTTP connection underneath is TLS (HTTPS).
    pub tls: bool,
    /// Whether the path to the client is confidential although it cannot be upgraded with
    /// STARTTLS: HTTPS, loopback, or a trusted TLS-terminating proxy in front. Negotiation
    /// treats such a stream as encrypted (PLAIN allowed, no STARTTLS offered).
    pub secure: bool,
    /// The channel bindings (`tls-exporter`, `tls-server-end-point`) of the TLS connection
    /// the messages travel on, when the adapter can vouch that the stream lives on that one
    /// connection and that its TLS was terminated by us for the client itself (a WebSocket
    /// over our HTTPS listener). Empty offers no SCRAM -PLUS.
    pub channel_binding: ChannelBindings,
    /// What the core calls this transport (admin API, metrics).
    pub kind: rookery_core::Transport,
}

/// Loads one message into `parser`, read with [`next_event`]. The messages of a stream are
/// read as the content of one synthetic stream whose header declares `content_ns` as the
/// default namespace (so a stanza without `xmlns` is read as on TCP): the header is fed
/// before the first message (and after a restart), not per message, so a message costs the
/// parser what the same stanza costs on TCP. Nothing carries over from one message to the
/// next: [`next_event`] ends a message only where no element is open.
pub(crate) fn load(parser: &mut StreamParser, content_ns: &str, message: &[u8]) {
    if !parser.is_open() {
        parser.reset();
        parser.feed(b"<stream:stream xmlns='");
        parser.feed(content_ns.as_bytes());
        parser.feed(b"' xmlns:stream='http://etherx.jabber.org/streams'>");
    }
    parser.feed(message);
}

/// The next event of the message [`load`]ed into `parser` (its elements, with `<open/>` and
/// `<close/>` as the stream header and close, [`unframe`]); `None` once it is read to its end.
/// A message that ends inside an element is a `not-well-formed` error at once: each message
/// must be complete on its own (RFC 7395 §3.3.3).
pub(crate) fn next_event(
    parser: &mut StreamParser,
    content_ns: &str,
) -> Result<Option<Event>, StreamError> {
    loop {
        match parser.next_event() {
            // The synthetic header `load` put before the first message.
            Ok(Some(Event::StreamOpen(_))) => continue,
            Ok(Some(Event::Element(el))) => return Ok(Some(unframe(el, content_ns))),
            // A `</stream:stream>` in a message is no element of its own (RFC 7395 §3.3.3:
            // the framing's `<close/>` ends a stream); it would also drop the rest of the
            // message unread.
            Ok(Some(Event::StreamClose)) => {
                return Err(StreamError::with_text(
                    StreamErrorCondition::NotWellFormed,
                    "</stream:stream> is not an element; close the stream with <close/>",
                ))
            }
            Ok(None) if parser.between_stanzas() => return Ok(None),
            Ok(None) => {
                return Err(StreamError::with_text(
                    StreamErrorCondition::NotWellFormed,
                    "a message must hold complete elements",
                ))
            }
            Err(e) => return Err(StreamError::from(&e)),
        }
    }
}

/// What an element read from a message is for the stream: RFC 7395's `<open/>` is the
/// stream header (with `content_ns` as its namespace: stanzas carry theirs themselves),
/// `<close/>` the stream close; anything else is a top-level element.
pub(crate) fn unframe(el: Element, content_ns: &str) -> Event {
    if el.ns() != NS_FRAMING {
        return Event::Element(el);
    }
    match el.name() {
        "close" => Event::StreamClose,
        _ => Event::StreamOpen(StreamHeader {
            default_ns: if el.name() == "open" {
                content_ns.to_string()
            } else {
                // Not a header we know: check_namespace refuses it as invalid-namespace.
                NS_FRAMING.to_string()
            },
            prefixes: Vec::new(),
            attrs: el
                .attrs()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }),
    }
}

/// `bytes`, one top-level element as the stream writer wrote it, as a message that stands
/// alone: on a byte stream the header declares the default namespace and the `stream`
/// prefix once, in a message each element must declare them itself (RFC 7395 §3.3.3,
/// XEP-0206 §8: stanzas are qualified by `jabber:client`). So `xmlns:stream` is added to a
/// `<stream:…>` element, and `xmlns='content_ns'` to one that declares no default namespace.
/// `None` for bytes that are no element (whitespace).
pub(crate) fn qualify(bytes: &[u8], content_ns: &str) -> Option<Vec<u8>> {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace())?;
    let el = bytes.get(start..)?;
    if el.first() != Some(&b'<') {
        return None;
    }
    let name_end = el
        .iter()
        .position(|&b| b == b' ' || b == b'/' || b == b'>')
        .unwrap_or(el.len());
    let name = el.get(1..name_end).unwrap_or_default();
    let decl = if name.starts_with(b"stream:") {
        format!(" xmlns:stream='{}'", ns::STREAM)
    } else if start_tag_declares_default_ns(el) {
        return Some(el.to_vec());
    } else {
        format!(" xmlns='{content_ns}'")
    };
    let mut out = Vec::with_capacity(el.len() + decl.len());
    out.extend_from_slice(el.get(..name_end).unwrap_or_default());
    out.extend_from_slice(decl.as_bytes());
    out.extend_from_slice(el.get(name_end..).unwrap_or_default());
    Some(out)
}

/// Whether the start tag at the beginning of `el` has an `xmlns=` attribute (quoted values
/// are skipped, so `>` or `xmlns=` inside one do not count).
fn start_tag_declares_default_ns(el: &[u8]) -> bool {
    let mut quote = None;
    let mut i = 0;
    while let Some(&b) = el.get(i) {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'\'' || b == b'"' => quote = Some(b),
            None if b == b'>' => return false,
            None if b == b' ' && el.get(i + 1..).is_some_and(|r| r.starts_with(b"xmlns=")) => {
                return true
            }
            None => {}
        }
        i += 1;
    }
    false
}

/// Splits what the stream writer produced for one write into the frames it stands for: the
/// element, and a close when the bytes end with the stream's closing tag (a stream error
/// written with its close in one piece).
pub(crate) fn frames(bytes: &[u8], content_ns: &str) -> impl Iterator<Item = Frame> {
    let close = rookery_proto::stream::CLOSE;
    let (body, closes) = match bytes.strip_suffix(close) {
        Some(body) => (body, true),
        None => (bytes, false),
    };
    let element = qualify(body, content_ns).map(|b| Frame::Element(Bytes::from(b)));
    element.into_iter().chain(closes.then_some(Frame::Close))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rookery_xml::Limits;

    fn read(message: &str) -> Vec<Result<Event, String>> {
        let mut p = StreamParser::new(Limits::PRE_AUTH);
        read_on(&mut p, message)
    }

    /// The events of `message` on a parser that may have read messages before.
    fn read_on(p: &mut StreamParser, message: &str) -> Vec<Result<Event, String>> {
        load(p, ns::CLIENT, message.as_bytes());
        let mut out = Vec::new();
        loop {
            match next_event(p, ns::CLIENT) {
                Ok(None) => return out,
                Ok(Some(ev)) => out.push(Ok(ev)),
                Err(e) => {
                    out.push(Err(e.condition.to_string()));
                    return out;
                }
            }
        }
    }

    /// Messages after the first are read without a new header, each on its own: what one
    /// declares or leaves behind does not reach the next.
    #[test]
    fn messages_follow_one_another_on_one_parser() {
        let mut p = StreamParser::new(Limits::PRE_AUTH);
        let got = read_on(&mut p, "<presence/>");
        assert!(matches!(got.as_slice(), [Ok(Event::Element(e))] if e.is("presence", ns::CLIENT)));
        let got = read_on(
            &mut p,
            "<iq xmlns='jabber:client' type='get' id='1'/> <message/>",
        );
        assert_eq!(got.len(), 2, "{got:?}");
        // A prefix declared in one message is unknown in the next.
        let got = read_on(&mut p, "<a:x xmlns:a='urn:a'/>");
        assert!(matches!(got.as_slice(), [Ok(Event::Element(_))]), "{got:?}");
        let got = read_on(&mut p, "<a:x/>");
        assert!(matches!(got.last(), Some(Err(_))), "{got:?}");
        // A stream close inside a message is not an element (RFC 7395 §3.3.3), nor is one
        // after an element: not-well-formed, before anything after it is dropped unread.
        for m in ["</stream:stream>", "<presence/></stream:stream><message/>"] {
            let mut p = StreamParser::new(Limits::PRE_AUTH);
            let got = read_on(&mut p, m);
            let Some(Err(e)) = got.last() else {
                panic!("{m}: {got:?}")
            };
            assert_eq!(e, "not-well-formed", "{m}");
        }
    }

    #[test]
    fn open_and_close_are_the_stream_header_and_close() {
        let got = read(
            "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>",
        );
        let Some(Ok(Event::StreamOpen(h))) = got.first() else {
            panic!("{got:?}")
        };
        assert_eq!(h.default_ns, ns::CLIENT);
        assert_eq!(h.attr("to"), Some("localhost"));
        assert_eq!(h.attr("version"), Some("1.0"));
        let got = read("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>");
        assert!(matches!(got.as_slice(), [Ok(Event::StreamClose)]));
    }

    #[test]
    fn stanzas_read_as_on_a_stream() {
        let got = read("<message xmlns='jabber:client' to='a@b'><body>hi</body></message>");
        let [Ok(Event::Element(el))] = got.as_slice() else {
            panic!("{got:?}")
        };
        assert!(el.is("message", ns::CLIENT));
        // Without xmlns the stream's default applies, as on TCP.
        let got = read("<presence/>");
        assert!(matches!(got.as_slice(), [Ok(Event::Element(e))] if e.is("presence", ns::CLIENT)));
    }

    #[test]
    fn an_incomplete_or_garbage_message_is_an_error_not_a_wait() {
        for bad in [
            "<message>",
            "<message><body>x</body>",
            "hello",
            "<a/><b>",
            "<open",
        ] {
            let got = read(bad);
            assert!(matches!(got.last(), Some(Err(_))), "{bad}: {got:?}");
        }
        // The pre-auth limits apply to a message as to a stream.
        let big = format!("<message><body>{}</body></message>", "x".repeat(20_000));
        let got = read(&big);
        assert_eq!(got.last(), Some(&Err("policy-violation".to_string())));
        // What ends inside an element is not well-formed (RFC 7395 §3.3.3).
        assert_eq!(
            read("<a/><b>").last(),
            Some(&Err("not-well-formed".to_string()))
        );
    }

    #[test]
    fn elements_we_send_declare_their_namespaces() {
        let q = |s: &str| String::from_utf8(qualify(s.as_bytes(), ns::CLIENT).unwrap()).unwrap();
        assert_eq!(
            q("<message to='a'/>"),
            "<message xmlns='jabber:client' to='a'/>"
        );
        assert_eq!(q("<iq>x</iq>"), "<iq xmlns='jabber:client'>x</iq>");
        assert_eq!(
            q("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"),
            "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"
        );
        // An xmlns= inside an attribute value is no declaration.
        assert_eq!(
            q("<message id=' xmlns=x'/>"),
            "<message xmlns='jabber:client' id=' xmlns=x'/>"
        );
        assert_eq!(
            q("<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"),
            "<stream:features xmlns:stream='http://etherx.jabber.org/streams'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"
        );
        assert_eq!(qualify(b" ", ns::CLIENT), None);
    }

    #[test]
    fn a_trailing_stream_close_becomes_the_close_frame() {
        let got: Vec<_> = frames(b"<stream:error/></stream:stream>", ns::CLIENT).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got.last(), Some(&Frame::Close));
        let got: Vec<_> = frames(b"</stream:stream>", ns::CLIENT).collect();
        assert_eq!(got, vec![Frame::Close]);
    }
}
