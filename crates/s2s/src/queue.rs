//! The byte budgets of the outgoing queues: a stanza waiting for its stream holds its size
//! against the budget of that stream (`[s2s] queue_max_bytes`) and the server's, over all
//! outgoing streams (`[s2s] queue_total_bytes`), until it is written or bounced.
//!
//! Why bytes, and not only `queue_len` stanzas: while a stream is set up (resolve, connect,
//! TLS, dialback: up to `negotiation_timeout_secs`) its stanzas wait, and a domain that
//! accepts TCP and never answers held `queue_len` × the largest stanza (512 × 512 KiB, 256
//! MiB) for that long — per domain, and a sender may name any number of domains.
//!
//! A stanza's size is its serialized length, computed once when it is queued (the stream
//! serializes it again when it writes it). Neither [`Stanza`] nor its element caches a
//! length; keeping the serialized bytes beside the stanza would double what a queued stanza
//! holds, and queueing only the bytes would lose what a bounce needs of the typed stanza
//! (whether it was archived). The serialized length is what the other stanza bounds count
//! (`max_stanza_bytes`, `session_queue_bytes`), and close to what the element tree holds.
//!
//! The bytes are given back when the [`Queued`] stanza is dropped: on every path that
//! empties a queue (written; bounced when the stream failed, at shutdown; handed to a new
//! stream after an idle or an administrator's close, where it is charged again; dropped with
//! its channel), none of which has to remember it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rookery_proto::{Stanza, StanzaError, StanzaErrorCondition as SC};

/// Bytes held against a limit, by the queued stanzas of one stream or of all of them.
#[derive(Debug)]
pub(crate) struct Budget {
    used: AtomicUsize,
    max: usize,
}

impl Budget {
    /// An unused budget of `max` bytes.
    pub(crate) fn new(max: usize) -> Arc<Budget> {
        Arc::new(Budget {
            used: AtomicUsize::new(0),
            max,
        })
    }

    /// Takes `n` bytes when they fit, or when none are taken: a stanza larger than the whole
    /// budget still goes alone (bounding a stanza's size is the stanza limits' job), so the
    /// budget holds at most `max` bytes, or one stanza.
    fn take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used == 0 || used.saturating_add(n) <= self.max).then(|| used + n)
            })
            .is_ok()
    }

    fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    /// The bytes held now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// Why a stanza could not be queued for its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueueFull {
    /// `queue_len` stanzas wait for the stream.
    Stanzas,
    /// `queue_max_bytes` wait for the stream.
    StreamBytes,
    /// `queue_total_bytes` wait for all outgoing streams together.
    TotalBytes,
}

impl QueueFull {
    /// The setting that was reached, for the log.
    pub(crate) fn key(self) -> &'static str {
        match self {
            QueueFull::Stanzas => "queue_len",
            QueueFull::StreamBytes => "queue_max_bytes",
            QueueFull::TotalBytes => "queue_total_bytes",
        }
    }

    /// The bounce: `resource-constraint` (RFC 6120 §8.3.3.18), saying which queue is full.
    pub(crate) fn error(self) -> StanzaError {
        let text = match self {
            QueueFull::Stanzas => "too many stanzas queued for that server",
            QueueFull::StreamBytes => "too many bytes queued for that server",
            QueueFull::TotalBytes => "too many bytes queued for other servers",
        };
        StanzaError::new(SC::ResourceConstraint).with_text(text)
    }
}

/// Bytes taken from a stream's budget and the server's, given back to both when dropped.
#[derive(Debug)]
pub(crate) struct Charge {
    bytes: usize,
    stream: Arc<Budget>,
    total: Arc<Budget>,
}

impl Charge {
    /// Takes `stanza`'s serialized length from its stream's budget and the server's; the
    /// budget that is full when it does not fit one of them.
    pub(crate) fn take(
        stanza: &Stanza,
        stream: &Arc<Budget>,
        total: &Arc<Budget>,
    ) -> Result<Charge, QueueFull> {
        let bytes = stanza.to_bytes().len();
        if !stream.take(bytes) {
            return Err(QueueFull::StreamBytes);
        }
        if !total.take(bytes) {
            stream.give(bytes);
            return Err(QueueFull::TotalBytes);
        }
        Ok(Charge {
            bytes,
            stream: stream.clone(),
            total: total.clone(),
        })
    }

    /// The stanza the bytes were taken for, to queue, holding them.
    pub(crate) fn hold(self, stanza: Stanza) -> Queued {
        Queued {
            stanza,
            _charge: self,
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.stream.give(self.bytes);
        self.total.give(self.bytes);
    }
}

/// A stanza in an outgoing queue, holding its bytes until it is dropped.
#[derive(Debug)]
pub(crate) struct Queued {
    stanza: Stanza,
    _charge: Charge,
}

impl Queued {
    /// The stanza.
    pub(crate) fn stanza(&self) -> &Stanza {
        &self.stanza
    }

    /// The stanza, its bytes given back.
    pub(crate) fn into_stanza(self) -> Stanza {
        self.stanza
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn message(body_bytes: usize) -> Stanza {
        let xml = format!(
            "<message to='a@them.test' from='b@us.test'><body>{}</body></message>",
            "x".repeat(body_bytes)
        );
        Stanza::from_serialized(xml.as_bytes()).unwrap()
    }

    fn queue(
        stanza: Stanza,
        stream: &Arc<Budget>,
        total: &Arc<Budget>,
    ) -> Result<Queued, QueueFull> {
        Charge::take(&stanza, stream, total).map(|c| c.hold(stanza))
    }

    /// Each budget refuses what would take it past its limit, and says which; the bytes
    /// of a refused stanza are not kept by the other budget.
    #[test]
    fn a_stanza_past_either_budget_is_refused() {
        let size = message(1000).to_bytes().len();
        let (stream, total) = (Budget::new(3 * size), Budget::new(4 * size));
        let other = Budget::new(usize::MAX);
        let held: Vec<Queued> = (0..3)
            .map(|_| queue(message(1000), &stream, &total).unwrap())
            .collect();
        let full = queue(message(1000), &stream, &total).unwrap_err();
        assert_eq!(full, QueueFull::StreamBytes);
        assert_eq!((stream.used(), total.used()), (3 * size, 3 * size));
        // Another stream: its own budget has room, the server's has one stanza's.
        let fourth = queue(message(1000), &other, &total).unwrap();
        let full = queue(message(1000), &other, &total).unwrap_err();
        assert_eq!(full, QueueFull::TotalBytes);
        assert_eq!((other.used(), total.used()), (size, 4 * size));
        drop(fourth);
        drop(held);
        assert_eq!((stream.used(), other.used(), total.used()), (0, 0, 0));
    }

    /// Written or handed on, a stanza gives its bytes back; one larger than a whole budget
    /// still goes when the budget is unused, alone.
    #[test]
    fn bytes_come_back_and_a_large_stanza_goes_alone() {
        let (stream, total) = (Budget::new(100), Budget::new(100));
        let big = queue(message(1000), &stream, &total).unwrap();
        assert!(queue(message(1), &stream, &total).is_err());
        let stanza = big.into_stanza();
        assert_eq!((stream.used(), total.used()), (0, 0));
        let again = queue(stanza, &stream, &total).unwrap();
        assert!(stream.used() > 100);
        drop(again);
        assert_eq!((stream.used(), total.used()), (0, 0));
    }

    #[test]
    fn each_refusal_is_a_resource_constraint_saying_which_queue() {
        for full in [
            QueueFull::Stanzas,
            QueueFull::StreamBytes,
            QueueFull::TotalBytes,
        ] {
            let e = full.error();
            assert_eq!(e.condition, SC::ResourceConstraint);
            assert!(e.text.is_some_and(|t| t.starts_with("too many")));
        }
    }
}
