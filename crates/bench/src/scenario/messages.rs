//! `messages`: clients in pairs (0↔1, 2↔3, …) send each other chat messages at a fixed
//! total offered rate. Each body starts with the send time in microseconds, so the receiver
//! measures the end-to-end latency (both ends live in this process, on one clock).
//!
//! Sending starts when every client has logged in and stops after the duration; two more
//! seconds let in-flight messages arrive before the streams close, and whatever did not
//! arrive by then is reported as lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rookery_xml::CONTENT_NS;
use serde_json::json;
use tokio::time::Instant;

use super::{cpu_between, latency_line, round2, stamp_of, ticker, Outcome, Phase, Run};
use crate::client::{esc, ns, ClientError, Conn};
use crate::stats::now_us;

/// Parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Total messages per second offered by all clients together.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Bytes of filler after the timestamp in each body.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Address the partner's bare JID instead of its full JID.
    #[arg(long)]
    pub to_bare: bool,
}

/// Runs the scenario.
pub async fn run(run: &Arc<Run>, args: &Args) -> Outcome {
    let mut out = Outcome::default();
    let n = run.common.clients;
    let senders = n - n % 2;
    let per_client = if senders > 0 {
        args.rate / senders as f64
    } else {
        0.0
    };
    let sending = Arc::new(AtomicBool::new(true));
    let body = {
        let run = run.clone();
        let args = args.clone();
        let sending = sending.clone();
        move |i: usize, conn: Conn| {
            let run = run.clone();
            let args = args.clone();
            let sending = sending.clone();
            async move {
                let partner = i ^ 1;
                if partner >= senders {
                    return super::idle(conn, run.phase()).await;
                }
                let to = if args.to_bare {
                    run.cfg.bare(partner)
                } else {
                    run.cfg.full(partner)
                };
                client(&run, conn, i, &to, per_client, &args, &sending).await
            }
        }
    };
    run.sample_server("before");
    let set = run.ramp(0..n, body);
    let ramp = run.settle(n).await;
    run.ramp_outcome(ramp, &mut out);
    let cpu0 = run.sample_server("run-start");
    let sent0 = run.stats.sent.load(Ordering::Relaxed);
    let recv0 = run.stats.received.load(Ordering::Relaxed);
    let t0 = Instant::now();
    run.set_phase(Phase::Run);
    run.hold(run.common.duration).await;
    sending.store(false, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = run.sample_server("run-end");
    run.hold(Duration::from_secs(2)).await;
    let sent = run.stats.sent.load(Ordering::Relaxed) - sent0;
    let received = run.stats.received.load(Ordering::Relaxed) - recv0;
    let lat = run.stats.latency.summary_ms();
    let cpu = cpu_between(cpu0, cpu1);
    out.put(
        "messages",
        json!({
            "offered_rate_per_s": args.rate,
            "seconds": round2(secs),
            "sent": sent,
            "received": received,
            "lost": sent.saturating_sub(received),
            "sent_rate_per_s": round2(sent as f64 / secs),
            "received_rate_per_s": round2(received as f64 / secs),
            "latency_ms": lat,
            "server_cpu_s": cpu.map(round2),
            "server_cpu_ms_per_1000_messages": cpu.filter(|_| received > 0).map(|c| round2(c * 1e6 / received as f64)),
        }),
        format!(
            "messages: offered {}/s, sent {} ({:.0}/s), received {} ({:.0}/s), lost {}; latency {}{}",
            args.rate,
            sent,
            sent as f64 / secs,
            received,
            received as f64 / secs,
            sent.saturating_sub(received),
            latency_line(&lat),
            cpu.map(|c| format!("; server CPU {c:.2} s")).unwrap_or_default(),
        ),
    );
    run.finish(set).await;
    out
}

async fn client(
    run: &Arc<Run>,
    mut conn: Conn,
    i: usize,
    to: &str,
    rate: f64,
    args: &Args,
    sending: &AtomicBool,
) -> Result<(), ClientError> {
    let mut rng = run.rng(i);
    let filler: String = (0..args.size)
        .map(|_| char::from(rng.gen_range(b'a'..=b'z')))
        .collect();
    let mut phase = run.phase();
    // Until the run phase, behave like an idle session.
    loop {
        tokio::select! {
            r = conn.next_element() => { let el = r?; on_element(run, &mut conn, &el).await?; }
            p = super::ramp_over(&mut phase) => {
                if p == Phase::Stop { conn.close().await; return Ok(()); }
                break;
            }
        }
    }
    let mut tick = ticker(rate, &mut rng);
    let to = esc(to);
    let mut seq = 0u64;
    loop {
        tokio::select! {
            r = conn.next_element() => { let el = r?; on_element(run, &mut conn, &el).await?; }
            _ = tick.tick(), if sending.load(Ordering::Relaxed) => {
                seq += 1;
                let msg = format!(
                    "<message to='{to}' type='chat' id='m{seq}'><body>{} {filler}</body></message>",
                    now_us()
                );
                conn.send(msg.as_bytes()).await?;
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
    el: &rookery_xml::Element,
) -> Result<(), ClientError> {
    if el.is("message", CONTENT_NS) {
        if el.attr("type") == Some("error") {
            let cond = el
                .get_child("error", CONTENT_NS)
                .and_then(|e| e.children().find(|c| c.ns() == ns::STANZAS))
                .map(|c| c.name().to_string())
                .unwrap_or_else(|| "undefined-condition".into());
            run.stats.error(format!("message-error:{cond}"));
            return Ok(());
        }
        if let Some(t) = el
            .child_text("body", CONTENT_NS)
            .as_deref()
            .and_then(stamp_of)
        {
            run.stats.latency.record_us(now_us().saturating_sub(t));
            run.stats.received.fetch_add(1, Ordering::Relaxed);
        }
        return Ok(());
    }
    conn.handle_common(el).await
}
