//! The receiving server's negotiation machine (RFC 6120 §4.7, §5, §6; XEP-0178; XEP-0220
//! §2.2): header in `jabber:server` addressed to a domain we host, STARTTLS (required
//! unless `require_encryption` is off), then features: SASL EXTERNAL when the peer's
//! certificate is valid for the domain its header names, and dialback. After a SASL success
//! the stream restarts and the features are offered again, without EXTERNAL. Sans-IO on the
//! shared steps of `rookery_stream::negotiation`; `incoming` drives it.
//!
//! States: `Header` → (`TlsOffered` → TLS →) `Header` → (`Certificate` →) `Auth` ⇄ `Sasl`
//! → restart → `Header` → done. Negotiation ends with the features when nothing is left to
//! negotiate, or with the first element that is not negotiation (a dialback request, a
//! stanza): it belongs to the bound stream.

use rookery_proto::{ns, StanzaErrorCondition, StreamErrorCondition as SEC};
use rookery_stream::negotiation::receiving::{self, Answer};
use rookery_stream::negotiation::sasl::{self, Exchange, Progress};
use rookery_stream::negotiation::{self, Action, Input, Machine};
use rookery_xml::{Element, StreamHeader};

use crate::dialback::{self, Dialback, Outcome};
use crate::external::{self, ExternalServer};

/// What the machine needs to know of the server.
pub trait Policy {
    /// Whether we serve `domain`.
    fn is_hosted(&self, domain: &str) -> bool;
    /// `[s2s] require_encryption`.
    fn require_encryption(&self) -> bool;
    /// `[s2s] dialback`.
    fn dialback(&self) -> bool;
}

/// Work the driver does for the machine.
#[derive(Debug, PartialEq)]
pub enum Request {
    /// Whether the peer's certificate is valid for this domain.
    CertificateValid(String),
}

/// The driver's answer: whether the certificate is valid.
#[derive(Debug)]
pub struct Reply(pub bool);

/// What negotiation learned, handed to the bound stream.
#[derive(Debug, PartialEq)]
pub struct Done {
    /// The id of the stream header we sent last (dialback keys are bound to it).
    pub stream_id: String,
    /// The domain SASL EXTERNAL authenticated, if it did.
    pub authenticated: Option<String>,
    /// The first element after negotiation, when the peer went on without SASL.
    pub first: Option<Element>,
}

type Actions = Vec<Action<Request, Done>>;

enum Phase {
    Header,
    /// Features with STARTTLS were sent on the plain stream.
    TlsOffered,
    /// The handshake is the driver's.
    Tls,
    /// The driver checks the certificate.
    Certificate,
    /// EXTERNAL was offered.
    Auth,
    Sasl(Exchange<ExternalServer>),
}

/// The negotiation of one incoming server stream.
pub struct Accepting<P> {
    policy: P,
    phase: Phase,
    tls: bool,
    stream_id: String,
    stream_from: Option<String>,
    authenticated: Option<String>,
}

impl<P: Policy> Accepting<P> {
    /// A machine for a stream whose transport is `tls` or not.
    pub fn new(policy: P, tls: bool) -> Self {
        Accepting {
            policy,
            phase: Phase::Header,
            tls,
            stream_id: String::new(),
            stream_from: None,
            authenticated: None,
        }
    }

    fn header(&mut self, header: &StreamHeader) -> Actions {
        let domain = |attr| {
            header
                .attr(attr)
                .and_then(|d| rookery_jid::normalize_domain(d).ok())
        };
        let (to, from) = (domain("to"), domain("from"));
        let hosted = to.clone().filter(|t| self.policy.is_hosted(t));
        let answer = Answer {
            // RFC 6120 §4.7.2: a header without 'to' is answered as our default domain.
            host_ok: to.is_none() || hosted.is_some(),
            from: hosted,
            to: from.clone(),
        };
        let (mut actions, id, ok) = receiving::answer_header(header, ns::SERVER, answer);
        self.stream_id = id;
        self.stream_from = from;
        if !ok {
            return actions;
        }
        if !self.tls {
            let required = self.policy.require_encryption();
            let mut f =
                rookery_proto::stream::features().with_child(receiving::starttls_feature(required));
            if !required && self.policy.dialback() {
                f.push_child(dialback::feature());
            }
            actions.push(Action::Send(f));
            self.phase = Phase::TlsOffered;
            return actions;
        }
        match self
            .stream_from
            .clone()
            .filter(|d| self.authenticated.is_none() && !self.policy.is_hosted(d))
        {
            Some(d) => {
                self.phase = Phase::Certificate;
                actions.push(Action::Request(Request::CertificateValid(d)));
            }
            None => actions.extend(self.features(false)),
        }
        actions
    }

    /// The features of an encrypted stream; negotiation ends here unless EXTERNAL is offered.
    fn features(&mut self, external_ok: bool) -> Actions {
        let mut f = rookery_proto::stream::features();
        if external_ok {
            f.push_child(sasl::mechanisms([external::MECHANISM]));
        }
        if self.policy.dialback() {
            f.push_child(dialback::feature());
        }
        let mut actions = vec![Action::Send(f)];
        if external_ok {
            self.phase = Phase::Auth;
        } else {
            actions.push(self.done(None));
        }
        actions
    }

    fn done(&mut self, first: Option<Element>) -> Action<Request, Done> {
        Action::Done(Done {
            stream_id: std::mem::take(&mut self.stream_id),
            authenticated: self.authenticated.take(),
            first,
        })
    }

    /// An element on the plain stream. When TLS is required, a dialback request gets a
    /// `policy-violation` dialback error and the stream waits on for STARTTLS (XEP-0220 §2.4:
    /// the error rather than the end of the stream); anything else ends it.
    fn before_tls(&mut self, el: Element) -> Actions {
        if receiving::is_starttls(&el) {
            self.phase = Phase::Tls;
            return receiving::proceed().into();
        }
        if !self.policy.require_encryption() {
            return vec![self.done(Some(el))];
        }
        match Dialback::parse(&el) {
            Some(Ok(db)) if db.outcome == Outcome::Request => {
                self.phase = Phase::TlsOffered;
                let refused = Outcome::Error(Some(StanzaErrorCondition::PolicyViolation));
                vec![Action::SendRaw(db.answer(refused).to_bytes())]
            }
            _ => vec![Action::Fail(rookery_proto::StreamError::with_text(
                SEC::PolicyViolation,
                "STARTTLS is required",
            ))],
        }
    }

    fn auth(&mut self, el: Element) -> Actions {
        if !el.is("auth", ns::SASL) {
            return vec![self.done(Some(el))];
        }
        if sasl::mechanism(&el) != Some(external::MECHANISM) {
            return self.failed("invalid-mechanism");
        }
        let mut server = ExternalServer {
            stream_from: self.stream_from.clone(),
            valid_for: self.stream_from.clone(),
        };
        let progress = match sasl::initial_response(&el) {
            Ok(initial) => Progress::from_step(server.start(initial)),
            Err(condition) => Progress::Failure(condition),
        };
        self.progress(Exchange::new(server), progress)
    }

    fn progress(&mut self, exchange: Exchange<ExternalServer>, progress: Progress) -> Actions {
        match progress {
            Progress::Challenge(challenge) => {
                self.phase = Phase::Sasl(exchange);
                vec![Action::Send(challenge)]
            }
            Progress::Success { username, .. } => {
                tracing::info!(domain = %username, "authenticated with SASL EXTERNAL");
                self.authenticated = Some(username);
                self.phase = Phase::Header;
                vec![Action::Send(sasl::success(None)), Action::Restart]
            }
            Progress::Failure(condition) => self.failed(condition),
            Progress::NeedCredentials(_) => self.failed("temporary-auth-failure"),
        }
    }

    /// A failed EXTERNAL: the peer may still authenticate with dialback on this stream.
    fn failed(&mut self, condition: &'static str) -> Actions {
        tracing::info!(condition, "SASL EXTERNAL failed");
        vec![Action::Send(sasl::failure(condition)), self.done(None)]
    }
}

impl<P: Policy> Machine for Accepting<P> {
    type Request = Request;
    type Reply = Reply;
    type Done = Done;

    fn handle(&mut self, input: Input<Reply>) -> Actions {
        match (std::mem::replace(&mut self.phase, Phase::Header), input) {
            (Phase::Header, Input::Header(h)) => self.header(&h),
            (Phase::Header, Input::Element(_)) => {
                vec![Action::Fail(negotiation::expected_header())]
            }
            (_, Input::Header(_)) => vec![Action::Fail(negotiation::unexpected_header())],
            (Phase::TlsOffered, Input::Element(el)) => self.before_tls(el),
            (Phase::Auth, Input::Element(el)) => self.auth(el),
            (Phase::Sasl(mut exchange), Input::Element(el)) => {
                let p = exchange.element(&el);
                self.progress(exchange, p)
            }
            (Phase::Tls, Input::TlsDone { .. }) => {
                self.tls = true;
                Vec::new()
            }
            (Phase::Certificate, Input::Reply(Reply(valid))) => self.features(valid),
            _ => vec![Action::Fail(rookery_proto::StreamError::with_text(
                SEC::InternalServerError,
                "negotiation out of step",
            ))],
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use rookery_proto::StreamErrorCondition;

    use super::*;

    struct Test {
        require_encryption: bool,
    }

    impl Policy for &Test {
        fn is_hosted(&self, domain: &str) -> bool {
            domain == "us.test"
        }
        fn require_encryption(&self) -> bool {
            self.require_encryption
        }
        fn dialback(&self) -> bool {
            true
        }
    }

    const STRICT: Test = Test {
        require_encryption: true,
    };

    fn header(from: &str, to: &str) -> Input<Reply> {
        Input::Header(StreamHeader {
            default_ns: ns::SERVER.into(),
            prefixes: Vec::new(),
            attrs: vec![
                ("from".into(), from.into()),
                ("to".into(), to.into()),
                ("version".into(), "1.0".into()),
            ],
        })
    }

    fn el(e: Element) -> Input<Reply> {
        Input::Element(e)
    }

    fn sent(actions: &Actions) -> Vec<&Element> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(el) => Some(el),
                _ => None,
            })
            .collect()
    }

    fn done(actions: &Actions) -> Option<&Done> {
        actions.iter().find_map(|a| match a {
            Action::Done(d) => Some(d),
            _ => None,
        })
    }

    fn fail(actions: &Actions) -> Option<StreamErrorCondition> {
        actions.iter().find_map(|a| match a {
            Action::Fail(e) => Some(e.condition),
            _ => None,
        })
    }

    /// A machine on a TLS stream from `them.test`, waiting for the certificate check.
    fn at_certificate(policy: &Test) -> Accepting<&Test> {
        let mut m = Accepting::new(policy, true);
        let a = m.handle(header("Them.Test", "us.test"));
        assert!(
            matches!(&a[0], Action::SendHeader { from: Some(f), to: Some(t), .. }
            if f == "us.test" && t == "them.test")
        );
        assert_eq!(
            a[1],
            Action::Request(Request::CertificateValid("them.test".into()))
        );
        m
    }

    #[test]
    fn starttls_required_on_a_plain_stream() {
        let mut m = Accepting::new(&STRICT, false);
        let a = m.handle(header("them.test", "us.test"));
        let f = sent(&a)[0];
        assert!(f
            .get_child("starttls", ns::TLS)
            .is_some_and(|s| s.has_child("required", ns::TLS)));
        assert!(!f.has_child("dialback", dialback::FEATURE_NS));
        // A dialback request: a dialback error, the stream goes on.
        let request = Element::new("result", dialback::NS)
            .with_attr("from", "them.test")
            .with_attr("to", "us.test")
            .with_text("k");
        let a = m.handle(el(request));
        assert!(matches!(&a[..], [Action::SendRaw(b)]
            if String::from_utf8_lossy(b).contains("policy-violation")));
        // Anything else ends it.
        let a = m.handle(el(Element::new("result", dialback::NS)));
        assert_eq!(fail(&a), Some(StreamErrorCondition::PolicyViolation));

        let mut m = Accepting::new(&STRICT, false);
        m.handle(header("them.test", "us.test"));
        let a = m.handle(el(Element::new("starttls", ns::TLS)));
        assert_eq!(a[1], Action::StartTls);
        assert!(m
            .handle(Input::TlsDone {
                channel_binding: Default::default()
            })
            .is_empty());
        let a = m.handle(header("them.test", "us.test"));
        assert!(matches!(&a[1], Action::Request(_)));
    }

    /// With encryption optional, a peer may go on without TLS: its first element is the
    /// bound stream's.
    #[test]
    fn optional_tls_hands_over_the_first_element() {
        let lax = Test {
            require_encryption: false,
        };
        let mut m = Accepting::new(&lax, false);
        let a = m.handle(header("them.test", "us.test"));
        assert!(sent(&a)[0].has_child("dialback", dialback::FEATURE_NS));
        let db = Element::new("result", dialback::NS);
        let a = m.handle(el(db.clone()));
        assert_eq!(done(&a).unwrap().first, Some(db));
    }

    #[test]
    fn header_errors() {
        let mut m = Accepting::new(&STRICT, true);
        let a = m.handle(header("them.test", "else.test"));
        assert!(matches!(&a[0], Action::SendHeader { from: None, .. }));
        assert_eq!(fail(&a), Some(StreamErrorCondition::HostUnknown));
        let mut m = Accepting::new(&STRICT, true);
        let a = m.handle(el(Element::new("starttls", ns::TLS)));
        assert_eq!(fail(&a), Some(StreamErrorCondition::BadFormat));
        let mut m = at_certificate(&STRICT);
        m.handle(Input::Reply(Reply(true)));
        let a = m.handle(header("them.test", "us.test"));
        assert_eq!(fail(&a), Some(StreamErrorCondition::BadFormat));
    }

    /// No EXTERNAL without a valid certificate: the features end negotiation (dialback may
    /// follow on the bound stream).
    #[test]
    fn invalid_certificate_offers_dialback_only() {
        let mut m = at_certificate(&STRICT);
        let a = m.handle(Input::Reply(Reply(false)));
        assert!(!sent(&a)[0].has_child("mechanisms", ns::SASL));
        assert!(sent(&a)[0].has_child("dialback", dialback::FEATURE_NS));
        let d = done(&a).unwrap();
        assert_eq!((d.authenticated.as_deref(), d.first.as_ref()), (None, None));
        assert_eq!(d.stream_id.len(), 32);
    }

    #[test]
    fn external_success_restarts_then_ends() {
        let mut m = at_certificate(&STRICT);
        let a = m.handle(Input::Reply(Reply(true)));
        assert!(sasl::offers(sent(&a)[0], external::MECHANISM));
        assert!(done(&a).is_none());
        // No initial response: an empty challenge, then the response.
        let a = m.handle(el(
            Element::new("auth", ns::SASL).with_attr("mechanism", "EXTERNAL")
        ));
        assert_eq!(sent(&a)[0].text(), "=");
        let a = m.handle(el(Element::new("response", ns::SASL).with_text("=")));
        assert!(sent(&a)[0].is("success", ns::SASL));
        assert_eq!(a[1], Action::Restart);
        // The restarted stream: no certificate check, no EXTERNAL again.
        let a = m.handle(header("them.test", "us.test"));
        assert!(!sent(&a)[0].has_child("mechanisms", ns::SASL));
        assert_eq!(
            done(&a).unwrap().authenticated.as_deref(),
            Some("them.test")
        );
    }

    #[test]
    fn external_failures_leave_dialback() {
        let mut m = at_certificate(&STRICT);
        m.handle(Input::Reply(Reply(true)));
        let a = m.handle(el(sasl::auth("PLAIN", b"x")));
        assert!(sent(&a)[0].has_child("invalid-mechanism", ns::SASL));
        assert!(done(&a).is_some());

        let mut m = at_certificate(&STRICT);
        m.handle(Input::Reply(Reply(true)));
        let a = m.handle(el(sasl::auth("EXTERNAL", b"other.test")));
        assert!(sent(&a)[0].has_child("invalid-authzid", ns::SASL));
        assert_eq!(done(&a).unwrap().authenticated, None);

        let mut m = at_certificate(&STRICT);
        m.handle(Input::Reply(Reply(true)));
        m.handle(el(
            Element::new("auth", ns::SASL).with_attr("mechanism", "EXTERNAL")
        ));
        let a = m.handle(el(Element::new("abort", ns::SASL)));
        assert!(sent(&a)[0].has_child("aborted", ns::SASL));
    }
}
