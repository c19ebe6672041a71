//! Scenarios, one module each, on shared machinery: [`Run`] holds the configuration,
//! counters and the phase every client watches; [`Run::ramp`] starts clients at the target
//! login rate with a bound on logins in flight; [`idle`] is what a session does when the
//! scenario has nothing for it to do.
//!
//! A run goes `Ramp` (clients log in) → `Run` (the measured part) → `Stop` (clients close
//! their streams). Each scenario drives these phases itself and returns an [`Outcome`].

pub mod churn;
pub mod connect;
pub mod mam;
pub mod messages;
pub mod muc;
pub mod presence;
pub mod pubsub;
pub mod register;
pub mod sse;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Interval, MissedTickBehavior};

use crate::client::{ClientConfig, ClientError, Conn};
use crate::procinfo::{self, Sample};
use crate::stats::Stats;

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Clients are logging in.
    Ramp,
    /// The measured part.
    Run,
    /// Everyone closes.
    Stop,
}

/// What a scenario reports besides the common figures.
#[derive(Default)]
pub struct Outcome {
    /// Scenario-specific results for the JSON summary.
    pub json: Map<String, Value>,
    /// Lines for the human summary.
    pub lines: Vec<String>,
}

impl Outcome {
    /// Adds a result shown in both summaries.
    pub fn put(&mut self, key: &str, value: Value, human: String) {
        self.json.insert(key.to_string(), value);
        self.lines.push(human);
    }
}

/// Settings common to every scenario.
pub struct Common {
    /// Number of simulated clients.
    pub clients: usize,
    /// Logins started per second during the ramp.
    pub login_rate: f64,
    /// Logins allowed in flight at once.
    pub max_inflight: usize,
    /// Seconds of the measured phase.
    pub duration: Duration,
    /// Random seed.
    pub seed: u64,
    /// The server's PIDs (several for the nodes of a cluster), to sample their memory and
    /// CPU, summed.
    pub server_pids: Vec<u32>,
}

/// One run: configuration, counters and phase.
pub struct Run {
    /// Client settings.
    pub cfg: Arc<ClientConfig>,
    /// Common settings.
    pub common: Common,
    /// Counters.
    pub stats: Arc<Stats>,
    phase: watch::Sender<Phase>,
    samples: Mutex<Vec<(String, Sample)>>,
    /// When the run started.
    pub started: Instant,
}

/// When the ramp started and ended, and how many logged in.
#[derive(Debug, Clone, Copy)]
pub struct Ramp {
    /// Seconds from the first login started to the last one finished.
    pub seconds: f64,
    /// Logins completed.
    pub logins: u64,
}

impl Run {
    /// A run in the `Ramp` phase.
    pub fn new(cfg: ClientConfig, common: Common, stats: Arc<Stats>) -> Arc<Run> {
        let (phase, _) = watch::channel(Phase::Ramp);
        Arc::new(Run {
            cfg: Arc::new(cfg),
            common,
            stats,
            phase,
            samples: Mutex::new(Vec::new()),
            started: Instant::now(),
        })
    }

    /// A receiver of the phase.
    pub fn phase(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// Moves to `p`.
    pub fn set_phase(&self, p: Phase) {
        self.phase.send_replace(p);
    }

    /// Whether the run is stopping.
    pub fn stopping(&self) -> bool {
        *self.phase.borrow() == Phase::Stop
    }

    /// Client `i`'s random numbers: reproducible from the run's seed, different per client.
    pub fn rng(&self, i: usize) -> StdRng {
        StdRng::seed_from_u64(self.common.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// Samples the server's RSS and CPU time (summed over its processes) under `label`
    /// (no-op without a PID).
    pub fn sample_server(&self, label: &str) -> Option<Sample> {
        let s = procinfo::sample_all(&self.common.server_pids)?;
        if let Ok(mut v) = self.samples.lock() {
            v.push((label.to_string(), s));
        }
        Some(s)
    }

    /// The samples taken so far.
    pub fn server_samples(&self) -> Vec<(String, Sample)> {
        self.samples.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Starts clients `range` at the login rate; each logs in, then runs `body` with its
    /// connection until it returns. Failures are counted by kind; a failure in the `Stop`
    /// phase is not (the run is ending anyway).
    pub fn ramp<F, Fut>(self: &Arc<Self>, range: std::ops::Range<usize>, body: F) -> JoinSet<()>
    where
        F: Fn(usize, Conn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ClientError>> + Send + 'static,
    {
        let mut set = JoinSet::new();
        let run = self.clone();
        let body = Arc::new(body);
        let gate = Arc::new(Semaphore::new(self.common.max_inflight.max(1)));
        set.spawn(async move {
            let mut tasks = JoinSet::new();
            let start = tokio::time::Instant::now();
            let per = 1.0 / run.common.login_rate.max(0.001);
            for (n, i) in range.enumerate() {
                let at = start + Duration::from_secs_f64(n as f64 * per);
                tokio::time::sleep_until(at).await;
                if run.stopping() {
                    break;
                }
                let Ok(permit) = gate.clone().acquire_owned().await else {
                    break;
                };
                let run = run.clone();
                let body = body.clone();
                tasks.spawn(async move {
                    let stats = &run.stats;
                    stats.attempts.fetch_add(1, Ordering::Relaxed);
                    let t0 = Instant::now();
                    let conn = match Conn::login(&run.cfg, i, None).await {
                        Ok(c) => c,
                        Err(e) => {
                            drop(permit);
                            stats.login_failures.fetch_add(1, Ordering::Relaxed);
                            stats.error(e.kind());
                            return;
                        }
                    };
                    drop(permit);
                    stats.login_latency.record(t0.elapsed());
                    stats.logins.fetch_add(1, Ordering::Relaxed);
                    stats.online.fetch_add(1, Ordering::Relaxed);
                    let r = body(i, conn).await;
                    stats.online.fetch_sub(1, Ordering::Relaxed);
                    stats.ended.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = r {
                        if !run.stopping() {
                            stats.error(e.kind());
                        }
                    }
                });
                // Reap finished tasks as we go so the set stays small.
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
        });
        set
    }

    /// Waits until `n` logins have finished (succeeded or failed), or the run is stopping.
    pub async fn settle(&self, n: usize) -> Ramp {
        let t0 = Instant::now();
        let mut phase = self.phase();
        loop {
            let done = self.stats.logins.load(Ordering::Relaxed)
                + self.stats.login_failures.load(Ordering::Relaxed);
            if done >= n as u64 || self.stopping() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = phase.changed() => {}
            }
        }
        Ramp {
            seconds: t0.elapsed().as_secs_f64(),
            logins: self.stats.logins.load(Ordering::Relaxed),
        }
    }

    /// Waits until `done()` holds, at most `limit`, or until the run is stopping: the
    /// set-up steps that follow the logins (subscriptions, room entries, approvals, streams).
    pub async fn wait_for(&self, limit: Duration, done: impl Fn() -> bool) {
        let t = Instant::now();
        while !done() && t.elapsed() < limit && !self.stopping() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sleeps `d`, or less if the run is stopped meanwhile.
    pub async fn hold(&self, d: Duration) {
        let mut phase = self.phase();
        let _ = tokio::time::timeout(d, stopped(&mut phase)).await;
    }

    /// Stops the run and waits (at most 15 s) for every client to close.
    pub async fn finish(&self, mut set: JoinSet<()>) {
        self.set_phase(Phase::Stop);
        let _ = tokio::time::timeout(Duration::from_secs(15), async {
            while set.join_next().await.is_some() {}
        })
        .await;
        set.abort_all();
    }

    /// The ramp figures for the summaries.
    pub fn ramp_outcome(&self, ramp: Ramp, out: &mut Outcome) {
        let rate = if ramp.seconds > 0.0 {
            ramp.logins as f64 / ramp.seconds
        } else {
            0.0
        };
        out.put(
            "login",
            json!({
                "ok": ramp.logins,
                "failed": self.stats.login_failures.load(Ordering::Relaxed),
                "seconds": round2(ramp.seconds),
                "rate_per_s": round2(rate),
                "offered_rate_per_s": self.common.login_rate,
                "latency_ms": self.stats.login_latency.summary_ms(),
            }),
            format!(
                "logins: {} ok, {} failed in {:.2} s = {:.0}/s (offered {}/s); login latency {}",
                ramp.logins,
                self.stats.login_failures.load(Ordering::Relaxed),
                ramp.seconds,
                rate,
                self.common.login_rate,
                latency_line(&self.stats.login_latency.summary_ms()),
            ),
        );
    }
}

/// Waits until the run stops.
pub async fn stopped(phase: &mut watch::Receiver<Phase>) {
    let _ = phase.wait_for(|p| *p == Phase::Stop).await;
}

/// Waits until the ramp is over; returns the phase then (`Run` or `Stop`).
pub async fn ramp_over(phase: &mut watch::Receiver<Phase>) -> Phase {
    match phase.wait_for(|p| *p != Phase::Ramp).await {
        Ok(p) => *p,
        Err(_) => Phase::Stop,
    }
}

/// What a session does when the scenario has nothing for it: answer pings and SM requests,
/// ignore stanzas, until the run stops; then close the stream.
///
/// This future is most of the generator's memory per idle client, so it is kept small: the
/// answer and the close run rarely and are boxed (inline, their state made the future 1.7
/// KiB), and it is an `async` block rather than an `async fn`, whose arguments would be
/// stored twice (the connection once as argument, once as local).
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub fn idle(
    mut conn: Conn,
    mut phase: watch::Receiver<Phase>,
) -> impl Future<Output = Result<(), ClientError>> {
    async move {
        loop {
            let el = tokio::select! {
                r = conn.next_element() => r?,
                _ = stopped(&mut phase) => break,
            };
            let conn = &mut conn;
            Box::pin(async move { conn.handle_common(&el).await }).await?;
        }
        Box::pin(conn.close()).await;
        Ok(())
    }
}

/// Server CPU seconds between two samples (`None` without a PID).
pub fn cpu_between(start: Option<Sample>, end: Option<Sample>) -> Option<f64> {
    Some(end?.cpu_s - start?.cpu_s)
}

/// Ticks `rate` times a second (hourly at rate 0), the first at a random point of the first
/// period so clients do not send in step; late ticks are made up in a burst.
pub fn ticker(rate: f64, rng: &mut StdRng) -> Interval {
    let period = Duration::from_secs_f64(if rate > 0.0 { 1.0 / rate } else { 3600.0 });
    let offset = period.mul_f64(rng.gen::<f64>());
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    tick
}

/// Rounds to two decimals for the JSON summary.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `p50 1.2 ms, p90 …` from a [`crate::stats::Histogram::summary_ms`] value.
pub fn latency_line(v: &Value) -> String {
    let g = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    format!(
        "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n={})",
        g("p50"),
        g("p90"),
        g("p99"),
        g("max"),
        v.get("count").and_then(Value::as_u64).unwrap_or(0)
    )
}

/// Parses the timestamp this generator puts at the start of a measured payload.
pub fn stamp_of(text: &str) -> Option<u64> {
    text.trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .filter(|s| !s.is_empty())
        .and_then(|s| s.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps() {
        assert_eq!(stamp_of("12345 xxxx"), Some(12345));
        assert_eq!(stamp_of(" 7"), Some(7));
        assert_eq!(stamp_of("hello"), None);
        assert_eq!(stamp_of(""), None);
    }
}
