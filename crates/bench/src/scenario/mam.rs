//! `mam`: every client asks its own archive (XEP-0313) for "the last N messages with X" at a
//! fixed total rate — the query a client runs when a chat is opened — and measures each
//! query from the request to its `<fin/>`. The archive is filled beforehand
//! (`conformance/bench/mam-fill.sh`): account `a` of `A` has messages with the `P` accounts
//! after it (`((a − 1 + k) mod A) + 1`, k = 1 … P), so X is one of those.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rand::Rng;
use rookery_xml::CONTENT_NS;
use serde_json::json;
use tokio::time::Instant;

use super::{cpu_between, latency_line, round2, ticker, Outcome, Phase, Run};
use crate::client::{esc, ClientError, Conn};
use crate::stats::now_us;

const NS_MAM: &str = "urn:xmpp:mam:2";
const NS_RSM: &str = "http://jabber.org/protocol/rsm";

/// Parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Queries per second offered by all clients together.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Messages per page (`<max/>`).
    #[arg(long, default_value_t = 50)]
    pub page: u32,
    /// Accounts the archive was filled for (`A`).
    #[arg(long, default_value_t = 1000)]
    pub accounts: usize,
    /// Partners per account in the archive (`P`).
    #[arg(long, default_value_t = 10)]
    pub partners: usize,
}

/// Runs the scenario.
pub async fn run(run: &Arc<Run>, args: &Args) -> Outcome {
    let mut out = Outcome::default();
    let n = run.common.clients.max(1);
    let per_client = args.rate / n as f64;
    let querying = Arc::new(AtomicBool::new(true));
    let body = {
        let (run, args, querying) = (run.clone(), args.clone(), querying.clone());
        move |i: usize, conn: Conn| {
            let (run, args, querying) = (run.clone(), args.clone(), querying.clone());
            async move { client(&run, conn, i, per_client, &args, &querying).await }
        }
    };
    run.sample_server("before");
    let set = run.ramp(0..n, body);
    let ramp = run.settle(n).await;
    run.ramp_outcome(ramp, &mut out);
    let cpu0 = run.sample_server("run-start");
    let (q0, m0) = (
        run.stats.sent.load(Ordering::Relaxed),
        run.stats.received.load(Ordering::Relaxed),
    );
    let t0 = Instant::now();
    run.set_phase(Phase::Run);
    run.hold(run.common.duration).await;
    querying.store(false, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = run.sample_server("run-end");
    run.hold(std::time::Duration::from_secs(2)).await;
    let queries = run.stats.sent.load(Ordering::Relaxed) - q0;
    let messages = run.stats.received.load(Ordering::Relaxed) - m0;
    let lat = run.stats.latency.summary_ms();
    let answered = lat
        .get("count")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    let cpu = cpu_between(cpu0, cpu1);
    out.put(
        "mam",
        json!({
            "offered_rate_per_s": args.rate,
            "page": args.page,
            "seconds": round2(secs),
            "queries": queries,
            "answered": answered,
            "messages": messages,
            "messages_per_query": if answered > 0 { round2(messages as f64 / answered as f64) } else { 0.0 },
            "answered_rate_per_s": round2(answered as f64 / secs),
            "latency_ms": lat,
            "server_cpu_s": cpu.map(round2),
            "server_cpu_ms_per_query": cpu.filter(|_| answered > 0).map(|c| round2(c * 1e3 / answered as f64)),
        }),
        format!(
            "mam: {queries} queries ({:.0}/s answered), {:.1} messages each; latency {}",
            answered as f64 / secs,
            if answered > 0 { messages as f64 / answered as f64 } else { 0.0 },
            latency_line(&lat)
        ),
    );
    run.finish(set).await;
    out
}

/// The query for the last `page` messages with `with`.
fn query(id: &str, with: &str, page: u32) -> String {
    format!(
        "<iq type='set' id='{id}'><query xmlns='{NS_MAM}' queryid='{id}'>\
         <x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE' type='hidden'><value>{NS_MAM}</value></field>\
         <field var='with'><value>{}</value></field></x>\
         <set xmlns='{NS_RSM}'><max>{page}</max><before/></set></query></iq>",
        esc(with)
    )
}

async fn client(
    run: &Arc<Run>,
    mut conn: Conn,
    i: usize,
    rate: f64,
    args: &Args,
    querying: &AtomicBool,
) -> Result<(), ClientError> {
    let mut rng = run.rng(i);
    let mut phase = run.phase();
    loop {
        tokio::select! {
            r = conn.next_element() => { let el = r?; conn.handle_common(&el).await?; }
            p = super::ramp_over(&mut phase) => {
                if p == Phase::Stop { conn.close().await; return Ok(()); }
                break;
            }
        }
    }
    let accounts = args.accounts.max(1);
    let account = run.cfg.first + i; // 1-based account number
    let mut tick = ticker(rate, &mut rng);
    // One query in flight: its id and when it left.
    let mut pending: Option<(String, u64)> = None;
    loop {
        tokio::select! {
            r = conn.next_element() => {
                let el = r?;
                if el.is("message", CONTENT_NS) && el.get_child("result", NS_MAM).is_some() {
                    run.stats.received.fetch_add(1, Ordering::Relaxed);
                } else if el.is("iq", CONTENT_NS)
                    && pending.as_ref().is_some_and(|(id, _)| el.attr("id") == Some(id.as_str()))
                {
                    let (_, sent) = pending.take().unwrap_or_default();
                    if el.attr("type") == Some("result") {
                        run.stats.latency.record_us(now_us().saturating_sub(sent));
                    } else {
                        run.stats.error("iq:mam");
                    }
                } else {
                    conn.handle_common(&el).await?;
                }
            }
            _ = tick.tick(), if pending.is_none() && querying.load(Ordering::Relaxed) => {
                let k = rng.gen_range(1..=args.partners.max(1));
                let partner = (account.saturating_sub(1) + k) % accounts + 1;
                let with = format!("{}{partner}@{}", run.cfg.user_prefix, run.cfg.domain);
                let id = conn.id();
                conn.send(query(&id, &with, args.page).as_bytes()).await?;
                pending = Some((id, now_us()));
                run.stats.sent.fetch_add(1, Ordering::Relaxed);
            }
            _ = super::stopped(&mut phase) => break,
        }
    }
    conn.close().await;
    Ok(())
}
