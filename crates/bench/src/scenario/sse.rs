//! `sse`: N Server-Sent Events clients on one pubsub node (docs/http.md), one XMPP publisher
//! (client 0) publishing at a fixed rate. Reports the server's memory per idle SSE
//! connection (RSS before and after the streams are open, before any publication), every
//! delivery's latency, and per item the publish → *last* client latency (the fan-out's
//! tail).
//!
//! The SSE clients are raw HTTP/1.1 connections to `--http-port` (`GET /pubsub/{service}/
//! {node}`, `Accept: text/event-stream`) that parse `data:` lines; items carry the publish
//! time like the `pubsub` scenario's, so `data:` is `<stamp …>t</stamp>`. The node is
//! created by the publisher (default configuration: `open`, readable anonymously).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{cpu_between, latency_line, round2, stamp_of, Outcome, Phase, Run};
use crate::client::Conn;
use crate::stats::{now_us, Histogram};

/// Parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The public HTTP listener's port (the server's `[listen] http`).
    #[arg(long, default_value_t = 5280)]
    pub http_port: u16,
    /// The pubsub service JID (default: `pubsub.<domain>`).
    #[arg(long)]
    pub service: Option<String>,
    /// The node.
    #[arg(long, default_value = "rookery-bench-sse")]
    pub node: String,
    /// Items published per second.
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
    /// SSE connections opened per second.
    #[arg(long, default_value_t = 1000.0)]
    pub open_rate: f64,
}

/// Per item (by its stamp): deliveries so far and the slowest one, in microseconds.
type Tails = Mutex<HashMap<u64, (u64, u64)>>;

/// Runs the scenario.
pub async fn run(run: &Arc<Run>, args: &Args) -> Outcome {
    let mut out = Outcome::default();
    let n = run.common.clients.max(1);
    let service = args
        .service
        .clone()
        .unwrap_or_else(|| format!("pubsub.{}", run.cfg.domain));
    let mut publisher = match Conn::login(&run.cfg, 0, None).await {
        Ok(c) => c,
        Err(e) => {
            run.stats.error(e.kind());
            out.lines
                .push(format!("sse: publisher could not log in: {e}"));
            return out;
        }
    };
    super::pubsub::create(run, &mut publisher, &service, &args.node).await;
    let before = run.sample_server("before-streams");
    let http = SocketAddr::new(run.cfg.target(0).ip(), args.http_port);
    let path = format!("/pubsub/{}/{}", segment(&service), segment(&args.node));
    let open = Arc::new(AtomicU64::new(0));
    let tails: Arc<Tails> = Arc::default();
    let mut set = JoinSet::new();
    let t_open = Instant::now();
    let per = 1.0 / args.open_rate.max(1.0);
    for i in 0..n {
        tokio::time::sleep_until(t_open + Duration::from_secs_f64(i as f64 * per)).await;
        let (run, open, tails, path) = (run.clone(), open.clone(), tails.clone(), path.clone());
        set.spawn(async move {
            if let Err(e) = client(&run, http, &path, &open, &tails).await {
                if !run.stopping() {
                    run.stats.error(format!("sse:{:?}", e.kind()));
                }
            }
        });
    }
    // Every stream open (or failed), then a moment for the server to settle.
    run.wait_for(Duration::from_secs(120), || {
        open.load(Ordering::Relaxed) + run.stats.error_count() >= n as u64
    })
    .await;
    let opened = open.load(Ordering::Relaxed);
    let open_s = t_open.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = run.sample_server("streams-idle");
    let per_conn_kib = match (before, idle) {
        (Some(b), Some(a)) if opened > 0 => {
            Some(round2((a.rss_kb as f64 - b.rss_kb as f64) / opened as f64))
        }
        _ => None,
    };
    let cpu0 = run.sample_server("run-start");
    let recv0 = run.stats.received.load(Ordering::Relaxed);
    run.set_phase(Phase::Run);
    let t0 = Instant::now();
    let published =
        super::pubsub::publish(run, &mut publisher, &service, &args.node, args.rate).await;
    let secs = t0.elapsed().as_secs_f64();
    run.hold(Duration::from_secs(2)).await;
    let cpu1 = run.sample_server("run-end");
    let received = run.stats.received.load(Ordering::Relaxed) - recv0;
    let lat = run.stats.latency.summary_ms();
    let last = Histogram::default();
    let mut complete = 0u64;
    if let Ok(t) = tails.lock() {
        for (count, max) in t.values() {
            last.record_us(*max);
            if *count >= opened {
                complete += 1;
            }
        }
    }
    let last = last.summary_ms();
    let expected = published * opened;
    out.put(
        "sse",
        json!({
            "service": service,
            "streams": opened,
            "open_seconds": round2(open_s),
            "rss_per_idle_stream_kib": per_conn_kib,
            "offered_rate_per_s": args.rate,
            "seconds": round2(secs),
            "published": published,
            "deliveries": received,
            "expected_deliveries": expected,
            "items_reaching_every_stream": complete,
            "latency_ms": lat,
            "last_stream_latency_ms": last,
            "server_cpu_s": cpu_between(cpu0, cpu1).map(round2),
        }),
        format!(
            "sse: {opened} streams ({} KiB RSS each when idle), {published} items, {received} of {expected} deliveries; \
             latency {}; publish → last stream {}",
            per_conn_kib.map_or("?".into(), |k| k.to_string()),
            latency_line(&lat),
            latency_line(&last)
        ),
    );
    publisher.close().await;
    run.set_phase(Phase::Stop);
    set.abort_all();
    while set.join_next().await.is_some() {}
    out
}

/// A path segment, percent-encoded (RFC 3986 unreserved characters stay).
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One SSE client: opens the stream, counts it open on the `200`, then records each
/// item's latency until the run stops.
async fn client(
    run: &Run,
    addr: SocketAddr,
    path: &str,
    open: &AtomicU64,
    tails: &Tails,
) -> std::io::Result<()> {
    let mut tcp = TcpStream::connect(addr).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    tcp.write_all(req.as_bytes()).await?;
    let mut r = BufReader::with_capacity(1024, tcp);
    let mut line = String::new();
    r.read_line(&mut line).await?;
    if !line.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other("status"));
    }
    open.fetch_add(1, Ordering::Relaxed);
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return if run.stopping() {
                Ok(())
            } else {
                Err(std::io::Error::other("closed"))
            };
        }
        // `data: <stamp xmlns="…">t</stamp>` (chunk-size lines never start with "data:").
        let Some(t) = line
            .strip_prefix("data: ")
            .and_then(|d| d.split_once('>'))
            .and_then(|(_, rest)| stamp_of(rest))
        else {
            continue;
        };
        let lat = now_us().saturating_sub(t);
        run.stats.latency.record_us(lat);
        run.stats.received.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = tails.lock() {
            let e = m.entry(t).or_insert((0, 0));
            e.0 += 1;
            e.1 = e.1.max(lat);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(segment("pubsub.localhost"), "pubsub.localhost");
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }
}
