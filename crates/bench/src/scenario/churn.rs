//! `churn`: N sessions online; during the run, sessions drop and reconnect at a total rate
//! of `--rate` per second. A reconnection is a full login after a polite `</stream:stream>`,
//! or, with `--resume` (which implies `--sm`), an abrupt TCP drop followed by XEP-0198
//! stream resumption (falling back to a full login when the server refuses).
//!
//! Reports reconnections per second and the reconnection latency (TCP connect to usable
//! session) in the latency figures.
//!
//! With `--reading-every S`, each client is also a meter: every S seconds (jittered) it sends
//! a reading, a `normal` message, to its partner's full JID (0↔1, 2↔3, …), so readings keep
//! flowing to sessions that are mid-reconnect (hibernated, with `--resume`) and the figures
//! show how many arrived.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::json;

use rookery_xml::CONTENT_NS;

use super::{cpu_between, latency_line, round2, Outcome, Phase, Run};
use crate::client::{esc, ClientError, Conn};

/// Parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Reconnections per second, all clients together.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Drop the TCP connection and resume the stream (XEP-0198) instead of a full login.
    #[arg(long)]
    pub resume: bool,
    /// Seconds between two readings a client sends its partner; 0 sends none.
    #[arg(long, default_value_t = 0.0)]
    pub reading_every: f64,
}

/// Runs the scenario.
pub async fn run(run: &Arc<Run>, args: &Args) -> Outcome {
    let mut out = Outcome::default();
    let n = run.common.clients;
    let period = Duration::from_secs_f64(n as f64 / args.rate.max(0.001));
    let resume = args.resume;
    let every = (args.reading_every > 0.0).then(|| Duration::from_secs_f64(args.reading_every));
    let body = {
        let run = run.clone();
        move |i: usize, conn: Conn| {
            let run = run.clone();
            async move { client(&run, conn, i, period, resume, every).await }
        }
    };
    run.sample_server("before");
    let set = run.ramp(0..n, body);
    let ramp = run.settle(n).await;
    run.ramp_outcome(ramp, &mut out);
    let r0 = run.stats.reconnects.load(Ordering::Relaxed);
    let resumed0 = run.stats.resumes.load(Ordering::Relaxed);
    let (sent0, received0) = (
        run.stats.sent.load(Ordering::Relaxed),
        run.stats.received.load(Ordering::Relaxed),
    );
    let t0 = Instant::now();
    let cpu0 = run.sample_server("run-start");
    run.set_phase(Phase::Run);
    run.hold(run.common.duration).await;
    let secs = t0.elapsed().as_secs_f64();
    let mem = run.sample_server("run-end");
    let cpu = cpu_between(cpu0, mem);
    let reconnects = run.stats.reconnects.load(Ordering::Relaxed) - r0;
    let resumed = run.stats.resumes.load(Ordering::Relaxed) - resumed0;
    let sent = run.stats.sent.load(Ordering::Relaxed) - sent0;
    let received = run.stats.received.load(Ordering::Relaxed) - received0;
    let lat = run.stats.latency.summary_ms();
    out.put(
        "churn",
        json!({
            "offered_rate_per_s": args.rate,
            "resume": resume,
            "seconds": round2(secs),
            "reconnects": reconnects,
            "resumed": resumed,
            "rate_per_s": round2(reconnects as f64 / secs),
            "resume_rate_per_s": round2(resumed as f64 / secs),
            "reconnect_latency_ms": lat,
            "server_cpu_s": cpu.map(round2),
            // A reconnection is a logout and a login: the server's CPU for both.
            "server_cpu_ms_per_reconnect": cpu
                .filter(|_| reconnects > 0)
                .map(|c| round2(c * 1e3 / reconnects as f64)),
            "reading_every_s": args.reading_every,
            "readings_sent": sent,
            "readings_received": received,
            "server_rss_kib_end": mem.map(|m| m.rss_kb),
        }),
        format!(
            "churn: offered {}/s, {} reconnections ({:.1}/s, {} resumed); reconnect latency {}",
            args.rate,
            reconnects,
            reconnects as f64 / secs,
            resumed,
            latency_line(&lat)
        ),
    );
    out.put(
        "readings",
        json!({"sent": sent, "received": received}),
        format!("readings: {sent} sent, {received} received during the run"),
    );
    run.sample_server("end");
    run.finish(set).await;
    out
}

async fn client(
    run: &Arc<Run>,
    mut conn: Conn,
    i: usize,
    period: Duration,
    resume: bool,
    every: Option<Duration>,
) -> Result<(), ClientError> {
    let n = run.common.clients;
    let partner = if (i ^ 1) < n { i ^ 1 } else { i };
    let to = esc(&run.cfg.full(partner));
    let mut readings = 0u64;
    let mut rng = run.rng(i);
    let mut phase = run.phase();
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut reading_at: Option<tokio::time::Instant> = None;
    loop {
        if deadline.is_none() && *phase.borrow() == Phase::Run {
            deadline = Some(tokio::time::Instant::now() + period.mul_f64(rng.gen::<f64>() * 2.0));
        }
        if let (Some(every), None) = (every, reading_at) {
            if *phase.borrow() == Phase::Run {
                reading_at = Some(tokio::time::Instant::now() + every.mul_f64(rng.gen::<f64>()));
            }
        }
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let reading = async {
            match reading_at {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = conn.next_element() => {
                let el = r?;
                if el.is("message", CONTENT_NS) && el.attr("type") == Some("normal") {
                    run.stats.received.fetch_add(1, Ordering::Relaxed);
                }
                conn.handle_common(&el).await?;
                continue;
            }
            _ = reading => {
                readings += 1;
                let msg = format!(
                    "<message to='{to}' type='normal'><body>reading {readings} {}</body></message>",
                    rng.gen_range(0..100_000u32)
                );
                conn.send(msg.as_bytes()).await?;
                run.stats.sent.fetch_add(1, Ordering::Relaxed);
                if let (Some(every), Some(at)) = (every, reading_at) {
                    reading_at = Some(at + every);
                }
                continue;
            }
            _ = sleep => {}
            p = phase.changed() => {
                if p.is_err() || *phase.borrow() == Phase::Stop { break; }
                continue;
            }
        }
        deadline = None;
        let t0 = Instant::now();
        let next = if resume {
            let state = conn.kill();
            match state {
                Some(s) => match Conn::login(&run.cfg, i, Some(&s)).await {
                    Ok(c) => {
                        run.stats.resumes.fetch_add(1, Ordering::Relaxed);
                        Ok(c)
                    }
                    Err(e) => {
                        run.stats.error(e.kind());
                        Conn::login(&run.cfg, i, None).await
                    }
                },
                None => {
                    run.stats.error("resume:sm-not-enabled");
                    Conn::login(&run.cfg, i, None).await
                }
            }
        } else {
            conn.close().await;
            Conn::login(&run.cfg, i, None).await
        };
        match next {
            Ok(c) => {
                conn = c;
                run.stats.latency.record(t0.elapsed());
                run.stats.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => return Err(e),
        }
    }
    conn.close().await;
    Ok(())
}
