//! Dead-peer detection shared by the listeners that check their peers (clients, components):
//! after `interval` without a byte from the peer, send a check (an XEP-0199 ping, or an
//! XEP-0198 `<r/>`); if still nothing arrives within `timeout`, the peer is dead.
//!
//! Sans-IO: it only reads the time of the last byte ([`crate::Conn::last_read`]) and the
//! clock, and tells the caller what is due; what a check looks like on the wire is the
//! listener's business.

use std::time::Duration;

use rookery_core::deadline::after;
use tokio::time::Instant;

/// What [`Keepalive::poll`] found due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Nothing yet.
    Nothing,
    /// Send a check now (it is counted as sent).
    Check,
    /// A check went unanswered for the timeout: end the stream.
    Dead,
}

/// The liveness check of one stream.
#[derive(Debug, Clone)]
pub struct Keepalive {
    /// Silence after which we check; zero: never.
    interval: Duration,
    /// How long a check may stay unanswered.
    timeout: Duration,
    /// When the last check went out.
    sent_at: Option<Instant>,
    /// Checks sent, for ids.
    sent: u64,
}

impl Keepalive {
    /// Checks after `interval` of silence (zero: never), dead `timeout` after a check.
    pub fn new(interval: Duration, timeout: Duration) -> Self {
        Keepalive {
            interval,
            timeout,
            sent_at: None,
            sent: 0,
        }
    }

    /// When [`Keepalive::poll`] has something to do, given the time of the last byte read.
    pub fn deadline(&self, last_read: Instant) -> Option<Instant> {
        if self.interval.is_zero() {
            return None;
        }
        Some(match self.awaiting(last_read) {
            Some(at) => after(at, self.timeout),
            None => after(last_read, self.interval),
        })
    }

    /// What is due at `now`; a [`Due::Check`] is counted as sent at `now`.
    pub fn poll(&mut self, last_read: Instant, now: Instant) -> Due {
        if self.interval.is_zero() {
            return Due::Nothing;
        }
        match self.awaiting(last_read) {
            Some(at) if now >= after(at, self.timeout) => Due::Dead,
            Some(_) => Due::Nothing,
            None if now >= after(last_read, self.interval) => {
                self.sent_at = Some(now);
                self.sent += 1;
                Due::Check
            }
            None => Due::Nothing,
        }
    }

    /// How many checks went out (a counter for ids of pings).
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// The peer answered (any element counts); forget the check in flight.
    pub fn answered(&mut self) {
        self.sent_at = None;
    }

    /// When the check in flight went out, if nothing was read since.
    fn awaiting(&self, last_read: Instant) -> Option<Instant> {
        self.sent_at.filter(|at| last_read < *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn checks_after_silence_then_declares_dead() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(10 * S, 5 * S);
        assert_eq!(k.deadline(t0), Some(t0 + 10 * S));
        assert_eq!(k.poll(t0, t0 + 9 * S), Due::Nothing);
        assert_eq!(k.poll(t0, t0 + 10 * S), Due::Check);
        assert_eq!(k.sent(), 1);
        assert_eq!(k.deadline(t0), Some(t0 + 15 * S));
        assert_eq!(k.poll(t0, t0 + 14 * S), Due::Nothing);
        assert_eq!(k.poll(t0, t0 + 15 * S), Due::Dead);
    }

    #[test]
    fn any_byte_answers() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(10 * S, 5 * S);
        assert_eq!(k.poll(t0, t0 + 10 * S), Due::Check);
        // A whitespace keepalive after the check: alive, next check an interval later.
        let read = t0 + 11 * S;
        assert_eq!(k.deadline(read), Some(read + 10 * S));
        assert_eq!(k.poll(read, t0 + 16 * S), Due::Nothing);
        assert_eq!(k.poll(read, read + 10 * S), Due::Check);
        k.answered();
        assert_eq!(k.deadline(read), Some(read + 10 * S));
    }

    #[test]
    fn an_interval_too_long_for_the_clock_is_never() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(Duration::MAX, Duration::MAX);
        assert!(k.deadline(t0).is_some_and(|d| d > t0 + 1000 * S));
        assert_eq!(k.poll(t0, t0 + 1000 * S), Due::Nothing);
    }

    #[test]
    fn zero_interval_never_checks() {
        let t0 = Instant::now();
        let mut k = Keepalive::new(Duration::ZERO, 5 * S);
        assert_eq!(k.deadline(t0), None);
        assert_eq!(k.poll(t0, t0 + 1000 * S), Due::Nothing);
    }
}
