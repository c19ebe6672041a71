//! The bound phase of an outgoing stream (RFC 6120 §4; XEP-0220 §2.1), on the shared loop
//! of every stream (`rookery_stream::pump`): the [`Sending`] policy waits for the dialback
//! answer when the stream authenticates that way, writes the pair's queued stanzas once it
//! is authenticated, writes verification requests of the receiving role at any time, and
//! closes the stream when idle, at shutdown, when an administrator closes it
//! ([`S2s::close_remote`]), or when authentication takes too long.
//!
//! What differs from the other streams on the loop, and why:
//! - the queue is the pair's own channel of typed stanzas, not the router's byte queue: a
//!   stanza not yet written when the stream fails bounces to its sender with an error, so
//!   it must still be a stanza (each holds its bytes against the budgets of
//!   [`crate::queue`] until it is written). It and the verification requests come through
//!   [`Inbound::wake`] and are written in [`Inbound::woken`]; the router's queue of the
//!   loop stays empty;
//! - the idle timeout counts writes as activity and closes with `</stream:stream>` (no
//!   stream error), and the authentication deadline ends the stream with
//!   `connection-timeout`: both are [`Inbound::timer`]s, and the loop's own idle timeout is
//!   off;
//! - how the stream ended decides what happens to the stanzas waiting (retry on a new
//!   stream, bounce, hand to a new stream), so the policy records the outcome ([`End`])
//!   where it ends the loop itself, and [`Sending::run`] maps the loop's other reasons.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rookery_core::deadline::after;
use rookery_core::SessionHandle;
use rookery_proto::{ns, StanzaErrorCondition as SC, StreamError, StreamErrorCondition};
use rookery_stream::pump::{self, Inbound};
use rookery_stream::{Conn, ConnError};
use rookery_xml::{Element, Limits};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::dialback::{Dialback, Kind, Outcome};
use crate::initiating::stream_error;
use crate::outgoing::{CloseSignal, End, OutError, Queues, Verdict, VerifyReq, VERIFY_QUEUE};
use crate::queue::Queued;
use crate::S2s;

/// Most queued stanzas written before one flush.
const WRITE_BATCH: usize = 64;
/// How long an outgoing stream may take to write its queue at shutdown.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);

/// What a wake-up brought for [`Inbound::woken`] to act on.
enum Woke {
    /// A verification request to write.
    Verify(VerifyReq),
    /// The server is shutting down.
    Shutdown,
    /// An administrator closes the stream, with this error.
    Close(StreamError),
}

/// The policy of an authenticated (or authenticating, by dialback) outgoing stream.
pub(crate) struct Sending<'a> {
    s2s: &'a Arc<S2s>,
    local: &'a str,
    remote: &'a str,
    /// When authentication must be done.
    deadline: Instant,
    idle: Duration,
    /// Authenticated: stanzas may be written.
    ready: bool,
    last_activity: Instant,
    /// Verification requests written, waiting for their answer, with when each was written.
    pending: Vec<(Instant, VerifyReq)>,
    backlog: &'a mut VecDeque<Queued>,
    stanzas: &'a mut mpsc::Receiver<Queued>,
    verifies: &'a mut mpsc::Receiver<VerifyReq>,
    auth: &'a AtomicU8,
    closed: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Set by [`S2s::close_remote`].
    close: CloseSignal,
    woke: Option<Woke>,
    /// How the stream ended, when the policy ended it.
    end: Option<End>,
}

impl<'a> Sending<'a> {
    /// The policy of the stream `local` → `remote`; `ready` when it is authenticated already
    /// (SASL), else it waits for the dialback answer until `deadline`.
    pub(crate) fn new(
        s2s: &'a Arc<S2s>,
        (local, remote): (&'a str, &'a str),
        deadline: Instant,
        idle: Duration,
        ready: bool,
        (backlog, stanzas, verifies, close): Queues<'a>,
        auth: &'a AtomicU8,
    ) -> Self {
        Sending {
            s2s,
            local,
            remote,
            deadline,
            idle,
            ready,
            last_activity: Instant::now(),
            pending: Vec::new(),
            backlog,
            stanzas,
            verifies,
            auth,
            closed: Box::pin(s2s.closed()),
            close,
            woke: None,
            end: None,
        }
    }

    /// Serves the stream on the shared loop until it ends; says how.
    pub(crate) async fn run(&mut self, conn: &mut Conn) -> End {
        if self.ready {
            conn.set_limits(Limits::S2S);
        }
        // The loop takes its stanzas from a queue of the router's; this stream's are typed
        // and come through `wake`, so the loop's queue stays empty (its handle is kept, or
        // the loop would see it closed).
        let (_handle, mut queue) = SessionHandle::new(
            self.s2s.core.next_session_id(),
            self.s2s.core.domain_jid().clone().into(),
            1,
        );
        let reason = match self.write_backlog(conn).await {
            Ok(()) => pump::run(conn, &mut queue, Duration::ZERO, self).await,
            Err(e) => e,
        };
        let end = match self.end.take() {
            Some(end) => end,
            None => self.lost(conn, reason).await,
        };
        for (_, v) in self.pending.drain(..) {
            let _ = v.reply.send(Verdict::Failed(SC::RemoteServerNotFound));
        }
        end
    }

    /// How the stream ended when the loop ended it (the connection or the peer).
    async fn lost(&mut self, conn: &mut Conn, reason: ConnError) -> End {
        match reason {
            ConnError::StreamClosed => {
                conn.close().await;
                self.lost_or_failed("stream closed by peer".into(), |why| {
                    OutError::NotFound(why)
                })
            }
            ConnError::Stream(e) => {
                fail_out(conn, e.condition, e.text.as_deref().unwrap_or("")).await;
                End::Failed(OutError::Peer(e))
            }
            e => {
                let why = e.to_string();
                if self.ready {
                    End::Lost(why)
                } else {
                    End::Failed(e.into())
                }
            }
        }
    }

    fn lost_or_failed(&self, why: String, failed: impl FnOnce(String) -> OutError) -> End {
        if self.ready {
            End::Lost(why)
        } else {
            End::Failed(failed(why))
        }
    }

    /// Ends the loop with `end` (the connection was closed as it calls for).
    fn stop(&mut self, end: End) -> ConnError {
        self.end = Some(end);
        ConnError::StreamClosed
    }

    /// Writes what waits, once authenticated.
    async fn write_backlog(&mut self, conn: &mut Conn) -> Result<(), ConnError> {
        if !self.ready || self.backlog.is_empty() {
            return Ok(());
        }
        if let Err(e) = write_batch(conn, self.backlog, self.stanzas).await {
            return Err(self.stop(End::Lost(e.to_string())));
        }
        self.last_activity = Instant::now();
        Ok(())
    }

    /// Gives up the verifications that waited [`crate::S2sConfig::dialback_timeout`] (their
    /// requester gave up at the same time, XEP-0220 §2.4) or whose requester is gone: a
    /// peer that never answers `db:verify` cannot make them pile up.
    fn expire_verifications(&mut self, now: Instant) {
        let timeout = self.s2s.config.dialback_timeout();
        let (keep, expired) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(at, v)| after(*at, timeout) > now && !v.reply.is_closed());
        self.pending = keep;
        for (_, v) in expired {
            let _ = v.reply.send(Verdict::Failed(SC::RemoteServerTimeout));
        }
    }

    /// When the oldest waiting verification expires.
    fn verification_expiry(&self) -> Option<Instant> {
        let timeout = self.s2s.config.dialback_timeout();
        self.pending.iter().map(|(at, _)| after(*at, timeout)).min()
    }

    /// Writes a verification request, unless [`VERIFY_QUEUE`] already wait for their
    /// answer: then the requester hears `resource-constraint` at once.
    async fn write_verify(&mut self, conn: &mut Conn, v: VerifyReq) -> Result<(), ConnError> {
        let now = Instant::now();
        self.expire_verifications(now);
        if self.pending.len() >= VERIFY_QUEUE {
            tracing::info!("too many verifications waiting for their answer; refused");
            let _ = v.reply.send(Verdict::Failed(SC::ResourceConstraint));
            return Ok(());
        }
        let req = Dialback::request(self.local, self.remote, Some(&v.stream_id), &v.key);
        if let Err(e) = conn.write(&req.to_bytes()).await {
            let _ = v.reply.send(Verdict::Failed(SC::RemoteServerNotFound));
            let end = if self.ready {
                End::Lost(e.to_string())
            } else {
                End::Failed(e.into())
            };
            return Err(self.stop(end));
        }
        self.pending.push((now, v));
        Ok(())
    }

    /// When the idle timeout is due: authenticated, nothing pending.
    fn idle_at(&self) -> Option<Instant> {
        (!self.idle.is_zero() && self.ready && self.pending.is_empty())
            .then(|| after(self.last_activity, self.idle))
    }
}

impl Inbound for Sending<'_> {
    async fn element(&mut self, conn: &mut Conn, el: Element) -> Result<(), ConnError> {
        self.last_activity = Instant::now();
        match on_element(&el, self.local, self.remote, &mut self.pending) {
            Step::Authenticated => {
                tracing::info!("authenticated with dialback");
                self.auth.store(1, Ordering::Relaxed);
                self.s2s.reachable(self.remote);
                self.ready = true;
                conn.set_limits(Limits::S2S);
            }
            Step::Refused(e) => {
                conn.close().await;
                return Err(self.stop(End::Failed(e)));
            }
            Step::PeerError(e) => {
                conn.close().await;
                let end = self.lost_or_failed(e.to_string(), |_| OutError::Peer(e));
                return Err(self.stop(end));
            }
            Step::Continue => {}
        }
        self.write_backlog(conn).await
    }

    /// A verification request, a stanza (once authenticated, one at a time: the rest are
    /// taken in batches when writing), or the shutdown.
    async fn wake(&mut self) -> Result<(), ConnError> {
        let take_stanza = self.ready && self.backlog.is_empty();
        tokio::select! {
            Some(v) = self.verifies.recv() => self.woke = Some(Woke::Verify(v)),
            Some(s) = self.stanzas.recv(), if take_stanza => self.backlog.push_back(s),
            () = &mut self.closed => self.woke = Some(Woke::Shutdown),
            Ok(()) = self.close.changed() => {
                self.woke = self.close.borrow_and_update().clone().map(Woke::Close);
            }
        }
        Ok(())
    }

    async fn woken(&mut self, conn: &mut Conn) -> Result<(), ConnError> {
        match self.woke.take() {
            Some(Woke::Verify(v)) => self.write_verify(conn, v).await?,
            Some(Woke::Shutdown) => {
                if self.ready {
                    flush_for_shutdown(conn, self.backlog, self.stanzas).await;
                }
                let e = crate::shutdown_error();
                fail_out(conn, e.condition, e.text.as_deref().unwrap_or_default()).await;
                return Err(self.stop(End::Failed(OutError::Shutdown)));
            }
            Some(Woke::Close(e)) => {
                if self.ready {
                    flush_for_shutdown(conn, self.backlog, self.stanzas).await;
                }
                tracing::info!(
                    reason = e.text.as_deref().unwrap_or_default(),
                    "outgoing stream closed by an administrator"
                );
                fail_out(conn, e.condition, e.text.as_deref().unwrap_or_default()).await;
                // As after an idle close: what still waits goes to a new stream.
                return Err(self.stop(End::Idle));
            }
            None => {}
        }
        self.write_backlog(conn).await
    }

    fn deadline(&self, _conn: &Conn) -> Option<Instant> {
        let auth = (!self.ready).then_some(self.deadline);
        [auth, self.idle_at(), self.verification_expiry()]
            .into_iter()
            .flatten()
            .min()
    }

    async fn timer(&mut self, conn: &mut Conn) -> Result<(), ConnError> {
        let now = Instant::now();
        self.expire_verifications(now);
        if !self.ready && self.deadline <= now {
            fail_out(
                conn,
                StreamErrorCondition::ConnectionTimeout,
                "authentication took too long",
            )
            .await;
            return Err(self.stop(End::Failed(OutError::Timeout("authentication"))));
        }
        if self.idle_at().is_some_and(|t| t <= now) {
            if self.stanzas.is_empty() {
                tracing::debug!("closing idle stream");
                conn.close().await;
                return Err(self.stop(End::Idle));
            }
            self.last_activity = now;
        }
        Ok(())
    }
}

/// Ends our stream with an error we detected (we sent the header ourselves, so
/// [`Conn::fail`] is not used).
pub(crate) async fn fail_out(conn: &mut Conn, cond: StreamErrorCondition, text: &str) {
    let mut out = rookery_proto::stream::to_bytes(&StreamError::with_text(cond, text).to_element());
    out.extend_from_slice(rookery_proto::stream::CLOSE);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = conn.write(&out).await;
        conn.shutdown().await;
    })
    .await;
}

/// Writes the backlog and up to a batch more from the queue, then flushes. What went into
/// the connection's buffer is the connection's: a failed flush takes it with it, like any
/// stanza written to a peer that goes away (a server-to-server stream has no
/// acknowledgements, so nobody knows what the peer read). A batch also ends at
/// [`pump::WRITE_BATCH_BYTES`]: a stanza leaves the byte budgets of the queue when it goes
/// into the connection's buffer, so that buffer holds little while the peer is slow to read.
async fn write_batch(
    conn: &mut Conn,
    backlog: &mut VecDeque<Queued>,
    stanzas: &mut mpsc::Receiver<Queued>,
) -> Result<(), ConnError> {
    let mut n = 0;
    while n < WRITE_BATCH && conn.queued() < pump::WRITE_BATCH_BYTES {
        if backlog.is_empty() {
            match stanzas.try_recv() {
                Ok(s) => backlog.push_back(s),
                Err(_) => break,
            }
        }
        let Some(s) = backlog.front() else { break };
        conn.queue(&s.stanza().to_bytes());
        // Dropped: its bytes are given back to the queue's budgets.
        backlog.pop_front();
        n += 1;
    }
    conn.flush().await
}

/// At shutdown (or an administrator's close), on an authenticated stream: refuses new
/// stanzas and writes what is queued (the unavailable presence of the users the shutdown
/// disconnected, among others), for at most [`SHUTDOWN_FLUSH`]; what is left stays in the
/// backlog and the queue, to bounce (or, after a close, to go to a new stream).
async fn flush_for_shutdown(
    conn: &mut Conn,
    backlog: &mut VecDeque<Queued>,
    stanzas: &mut mpsc::Receiver<Queued>,
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

fn on_element(
    el: &Element,
    local: &str,
    remote: &str,
    pending: &mut Vec<(Instant, VerifyReq)>,
) -> Step {
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
        (Kind::Result, Outcome::Invalid) => Step::Refused(OutError::DialbackInvalid),
        (Kind::Result, Outcome::Error(c)) => Step::Refused(OutError::DialbackError(c)),
        (Kind::Verify, outcome) => {
            let Some(i) = pending
                .iter()
                .position(|(_, v)| Some(v.stream_id.as_str()) == db.id.as_deref())
            else {
                tracing::debug!(id = ?db.id, "db:verify answer for no request");
                return Step::Continue;
            };
            let (_, v) = pending.swap_remove(i);
            let verdict = match outcome {
                Outcome::Valid => Verdict::Valid,
                Outcome::Invalid => Verdict::Invalid,
                // XEP-0220 §2.4: whatever the authoritative server said (its
                // item-not-found would read as "not hosted here" to the initiator).
                Outcome::Error(_) => Verdict::Failed(SC::RemoteServerNotFound),
                Outcome::Request => return Step::Continue,
            };
            let _ = v.reply.send(verdict);
            Step::Continue
        }
        (Kind::Result, Outcome::Request) => Step::Continue,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use tokio::sync::oneshot;

    use super::*;

    fn answer(kind: &str, from: &str, id: Option<&str>, type_: &str) -> Element {
        let mut el = Element::new(kind, crate::dialback::NS)
            .with_attr("from", from)
            .with_attr("to", "us.test")
            .with_attr("type", type_);
        if let Some(id) = id {
            el.set_attr("id", id);
        }
        el
    }

    fn step(el: &Element, pending: &mut Vec<(Instant, VerifyReq)>) -> Step {
        on_element(el, "us.test", "them.test", pending)
    }

    #[test]
    fn dialback_answers_to_our_request() {
        let mut pending = Vec::new();
        let valid = answer("result", "them.test", None, "valid");
        assert!(matches!(step(&valid, &mut pending), Step::Authenticated));
        let invalid = answer("result", "them.test", None, "invalid");
        assert!(matches!(
            step(&invalid, &mut pending),
            Step::Refused(OutError::DialbackInvalid)
        ));
        // For another pair: ignored.
        let other = answer("result", "else.test", None, "valid");
        assert!(matches!(step(&other, &mut pending), Step::Continue));
        let error = Element::new("error", ns::STREAM)
            .with_child(Element::new("conflict", ns::STREAM_ERRORS));
        assert!(matches!(step(&error, &mut pending), Step::PeerError(_)));
    }

    /// A `db:verify` answer resolves the request with the same stream id, once.
    #[test]
    fn verification_answers_resolve_their_request() {
        let (reply, mut rx) = oneshot::channel();
        let mut pending = vec![(
            Instant::now(),
            VerifyReq {
                stream_id: "s7".into(),
                key: "k".into(),
                reply,
            },
        )];
        let wrong_id = answer("verify", "them.test", Some("s8"), "valid");
        assert!(matches!(step(&wrong_id, &mut pending), Step::Continue));
        assert_eq!(pending.len(), 1);
        let valid = answer("verify", "them.test", Some("s7"), "valid");
        assert!(matches!(step(&valid, &mut pending), Step::Continue));
        assert!(pending.is_empty());
        assert_eq!(rx.try_recv().unwrap(), Verdict::Valid);
    }
}
