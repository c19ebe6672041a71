//! How the router reaches a connection.
//!
//! Each connection owns a bounded queue of serialized stanzas, drained by its writer. The
//! router never blocks on a slow reader: when the queue is full the session is killed with a
//! stream error instead (design.md: "bounded per-connection queues").

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use rookery_jid::Jid;
use rookery_proto::{StreamError, StreamErrorCondition};
use tokio::sync::{mpsc, Notify};

/// Unique id of a session in this process.
pub type SessionId = u64;

/// What the router sends to a connection's writer.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// Serialized stanza bytes, shared among all recipients of a fan-out.
    Bytes(Bytes),
}

/// Why and whether a session must close; set once, observed by the connection loop.
#[derive(Debug, Default)]
pub struct Kill {
    reason: OnceLock<StreamError>,
    notify: Notify,
    fired: AtomicBool,
}

impl Kill {
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

/// The router's handle on one connection.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    id: SessionId,
    jid: Jid,
    tx: mpsc::Sender<Outbound>,
    kill: Arc<Kill>,
}

/// The receiving side a connection keeps.
#[derive(Debug)]
pub struct SessionEnd {
    /// Stanzas to write.
    pub rx: mpsc::Receiver<Outbound>,
    /// The kill switch.
    pub kill: Arc<Kill>,
}

impl SessionHandle {
    /// A handle and its receiving end, with a queue of `capacity` stanzas.
    pub fn new(id: SessionId, jid: Jid, capacity: usize) -> (SessionHandle, SessionEnd) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let kill = Arc::new(Kill::default());
        (
            SessionHandle {
                id,
                jid,
                tx,
                kill: kill.clone(),
            },
            SessionEnd { rx, kill },
        )
    }

    /// The session id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The session's full JID.
    pub fn jid(&self) -> &Jid {
        &self.jid
    }

    /// Queues bytes for the connection. A full queue kills the session (the client is not
    /// reading); a closed one means it is already gone. Either way the stanza is not delivered
    /// and `false` is returned.
    pub fn send(&self, bytes: Bytes) -> bool {
        match self.tx.try_send(Outbound::Bytes(bytes)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(jid = %self.jid, "outbound queue full, disconnecting");
                self.kill.fire(StreamError::with_text(
                    StreamErrorCondition::PolicyViolation,
                    "outbound queue full: the client is not reading",
                ));
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
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
            if self.tx.capacity() * 2 >= self.tx.max_capacity() {
                return self.send(bytes);
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(jid = %self.jid, "outbound queue stayed full, disconnecting");
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
        self.tx.is_closed() || self.kill.fired.load(Ordering::Acquire)
    }

    /// Closes the session with a stream error.
    pub fn close(&self, reason: StreamError) {
        self.kill.fire(reason);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn full_queue_kills_the_session() {
        let jid = Jid::parse("a@b/c").unwrap();
        let (h, end) = SessionHandle::new(1, jid, 2);
        assert!(h.send(Bytes::from_static(b"1")));
        assert!(h.send(Bytes::from_static(b"2")));
        assert!(!h.send(Bytes::from_static(b"3")));
        let reason = end.kill.fired().await;
        assert_eq!(reason.condition, StreamErrorCondition::PolicyViolation);
    }
}
