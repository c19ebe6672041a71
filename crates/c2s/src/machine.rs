//! The client's negotiation machine (RFC 6120 §4.3): header, STARTTLS (§5), SASL (§6) with
//! channel binding (RFC 9266, XEP-0440), in-band registration before authentication
//! (XEP-0077), then resource binding (§7) or XEP-0198 resumption (§5). Sans-IO on the
//! shared steps of `rookery_stream::negotiation`; `negotiate` drives it over a connection.
//!
//! States: `Header` → (`TlsRequired` → TLS →) `Header` → `Auth` ⇄ `Sasl` → restart →
//! `Header` → `Bind` → done. TLS first unless `require_encryption` is off, then STARTTLS is
//! offered beside the mechanisms and may interrupt `Auth`. PLAIN and registration carry the
//! password itself and are refused on an unencrypted stream unless
//! `allow_unencrypted_plain`. Every failed attempt counts against `max_auth_attempts`; those
//! that tested a password also against the rate limits (through [`Policy`]).

use rookery_jid::{BareJid, Jid};
use rookery_proto::{
    ns, IqType, Stanza, StanzaError, StanzaErrorCondition, StanzaKind, StreamError,
    StreamErrorCondition as SEC,
};
use rookery_sasl::{Credentials, Mechanism, ServerSession};
use rookery_stream::negotiation::receiving::{self, Answer};
use rookery_stream::negotiation::sasl::{self, Exchange, Progress};
use rookery_stream::negotiation::{self, Action, Input, Machine};
use rookery_xml::{Element, Limits, StreamHeader};

use crate::{csi, sm, C2sConfig};

/// What the machine needs from the server, beside its configuration: asked synchronously,
/// so tests answer with plain values.
pub trait Policy {
    /// The domain we serve.
    fn domain(&self) -> &str;
    /// The listener settings.
    fn config(&self) -> &C2sConfig;
    /// Whether in-band registration is open.
    fn registration_open(&self) -> bool;
    /// Stream features the modules declare (e.g. XEP-0237 roster versioning).
    fn stream_features(&self) -> Vec<Element>;
    /// Whether an attempt (for `account`, once known) must be refused now (rate limits).
    fn auth_blocked(&self, account: Option<&str>) -> bool;
    /// Records a failure that tested a password.
    fn auth_failed(&self, account: Option<&str>);
    /// Counts an attempt's outcome (metrics), by mechanism.
    fn auth_result(&self, mechanism: &'static str, ok: bool);
    /// Whether binding `jid` would take its account past `[c2s] max_sessions_per_account`.
    fn session_limit_reached(&self, jid: &Jid) -> bool;
}

/// Work the driver does for the machine.
#[derive(Debug, PartialEq)]
pub enum Request {
    /// The stored credentials of this (normalized) localpart.
    Credentials(String),
    /// Serve this XEP-0077 registration IQ.
    Register(Stanza),
}

/// The driver's answers.
#[derive(Debug)]
pub enum Reply {
    /// The credentials (`None`: no such account; `Err`: the lookup failed).
    Credentials(Result<Option<Credentials>, ()>),
    /// The reply to the registration IQ, to send.
    Registered(Option<Stanza>),
}

/// How negotiation ended.
#[derive(Debug, PartialEq)]
pub enum Done {
    /// A resource was bound (the result was sent): register the session as this JID.
    Bound(Jid),
    /// The client asks to resume a session (XEP-0198 §5); the connection goes to it. If it
    /// refuses, send its `<failed/>` and drive the machine on: the client may bind instead.
    Resume {
        /// The authenticated user (only its own sessions may be resumed).
        user: BareJid,
        /// The SM-ID.
        previd: String,
        /// The client's `h`.
        h: Option<u32>,
    },
}

type Actions = Vec<Action<Request, Done>>;

/// One SASL attempt.
struct Attempt {
    exchange: Exchange<ServerSession>,
    /// The mechanism, as a metrics label.
    mechanism: &'static str,
    /// The account it concerns, once the mechanism named it.
    account: Option<String>,
}

enum Phase {
    Header,
    /// Features with a required STARTTLS were sent.
    TlsRequired,
    /// The handshake is the driver's.
    Tls,
    /// Mechanisms were offered.
    Auth,
    /// A registration IQ is the driver's.
    Registering,
    Sasl(Box<Attempt>),
    /// Authenticated: binding was offered.
    Bind,
}

/// The negotiation of one client stream.
pub struct C2sMachine<P> {
    policy: P,
    phase: Phase,
    /// Encrypted, or secure enough for passwords (TLS terminated in front of a web
    /// transport, loopback).
    secure: bool,
    /// Whether STARTTLS can still be offered (a plain TCP stream; never WebSocket or BOSH).
    can_start_tls: bool,
    channel_binding: Option<Vec<u8>>,
    user: Option<BareJid>,
    attempts: u32,
}

impl<P: Policy> C2sMachine<P> {
    /// A machine for a stream that is `secure` or not, that `can_start_tls` or not, with
    /// that channel binding.
    pub fn new(
        policy: P,
        secure: bool,
        can_start_tls: bool,
        channel_binding: Option<Vec<u8>>,
    ) -> Self {
        C2sMachine {
            policy,
            phase: Phase::Header,
            secure,
            can_start_tls,
            channel_binding,
            user: None,
            attempts: 0,
        }
    }

    /// Whether a mechanism or request that carries the password itself (PLAIN, in-band
    /// registration) is allowed on this stream.
    fn password_in_clear_allowed(&self) -> bool {
        self.secure || self.policy.config().allow_unencrypted_plain
    }

    fn header(&mut self, header: &StreamHeader) -> Actions {
        let host_ok = header.attr("to").is_none_or(|to| {
            Jid::parse(to).ok().as_ref().map(Jid::as_str) == Some(self.policy.domain())
        });
        let answer = Answer {
            from: None,
            to: header.attr("from").map(str::to_string),
            host_ok,
        };
        let (mut actions, _, ok) = receiving::answer_header(header, ns::CLIENT, answer);
        if !ok {
            return actions;
        }
        if !self.secure && self.policy.config().require_encryption {
            if !self.can_start_tls {
                actions.push(fail(
                    SEC::PolicyViolation,
                    "encryption is required and this transport cannot start TLS",
                ));
                return actions;
            }
            let f = rookery_proto::stream::features().with_child(receiving::starttls_feature(true));
            actions.push(Action::Send(f));
            self.phase = Phase::TlsRequired;
        } else if self.user.is_none() {
            actions.push(Action::Send(self.features_sasl()));
            self.phase = Phase::Auth;
        } else {
            actions.push(Action::Limits(Limits {
                max_stanza_bytes: self.policy.config().max_stanza_bytes,
                ..Limits::C2S
            }));
            actions.push(Action::Send(self.features_bound()));
            self.phase = Phase::Bind;
        }
        actions
    }

    /// Features before authentication. On an unencrypted stream (only reached with
    /// `require_encryption = false`) STARTTLS is offered without `<required/>` where the
    /// transport can start it (never on WebSocket or BOSH), and PLAIN
    /// and registration only when `allow_unencrypted_plain` says so.
    fn features_sasl(&self) -> Element {
        let clear_password_ok = self.password_in_clear_allowed();
        let cb = self.channel_binding.is_some();
        let names = Mechanism::ALL
            .into_iter()
            .filter(|&m| (cb || !m.is_plus()) && (clear_password_ok || m != Mechanism::Plain))
            .map(Mechanism::name);
        let mut f = rookery_proto::stream::features();
        if !self.secure && self.can_start_tls {
            f.push_child(receiving::starttls_feature(false));
        }
        f.push_child(sasl::mechanisms(names));
        if cb {
            // XEP-0440: tell the client which binding type the -PLUS mechanisms use.
            f.push_child(
                Element::new("sasl-channel-binding", ns::SASL_CB).with_child(
                    Element::new("channel-binding", ns::SASL_CB).with_attr("type", "tls-exporter"),
                ),
            );
        }
        if self.policy.registration_open() && clear_password_ok {
            f.push_child(Element::new("register", ns::REGISTER_FEATURE));
        }
        f
    }

    fn features_bound(&self) -> Element {
        let mut f = rookery_proto::stream::features()
            .with_child(Element::new("bind", ns::BIND))
            .with_child(
                Element::new("session", ns::SESSION)
                    .with_child(Element::new("optional", ns::SESSION)),
            );
        // XEP-0198 §2: offered after authentication, where both <enable/> (after binding)
        // and <resume/> (instead of binding) are possible.
        if self.policy.config().stream_management {
            f.push_child(Element::new("sm", sm::NS));
        }
        f.push_child(Element::new("csi", csi::NS));
        for extra in self.policy.stream_features() {
            f.push_child(extra);
        }
        f
    }

    /// Anything but `<starttls/>` on a plain stream: TLS is mandatory (RFC 6120 §5.3.1).
    fn before_tls(&mut self, el: &Element) -> Actions {
        if receiving::is_starttls(el) {
            self.phase = Phase::Tls;
            return receiving::proceed().into();
        }
        let mut actions = Vec::new();
        if el.is("auth", ns::SASL) {
            actions.push(Action::Send(sasl::failure("encryption-required")));
        }
        actions.push(fail(SEC::PolicyViolation, "STARTTLS is required"));
        actions
    }

    /// Elements before authentication: `<auth/>`, registration IQs, STARTTLS when offered.
    fn auth(&mut self, el: Element) -> Actions {
        if el.is("iq", ns::CLIENT) {
            return self.pre_auth_iq(el);
        }
        if receiving::is_starttls(&el) && !self.secure && self.can_start_tls {
            self.phase = Phase::Tls;
            return receiving::proceed().into();
        }
        if !el.is("auth", ns::SASL) {
            return vec![fail(SEC::NotAuthorized, "authenticate first")];
        }
        let mechanism = sasl::mechanism(&el).and_then(Mechanism::from_name);
        let label = mechanism.map_or("other", Mechanism::name);
        match self.start_mechanism(mechanism, &el) {
            Ok((server, step)) => {
                let attempt = Attempt {
                    exchange: Exchange::new(server),
                    mechanism: label,
                    account: None,
                };
                self.progress(attempt, Progress::from_step(step))
            }
            Err(condition) => self.failed(label, None, condition),
        }
    }

    /// Starts the mechanism an `<auth/>` asked for, or says why not.
    fn start_mechanism(
        &self,
        mechanism: Option<Mechanism>,
        auth: &Element,
    ) -> Result<(ServerSession, rookery_sasl::Step), &'static str> {
        if self.policy.auth_blocked(None) {
            return Err("temporary-auth-failure");
        }
        let mech = mechanism.ok_or("invalid-mechanism")?;
        if mech.is_plus() && self.channel_binding.is_none() {
            return Err("invalid-mechanism");
        }
        // RFC 6120 §6.5.4: PLAIN was not offered on this unencrypted stream.
        if mech == Mechanism::Plain && !self.password_in_clear_allowed() {
            return Err("encryption-required");
        }
        let initial = sasl::initial_response(auth)?.unwrap_or_default();
        let plus_advertised = self.channel_binding.is_some();
        Ok(ServerSession::start(
            mech,
            self.channel_binding.clone(),
            plus_advertised,
            &initial,
        ))
    }

    /// Carries an attempt on after the mechanism moved.
    fn progress(&mut self, mut attempt: Attempt, progress: Progress) -> Actions {
        match progress {
            Progress::Challenge(challenge) => {
                self.phase = Phase::Sasl(Box::new(attempt));
                vec![Action::Send(challenge)]
            }
            Progress::NeedCredentials(username) => {
                let local = rookery_jid::normalize_local(&username).ok();
                attempt.account = local.clone();
                if self.policy.auth_blocked(local.as_deref()) {
                    return self.failed(attempt.mechanism, local, "temporary-auth-failure");
                }
                match local {
                    Some(l) => {
                        self.phase = Phase::Sasl(Box::new(attempt));
                        vec![Action::Request(Request::Credentials(l))]
                    }
                    None => {
                        let p = attempt.exchange.credentials(None);
                        self.progress(attempt, p)
                    }
                }
            }
            Progress::Success {
                username,
                authzid,
                additional_data,
            } => match self.identity(&username, authzid) {
                Ok(user) => {
                    self.policy.auth_result(attempt.mechanism, true);
                    tracing::info!(user = %user, secure = self.secure, "authenticated");
                    self.user = Some(user);
                    self.phase = Phase::Header;
                    vec![
                        Action::Send(sasl::success(additional_data)),
                        Action::Restart,
                    ]
                }
                Err(condition) => self.failed(attempt.mechanism, attempt.account, condition),
            },
            Progress::Failure(condition) => {
                self.failed(attempt.mechanism, attempt.account, condition)
            }
        }
    }

    /// The user a successful exchange authenticated. Strict authzid: a client may only act
    /// as itself.
    fn identity(&self, username: &str, authzid: Option<String>) -> Result<BareJid, &'static str> {
        let local = rookery_jid::normalize_local(username).map_err(|_| "not-authorized")?;
        let user =
            BareJid::new(Some(&local), self.policy.domain()).map_err(|_| "not-authorized")?;
        if let Some(a) = authzid.filter(|a| !a.is_empty()) {
            if BareJid::parse(&a).ok().as_ref() != Some(&user) {
                return Err("invalid-authzid");
            }
        }
        Ok(user)
    }

    /// A failed attempt: `<failure/>`, and the stream ends after `max_auth_attempts`.
    fn failed(
        &mut self,
        mechanism: &'static str,
        account: Option<String>,
        condition: &'static str,
    ) -> Actions {
        self.policy.auth_result(mechanism, false);
        // Only failures that tested a password count against the limits.
        if !matches!(
            condition,
            "aborted" | "temporary-auth-failure" | "encryption-required"
        ) {
            self.policy.auth_failed(account.as_deref());
        }
        tracing::info!(condition, account = ?account, "authentication failed");
        let mut actions = vec![Action::Send(sasl::failure(condition))];
        self.attempts += 1;
        self.phase = Phase::Auth;
        if self.attempts >= self.policy.config().max_auth_attempts.max(1) {
            actions.push(fail(
                SEC::PolicyViolation,
                "too many authentication attempts",
            ));
        }
        actions
    }

    /// IQs before authentication: only in-band registration (XEP-0077) is served.
    fn pre_auth_iq(&mut self, el: Element) -> Actions {
        let stanza = match Stanza::from_element(el) {
            Ok(s) => s,
            Err(e) => return e.reply().map(Action::Send).into_iter().collect(),
        };
        let to_server = stanza
            .to()
            .is_none_or(|t| t.as_str() == self.policy.domain());
        let is_register = stanza
            .payload()
            .is_some_and(|p| p.is("query", ns::REGISTER));
        if !(to_server && is_register) {
            return vec![fail(SEC::NotAuthorized, "authenticate first")];
        }
        if !self.password_in_clear_allowed() {
            // The form would carry the password in the clear (and registration was not
            // offered).
            let e = StanzaError::new(StanzaErrorCondition::PolicyViolation)
                .with_text("encryption is required to register");
            return send_stanza(stanza.error_reply(&e));
        }
        self.phase = Phase::Registering;
        vec![Action::Request(Request::Register(stanza))]
    }

    /// Resource binding (RFC 6120 §7); the legacy `<session/>` (optional) is answered too;
    /// `<resume/>` (XEP-0198 §5) ends the machine for the driver to try.
    fn bind(&mut self, el: Element) -> Actions {
        if el.ns() == sm::NS {
            return match el.name() {
                "resume" => self.resume(&el),
                // §3: stream management is enabled after binding.
                "enable" => vec![Action::Send(sm::failed("unexpected-request", None))],
                // <r/> or <a/> before <enable/>: nothing is counted yet.
                _ => Vec::new(),
            };
        }
        if el.ns() == csi::NS {
            // Nothing to hold back before a resource is bound.
            return Vec::new();
        }
        let stanza = match Stanza::from_element(el) {
            Ok(s) => s,
            Err(e) => {
                return match e.reply() {
                    Some(reply) => vec![Action::Send(reply)],
                    None => vec![fail(SEC::NotAuthorized, "bind a resource first")],
                }
            }
        };
        let Some(payload) = stanza
            .payload()
            .filter(|_| stanza.kind() == StanzaKind::Iq(IqType::Set))
        else {
            return vec![fail(SEC::NotAuthorized, "bind a resource first")];
        };
        if payload.is("session", ns::SESSION) {
            return vec![Action::Send(stanza.iq_result(None).into_element())];
        }
        if !payload.is("bind", ns::BIND) {
            let e = StanzaError::new(StanzaErrorCondition::NotAuthorized);
            return send_stanza(stanza.error_reply(&e));
        }
        let requested = payload
            .child_text("resource", ns::BIND)
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty());
        let resource =
            requested.unwrap_or_else(|| format!("rookery-{:016x}", rand::random::<u64>()));
        let Some(jid) = self
            .user
            .as_ref()
            .and_then(|u| u.with_resource(&resource).ok())
        else {
            let e =
                StanzaError::new(StanzaErrorCondition::BadRequest).with_text("invalid resource");
            return send_stanza(stanza.error_reply(&e));
        };
        if self.policy.session_limit_reached(&jid) {
            // RFC 6120 §7.6.2.1: the account has reached its limit of connected resources.
            let e = StanzaError::new(StanzaErrorCondition::ResourceConstraint)
                .with_text("too many sessions for this account");
            return send_stanza(stanza.error_reply(&e));
        }
        let result = stanza.iq_result(Some(
            Element::new("bind", ns::BIND)
                .with_child(Element::new("jid", ns::BIND).with_text(jid.as_str())),
        ));
        vec![
            Action::Send(result.into_element()),
            Action::Done(Done::Bound(jid)),
        ]
    }

    fn resume(&mut self, el: &Element) -> Actions {
        if !self.policy.config().stream_management {
            return vec![Action::Send(sm::failed("feature-not-implemented", None))];
        }
        match (sm::parse_h(el), el.attr("previd"), &self.user) {
            (Ok(h), Some(previd), Some(user)) => vec![Action::Done(Done::Resume {
                user: user.clone(),
                previd: previd.to_string(),
                h,
            })],
            _ => vec![Action::Send(sm::failed("bad-request", None))],
        }
    }

    fn reply(&mut self, reply: Reply) -> Actions {
        match (std::mem::replace(&mut self.phase, Phase::Auth), reply) {
            (Phase::Registering, Reply::Registered(r)) => send_stanza(r),
            (Phase::Sasl(mut attempt), Reply::Credentials(found)) => {
                let p = match found {
                    Ok(creds) => attempt.exchange.credentials(creds.as_ref()),
                    Err(()) => Progress::Failure("temporary-auth-failure"),
                };
                self.progress(*attempt, p)
            }
            _ => vec![fail(SEC::InternalServerError, "negotiation out of step")],
        }
    }
}

impl<P: Policy> Machine for C2sMachine<P> {
    type Request = Request;
    type Reply = Reply;
    type Done = Done;

    fn handle(&mut self, input: Input<Reply>) -> Actions {
        match input {
            Input::Header(h) if matches!(self.phase, Phase::Header) => self.header(&h),
            Input::Header(_) => vec![Action::Fail(negotiation::unexpected_header())],
            Input::Element(_) if matches!(self.phase, Phase::Header) => {
                vec![Action::Fail(negotiation::expected_header())]
            }
            Input::Element(el) => match std::mem::replace(&mut self.phase, Phase::Auth) {
                Phase::TlsRequired => self.before_tls(&el),
                Phase::Auth => self.auth(el),
                Phase::Sasl(mut attempt) => {
                    let p = attempt.exchange.element(&el);
                    self.progress(*attempt, p)
                }
                Phase::Bind => {
                    self.phase = Phase::Bind;
                    self.bind(el)
                }
                Phase::Header | Phase::Tls | Phase::Registering => {
                    vec![fail(SEC::InternalServerError, "negotiation out of step")]
                }
            },
            Input::TlsDone { channel_binding } => {
                self.secure = true;
                self.can_start_tls = false;
                self.channel_binding = channel_binding;
                self.phase = Phase::Header;
                Vec::new()
            }
            Input::Reply(r) => self.reply(r),
        }
    }
}

fn fail(condition: SEC, text: &str) -> Action<Request, Done> {
    Action::Fail(StreamError::with_text(condition, text))
}

fn send_stanza(stanza: Option<Stanza>) -> Actions {
    stanza
        .map(|s| Action::Send(s.into_element()))
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use std::cell::RefCell;

    use base64::Engine;

    use super::*;

    const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
    const DOMAIN: &str = "example.test";

    /// A policy of plain values that records what the machine reported.
    #[derive(Default)]
    struct Test {
        config: C2sConfig,
        blocked: bool,
        failed: RefCell<Vec<Option<String>>>,
        results: RefCell<Vec<(&'static str, bool)>>,
    }

    impl Policy for &Test {
        fn domain(&self) -> &str {
            DOMAIN
        }
        fn config(&self) -> &C2sConfig {
            &self.config
        }
        fn registration_open(&self) -> bool {
            true
        }
        fn stream_features(&self) -> Vec<Element> {
            vec![Element::new("ver", "urn:xmpp:features:rosterver")]
        }
        fn auth_blocked(&self, _account: Option<&str>) -> bool {
            self.blocked
        }
        fn auth_failed(&self, account: Option<&str>) {
            self.failed.borrow_mut().push(account.map(str::to_string));
        }
        fn auth_result(&self, mechanism: &'static str, ok: bool) {
            self.results.borrow_mut().push((mechanism, ok));
        }

        fn session_limit_reached(&self, jid: &Jid) -> bool {
            jid.resource() == Some("one-too-many")
        }
    }

    type M<'a> = C2sMachine<&'a Test>;

    fn header(to: &str) -> Input<Reply> {
        Input::Header(StreamHeader {
            default_ns: ns::CLIENT.into(),
            prefixes: Vec::new(),
            attrs: vec![("to".into(), to.into()), ("version".into(), "1.0".into())],
        })
    }

    fn el(name: &str, ns: &str) -> Input<Reply> {
        Input::Element(Element::new(name, ns))
    }

    fn auth(mechanism: &str, initial: &[u8]) -> Input<Reply> {
        Input::Element(sasl::auth(mechanism, initial))
    }

    fn plain(user: &str, password: &str) -> Input<Reply> {
        auth("PLAIN", format!("\0{user}\0{password}").as_bytes())
    }

    fn iq_set(payload: Element) -> Input<Reply> {
        Input::Element(
            Element::new("iq", ns::CLIENT)
                .with_attr("type", "set")
                .with_attr("id", "1")
                .with_child(payload),
        )
    }

    fn bind_iq(resource: &str) -> Input<Reply> {
        iq_set(
            Element::new("bind", ns::BIND)
                .with_child(Element::new("resource", ns::BIND).with_text(resource)),
        )
    }

    /// The elements the actions send.
    fn sent(actions: &Actions) -> Vec<&Element> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(el) => Some(el),
                _ => None,
            })
            .collect()
    }

    fn failure_of(actions: &Actions) -> Option<(SEC, &str)> {
        actions.iter().find_map(|a| match a {
            Action::Fail(e) => Some((e.condition, e.text.as_deref().unwrap_or(""))),
            _ => None,
        })
    }

    fn sasl_condition(actions: &Actions) -> Option<&str> {
        sent(actions)
            .into_iter()
            .find(|e| e.is("failure", ns::SASL))
            .and_then(|f| f.children().next())
            .map(Element::name)
    }

    fn mechanisms(actions: &Actions) -> Vec<String> {
        sent(actions)
            .into_iter()
            .find_map(|f| f.get_child("mechanisms", ns::SASL))
            .map(|m| m.children().map(|c| c.text().to_string()).collect())
            .unwrap_or_default()
    }

    /// A machine on a TLS stream (no channel binding) with its features sent.
    fn at_auth(policy: &Test) -> M<'_> {
        let mut m = C2sMachine::new(policy, true, false, None);
        m.handle(header(DOMAIN));
        m
    }

    fn credentials(password: &str) -> Input<Reply> {
        Input::Reply(Reply::Credentials(Ok(Some(
            Credentials::derive(password, 64).unwrap(),
        ))))
    }

    /// A machine authenticated as alice, with the bind features sent.
    fn at_bind(policy: &Test) -> M<'_> {
        let mut m = at_auth(policy);
        m.handle(plain("alice", "secret"));
        let a = m.handle(credentials("secret"));
        assert!(a.contains(&Action::Restart), "{a:?}");
        m.handle(header(DOMAIN));
        m
    }

    #[test]
    fn starttls_is_required_first() {
        let policy = Test::default();
        let mut m = C2sMachine::new(&policy, false, true, None);
        let a = m.handle(header(DOMAIN));
        assert!(matches!(&a[0], Action::SendHeader { .. }));
        let features = sent(&a)[0];
        assert!(features
            .get_child("starttls", ns::TLS)
            .is_some_and(|s| s.has_child("required", ns::TLS)));
        assert!(mechanisms(&a).is_empty());

        // <auth/> before TLS: encryption-required, then the stream ends.
        let a = m.handle(plain("alice", "secret"));
        assert_eq!(sasl_condition(&a), Some("encryption-required"));
        assert_eq!(
            failure_of(&a),
            Some((SEC::PolicyViolation, "STARTTLS is required"))
        );

        let mut m = C2sMachine::new(&policy, false, true, None);
        m.handle(header(DOMAIN));
        let a = m.handle(el("starttls", ns::TLS));
        assert_eq!(a.len(), 2);
        assert!(sent(&a)[0].is("proceed", ns::TLS));
        assert_eq!(a[1], Action::StartTls);
        // The handshake restarts the stream: a header is due, with the SASL features.
        assert!(m
            .handle(Input::TlsDone {
                channel_binding: Some(vec![1; 32])
            })
            .is_empty());
        let a = m.handle(header(DOMAIN));
        let mechs = mechanisms(&a);
        assert!(mechs.contains(&"SCRAM-SHA-256-PLUS".to_string()));
        assert!(mechs.contains(&"PLAIN".to_string()));
        assert!(sent(&a)[0].has_child("sasl-channel-binding", ns::SASL_CB));
        assert!(!sent(&a)[0].has_child("starttls", ns::TLS));
    }

    /// Without channel binding no -PLUS is offered (or accepted); on a plain stream with
    /// encryption optional, STARTTLS is offered and neither PLAIN nor registration.
    #[test]
    fn features_follow_the_stream() {
        let policy = Test::default();
        let mut m = at_auth(&policy);
        let a = C2sMachine::new(&policy, true, false, None).handle(header(DOMAIN));
        assert!(!mechanisms(&a).iter().any(|n| n.ends_with("-PLUS")));
        assert!(sent(&a)[0].has_child("register", ns::REGISTER_FEATURE));
        let a = m.handle(auth("SCRAM-SHA-1-PLUS", b"p=tls-exporter,,n=alice,r=abc"));
        assert_eq!(sasl_condition(&a), Some("invalid-mechanism"));

        let policy = Test {
            config: C2sConfig {
                require_encryption: false,
                ..C2sConfig::default()
            },
            ..Test::default()
        };
        let mut m = C2sMachine::new(&policy, false, true, None);
        let a = m.handle(header(DOMAIN));
        let f = sent(&a)[0];
        assert!(f
            .get_child("starttls", ns::TLS)
            .is_some_and(|s| s.children().next().is_none()));
        assert!(!mechanisms(&a).contains(&"PLAIN".to_string()));
        assert!(!f.has_child("register", ns::REGISTER_FEATURE));
        let a = m.handle(plain("alice", "secret"));
        assert_eq!(sasl_condition(&a), Some("encryption-required"));
        // STARTTLS is still possible after a failed attempt.
        assert_eq!(m.handle(el("starttls", ns::TLS))[1], Action::StartTls);

        // A framing that cannot start TLS (WebSocket, BOSH) never offers it, and is refused
        // when it is not secure while encryption is required.
        let mut m = C2sMachine::new(&policy, false, false, None);
        let a = m.handle(header(DOMAIN));
        assert!(!sent(&a)[0].has_child("starttls", ns::TLS));
        let strict = Test::default();
        let a = C2sMachine::new(&strict, false, false, None).handle(header(DOMAIN));
        assert_eq!(
            failure_of(&a),
            Some((
                SEC::PolicyViolation,
                "encryption is required and this transport cannot start TLS"
            ))
        );
    }

    #[test]
    fn elements_out_of_order_end_the_stream() {
        let policy = Test::default();
        let mut m = C2sMachine::new(&policy, true, false, None);
        let a = m.handle(el("auth", ns::SASL));
        assert_eq!(
            failure_of(&a),
            Some((SEC::BadFormat, "expected a stream header"))
        );
        let mut m = at_auth(&policy);
        let a = m.handle(header(DOMAIN));
        assert_eq!(
            failure_of(&a),
            Some((SEC::BadFormat, "unexpected stream header"))
        );
        let mut m = at_auth(&policy);
        let a = m.handle(Input::Element(Element::new("message", ns::CLIENT)));
        assert_eq!(
            failure_of(&a),
            Some((SEC::NotAuthorized, "authenticate first"))
        );
        let a = C2sMachine::new(&policy, true, false, None).handle(header("other.test"));
        assert!(matches!(&a[0], Action::SendHeader { .. }));
        assert_eq!(failure_of(&a).map(|f| f.0), Some(SEC::HostUnknown));
    }

    /// Each failure is counted; the last allowed one ends the stream. Those that tested a
    /// password count against the rate limits, with the account once known.
    #[test]
    fn failures_are_counted() {
        let policy = Test::default();
        let mut m = at_auth(&policy);
        let a = m.handle(auth("DIGEST-MD5", b""));
        assert_eq!(sasl_condition(&a), Some("invalid-mechanism"));
        assert_eq!(failure_of(&a), None);

        let a = m.handle(plain("Alice", "wrong"));
        assert_eq!(
            a,
            vec![Action::Request(Request::Credentials("alice".into()))]
        );
        let a = m.handle(credentials("secret"));
        assert_eq!(sasl_condition(&a), Some("not-authorized"));
        assert_eq!(failure_of(&a), None);

        // An abort during a challenge counts as an attempt, not against the limits.
        let a = m.handle(auth("SCRAM-SHA-1", b""));
        assert_eq!(sent(&a)[0].text(), "=");
        let a = m.handle(el("abort", ns::SASL));
        assert_eq!(sasl_condition(&a), Some("aborted"));
        assert_eq!(
            failure_of(&a),
            Some((SEC::PolicyViolation, "too many authentication attempts"))
        );
        assert_eq!(
            *policy.failed.borrow(),
            vec![None, Some("alice".to_string())]
        );
        assert_eq!(
            *policy.results.borrow(),
            vec![("other", false), ("PLAIN", false), ("SCRAM-SHA-1", false)]
        );
    }

    #[test]
    fn limits_and_lookup_errors_fail_temporarily() {
        let policy = Test {
            blocked: true,
            ..Test::default()
        };
        let mut m = at_auth(&policy);
        let a = m.handle(plain("alice", "secret"));
        assert_eq!(sasl_condition(&a), Some("temporary-auth-failure"));
        assert!(policy.failed.borrow().is_empty());

        let policy = Test::default();
        let mut m = at_auth(&policy);
        m.handle(plain("alice", "secret"));
        let a = m.handle(Input::Reply(Reply::Credentials(Err(()))));
        assert_eq!(sasl_condition(&a), Some("temporary-auth-failure"));
        // Bad base64 in the initial response.
        let a = m.handle(Input::Element(
            Element::new("auth", ns::SASL)
                .with_attr("mechanism", "PLAIN")
                .with_text("***"),
        ));
        assert_eq!(sasl_condition(&a), Some("incorrect-encoding"));
    }

    #[test]
    fn success_restarts_and_authzid_must_be_the_user() {
        let policy = Test::default();
        let mut m = at_auth(&policy);
        m.handle(auth("PLAIN", b"bob@example.test\0alice\0secret"));
        let a = m.handle(credentials("secret"));
        assert_eq!(sasl_condition(&a), Some("invalid-authzid"));

        let mut m = at_auth(&policy);
        m.handle(auth("PLAIN", b"alice@example.test\0alice\0secret"));
        let a = m.handle(credentials("secret"));
        assert!(sent(&a)[0].is("success", ns::SASL));
        assert_eq!(a[1], Action::Restart);
        // What follows the success is a new stream: an element first is an error.
        let a = m.handle(el("iq", ns::CLIENT));
        assert_eq!(failure_of(&a).map(|f| f.0), Some(SEC::BadFormat));
        assert_eq!(*policy.results.borrow().last().unwrap(), ("PLAIN", true));
    }

    #[test]
    fn registration_before_authentication() {
        let policy = Test::default();
        let mut m = at_auth(&policy);
        let a = m.handle(iq_set(Element::new("query", ns::REGISTER)));
        assert!(matches!(&a[..], [Action::Request(Request::Register(_))]));
        let a = m.handle(Input::Reply(Reply::Registered(None)));
        assert!(a.is_empty());
        let a = m.handle(iq_set(Element::new("query", "jabber:iq:roster")));
        assert_eq!(
            failure_of(&a),
            Some((SEC::NotAuthorized, "authenticate first"))
        );

        let policy = Test {
            config: C2sConfig {
                require_encryption: false,
                ..C2sConfig::default()
            },
            ..Test::default()
        };
        let mut m = C2sMachine::new(&policy, false, true, None);
        m.handle(header(DOMAIN));
        let a = m.handle(iq_set(Element::new("query", ns::REGISTER)));
        let reply = sent(&a)[0];
        assert_eq!(reply.attr("type"), Some("error"));
        assert!(reply.to_string().contains("policy-violation"));
    }

    #[test]
    fn bind_after_authentication() {
        let policy = Test::default();
        let mut m = at_bind(&policy);
        // §3 of XEP-0198: <enable/> only after binding; <r/> is ignored; CSI too.
        let a = m.handle(el("enable", sm::NS));
        assert!(sent(&a)[0].is("failed", sm::NS));
        assert!(m.handle(el("r", sm::NS)).is_empty());
        assert!(m.handle(el("active", csi::NS)).is_empty());
        let a = m.handle(iq_set(Element::new("session", ns::SESSION)));
        assert_eq!(sent(&a)[0].attr("type"), Some("result"));
        let a = m.handle(iq_set(Element::new("query", "jabber:iq:roster")));
        assert!(sent(&a)[0].to_string().contains("not-authorized"));
        // A resource that is no resourcepart.
        let a = m.handle(bind_iq("\u{7}"));
        assert!(sent(&a)[0].to_string().contains("bad-request"));
        // One resource past the account's session limit.
        let a = m.handle(bind_iq("one-too-many"));
        assert!(sent(&a)[0].to_string().contains("resource-constraint"));
        assert_eq!(a.len(), 1);

        let a = m.handle(bind_iq("phone"));
        let jid: Jid = "alice@example.test/phone".parse().unwrap();
        assert!(sent(&a)[0].to_string().contains("alice@example.test/phone"));
        assert_eq!(a[1], Action::Done(Done::Bound(jid)));

        let mut m = at_bind(&policy);
        let a = m.handle(Input::Element(Element::new("message", ns::CLIENT)));
        assert_eq!(
            failure_of(&a),
            Some((SEC::NotAuthorized, "bind a resource first"))
        );
    }

    #[test]
    fn resume_is_handed_to_the_driver() {
        let policy = Test::default();
        let mut m = at_bind(&policy);
        let a = m.handle(el("resume", sm::NS));
        assert!(sent(&a)[0].to_string().contains("bad-request"));
        let a = m.handle(Input::Element(
            Element::new("resume", sm::NS)
                .with_attr("previd", "abc")
                .with_attr("h", "3"),
        ));
        assert_eq!(
            a,
            vec![Action::Done(Done::Resume {
                user: BareJid::parse("alice@example.test").unwrap(),
                previd: "abc".into(),
                h: Some(3),
            })]
        );
        // Refused: the client may still bind on the same machine.
        assert!(matches!(
            m.handle(bind_iq("x"))[1],
            Action::Done(Done::Bound(_))
        ));

        let policy = Test {
            config: C2sConfig {
                stream_management: false,
                ..C2sConfig::default()
            },
            ..Test::default()
        };
        let mut m = at_bind(&policy);
        let a = m.handle(el("resume", sm::NS));
        assert!(sent(&a)[0].to_string().contains("feature-not-implemented"));
    }

    /// A full SCRAM-SHA-256-PLUS exchange with channel binding, through the challenges.
    #[test]
    fn scram_plus_with_channel_binding() {
        let policy = Test::default();
        let cb = vec![7u8; 32];
        let mut m = C2sMachine::new(&policy, true, false, Some(cb.clone()));
        m.handle(header(DOMAIN));
        let mut client =
            rookery_sasl::ScramClient::new(Mechanism::ScramSha256Plus, "alice", "secret", Some(cb));
        let a = m.handle(auth("SCRAM-SHA-256-PLUS", &client.client_first()));
        assert_eq!(
            a,
            vec![Action::Request(Request::Credentials("alice".into()))]
        );
        let a = m.handle(credentials("secret"));
        let challenge = B64.decode(sent(&a)[0].text()).unwrap();
        let last = client.handle_challenge(&challenge).unwrap();
        let a = m.handle(Input::Element(
            Element::new("response", ns::SASL).with_text(B64.encode(last)),
        ));
        let success = sent(&a)[0];
        assert!(success.is("success", ns::SASL));
        client
            .verify_success(&B64.decode(success.text()).unwrap())
            .unwrap();
    }
}
