//! Incoming streams (RFC 6120 §4.7, §5, §6 for servers; XEP-0220 §2.1–2.4; XEP-0178;
//! XEP-0368).
//!
//! Negotiation is the sans-IO machine of [`crate::accepting`] (header, STARTTLS or direct
//! TLS, SASL EXTERNAL when the peer's certificate is valid for the domain its header names,
//! dialback offered), run here by the shared driver (`rookery_stream::negotiation::drive`),
//! which checks certificates for it. Then the shared bound-stream loop runs with the
//! [`Incoming`] policy: dialback requests are answered (`db:verify` at once, as the
//! authoritative server; `db:result` after asking the authoritative server of the claimed
//! domain, in a task that answers through the stream's outbound queue), and stanzas pass the
//! trust rule ([`crate::trust`]) before they are routed.
//!
//! At shutdown a negotiating stream ends with `system-shutdown` at once; a bound one through
//! its handle, registered with [`S2s`] for that.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rookery_core::SessionHandle;
use rookery_jid::Jid;
use rookery_proto::{
    ns, Stanza, StanzaErrorCondition as SC, StanzaParseError, StreamError,
    StreamErrorCondition as SEC,
};
use rookery_stream::negotiation::{self, Effects};
use rookery_stream::pump::{self, Inbound};
use rookery_stream::{Conn, ConnError, Transport};
use rookery_xml::{Element, Limits};
use rustls::pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::accepting::{self, Accepting, Done, Reply, Request};
use crate::dialback::{Dialback, Kind, Outcome};
use crate::outgoing::Verdict;
use crate::trust::{self, Authenticated};
use crate::{tls, Mode, S2s};

/// Serves one accepted TCP connection to the end.
pub(crate) async fn serve(s2s: Arc<S2s>, tcp: TcpStream, peer: SocketAddr, mode: Mode) {
    let span = tracing::info_span!("s2s_in", %peer, direct_tls = mode == Mode::DirectTls);
    async move {
        if !s2s.admit(peer.ip()) {
            tracing::info!("too many connections from this address; dropped");
            return;
        }
        if s2s.is_closing() {
            return;
        }
        let _live = Live::new(&s2s.incoming_live);
        tracing::debug!("accepted");
        let deadline = Duration::from_secs(s2s.config.negotiation_timeout_secs.max(1));
        let io = match mode {
            Mode::StartTls => Transport::Plain(tcp),
            Mode::DirectTls => {
                let acceptor = TlsAcceptor::from(s2s.tls.server_direct.clone());
                match tokio::time::timeout(deadline, acceptor.accept(tcp)).await {
                    Ok(Ok(t)) => Transport::Tls(Box::new(t)),
                    Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => return tracing::debug!("TLS handshake timed out"),
                }
            }
        };
        let mut conn = Conn::new(io, peer, Limits::PRE_AUTH, s2s.core.domain(), ns::SERVER);
        s2s.declare_dialback(&mut conn);
        let mut machine = Accepting::new(s2s.clone(), conn.is_tls());
        let mut holder = Some(conn);
        let mut driver = Driver { s2s: &s2s };
        let negotiating = negotiation::drive(&mut holder, &mut machine, &mut driver);
        let result = tokio::select! {
            r = tokio::time::timeout(deadline, negotiating) => r,
            () = s2s.closed() => Ok(Err(ConnError::Stream(crate::shutdown_error()))),
        };
        let Some(mut conn) = holder else { return };
        match result {
            Ok(Ok(done)) => bound(&s2s, conn, done).await,
            Ok(Err(e)) => pump::finish(&mut conn, e).await,
            Err(_) => {
                conn.fail(&StreamError::with_text(
                    SEC::ConnectionTimeout,
                    "negotiation took too long",
                ))
                .await
            }
        }
    }
    .instrument(span)
    .await
}

impl accepting::Policy for Arc<S2s> {
    fn is_hosted(&self, domain: &str) -> bool {
        S2s::is_hosted(self, domain)
    }

    fn require_encryption(&self) -> bool {
        self.config.require_encryption
    }

    fn dialback(&self) -> bool {
        self.config.dialback
    }
}

/// Performs what the machine asks for.
struct Driver<'a> {
    s2s: &'a S2s,
}

impl Effects<Accepting<Arc<S2s>>> for Driver<'_> {
    async fn perform(&mut self, conn: &mut Conn, request: Request) -> Result<Reply, ConnError> {
        let Request::CertificateValid(domain) = request;
        let chain = conn.transport().map(tls::peer_chain).unwrap_or_default();
        Ok(Reply(self.s2s.tls.valid_for(&chain, &domain)))
    }

    async fn start_tls(&mut self, conn: Conn) -> Result<Conn, ConnError> {
        conn.start_tls(&TlsAcceptor::from(self.s2s.tls.server.clone()))
            .await
    }
}

/// Runs the bound stream until it ends.
async fn bound(s2s: &Arc<S2s>, mut conn: Conn, done: Done) {
    let mut auth = Authenticated::default();
    if let Some(domain) = &done.authenticated {
        auth.add_domain(domain);
    }
    let auth = Arc::new(Mutex::new(auth));
    conn.set_limits(Limits {
        max_stanza_bytes: s2s.config.max_stanza_bytes,
        ..Limits::S2S
    });
    let (handle, mut end) = SessionHandle::new(
        s2s.core.next_session_id(),
        s2s.core.domain_jid().clone().into(),
        64,
    );
    s2s.incoming
        .insert(handle.id(), (handle.clone(), auth.clone()));
    if s2s.is_closing() {
        // Raced with close_all, which may not have seen this handle.
        handle.close(crate::shutdown_error());
    }
    let id = handle.id();
    // A stream that authenticates nothing in time is closed.
    let watchdog = {
        let auth = auth.clone();
        let h = handle.clone();
        let t = Duration::from_secs(s2s.config.negotiation_timeout_secs.max(1));
        tokio::spawn(async move {
            tokio::time::sleep(t).await;
            if auth.lock().map(|a| a.is_empty()).unwrap_or(true) {
                h.close(StreamError::with_text(
                    SEC::NotAuthorized,
                    "no domain was authenticated in time",
                ));
            }
        })
    };
    let mut inbound = Incoming {
        s2s: s2s.clone(),
        stream_id: done.stream_id,
        chain: Arc::new(conn.transport().map(tls::peer_chain).unwrap_or_default()),
        auth,
        handle,
        pending: Arc::new(AtomicUsize::new(0)),
    };
    let early = match done.first {
        Some(el) => inbound.element(&mut conn, el).await.err(),
        None => None,
    };
    let reason = match early {
        Some(r) => r,
        None => {
            let idle = Duration::from_secs(s2s.config.idle_timeout_secs);
            pump::run(&mut conn, &mut end, idle, &mut inbound).await
        }
    };
    watchdog.abort();
    s2s.incoming.remove(&id);
    pump::finish(&mut conn, reason).await;
}

/// Counts one live incoming connection for [`S2s::incoming_count`] while it exists.
struct Live<'a>(&'a AtomicUsize);

impl<'a> Live<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Live(count)
    }
}

impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The s2s inbound policy of a bound stream.
struct Incoming {
    s2s: Arc<S2s>,
    stream_id: String,
    chain: Arc<Vec<CertificateDer<'static>>>,
    auth: Arc<Mutex<Authenticated>>,
    handle: SessionHandle,
    pending: Arc<AtomicUsize>,
}

impl Incoming {
    fn allows(&self, remote: &str, local: &str) -> bool {
        self.auth
            .lock()
            .map(|a| a.allows(remote, local))
            .unwrap_or(false)
    }

    fn add_pair(auth: &Mutex<Authenticated>, remote: &str, local: &str) {
        if let Ok(mut a) = auth.lock() {
            a.add_pair(remote, local);
        }
    }

    /// `db:result` from an originating server (XEP-0220 §2.1.1, §2.4).
    async fn db_result(&mut self, conn: &mut Conn, db: Dialback) -> Result<(), ConnError> {
        let (remote, local) = (db.from.clone(), db.to.clone());
        let answer = |o| Bytes::from(db.answer(o).to_bytes());
        if !self.s2s.is_hosted(&local) {
            return conn
                .write(&answer(Outcome::Error(Some(SC::ItemNotFound))))
                .await;
        }
        if self.s2s.is_hosted(&remote) {
            tracing::info!(%remote, "peer claims a domain we host");
            conn.write(&answer(Outcome::Invalid)).await?;
            return close_after_invalid(&self.auth).map_or(Ok(()), |e| Err(ConnError::Stream(e)));
        }
        if self.allows(&remote, &local) {
            return conn.write(&answer(Outcome::Valid)).await;
        }
        // RFC 6120 §13.7.2.2 / XEP-0344: a certificate valid for the originating domain
        // authenticates it without the callback.
        if self.s2s.tls.valid_for(&self.chain, &remote) {
            Self::add_pair(&self.auth, &remote, &local);
            tracing::info!(%remote, %local, "dialback accepted on a valid certificate");
            return conn.write(&answer(Outcome::Valid)).await;
        }
        if self.s2s.config.require_valid_certificates || !self.s2s.config.dialback {
            tracing::info!(%remote, "dialback refused: certificate not valid for the domain");
            return conn
                .write(&answer(Outcome::Error(Some(SC::NotAuthorized))))
                .await;
        }
        if self.pending.load(Ordering::Relaxed) >= self.s2s.config.max_pending_dialback {
            return conn
                .write(&answer(Outcome::Error(Some(SC::ResourceConstraint))))
                .await;
        }
        self.pending.fetch_add(1, Ordering::Relaxed);
        let rx = self
            .s2s
            .request_verify(&local, &remote, &self.stream_id, &db.key);
        let timeout = self.s2s.config.dialback_timeout();
        let (auth, handle, pending) =
            (self.auth.clone(), self.handle.clone(), self.pending.clone());
        tokio::spawn(
            async move {
                let outcome = match tokio::time::timeout(timeout, rx).await {
                    Ok(Ok(Verdict::Valid)) => {
                        Self::add_pair(&auth, &remote, &local);
                        tracing::info!(%remote, %local, "authenticated with dialback");
                        Outcome::Valid
                    }
                    Ok(Ok(Verdict::Invalid)) => {
                        tracing::info!(%remote, "dialback key invalid");
                        Outcome::Invalid
                    }
                    Ok(Ok(Verdict::Failed(c))) => Outcome::Error(Some(c)),
                    Ok(Err(_)) => Outcome::Error(Some(SC::RemoteServerNotFound)),
                    Err(_) => Outcome::Error(Some(SC::RemoteServerTimeout)),
                };
                pending.fetch_sub(1, Ordering::Relaxed);
                handle.send(Bytes::from(db.answer(outcome).to_bytes()));
                if let (Outcome::Invalid, Some(e)) = (outcome, close_after_invalid(&auth)) {
                    handle.close(e);
                }
            }
            .in_current_span(),
        );
        Ok(())
    }

    /// The trust rule ([`trust::check`]) for a stanza with these addresses.
    fn check(&self, from: Option<&Jid>, to: Option<&Jid>) -> Result<(), ConnError> {
        let verdict = match self.auth.lock() {
            Ok(a) => trust::check(from, to, &a, |d| self.s2s.is_hosted(d)),
            Err(_) => Err(StreamError::new(SEC::InternalServerError)),
        };
        verdict.map_err(ConnError::Stream)
    }

    /// A malformed stanza. An address that is no JID ends the stream with
    /// `improper-addressing` (RFC 6120 §4.9.3.7), as a missing one does; otherwise, once the
    /// addresses pass the trust rule, its error (`bad-request`, ...) goes back to the sender
    /// (§8.3.1; an IQ get/set is always answered, §8.2.3), except for an error stanza or an
    /// IQ result.
    async fn malformed(&self, e: StanzaParseError) -> Result<(), ConnError> {
        let StanzaParseError::Malformed { element, .. } = &e else {
            return Ok(());
        };
        let address = |attr| {
            element.attr(attr).map(Jid::parse).transpose().map_err(|_| {
                ConnError::stream(SEC::ImproperAddressing, "an address is not a valid JID")
            })
        };
        let (from, to) = (address("from")?, address("to")?);
        self.check(from.as_ref(), to.as_ref())?;
        tracing::debug!(error = %e, "malformed stanza from a peer");
        let answering = to.as_ref().map_or("", |t| t.domain());
        if let Some(reply) = e
            .reply(answering)
            .and_then(|r| Stanza::from_element(r).ok())
        {
            self.s2s.core.route(reply).await;
        }
        Ok(())
    }

    /// `db:verify` from a receiving server: we are the authoritative server (XEP-0220
    /// §2.1.3).
    async fn db_verify(&mut self, conn: &mut Conn, db: Dialback) -> Result<(), ConnError> {
        let (receiving, originating) = (db.from.as_str(), db.to.as_str());
        let outcome = if !self.s2s.is_hosted(originating) {
            Outcome::Error(Some(SC::ItemNotFound))
        } else {
            let id = db.id.as_deref().unwrap_or_default();
            if self.s2s.secret.verify(receiving, originating, id, &db.key) {
                Outcome::Valid
            } else {
                tracing::info!(receiving, originating, "db:verify with a wrong key");
                Outcome::Invalid
            }
        };
        conn.write(&db.answer(outcome).to_bytes()).await
    }
}

/// XEP-0220 §2.1.2: after a `db:result` judged `invalid`, a stream on which no other domain
/// is authenticated MUST be closed; the stream error it ends with, if so (the answer is
/// written first).
fn close_after_invalid(auth: &Mutex<Authenticated>) -> Option<StreamError> {
    auth.lock().map_or(true, |a| a.is_empty()).then(|| {
        StreamError::with_text(
            SEC::NotAuthorized,
            "dialback key refused, and nothing else is authenticated on this stream",
        )
    })
}

impl Inbound for Incoming {
    async fn element(&mut self, conn: &mut Conn, el: Element) -> Result<(), ConnError> {
        if let Some(db) = Dialback::parse(&el) {
            let db = db.map_err(|e| ConnError::stream(e.stream_condition(), &e.to_string()))?;
            return match (db.kind, db.outcome) {
                (Kind::Result, Outcome::Request) => self.db_result(conn, db).await,
                (Kind::Verify, Outcome::Request) => self.db_verify(conn, db).await,
                // Answers belong on our outgoing streams; ignore strays.
                _ => Ok(()),
            };
        }
        if el.is("error", ns::STREAM) {
            tracing::info!(error = %el, "peer sent a stream error");
            return Err(ConnError::StreamClosed);
        }
        let stanza = match Stanza::from_element(el) {
            Ok(s) => s,
            Err(e @ StanzaParseError::Malformed { .. }) => return self.malformed(e).await,
            Err(StanzaParseError::NotAStanza(name)) => {
                return Err(ConnError::Stream(StreamError::with_text(
                    SEC::UnsupportedStanzaType,
                    format!("unexpected <{name}/>"),
                )))
            }
        };
        self.check(stanza.from(), stanza.to())?;
        self.s2s.core.route_from_peer(stanza).await;
        Ok(())
    }
}
