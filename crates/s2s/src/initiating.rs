//! The initiating server's negotiation machine (RFC 6120 §4.7, §5.4, §6.4; XEP-0178 §3;
//! XEP-0220 §2.1.1): our header, the peer's header and features, STARTTLS (outgoing streams
//! always use TLS), the header and features again, then authentication: SASL EXTERNAL when
//! the peer's certificate is valid for its domain and it offers EXTERNAL, else a dialback
//! request when policy allows. Sans-IO; `outgoing` drives it in two legs, because they fail
//! differently: opening (`Start` … `Certificate`: a failure tries the peer's next address)
//! and authenticating (`Opened` … : a failure fails the stream).
//!
//! States: `Start` → `Header` → `Features` → (`Proceed` → TLS → `Start` → `Header` →
//! `Features` →) `Certificate` → done(open) · `Opened` → (`Sasl` → restart → `Header` →
//! `Features` →) done(authenticated) · or the dialback request → done(waiting for its
//! answer on the bound stream).
//!
//! Failures are not stream errors we send (we give up on the peer, and the stanzas waiting
//! for it bounce), so they end the machine as [`Done`] with an [`OutError`]; only the
//! refusals after the stream is open also close it with a stream error.

use rookery_proto::{ns, StreamError, StreamErrorCondition};
use rookery_stream::header;
use rookery_stream::negotiation::sasl::{self, Reply as SaslReply};
use rookery_stream::negotiation::{self, Action, Input, Machine};
use rookery_xml::{escape_into, Element, Event, StreamHeader};

use crate::dialback::{self, Dialback};
use crate::external;
use crate::outgoing::OutError;

/// What the machine needs to know of the server.
pub trait Policy {
    /// `[s2s] dialback`.
    fn dialback(&self) -> bool;
    /// `[s2s] require_valid_certificates`.
    fn require_valid_certificates(&self) -> bool;
    /// The dialback key for a stream (XEP-0185).
    fn dialback_key(&self, receiving: &str, originating: &str, stream_id: &str) -> String;
}

/// Work the driver does for the machine.
#[derive(Debug, PartialEq)]
pub enum Request {
    /// Whether the peer's certificate is valid for the remote domain.
    CertificateValid,
}

/// The driver's answer: whether the certificate is valid.
#[derive(Debug)]
pub struct Reply(pub bool);

/// How a leg ended.
#[derive(Debug)]
pub enum Done {
    /// The encrypted stream is open (features read): drive the machine again to authenticate.
    Opened,
    /// Authenticated with SASL EXTERNAL.
    Sasl,
    /// The dialback request was sent; its answer comes on the bound stream.
    Dialback,
    /// The peer cannot be used: `error` says why; `close`, when set, ends our stream first.
    Failed {
        /// Why.
        error: OutError,
        /// The stream error to close with, if the stream is open.
        close: Option<StreamError>,
    },
}

type Actions = Vec<Action<Request, Done>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Our header is due.
    Start,
    Header,
    Features,
    /// `<starttls/>` was sent.
    Proceed,
    /// The handshake is the driver's.
    Tls,
    /// The driver checks the certificate.
    Certificate,
    /// Open, not yet authenticated.
    Opened,
    /// `<auth mechanism='EXTERNAL'/>` was sent.
    Sasl,
    Over,
}

/// The negotiation of one outgoing server stream, from `local` to `remote`.
pub struct Initiating<P> {
    policy: P,
    local: String,
    remote: String,
    phase: Phase,
    tls: bool,
    /// SASL succeeded: the next features end the machine.
    authenticated: bool,
    stream_id: Option<String>,
    dialback_offered: bool,
    offers_external: bool,
    cert_valid: bool,
}

impl<P: Policy> Initiating<P> {
    /// A machine for a connection that is already `tls` (XEP-0368) or not.
    pub fn new(policy: P, local: &str, remote: &str, tls: bool) -> Self {
        Initiating {
            policy,
            local: local.to_string(),
            remote: remote.to_string(),
            phase: Phase::Start,
            tls,
            authenticated: false,
            stream_id: None,
            dialback_offered: false,
            offers_external: false,
            cert_valid: false,
        }
    }

    /// Whether the stream is still plain (errors read there are the STARTTLS step's).
    pub fn before_tls(&self) -> bool {
        !self.tls
    }

    /// Our opening header as initiating entity (RFC 6120 §4.7: no `id`).
    fn initial_header(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(256);
        h.extend_from_slice(b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'");
        // XEP-0220 §2.3.1: the declaration says we support dialback.
        if self.policy.dialback() {
            h.extend_from_slice(dialback::HEADER_EXTRA.as_bytes());
        }
        h.extend_from_slice(b" from='");
        escape_into(&mut h, &self.local, true);
        h.extend_from_slice(b"' to='");
        escape_into(&mut h, &self.remote, true);
        h.extend_from_slice(b"' version='1.0' xml:lang='en'>");
        h
    }

    fn give_up(&mut self, error: OutError) -> Actions {
        self.phase = Phase::Over;
        vec![Action::Done(Done::Failed { error, close: None })]
    }

    /// Something the step did not expect. Before TLS the STARTTLS step names the whole
    /// event (a stream error is the peer's); after it, a header where an element belongs is
    /// the `unexpected stream header` error, an element where a header belongs a missing
    /// header.
    fn unexpected(&mut self, input: Input<Reply>) -> Actions {
        let error = match input {
            Input::Element(el) if !self.tls && el.is("error", ns::STREAM) => {
                OutError::Peer(stream_error(&el))
            }
            Input::Header(h) if !self.tls => OutError::NotFound(format!(
                "unexpected {:?} during STARTTLS",
                Event::StreamOpen(h)
            )),
            Input::Element(el) if !self.tls => OutError::NotFound(format!(
                "unexpected {:?} during STARTTLS",
                Event::Element(el)
            )),
            Input::Header(_) => OutError::Peer(negotiation::unexpected_header()),
            Input::Element(_) => OutError::NotFound("expected a stream header".into()),
            Input::TlsDone { .. } | Input::Reply(_) => {
                OutError::NotFound("negotiation out of step".into())
            }
        };
        self.give_up(error)
    }

    /// The peer's header, checked like an incoming one (`rookery_stream::header`); a bad one
    /// makes the domain unreachable for now.
    fn header(&mut self, h: &StreamHeader) -> Actions {
        if header::check_namespace(h, ns::SERVER).is_err() {
            return self.give_up(OutError::NotFound(format!(
                "peer opened a stream in {:?}, not jabber:server",
                h.default_ns
            )));
        }
        if header::check_version(h).is_err() {
            return self.give_up(OutError::NotFound("peer does not speak XMPP 1.0".into()));
        }
        if self.tls {
            self.stream_id = h.attr("id").map(str::to_string);
            self.dialback_offered = h.prefixes.iter().any(|(_, uri)| uri == dialback::NS);
        }
        self.phase = Phase::Features;
        Vec::new()
    }

    fn features(&mut self, el: Element) -> Actions {
        if el.is("error", ns::STREAM) {
            return self.give_up(OutError::Peer(stream_error(&el)));
        }
        if !el.is("features", ns::STREAM) {
            return self.give_up(OutError::NotFound(format!(
                "expected stream features, got <{}/>",
                el.name()
            )));
        }
        if !self.tls {
            if !el.has_child("starttls", ns::TLS) {
                return self.give_up(OutError::Policy("peer does not offer STARTTLS"));
            }
            self.phase = Phase::Proceed;
            return vec![Action::SendRaw(
                b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>".to_vec(),
            )];
        }
        if self.authenticated {
            self.phase = Phase::Over;
            return vec![Action::Done(Done::Sasl)];
        }
        self.dialback_offered |= el.has_child("dialback", dialback::FEATURE_NS);
        self.offers_external = sasl::offers(&el, external::MECHANISM);
        self.phase = Phase::Certificate;
        vec![Action::Request(Request::CertificateValid)]
    }

    /// Authenticates the open stream: EXTERNAL when it can work, else dialback.
    fn authenticate(&mut self) -> Actions {
        if self.cert_valid && self.offers_external {
            self.phase = Phase::Sasl;
            let auth = sasl::auth(external::MECHANISM, &external::client(&self.local));
            return vec![Action::Send(auth)];
        }
        self.dialback()
    }

    /// Dialback (XEP-0220 §2.1.1), when the certificate policy and both sides allow it.
    fn dialback(&mut self) -> Actions {
        self.phase = Phase::Over;
        if !self.cert_valid && self.policy.require_valid_certificates() {
            return refuse(
                OutError::Policy("the peer's certificate is not valid for its domain"),
                "certificate not valid for the domain",
            );
        }
        let Some(id) = self
            .stream_id
            .as_deref()
            .filter(|_| self.dialback_offered && self.policy.dialback())
        else {
            return refuse(
                OutError::Policy("no authentication method in common"),
                "no usable authentication",
            );
        };
        let key = self.policy.dialback_key(&self.remote, &self.local, id);
        let request = Dialback::request(&self.local, &self.remote, None, &key);
        vec![
            Action::SendRaw(request.to_bytes()),
            Action::Done(Done::Dialback),
        ]
    }

    fn sasl(&mut self, el: Element) -> Actions {
        match sasl::reply(&el) {
            SaslReply::Challenge => {
                vec![Action::Send(
                    Element::new("response", ns::SASL).with_text("="),
                )]
            }
            SaslReply::Failure => {
                tracing::info!(reply = %el, "SASL EXTERNAL refused");
                self.dialback()
            }
            SaslReply::Success => {
                self.authenticated = true;
                self.phase = Phase::Header;
                vec![Action::Restart, Action::SendRaw(self.initial_header())]
            }
            SaslReply::Other => self.give_up(OutError::NotFound(format!(
                "unexpected <{}/> during SASL",
                el.name()
            ))),
        }
    }
}

impl<P: Policy> Machine for Initiating<P> {
    type Request = Request;
    type Reply = Reply;
    type Done = Done;

    fn start(&mut self) -> Actions {
        match self.phase {
            Phase::Start => {
                self.phase = Phase::Header;
                vec![Action::SendRaw(self.initial_header())]
            }
            Phase::Opened => self.authenticate(),
            _ => Vec::new(),
        }
    }

    fn handle(&mut self, input: Input<Reply>) -> Actions {
        match (self.phase, input) {
            (Phase::Header, Input::Header(h)) => self.header(&h),

            (Phase::Features, Input::Element(el)) => self.features(el),
            (Phase::Proceed, Input::Element(el)) if el.is("proceed", ns::TLS) => {
                self.phase = Phase::Tls;
                vec![Action::StartTls]
            }
            (Phase::Proceed, Input::Element(el)) if el.is("error", ns::STREAM) => {
                self.give_up(OutError::Peer(stream_error(&el)))
            }
            (Phase::Tls, Input::TlsDone { .. }) => {
                self.tls = true;
                self.phase = Phase::Header;
                vec![Action::SendRaw(self.initial_header())]
            }
            (Phase::Certificate, Input::Reply(Reply(valid))) => {
                self.cert_valid = valid;
                tracing::debug!(
                    cert_valid = valid,
                    dialback_offered = self.dialback_offered,
                    "stream open"
                );
                self.phase = Phase::Opened;
                vec![Action::Done(Done::Opened)]
            }
            (Phase::Sasl, Input::Element(el)) => self.sasl(el),
            (_, input) => self.unexpected(input),
        }
    }
}

/// Gives up on an open stream, closing it with `policy-violation`.
fn refuse(error: OutError, text: &str) -> Actions {
    vec![Action::Done(Done::Failed {
        error,
        close: Some(StreamError::with_text(
            StreamErrorCondition::PolicyViolation,
            text,
        )),
    })]
}

/// The stream error a peer sent.
pub(crate) fn stream_error(el: &Element) -> StreamError {
    let cond = el
        .children()
        .find(|c| c.ns() == ns::STREAM_ERRORS && c.name() != "text")
        .and_then(|c| StreamErrorCondition::from_name(c.name()))
        .unwrap_or(StreamErrorCondition::UndefinedCondition);
    match el.child_text("text", ns::STREAM_ERRORS) {
        Some(t) => StreamError::with_text(cond, t),
        None => StreamError::new(cond),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    struct Test {
        require_valid: bool,
        dialback: bool,
    }

    impl Policy for &Test {
        fn dialback(&self) -> bool {
            self.dialback
        }
        fn require_valid_certificates(&self) -> bool {
            self.require_valid
        }
        fn dialback_key(&self, receiving: &str, originating: &str, id: &str) -> String {
            format!("{receiving} {originating} {id}")
        }
    }

    const DEFAULT: Test = Test {
        require_valid: false,
        dialback: true,
    };

    fn header(id: Option<&str>, dialback: bool) -> Input<Reply> {
        let mut attrs = vec![("version".to_string(), "1.0".to_string())];
        if let Some(id) = id {
            attrs.push(("id".into(), id.into()));
        }
        let prefixes = if dialback {
            vec![("db".to_string(), dialback::NS.to_string())]
        } else {
            Vec::new()
        };
        Input::Header(StreamHeader {
            default_ns: ns::SERVER.into(),
            prefixes,
            attrs,
        })
    }

    fn features(children: Vec<Element>) -> Input<Reply> {
        let mut f = rookery_proto::stream::features();
        for c in children {
            f.push_child(c);
        }
        Input::Element(f)
    }

    fn failed(actions: &Actions) -> Option<(String, Option<StreamErrorCondition>)> {
        actions.iter().find_map(|a| match a {
            Action::Done(Done::Failed { error, close }) => {
                Some((error.to_string(), close.as_ref().map(|c| c.condition)))
            }
            _ => None,
        })
    }

    fn raw(actions: &Actions) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::SendRaw(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect()
    }

    /// A plain connection through STARTTLS to an open stream; `external`: the peer offers
    /// EXTERNAL.
    fn opened(policy: &Test, external: bool) -> Initiating<&Test> {
        let mut m = Initiating::new(policy, "us.test", "them.test", false);
        let h = raw(&m.start());
        assert!(h[0].contains("from='us.test' to='them.test'"), "{h:?}");
        // Declared only when dialback is on (XEP-0220 §2.3.1).
        assert_eq!(
            h[0].contains("xmlns:db='jabber:server:dialback'"),
            policy.dialback,
            "{h:?}"
        );
        assert!(m.handle(header(Some("plain"), false)).is_empty());
        let a = m.handle(features(vec![Element::new("starttls", ns::TLS)]));
        assert_eq!(
            raw(&a),
            vec!["<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"]
        );
        assert!(matches!(
            m.handle(Input::Element(Element::new("proceed", ns::TLS)))[..],
            [Action::StartTls]
        ));
        let a = m.handle(Input::TlsDone {
            channel_binding: Default::default(),
        });
        assert_eq!(raw(&a).len(), 1);
        assert!(!m.before_tls());
        m.handle(header(Some("s1"), false));
        let mut offered = vec![dialback::feature()];
        if external {
            offered.push(sasl::mechanisms(["EXTERNAL"]));
        }
        let a = m.handle(features(offered));
        assert!(matches!(
            a[..],
            [Action::Request(Request::CertificateValid)]
        ));
        m
    }

    #[test]
    fn sasl_external_with_a_valid_certificate() {
        let mut m = opened(&DEFAULT, true);
        assert!(matches!(
            m.handle(Input::Reply(Reply(true)))[..],
            [Action::Done(Done::Opened)]
        ));
        // The second leg starts by authenticating.
        let a = m.start();
        assert!(
            matches!(&a[..], [Action::Send(el)] if el.attr("mechanism") == Some("EXTERNAL")
            && el.text() == "dXMudGVzdA==")
        );
        let a = m.handle(Input::Element(Element::new("challenge", ns::SASL)));
        assert!(
            matches!(&a[..], [Action::Send(el)] if el.is("response", ns::SASL) && el.text() == "=")
        );
        let a = m.handle(Input::Element(Element::new("success", ns::SASL)));
        assert!(matches!(a[0], Action::Restart));
        assert_eq!(raw(&a).len(), 1);
        m.handle(header(Some("s2"), false));
        let a = m.handle(features(Vec::new()));
        assert!(matches!(a[..], [Action::Done(Done::Sasl)]));
    }

    /// EXTERNAL refused, or a certificate that is not valid: dialback, keyed to the id of the
    /// stream it is sent on.
    #[test]
    fn dialback_otherwise() {
        let mut m = opened(&DEFAULT, true);
        m.handle(Input::Reply(Reply(true)));
        m.start();
        let a = m.handle(Input::Element(sasl::failure("not-authorized")));
        let r = raw(&a);
        assert!(
            r[0].starts_with(
                "<db:result xmlns:db='jabber:server:dialback' from='us.test' to='them.test'>"
            ),
            "{r:?}"
        );
        assert!(r[0].contains("them.test us.test s1"));
        assert!(matches!(a[1], Action::Done(Done::Dialback)));

        let mut m = opened(&DEFAULT, true);
        m.handle(Input::Reply(Reply(false)));
        assert!(matches!(m.start()[1], Action::Done(Done::Dialback)));
    }

    #[test]
    fn refusals_close_the_open_stream() {
        let strict = Test {
            require_valid: true,
            dialback: true,
        };
        let mut m = opened(&strict, false);
        m.handle(Input::Reply(Reply(false)));
        let (why, close) = failed(&m.start()).unwrap();
        assert!(why.contains("certificate is not valid"));
        assert_eq!(close, Some(StreamErrorCondition::PolicyViolation));

        let no_dialback = Test {
            require_valid: false,
            dialback: false,
        };
        let mut m = opened(&no_dialback, false);
        m.handle(Input::Reply(Reply(true)));
        let (why, close) = failed(&m.start()).unwrap();
        assert!(why.contains("no authentication method in common"));
        assert_eq!(close, Some(StreamErrorCondition::PolicyViolation));
    }

    /// Failures while opening give up without a stream error of ours, in the words bounces
    /// have always carried.
    #[test]
    fn opening_failures() {
        let m = || {
            let mut m = Initiating::new(&DEFAULT, "us.test", "them.test", false);
            m.start();
            m
        };
        let mut x = m();
        x.handle(header(None, false));
        let (why, close) = failed(&x.handle(features(Vec::new()))).unwrap();
        assert_eq!(why, "policy: peer does not offer STARTTLS");
        assert_eq!(close, None);

        let mut x = m();
        let bad = Input::Header(StreamHeader {
            default_ns: ns::CLIENT.into(),
            prefixes: Vec::new(),
            attrs: vec![("version".into(), "1.0".into())],
        });
        let (why, _) = failed(&x.handle(bad)).unwrap();
        assert_eq!(
            why,
            "peer opened a stream in \"jabber:client\", not jabber:server"
        );

        let mut x = m();
        let (why, _) = failed(&x.handle(Input::Element(Element::new("x", "y")))).unwrap();
        assert!(why.starts_with("unexpected Element("), "{why}");
        assert!(why.ends_with("during STARTTLS"));

        let mut x = m();
        x.handle(header(None, false));
        let error = Element::new("error", ns::STREAM)
            .with_child(Element::new("host-unknown", ns::STREAM_ERRORS));
        let (why, _) = failed(&x.handle(Input::Element(error))).unwrap();
        assert_eq!(why, "peer sent stream error stream error host-unknown");

        // After TLS: a header where the features belong.
        let mut x = Initiating::new(&DEFAULT, "us.test", "them.test", true);
        x.start();
        x.handle(header(Some("s"), true));
        let (why, _) = failed(&x.handle(header(Some("s"), true))).unwrap();
        assert!(why.contains("unexpected stream header"), "{why}");
        let mut x = Initiating::new(&DEFAULT, "us.test", "them.test", true);
        x.start();
        let (why, _) = failed(&x.handle(Input::Element(Element::new("x", "y")))).unwrap();
        assert_eq!(why, "expected a stream header");
    }

    /// The dialback namespace declared on the header counts as the dialback offer.
    #[test]
    fn dialback_declared_on_the_header() {
        let mut m = Initiating::new(&DEFAULT, "us.test", "them.test", true);
        m.start();
        m.handle(header(Some("s9"), true));
        m.handle(features(Vec::new()));
        m.handle(Input::Reply(Reply(false)));
        let a = m.start();
        assert!(raw(&a)[0].contains("them.test us.test s9"));
    }
}
