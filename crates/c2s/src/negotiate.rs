//! Stream negotiation for clients (RFC 6120 §4.3): STARTTLS, SASL, resource binding. The
//! steps are the sans-IO [`crate::machine`]; this file drives it over a connection
//! (`rookery_stream::negotiation::drive`) and does its asynchronous work: credential
//! lookups, registration, binding with the core, XEP-0198 resumption.
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
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rookery_core::deadline::after;
use rookery_core::session::SessionEnd;
use rookery_core::SessionHandle;
use rookery_jid::{BareJid, Jid};
use rookery_proto::{ns, StreamError, StreamErrorCondition as SEC};
use rookery_sasl::ChannelBindings;
use rookery_stream::negotiation::{self, Effects};
use rookery_stream::{Conn, ConnError, Transport};
use rookery_xml::{Element, Limits};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::machine::{C2sMachine, Done, Inline, Policy, Reply, Request, Sasl2Resumed};
use crate::session::MovedIn;
use crate::{session, sm, C2sConfig, C2sContext, Mode};

/// How negotiation ended.
pub enum Negotiated {
    /// A resource was bound: run the session on this connection.
    Bound(Bound),
    /// The connection resumed an XEP-0198 session and now belongs to that session's task.
    Resumed,
}

/// A bound session, ready for the session loop.
pub struct Bound {
    /// The full JID.
    pub jid: Jid,
    /// The router's handle.
    pub handle: SessionHandle,
    /// The receiving end of the handle.
    pub end: SessionEnd,
    /// Bound by XEP-0386 Bind2 inside SASL2: what the session enables before it sends the
    /// success.
    pub inline: Option<Box<Inline>>,
    /// Bound for a session another node handed over (XEP-0198 resumption here): what the
    /// session takes over before it answers `<resumed/>`.
    pub moved: Option<Box<MovedIn>>,
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
/// BOSH, an in-process pipe): the same negotiation and session as a TCP client, by the same
/// deadline (`negotiation_timeout_secs` from now). `stopped` as for [`serve`]; not an
/// `async fn` for the same reason.
///
/// The negotiation is boxed here, before the block that runs the session: what that block
/// captures keeps its place in the block's future for the session's whole life, even once
/// moved out, so a captured `conn` would sit in an idle session's task beside the session's
/// own (`docs/performance.md`).
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn would keep its arguments twice"
)]
pub fn serve_framed(
    ctx: Arc<C2sContext>,
    conn: Conn,
    stopped: tokio::sync::watch::Receiver<()>,
) -> impl Future<Output = ()> + Send {
    let deadline = negotiation_deadline(&ctx);
    let negotiation = {
        let ctx = ctx.clone();
        Box::pin(async move { establish_on(&ctx, conn, deadline, stopped).await })
    };
    async move {
        let Some((conn, bound)) = negotiation.await else {
            return;
        };
        tracing::Span::current().record("jid", tracing::field::display(&bound.jid));
        session::run(&ctx, conn, bound).await;
    }
}

/// When a stream accepted now must be bound: `negotiation_timeout_secs` from now (saturating,
/// so that a "never" in the configuration does not panic).
fn negotiation_deadline(ctx: &C2sContext) -> tokio::time::Instant {
    let limit = Duration::from_secs(ctx.config.negotiation_timeout_secs.max(1));
    after(tokio::time::Instant::now(), limit)
}

/// Negotiates the stream up to a bound session; `None` when the connection ended first (it
/// was closed as the reason called for) or resumed another session.
async fn establish(
    ctx: &Arc<C2sContext>,
    tcp: TcpStream,
    peer: SocketAddr,
    mode: Mode,
    mut stopped: tokio::sync::watch::Receiver<()>,
) -> Option<(Conn, Bound)> {
    tracing::debug!("accepted");
    let deadline = negotiation_deadline(ctx);
    let io = match mode {
        Mode::StartTls => Transport::Plain(tcp),
        // A handshake that stalls must not hold up a shutdown (as negotiation does not).
        Mode::DirectTls => match tokio::select! {
            r = tokio::time::timeout_at(
                deadline,
                TlsAcceptor::from(ctx.direct_tls.clone()).accept(tcp),
            ) => Some(r),
            _ = stopped.changed() => None,
        } {
            Some(Ok(Ok(tls))) => Transport::Tls(Box::new(tls)),
            Some(Ok(Err(e))) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                return None;
            }
            Some(Err(_)) => {
                tracing::debug!("TLS handshake timed out");
                return None;
            }
            None => {
                tracing::debug!("TLS handshake cut by the shutdown");
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

/// Drives the negotiation machine, then binds the session with the core or hands the
/// connection to the session it resumes. `holder` always holds the current connection (the
/// TLS upgrade replaces it), so the caller can still send a stream error after a failure.
async fn negotiate(
    ctx: &Arc<C2sContext>,
    acceptor: &TlsAcceptor,
    holder: &mut Option<Conn>,
) -> Result<Negotiated, ConnError> {
    let conn = holder.as_ref().ok_or_else(no_conn)?;
    let policy = Live {
        ctx: ctx.clone(),
        ip: conn.peer.ip(),
    };
    let mut machine = C2sMachine::new(
        policy,
        conn.is_secure(),
        conn.can_start_tls(),
        channel_bindings(ctx, conn),
    );
    let mut effects = Driver { ctx, acceptor };
    loop {
        match negotiation::drive(holder, &mut machine, &mut effects).await? {
            Done::Bound(jid) => {
                let conn = holder.as_ref().ok_or_else(no_conn)?;
                return Ok(Negotiated::Bound(bind(ctx, conn, jid, None).await));
            }
            Done::Bound2 { jid, inline } => {
                let conn = holder.as_ref().ok_or_else(no_conn)?;
                return Ok(Negotiated::Bound(
                    self::bind(ctx, conn, jid, Some(inline)).await,
                ));
            }
            Done::Resume {
                user,
                previd,
                h,
                sasl2,
            } => {
                let inline = sasl2.is_some();
                let failed = match resume(ctx, holder, &user, &previd, h, sasl2).await? {
                    Resumption::Here => return Ok(Negotiated::Resumed),
                    Resumption::Moved(jid, moved) => {
                        let conn = holder.as_ref().ok_or_else(no_conn)?;
                        return Ok(Negotiated::Bound(bind_moved(ctx, conn, jid, moved).await));
                    }
                    Resumption::Failed(failed) => failed,
                };
                if inline {
                    // XEP-0198 in SASL2: <failed/> goes inside the success that follows.
                    machine.resume_refused(failed);
                } else {
                    holder.as_mut().ok_or_else(no_conn)?.send(&failed).await?;
                }
            }
        }
    }
}

fn no_conn() -> ConnError {
    ConnError::stream(SEC::InternalServerError, "no connection")
}

/// The machine's view of the server, for one connection.
struct Live {
    ctx: Arc<C2sContext>,
    ip: IpAddr,
}

impl Live {
    /// Unix seconds now.
    fn now_secs() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }
}

impl Policy for Live {
    fn domain(&self) -> &str {
        self.ctx.core.domain()
    }

    fn config(&self) -> &C2sConfig {
        &self.ctx.config
    }

    fn serves(&self, domain: &str) -> bool {
        self.ctx.core.is_local_domain(domain)
    }

    fn registration_open(&self, host: &str) -> bool {
        self.ctx.register.open(&self.ctx.core, host)
    }

    fn stream_features(&self) -> Vec<Element> {
        self.ctx.core.stream_features().to_vec()
    }

    fn auth_blocked(&self, account: Option<&str>) -> bool {
        self.ctx.limiter.blocked(self.ip, account)
    }

    fn auth_failed(&self, account: Option<&str>) {
        self.ctx.limiter.failed(&self.ctx.core, self.ip, account);
    }

    fn auth_result(&self, mechanism: &'static str, ok: bool) {
        rookery_metrics::get().login(mechanism, ok);
    }

    fn fast_enabled(&self) -> bool {
        self.ctx.fast.is_some() && self.ctx.config.fast_token_lifetime_secs > 0
    }

    fn now(&self) -> i64 {
        Live::now_secs()
    }

    /// A resource that replaces a session of the same name adds none.
    fn session_limit_reached(&self, jid: &Jid) -> bool {
        let max = self.ctx.config.max_sessions_per_account;
        if max == 0 {
            return false;
        }
        let sessions = self.ctx.core.sessions_of(&jid.to_bare());
        sessions.len() >= max && !sessions.iter().any(|(h, _)| h.jid() == jid)
    }
}

/// Performs what the machine asks for.
struct Driver<'a> {
    ctx: &'a C2sContext,
    acceptor: &'a TlsAcceptor,
}

impl Effects<C2sMachine<Live>> for Driver<'_> {
    /// Account lookups are on the stream's host: `conn.domain()`, which the machine set to
    /// the hosted domain the client's header named when it answered it.
    async fn perform(&mut self, conn: &mut Conn, request: Request) -> Result<Reply, ConnError> {
        let ctx = self.ctx;
        Ok(match request {
            Request::Credentials(local) => Reply::Credentials(
                ctx.core
                    .accounts()
                    .credentials(conn.domain(), &local)
                    .await
                    .map_err(|e| tracing::error!(error = %e, "credential lookup failed")),
            ),
            Request::FastTokens { local, device } => Reply::FastTokens(match ctx.fast.as_ref() {
                Some(store) => store
                    .get(conn.domain(), &local, &device)
                    .await
                    .map_err(|e| tracing::error!(error = %e, "FAST token lookup failed")),
                None => Err(()),
            }),
            Request::FastUse {
                local,
                device,
                used,
                key,
                count,
            } => Reply::FastUsed(match ctx.fast.as_ref() {
                Some(store) => store
                    .use_token(conn.domain(), &local, &device, used, &key, count)
                    .await
                    .map_err(|e| tracing::error!(error = %e, "FAST token update failed")),
                None => Err(()),
            }),
            Request::FastInvalidate { local, device, key } => {
                Reply::FastUsed(match ctx.fast.as_ref() {
                    Some(store) => store
                        .invalidate(conn.domain(), &local, &device, &key)
                        .await
                        .map_err(|e| tracing::error!(error = %e, "FAST token invalidation failed")),
                    None => Err(()),
                })
            }
            Request::FastIssue {
                local,
                device,
                key,
                expires,
                mechanism,
            } => Reply::FastIssued(match ctx.fast.as_ref() {
                Some(store) => {
                    let now_ms = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
                    store
                        .issue(
                            conn.domain(),
                            &local,
                            &device,
                            &key,
                            expires,
                            mechanism,
                            now_ms,
                            ctx.config.fast_max_devices,
                        )
                        .await
                        .map_err(|e| tracing::error!(error = %e, "FAST token not stored"))
                }
                None => Err(()),
            }),
            Request::Register(stanza) => Reply::Registered(
                match ctx
                    .register
                    .register(&ctx.core, conn.domain(), conn.peer.ip(), &stanza)
                    .await
                {
                    Ok(payload) => Some(stanza.iq_result(payload)),
                    Err(e) => stanza.error_reply(&e),
                },
            ),
        })
    }

    async fn start_tls(&mut self, conn: Conn) -> Result<Conn, ConnError> {
        conn.start_tls(self.acceptor).await
    }

    fn channel_bindings(&self, conn: &Conn) -> ChannelBindings {
        channel_bindings(self.ctx, conn)
    }
}

/// What `conn` can bind to (XEP-0440): its `tls-exporter` (TLS 1.3) and, on TLS we
/// accepted, `tls-server-end-point` of the certificate served; a WebSocket brings both from
/// its HTTPS connection.
fn channel_bindings(ctx: &C2sContext, conn: &Conn) -> ChannelBindings {
    let mut bindings = conn.channel_bindings();
    if let (Some(cert), Some(transport)) = (&ctx.cert, conn.transport()) {
        bindings.server_end_point = cert.server_end_point(transport);
    }
    bindings
}

/// Registers the bound resource with the core (its result was sent). RFC 6120 §7.7.2.2: the
/// new session wins; an old one with the same JID is told why it ends.
async fn bind(ctx: &C2sContext, conn: &Conn, jid: Jid, inline: Option<Box<Inline>>) -> Bound {
    let core = &ctx.core;
    let (handle, end) = SessionHandle::new(
        core.next_session_id(),
        jid.clone(),
        core.config().queue_limit(),
    );
    let handle = handle.with_origin(conn.peer, conn.kind());
    if let Some(old) = core.bind(handle.clone()).await {
        old.close(StreamError::with_text(
            SEC::Conflict,
            "replaced by a new connection",
        ));
    }
    tracing::info!(%jid, "resource bound");
    Bound {
        jid,
        handle,
        end,
        inline,
        moved: None,
    }
}

/// Binds here the session another node handed over (see [`crate::elsewhere`]): that node's
/// handle leaves the registry quietly (the modules here kept nothing for it, and it did not
/// end), the full JID is bound as for any bind, and the modules take back what they kept for
/// it there; the session answers `<resumed/>` when it runs.
async fn bind_moved(ctx: &C2sContext, conn: &Conn, jid: Jid, moved: Box<MovedIn>) -> Bound {
    if let Some(old) = ctx.core.session(&jid).filter(|h| h.is_remote()) {
        ctx.core.unbind_remote(&jid, old.id());
    }
    let mut bound = bind(ctx, conn, jid, None).await;
    ctx.core
        .adopt_session_states(&bound.jid, &moved.moved.modules);
    bound.moved = Some(moved);
    bound
}

/// How a `<resume/>` went.
enum Resumption {
    /// The session was held here: the connection now belongs to its task.
    Here,
    /// Another node handed it over: bind its full JID here and go on with it.
    Moved(Jid, Box<MovedIn>),
    /// Refused: answer this `<failed/>` (the client may bind instead).
    Failed(Element),
}

/// Tries to resume the session a `<resume/>` names (XEP-0198 §5): held here, the connection
/// now belongs to that session's task (`holder` is left empty); held by another node of a
/// cluster, that node hands it over ([`crate::elsewhere`]) and the connection is back in
/// `holder` to bind it; on failure the connection is back in `holder` with the `<failed/>`
/// to answer, and the client may bind instead.
async fn resume(
    ctx: &C2sContext,
    holder: &mut Option<Conn>,
    user: &BareJid,
    previd: &str,
    h: u32,
    sasl2: Option<Sasl2Resumed>,
) -> Result<Resumption, ConnError> {
    let conn = holder.take().ok_or_else(no_conn)?;
    let (reply, verdict) = tokio::sync::oneshot::channel();
    let takeover = sm::Takeover {
        conn: Box::new(conn),
        h,
        reply,
        sasl2: sasl2.map(Box::new),
    };
    let (conn, failed) = match ctx.sm.offer(previd, user, takeover) {
        Err((t, condition)) => {
            if condition == "item-not-found" {
                // Perhaps another node of a cluster holds it: it hands it over, or else
                // ends it now.
                match crate::elsewhere::take_over(&ctx.core, user, previd, h).await {
                    Ok((jid, moved)) => {
                        *holder = Some(*t.conn);
                        let sasl2 = t.sasl2;
                        return Ok(Resumption::Moved(jid, Box::new(MovedIn { moved, sasl2 })));
                    }
                    Err(why) => {
                        crate::elsewhere::tell_peers(&ctx.core, user, previd);
                        (t.conn, crate::elsewhere::failed(why))
                    }
                }
            } else {
                (t.conn, sm::failed(condition, None))
            }
        }
        Ok(()) => match verdict.await {
            Ok(sm::Verdict::Accepted) => return Ok(Resumption::Here),
            Ok(sm::Verdict::Rejected { conn, failed }) => (conn, failed),
            // The session ended without looking at it; the connection went with it.
            Err(_) => return Ok(Resumption::Here),
        },
    };
    tracing::info!(previd, "resumption refused");
    *holder = Some(*conn);
    Ok(Resumption::Failed(failed))
}
