//! Outgoing streams (RFC 6120 §4.7, §5, §6; XEP-0220 §2.1; XEP-0178; XEP-0368): one task
//! per (local domain, remote domain) pair, found through [`S2s`]'s pool.
//!
//! The task resolves the remote domain, connects, negotiates TLS (STARTTLS on a plain
//! connection, or direct TLS), then authenticates: SASL EXTERNAL when the peer's
//! certificate is valid for its domain and it offers EXTERNAL; else Server Dialback when
//! policy allows. Stanzas wait in a bounded queue until the stream is authenticated; if it
//! fails, each one bounces with `remote-server-not-found` (or `remote-server-timeout`), and
//! the domain enters a back-off period ([`crate::backoff`]) during which new stanzas for it
//! bounce at once, without a new lookup or connection.
//! Dialback verification requests (`db:verify`, receiving role) are written as soon as the
//! stream is open. An idle stream is closed; the next stanza opens a new one.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rookery_core::Undelivered;
use rookery_proto::{
    ns, Stanza, StanzaError, StanzaErrorCondition as SC, StreamError, StreamErrorCondition,
};
use rookery_stream::{header, Conn, ConnError, Transport};
use rookery_xml::{escape_into, Element, Event, Limits, StreamHeader, StreamParser};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tracing::Instrument;

use crate::dialback::{self, Dialback, Kind, Outcome};
use crate::srv::Target;
use crate::{backoff, external, tls, S2s};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// Pending verification requests per outgoing stream.
const VERIFY_QUEUE: usize = 64;
/// Most queued stanzas written before one flush.
const WRITE_BATCH: usize = 64;
/// How long an outgoing stream may take to write its queue at shutdown.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);
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
    id: u64,
    stanzas: mpsc::Sender<Stanza>,
    verifies: mpsc::Sender<VerifyReq>,
    auth: Arc<AtomicU8>,
}

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
    stream_id: String,
    /// The key the originating server sent.
    key: String,
    reply: oneshot::Sender<Verdict>,
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

/// Why an outgoing stream failed; each maps to the condition its queued stanzas bounce with.
#[derive(Debug, thiserror::Error)]
enum OutError {
    #[error("{0}")]
    NotFound(String),
    #[error("timed out: {0}")]
    Timeout(&'static str),
    #[error("peer sent stream error {0}")]
    Peer(StreamError),
    #[error("policy: {0}")]
    Policy(&'static str),
    /// Our server is shutting down ([`S2s::close_all`]): not the remote domain's fault.
    #[error("the server is shutting down")]
    Shutdown,
}

impl OutError {
    fn condition(&self) -> SC {
        match self {
            OutError::Timeout(_) => SC::RemoteServerTimeout,
            OutError::Shutdown => SC::ServiceUnavailable,
            _ => SC::RemoteServerNotFound,
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
    fn entry(
        &self,
        local: &str,
        remote: &str,
    ) -> Option<(u64, mpsc::Sender<Stanza>, mpsc::Sender<VerifyReq>)> {
        let me = self.arc()?;
        let key = (local.to_string(), remote.to_string());
        let e = self.pool.entry(key).or_insert_with(|| {
            let id = self.next_id();
            let (stx, srx) = mpsc::channel(self.config.queue_len.max(1));
            let (vtx, vrx) = mpsc::channel(VERIFY_QUEUE);
            let auth = Arc::new(AtomicU8::new(0));
            let channels = Channels {
                stanzas: srx,
                verifies: vrx,
                auth: auth.clone(),
            };
            tokio::spawn(run(me, id, local.to_string(), remote.to_string(), channels));
            Entry {
                id,
                stanzas: stx,
                verifies: vtx,
                auth,
            }
        });
        Some((e.id, e.stanzas.clone(), e.verifies.clone()))
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
    fn reachable(&self, remote: &str) {
        if self.backoff.succeeded(remote) {
            tracing::info!("domain reachable again; back-off ended");
        }
    }

    /// Drops the pool entry `id` of the pair if it is still the current one.
    fn forget(&self, local: &str, remote: &str, id: u64) {
        self.pool
            .remove_if(&(local.to_string(), remote.to_string()), |_, e| e.id == id);
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
            let Some((id, tx, _)) = self.entry(&local, &remote) else {
                break;
            };
            match tx.try_send(stanza) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Full(s)) => {
                    tracing::warn!(%local, %remote, "s2s queue full");
                    let e = StanzaError::new(SC::ResourceConstraint)
                        .with_text("too many stanzas queued for that server");
                    return Err(Undelivered::new(s, e));
                }
                Err(mpsc::error::TrySendError::Closed(s)) => {
                    // The stream just ended; start a new one.
                    self.forget(&local, &remote, id);
                    stanza = s;
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
            let Some((id, _, tx)) = self.entry(local, remote) else {
                break;
            };
            match tx.try_send(req) {
                Ok(()) => return rx,
                Err(mpsc::error::TrySendError::Full(r)) => {
                    let _ = r.reply.send(Verdict::Failed(SC::ResourceConstraint));
                    return rx;
                }
                Err(mpsc::error::TrySendError::Closed(r)) => {
                    self.forget(local, remote, id);
                    req = r;
                }
            }
        }
        let _ = req.reply.send(Verdict::Failed(SC::RemoteServerNotFound));
        rx
    }
}

/// How a session on an established connection ended.
enum End {
    /// Closed after the idle timeout; nothing was pending.
    Idle,
    /// The connection was lost after it was authenticated; reconnect if stanzas wait.
    Lost(String),
    /// It failed before it could be used.
    Failed(OutError),
}

/// The receiving ends a connection task owns.
struct Channels {
    stanzas: mpsc::Receiver<Stanza>,
    verifies: mpsc::Receiver<VerifyReq>,
    auth: Arc<AtomicU8>,
}

/// The connection task of one pair.
async fn run(s2s: Arc<S2s>, id: u64, local: String, remote: String, channels: Channels) {
    let span = tracing::info_span!("s2s_out", %local, %remote);
    let Channels {
        mut stanzas,
        mut verifies,
        auth,
    } = channels;
    async move {
        let mut backlog: VecDeque<Stanza> = VecDeque::new();
        let mut reconnects = 0u32;
        let failure = loop {
            let deadline =
                Instant::now() + Duration::from_secs(s2s.config.negotiation_timeout_secs.max(1));
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
                (&mut stanzas, &mut verifies),
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
                    if let Err(u) = s2s.send_stanza(s) {
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
                        .reply_error(&s, StanzaError::new(cond).with_text(e.to_string()))
                        .await;
                }
            }
        }
    }
    .instrument(span)
    .await
}

/// An open, encrypted stream, before authentication.
struct Open {
    conn: Conn,
    stream_id: Option<String>,
    features: Element,
    dialback_offered: bool,
    cert_valid: bool,
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
            let limit = (Instant::now() + connect_timeout).min(deadline);
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

/// Our opening header as initiating entity (RFC 6120 §4.7: no `id`).
fn initial_header(local: &str, remote: &str) -> Vec<u8> {
    let mut h = Vec::with_capacity(256);
    h.extend_from_slice(b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'");
    h.extend_from_slice(dialback::HEADER_EXTRA.as_bytes());
    h.extend_from_slice(b" from='");
    escape_into(&mut h, local, true);
    h.extend_from_slice(b"' to='");
    escape_into(&mut h, remote, true);
    h.extend_from_slice(b"' version='1.0' xml:lang='en'>");
    h
}

/// TLS (direct or after STARTTLS), then the first stream header and features.
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
    let config = if t.direct_tls {
        s2s.tls.client_direct.clone()
    } else {
        s2s.tls.client.clone()
    };
    let tcp = if t.direct_tls {
        tcp
    } else {
        starttls(tcp, local, remote).await?
    };
    let tls = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| OutError::NotFound(format!("TLS: {e}")))?;
    let mut conn = Conn::new(
        Transport::TlsClient(Box::new(tls)),
        addr,
        NEGOTIATION,
        local,
        ns::SERVER,
    );
    conn.set_header_extra(dialback::HEADER_EXTRA);
    let (stream_id, features, db_declared) = open(&mut conn, local, remote).await?;
    let chain = conn.transport().map(tls::peer_chain).unwrap_or_default();
    let cert_valid = s2s.tls.valid_for(&chain, remote);
    let dialback_offered = db_declared || features.has_child("dialback", dialback::FEATURE_NS);
    tracing::debug!(cert_valid, dialback_offered, "stream open");
    Ok(Open {
        conn,
        stream_id,
        features,
        dialback_offered,
        cert_valid,
    })
}

/// Sends our header, reads the peer's and its features. Returns the stream id, the
/// features and whether the header declared the dialback namespace.
async fn open(
    conn: &mut Conn,
    local: &str,
    remote: &str,
) -> Result<(Option<String>, Element, bool), OutError> {
    conn.write(&initial_header(local, remote)).await?;
    let header = match conn.next_event().await? {
        Event::StreamOpen(h) => h,
        _ => return Err(OutError::NotFound("expected a stream header".into())),
    };
    check_header(&header)?;
    let db = header.prefixes.iter().any(|(_, uri)| uri == dialback::NS);
    let features = expect_features(conn.next_element().await?)?;
    Ok((header.attr("id").map(str::to_string), features, db))
}

/// The peer's header, checked like an incoming one (`rookery_stream::header`); a bad one
/// makes the domain unreachable for now.
fn check_header(h: &StreamHeader) -> Result<(), OutError> {
    if header::check_namespace(h, ns::SERVER).is_err() {
        return Err(OutError::NotFound(format!(
            "peer opened a stream in {:?}, not jabber:server",
            h.default_ns
        )));
    }
    if header::check_version(h).is_err() {
        return Err(OutError::NotFound("peer does not speak XMPP 1.0".into()));
    }
    Ok(())
}

fn expect_features(el: Element) -> Result<Element, OutError> {
    if el.is("features", ns::STREAM) {
        return Ok(el);
    }
    if el.is("error", ns::STREAM) {
        return Err(OutError::Peer(stream_error(&el)));
    }
    Err(OutError::NotFound(format!(
        "expected stream features, got <{}/>",
        el.name()
    )))
}

/// The stream error a peer sent.
fn stream_error(el: &Element) -> StreamError {
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

/// The plain-text part of a STARTTLS connection: header, features, `<starttls/>`,
/// `<proceed/>`. The parser is dropped afterwards, so nothing the peer sent before the
/// handshake reaches the TLS stream (RFC 6120 §5.4.3.3). Outgoing streams always use TLS.
async fn starttls(mut tcp: TcpStream, local: &str, remote: &str) -> Result<TcpStream, OutError> {
    let mut parser = StreamParser::new(NEGOTIATION);
    let mut buf = vec![0u8; 4096];
    tcp.write_all(&initial_header(local, remote)).await?;
    let mut step = 0;
    loop {
        let ev = match parser.next_event() {
            Ok(Some(ev)) => ev,
            Ok(None) => {
                let n = tcp.read(&mut buf).await?;
                if n == 0 {
                    return Err(OutError::NotFound("connection closed before TLS".into()));
                }
                parser.feed(buf.get(..n).unwrap_or_default());
                continue;
            }
            Err(e) => return Err(OutError::NotFound(format!("bad XML before TLS: {e}"))),
        };
        match (step, ev) {
            (0, Event::StreamOpen(h)) => {
                check_header(&h)?;
                step = 1;
            }
            (1, Event::Element(el)) => {
                let f = expect_features(el)?;
                if !f.has_child("starttls", ns::TLS) {
                    return Err(OutError::Policy("peer does not offer STARTTLS"));
                }
                tcp.write_all(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
                    .await?;
                step = 2;
            }
            (2, Event::Element(el)) if el.is("proceed", ns::TLS) => return Ok(tcp),
            (_, Event::Element(el)) if el.is("error", ns::STREAM) => {
                return Err(OutError::Peer(stream_error(&el)))
            }
            (_, other) => {
                return Err(OutError::NotFound(format!(
                    "unexpected {other:?} during STARTTLS"
                )))
            }
        }
    }
}

/// Ends our stream with an error we detected (we sent the header ourselves, so
/// [`Conn::fail`] is not used).
async fn fail_out(conn: &mut Conn, cond: StreamErrorCondition, text: &str) {
    let mut out = rookery_proto::stream::to_bytes(&StreamError::with_text(cond, text).to_element());
    out.extend_from_slice(rookery_proto::stream::CLOSE);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = conn.write(&out).await;
        conn.shutdown().await;
    })
    .await;
}

/// SASL EXTERNAL (XEP-0178 §3): on success the stream restarts and is authenticated for
/// every pair from `local`. `Ok(false)`: the peer refused (dialback may still work).
async fn sasl_external(conn: &mut Conn, local: &str, remote: &str) -> Result<bool, OutError> {
    let auth = Element::new("auth", ns::SASL)
        .with_attr("mechanism", external::MECHANISM)
        .with_text(B64.encode(external::client(local)));
    conn.send(&auth).await?;
    loop {
        let el = conn.next_element().await?;
        if el.is("challenge", ns::SASL) {
            conn.send(&Element::new("response", ns::SASL).with_text("="))
                .await?;
            continue;
        }
        if el.is("failure", ns::SASL) {
            tracing::info!(reply = %el, "SASL EXTERNAL refused");
            return Ok(false);
        }
        if !el.is("success", ns::SASL) {
            return Err(OutError::NotFound(format!(
                "unexpected <{}/> during SASL",
                el.name()
            )));
        }
        conn.restart();
        let (_, _features, _) = open(conn, local, remote).await?;
        return Ok(true);
    }
}

/// Authenticates the open stream, then serves it until it ends.
async fn session(
    s2s: &Arc<S2s>,
    open: Open,
    (local, remote): (&str, &str),
    deadline: Instant,
    backlog: &mut VecDeque<Stanza>,
    (stanzas, verifies): (&mut mpsc::Receiver<Stanza>, &mut mpsc::Receiver<VerifyReq>),
    auth: &AtomicU8,
) -> End {
    let Open {
        mut conn,
        stream_id,
        features,
        dialback_offered,
        cert_valid,
    } = open;
    let offers_external = features.get_child("mechanisms", ns::SASL).is_some_and(|m| {
        m.children()
            .any(|c| c.name() == "mechanism" && c.text().trim() == external::MECHANISM)
    });
    let mut ready = false;
    if cert_valid && offers_external {
        match tokio::time::timeout_at(deadline, sasl_external(&mut conn, local, remote)).await {
            Ok(Ok(true)) => {
                tracing::info!("authenticated with SASL EXTERNAL");
                auth.store(2, Ordering::Relaxed);
                s2s.reachable(remote);
                ready = true;
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => return End::Failed(e),
            Err(_) => return End::Failed(OutError::Timeout("SASL")),
        }
    }
    if !ready {
        if !cert_valid && s2s.config.require_valid_certificates {
            fail_out(
                &mut conn,
                StreamErrorCondition::PolicyViolation,
                "certificate not valid for the domain",
            )
            .await;
            return End::Failed(OutError::Policy(
                "the peer's certificate is not valid for its domain",
            ));
        }
        let Some(id) = stream_id
            .as_deref()
            .filter(|_| dialback_offered && s2s.config.dialback)
        else {
            fail_out(
                &mut conn,
                StreamErrorCondition::PolicyViolation,
                "no usable authentication",
            )
            .await;
            return End::Failed(OutError::Policy("no authentication method in common"));
        };
        let key = s2s.secret.key(remote, local, id);
        let req = Dialback::request(local, remote, None, &key);
        if let Err(e) = conn.write(&req.to_bytes()).await {
            return End::Failed(e.into());
        }
    }
    let idle = Duration::from_secs(s2s.config.idle_timeout_secs);
    let mut pending: Vec<VerifyReq> = Vec::new();
    let mut last_activity = Instant::now();
    if ready {
        conn.set_limits(Limits::S2S);
    }
    let closed = s2s.closed();
    tokio::pin!(closed);
    let result: End = loop {
        let idle_at =
            (!idle.is_zero() && ready && pending.is_empty()).then(|| last_activity + idle);
        tokio::select! {
            ev = conn.next_element() => {
                let el = match ev {
                    Ok(el) => el,
                    Err(ConnError::StreamClosed) => {
                        conn.close().await;
                        break if ready { End::Lost("stream closed by peer".into()) }
                              else { End::Failed(OutError::NotFound("stream closed by peer".into())) };
                    }
                    Err(ConnError::Stream(e)) => {
                        fail_out(&mut conn, e.condition, e.text.as_deref().unwrap_or("")).await;
                        break End::Failed(OutError::Peer(e));
                    }
                    Err(e) => break if ready { End::Lost(e.to_string()) } else { End::Failed(e.into()) },
                };
                last_activity = Instant::now();
                match on_element(&el, local, remote, &mut pending) {
                    Step::Authenticated => {
                        tracing::info!("authenticated with dialback");
                        auth.store(1, Ordering::Relaxed);
                        s2s.reachable(remote);
                        ready = true;
                        conn.set_limits(Limits::S2S);
                    }
                    Step::Refused(e) => {
                        conn.close().await;
                        break End::Failed(e);
                    }
                    Step::PeerError(e) => {
                        conn.close().await;
                        break if ready { End::Lost(e.to_string()) } else { End::Failed(OutError::Peer(e)) };
                    }
                    Step::Continue => {}
                }
            }
            Some(v) = verifies.recv() => {
                let req = Dialback::request(local, remote, Some(&v.stream_id), &v.key);
                if let Err(e) = conn.write(&req.to_bytes()).await {
                    let _ = v.reply.send(Verdict::Failed(SC::RemoteServerNotFound));
                    break if ready { End::Lost(e.to_string()) } else { End::Failed(e.into()) };
                }
                pending.push(v);
            }
            Some(s) = stanzas.recv(), if ready && backlog.is_empty() => {
                backlog.push_back(s);
            }
            () = &mut closed => {
                if ready {
                    flush_for_shutdown(&mut conn, backlog, stanzas).await;
                }
                let e = crate::shutdown_error();
                fail_out(&mut conn, e.condition, e.text.as_deref().unwrap_or_default()).await;
                break End::Failed(OutError::Shutdown);
            }
            _ = sleep_until(Some(deadline)), if !ready => {
                fail_out(&mut conn, StreamErrorCondition::ConnectionTimeout, "authentication took too long").await;
                break End::Failed(OutError::Timeout("authentication"));
            }
            _ = sleep_until(idle_at) => {
                if stanzas.is_empty() {
                    tracing::debug!("closing idle stream");
                    conn.close().await;
                    break End::Idle;
                }
                last_activity = Instant::now();
            }
        }
        if ready && !backlog.is_empty() {
            if let Err(e) = write_batch(&mut conn, backlog, stanzas).await {
                break End::Lost(e.to_string());
            }
            last_activity = Instant::now();
        }
    };
    for v in pending {
        let _ = v.reply.send(Verdict::Failed(SC::RemoteServerNotFound));
    }
    result
}

/// Writes the backlog and up to a batch more from the queue, then flushes. On error the
/// stanza being written stays at the front of the backlog.
async fn write_batch(
    conn: &mut Conn,
    backlog: &mut VecDeque<Stanza>,
    stanzas: &mut mpsc::Receiver<Stanza>,
) -> Result<(), ConnError> {
    let mut n = 0;
    while n < WRITE_BATCH {
        if backlog.is_empty() {
            match stanzas.try_recv() {
                Ok(s) => backlog.push_back(s),
                Err(_) => break,
            }
        }
        let Some(s) = backlog.front() else { break };
        conn.queue(&s.to_bytes());
        backlog.pop_front();
        n += 1;
    }
    conn.flush().await
}

/// At shutdown, on an authenticated stream: refuses new stanzas and writes what is queued
/// (the unavailable presence of the users the shutdown disconnected, among others), for at
/// most [`SHUTDOWN_FLUSH`]; what is left stays in the backlog and the queue, to bounce.
async fn flush_for_shutdown(
    conn: &mut Conn,
    backlog: &mut VecDeque<Stanza>,
    stanzas: &mut mpsc::Receiver<Stanza>,
) {
    stanzas.close();
    let flushed = tokio::time::timeout(SHUTDOWN_FLUSH, async {
        while !backlog.is_empty() || !stanzas.is_empty() {
            write_batch(conn, backlog, stanzas).await?;
        }
        Ok::<(), ConnError>(())
    })
    .await;
    if !matches!(flushed, Ok(Ok(()))) {
        tracing::info!("could not write everything queued before the shutdown");
    }
}

/// What an element on an outgoing stream means.
enum Step {
    Continue,
    Authenticated,
    Refused(OutError),
    PeerError(StreamError),
}

fn on_element(el: &Element, local: &str, remote: &str, pending: &mut Vec<VerifyReq>) -> Step {
    if el.is("error", ns::STREAM) {
        let e = stream_error(el);
        tracing::info!(error = %e, "peer sent a stream error");
        return Step::PeerError(e);
    }
    let db = match Dialback::parse(el) {
        Some(Ok(db)) => db,
        Some(Err(e)) => {
            tracing::debug!(error = %e, "ignoring bad dialback element");
            return Step::Continue;
        }
        None => {
            tracing::debug!(name = el.name(), "ignoring element on outgoing stream");
            return Step::Continue;
        }
    };
    if db.from != remote || db.to != local {
        tracing::debug!(from = %db.from, to = %db.to, "dialback answer for another pair");
        return Step::Continue;
    }
    match (db.kind, db.outcome) {
        (Kind::Result, Outcome::Valid) => Step::Authenticated,
        (Kind::Result, Outcome::Invalid) => {
            Step::Refused(OutError::Policy("the peer refused our dialback key"))
        }
        (Kind::Result, Outcome::Error(c)) => Step::Refused(match c {
            Some(SC::RemoteServerTimeout) => OutError::Timeout("peer's dialback verification"),
            c => OutError::NotFound(format!(
                "dialback error: {}",
                c.map_or("unknown", |c| c.as_str())
            )),
        }),
        (Kind::Verify, outcome) => {
            let Some(i) = pending
                .iter()
                .position(|v| Some(v.stream_id.as_str()) == db.id.as_deref())
            else {
                tracing::debug!(id = ?db.id, "db:verify answer for no request");
                return Step::Continue;
            };
            let v = pending.swap_remove(i);
            let verdict = match outcome {
                Outcome::Valid => Verdict::Valid,
                Outcome::Invalid => Verdict::Invalid,
                Outcome::Error(c) => Verdict::Failed(c.unwrap_or(SC::RemoteServerNotFound)),
                Outcome::Request => return Step::Continue,
            };
            let _ = v.reply.send(verdict);
            Step::Continue
        }
        (Kind::Result, Outcome::Request) => Step::Continue,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
