//! How the router reaches a connection.
//!
//! Each connection owns a bounded queue of serialized stanzas, drained by its writer. The
//! router never blocks on a slow reader: when the queue is full the session is killed with a
//! stream error instead (design.md: "bounded per-connection queues").
//!
//! The queue is bounded twice: in stanzas and in bytes ([`QueueLimit`]). A count alone lets
//! one client that stops reading pin `stanzas × the stanza size limit` (a quarter of a GiB
//! with 1,024 stanzas of 256 KiB); the byte bound keeps that to about `bytes` plus one stanza.
//!
//! The bound is enforced by killing, not by refusing: the stanza that finds the queue full is
//! still queued, so it is never lost between the router and the session. A session cut off
//! that way is no longer a routing target ([`SessionHandle::is_target`], checked by the
//! core's lookups), so only senders that already held the handle can add to it (the queue
//! exceeds its bound by at most the routings in flight). The session's end, which routes
//! again whatever it could not write (e.g. `rookery_c2s`'s `terminate`), treats that stanza
//! like every other one still queued: RFC 6120 §10.5 / RFC 6121 §8.5.3.2, another resource or
//! offline storage for a message, an error for an IQ request.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use rookery_jid::Jid;
use rookery_proto::{StreamError, StreamErrorCondition};
use tokio::sync::{mpsc, Notify};

/// Unique id of a session in this process.
pub type SessionId = u64;

/// What the router sends to a connection's writer.
#[derive(Debug)]
pub enum Outbound {
    /// Serialized stanza bytes, shared among all recipients of a fan-out.
    Bytes(Bytes),
    /// A [`Receipt`] for what was queued before it ([`SessionHandle::receipt`]).
    Receipt(Receipt),
}

/// Queued behind stanzas by [`SessionHandle::receipt`]; whoever holds its receiving end
/// learns, when the session lets it go, that every stanza queued before it is out of the
/// server's hands: acknowledged by the client where XEP-0198 is on, handed to the connection
/// otherwise, or — the session ended first — routed again with what it had not delivered.
/// Either way those stanzas are someone else's now: offline storage deletes what it
/// delivered only then, so a crash before the client's acknowledgement loses nothing.
/// A session lets a receipt go by dropping it; one that holds receipts keeps them until it
/// has routed again what it could not deliver.
#[derive(Debug)]
pub struct Receipt {
    _done: tokio::sync::oneshot::Sender<()>,
}

/// Why and whether a session must close; set once, observed by the connection loop.
#[derive(Debug, Default)]
pub struct Kill {
    reason: OnceLock<StreamError>,
    notify: Notify,
    fired: AtomicBool,
    /// The session is handing itself over to another node of a cluster (XEP-0198
    /// resumption there): its replacement by that node's session is its end, told to nobody.
    moving: AtomicBool,
}

impl Kill {
    /// Marks the session as handing itself over to another node (`true`), or no longer.
    pub fn set_moving(&self, moving: bool) {
        self.moving.store(moving, Ordering::Release);
    }

    /// Requests the close with `reason` (the first reason wins).
    pub fn fire(&self, reason: StreamError) {
        let _ = self.reason.set(reason);
        self.fired.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// Waits until the kill switch fires; returns the reason.
    pub async fn fired(&self) -> StreamError {
        loop {
            if self.fired.load(Ordering::Acquire) {
                return self
                    .reason
                    .get()
                    .cloned()
                    .unwrap_or_else(|| StreamError::new(StreamErrorCondition::UndefinedCondition));
            }
            self.notify.notified().await;
        }
    }
}

/// How much a session's queue may hold before the session is cut off for not reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimit {
    /// Stanzas.
    pub stanzas: usize,
    /// Bytes of serialized stanzas. The stanza that crosses it is still queued (and kills
    /// the session), so the queue holds at most this plus one stanza and the routings in
    /// flight.
    pub bytes: usize,
}

impl QueueLimit {
    /// The byte bound when none is configured: four stanzas of the largest size a client
    /// may send (256 KiB), a few thousand ordinary ones.
    pub const DEFAULT_BYTES: usize = 1024 * 1024;
}

/// A bound of `stanzas` with the default byte bound.
impl From<usize> for QueueLimit {
    fn from(stanzas: usize) -> Self {
        QueueLimit {
            stanzas,
            bytes: QueueLimit::DEFAULT_BYTES,
        }
    }
}

/// How much a session's queue holds, shared by both ends: the channel itself is unbounded
/// so that a send never fails for lack of room (see the module doc).
#[derive(Debug)]
struct Depth {
    queued: AtomicUsize,
    capacity: usize,
    /// Bytes queued, and their bound.
    bytes: AtomicUsize,
    byte_capacity: usize,
    /// The queue overflowed: the session is being cut off for not reading.
    overflowed: AtomicBool,
}

impl Depth {
    /// One item left the queue (a receipt was never counted in).
    fn taken(&self, item: &Outbound) {
        if let Outbound::Bytes(b) = item {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.bytes.fetch_sub(b.len(), Ordering::AcqRel);
        }
    }

    /// Whether half of both bounds is still free (what paced senders wait for).
    fn at_most_half_full(&self) -> bool {
        self.queued.load(Ordering::Acquire) * 2 <= self.capacity
            && self.bytes.load(Ordering::Acquire) * 2 <= self.byte_capacity
    }
}

/// How a client session reaches the server, for operators (the admin API's session list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// An XMPP stream over TCP (RFC 6120), with STARTTLS or direct TLS (XEP-0368).
    Tcp,
    /// XMPP over WebSocket (RFC 7395).
    WebSocket,
    /// BOSH (XEP-0124, XEP-0206).
    Bosh,
}

impl Transport {
    /// The lower-case name used in the admin API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::WebSocket => "websocket",
            Transport::Bosh => "bosh",
        }
    }
}

/// The router's handle on one connection.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    id: SessionId,
    jid: Jid,
    /// Where the connection comes from, when the listener said so ([`SessionHandle::with_origin`]).
    /// Plain values, so cloning a handle on the routing path costs no reference count.
    origin: Option<(std::net::SocketAddr, Transport)>,
    /// Where its bytes go; [`Sink::Forward`] for a session bound on another node of a
    /// cluster, whose stanzas cross the bus (crates/cluster).
    sink: Sink,
    kill: Arc<Kill>,
}

/// Where a handle's bytes go.
#[derive(Debug, Clone)]
enum Sink {
    /// The session's own bounded queue, drained by its connection.
    Queue {
        tx: mpsc::UnboundedSender<Outbound>,
        depth: Arc<Depth>,
    },
    /// Straight into the cluster's forwarder for the node where the session is
    /// ([`SessionHandle::forwarded`]): a remote session needs no queue and no task of its own
    /// on every other node, and a stanza for it one task hop less.
    Forward(mpsc::UnboundedSender<(Jid, Bytes)>),
}

/// The receiving side of a session's queue.
#[derive(Debug)]
pub struct Queue {
    rx: mpsc::UnboundedReceiver<Outbound>,
    depth: Arc<Depth>,
    /// Receipts found by [`Queue::close_and_drain`], let go with the queue: after the
    /// session routed again what it drained.
    drained: Vec<Receipt>,
}

impl Queue {
    /// The next queued item; `None` once the queue is closed and empty. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Outbound> {
        let item = self.rx.recv().await;
        if let Some(item) = &item {
            self.depth.taken(item);
        }
        item
    }

    /// The next queued item if there is one now.
    pub fn try_recv(&mut self) -> Result<Outbound, mpsc::error::TryRecvError> {
        let item = self.rx.try_recv()?;
        self.depth.taken(&item);
        Ok(item)
    }

    /// Refuses further sends; what is queued can still be received. A send either happened
    /// before this (and is received) or fails, so draining after it misses nothing.
    pub fn close(&mut self) {
        self.rx.close();
    }

    /// Closes the queue and takes what is still in it, oldest first: what a session that ends
    /// must route again. The receipts among it stay with the queue until it is dropped (the
    /// stanzas before them are not delivered until they are routed again).
    pub fn close_and_drain(&mut self) -> Vec<Bytes> {
        self.close();
        let mut out = Vec::new();
        while let Ok(item) = self.try_recv() {
            match item {
                Outbound::Bytes(b) => out.push(b),
                Outbound::Receipt(r) => self.drained.push(r),
            }
        }
        out
    }
}

/// The receiving side a connection keeps.
#[derive(Debug)]
pub struct SessionEnd {
    /// Stanzas to write.
    pub rx: Queue,
    /// The kill switch.
    pub kill: Arc<Kill>,
}

impl SessionHandle {
    /// A handle and its receiving end, with a queue bounded by `limit` (a number of stanzas
    /// converts, with the default byte bound).
    pub fn new(
        id: SessionId,
        jid: Jid,
        limit: impl Into<QueueLimit>,
    ) -> (SessionHandle, SessionEnd) {
        let limit = limit.into();
        let (tx, rx) = mpsc::unbounded_channel();
        let depth = Arc::new(Depth {
            queued: AtomicUsize::new(0),
            capacity: limit.stanzas.max(1),
            bytes: AtomicUsize::new(0),
            byte_capacity: limit.bytes.max(1),
            overflowed: AtomicBool::new(false),
        });
        let kill = Arc::new(Kill::default());
        (
            SessionHandle {
                id,
                jid,
                origin: None,
                sink: Sink::Queue {
                    tx,
                    depth: depth.clone(),
                },
                kill: kill.clone(),
            },
            SessionEnd {
                rx: Queue {
                    rx,
                    depth,
                    drained: Vec::new(),
                },
                kill,
            },
        )
    }

    /// A handle for a session bound on another node of a cluster whose bytes go, with its full
    /// JID, straight into `forwarder` (the cluster's queue for that node). Once closed it
    /// takes nothing more ([`SessionHandle::send`] is `false`, so the router decides again);
    /// what the forwarder took is the forwarder's to deliver, route again or bounce.
    pub fn forwarded(
        id: SessionId,
        jid: Jid,
        forwarder: mpsc::UnboundedSender<(Jid, Bytes)>,
    ) -> SessionHandle {
        SessionHandle {
            id,
            jid,
            origin: None,
            sink: Sink::Forward(forwarder),
            kill: Arc::new(Kill::default()),
        }
    }

    /// Records the peer address and transport of a client session (set by the listener
    /// before binding, read by the admin API).
    pub fn with_origin(mut self, peer: std::net::SocketAddr, transport: Transport) -> Self {
        self.origin = Some((peer, transport));
        self
    }

    /// Whether the session is bound on another node of a cluster (a handle made by
    /// [`SessionHandle::forwarded`], see [`crate::Core::bind_remote`]): it routes like any
    /// session, but is not this node's to list, count, announce to or close.
    pub fn is_remote(&self) -> bool {
        matches!(self.sink, Sink::Forward(_))
    }

    /// The peer address and transport, if the listener recorded them.
    pub fn origin(&self) -> Option<(std::net::SocketAddr, Transport)> {
        self.origin
    }

    /// The session id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The session's full JID.
    pub fn jid(&self) -> &Jid {
        &self.jid
    }

    /// Queues a [`Receipt`] behind what is queued now; the returned receiver ends (with an
    /// error: the receipt is let go, never sent) once those stanzas are delivered or routed
    /// again. `None` for a session of another node (what the forwarder took is the
    /// cluster's to deliver or route again) and for a session already gone.
    pub fn receipt(&self) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let Sink::Queue { tx, .. } = &self.sink else {
            return None;
        };
        let (done, rx) = tokio::sync::oneshot::channel();
        tx.send(Outbound::Receipt(Receipt { _done: done })).ok()?;
        Some(rx)
    }

    /// Queues bytes for the connection; `true` when the session took them: it writes them,
    /// or routes them again when it ends without writing them. The stanza that finds the
    /// queue full is taken as well, and kills the session (the client is not reading): it
    /// is then routed again with the rest, never lost. `false` only when the session is
    /// already gone (its queue closed).
    pub fn send(&self, bytes: Bytes) -> bool {
        let (tx, depth) = match &self.sink {
            Sink::Queue { tx, depth } => (tx, depth),
            Sink::Forward(forwarder) => {
                return !self.kill.fired.load(Ordering::Acquire)
                    && forwarder.send((self.jid.clone(), bytes)).is_ok();
            }
        };
        let len = bytes.len();
        let before = depth.queued.fetch_add(1, Ordering::AcqRel);
        let before_bytes = depth.bytes.fetch_add(len, Ordering::AcqRel);
        if tx.send(Outbound::Bytes(bytes)).is_err() {
            depth.queued.fetch_sub(1, Ordering::AcqRel);
            depth.bytes.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        if before >= depth.capacity || before_bytes >= depth.byte_capacity {
            if !depth.overflowed.swap(true, Ordering::AcqRel) {
                rookery_metrics::get().queue_overflow();
                tracing::warn!(jid = %self.jid, "outbound queue full, disconnecting");
            }
            self.kill.fire(StreamError::with_text(
                StreamErrorCondition::PolicyViolation,
                "outbound queue full: the client is not reading",
            ));
        }
        true
    }

    /// Queues bytes once the queue is at most half full, waiting up to `timeout` for that:
    /// for bulk deliveries to one session (offline messages, presence of a large roster) that
    /// must be paced rather than dropped, while leaving the other half of the queue to
    /// ordinary traffic (which [`SessionHandle::send`] never waits for). A client that does
    /// not make room in time is disconnected, like in [`SessionHandle::send`]. Never call this
    /// from the session's own task: that task drains the queue, so waiting there can only
    /// time out.
    pub async fn send_paced(&self, bytes: Bytes, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.is_closed() {
                return false;
            }
            let room = match &self.sink {
                Sink::Queue { depth, .. } => depth.at_most_half_full(),
                // The forwarder's queue is the bus's pace, not this session's.
                Sink::Forward(_) => true,
            };
            if room {
                return self.send(bytes);
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(jid = %self.jid, "outbound queue stayed full, disconnecting");
                rookery_metrics::get().queue_overflow();
                self.kill.fire(StreamError::with_text(
                    StreamErrorCondition::PolicyViolation,
                    "outbound queue full: the client is not reading",
                ));
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    /// Whether the connection is gone (its receiving end dropped) or was told to close.
    pub fn is_closed(&self) -> bool {
        let gone = match &self.sink {
            Sink::Queue { tx, .. } => tx.is_closed(),
            Sink::Forward(forwarder) => forwarder.is_closed(),
        };
        gone || self.kill.fired.load(Ordering::Acquire)
    }

    /// Whether the router should hand this session anything new: not once it is gone, nor
    /// once its queue overflowed (it is being cut off for not reading; what comes for it is
    /// better handled as for a resource that is not online). A session closed for another
    /// reason (conflict, account removed, shutdown) still takes stanzas, such as the reply to
    /// the request that closed it: it writes them before its stream error, or routes them
    /// again when it ends.
    pub fn is_target(&self) -> bool {
        match &self.sink {
            Sink::Queue { tx, depth } => {
                !tx.is_closed() && !depth.overflowed.load(Ordering::Acquire)
            }
            // A closed remote handle takes nothing (see `forwarded`).
            Sink::Forward(_) => !self.is_closed(),
        }
    }

    /// Closes the session with a stream error.
    pub fn close(&self, reason: StreamError) {
        self.kill.fire(reason);
    }

    /// Whether the session is handing itself over to another node ([`Kill::set_moving`]).
    pub fn is_moving(&self) -> bool {
        self.kill.moving.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn full_queue_kills_the_session_and_keeps_the_stanza() {
        let jid = Jid::parse("a@b/c").unwrap();
        let (h, mut end) = SessionHandle::new(1, jid, 2);
        assert!(h.send(Bytes::from_static(b"1")));
        assert!(h.send(Bytes::from_static(b"2")));
        assert!(!h.is_closed() && h.is_target());
        // The stanza that does not fit kills the session but is kept for its end to route
        // again (it used to be dropped here).
        assert!(h.send(Bytes::from_static(b"3")));
        assert!(h.is_closed() && !h.is_target());
        let reason = end.kill.fired().await;
        assert_eq!(reason.condition, StreamErrorCondition::PolicyViolation);
        let left = end.rx.close_and_drain();
        assert_eq!(left, [&b"1"[..], b"2", b"3"]);
        // Once the end has drained the queue, nothing more is taken.
        assert!(!h.send(Bytes::from_static(b"4")));
    }

    #[tokio::test]
    async fn a_forwarded_handle_writes_into_its_forwarder_until_closed() {
        let jid = Jid::parse("a@b/c").unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let h = SessionHandle::forwarded(1, jid.clone(), tx);
        assert!(h.is_remote() && h.is_target());
        assert!(h.send(Bytes::from_static(b"1")));
        assert!(
            h.send_paced(Bytes::from_static(b"2"), std::time::Duration::ZERO)
                .await
        );
        assert_eq!(
            rx.try_recv().unwrap(),
            (jid.clone(), Bytes::from_static(b"1"))
        );
        assert_eq!(rx.try_recv().unwrap(), (jid, Bytes::from_static(b"2")));
        h.close(StreamError::new(StreamErrorCondition::Reset));
        assert!(h.is_closed() && !h.is_target());
        assert!(!h.send(Bytes::from_static(b"3")));
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn receiving_makes_room_again() {
        let jid = Jid::parse("a@b/c").unwrap();
        let (h, mut end) = SessionHandle::new(1, jid, 2);
        for _ in 0..10 {
            assert!(h.send(Bytes::from_static(b"x")));
            assert!(h.send(Bytes::from_static(b"y")));
            assert!(end.rx.recv().await.is_some());
            assert!(end.rx.try_recv().is_ok());
        }
        assert!(!h.is_closed());
    }

    #[tokio::test]
    async fn the_byte_bound_kills_a_session_whose_queue_holds_too_many_bytes() {
        let jid = Jid::parse("a@b/c").unwrap();
        let limit = QueueLimit {
            stanzas: 100,
            bytes: 10,
        };
        let (h, mut end) = SessionHandle::new(1, jid, limit);
        // Under the bound, and one stanza crossing it: taken, the session lives.
        assert!(h.send(Bytes::from_static(b"12345678")));
        assert!(h.send(Bytes::from_static(b"abcdef")));
        assert!(!h.is_closed());
        // The bound was crossed before this one: taken, and the session is cut off.
        assert!(h.send(Bytes::from_static(b"z")));
        assert!(h.is_closed() && !h.is_target());
        assert_eq!(
            end.kill.fired().await.condition,
            StreamErrorCondition::PolicyViolation
        );
        assert_eq!(end.rx.close_and_drain().len(), 3);
    }

    #[tokio::test]
    async fn received_bytes_make_room_again() {
        let jid = Jid::parse("a@b/c").unwrap();
        let limit = QueueLimit {
            stanzas: 100,
            bytes: 4,
        };
        let (h, mut end) = SessionHandle::new(1, jid, limit);
        for _ in 0..10 {
            assert!(h.send(Bytes::from_static(b"abcd")));
            assert!(end.rx.recv().await.is_some());
        }
        assert!(!h.is_closed());
    }

    #[test]
    fn a_session_closed_for_another_reason_still_takes_stanzas() {
        let jid = Jid::parse("a@b/c").unwrap();
        let (h, mut end) = SessionHandle::new(1, jid, 2);
        h.close(StreamError::new(StreamErrorCondition::Conflict));
        assert!(h.is_closed() && h.is_target());
        assert!(h.send(Bytes::from_static(b"reply")));
        assert_eq!(end.rx.close_and_drain(), [&b"reply"[..]]);
        assert!(!h.is_target());
    }
}
