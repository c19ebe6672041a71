//! The client's negotiation machine (RFC 6120 §4.3): header, STARTTLS (§5), SASL (§6) with
//! channel binding (RFC 9266, XEP-0440), in-band registration before authentication
//! (XEP-0077), then resource binding (§7) or XEP-0198 resumption (§5). Beside RFC 6120
//! SASL, XEP-0388 SASL2 runs as the same steps with the same mechanisms (and XEP-0474
//! downgrade protection in SCRAM); its success needs no stream restart and may carry
//! XEP-0386 Bind2 ([`crate::bind2`]) and XEP-0198 resumption inline. Sans-IO on the
//! shared steps of `rookery_stream::negotiation`; `negotiate` drives it over a connection.
//!
//! States: `Header` → (`TlsRequired` → TLS →) `Header` → `Auth` ⇄ `Sasl` → restart →
//! `Header` → `Bind` → done. With SASL2: `Auth` ⇄ `Sasl` → done (Bind2), → `Resuming`
//! (inline resumption; if refused, Bind2 or `Bind` follow) or → `Bind` (no Bind2). TLS first unless `require_encryption` is off, then STARTTLS is
//! offered beside the mechanisms and may interrupt `Auth`. PLAIN and registration carry the
//! password itself and are refused on an unencrypted stream unless
//! `allow_unencrypted_plain`. Every failed attempt counts against `max_auth_attempts`; those
//! that tested a password also against the rate limits (through [`Policy`]).

use rookery_jid::{BareJid, Jid};
use rookery_proto::{
    ns, IqType, Stanza, StanzaError, StanzaErrorCondition, StanzaKind, StreamError,
    StreamErrorCondition as SEC,
};
use rookery_sasl::{ChannelBindings, Credentials, Mechanism, ServerSession};
use rookery_stream::negotiation::receiving::{self, Answer};
use rookery_stream::negotiation::sasl::{self, Exchange, Progress};
use rookery_stream::negotiation::sasl2::{self, UserAgent};
use rookery_stream::negotiation::{self, Action, Input, Machine};
use rookery_xml::{Element, Limits, StreamHeader};

use rookery_sasl::ht::{self, HtMechanism};

use crate::{bind2, csi, fast, sm, C2sConfig};

/// What the machine needs from the server, beside its configuration: asked synchronously,
/// so tests answer with plain values.
pub trait Policy {
    /// The primary domain: the host of a stream whose header names none.
    fn domain(&self) -> &str;
    /// Whether `domain` is one of the hosts we serve (virtual hosting).
    fn serves(&self, domain: &str) -> bool;
    /// The listener settings.
    fn config(&self) -> &C2sConfig;
    /// Whether in-band registration is open on `host`.
    fn registration_open(&self, host: &str) -> bool;
    /// Stream features the modules declare (e.g. XEP-0237 roster versioning).
    fn stream_features(&self) -> Vec<Element>;
    /// Whether an attempt (for `account`, its bare JID, once known) must be refused now
    /// (rate limits).
    fn auth_blocked(&self, account: Option<&str>) -> bool;
    /// Records a failure that tested a password.
    fn auth_failed(&self, account: Option<&str>);
    /// Counts an attempt's outcome (metrics), by mechanism.
    fn auth_result(&self, mechanism: &'static str, ok: bool);
    /// Whether binding `jid` would take its account past `[c2s] max_sessions_per_account`.
    fn session_limit_reached(&self, jid: &Jid) -> bool;
    /// Whether XEP-0484 FAST tokens are offered (a token store and a lifetime).
    fn fast_enabled(&self) -> bool;
    /// The time now, in Unix seconds (token expiries).
    fn now(&self) -> i64;
}

/// Work the driver does for the machine.
#[derive(Debug, PartialEq)]
pub enum Request {
    /// The stored credentials of this (normalized) localpart.
    Credentials(String),
    /// Serve this XEP-0077 registration IQ.
    Register(Stanza),
    /// The FAST tokens of this device of this (normalized) localpart.
    FastTokens {
        /// The localpart.
        local: String,
        /// The XEP-0388 user-agent id.
        device: String,
    },
    /// Record a use of a FAST token (refused when `count` does not rise).
    FastUse {
        /// The localpart.
        local: String,
        /// The device.
        device: String,
        /// Which token.
        used: fast::Used,
        /// Its key (the one checked: it must still be `used` when the use is recorded).
        key: Vec<u8>,
        /// The client's count.
        count: i64,
    },
    /// End this device's FAST tokens: it authenticated with the one of key `key` and asked
    /// to invalidate it (answered with [`Reply::FastUsed`]).
    FastInvalidate {
        /// The localpart.
        local: String,
        /// The device.
        device: String,
        /// The key of the token it authenticated with.
        key: Vec<u8>,
    },
    /// Store a new FAST token's key for this device.
    FastIssue {
        /// The localpart.
        local: String,
        /// The device.
        device: String,
        /// The token's key.
        key: Vec<u8>,
        /// Its expiry (Unix seconds).
        expires: i64,
        /// The mechanism it was asked for, the only one it may be used with.
        mechanism: HtMechanism,
    },
}

/// The driver's answers.
#[derive(Debug)]
pub enum Reply {
    /// The credentials (`None`: no such account; `Err`: the lookup failed).
    Credentials(Result<Option<Credentials>, ()>),
    /// The reply to the registration IQ, to send.
    Registered(Option<Stanza>),
    /// The device's FAST tokens (`Err`: the lookup failed).
    FastTokens(Result<Option<fast::DeviceTokens>, ()>),
    /// Whether the use was recorded or the tokens ended (`false`: a replayed count, or the
    /// token was replaced meanwhile).
    FastUsed(Result<bool, ()>),
    /// Whether the new token was stored.
    FastIssued(Result<(), ()>),
}

/// How negotiation ended.
#[derive(Debug, PartialEq)]
pub enum Done {
    /// A resource was bound (the result was sent): register the session as this JID.
    Bound(Jid),
    /// SASL2 succeeded with a Bind2 request: register the session as this JID, enable what
    /// the request asks for inline and send its success with the `<bound/>` that says how.
    Bound2 {
        /// The full JID (already in the success).
        jid: Jid,
        /// The rest of the request.
        inline: Box<Inline>,
    },
    /// The client asks to resume a session (XEP-0198 §5); the connection goes to it. If it
    /// refuses: for RFC 6120, send its `<failed/>` and drive the machine on (the client may
    /// bind instead); inline in SASL2, hand the `<failed/>` to
    /// [`C2sMachine::resume_refused`] and drive the machine on (it answers the rest of the
    /// request).
    Resume {
        /// The authenticated user (only its own sessions may be resumed).
        user: BareJid,
        /// The SM-ID.
        previd: String,
        /// The client's `h`.
        h: u32,
        /// Set when the request came inline in SASL2: `<resumed/>` then goes out inside a
        /// SASL2 `<success/>` with this mechanism data.
        sasl2: Option<Sasl2Resumed>,
    },
}

/// A Bind2 request for the session to complete (XEP-0386 §4.2).
#[derive(Debug, PartialEq)]
pub struct Inline {
    /// The SASL2 `<success/>`, to which the session adds `<bound/>`.
    pub success: Element,
    /// What to enable inline.
    pub bind: bind2::Request,
    /// The bound stream's features, sent after `<success/>` (XEP-0388 §2.6.1).
    pub features: Element,
}

/// What the session needs to answer a resumption inline in SASL2 (XEP-0198 §5 with
/// XEP-0388 §4).
#[derive(Debug, Clone, PartialEq)]
pub struct Sasl2Resumed {
    /// The mechanism's additional data for `<success/>`.
    pub additional_data: Option<Vec<u8>>,
    /// What other inline features answered (a FAST `<token/>`), before `<resumed/>`.
    /// Nothing follows `<success/>`: XEP-0198 "SASL2 and BIND2 interaction" says the
    /// resumed stream is re-established with it and stream features MUST NOT be sent.
    pub answers: Vec<Element>,
}

/// What a SASL2 `<authenticate/>` asked for beside authentication.
#[derive(Debug, Clone, Default)]
struct Sasl2Request {
    user_agent: Option<UserAgent>,
    bind: Option<bind2::Request>,
    /// XEP-0198 `<resume/>`, as sent.
    resume: Option<Element>,
    /// XEP-0484: a token asked for, or used.
    fast: fast::Request,
}

impl Sasl2Request {
    /// Reads the inline requests of an `<authenticate/>` on a stream with or without channel
    /// binding; unknown ones are ignored.
    fn parse(auth: &sasl2::Authenticate, channel_binding: bool) -> Result<Self, &'static str> {
        let mut r = Sasl2Request {
            user_agent: auth.user_agent.clone(),
            ..Sasl2Request::default()
        };
        for el in &auth.inline {
            let repeated = if bind2::is_bind(el) {
                r.bind.replace(bind2::parse(el)?).is_some()
            } else if el.is("resume", sm::NS) {
                r.resume.replace(el.clone()).is_some()
            } else {
                // FAST's elements (it checks their repeats); anything else is ignored.
                fast::parse_into(el, &mut r.fast, channel_binding)?;
                false
            };
            if repeated {
                return Err("malformed-request");
            }
        }
        Ok(r)
    }

    fn device_id(&self) -> Option<&str> {
        self.user_agent.as_ref().and_then(|u| u.id.as_deref())
    }
}

/// A SASL2 success on its way: waiting for a FAST token to be stored, or for the outcome of
/// an inline resumption.
#[derive(Debug)]
struct Pending {
    additional_data: Option<Vec<u8>>,
    request: Sasl2Request,
    /// What the inline features answered so far, for `<success/>`.
    answers: Vec<Element>,
    /// The token being stored.
    issued: Option<Box<fast::Issued>>,
    /// The session refused the resumption (its `<failed/>` is in `answers`).
    refused: bool,
}

/// A FAST authentication (XEP-0484 §3.3) between its request and its outcome.
#[derive(Debug)]
struct FastAttempt {
    mechanism: HtMechanism,
    local: String,
    device: String,
    /// The client's count, if it sent one.
    count: Option<i64>,
    initiator_hash: Vec<u8>,
    request: Sasl2Request,
    /// The token that matched, once the tokens were read: which, its key, the count to use.
    matched: Option<(fast::Used, Vec<u8>, i64)>,
}

type Actions = Vec<Action<Request, Done>>;

/// One SASL attempt.
struct Attempt {
    exchange: Exchange<ServerSession>,
    /// The mechanism, as a metrics label.
    mechanism: &'static str,
    /// The account it concerns, once the mechanism named it.
    account: Option<String>,
    /// Set for a SASL2 attempt: what else it asked for.
    sasl2: Option<Box<Sasl2Request>>,
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
    /// Authenticated: binding was offered (or SASL2 succeeded without Bind2).
    Bind,
    /// SASL2 succeeded with an inline resumption, which is the driver's.
    Resuming(Box<Pending>),
    /// SASL2 succeeded; a new FAST token is being stored.
    Issuing(Box<Pending>),
    /// A FAST token authentication waits for the store.
    Fast(Box<FastAttempt>),
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
    /// What -PLUS mechanisms can bind to (XEP-0440 types); `tls-exporter` alone serves
    /// FAST `HT-*-EXPR`.
    channel_binding: ChannelBindings,
    /// The hosted domain this stream is to (its header's `to`, else the primary): the
    /// accounts it authenticates against and the domain of the JID it binds.
    host: String,
    user: Option<BareJid>,
    /// The `from` of the client's stream header before authentication, as sent: XEP-0388
    /// fails a SASL2 authentication whose non-empty authzid does not match it.
    stream_from: Option<String>,
    attempts: u32,
}

impl<P: Policy> C2sMachine<P> {
    /// A machine for a stream that is `secure` or not, that `can_start_tls` or not, with
    /// that channel binding.
    pub fn new(
        policy: P,
        secure: bool,
        can_start_tls: bool,
        channel_binding: ChannelBindings,
    ) -> Self {
        C2sMachine {
            host: policy.domain().to_string(),
            policy,
            phase: Phase::Header,
            secure,
            can_start_tls,
            channel_binding,
            user: None,
            stream_from: None,
            attempts: 0,
        }
    }

    /// Whether a mechanism or request that carries the password itself (PLAIN, in-band
    /// registration) is allowed on this stream.
    fn password_in_clear_allowed(&self) -> bool {
        self.secure || self.policy.config().allow_unencrypted_plain
    }

    fn header(&mut self, header: &StreamHeader) -> Actions {
        // RFC 6120 §4.7.2: the host the client named (a domain JID we serve); a stream
        // restarted after authentication stays with the host it authenticated on.
        let named = match header.attr("to") {
            None => Some(self.host.clone()),
            Some(to) => Jid::parse(to)
                .ok()
                .map(|j| j.as_str().to_string())
                .filter(|d| self.policy.serves(d)),
        };
        let host_ok = match named {
            Some(d) if self.user.is_none() => {
                self.host = d;
                self.stream_from = header.attr("from").map(str::to_string);
                true
            }
            Some(d) => d == self.host,
            None => false,
        };
        let answer = Answer {
            from: host_ok.then(|| self.host.clone()),
            to: header.attr("from").map(str::to_string),
            host_ok,
        };
        let (mut actions, _, ok) = receiving::answer_header(header, ns::CLIENT, answer);
        if !ok {
            return actions;
        }
        // XEP-0388 "SASL mechanism negotiation": a `from` naming an account of another
        // domain than the one asked for (or no JID at all) is `invalid-from` (RFC 6120
        // §4.9.3.9); the mechanisms offered are those of the account it names.
        if let Some(from) = self.stream_from.as_deref().filter(|_| self.user.is_none()) {
            if Jid::parse(from).map_or(true, |j| j.domain() != self.host) {
                actions.push(fail(
                    SEC::InvalidFrom,
                    "the stream's from is not an address of the domain asked for",
                ));
                return actions;
            }
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
            actions.push(Action::Limits(self.bound_limits()));
            actions.push(Action::Send(self.features_bound()));
            self.phase = Phase::Bind;
        }
        actions
    }

    /// The parser limits of an authenticated stream.
    fn bound_limits(&self) -> Limits {
        Limits {
            max_stanza_bytes: self.policy.config().max_stanza_bytes,
            ..Limits::C2S
        }
    }

    /// The mechanisms offered on this stream, strongest first: -PLUS only with channel
    /// binding, PLAIN only where the password may cross.
    fn offered_mechanisms(&self) -> Vec<&'static str> {
        let clear_password_ok = self.password_in_clear_allowed();
        let cb = !self.channel_binding.is_empty();
        Mechanism::ALL
            .into_iter()
            .filter(|&m| (cb || !m.is_plus()) && (clear_password_ok || m != Mechanism::Plain))
            .map(Mechanism::name)
            .collect()
    }

    /// The channel-binding types offered (XEP-0440): `tls-exporter` on TLS 1.3,
    /// `tls-server-end-point` wherever our certificate is known (TLS 1.2 too).
    fn offered_channel_bindings(&self) -> Vec<&'static str> {
        self.channel_binding.types()
    }

    /// Whether FAST's channel-bound `HT-*-EXPR` can be offered: it binds to `tls-exporter`.
    fn has_exporter(&self) -> bool {
        self.channel_binding.exporter.is_some()
    }

    /// Features before authentication. On an unencrypted stream (only reached with
    /// `require_encryption = false`) STARTTLS is offered without `<required/>` where the
    /// transport can start it (never on WebSocket or BOSH), and PLAIN
    /// and registration only when `allow_unencrypted_plain` says so. SASL2 offers the same
    /// mechanisms as RFC 6120 SASL, with Bind2 and XEP-0198 resumption inline — on secure
    /// streams only: XEP-0388 "SASL2 MUST only be ... offered by Servers after TLS
    /// negotiation", and a FAST token (XEP-0484) seen once in the clear can be replayed.
    fn features_sasl(&self) -> Element {
        let clear_password_ok = self.password_in_clear_allowed();
        let names = self.offered_mechanisms();
        let mut f = rookery_proto::stream::features();
        if !self.secure && self.can_start_tls {
            f.push_child(receiving::starttls_feature(false));
        }
        f.push_child(sasl::mechanisms(names.iter().copied()));
        if self.secure {
            f.push_child(self.sasl2_feature(&names));
        }
        let cbs = self.offered_channel_bindings();
        if !cbs.is_empty() {
            // XEP-0440: tell the client which binding types the -PLUS mechanisms take.
            let mut list = Element::new("sasl-channel-binding", ns::SASL_CB);
            for t in cbs {
                list.push_child(Element::new("channel-binding", ns::SASL_CB).with_attr("type", t));
            }
            f.push_child(list);
        }
        if self.policy.registration_open(&self.host) && clear_password_ok {
            f.push_child(Element::new("register", ns::REGISTER_FEATURE));
        }
        f
    }

    /// The SASL2 `<authentication/>` feature with its inline features.
    fn sasl2_feature(&self, mechanisms: &[&'static str]) -> Element {
        let sm_on = self.policy.config().stream_management;
        let mut inline = vec![bind2::feature(sm_on)];
        if sm_on {
            inline.push(Element::new("sm", sm::NS));
        }
        if self.policy.fast_enabled() {
            inline.push(fast::feature(self.has_exporter()));
        }
        sasl2::feature(mechanisms.iter().copied(), inline)
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

    /// The features that follow a SASL2 `<success/>` that bound the stream with Bind2
    /// (XEP-0388 §2.6.1): what may come after binding, not binding itself. (The session
    /// leaves out `<sm/>` once stream management is on.) None follow an inline resumption.
    fn features_once_bound(&self) -> Element {
        let mut features = self.features_bound();
        features.remove_children("bind", ns::BIND);
        features.remove_children("session", ns::SESSION);
        features
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
        } else if sasl2::is_authenticate(el) {
            actions.push(Action::Send(sasl2::failure("encryption-required", None)));
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
        if sasl2::is_authenticate(&el) {
            return self.authenticate(&el);
        }
        if !el.is("auth", ns::SASL) {
            return vec![fail(SEC::NotAuthorized, "authenticate first")];
        }
        let mechanism = sasl::mechanism(&el).and_then(Mechanism::from_name);
        let label = mechanism.map_or("other", Mechanism::name);
        let initial = sasl::initial_response(&el);
        match self.start_mechanism(mechanism, initial) {
            Ok((server, step)) => {
                let attempt = Attempt {
                    exchange: Exchange::new(server),
                    mechanism: label,
                    account: None,
                    sasl2: None,
                };
                self.progress(attempt, Progress::from_step(step))
            }
            Err(condition) => self.failed(label, None, condition, false),
        }
    }

    /// A SASL2 `<authenticate/>` (XEP-0388 §2.2): the same mechanisms as `<auth/>`, with
    /// XEP-0474 downgrade protection, and the inline requests kept for the success.
    fn authenticate(&mut self, el: &Element) -> Actions {
        if !self.secure {
            // Not offered on this stream (`features_sasl`).
            return self.failed("other", None, "encryption-required", true);
        }
        let cb = self.has_exporter();
        let parsed = sasl2::parse_authenticate(el)
            .and_then(|auth| Sasl2Request::parse(&auth, cb).map(|r| (auth, r)));
        let (auth, request) = match parsed {
            Ok(p) => p,
            Err(condition) => return self.failed("other", None, condition, true),
        };
        if let Some(ht) = HtMechanism::from_name(&auth.mechanism) {
            return self.fast_authenticate(ht, auth.initial_response, request);
        }
        let mechanism = Mechanism::from_name(&auth.mechanism);
        let label = mechanism.map_or("other", Mechanism::name);
        match self.start_mechanism(mechanism, Ok(auth.initial_response)) {
            Ok((mut server, step)) => {
                let offered = self.offered_mechanisms();
                server.protect_downgrade(&offered, &self.offered_channel_bindings());
                let exchange = Exchange::in_ns(server, sasl2::NS);
                let progress = exchange.first(step);
                let attempt = Attempt {
                    exchange,
                    mechanism: label,
                    account: None,
                    sasl2: Some(Box::new(request)),
                };
                self.progress(attempt, progress)
            }
            Err(condition) => self.failed(label, None, condition, true),
        }
    }

    /// Authentication with a FAST token (XEP-0484 §3.3): the HT message names the account;
    /// its tokens for the device are looked up.
    fn fast_authenticate(
        &mut self,
        mechanism: HtMechanism,
        initial: Option<Vec<u8>>,
        request: Sasl2Request,
    ) -> Actions {
        let label = mechanism.name();
        if !self.policy.fast_enabled() || (mechanism.is_bound() && !self.has_exporter()) {
            return self.failed(label, None, "invalid-mechanism", true);
        }
        if self.policy.auth_blocked(None) {
            return self.failed(label, None, "temporary-auth-failure", true);
        }
        let count = request.fast.fast.flatten();
        let parsed = (|| {
            // A token belongs to a device. A `count`, when the client sends one, must rise
            // (§3.3.1); without one (xmpp.js sends none) the message is only ever seen
            // inside TLS, and the token rotates whenever the client asks.
            let device = request.device_id().ok_or("malformed-request")?.to_string();
            let msg =
                ht::parse(initial.as_deref().unwrap_or_default()).ok_or("malformed-request")?;
            let local = rookery_jid::normalize_local(&msg.authcid).map_err(|_| "not-authorized")?;
            Ok((device, msg.initiator_hash, local))
        })();
        let (device, initiator_hash, local) = match parsed {
            Ok(p) => p,
            Err(condition) => return self.failed(label, None, condition, true),
        };
        if self.policy.auth_blocked(Some(&self.account_key(&local))) {
            return self.failed(label, Some(local), "temporary-auth-failure", true);
        }
        let lookup = Request::FastTokens {
            local: local.clone(),
            device: device.clone(),
        };
        self.phase = Phase::Fast(Box::new(FastAttempt {
            mechanism,
            local,
            device,
            count,
            initiator_hash,
            request,
            matched: None,
        }));
        vec![Action::Request(lookup)]
    }

    /// The channel-binding data an HT mechanism covers (`-EXPR`: `tls-exporter`).
    fn ht_cb_data(&self, mechanism: HtMechanism) -> Vec<u8> {
        match (&self.channel_binding.exporter, mechanism.is_bound()) {
            (Some(cb), true) => cb.clone(),
            _ => Vec::new(),
        }
    }

    /// The store answered a FAST step.
    fn fast_reply(&mut self, mut a: FastAttempt, reply: Reply) -> Actions {
        let label = a.mechanism.name();
        match reply {
            Reply::FastTokens(Ok(Some(tokens))) => {
                let cb = self.ht_cb_data(a.mechanism);
                let now = self.policy.now();
                let checked = fast::check(&tokens, now, a.mechanism, &cb, &a.initiator_hash);
                let (used, token) = match checked {
                    Ok(c) => c,
                    Err(refused) => {
                        return self.failed(label, Some(a.local), refused.condition(), true)
                    }
                };
                let (key, count) = (
                    token.key.clone(),
                    a.count.unwrap_or(token.last_count.saturating_add(1)),
                );
                let record = if a.request.fast.invalidate {
                    Request::FastInvalidate {
                        local: a.local.clone(),
                        device: a.device.clone(),
                        key: key.clone(),
                    }
                } else {
                    Request::FastUse {
                        local: a.local.clone(),
                        device: a.device.clone(),
                        used,
                        key: key.clone(),
                        count,
                    }
                };
                a.matched = Some((used, key, count));
                self.phase = Phase::Fast(Box::new(a));
                vec![Action::Request(record)]
            }
            Reply::FastTokens(Ok(None)) | Reply::FastUsed(Ok(false)) => {
                self.failed(label, Some(a.local), "not-authorized", true)
            }
            Reply::FastUsed(Ok(true)) => {
                let Some((used, key, _)) = a.matched.take() else {
                    return vec![fail(SEC::InternalServerError, "negotiation out of step")];
                };
                let user = match BareJid::new(Some(&a.local), &self.host) {
                    Ok(u) => u,
                    Err(_) => return self.failed(label, Some(a.local), "not-authorized", true),
                };
                self.policy.auth_result(label, true);
                tracing::info!(user = %user, ?used, invalidated = a.request.fast.invalidate, "authenticated with a FAST token");
                if a.request.fast.invalidate {
                    // Logging out: a token asked for beside it would undo that.
                    a.request.fast.request_token = None;
                }
                self.user = Some(user);
                let data = ht::responder(&key, &self.ht_cb_data(a.mechanism));
                self.sasl2_success(Some(data), a.request)
            }
            _ => self.failed(label, Some(a.local), "temporary-auth-failure", true),
        }
    }

    /// Starts the mechanism an `<auth/>` or `<authenticate/>` asked for, with its decoded
    /// initial response, or says why not.
    fn start_mechanism(
        &self,
        mechanism: Option<Mechanism>,
        initial: Result<Option<Vec<u8>>, &'static str>,
    ) -> Result<(ServerSession, rookery_sasl::Step), &'static str> {
        if self.policy.auth_blocked(None) {
            return Err("temporary-auth-failure");
        }
        let mech = mechanism.ok_or("invalid-mechanism")?;
        if mech.is_plus() && self.channel_binding.is_empty() {
            return Err("invalid-mechanism");
        }
        // RFC 6120 §6.5.4: PLAIN was not offered on this unencrypted stream.
        if mech == Mechanism::Plain && !self.password_in_clear_allowed() {
            return Err("encryption-required");
        }
        let initial = initial?.unwrap_or_default();
        let plus_advertised = !self.channel_binding.is_empty();
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
                let key = local.as_deref().map(|l| self.account_key(l));
                if self.policy.auth_blocked(key.as_deref()) {
                    let sasl2 = attempt.sasl2.is_some();
                    return self.failed(attempt.mechanism, local, "temporary-auth-failure", sasl2);
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
            } => match self
                .identity(&username, authzid.as_deref())
                .and_then(|user| self.sasl2_authzid_check(&attempt, authzid.as_deref(), user))
            {
                Ok(user) => {
                    self.policy.auth_result(attempt.mechanism, true);
                    tracing::info!(
                        user = %user,
                        secure = self.secure,
                        sasl2 = attempt.sasl2.is_some(),
                        "authenticated"
                    );
                    self.user = Some(user);
                    match attempt.sasl2 {
                        Some(request) => self.sasl2_success(additional_data, *request),
                        None => {
                            self.phase = Phase::Header;
                            vec![
                                Action::Send(sasl::success(additional_data)),
                                Action::Restart,
                            ]
                        }
                    }
                }
                Err(condition) => {
                    let sasl2 = attempt.sasl2.is_some();
                    self.failed(attempt.mechanism, attempt.account, condition, sasl2)
                }
            },
            Progress::Failure(condition) => {
                let sasl2 = attempt.sasl2.is_some();
                self.failed(attempt.mechanism, attempt.account, condition, sasl2)
            }
        }
    }

    /// SASL2 succeeded (XEP-0388 §2.6): no stream restart, so the wider limits now; then a
    /// FAST token if one was asked for, an inline resumption (handed to the driver) or Bind2
    /// or, without either, `<success/>` with the bare JID and RFC 6120 binding to follow.
    fn sasl2_success(
        &mut self,
        additional_data: Option<Vec<u8>>,
        mut request: Sasl2Request,
    ) -> Actions {
        if self.bind2_at_session_limit(&request) {
            if request.resume.is_none() {
                return self.bind2_refused();
            }
            // A resumption adds no session and may still succeed, but a token stored now
            // could precede a Bind2 failure (XEP-0388: no inline feature is processed in a
            // failed authentication), so none is issued.
            request.fast.request_token = None;
        }
        let mut actions = vec![Action::Limits(self.bound_limits())];
        let pending = Pending {
            additional_data,
            request,
            answers: Vec::new(),
            issued: None,
            refused: false,
        };
        actions.extend(self.sasl2_token(pending));
        actions
    }

    /// XEP-0484 §3.1: a new token for the device, stored before the success carries it. A
    /// request without a device id (or with FAST off) gets none.
    fn sasl2_token(&mut self, mut p: Pending) -> Actions {
        let local = self
            .user
            .as_ref()
            .and_then(|u| u.local())
            .map(str::to_string);
        let device = p.request.device_id().map(str::to_string);
        let wanted = p.request.fast.request_token.take();
        if let (Some(mechanism), true, Some(local), Some(device)) =
            (wanted, self.policy.fast_enabled(), local, device)
        {
            let lifetime = self.policy.config().fast_token_lifetime_secs;
            let issued = fast::issue(self.policy.now(), lifetime);
            let store = Request::FastIssue {
                local,
                device,
                key: issued.key.clone(),
                expires: issued.expires,
                mechanism,
            };
            p.issued = Some(Box::new(issued));
            self.phase = Phase::Issuing(Box::new(p));
            return vec![Action::Request(store)];
        }
        self.sasl2_resume(p)
    }

    /// An inline resumption, if asked for, goes to the driver; else Bind2.
    fn sasl2_resume(&mut self, mut p: Pending) -> Actions {
        if let Some(resume) = p.request.resume.take() {
            match self.resume_request(&resume) {
                Ok((user, previd, h)) => {
                    let sasl2 = Some(Sasl2Resumed {
                        additional_data: p.additional_data.clone(),
                        answers: p.answers.clone(),
                    });
                    self.phase = Phase::Resuming(Box::new(p));
                    return vec![Action::Done(Done::Resume {
                        user,
                        previd,
                        h,
                        sasl2,
                    })];
                }
                Err(failed) => p.answers.push(failed),
            }
        }
        self.sasl2_bind(p)
    }

    /// The inline resumption was refused with `failed` (XEP-0198 `<failed/>`): the next
    /// drive of the machine answers the rest of the SASL2 request, `<failed/>` inside its
    /// `<success/>`.
    pub fn resume_refused(&mut self, failed: Element) {
        if let Phase::Resuming(pending) = &mut self.phase {
            pending.answers.push(failed);
            pending.refused = true;
        }
    }

    /// After SASL2 success (and a refused inline resumption): Bind2 if asked for (done, for
    /// the driver to bind), else `<success/>` with the bare JID and the answers so far.
    fn sasl2_bind(&mut self, p: Pending) -> Actions {
        let Some(user) = self.user.clone() else {
            return vec![fail(SEC::InternalServerError, "negotiation out of step")];
        };
        self.phase = Phase::Bind;
        let device_id = p.request.device_id().map(str::to_string);
        let Pending {
            additional_data,
            request,
            answers,
            ..
        } = p;
        let Some(bind) = request.bind else {
            // XEP-0388 §2.6.1: `<success/>` is followed by the authenticated stream's
            // features at once, with no restart: the client binds next.
            return vec![
                Action::Send(sasl2::success(
                    additional_data.as_deref(),
                    user.as_str(),
                    answers,
                )),
                Action::Send(self.features_bound()),
            ];
        };
        let Some(jid) = bind2::jid(&user, bind.tag.as_deref(), device_id.as_deref()) else {
            return vec![fail(SEC::InternalServerError, "no resource could be made")];
        };
        if self.policy.session_limit_reached(&jid) {
            // Reached meanwhile (or after a refused resumption).
            return self.bind2_refused();
        }
        let success = sasl2::success(additional_data.as_deref(), jid.as_str(), answers);
        let inline = Box::new(Inline {
            success,
            bind,
            features: self.features_once_bound(),
        });
        vec![Action::Done(Done::Bound2 { jid, inline })]
    }

    /// Whether the Bind2 request (if any) would take the account past
    /// `[c2s] max_sessions_per_account`.
    fn bind2_at_session_limit(&self, request: &Sasl2Request) -> bool {
        let (Some(user), Some(bind)) = (&self.user, &request.bind) else {
            return false;
        };
        bind2::jid(user, bind.tag.as_deref(), request.device_id())
            .is_some_and(|jid| self.policy.session_limit_reached(&jid))
    }

    /// Bind2 at the account's session limit: nothing is bound. The credentials were right,
    /// so the condition is not a credential one (`not-authorized` makes a client ask for
    /// the password, or drop its FAST token, XEP-0484) but `temporary-auth-failure` with the
    /// reason, as RFC 6120 §7.6.2.1 answers legacy binding with `resource-constraint`. The
    /// stream is unauthenticated again; the client may retry later.
    fn bind2_refused(&mut self) -> Actions {
        self.user = None;
        tracing::info!("Bind2 refused: the account is at its session limit");
        self.refuse(sasl2::failure(
            "temporary-auth-failure",
            Some("too many sessions for this account"),
        ))
    }

    /// The user a successful exchange authenticated. Strict authzid: a client may only act
    /// as itself.
    fn identity(&self, username: &str, authzid: Option<&str>) -> Result<BareJid, &'static str> {
        let local = rookery_jid::normalize_local(username).map_err(|_| "not-authorized")?;
        let user = BareJid::new(Some(&local), &self.host).map_err(|_| "not-authorized")?;
        if let Some(a) = authzid.filter(|a| !a.is_empty()) {
            if BareJid::parse(a).ok().as_ref() != Some(&user) {
                return Err("invalid-authzid");
            }
        }
        Ok(user)
    }

    /// XEP-0388 "Initiation": in SASL2, a non-empty authzid must match the stream header's
    /// `from` when there is one (compared as bare JIDs, normalized), else the authentication
    /// fails — here with `invalid-authzid`, the RFC 6120 condition for an authzid that may
    /// not be used.
    fn sasl2_authzid_check(
        &self,
        attempt: &Attempt,
        authzid: Option<&str>,
        user: BareJid,
    ) -> Result<BareJid, &'static str> {
        let (Some(_), Some(_), Some(from)) = (
            &attempt.sasl2,
            authzid.filter(|a| !a.is_empty()),
            &self.stream_from,
        ) else {
            return Ok(user);
        };
        // The authzid is `user` by now (`identity`).
        match Jid::parse(from) {
            Ok(f) if f.to_bare() == user => Ok(user),
            _ => Err("invalid-authzid"),
        }
    }

    /// The account an attempt names, as the rate limits count it: its bare JID, so the same
    /// username on two hosts is two accounts.
    fn account_key(&self, local: &str) -> String {
        format!("{local}@{}", self.host)
    }

    /// A failed attempt: `<failure/>` (of SASL2 if `sasl2`), and the stream ends after
    /// `max_auth_attempts`.
    fn failed(
        &mut self,
        mechanism: &'static str,
        account: Option<String>,
        condition: &'static str,
        sasl2: bool,
    ) -> Actions {
        self.policy.auth_result(mechanism, false);
        // Only failures that tested a password count against the limits (an expired FAST
        // token was the client's own, proved).
        if !matches!(
            condition,
            "aborted" | "temporary-auth-failure" | "encryption-required" | "credentials-expired"
        ) {
            let key = account.as_deref().map(|l| self.account_key(l));
            self.policy.auth_failed(key.as_deref());
        }
        tracing::info!(condition, account = ?account, "authentication failed");
        let failure = if sasl2 {
            sasl2::failure(condition, None)
        } else {
            sasl::failure(condition)
        };
        self.refuse(failure)
    }

    /// Sends an attempt's `failure`: back to offering authentication, and the stream ends
    /// after `max_auth_attempts`.
    fn refuse(&mut self, failure: Element) -> Actions {
        let mut actions = vec![Action::Send(failure)];
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
            Err(e) => return e.reply(&self.host).map(Action::Send).into_iter().collect(),
        };
        let to_server = stanza.to().is_none_or(|t| t.as_str() == self.host);
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
                return match e.reply(&self.host) {
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
            if !self.to_server_or_account(&stanza) {
                // RFC 6120 §7.1: a stanza to any other entity before binding is not
                // processed, and the stream closes with <not-authorized/>.
                return vec![fail(SEC::NotAuthorized, "bind a resource first")];
            }
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

    /// Whether `stanza` is addressed to the server itself or to the authenticated account:
    /// the only entities a client may address before binding (RFC 6120 §7.1).
    fn to_server_or_account(&self, stanza: &Stanza) -> bool {
        stanza.to().is_none_or(|to| {
            to.as_str() == self.host
                || self
                    .user
                    .as_ref()
                    .is_some_and(|u| to.as_str() == u.as_str())
        })
    }

    fn resume(&mut self, el: &Element) -> Actions {
        match self.resume_request(el) {
            Ok((user, previd, h)) => vec![Action::Done(Done::Resume {
                user,
                previd,
                h,
                sasl2: None,
            })],
            Err(failed) => vec![Action::Send(failed)],
        }
    }

    /// What a `<resume/>` asks for (user, SM-ID, `h`), or the `<failed/>` that answers it.
    fn resume_request(&self, el: &Element) -> Result<(BareJid, String, u32), Element> {
        if !self.policy.config().stream_management {
            return Err(sm::failed("feature-not-implemented", None));
        }
        match (sm::parse_h(el), el.attr("previd"), &self.user) {
            (Ok(h), Some(previd), Some(user)) => Ok((user.clone(), previd.to_string(), h)),
            _ => Err(sm::failed("bad-request", None)),
        }
    }

    fn reply(&mut self, reply: Reply) -> Actions {
        match (std::mem::replace(&mut self.phase, Phase::Auth), reply) {
            (Phase::Registering, Reply::Registered(r)) => send_stanza(r),
            (Phase::Fast(a), r @ (Reply::FastTokens(_) | Reply::FastUsed(_))) => {
                self.fast_reply(*a, r)
            }
            (Phase::Issuing(mut p), Reply::FastIssued(stored)) => {
                match (stored, p.issued.take()) {
                    (Ok(()), Some(issued)) => p.answers.push(fast::token_element(&issued)),
                    _ => tracing::warn!("a FAST token could not be stored; none is sent"),
                }
                self.sasl2_resume(*p)
            }
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

    /// Taken on again after an inline resumption was refused: the rest of the SASL2
    /// request is answered.
    fn start(&mut self) -> Actions {
        if !matches!(&self.phase, Phase::Resuming(p) if p.refused) {
            return Vec::new();
        }
        match std::mem::replace(&mut self.phase, Phase::Bind) {
            Phase::Resuming(p) => self.sasl2_bind(*p),
            _ => Vec::new(),
        }
    }

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
                Phase::Sasl(ref attempt)
                    if attempt.exchange.ns() == sasl2::NS
                        && !(el.is("response", sasl2::NS) || el.is("abort", sasl2::NS)) =>
                {
                    // XEP-0388 §2.4: "Servers MUST disconnect Clients immediately if any
                    // other traffic is received" while authenticating.
                    vec![fail(
                        SEC::PolicyViolation,
                        "only <response/> or <abort/> while authenticating (SASL2)",
                    )]
                }
                Phase::Sasl(mut attempt) => {
                    let p = attempt.exchange.element(&el);
                    self.progress(*attempt, p)
                }
                Phase::Bind => {
                    self.phase = Phase::Bind;
                    self.bind(el)
                }
                Phase::Header
                | Phase::Tls
                | Phase::Registering
                | Phase::Resuming(_)
                | Phase::Issuing(_)
                | Phase::Fast(_) => {
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
    /// A second hosted domain (virtual hosting), closed to registration.
    const SECOND: &str = "second.test";

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
        fn serves(&self, domain: &str) -> bool {
            domain == DOMAIN || domain == SECOND
        }
        fn registration_open(&self, host: &str) -> bool {
            host == DOMAIN
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

        fn fast_enabled(&self) -> bool {
            true
        }

        fn now(&self) -> i64 {
            1_000
        }

        fn session_limit_reached(&self, jid: &Jid) -> bool {
            jid.resource()
                .is_some_and(|r| r.starts_with("one-too-many"))
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
        let mut m = C2sMachine::new(policy, true, false, ChannelBindings::default());
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
        let mut m = C2sMachine::new(&policy, false, true, ChannelBindings::default());
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

        let mut m = C2sMachine::new(&policy, false, true, ChannelBindings::default());
        m.handle(header(DOMAIN));
        let a = m.handle(el("starttls", ns::TLS));
        assert_eq!(a.len(), 2);
        assert!(sent(&a)[0].is("proceed", ns::TLS));
        assert_eq!(a[1], Action::StartTls);
        // The handshake restarts the stream: a header is due, with the SASL features.
        assert!(m
            .handle(Input::TlsDone {
                channel_binding: ChannelBindings::exporter(Some(vec![1; 32]))
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
        let a = C2sMachine::new(&policy, true, false, ChannelBindings::default())
            .handle(header(DOMAIN));
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
        let mut m = C2sMachine::new(&policy, false, true, ChannelBindings::default());
        let a = m.handle(header(DOMAIN));
        let f = sent(&a)[0];
        assert!(f
            .get_child("starttls", ns::TLS)
            .is_some_and(|s| s.children().next().is_none()));
        assert!(!mechanisms(&a).contains(&"PLAIN".to_string()));
        assert!(!f.has_child("register", ns::REGISTER_FEATURE));
        // Nor SASL2 (XEP-0388 Security Considerations), and with it FAST.
        assert!(!f.has_child("authentication", SASL2), "{f}");
        let a = m.handle(authenticate("SCRAM-SHA-256", b"n,,n=alice,r=abc", vec![]));
        assert_eq!(sasl2_condition(&a), Some("encryption-required"));
        let a = m.handle(plain("alice", "secret"));
        assert_eq!(sasl_condition(&a), Some("encryption-required"));
        // STARTTLS is still possible after a failed attempt.
        assert_eq!(m.handle(el("starttls", ns::TLS))[1], Action::StartTls);

        // A framing that cannot start TLS (WebSocket, BOSH) never offers it, and is refused
        // when it is not secure while encryption is required.
        let mut m = C2sMachine::new(&policy, false, false, ChannelBindings::default());
        let a = m.handle(header(DOMAIN));
        assert!(!sent(&a)[0].has_child("starttls", ns::TLS));
        let strict = Test::default();
        let a = C2sMachine::new(&strict, false, false, ChannelBindings::default())
            .handle(header(DOMAIN));
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
        let mut m = C2sMachine::new(&policy, true, false, ChannelBindings::default());
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
        let a = C2sMachine::new(&policy, true, false, ChannelBindings::default())
            .handle(header("other.test"));
        assert!(matches!(&a[0], Action::SendHeader { .. }));
        assert_eq!(failure_of(&a).map(|f| f.0), Some(SEC::HostUnknown));
    }

    /// A stream to a second hosted domain speaks as it, offers that host's registration
    /// policy, authenticates and binds on it, and cannot switch hosts after authentication.
    #[test]
    fn a_stream_to_another_host_binds_on_that_host() {
        let policy = Test::default();
        let mut m = C2sMachine::new(&policy, true, false, ChannelBindings::default());
        let a = m.handle(header(SECOND));
        assert!(matches!(&a[0], Action::SendHeader { from: Some(f), .. } if f == SECOND));
        let features = sent(&a)[0];
        assert!(!features.has_child("register", ns::REGISTER_FEATURE));
        assert!(failure_of(&a).is_none());
        m.handle(plain("alice", "secret"));
        let a = m.handle(credentials("secret"));
        assert!(a.contains(&Action::Restart), "{a:?}");
        let a = C2sMachine::new(&policy, true, false, ChannelBindings::default())
            .handle(header(DOMAIN));
        assert!(matches!(&a[0], Action::SendHeader { from: Some(f), .. } if f == DOMAIN));

        // After authentication on SECOND, a restarted stream to the primary is refused.
        let mut other = C2sMachine::new(&policy, true, false, ChannelBindings::default());
        other.handle(header(SECOND));
        other.handle(plain("alice", "secret"));
        other.handle(credentials("secret"));
        let a = other.handle(header(DOMAIN));
        assert_eq!(failure_of(&a).map(|f| f.0), Some(SEC::HostUnknown));

        m.handle(header(SECOND));
        let a = m.handle(bind_iq("phone"));
        let jid: Jid = "alice@second.test/phone".parse().unwrap();
        assert_eq!(a[1], Action::Done(Done::Bound(jid)));
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
            vec![None, Some("alice@example.test".to_string())]
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

    /// XEP-0388 "Initiation": in SASL2 a non-empty authzid must match the header's `from`.
    #[test]
    fn sasl2_authzid_must_match_the_stream_from() {
        let policy = Test::default();
        let with_from = |from: &str| {
            let mut m = C2sMachine::new(&policy, true, false, ChannelBindings::default());
            m.handle(Input::Header(StreamHeader {
                default_ns: ns::CLIENT.into(),
                prefixes: Vec::new(),
                attrs: vec![
                    ("to".into(), DOMAIN.into()),
                    ("from".into(), from.into()),
                    ("version".into(), "1.0".into()),
                ],
            }));
            m
        };
        for (from, authzid, ok) in [
            ("bob@example.test", "alice@example.test", false),
            ("Alice@example.test/phone", "alice@example.test", true),
            ("bob@example.test", "", true),
        ] {
            let mut m = with_from(from);
            let msg = format!("{authzid}\0alice\0secret");
            m.handle(authenticate("PLAIN", msg.as_bytes(), vec![]));
            let a = m.handle(credentials("secret"));
            let want = (!ok).then_some("invalid-authzid");
            assert_eq!(sasl2_condition(&a), want, "{from} {authzid}");
        }
        // RFC 6120 SASL is unchanged.
        let mut m = with_from("bob@example.test");
        m.handle(auth("PLAIN", b"alice@example.test\0alice\0secret"));
        let a = m.handle(credentials("secret"));
        assert!(sent(&a)[0].is("success", ns::SASL));
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
        let mut m = C2sMachine::new(&policy, false, true, ChannelBindings::default());
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
        // RFC 6120 §7.1: an IQ to the account is refused as a stanza; to anyone else the
        // stream ends.
        let query = || Element::new("query", "jabber:iq:private");
        for (to, ends) in [("alice@example.test", false), ("bob@example.test", true)] {
            let mut m = at_bind(&policy);
            let iq = Element::new("iq", ns::CLIENT)
                .with_attr("type", "set")
                .with_attr("id", "1")
                .with_attr("to", to)
                .with_child(query());
            let a = m.handle(Input::Element(iq));
            assert_eq!(failure_of(&a).is_some(), ends, "{to}: {a:?}");
        }
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
                h: 3,
                sasl2: None,
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
        let mut m = C2sMachine::new(
            &policy,
            true,
            false,
            ChannelBindings::exporter(Some(cb.clone())),
        );
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

    // ---- SASL2 (XEP-0388), Bind2 (XEP-0386), inline resumption ---------------------------

    const SASL2: &str = sasl2::NS;

    /// A SASL2 `<authenticate/>` with an initial response and `extra` children.
    fn authenticate(mechanism: &str, initial: &[u8], extra: Vec<Element>) -> Input<Reply> {
        let mut a = Element::new("authenticate", SASL2)
            .with_attr("mechanism", mechanism)
            .with_child(Element::new("initial-response", SASL2).with_text(B64.encode(initial)))
            .with_child(
                Element::new("user-agent", SASL2)
                    .with_attr("id", "dev-1")
                    .with_child(Element::new("software", SASL2).with_text("Test")),
            );
        for e in extra {
            a.push_child(e);
        }
        Input::Element(a)
    }

    fn sasl2_condition(actions: &Actions) -> Option<&str> {
        sent(actions)
            .into_iter()
            .find(|e| e.is("failure", SASL2))
            .and_then(|f| f.children().next())
            .map(Element::name)
    }

    fn bind2(children: Vec<Element>) -> Element {
        let mut b = Element::new("bind", bind2::NS);
        for c in children {
            b.push_child(c);
        }
        b
    }

    /// SASL2 is offered beside SASL with the same mechanisms and Bind2, SM inline.
    #[test]
    fn sasl2_feature_mirrors_sasl() {
        let policy = Test::default();
        let a = C2sMachine::new(
            &policy,
            true,
            false,
            ChannelBindings::exporter(Some(vec![1; 32])),
        )
        .handle(header(DOMAIN));
        let f = sent(&a)[0];
        let auth = f.get_child("authentication", SASL2).unwrap();
        let names: Vec<String> = auth
            .children()
            .filter(|c| c.name() == "mechanism")
            .map(|c| c.text())
            .collect();
        assert_eq!(names, mechanisms(&a));
        let inline = auth.get_child("inline", SASL2).unwrap();
        assert!(inline.has_child("bind", bind2::NS));
        assert!(inline.has_child("sm", sm::NS));
        assert!(f.has_child("sasl-channel-binding", ns::SASL_CB));
    }

    /// PLAIN over SASL2 without Bind2: success with the bare JID, wider limits, no
    /// restart; then RFC 6120 binding on the same stream.
    #[test]
    fn sasl2_plain_then_rfc6120_bind() {
        let policy = Test::default();
        let mut m = at_auth(&policy);
        let a = m.handle(authenticate(
            "PLAIN",
            b"alice@example.test\0alice\0secret",
            vec![],
        ));
        assert_eq!(
            a,
            vec![Action::Request(Request::Credentials("alice".into()))]
        );
        let a = m.handle(credentials("secret"));
        assert!(matches!(a[0], Action::Limits(_)), "{a:?}");
        let success = sent(&a)[0];
        assert!(success.is("success", SASL2));
        assert_eq!(
            success
                .child_text("authorization-identifier", SASL2)
                .as_deref(),
            Some("alice@example.test")
        );
        assert!(!a.contains(&Action::Restart));
        assert!(matches!(
            m.handle(bind_iq("phone"))[1],
            Action::Done(Done::Bound(_))
        ));
    }

    /// SCRAM over SASL2 with challenges in the SASL2 namespace, XEP-0474 `d=` in the
    /// server-first, and Bind2: done with a resource derived from the device and the tag.
    #[test]
    fn sasl2_scram_with_downgrade_protection_and_bind2() {
        let policy = Test::default();
        let mut m = at_auth(&policy);
        let mut client =
            rookery_sasl::ScramClient::new(Mechanism::ScramSha256, "alice", "secret", None);
        let bind = bind2(vec![
            Element::new("tag", bind2::NS).with_text("Test"),
            Element::new("enable", ns::CARBONS),
        ]);
        m.handle(authenticate(
            "SCRAM-SHA-256",
            &client.client_first(),
            vec![bind],
        ));
        let a = m.handle(credentials("secret"));
        let challenge = sent(&a)[0];
        assert!(challenge.is("challenge", SASL2), "{challenge}");
        let first = B64.decode(challenge.text()).unwrap();
        let offered = mechanisms(
            &C2sMachine::new(&policy, true, false, ChannelBindings::default())
                .handle(header(DOMAIN)),
        );
        let refs: Vec<&str> = offered.iter().map(String::as_str).collect();
        let ssdp = rookery_sasl::server::ssdp_string(&refs, &[]);
        let d = B64.encode(rookery_sasl::ScramHash::Sha256.hash(ssdp.as_bytes()));
        assert!(
            String::from_utf8_lossy(&first).ends_with(&format!(",h={d}")),
            "{}",
            String::from_utf8_lossy(&first)
        );
        let last = client.handle_challenge(&first).unwrap();
        let a = m.handle(Input::Element(
            Element::new("response", SASL2).with_text(B64.encode(last)),
        ));
        let Some(Action::Done(Done::Bound2 { jid, inline })) = a.last() else {
            panic!("{a:?}");
        };
        let Inline { success, bind, .. } = &**inline;
        let alice = BareJid::parse("alice@example.test").unwrap();
        assert_eq!(
            Some(jid),
            bind2::jid(&alice, Some("Test"), Some("dev-1")).as_ref()
        );
        assert_eq!(
            success
                .child_text("authorization-identifier", SASL2)
                .as_deref(),
            Some(jid.as_str())
        );
        let data = B64
            .decode(success.child_text("additional-data", SASL2).unwrap())
            .unwrap();
        client.verify_success(&data).unwrap();
        assert!(bind.carbons);
    }

    /// Failures answer in SASL2's namespace with the RFC 6120 condition, and count.
    #[test]
    fn sasl2_failures() {
        let policy = Test {
            config: C2sConfig {
                max_auth_attempts: 10,
                ..C2sConfig::default()
            },
            ..Test::default()
        };
        let mut m = at_auth(&policy);
        m.handle(authenticate("PLAIN", b"\0alice\0wrong", vec![]));
        let a = m.handle(credentials("secret"));
        assert_eq!(sasl2_condition(&a), Some("not-authorized"));
        let a = m.handle(authenticate("DIGEST-MD5", b"x", vec![]));
        assert_eq!(sasl2_condition(&a), Some("invalid-mechanism"));
        let a = m.handle(authenticate(
            "PLAIN",
            b"bob@example.test\0alice\0secret",
            vec![],
        ));
        assert!(sasl2_condition(&a).is_none());
        let a = m.handle(credentials("secret"));
        assert_eq!(sasl2_condition(&a), Some("invalid-authzid"));
        // Malformed: no mechanism, bad base64, a repeated inline request.
        let a = m.handle(Input::Element(Element::new("authenticate", SASL2)));
        assert_eq!(sasl2_condition(&a), Some("malformed-request"));
        let a = m.handle(Input::Element(
            Element::new("authenticate", SASL2)
                .with_attr("mechanism", "PLAIN")
                .with_child(Element::new("initial-response", SASL2).with_text("***")),
        ));
        assert_eq!(sasl2_condition(&a), Some("incorrect-encoding"));
        let a = m.handle(authenticate(
            "PLAIN",
            b"\0alice\0secret",
            vec![bind2(vec![]), bind2(vec![])],
        ));
        assert_eq!(sasl2_condition(&a), Some("malformed-request"));
        // SCRAM without initial response: an empty SASL2 challenge; an RFC 6120 response
        // or an abort in it ends the attempt.
        let a = m.handle(Input::Element(
            Element::new("authenticate", SASL2).with_attr("mechanism", "SCRAM-SHA-1"),
        ));
        assert!(sent(&a)[0].is("challenge", SASL2));
        // XEP-0388 §2.4: anything else while authenticating ends the stream.
        let a = m.handle(Input::Element(
            Element::new("response", ns::SASL).with_text("="),
        ));
        assert_eq!(failure_of(&a).map(|(c, _)| c), Some(SEC::PolicyViolation));
        let mut m = at_auth(&policy);
        let a = m.handle(Input::Element(
            Element::new("authenticate", SASL2).with_attr("mechanism", "SCRAM-SHA-1"),
        ));
        assert!(sent(&a)[0].is("challenge", SASL2));
        let a = m.handle(Input::Element(Element::new("abort", SASL2)));
        assert_eq!(sasl2_condition(&a), Some("aborted"));
        assert_eq!(failure_of(&a), None);
        // Before TLS: encryption-required, in SASL2's namespace.
        let mut m = C2sMachine::new(&policy, false, true, ChannelBindings::default());
        m.handle(header(DOMAIN));
        let a = m.handle(authenticate("PLAIN", b"\0alice\0secret", vec![]));
        assert_eq!(sasl2_condition(&a), Some("encryption-required"));
        assert!(failure_of(&a).is_some());
    }

    /// Bind2 past the account's session limit: `temporary-auth-failure` (not a credential
    /// condition), no token stored, not counted as a password failure; the stream stays.
    #[test]
    fn bind2_session_limit() {
        let policy = Test::default();
        let mut m = at_auth(&policy);
        let bind = bind2(vec![
            Element::new("tag", bind2::NS).with_text("one-too-many")
        ]);
        m.handle(authenticate(
            "PLAIN",
            b"\0alice\0secret",
            vec![bind, request_token()],
        ));
        let a = m.handle(credentials("secret"));
        assert_eq!(sasl2_condition(&a), Some("temporary-auth-failure"));
        assert!(!a.iter().any(|x| matches!(x, Action::Request(_))), "{a:?}");
        assert_eq!(failure_of(&a), None);
        assert!(policy.failed.borrow().is_empty());
        // The stream is unauthenticated again: another attempt may follow.
        m.handle(authenticate("PLAIN", b"\0alice\0secret", vec![]));
        let a = m.handle(credentials("secret"));
        assert!(sent(&a)[0].is("success", SASL2), "{a:?}");
    }

    /// A tag that makes no resourcepart is dropped (XEP-0386 §4.1: a hint, validated).
    #[test]
    fn bind2_unusable_tag_binds_the_default_resource() {
        let policy = Test::default();
        let mut m = at_auth(&policy);
        let bind = bind2(vec![Element::new("tag", bind2::NS).with_text("x\u{378}")]);
        m.handle(authenticate("PLAIN", b"\0alice\0secret", vec![bind]));
        let a = m.handle(credentials("secret"));
        let Some(Action::Done(Done::Bound2 { jid, .. })) = a.last() else {
            panic!("{a:?}");
        };
        assert!(jid.resource().unwrap().starts_with("rookery."), "{jid}");
    }

    /// `<resume/>` inline: handed to the driver with the SASL2 data; refused, the rest of
    /// the request (Bind2) is answered with `<failed/>` inside the success.
    #[test]
    fn sasl2_inline_resume() {
        let policy = Test::default();
        let mut m = at_auth(&policy);
        let resume = Element::new("resume", sm::NS)
            .with_attr("previd", "abc")
            .with_attr("h", "2");
        m.handle(authenticate(
            "PLAIN",
            b"\0alice\0secret",
            vec![resume, bind2(vec![])],
        ));
        let a = m.handle(credentials("secret"));
        let Some(Action::Done(Done::Resume {
            user,
            previd,
            h: 2,
            sasl2: Some(resumed),
        })) = a.last()
        else {
            panic!("{a:?}");
        };
        assert_eq!(
            (user.as_str(), previd.as_str()),
            ("alice@example.test", "abc")
        );
        assert!(resumed.additional_data.is_none() && resumed.answers.is_empty());
        // Nothing may come while the driver resumes.
        assert!(m.start().is_empty());
        m.resume_refused(sm::failed("item-not-found", None));
        let a = m.start();
        let Some(Action::Done(Done::Bound2 { inline, .. })) = a.last() else {
            panic!("{a:?}");
        };
        assert!(
            inline.success.has_child("failed", sm::NS),
            "{}",
            inline.success
        );

        // Without Bind2, a refused resumption is a success with the bare JID and <failed/>;
        // a malformed <resume/> is answered at once.
        let mut m = at_auth(&policy);
        let bad = Element::new("resume", sm::NS);
        m.handle(authenticate("PLAIN", b"\0alice\0secret", vec![bad]));
        let a = m.handle(credentials("secret"));
        let success = sent(&a)[0];
        assert!(success.is("success", SASL2));
        assert!(success.has_child("failed", sm::NS));
        assert_eq!(
            success
                .child_text("authorization-identifier", SASL2)
                .as_deref(),
            Some("alice@example.test")
        );
    }

    // ---- FAST (XEP-0484) -----------------------------------------------------------------

    fn request_token() -> Element {
        Element::new("request-token", fast::NS).with_attr("mechanism", "HT-SHA-256-NONE")
    }

    fn fast_count(count: i64) -> Element {
        Element::new("fast", fast::NS).with_attr("count", count.to_string())
    }

    /// A token request beside PLAIN: the key is stored, then the token goes in the success.
    #[test]
    fn fast_token_is_issued_with_the_success() {
        let policy = Test::default();
        let features = C2sMachine::new(&policy, true, false, ChannelBindings::default())
            .handle(header(DOMAIN));
        let inline = sent(&features)[0]
            .get_child("authentication", SASL2)
            .and_then(|a| a.get_child("inline", SASL2))
            .unwrap();
        let mechs: Vec<String> = inline
            .get_child("fast", fast::NS)
            .unwrap()
            .children()
            .map(|c| c.text())
            .collect();
        assert_eq!(mechs, ["HT-SHA-256-NONE"]);

        let mut m = at_auth(&policy);
        m.handle(authenticate(
            "PLAIN",
            b"\0alice\0secret",
            vec![request_token()],
        ));
        let a = m.handle(credentials("secret"));
        let Some(Action::Request(Request::FastIssue {
            local,
            device,
            expires,
            ..
        })) = a.last()
        else {
            panic!("{a:?}");
        };
        assert_eq!((local.as_str(), device.as_str()), ("alice", "dev-1"));
        assert_eq!(*expires, 1_000 + 14 * 24 * 3600);
        let a = m.handle(Input::Reply(Reply::FastIssued(Ok(()))));
        let success = sent(&a)[0];
        let token = success.get_child("token", fast::NS).expect("token");
        assert_eq!(token.attr("token").map(str::len), Some(72));
        // A failed store: success without a token.
        let mut m = at_auth(&policy);
        m.handle(authenticate(
            "PLAIN",
            b"\0alice\0secret",
            vec![request_token()],
        ));
        m.handle(credentials("secret"));
        let a = m.handle(Input::Reply(Reply::FastIssued(Err(()))));
        assert!(!sent(&a)[0].has_child("token", fast::NS));
    }

    /// A token of the device, the tokens as the store has them: for -NONE, used up to 3.
    fn device_tokens(
        current: &fast::Issued,
        previous: Option<&fast::Issued>,
    ) -> fast::DeviceTokens {
        let stored = |t: &fast::Issued| fast::Token {
            key: t.key.clone(),
            expires: t.expires,
            mechanism: Some(HtMechanism::Sha256None),
            last_count: 3,
        };
        fast::DeviceTokens {
            current: stored(current),
            previous: previous.map(stored),
        }
    }

    fn ht_auth(token: &str, extra: Vec<Element>) -> Input<Reply> {
        authenticate(
            "HT-SHA-256-NONE",
            &ht::client_message("alice", token, b""),
            extra,
        )
    }

    /// One round trip with a token: looked up, its use recorded with the count, success
    /// with the HT answer; a rotation in the same request; the old token still valid as
    /// "previous".
    #[test]
    fn fast_authentication_and_rotation() {
        let policy = Test::default();
        let old = fast::issue(900, 1000);
        let new = fast::issue(950, 1000);
        let mut m = at_auth(&policy);
        let a = m.handle(ht_auth(&new.token, vec![fast_count(4), request_token()]));
        assert_eq!(
            a,
            vec![Action::Request(Request::FastTokens {
                local: "alice".into(),
                device: "dev-1".into()
            })]
        );
        let a = m.handle(Input::Reply(Reply::FastTokens(Ok(Some(device_tokens(
            &new,
            Some(&old),
        ))))));
        assert_eq!(
            a,
            vec![Action::Request(Request::FastUse {
                local: "alice".into(),
                device: "dev-1".into(),
                used: fast::Used::Current,
                key: new.key.clone(),
                count: 4,
            })]
        );
        let a = m.handle(Input::Reply(Reply::FastUsed(Ok(true))));
        assert!(matches!(a[0], Action::Limits(_)));
        assert!(matches!(
            a.last(),
            Some(Action::Request(Request::FastIssue { .. }))
        ));
        let a = m.handle(Input::Reply(Reply::FastIssued(Ok(()))));
        let success = sent(&a)[0];
        assert_eq!(
            success
                .child_text("authorization-identifier", SASL2)
                .as_deref(),
            Some("alice@example.test")
        );
        let data = B64
            .decode(success.child_text("additional-data", SASL2).unwrap())
            .unwrap();
        assert_eq!(data, ht::responder(&new.key, b""));
        assert!(success.has_child("token", fast::NS));
        assert_eq!(
            *policy.results.borrow().last().unwrap(),
            ("HT-SHA-256-NONE", true)
        );

        // The replaced token still authenticates, recorded as the previous one.
        let mut m = at_auth(&policy);
        m.handle(ht_auth(&old.token, vec![fast_count(5)]));
        let a = m.handle(Input::Reply(Reply::FastTokens(Ok(Some(device_tokens(
            &new,
            Some(&old),
        ))))));
        assert!(matches!(
            &a[..],
            [Action::Request(Request::FastUse {
                used: fast::Used::Previous,
                ..
            })]
        ));
    }

    /// A token is stored for the mechanism it was asked for, and a proof with another is
    /// refused (XEP-0484 §3.3); -EXPR is asked for only where it is offered (§3.1).
    #[test]
    fn fast_tokens_keep_their_mechanism() {
        let policy = Test::default();
        let expr =
            Element::new("request-token", fast::NS).with_attr("mechanism", "HT-SHA-256-EXPR");
        let a = at_auth(&policy).handle(authenticate(
            "PLAIN",
            b"\0alice\0secret",
            vec![expr.clone()],
        ));
        assert_eq!(sasl2_condition(&a), Some("invalid-mechanism"));

        let cb = vec![7; 32];
        let bound = || {
            let mut m = C2sMachine::new(
                &policy,
                true,
                false,
                ChannelBindings::exporter(Some(cb.clone())),
            );
            m.handle(header(DOMAIN));
            m
        };
        let mut m = bound();
        m.handle(authenticate("PLAIN", b"\0alice\0secret", vec![expr]));
        let a = m.handle(credentials("secret"));
        assert!(
            matches!(
                a.last(),
                Some(Action::Request(Request::FastIssue {
                    mechanism: HtMechanism::Sha256Expr,
                    ..
                }))
            ),
            "{a:?}"
        );

        let t = fast::issue(900, 1000);
        let tokens = fast::DeviceTokens {
            current: fast::Token {
                key: t.key.clone(),
                expires: t.expires,
                mechanism: Some(HtMechanism::Sha256Expr),
                last_count: 0,
            },
            previous: None,
        };
        let none = ht::client_message("alice", &t.token, b"");
        let mut m = bound();
        m.handle(authenticate("HT-SHA-256-NONE", &none, vec![fast_count(1)]));
        let a = m.handle(Input::Reply(Reply::FastTokens(Ok(Some(tokens.clone())))));
        assert_eq!(sasl2_condition(&a), Some("not-authorized"));
        let bound_proof = ht::client_message("alice", &t.token, &cb);
        let mut m = bound();
        m.handle(authenticate(
            "HT-SHA-256-EXPR",
            &bound_proof,
            vec![fast_count(1)],
        ));
        let a = m.handle(Input::Reply(Reply::FastTokens(Ok(Some(tokens)))));
        assert!(
            matches!(&a[..], [Action::Request(Request::FastUse { count: 1, .. })]),
            "{a:?}"
        );
    }

    #[test]
    fn fast_refusals() {
        let policy = Test {
            config: C2sConfig {
                max_auth_attempts: 20,
                ..C2sConfig::default()
            },
            ..Test::default()
        };
        let t = fast::issue(900, 1000);
        let other = fast::issue(900, 1000);
        let mut m = at_auth(&policy);
        // Not the device's token, no tokens, a replayed count, a lookup that failed.
        for (reply, cond) in [
            (
                Reply::FastTokens(Ok(Some(device_tokens(&other, None)))),
                "not-authorized",
            ),
            (Reply::FastTokens(Ok(None)), "not-authorized"),
            (Reply::FastTokens(Err(())), "temporary-auth-failure"),
        ] {
            m.handle(ht_auth(&t.token, vec![fast_count(9)]));
            let a = m.handle(Input::Reply(reply));
            assert_eq!(sasl2_condition(&a), Some(cond));
        }
        m.handle(ht_auth(&t.token, vec![fast_count(9)]));
        m.handle(Input::Reply(Reply::FastTokens(Ok(Some(device_tokens(
            &t, None,
        ))))));
        let a = m.handle(Input::Reply(Reply::FastUsed(Ok(false))));
        assert_eq!(sasl2_condition(&a), Some("not-authorized"));
        // Expired (XEP-0484 Business Rules): credentials-expired, not counted as a password failure.
        let expired = fast::issue(0, 10);
        m.handle(ht_auth(&expired.token, vec![fast_count(9)]));
        let counted = policy.failed.borrow().len();
        let a = m.handle(Input::Reply(Reply::FastTokens(Ok(Some(device_tokens(
            &expired, None,
        ))))));
        assert_eq!(sasl2_condition(&a), Some("credentials-expired"));
        assert_eq!(policy.failed.borrow().len(), counted);
        // Malformed: a garbage message, no device id.
        let a = m.handle(authenticate(
            "HT-SHA-256-NONE",
            b"junk",
            vec![fast_count(1)],
        ));
        assert_eq!(sasl2_condition(&a), Some("malformed-request"));
        let a = m.handle(Input::Element(
            Element::new("authenticate", SASL2)
                .with_attr("mechanism", "HT-SHA-256-NONE")
                .with_child(fast_count(1)),
        ));
        assert_eq!(sasl2_condition(&a), Some("malformed-request"));
        // -EXPR without channel binding, and an HT mechanism we do not know.
        let a = m.handle(authenticate("HT-SHA-256-EXPR", b"x", vec![]));
        assert_eq!(sasl2_condition(&a), Some("invalid-mechanism"));
        let a = m.handle(authenticate("HT-SHA-256-UNIQ", b"x", vec![]));
        assert_eq!(sasl2_condition(&a), Some("invalid-mechanism"));
    }
}
