//! Back-off for remote domains we could not reach.
//!
//! Without it, every stanza for a dead domain would start a new outgoing stream — DNS
//! lookups and connection attempts, each ending in the same bounce after the connect or
//! negotiation timeout — and a busy server would spend its time dialing a domain that is not
//! there. After an outgoing stream to a domain fails, stanzas for that domain bounce at once,
//! with the condition of the failure (`remote-server-not-found` or `remote-server-timeout`),
//! until the back-off period ends; the next stanza after it tries again. Each failure in a row
//! doubles the period, from `[s2s] backoff_initial_secs` up to `backoff_max_secs`; a stream
//! that authenticates ends it. A domain left alone for longer than the cap since its last
//! period starts over at the initial period.
//!
//! Keyed by remote domain, not by domain pair: what failed (DNS, TCP, TLS, the peer's
//! answer) is the remote side's, whichever of our domains dialed it. Time is
//! `tokio::time::Instant`, so tests run it under a paused clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rookery_core::deadline::after;
use rookery_proto::StanzaErrorCondition as SC;
use tokio::time::Instant;

/// Most domains remembered; past that, entries whose period is long over are dropped (and,
/// if that is not enough, all of them: at worst a dead domain is dialed once more).
const MAX_DOMAINS: usize = 10_000;

/// Why stanzas for a domain bounce without a connection attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The condition of the failure that started the back-off.
    pub condition: SC,
    /// What failed, for the bounce's text.
    pub reason: Arc<str>,
    /// Time left before the next attempt.
    pub retry_in: Duration,
}

#[derive(Debug)]
struct Entry {
    /// No attempt before this.
    until: Instant,
    /// The current period.
    delay: Duration,
    condition: SC,
    reason: Arc<str>,
}

/// The back-off table of the outgoing pool.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    domains: Mutex<HashMap<String, Entry>>,
}

impl Backoff {
    /// Periods from `initial`, doubling up to `max`; a zero `initial` disables back-off.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            domains: Mutex::new(HashMap::new()),
        }
    }

    /// `Some` while stanzas for `domain` must bounce without a connection attempt.
    pub fn check(&self, domain: &str, now: Instant) -> Option<Refusal> {
        let domains = self.domains.lock().ok()?;
        let e = domains.get(domain)?;
        (now < e.until).then(|| Refusal {
            condition: e.condition,
            reason: e.reason.clone(),
            retry_in: e.until - now,
        })
    }

    /// Records that an outgoing stream to `domain` failed with `condition` because of
    /// `reason`; returns the period before the next attempt (zero when disabled). A failure
    /// while a period is running (another of our domains dialed it at the same time) does
    /// not lengthen it.
    pub fn failed(&self, domain: &str, now: Instant, condition: SC, reason: &str) -> Duration {
        if self.initial.is_zero() {
            return Duration::ZERO;
        }
        let Ok(mut domains) = self.domains.lock() else {
            return Duration::ZERO;
        };
        if domains.len() >= MAX_DOMAINS && !domains.contains_key(domain) {
            let max = self.max;
            domains.retain(|_, e| now < after(e.until, max));
            if domains.len() >= MAX_DOMAINS {
                domains.clear();
            }
        }
        let delay = match domains.get(domain) {
            Some(e) if now < e.until => return e.until - now,
            Some(e) if now < after(e.until, self.max) => e.delay.saturating_mul(2).min(self.max),
            _ => self.initial,
        };
        domains.insert(
            domain.to_string(),
            Entry {
                until: after(now, delay),
                delay,
                condition,
                reason: Arc::from(reason),
            },
        );
        delay
    }

    /// Records that a stream to `domain` authenticated: the back-off ends. Returns whether
    /// there was one.
    pub fn succeeded(&self, domain: &str) -> bool {
        self.domains
            .lock()
            .map(|mut d| d.remove(domain).is_some())
            .unwrap_or(false)
    }

    /// Number of domains with a back-off record.
    pub fn len(&self) -> usize {
        self.domains.lock().map(|d| d.len()).unwrap_or(0)
    }

    /// Whether no domain has one.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn table() -> Backoff {
        Backoff::new(5 * S, 300 * S)
    }

    #[tokio::test(start_paused = true)]
    async fn periods_double_up_to_the_cap_and_reset_on_success() {
        let b = table();
        let nf = SC::RemoteServerNotFound;
        assert_eq!(b.check("dead.example", Instant::now()), None);
        let mut expected = 5;
        for _ in 0..8 {
            let d = b.failed("dead.example", Instant::now(), nf, "connection refused");
            assert_eq!(d, expected * S);
            let r = b.check("dead.example", Instant::now()).unwrap();
            assert_eq!(r.condition, nf);
            assert_eq!(&*r.reason, "connection refused");
            // Still refused just before the end of the period, tried again at its end.
            tokio::time::advance(d - S).await;
            assert!(b.check("dead.example", Instant::now()).is_some());
            tokio::time::advance(S).await;
            assert_eq!(b.check("dead.example", Instant::now()), None);
            expected = (expected * 2).min(300);
        }
        assert_eq!(expected, 300);
        // Other domains are not affected.
        assert_eq!(b.check("alive.example", Instant::now()), None);
        // A success ends it; the next failure starts over.
        assert!(b.succeeded("dead.example"));
        assert!(!b.succeeded("dead.example"));
        assert_eq!(b.failed("dead.example", Instant::now(), nf, "x"), 5 * S);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_during_a_period_do_not_lengthen_it() {
        let b = table();
        let t = SC::RemoteServerTimeout;
        assert_eq!(
            b.failed("slow.example", Instant::now(), t, "timed out"),
            5 * S
        );
        tokio::time::advance(2 * S).await;
        assert_eq!(
            b.failed("slow.example", Instant::now(), t, "timed out"),
            3 * S
        );
        tokio::time::advance(3 * S).await;
        assert_eq!(
            b.failed("slow.example", Instant::now(), t, "timed out"),
            10 * S
        );
        assert_eq!(
            b.check("slow.example", Instant::now()).unwrap().condition,
            t
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_domain_left_alone_starts_over() {
        let b = table();
        let nf = SC::RemoteServerNotFound;
        b.failed("d.example", Instant::now(), nf, "x");
        tokio::time::advance(5 * S).await;
        assert_eq!(b.failed("d.example", Instant::now(), nf, "x"), 10 * S);
        tokio::time::advance(10 * S + 300 * S).await;
        assert_eq!(b.failed("d.example", Instant::now(), nf, "x"), 5 * S);
    }

    #[tokio::test(start_paused = true)]
    async fn disabled_and_bounded() {
        let off = Backoff::new(Duration::ZERO, 300 * S);
        let nf = SC::RemoteServerNotFound;
        assert_eq!(
            off.failed("d.example", Instant::now(), nf, "x"),
            Duration::ZERO
        );
        assert_eq!(off.check("d.example", Instant::now()), None);
        let b = table();
        for i in 0..MAX_DOMAINS {
            b.failed(&format!("d{i}.example"), Instant::now(), nf, "x");
        }
        assert_eq!(b.len(), MAX_DOMAINS);
        // Full of running periods: the table starts over.
        b.failed("one-more.example", Instant::now(), nf, "x");
        assert_eq!(b.len(), 1);
        for i in 1..MAX_DOMAINS {
            b.failed(&format!("d{i}.example"), Instant::now(), nf, "x");
        }
        assert_eq!(b.len(), MAX_DOMAINS);
        // Long-over entries go first.
        tokio::time::advance(400 * S).await;
        b.failed("new.example", Instant::now(), nf, "x");
        assert_eq!(b.len(), 1);
    }
}
