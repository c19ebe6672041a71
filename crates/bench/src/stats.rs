//! Counters shared by every simulated client, a lock-free latency histogram, and the
//! once-a-second progress line.
//!
//! Clients only touch atomics on the hot path; the error table (a map behind a mutex) is
//! written on failures only.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Values below this are counted exactly (one bucket per microsecond).
const EXACT: u64 = 128;
/// Sub-buckets per power of two above [`EXACT`]: a relative error below 1/64 (1.6 %).
const SUB_BITS: u32 = 6;
/// Powers of two covered above [`EXACT`] (2^7 µs … 2^40 µs ≈ 12 days).
const OCTAVES: usize = 33;
const BUCKETS: usize = EXACT as usize + OCTAVES * (1 << SUB_BITS);

/// A log-linear histogram of durations in microseconds (1.6 % resolution), safe to record
/// into from any number of tasks at once.
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum: AtomicU64,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }
}

fn bucket_of(us: u64) -> usize {
    if us < EXACT {
        return us as usize;
    }
    let e = 63 - us.leading_zeros(); // floor(log2), >= 7
    let octave = (e - 7) as usize;
    if octave >= OCTAVES {
        return BUCKETS - 1;
    }
    let sub = ((us >> (e - SUB_BITS)) - (1 << SUB_BITS)) as usize;
    EXACT as usize + octave * (1 << SUB_BITS) + sub
}

/// The middle of bucket `i`, in microseconds.
fn value_of(i: usize) -> u64 {
    let i = i as u64;
    if i < EXACT {
        return i;
    }
    let rel = i - EXACT;
    let octave = rel >> SUB_BITS;
    let sub = rel & ((1 << SUB_BITS) - 1);
    let e = octave + 7;
    let width = 1u64 << (e - u64::from(SUB_BITS));
    ((1 << SUB_BITS) + sub) * width + width / 2
}

impl Histogram {
    /// Records one duration.
    pub fn record(&self, d: Duration) {
        self.record_us(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// Records one duration given in microseconds.
    pub fn record_us(&self, us: u64) {
        if let Some(b) = self.buckets.get(bucket_of(us)) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(us, Ordering::Relaxed);
        self.max.fetch_max(us, Ordering::Relaxed);
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The value at quantile `q` (0.0–1.0) in microseconds; 0 when empty.
    pub fn quantile_us(&self, q: f64) -> u64 {
        let n = self.count();
        if n == 0 {
            return 0;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= rank {
                return value_of(i).min(self.max.load(Ordering::Relaxed));
            }
        }
        self.max.load(Ordering::Relaxed)
    }

    /// Summary in milliseconds: count, mean, p50, p90, p99, p99.9, max.
    pub fn summary_ms(&self) -> Value {
        let n = self.count();
        let ms = |us: u64| (us as f64 / 1000.0 * 1000.0).round() / 1000.0;
        let mean = if n == 0 {
            0.0
        } else {
            self.sum.load(Ordering::Relaxed) as f64 / n as f64
        };
        json!({
            "count": n,
            "mean": (mean / 1000.0 * 1000.0).round() / 1000.0,
            "p50": ms(self.quantile_us(0.50)),
            "p90": ms(self.quantile_us(0.90)),
            "p99": ms(self.quantile_us(0.99)),
            "p999": ms(self.quantile_us(0.999)),
            "max": ms(self.max.load(Ordering::Relaxed)),
        })
    }
}

/// Microseconds since the start of the run, the clock of every timestamp in a body.
pub fn now_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Everything the clients count.
#[derive(Default)]
pub struct Stats {
    /// Login attempts started.
    pub attempts: AtomicU64,
    /// Logins completed (bound, and roster/presence/SM done as asked).
    pub logins: AtomicU64,
    /// Logins that failed.
    pub login_failures: AtomicU64,
    /// Sessions online now.
    pub online: AtomicI64,
    /// Sessions that ended, for whatever reason.
    pub ended: AtomicU64,
    /// Measured stanzas sent (messages, presence updates, publishes).
    pub sent: AtomicU64,
    /// Measured stanzas received (each delivery counts once).
    pub received: AtomicU64,
    /// Reconnections completed (churn).
    pub reconnects: AtomicU64,
    /// Stream resumptions completed (churn with SM).
    pub resumes: AtomicU64,
    /// Time from TCP connect to a usable session.
    pub login_latency: Histogram,
    /// End-to-end delivery latency of measured stanzas.
    pub latency: Histogram,
    errors: Mutex<BTreeMap<String, u64>>,
    error_count: AtomicU64,
}

impl Stats {
    /// Counts one error of `kind` (e.g. `auth:not-authorized`, `connect:refused`).
    pub fn error(&self, kind: impl Into<String>) {
        self.error_count.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.errors.lock() {
            *m.entry(kind.into()).or_default() += 1;
        }
    }

    /// Errors so far.
    pub fn error_count(&self) -> u64 {
        self.error_count.load(Ordering::Relaxed)
    }

    /// The error table.
    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// A snapshot of the counters for the progress line.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            logins: self.logins.load(Ordering::Relaxed),
            online: self.online.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            errors: self.error_count(),
        }
    }
}

/// Counter values at one instant.
#[derive(Clone, Copy, Default)]
pub struct Snapshot {
    logins: u64,
    online: i64,
    sent: u64,
    received: u64,
    reconnects: u64,
    errors: u64,
}

/// Prints one progress line per second to stderr until the returned task is aborted.
pub fn progress(stats: std::sync::Arc<Stats>, server: Vec<u32>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let mut last = stats.snapshot();
        loop {
            tick.tick().await;
            let now = stats.snapshot();
            let rss = crate::procinfo::sample_all(&server)
                .map(|s| format!(" server_rss={}MiB", s.rss_kb / 1024))
                .unwrap_or_default();
            eprintln!(
                "[{:>4}s] online={} logins/s={} sent/s={} recv/s={} reconnects/s={} errors={} p99={:.1}ms{rss}",
                start.elapsed().as_secs(),
                now.online,
                now.logins.saturating_sub(last.logins),
                now.sent.saturating_sub(last.sent),
                now.received.saturating_sub(last.received),
                now.reconnects.saturating_sub(last.reconnects),
                now.errors,
                stats.latency.quantile_us(0.99) as f64 / 1000.0,
            );
            last = now;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_close() {
        let mut prev = 0;
        for us in [
            0u64,
            1,
            127,
            128,
            129,
            1000,
            4095,
            4096,
            65_537,
            1 << 30,
            1 << 39,
        ] {
            let b = bucket_of(us);
            assert!(b >= prev);
            prev = b;
            let v = value_of(b);
            let err = (v as f64 - us as f64).abs() / (us.max(1) as f64);
            assert!(err <= 0.016, "{us} -> {v}");
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles() {
        let h = Histogram::default();
        for us in 1..=1000 {
            h.record_us(us);
        }
        assert_eq!(h.count(), 1000);
        let p50 = h.quantile_us(0.5);
        assert!((490..=510).contains(&p50), "{p50}");
        let p99 = h.quantile_us(0.99);
        assert!((975..=1000).contains(&p99), "{p99}");
        assert_eq!(h.quantile_us(1.0), 1000);
    }
}
