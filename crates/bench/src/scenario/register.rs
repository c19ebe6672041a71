//! `register`: creates the accounts by in-band registration (XEP-0077), for servers where
//! that is the quickest way to make thousands of accounts (ejabberd, Prosody with
//! `allow_registration`). Each client connects, secures the stream, registers
//! `<user-prefix><n>` with the shared password and closes. Existing accounts count as done.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{round2, Outcome, Run};
use crate::client::Conn;

/// Runs the scenario (`--clients` accounts at `--login-rate` per second).
pub async fn run(run: &Arc<Run>) -> Outcome {
    let mut out = Outcome::default();
    let created = Arc::new(AtomicU64::new(0));
    let existing = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(Semaphore::new(run.common.max_inflight.max(1)));
    let per = 1.0 / run.common.login_rate.max(0.001);
    let t0 = Instant::now();
    let start = tokio::time::Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..run.common.clients {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 * per)).await;
        if run.stopping() {
            break;
        }
        let Ok(permit) = gate.clone().acquire_owned().await else {
            break;
        };
        let (run, created, existing) = (run.clone(), created.clone(), existing.clone());
        tasks.spawn(async move {
            match Conn::register(&run.cfg, i).await {
                Ok(true) => created.fetch_add(1, Ordering::Relaxed),
                Ok(false) => existing.fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    run.stats.error(e.kind());
                    0
                }
            };
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let secs = t0.elapsed().as_secs_f64();
    let (c, e) = (
        created.load(Ordering::Relaxed),
        existing.load(Ordering::Relaxed),
    );
    out.put(
        "register",
        json!({ "created": c, "existing": e, "seconds": round2(secs), "rate_per_s": round2((c + e) as f64 / secs) }),
        format!(
            "register: {c} created, {e} existed, in {secs:.1} s ({:.0}/s)",
            (c + e) as f64 / secs
        ),
    );
    out
}
