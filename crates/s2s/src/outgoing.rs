//! Outgoing streams (RFC 6120 §4.7, §5, §6; XEP-0220 §2.1; XEP-0178; XEP-0368): one task
//! per (local domain, remote domain) pair, found through [`S2s`]'s pool.
//!
//! The task resolves the remote domain, connects, negotiates TLS (STARTTLS on a plain
//! connection, or direct TLS), then authenticates: SASL EXTERNAL when the peer's
//! certificate is valid for its domain and it offers EXTERNAL; else Server Dialback when
//! policy allows. Stanzas wait in a queue bounded in stanzas and in bytes ([`crate::queue`])
//! until the stream is authenticated; if it fails, each one bounces with the condition of the failure ([`OutError::condition`]), and
//! the domain enters a back-off period ([`crate::backoff`]) during which new stanzas for it
//! bounce at once, without a new lookup or connection.
//! Dialback verification requests (`db:verify`, receiving role) are written as soon as the
//! stream is open. An idle stream is closed; the next stanza opens a new one.
//!
//! Negotiation is the sans-IO machine of [`crate::initiating`], run here by the shared
//! driver in two legs (opening, per address; authenticating); the bound stream is the
//! [`crate::sending`] policy on the shared loop. This file keeps the pool, the task of a
//! pair and what its end means for the stanzas waiting.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rookery_core::deadline::after;
use rookery_core::Undelivered;
use rookery_proto::{
    ns, Stanza, StanzaError, StanzaErrorCondition as SC, StreamError, StreamErrorCondition,
};
use rookery_stream::negotiation::{self, Effects};
use rookery_stream::{Conn, ConnError, Transport};
use rookery_xml::Limits;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tracing::Instrument;

use crate::initiating::{self, Done, Initiating, Reply, Request};
use crate::queue::{Budget, Charge, QueueFull, Queued};
use crate::sending::{fail_out, Sending};
use crate::srv::Target;
use crate::{backoff, tls, S2s};

/// Verification requests per outgoing stream: queued to be written, and, apart, written
/// and waiting for their answer ([`Sending`]).
pub(crate) const VERIFY_QUEUE: usize = 64;
/// Parser limits while an outgoing stream negotiates: the peer is a server we chose, whose
/// features may be richer than a client's first elements, so a little more room than
/// [`Limits::PRE_AUTH`].
const NEGOTIATION: Limits = Limits {
    max_stanza_bytes: 64 * 1024,
    max_depth: 16,
    max_attrs: 32,
    max_elements: 512,
};

/// The pool entry of one (local, remote) pair.
pub(crate) struct Entry {
    senders: Senders,
    auth: Arc<AtomicU8>,
    /// An administrator's close ([`S2s::close_remote`]): the stream error to end with.
    close: watch::Sender<Option<StreamError>>,
}

/// What queues for a pair's stream: its stanzas (charged to its byte budget) and
/// verification requests.
#[derive(Clone)]
struct Senders {
    /// The pool entry's id.
    id: u64,
    stanzas: mpsc::Sender<Queued>,
    /// The bytes of the stanzas queued (`queue_max_bytes`).
    bytes: Arc<Budget>,
    /// Whether the last stanza for the pair was refused for a full queue: the first refusal
    /// is logged as a warning, the rest until a stanza is taken again at debug level (a
    /// sender filling the queue of a peer that never answers would flood the log).
    refusing: Arc<AtomicBool>,
    verifies: mpsc::Sender<VerifyReq>,
}

/// Where an outgoing stream hears of an administrator's close ([`Entry`]).
pub(crate) type CloseSignal = watch::Receiver<Option<StreamError>>;

/// A stream's queues, as its `Sending` policy takes them: the stanzas taken from the
/// channel and not yet written, the pair's stanzas and verification requests, the close
/// signal.
pub(crate) type Queues<'a> = (
    &'a mut VecDeque<Queued>,
    &'a mut mpsc::Receiver<Queued>,
    &'a mut mpsc::Receiver<VerifyReq>,
    CloseSignal,
);

/// How an outgoing stream is authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutAuth {
    /// Not yet (connecting, negotiating, waiting for the dialback answer).
    Pending,
    /// Server Dialback (XEP-0220).
    Dialback,
    /// SASL EXTERNAL with our certificate (XEP-0178).
    SaslExternal,
}

impl OutAuth {
    /// A lower-case name for the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            OutAuth::Pending => "pending",
            OutAuth::Dialback => "dialback",
            OutAuth::SaslExternal => "sasl-external",
        }
    }

    fn from_u8(v: u8) -> OutAuth {
        match v {
            1 => OutAuth::Dialback,
            2 => OutAuth::SaslExternal,
            _ => OutAuth::Pending,
        }
    }
}

/// A dialback verification to ask the authoritative server (receiving role).
pub(crate) struct VerifyReq {
    /// The id of the stream the key came on (ours, as receiving server).
    pub(crate) stream_id: String,
    /// The key the originating server sent.
    pub(crate) key: String,
    /// Where the verdict goes.
    pub(crate) reply: oneshot::Sender<Verdict>,
}

/// What the authoritative server said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// `type='valid'`.
    Valid,
    /// `type='invalid'`.
    Invalid,
    /// No answer: the authoritative server could not be reached or reported an error.
    Failed(SC),
}

/// Why an outgoing stream failed; each maps to the condition its queued stanzas bounce with
/// ([`OutError::condition`]).
#[derive(Debug, thiserror::Error)]
pub(crate) enum OutError {
    /// The domain could not be resolved or reached, or what answered is no XMPP server.
    #[error("{0}")]
    NotFound(String),
    #[error("timed out: {0}")]
    Timeout(&'static str),
    #[error("peer sent stream error {0}")]
    Peer(StreamError),
    /// The TLS handshake failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// Our policy and the peer's offer left no way to secure or authenticate the stream.
    #[error("policy: {0}")]
    Policy(&'static str),
    /// The peer answered our dialback key `invalid`.
    #[error("the peer refused our dialback key")]
    DialbackInvalid,
    /// The peer answered our dialback key with an error (its condition, if understood).
    #[error("dialback error: {}", .0.map_or("unknown", |c| c.as_str()))]
    DialbackError(Option<SC>),
    /// Our server is shutting down ([`S2s::close_all`]): not the remote domain's fault.
    #[error("the server is shutting down")]
    Shutdown,
}

impl OutError {
    /// The stanza error condition of the failure: `remote-server-not-found` only when there
    /// is no server to speak to (RFC 6120 §8.3.3.16); `remote-server-timeout` when a stream
    /// was opened but its negotiation failed (§8.3.3.17), after a dialback error too
    /// (XEP-0220 §2.1.1); `internal-server-error` after a dialback `invalid` (XEP-0220
    /// §2.1.1 MUST).
    fn condition(&self) -> SC {
        match self {
            OutError::NotFound(_) => SC::RemoteServerNotFound,
            OutError::Peer(e) if e.condition == StreamErrorCondition::HostUnknown => {
                SC::RemoteServerNotFound
            }
            OutError::Timeout(_)
            | OutError::Peer(_)
            | OutError::Tls(_)
            | OutError::Policy(_)
            | OutError::DialbackError(_) => SC::RemoteServerTimeout,
            OutError::DialbackInvalid => SC::InternalServerError,
            OutError::Shutdown => SC::ServiceUnavailable,
        }
    }
}

impl From<ConnError> for OutError {
    fn from(e: ConnError) -> Self {
        match e {
            ConnError::Stream(se) => OutError::Peer(se),
            other => OutError::NotFound(other.to_string()),
        }
    }
}

impl From<std::io::Error> for OutError {
    fn from(e: std::io::Error) -> Self {
        OutError::NotFound(e.to_string())
    }
}

impl S2s {
    /// The channels of the (local, remote) stream, starting its task if there is none.
    fn entry(&self, local: &str, remote: &str) -> Option<Senders> {
        let me = self.arc()?;
        let key = (local.to_string(), remote.to_string());
        let e = self.pool.entry(key).or_insert_with(|| {
            let id = self.next_id();
            let (stx, srx) = mpsc::channel(self.config.queue_len.max(1));
            let (vtx, vrx) = mpsc::channel(VERIFY_QUEUE);
            let auth = Arc::new(AtomicU8::new(0));
            let (close, close_rx) = watch::channel(None);
            let channels = Channels {
                stanzas: srx,
                verifies: vrx,
                auth: auth.clone(),
                close: close_rx,
            };
            tokio::spawn(run(me, id, local.to_string(), remote.to_string(), channels));
            let senders = Senders {
                id,
                stanzas: stx,
                bytes: Budget::new(self.config.queue_max_bytes),
                refusing: Arc::default(),
                verifies: vtx,
            };
            Entry {
                senders,
                auth,
                close,
            }
        });
        Some(e.senders.clone())
    }

    /// The outgoing streams: (local domain, remote domain, authentication).
    pub fn outgoing(&self) -> Vec<(String, String, OutAuth)> {
        let mut v: Vec<_> = self
            .pool
            .iter()
            .map(|e| {
                let (l, r) = e.key().clone();
                (
                    l,
                    r,
                    OutAuth::from_u8(e.value().auth.load(Ordering::Relaxed)),
                )
            })
            .collect();
        v.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        v
    }

    /// Why stanzas for `remote` must bounce now without a connection attempt: the domain is
    /// in back-off and `local` has no stream to it (a stream that exists, connecting or
    /// connected, is used).
    fn refused(&self, local: &str, remote: &str) -> Option<backoff::Refusal> {
        let r = self.backoff.check(remote, Instant::now())?;
        (!self
            .pool
            .contains_key(&(local.to_string(), remote.to_string())))
        .then_some(r)
    }

    /// Records an outgoing stream to `remote` that failed with `e`, unless another of our
    /// domains has a stream to it that authenticated (then the domain is reachable and the
    /// failure was this pair's own). Returns the back-off period.
    fn stream_failed(&self, remote: &str, e: &OutError) -> Duration {
        if matches!(e, OutError::Shutdown) {
            return Duration::ZERO;
        }
        let reachable = self
            .pool
            .iter()
            .any(|p| p.key().1 == remote && p.value().auth.load(Ordering::Relaxed) != 0);
        if reachable {
            return Duration::ZERO;
        }
        self.backoff
            .failed(remote, Instant::now(), e.condition(), &e.to_string())
    }

    /// A stream to `remote` authenticated: its back-off, if any, ends.
    pub(crate) fn reachable(&self, remote: &str) {
        if self.backoff.succeeded(remote) {
            tracing::info!("domain reachable again; back-off ended");
        }
    }

    /// Drops the pool entry `id` of the pair if it is still the current one.
    /// Closes the outgoing streams to `remote` with `error` (an authenticated one writes
    /// what is queued first; one still connecting closes once it is up); how many.
    pub(crate) fn close_outgoing(&self, remote: &str, error: &StreamError) -> usize {
        let mut closed = 0;
        for e in self.pool.iter().filter(|e| e.key().1 == remote) {
            e.value().close.send_replace(Some(error.clone()));
            closed += 1;
        }
        closed
    }

    fn forget(&self, local: &str, remote: &str, id: u64) {
        self.pool
            .remove_if(&(local.to_string(), remote.to_string()), |_, e| {
                e.senders.id == id
            });
    }

    /// Queues a stanza for its remote domain; one it cannot queue comes back with its error.
    pub(crate) fn send_stanza(&self, stanza: Stanza) -> Result<(), Box<Undelivered>> {
        let Some(remote) = stanza.to().map(|t| t.domain().to_string()) else {
            return Err(Undelivered::new(
                stanza,
                StanzaError::new(SC::RemoteServerNotFound),
            ));
        };
        let local = match stanza.from() {
            Some(f) => f.domain().to_string(),
            None => self.core.domain().to_string(),
        };
        if !self.is_hosted(&local) || self.is_hosted(&remote) {
            return Err(Undelivered::new(stanza, StanzaError::new(SC::NotAllowed)));
        }
        if self.is_closing() {
            let e = StanzaError::new(OutError::Shutdown.condition())
                .with_text(OutError::Shutdown.to_string());
            return Err(Undelivered::new(stanza, e));
        }
        if let Some(r) = self.refused(&local, &remote) {
            let retry = r.retry_in.as_secs().max(1);
            tracing::debug!(%local, %remote, retry_in_secs = retry, "bounced: domain in back-off");
            let e = StanzaError::new(r.condition)
                .with_text(format!("{} (next attempt in {retry} s)", r.reason));
            return Err(Undelivered::new(stanza, e));
        }
        let mut stanza = stanza;
        for _ in 0..2 {
            let Some(to) = self.entry(&local, &remote) else {
                break;
            };
            let charge = match Charge::take(&stanza, &to.bytes, &self.queued) {
                Ok(c) => c,
                Err(full) => return Err(queue_full(stanza, full, &to, &local, &remote)),
            };
            match to.stanzas.try_send(charge.hold(stanza)) {
                Ok(()) => {
                    if to.refusing.load(Ordering::Relaxed) {
                        to.refusing.store(false, Ordering::Relaxed);
                    }
                    return Ok(());
                }
                Err(mpsc::error::TrySendError::Full(q)) => {
                    let stanza = q.into_stanza();
                    return Err(queue_full(stanza, QueueFull::Stanzas, &to, &local, &remote));
                }
                Err(mpsc::error::TrySendError::Closed(q)) => {
                    // The stream just ended; start a new one.
                    self.forget(&local, &remote, to.id);
                    stanza = q.into_stanza();
                }
            }
        }
        Err(Undelivered::new(
            stanza,
            StanzaError::new(SC::RemoteServerNotFound),
        ))
    }

    /// Asks the authoritative server of `remote` whether `key` is right (receiving role,
    /// XEP-0220 §2.1.2), over our outgoing stream `local` → `remote`.
    pub(crate) fn request_verify(
        &self,
        local: &str,
        remote: &str,
        stream_id: &str,
        key: &str,
    ) -> oneshot::Receiver<Verdict> {
        let (reply, rx) = oneshot::channel();
        if self.is_closing() {
            let _ = reply.send(Verdict::Failed(OutError::Shutdown.condition()));
            return rx;
        }
        if let Some(r) = self.refused(local, remote) {
            let _ = reply.send(Verdict::Failed(r.condition));
            return rx;
        }
        let mut req = VerifyReq {
            stream_id: stream_id.to_string(),
            key: key.to_string(),
            reply,
        };
        for _ in 0..2 {
            let Some(to) = self.entry(local, remote) else {
                break;
            };
            match to.verifies.try_send(req) {
                Ok(()) => return rx,
                Err(mpsc::error::TrySendError::Full(r)) => {
                    let _ = r.reply.send(Verdict::Failed(SC::ResourceConstraint));
                    return rx;
                }
                Err(mpsc::error::TrySendError::Closed(r)) => {
                    self.forget(local, remote, to.id);
                    req = r;
                }
            }
        }
        let _ = req.reply.send(Verdict::Failed(SC::RemoteServerNotFound));
        rx
    }
}

/// A stanza that could not be queued for the stream of `to`, to bounce with why; logged as
/// a warning when it is the first of a run of refusals for the pair.
fn queue_full(
    stanza: Stanza,
    full: QueueFull,
    to: &Senders,
    local: &str,
    remote: &str,
) -> Box<Undelivered> {
    if to.refusing.swap(true, Ordering::Relaxed) {
        tracing::debug!(%local, %remote, limit = full.key(), "s2s queue full");
    } else {
        tracing::warn!(%local, %remote, limit = full.key(), "s2s queue full (further refusals until it drains are logged at debug level)");
    }
    Undelivered::new(stanza, full.error())
}

/// How a session on an established connection ended.
pub(crate) enum End {
    /// Closed after the idle timeout; nothing was pending.
    Idle,
    /// The connection was lost after it was authenticated; reconnect if stanzas wait.
    Lost(String),
    /// It failed before it could be used.
    Failed(OutError),
}

/// The receiving ends a connection task owns.
struct Channels {
    stanzas: mpsc::Receiver<Queued>,
    verifies: mpsc::Receiver<VerifyReq>,
    auth: Arc<AtomicU8>,
    close: CloseSignal,
}

/// The connection task of one pair.
async fn run(s2s: Arc<S2s>, id: u64, local: String, remote: String, channels: Channels) {
    let span = tracing::info_span!("s2s_out", %local, %remote);
    let Channels {
        mut stanzas,
        mut verifies,
        auth,
        close,
    } = channels;
    async move {
        let mut backlog: VecDeque<Queued> = VecDeque::new();
        let mut reconnects = 0u32;
        let failure = loop {
            let negotiation = Duration::from_secs(s2s.config.negotiation_timeout_secs.max(1));
            let deadline = after(Instant::now(), negotiation);
            let connecting = tokio::time::timeout_at(deadline, connect(&s2s, &local, &remote, deadline));
            let open = tokio::select! {
                r = connecting => match r {
                    Ok(Ok(open)) => open,
                    Ok(Err(e)) => break Some(e),
                    Err(_) => break Some(OutError::Timeout("connecting")),
                },
                () = s2s.closed() => break Some(OutError::Shutdown),
            };
            let end = session(
                &s2s,
                open,
                (&local, &remote),
                deadline,
                &mut backlog,
                (&mut stanzas, &mut verifies, close.clone()),
                &auth,
            )
            .await;
            auth.store(0, Ordering::Relaxed);
            match end {
                End::Idle => break None,
                End::Failed(e) => break Some(e),
                End::Lost(why) => {
                    let waiting = !backlog.is_empty() || !stanzas.is_empty();
                    tracing::info!(reason = %why, waiting, "outgoing stream lost");
                    if !waiting || reconnects >= 1 {
                        break if waiting {
                            Some(OutError::NotFound(why))
                        } else {
                            None
                        };
                    }
                    reconnects += 1;
                }
            }
        };
        // The back-off starts before the pair leaves the pool, so that no stanza in between
        // starts a new attempt.
        let backoff = failure
            .as_ref()
            .map_or(Duration::ZERO, |e| s2s.stream_failed(&remote, e));
        s2s.forget(&local, &remote, id);
        stanzas.close();
        verifies.close();
        while let Ok(s) = stanzas.try_recv() {
            backlog.push_back(s);
        }
        let mut reqs = Vec::new();
        while let Ok(v) = verifies.try_recv() {
            reqs.push(v);
        }
        match failure {
            None => {
                // Raced with the idle close: hand them to a new stream.
                for s in backlog {
                    if let Err(u) = s2s.send_stanza(s.into_stanza()) {
                        s2s.core.reply_error(&u.stanza, u.error).await;
                    }
                }
                for v in reqs {
                    let rx = s2s.request_verify(&local, &remote, &v.stream_id, &v.key);
                    tokio::spawn(async move {
                        if let Ok(verdict) = rx.await {
                            let _ = v.reply.send(verdict);
                        }
                    });
                }
            }
            Some(e) => {
                let cond = e.condition();
                if matches!(e, OutError::Shutdown) {
                    tracing::info!(bounced = backlog.len(), "outgoing stream closed for shutdown");
                } else if backoff.is_zero() {
                    tracing::info!(error = %e, bounced = backlog.len(), "outgoing stream failed");
                } else {
                    tracing::warn!(
                        error = %e,
                        bounced = backlog.len(),
                        backoff_secs = backoff.as_secs(),
                        "outgoing stream failed; new stanzas for the domain bounce at once until the back-off ends"
                    );
                }
                for v in reqs {
                    let _ = v.reply.send(Verdict::Failed(cond));
                }
                for s in backlog {
                    s2s.core
                        .reply_error(s.stanza(), StanzaError::new(cond).with_text(e.to_string()))
                        .await;
                }
            }
        }
    }
    .instrument(span)
    .await
}

/// An open, encrypted stream, before authentication: the connection, its machine (to be
/// driven on to authenticate) and the driver.
struct Open {
    conn: Conn,
    machine: Initiating<Arc<S2s>>,
    driver: Driver,
}

/// Resolves `remote` and tries its targets in order until one gives an open stream.
async fn connect(
    s2s: &Arc<S2s>,
    local: &str,
    remote: &str,
    deadline: Instant,
) -> Result<Open, OutError> {
    let targets = s2s
        .resolver
        .targets(remote)
        .await
        .map_err(|e| OutError::NotFound(e.to_string()))?;
    let connect_timeout = Duration::from_secs(s2s.config.connect_timeout_secs.max(1));
    let mut last = OutError::NotFound(format!("no address for {remote}"));
    for t in targets {
        for addr in s2s.resolver.addresses(&t).await {
            let limit = after(Instant::now(), connect_timeout).min(deadline);
            tracing::debug!(%addr, direct_tls = t.direct_tls, "connecting");
            let tcp = match tokio::time::timeout_at(limit, TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => tcp,
                Ok(Err(e)) => {
                    tracing::debug!(%addr, error = %e, "connect failed");
                    last = OutError::NotFound(format!("{addr}: {e}"));
                    continue;
                }
                Err(_) => {
                    last = OutError::Timeout("connecting");
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            match open_stream(s2s, tcp, addr, &t, local, remote).await {
                Ok(open) => return Ok(open),
                Err(e) => {
                    tracing::info!(%addr, error = %e, "stream setup failed");
                    last = e;
                }
            }
        }
    }
    Err(last)
}

/// TLS (direct, or STARTTLS through the machine), then the stream header and features.
async fn open_stream(
    s2s: &Arc<S2s>,
    tcp: TcpStream,
    addr: SocketAddr,
    t: &Target,
    local: &str,
    remote: &str,
) -> Result<Open, OutError> {
    let name = ServerName::try_from(remote.to_string())
        .map_err(|_| OutError::NotFound(format!("{remote} is not a DNS name")))?;
    let io = if t.direct_tls {
        let tls = TlsConnector::from(s2s.tls.client(local, true))
            .connect(name.clone(), tcp)
            .await
            .map_err(|e| OutError::Tls(e.to_string()))?;
        Transport::TlsClient(Box::new(tls))
    } else {
        Transport::Plain(tcp)
    };
    let mut conn = Conn::new(io, addr, NEGOTIATION, local, ns::SERVER);
    s2s.declare_dialback(&mut conn);
    let mut machine = Initiating::new(s2s.clone(), local, remote, t.direct_tls);
    let mut driver = Driver {
        s2s: s2s.clone(),
        local: local.to_string(),
        remote: remote.to_string(),
        name,
        tls_error: None,
    };
    let mut holder = Some(conn);
    let opened = negotiation::drive(&mut holder, &mut machine, &mut driver).await;
    match (opened, holder) {
        (Ok(Done::Opened), Some(conn)) => Ok(Open {
            conn,
            machine,
            driver,
        }),
        (Ok(Done::Failed { error, .. }), _) => Err(error),
        (Ok(_), _) => Err(OutError::NotFound("negotiation out of step".into())),
        (Err(e), _) => Err(match driver.tls_error.take() {
            Some(tls) => tls,
            None => opening_error(&machine, e),
        }),
    }
}

/// Why opening failed, when the connection said so. Before TLS, in the words the STARTTLS
/// step always used.
fn opening_error(machine: &Initiating<Arc<S2s>>, e: ConnError) -> OutError {
    if !machine.before_tls() {
        return e.into();
    }
    match e {
        ConnError::Eof => OutError::NotFound("connection closed before TLS".into()),
        ConnError::StreamClosed => {
            OutError::NotFound("unexpected StreamClose during STARTTLS".into())
        }
        ConnError::Stream(se) => OutError::NotFound(format!(
            "bad XML before TLS: {}",
            se.text.unwrap_or_default()
        )),
        ConnError::Io(io) => io.into(),
        other => other.into(),
    }
}

impl initiating::Policy for Arc<S2s> {
    fn dialback(&self) -> bool {
        self.config.dialback
    }

    fn require_valid_certificates(&self) -> bool {
        self.config.require_valid_certificates
    }

    fn dialback_key(&self, receiving: &str, originating: &str, stream_id: &str) -> String {
        self.secret.key(receiving, originating, stream_id)
    }
}

/// Performs what the machine asks for: the TLS client handshake, the certificate check.
struct Driver {
    s2s: Arc<S2s>,
    /// The domain the stream speaks for: its certificate is the one presented.
    local: String,
    remote: String,
    name: ServerName<'static>,
    /// Why the handshake failed, in the words a bounce carries.
    tls_error: Option<OutError>,
}

impl Effects<Initiating<Arc<S2s>>> for Driver {
    async fn perform(&mut self, conn: &mut Conn, request: Request) -> Result<Reply, ConnError> {
        let Request::CertificateValid = request;
        let chain = conn.transport().map(tls::peer_chain).unwrap_or_default();
        Ok(Reply(self.s2s.tls.valid_for(&chain, &self.remote)))
    }

    async fn start_tls(&mut self, conn: Conn) -> Result<Conn, ConnError> {
        let connector = TlsConnector::from(self.s2s.tls.client(&self.local, false));
        conn.start_tls_client(&connector, self.name.clone(), NEGOTIATION)
            .await
            .inspect_err(|e| {
                if let ConnError::Io(io) = e {
                    self.tls_error = Some(OutError::Tls(io.to_string()));
                }
            })
    }
}

/// Authenticates the open stream, then serves it until it ends.
async fn session(
    s2s: &Arc<S2s>,
    open: Open,
    (local, remote): (&str, &str),
    deadline: Instant,
    backlog: &mut VecDeque<Queued>,
    (stanzas, verifies, close): (
        &mut mpsc::Receiver<Queued>,
        &mut mpsc::Receiver<VerifyReq>,
        CloseSignal,
    ),
    auth: &AtomicU8,
) -> End {
    let Open {
        conn,
        mut machine,
        mut driver,
    } = open;
    let mut holder = Some(conn);
    let authenticating = negotiation::drive(&mut holder, &mut machine, &mut driver);
    let authenticated = tokio::time::timeout_at(deadline, authenticating).await;
    let Some(mut conn) = holder else {
        return End::Failed(OutError::NotFound("connection lost".into()));
    };
    let ready = match authenticated {
        Ok(Ok(Done::Sasl)) => {
            tracing::info!("authenticated with SASL EXTERNAL");
            auth.store(2, Ordering::Relaxed);
            s2s.reachable(remote);
            true
        }
        Ok(Ok(Done::Dialback)) => false,
        Ok(Ok(Done::Failed { error, close })) => {
            if let Some(e) = close {
                fail_out(
                    &mut conn,
                    e.condition,
                    e.text.as_deref().unwrap_or_default(),
                )
                .await;
            }
            return End::Failed(error);
        }
        Ok(Ok(Done::Opened)) => {
            return End::Failed(OutError::NotFound("negotiation out of step".into()))
        }
        Ok(Err(e)) => return End::Failed(e.into()),
        Err(_) => return End::Failed(OutError::Timeout("SASL")),
    };
    let idle = Duration::from_secs(s2s.config.idle_timeout_secs);
    let mut sending = Sending::new(
        s2s,
        (local, remote),
        deadline,
        idle,
        ready,
        (backlog, stanzas, verifies, close),
        auth,
    );
    sending.run(&mut conn).await
}
