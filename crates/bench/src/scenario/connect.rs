//! `connect`: N sessions log in at the target rate, then stay idle for the duration.
//!
//! Reports the login rate and latency, and with `--server-pid` the server's resident memory
//! before the ramp and with every session idle, hence the memory per idle session. The
//! generator's own memory per idle client is measured the same way (its RSS before the ramp
//! and with every client idle), so the tool's footprint is known at every size.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{idle, round2, Outcome, Run};

/// Runs the scenario.
pub async fn run(run: &Arc<Run>) -> Outcome {
    let mut out = Outcome::default();
    let n = run.common.clients;
    let before = run.sample_server("before");
    let own_before = crate::procinfo::own().ok();
    let phase = run.phase();
    let set = run.ramp(0..n, move |_, conn| idle(conn, phase.clone()));
    let ramp = run.settle(n).await;
    run.ramp_outcome(ramp, &mut out);
    run.set_phase(super::Phase::Run);
    // Let the server settle (allocator, lazily freed negotiation buffers) before measuring.
    run.hold(Duration::from_secs(2).min(run.common.duration))
        .await;
    let loaded = run.sample_server("idle");
    let own_idle = crate::procinfo::own().ok();
    let online = run.stats.online.load(Ordering::Relaxed).max(0) as u64;
    if let (Some(b), Some(l)) = (before, loaded) {
        let per = if online > 0 {
            (l.rss_kb as f64 - b.rss_kb as f64) * 1024.0 / online as f64
        } else {
            0.0
        };
        out.put(
            "idle_memory",
            json!({
                "sessions": online,
                "server_rss_kb_before": b.rss_kb,
                "server_rss_kb_idle": l.rss_kb,
                "bytes_per_session": round2(per),
            }),
            format!(
                "idle memory: {online} sessions, server RSS {} → {} KiB = {:.1} KiB per session",
                b.rss_kb,
                l.rss_kb,
                per / 1024.0
            ),
        );
    }
    if let (Some(b), Some(l)) = (own_before, own_idle) {
        let grown = l.rss_kb.saturating_sub(b.rss_kb) * 1024;
        let per = grown.checked_div(online).unwrap_or(0);
        out.put(
            "generator",
            json!({
                "clients": online,
                "rss_kb_before": b.rss_kb,
                "rss_kb_idle": l.rss_kb,
                "bytes_per_client": per,
            }),
            format!(
                "generator: {online} idle clients, own RSS {} → {} KiB = {:.2} KiB per client",
                b.rss_kb,
                l.rss_kb,
                per as f64 / 1024.0
            ),
        );
    }
    run.hold(run.common.duration.saturating_sub(Duration::from_secs(2)))
        .await;
    run.sample_server("end");
    run.finish(set).await;
    out
}
