//! `presence`: every client has R contacts (its neighbours on a ring: i±1 … i±R/2) with
//! mutual subscriptions, and broadcasts presence updates at a fixed total rate. Each update
//! carries the send time in `<status/>`, so every contact that receives it measures the
//! broadcast latency; deliveries should be `updates × R`.
//!
//! Setup (unless `--no-setup`): each client sends `subscribe` to each contact and approves
//! every request it receives; the run waits until each client saw R approvals (servers also
//! answer repeated requests for existing subscriptions, so reruns work) or 60 s pass.
//! Needs a server with RFC 6121 rosters. Every client fetches its roster before initial
//! presence (whatever `--roster` says): subscription approvals go only to interested
//! resources (RFC 6121 §2.1.6, §3.1.6), and Rookery delivers requests, live or stored,
//! only to them as well; without it the setup sees no approval at all.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rookery_xml::{Element, CONTENT_NS};
use serde_json::json;
use tokio::time::Instant;

use super::{cpu_between, latency_line, round2, stamp_of, ticker, Outcome, Phase, Run};
use crate::client::{esc, ClientError, Conn};
use crate::stats::now_us;

/// Parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Contacts per client (even; at most clients − 1).
    #[arg(long, default_value_t = 10)]
    pub roster_size: usize,
    /// Presence updates per second, all clients together.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Skip the subscription setup (rosters exist from an earlier run).
    #[arg(long)]
    pub no_setup: bool,
}

/// Runs the scenario.
pub async fn run(run: &Arc<Run>, args: &Args) -> Outcome {
    let mut out = Outcome::default();
    let n = run.common.clients;
    let half = (args.roster_size / 2).min(n.saturating_sub(1) / 2);
    let r = half * 2;
    let approvals = Arc::new(AtomicU64::new(0));
    let per_client = if n > 0 { args.rate / n as f64 } else { 0.0 };
    let setup = !args.no_setup;
    let body = {
        let run = run.clone();
        let approvals = approvals.clone();
        move |i: usize, conn: Conn| {
            let run = run.clone();
            let approvals = approvals.clone();
            async move { client(&run, conn, i, n, half, setup, per_client, &approvals).await }
        }
    };
    run.sample_server("before");
    let set = run.ramp(0..n, body);
    let ramp = run.settle(n).await;
    run.ramp_outcome(ramp, &mut out);
    if setup {
        let want = (n * r) as u64;
        let t = Instant::now();
        run.wait_for(Duration::from_secs(60), || {
            approvals.load(Ordering::Relaxed) >= want
        })
        .await;
        out.put(
            "setup",
            json!({ "approvals": approvals.load(Ordering::Relaxed), "expected": want, "seconds": round2(t.elapsed().as_secs_f64()) }),
            format!(
                "setup: {} of {} subscription approvals in {:.1} s",
                approvals.load(Ordering::Relaxed),
                want,
                t.elapsed().as_secs_f64()
            ),
        );
    }
    let cpu0 = run.sample_server("run-start");
    let sent0 = run.stats.sent.load(Ordering::Relaxed);
    let recv0 = run.stats.received.load(Ordering::Relaxed);
    let t0 = Instant::now();
    run.set_phase(Phase::Run);
    run.hold(run.common.duration).await;
    let secs = t0.elapsed().as_secs_f64();
    run.set_phase(Phase::Stop);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu1 = run.sample_server("run-end");
    let sent = run.stats.sent.load(Ordering::Relaxed) - sent0;
    let received = run.stats.received.load(Ordering::Relaxed) - recv0;
    let lat = run.stats.latency.summary_ms();
    let expected = sent * r as u64;
    out.put(
        "presence",
        json!({
            "roster_size": r,
            "offered_rate_per_s": args.rate,
            "seconds": round2(secs),
            "updates": sent,
            "deliveries": received,
            "expected_deliveries": expected,
            "delivery_rate_per_s": round2(received as f64 / secs),
            "latency_ms": lat,
            "server_cpu_s": cpu_between(cpu0, cpu1).map(round2),
        }),
        format!(
            "presence: roster {r}, {sent} updates, {received} of {expected} deliveries ({:.0}/s); latency {}",
            received as f64 / secs,
            latency_line(&lat)
        ),
    );
    run.finish(set).await;
    out
}

#[allow(clippy::too_many_arguments)]
async fn client(
    run: &Arc<Run>,
    mut conn: Conn,
    i: usize,
    n: usize,
    half: usize,
    setup: bool,
    rate: f64,
    approvals: &AtomicU64,
) -> Result<(), ClientError> {
    let mut rng = run.rng(i);
    if setup {
        for d in 1..=half {
            for j in [(i + d) % n, (i + n - d) % n] {
                let to = esc(&run.cfg.bare(j));
                conn.send(format!("<presence to='{to}' type='subscribe'/>").as_bytes())
                    .await?;
            }
        }
    }
    let mut phase = run.phase();
    loop {
        tokio::select! {
            r = conn.next_element() => { let el = r?; on_element(run, &mut conn, &el, approvals).await?; }
            p = super::ramp_over(&mut phase) => {
                if p == Phase::Stop { conn.close().await; return Ok(()); }
                break;
            }
        }
    }
    let mut tick = ticker(rate, &mut rng);
    loop {
        tokio::select! {
            r = conn.next_element() => { let el = r?; on_element(run, &mut conn, &el, approvals).await?; }
            _ = tick.tick() => {
                conn.send(format!("<presence><status>{}</status></presence>", now_us()).as_bytes()).await?;
                run.stats.sent.fetch_add(1, Ordering::Relaxed);
            }
            _ = super::stopped(&mut phase) => break,
        }
    }
    conn.close().await;
    Ok(())
}

async fn on_element(
    run: &Run,
    conn: &mut Conn,
    el: &Element,
    approvals: &AtomicU64,
) -> Result<(), ClientError> {
    if !el.is("presence", CONTENT_NS) {
        return conn.handle_common(el).await;
    }
    let from = el.attr("from").unwrap_or_default();
    match el.attr("type") {
        Some("subscribe") => {
            let to = esc(from.split('/').next().unwrap_or_default());
            conn.send(format!("<presence to='{to}' type='subscribed'/>").as_bytes())
                .await
        }
        Some("subscribed") => {
            approvals.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Some("error") => {
            run.stats.error("presence-error");
            Ok(())
        }
        Some(_) => Ok(()),
        None => {
            // Our own presence reflected back is not a delivery to a contact.
            if from == conn.jid {
                return Ok(());
            }
            if let Some(t) = el
                .child_text("status", CONTENT_NS)
                .as_deref()
                .and_then(stamp_of)
            {
                run.stats.latency.record_us(now_us().saturating_sub(t));
                run.stats.received.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }
    }
}
