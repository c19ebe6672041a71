//! `pubsub`: one node on a XEP-0060 service, S subscribers (clients 1 … N−1), one publisher
//! (client 0) publishing at a fixed rate. Each item carries the publish time, so every
//! subscriber measures the notification latency; deliveries should be `publishes × S`.
//!
//! Setup: the publisher creates the node (an existing node is fine), then each subscriber
//! subscribes its bare JID. Servers that restrict node creation need the publisher to be
//! allowed (for Prosody, an admin).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rookery_xml::{Element, CONTENT_NS};
use serde_json::json;
use tokio::time::{Instant, MissedTickBehavior};

use super::{cpu_between, latency_line, round2, stamp_of, Outcome, Phase, Run};
use crate::client::{esc, ns, ClientError, Conn};
use crate::stats::now_us;

/// Parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The pubsub service JID (default: `pubsub.<domain>`).
    #[arg(long)]
    pub service: Option<String>,
    /// The node.
    #[arg(long, default_value = "rookery-bench")]
    pub node: String,
    /// Items published per second.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
}

/// Runs the scenario.
pub async fn run(run: &Arc<Run>, args: &Args) -> Outcome {
    let mut out = Outcome::default();
    let n = run.common.clients.max(2);
    let service = args
        .service
        .clone()
        .unwrap_or_else(|| format!("pubsub.{}", run.cfg.domain));
    run.sample_server("before");
    // The publisher logs in first and creates the node.
    let mut publisher = match Conn::login(&run.cfg, 0, None).await {
        Ok(c) => c,
        Err(e) => {
            run.stats.error(e.kind());
            out.lines
                .push(format!("pubsub: publisher could not log in: {e}"));
            return out;
        }
    };
    create(run, &mut publisher, &service, &args.node).await;
    let subscribed = Arc::new(AtomicU64::new(0));
    // Subscription attempts finished, successful or not.
    let settled = Arc::new(AtomicU64::new(0));
    let body = {
        let run = run.clone();
        let subscribed = subscribed.clone();
        let settled = settled.clone();
        let service = service.clone();
        let node = args.node.clone();
        move |i: usize, conn: Conn| {
            let run = run.clone();
            let subscribed = subscribed.clone();
            let settled = settled.clone();
            let service = service.clone();
            let node = node.clone();
            async move { subscriber(&run, conn, i, &service, &node, &subscribed, &settled).await }
        }
    };
    let set = run.ramp(1..n, body);
    let ramp = run.settle(n - 1).await;
    run.ramp_outcome(ramp, &mut out);
    run.wait_for(Duration::from_secs(60), || {
        settled.load(Ordering::Relaxed) >= ramp.logins
    })
    .await;
    let subs = subscribed.load(Ordering::Relaxed);
    let cpu0 = run.sample_server("run-start");
    let recv0 = run.stats.received.load(Ordering::Relaxed);
    run.set_phase(Phase::Run);
    let t0 = Instant::now();
    let published = publish(run, &mut publisher, &service, &args.node, args.rate).await;
    let secs = t0.elapsed().as_secs_f64();
    run.hold(Duration::from_secs(2)).await;
    let cpu1 = run.sample_server("run-end");
    let received = run.stats.received.load(Ordering::Relaxed) - recv0;
    let lat = run.stats.latency.summary_ms();
    let expected = published * subs;
    out.put(
        "pubsub",
        json!({
            "service": service,
            "subscribers": subs,
            "offered_rate_per_s": args.rate,
            "seconds": round2(secs),
            "published": published,
            "deliveries": received,
            "expected_deliveries": expected,
            "delivery_rate_per_s": round2(received as f64 / secs),
            "latency_ms": lat,
            "server_cpu_s": cpu_between(cpu0, cpu1).map(round2),
        }),
        format!(
            "pubsub: {subs} subscribers, {published} items, {received} of {expected} notifications ({:.0}/s); latency {}",
            received as f64 / secs,
            latency_line(&lat)
        ),
    );
    publisher.close().await;
    run.finish(set).await;
    out
}

/// Creates `node` on `service` as `conn` (an existing node is fine; other failures are
/// counted).
pub(super) async fn create(run: &Run, conn: &mut Conn, service: &str, node: &str) {
    let id = conn.id();
    let create = format!(
        "<iq type='set' id='{id}' to='{}'><pubsub xmlns='{}'><create node='{}'/></pubsub></iq>",
        esc(service),
        ns::PUBSUB,
        esc(node)
    );
    let created = match conn.send(create.as_bytes()).await {
        Ok(()) => conn.await_result(&id, "create").await.map(|_| ()),
        Err(e) => Err(e),
    };
    match created {
        Ok(()) => {}
        Err(ClientError::Iq(_, c)) if c == "conflict" => {}
        Err(e) => run.stats.error(e.kind()),
    }
}

/// Publishes stamped items to `node` at `rate` for the run's duration; how many.
pub(super) async fn publish(
    run: &Run,
    conn: &mut Conn,
    service: &str,
    node: &str,
    rate: f64,
) -> u64 {
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let end = Instant::now() + run.common.duration;
    let mut published = 0;
    let service = esc(service);
    let node = esc(node);
    loop {
        tokio::select! {
            r = conn.next_element() => match r {
                Ok(el) => {
                    if el.is("iq", CONTENT_NS) && el.attr("type") == Some("error") {
                        run.stats.error("iq:publish");
                    } else if conn.handle_common(&el).await.is_err() {
                        break;
                    }
                }
                Err(e) => { run.stats.error(e.kind()); break; }
            },
            _ = tick.tick() => {
                let id = conn.id();
                let iq = format!(
                    "<iq type='set' id='{id}' to='{service}'><pubsub xmlns='{}'><publish node='{node}'>\
                     <item><stamp xmlns='urn:xmpp:rookery-bench:0'>{}</stamp></item></publish></pubsub></iq>",
                    ns::PUBSUB,
                    now_us()
                );
                if conn.send(iq.as_bytes()).await.is_err() { break; }
                published += 1;
                run.stats.sent.fetch_add(1, Ordering::Relaxed);
            }
            _ = tokio::time::sleep_until(end) => break,
        }
    }
    published
}

async fn subscriber(
    run: &Arc<Run>,
    mut conn: Conn,
    i: usize,
    service: &str,
    node: &str,
    subscribed: &AtomicU64,
    settled: &AtomicU64,
) -> Result<(), ClientError> {
    let id = conn.id();
    conn.send(
        format!(
            "<iq type='set' id='{id}' to='{}'><pubsub xmlns='{}'><subscribe node='{}' jid='{}'/></pubsub></iq>",
            esc(service),
            ns::PUBSUB,
            esc(node),
            esc(&run.cfg.bare(i))
        )
        .as_bytes(),
    )
    .await?;
    let result = conn.await_result(&id, "subscribe").await;
    settled.fetch_add(1, Ordering::Relaxed);
    result?;
    subscribed.fetch_add(1, Ordering::Relaxed);
    let mut phase = run.phase();
    loop {
        tokio::select! {
            r = conn.next_element() => {
                let el = r?;
                if let Some(t) = stamp_in(&el) {
                    run.stats.latency.record_us(now_us().saturating_sub(t));
                    run.stats.received.fetch_add(1, Ordering::Relaxed);
                } else {
                    conn.handle_common(&el).await?;
                }
            }
            _ = super::stopped(&mut phase) => break,
        }
    }
    conn.close().await;
    Ok(())
}

/// The timestamp of a pubsub notification
/// (`<message><event><items><item><stamp>t</stamp>`).
fn stamp_in(el: &Element) -> Option<u64> {
    if !el.is("message", CONTENT_NS) {
        return None;
    }
    let item = el
        .get_child("event", ns::PUBSUB_EVENT)?
        .get_child("items", ns::PUBSUB_EVENT)?
        .get_child("item", ns::PUBSUB_EVENT)?;
    let stamp = item.children().next()?;
    stamp_of(&stamp.text())
}
