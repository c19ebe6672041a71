//! Stream negotiation for clients (RFC 6120 §4.3): STARTTLS, SASL, resource binding.
//!
//! The order is fixed: TLS first (required by default, so no credential ever crosses the wire
//! in the clear), then SASL, then binding. With `[c2s] require_encryption = false` (for
//! measuring unencrypted sessions) STARTTLS is optional and SCRAM may run on the plain
//! stream; PLAIN and in-band registration, which carry the password itself, are refused there
//! with `encryption-required` / `policy-violation` unless `allow_unencrypted_plain` is set
//! too. Each successful step restarts the stream with a
//! fresh parser, so bytes buffered before `<proceed/>` or `<success/>` are never parsed.
//! Until authentication the parser runs with [`Limits::PRE_AUTH`], and the whole negotiation
//! has a deadline, so an unauthenticated socket costs almost nothing.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rookery_core::session::SessionEnd;
use rookery_core::SessionHandle;
use rookery_jid::{BareJid, Jid};
use rookery_proto::{
    ns, IqType, Stanza, StanzaError, StanzaErrorCondition, StanzaKind, StreamError,
    StreamErrorCondition as SEC,
};
use rookery_sasl::Step;
use rookery_sasl::{Mechanism, ServerSession};
use rookery_xml::{Element, Limits};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::{csi, session, sm, C2sContext, Mode};
use rookery_stream::{header, new_stream_id, Conn, ConnError, Transport};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// How negotiation ended.
pub enum Negotiated {
    /// A resource was bound: run the session on this connection.
    Bound(Bound),
    /// The connection resumed an XEP-0198 session and now belongs to that session's task.
    Resumed,
}

/// How a SASL phase ended.
enum Authenticated {
    /// The client authenticated as this user.
    User(BareJid),
    /// The client asked for STARTTLS instead (TLS offered but not required).
    StartTls,
}

/// What the client did after authentication.
enum AfterAuth {
    /// It bound a resource.
    Bound(Bound),
    /// It asked to resume a session (XEP-0198 §5) with this `<resume/>`.
    Resume(Element),
}

/// A bound session, ready for the session loop.
pub struct Bound {
    /// The full JID.
    pub jid: Jid,
    /// The router's handle.
    pub handle: SessionHandle,
    /// The receiving end of the handle.
    pub end: SessionEnd,
}

/// Serves one accepted TCP connection to the end.
///
/// Negotiation (the direct-TLS handshake included) must finish by one deadline,
/// `negotiation_timeout_secs` after accept. When `stopped` reports its listener gone (server
/// shutdown) before that, the stream ends with `system-shutdown`.
///
/// This future is the connection task's for its whole life, as large as its largest state.
/// So the negotiation is boxed in its own function (its state is freed once the session is
/// bound, and none of its locals stay in this future): an idle session's task holds only the
/// session's state (`docs/performance.md`). Not an `async fn`, which would keep its
/// arguments twice (rust-lang/rust#62958); the span is made when the accept loop calls this,
/// where no span is entered, as it was at the task's first poll.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn would keep its arguments twice"
)]
pub fn serve(
    ctx: Arc<C2sContext>,
    tcp: TcpStream,
    peer: SocketAddr,
    mode: Mode,
    stopped: tokio::sync::watch::Receiver<()>,
) -> impl Future<Output = ()> + Send {
    let span = tracing::info_span!("c2s", %peer, jid = tracing::field::Empty);
    async move {
        // Not `if let`: its scrutinee would stay in this future for the session's life.
        let Some((conn, bound)) = Box::pin(establish(&ctx, tcp, peer, mode, stopped)).await else {
            return;
        };
        tracing::Span::current().record("jid", tracing::field::display(&bound.jid));
        session::run(&ctx, conn, bound).await;
    }
    .instrument(span)
}

/// Serves one client connection whose transport is already framed and ready (WebSocket,
/// BOSH): the same negotiation and session as a TCP client, by the same deadline
/// (`negotiation_timeout_secs` from now). `stopped` as for [`serve`].
pub async fn serve_framed(
    ctx: Arc<C2sContext>,
    conn: Conn,
    stopped: tokio::sync::watch::Receiver<()>,
) {
    let deadline = tokio::time::Instant::now()
        + Duration::from_secs(ctx.config.negotiation_timeout_secs.max(1));
    let Some((conn, bound)) = Box::pin(establish_on(&ctx, conn, deadline, stopped)).await else {
        return;
    };
    tracing::Span::current().record("jid", tracing::field::display(&bound.jid));
    session::run(&ctx, conn, bound).await;
}

/// Negotiates the stream up to a bound session; `None` when the connection ended first (it
/// was closed as the reason called for) or resumed another session.
async fn establish(
    ctx: &Arc<C2sContext>,
    tcp: TcpStream,
    peer: SocketAddr,
    mode: Mode,
    stopped: tokio::sync::watch::Receiver<()>,
) -> Option<(Conn, Bound)> {
    tracing::debug!("accepted");
    let deadline = tokio::time::Instant::now()
        + Duration::from_secs(ctx.config.negotiation_timeout_secs.max(1));
    let io = match mode {
        Mode::StartTls => Transport::Plain(tcp),
        Mode::DirectTls => match tokio::time::timeout_at(
            deadline,
            TlsAcceptor::from(ctx.direct_tls.clone()).accept(tcp),
        )
        .await
        {
            Ok(Ok(tls)) => Transport::Tls(Box::new(tls)),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                return None;
            }
            Err(_) => {
                tracing::debug!("TLS handshake timed out");
                return None;
            }
        },
    };
    let conn = Conn::new(io, peer, Limits::PRE_AUTH, ctx.core.domain(), ns::CLIENT);
    establish_on(ctx, conn, deadline, stopped).await
}

/// Negotiates on a connection whose transport is ready, by `deadline`; `None` when the
/// connection ended first (it was closed as the reason called for) or resumed another
/// session. Every transport (TCP, direct TLS, and any other framing of a client stream)
/// negotiates here.
async fn establish_on(
    ctx: &Arc<C2sContext>,
    conn: Conn,
    deadline: tokio::time::Instant,
    mut stopped: tokio::sync::watch::Receiver<()>,
) -> Option<(Conn, Bound)> {
    let acceptor = TlsAcceptor::from(ctx.tls.clone());
    let mut holder = Some(conn);
    let result = tokio::select! {
        r = tokio::time::timeout_at(deadline, negotiate(ctx, &acceptor, &mut holder)) => r,
        _ = stopped.changed() => Ok(Err(ConnError::stream(
            SEC::SystemShutdown,
            "the server is shutting down",
        ))),
    };
    let mut conn = holder?;
    match result {
        Ok(Ok(Negotiated::Bound(bound))) => return Some((conn, bound)),
        Ok(Ok(Negotiated::Resumed)) => {}
        Ok(Err(ConnError::Stream(e))) => conn.fail(&e).await,
        Ok(Err(ConnError::StreamClosed)) => conn.close().await,
        Ok(Err(e)) => tracing::debug!(error = %e, "connection ended during negotiation"),
        Err(_) => {
            conn.fail(&StreamError::with_text(
                SEC::ConnectionTimeout,
                "negotiation took too long",
            ))
            .await
        }
    }
    None
}

/// Drives TLS, SASL and bind. `holder` always holds the current connection (the TLS
/// upgrade replaces it), so the caller can still send a stream error after a failure.
async fn negotiate(
    ctx: &Arc<C2sContext>,
    acceptor: &TlsAcceptor,
    holder: &mut Option<Conn>,
) -> Result<Negotiated, ConnError> {
    let mut user: Option<BareJid> = None;
    let mut attempts = 0u32;
    loop {
        let conn = holder
            .as_mut()
            .ok_or_else(|| ConnError::stream(SEC::InternalServerError, "no connection"))?;
        open_stream(ctx, conn).await?;
        if !conn.is_secure() && ctx.config.require_encryption {
            if !conn.can_start_tls() {
                return Err(ConnError::stream(
                    SEC::PolicyViolation,
                    "encryption is required and this transport cannot start TLS",
                ));
            }
            conn.send(&features_before_tls()).await?;
            let el = conn.next_element().await?;
            if !el.is("starttls", ns::TLS) {
                return Err(refuse_before_tls(conn, &el).await);
            }
            start_tls(holder, acceptor).await?;
            continue;
        }
        match &user {
            None => {
                let cb = conn.channel_binding();
                let f = features_sasl(ctx, cb.is_some(), conn.is_secure(), conn.can_start_tls());
                conn.send(&f).await?;
                match authenticate(ctx, conn, cb, &mut attempts).await? {
                    Authenticated::User(u) => {
                        user = Some(u);
                        conn.restart();
                    }
                    Authenticated::StartTls => start_tls(holder, acceptor).await?,
                }
            }
            Some(u) => {
                conn.set_limits(Limits {
                    max_stanza_bytes: ctx.config.max_stanza_bytes,
                    ..Limits::C2S
                });
                conn.send(&features_bound(ctx)).await?;
                let u = u.clone();
                loop {
                    let conn = holder.as_mut().ok_or_else(|| {
                        ConnError::stream(SEC::InternalServerError, "no connection")
                    })?;
                    match bind(ctx, conn, &u).await? {
                        AfterAuth::Bound(b) => return Ok(Negotiated::Bound(b)),
                        AfterAuth::Resume(el) => {
                            if resume(ctx, holder, &u, &el).await? {
                                return Ok(Negotiated::Resumed);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Answers `<starttls/>` with `<proceed/>` and replaces the connection in `holder` by its
/// TLS upgrade (a fresh parser: nothing buffered before the handshake is ever parsed).
async fn start_tls(holder: &mut Option<Conn>, acceptor: &TlsAcceptor) -> Result<(), ConnError> {
    let conn = holder
        .as_mut()
        .ok_or_else(|| ConnError::stream(SEC::InternalServerError, "no connection"))?;
    conn.send(&Element::new("proceed", ns::TLS)).await?;
    let plain = holder
        .take()
        .ok_or_else(|| ConnError::stream(SEC::InternalServerError, "no connection"))?;
    let tls = plain.start_tls(acceptor).await?;
    tracing::debug!("TLS established");
    *holder = Some(tls);
    Ok(())
}

/// Whether a mechanism or request that carries the password itself (PLAIN, in-band
/// registration) is allowed on this stream.
fn password_in_clear_allowed(ctx: &C2sContext, conn: &Conn) -> bool {
    conn.is_secure() || ctx.config.allow_unencrypted_plain
}

/// Reads the client's stream header and answers it (RFC 6120 §4.7).
async fn open_stream(ctx: &C2sContext, conn: &mut Conn) -> Result<(), ConnError> {
    let header = conn.next_header().await?;
    let to = header.attr("to").map(str::to_string);
    let from = header.attr("from").map(str::to_string);
    conn.send_header(from.as_deref(), &new_stream_id()).await?;
    header::check_namespace(&header, ns::CLIENT)?;
    if let Some(to) = to {
        let host = Jid::parse(&to).ok();
        if host.as_ref().map(Jid::as_str) != Some(ctx.core.domain()) {
            return Err(ConnError::stream(
                SEC::HostUnknown,
                "this server does not serve that domain",
            ));
        }
    }
    Ok(header::check_version(&header)?)
}

fn features_before_tls() -> Element {
    rookery_proto::stream::features()
        .with_child(Element::new("starttls", ns::TLS).with_child(Element::new("required", ns::TLS)))
}

/// Anything but `<starttls/>` on a plain stream: TLS is mandatory (RFC 6120 §5.3.1).
async fn refuse_before_tls(conn: &mut Conn, el: &Element) -> ConnError {
    if el.is("auth", ns::SASL) {
        let _ = conn.send(&sasl_failure("encryption-required")).await;
    }
    ConnError::stream(SEC::PolicyViolation, "STARTTLS is required")
}

/// Features before authentication. On an unencrypted stream (only reached with
/// `require_encryption = false`) STARTTLS is offered without `<required/>` where the
/// transport can start it (never on WebSocket or BOSH), and PLAIN and registration only when
/// `allow_unencrypted_plain` says so.
fn features_sasl(
    ctx: &C2sContext,
    channel_binding: bool,
    encrypted: bool,
    starttls: bool,
) -> Element {
    let clear_password_ok = encrypted || ctx.config.allow_unencrypted_plain;
    let mut mechs = Element::new("mechanisms", ns::SASL);
    for m in Mechanism::ALL {
        if (m.is_plus() && !channel_binding) || (m == Mechanism::Plain && !clear_password_ok) {
            continue;
        }
        mechs.push_child(Element::new("mechanism", ns::SASL).with_text(m.name()));
    }
    let mut f = rookery_proto::stream::features();
    if !encrypted && starttls {
        f.push_child(Element::new("starttls", ns::TLS));
    }
    f.push_child(mechs);
    if channel_binding {
        // XEP-0440: tell the client which binding type the -PLUS mechanisms use.
        f.push_child(
            Element::new("sasl-channel-binding", ns::SASL_CB).with_child(
                Element::new("channel-binding", ns::SASL_CB).with_attr("type", "tls-exporter"),
            ),
        );
    }
    if ctx.register.open() && clear_password_ok {
        f.push_child(Element::new("register", ns::REGISTER_FEATURE));
    }
    f
}

fn features_bound(ctx: &C2sContext) -> Element {
    let mut f = rookery_proto::stream::features()
        .with_child(Element::new("bind", ns::BIND))
        .with_child(
            Element::new("session", ns::SESSION).with_child(Element::new("optional", ns::SESSION)),
        );
    // XEP-0198 §2: offered after authentication, where both <enable/> (after binding) and
    // <resume/> (instead of binding) are possible.
    if ctx.config.stream_management {
        f.push_child(Element::new("sm", sm::NS));
    }
    f.push_child(Element::new("csi", csi::NS));
    // Features the modules declare (e.g. XEP-0237 roster versioning).
    for extra in ctx.core.stream_features() {
        f.push_child(extra.clone());
    }
    f
}

fn sasl_failure(condition: &str) -> Element {
    Element::new("failure", ns::SASL).with_child(Element::new(condition, ns::SASL))
}

fn decode(el: &Element) -> Result<Vec<u8>, ()> {
    let text = el.text();
    let t = text.trim();
    if t == "=" {
        return Ok(Vec::new());
    }
    B64.decode(t).map_err(|_| ())
}

/// Runs SASL exchanges until one succeeds (RFC 6120 §6.4), or until the client asks for
/// STARTTLS on an unencrypted stream (offered there, so not yet too late).
async fn authenticate(
    ctx: &C2sContext,
    conn: &mut Conn,
    cb: Option<Vec<u8>>,
    attempts: &mut u32,
) -> Result<Authenticated, ConnError> {
    let ip = conn.peer.ip();
    let plus_advertised = cb.is_some();
    loop {
        let el = conn.next_element().await?;
        if el.is("iq", ns::CLIENT) {
            pre_auth_iq(ctx, conn, el).await?;
            continue;
        }
        if el.is("starttls", ns::TLS) && conn.can_start_tls() {
            return Ok(Authenticated::StartTls);
        }
        if !el.is("auth", ns::SASL) {
            return Err(ConnError::stream(SEC::NotAuthorized, "authenticate first"));
        }
        let mut account: Option<String> = None;
        let outcome =
            sasl_exchange(ctx, conn, &el, cb.clone(), plus_advertised, &mut account).await?;
        rookery_metrics::get().login(mechanism_name(&el), outcome.is_ok());
        match outcome {
            Ok(user) => {
                tracing::info!(user = %user, tls = conn.is_tls(), "authenticated");
                return Ok(Authenticated::User(user));
            }
            Err(condition) => {
                // Only failures that tested a password count against the limits.
                if !matches!(
                    condition,
                    "aborted" | "temporary-auth-failure" | "encryption-required"
                ) {
                    ctx.limiter.failed(ip, account.as_deref());
                }
                tracing::info!(condition, account = ?account, "authentication failed");
                conn.send(&sasl_failure(condition)).await?;
                *attempts += 1;
                if *attempts >= ctx.config.max_auth_attempts.max(1) {
                    return Err(ConnError::stream(
                        SEC::PolicyViolation,
                        "too many authentication attempts",
                    ));
                }
            }
        }
    }
}

/// The mechanism an `<auth/>` asked for, as a metrics label (`other` when not implemented).
fn mechanism_name(auth: &Element) -> &'static str {
    auth.attr("mechanism")
        .and_then(Mechanism::from_name)
        .map_or("other", Mechanism::name)
}

/// One SASL exchange; `Ok(Err(condition))` is a SASL failure the client may retry after.
async fn sasl_exchange(
    ctx: &C2sContext,
    conn: &mut Conn,
    auth: &Element,
    cb: Option<Vec<u8>>,
    plus_advertised: bool,
    account: &mut Option<String>,
) -> Result<Result<BareJid, &'static str>, ConnError> {
    let ip = conn.peer.ip();
    if ctx.limiter.blocked(ip, None) {
        return Ok(Err("temporary-auth-failure"));
    }
    let Some(mech) = auth.attr("mechanism").and_then(Mechanism::from_name) else {
        return Ok(Err("invalid-mechanism"));
    };
    if mech.is_plus() && cb.is_none() {
        return Ok(Err("invalid-mechanism"));
    }
    // RFC 6120 §6.5.4: PLAIN was not offered on this unencrypted stream.
    if mech == Mechanism::Plain && !password_in_clear_allowed(ctx, conn) {
        return Ok(Err("encryption-required"));
    }
    let Ok(initial) = decode(auth) else {
        return Ok(Err("incorrect-encoding"));
    };
    let (mut server, mut step) = ServerSession::start(mech, cb, plus_advertised, &initial);
    loop {
        step = match step {
            Step::Challenge(data) => {
                let text = if data.is_empty() {
                    "=".to_string()
                } else {
                    B64.encode(&data)
                };
                let el = match conn.sasl_challenge(text).await? {
                    Ok(el) => el,
                    Err(condition) => return Ok(Err(condition)),
                };
                match decode(&el) {
                    Ok(data) => server.respond(&data),
                    Err(()) => return Ok(Err("incorrect-encoding")),
                }
            }
            Step::NeedCredentials { username } => {
                let local = rookery_jid::normalize_local(&username).ok();
                *account = local.clone();
                if ctx.limiter.blocked(ip, local.as_deref()) {
                    return Ok(Err("temporary-auth-failure"));
                }
                let creds = match &local {
                    Some(l) => match ctx.core.accounts().credentials(ctx.core.domain(), l).await {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::error!(error = %e, "credential lookup failed");
                            return Ok(Err("temporary-auth-failure"));
                        }
                    },
                    None => None,
                };
                server.provide_credentials(creds.as_ref())
            }
            Step::Success {
                username,
                authzid,
                additional_data,
            } => {
                let Ok(local) = rookery_jid::normalize_local(&username) else {
                    return Ok(Err("not-authorized"));
                };
                let Ok(user) = BareJid::new(Some(&local), ctx.core.domain()) else {
                    return Ok(Err("not-authorized"));
                };
                // Strict authzid: a client may only act as itself.
                if let Some(a) = authzid.filter(|a| !a.is_empty()) {
                    if BareJid::parse(&a).ok().as_ref() != Some(&user) {
                        return Ok(Err("invalid-authzid"));
                    }
                }
                let mut success = Element::new("success", ns::SASL);
                if let Some(d) = additional_data {
                    success.push_text(B64.encode(d));
                }
                conn.send(&success).await?;
                return Ok(Ok(user));
            }
            Step::Failure(f) => return Ok(Err(f.condition())),
        };
    }
}

/// IQs before authentication: only in-band registration (XEP-0077) is served.
async fn pre_auth_iq(ctx: &C2sContext, conn: &mut Conn, el: Element) -> Result<(), ConnError> {
    let stanza = match Stanza::from_element(el) {
        Ok(s) => s,
        Err(e) => {
            if let Some(reply) = e.reply() {
                conn.send(&reply).await?;
            }
            return Ok(());
        }
    };
    let to_server = stanza.to().is_none_or(|t| t.as_str() == ctx.core.domain());
    let is_register = stanza
        .payload()
        .is_some_and(|p| p.is("query", ns::REGISTER));
    if !(to_server && is_register) {
        return Err(ConnError::stream(SEC::NotAuthorized, "authenticate first"));
    }
    if !password_in_clear_allowed(ctx, conn) {
        // The form would carry the password in the clear (and registration was not offered).
        let e = StanzaError::new(StanzaErrorCondition::PolicyViolation)
            .with_text("encryption is required to register");
        if let Some(r) = stanza.error_reply(&e) {
            conn.send(r.element()).await?;
        }
        return Ok(());
    }
    let reply = match ctx
        .register
        .register(&ctx.core, conn.peer.ip(), &stanza)
        .await
    {
        Ok(payload) => Some(stanza.iq_result(payload)),
        Err(e) => stanza.error_reply(&e),
    };
    if let Some(r) = reply {
        conn.send(r.element()).await?;
    }
    Ok(())
}

/// Resource binding (RFC 6120 §7); the legacy `<session/>` (optional) is answered too. A
/// `<resume/>` (XEP-0198 §5) is handed back to the caller.
async fn bind(
    ctx: &Arc<C2sContext>,
    conn: &mut Conn,
    user: &BareJid,
) -> Result<AfterAuth, ConnError> {
    loop {
        let el = conn.next_element().await?;
        if el.ns() == sm::NS {
            match el.name() {
                "resume" => return Ok(AfterAuth::Resume(el)),
                // §3: stream management is enabled after binding.
                "enable" => conn.send(&sm::failed("unexpected-request", None)).await?,
                // <r/> or <a/> before <enable/>: nothing is counted yet.
                _ => {}
            }
            continue;
        }
        if el.ns() == csi::NS {
            // Nothing to hold back before a resource is bound.
            continue;
        }
        let stanza = match Stanza::from_element(el) {
            Ok(s) => s,
            Err(e) => {
                if let Some(reply) = e.reply() {
                    conn.send(&reply).await?;
                    continue;
                }
                return Err(ConnError::stream(
                    SEC::NotAuthorized,
                    "bind a resource first",
                ));
            }
        };
        let Some(payload) = stanza
            .payload()
            .filter(|_| stanza.kind() == StanzaKind::Iq(IqType::Set))
        else {
            return Err(ConnError::stream(
                SEC::NotAuthorized,
                "bind a resource first",
            ));
        };
        if payload.is("session", ns::SESSION) {
            conn.send(stanza.iq_result(None).element()).await?;
            continue;
        }
        if !payload.is("bind", ns::BIND) {
            let e = StanzaError::new(StanzaErrorCondition::NotAuthorized);
            if let Some(r) = stanza.error_reply(&e) {
                conn.send(r.element()).await?;
            }
            continue;
        }
        let requested = payload
            .child_text("resource", ns::BIND)
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty());
        let resource =
            requested.unwrap_or_else(|| format!("rookery-{:016x}", rand::random::<u64>()));
        let jid = match user.with_resource(&resource) {
            Ok(j) => j,
            Err(_) => {
                let e = StanzaError::new(StanzaErrorCondition::BadRequest)
                    .with_text("invalid resource");
                if let Some(r) = stanza.error_reply(&e) {
                    conn.send(r.element()).await?;
                }
                continue;
            }
        };
        let core = &ctx.core;
        let (handle, end) = SessionHandle::new(
            core.next_session_id(),
            jid.clone(),
            core.config().session_queue,
        );
        let handle = handle.with_origin(conn.peer, conn.kind());
        let result = stanza.iq_result(Some(
            Element::new("bind", ns::BIND)
                .with_child(Element::new("jid", ns::BIND).with_text(jid.as_str())),
        ));
        conn.send(result.element()).await?;
        if let Some(old) = core.bind(handle.clone()).await {
            // RFC 6120 §7.7.2.2: the new session wins; the old one is told why it ends.
            old.close(StreamError::with_text(
                SEC::Conflict,
                "replaced by a new connection",
            ));
        }
        tracing::info!(%jid, "resource bound");
        return Ok(AfterAuth::Bound(Bound { jid, handle, end }));
    }
}

/// Tries to resume the session a `<resume/>` names (XEP-0198 §5): on success the connection
/// now belongs to that session's task (`holder` is left empty) and `true` is returned; on
/// failure `<failed/>` has been sent and the client may bind instead.
async fn resume(
    ctx: &C2sContext,
    holder: &mut Option<Conn>,
    user: &BareJid,
    el: &Element,
) -> Result<bool, ConnError> {
    let conn = holder
        .as_mut()
        .ok_or_else(|| ConnError::stream(SEC::InternalServerError, "no connection"))?;
    if !ctx.config.stream_management {
        conn.send(&sm::failed("feature-not-implemented", None))
            .await?;
        return Ok(false);
    }
    let (Ok(h), Some(previd)) = (sm::parse_h(el), el.attr("previd")) else {
        conn.send(&sm::failed("bad-request", None)).await?;
        return Ok(false);
    };
    let conn = holder
        .take()
        .ok_or_else(|| ConnError::stream(SEC::InternalServerError, "no connection"))?;
    let (reply, verdict) = tokio::sync::oneshot::channel();
    let takeover = sm::Takeover {
        conn: Box::new(conn),
        h,
        reply,
    };
    let (conn, failed) = match ctx.sm.offer(previd, user, takeover) {
        Err((t, condition)) => (t.conn, sm::failed(condition, None)),
        Ok(()) => match verdict.await {
            Ok(sm::Verdict::Accepted) => return Ok(true),
            Ok(sm::Verdict::Rejected { conn, failed }) => (conn, failed),
            // The session ended without looking at it; the connection went with it.
            Err(_) => return Ok(true),
        },
    };
    tracing::info!(previd, "resumption refused");
    let conn = holder.insert(*conn);
    conn.send(&failed).await?;
    Ok(false)
}
