//! `muc`: one XEP-0045 room with N occupants (every client joins it), one of them (client 0,
//! the room's creator) sending groupchat messages at a fixed rate. Each message carries its
//! send time, so every occupant — the sender's reflection included — measures the delivery
//! latency; deliveries should be `messages × occupants`.
//!
//! Setup: client 0 enters first and submits an empty configuration form (an instant room,
//! XEP-0045 §10.1.2; a room that is already open answers it or an error, both fine), then the
//! others enter without history. Works against any server's MUC service (`--service`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rookery_xml::{Element, CONTENT_NS};
use serde_json::json;
use tokio::time::{Instant, MissedTickBehavior};

use super::{cpu_between, latency_line, round2, stamp_of, Outcome, Phase, Run};
use crate::client::{esc, ClientError, Conn};
use crate::stats::now_us;

const NS_MUC: &str = "http://jabber.org/protocol/muc";
const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const NS_MUC_OWNER: &str = "http://jabber.org/protocol/muc#owner";

/// Parameters.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The MUC service JID (default: `conference.<domain>`).
    #[arg(long)]
    pub service: Option<String>,
    /// The room's name (its local part).
    #[arg(long, default_value = "rookery-bench")]
    pub room: String,
    /// Groupchat messages sent per second.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
}

/// Sends the room presence for `nick` and waits for the self-presence (status 110).
async fn enter(conn: &mut Conn, room: &str, nick: &str) -> Result<(), ClientError> {
    conn.send(
        format!(
            "<presence to='{}/{}'><x xmlns='{NS_MUC}'><history maxstanzas='0'/></x></presence>",
            esc(room),
            esc(nick)
        )
        .as_bytes(),
    )
    .await?;
    loop {
        let el = conn.next_element().await?;
        if el.is("presence", CONTENT_NS) && el.attr("type") == Some("error") {
            return Err(ClientError::Iq("enter", "presence-error".into()));
        }
        let own = el.is("presence", CONTENT_NS)
            && el.get_child("x", NS_MUC_USER).is_some_and(|x| {
                x.children()
                    .any(|s| s.name() == "status" && s.attr("code") == Some("110"))
            });
        if own {
            return Ok(());
        }
        conn.handle_common(&el).await?;
    }
}

/// Runs the scenario.
pub async fn run(run: &Arc<Run>, args: &Args) -> Outcome {
    let mut out = Outcome::default();
    let n = run.common.clients.max(2);
    let service = args
        .service
        .clone()
        .unwrap_or_else(|| format!("conference.{}", run.cfg.domain));
    let room = format!("{}@{service}", args.room);
    run.sample_server("before");
    let mut sender = match Conn::login(&run.cfg, 0, None).await {
        Ok(c) => c,
        Err(e) => {
            run.stats.error(e.kind());
            out.lines
                .push(format!("muc: the sender could not log in: {e}"));
            return out;
        }
    };
    if let Err(e) = enter(&mut sender, &room, "n0").await {
        run.stats.error(e.kind());
        out.lines
            .push(format!("muc: the sender could not enter {room}: {e}"));
        return out;
    }
    let id = sender.id();
    let unlock = format!(
        "<iq type='set' id='{id}' to='{}'><query xmlns='{NS_MUC_OWNER}'>\
         <x xmlns='jabber:x:data' type='submit'/></query></iq>",
        esc(&room)
    );
    if sender.send(unlock.as_bytes()).await.is_ok() {
        // Already configured elsewhere, or not the owner: the room is usable either way.
        let _ = sender.await_result(&id, "configure").await;
    }
    let entered = Arc::new(AtomicU64::new(1));
    let settled = Arc::new(AtomicU64::new(0));
    let body = {
        let (run, entered, settled, room) =
            (run.clone(), entered.clone(), settled.clone(), room.clone());
        move |i: usize, conn: Conn| {
            let (run, entered, settled, room) =
                (run.clone(), entered.clone(), settled.clone(), room.clone());
            async move { occupant(&run, conn, i, &room, &entered, &settled).await }
        }
    };
    let set = run.ramp(1..n, body);
    let ramp = run.settle(n - 1).await;
    run.ramp_outcome(ramp, &mut out);
    run.wait_for(Duration::from_secs(120), || {
        settled.load(Ordering::Relaxed) >= ramp.logins
    })
    .await;
    let occupants = entered.load(Ordering::Relaxed);
    let cpu0 = run.sample_server("run-start");
    let recv0 = run.stats.received.load(Ordering::Relaxed);
    run.set_phase(Phase::Run);
    let t0 = Instant::now();
    let sent = send(run, &mut sender, &room, args.rate).await;
    let secs = t0.elapsed().as_secs_f64();
    run.hold(Duration::from_secs(2)).await;
    let cpu1 = run.sample_server("run-end");
    let received = run.stats.received.load(Ordering::Relaxed) - recv0;
    let lat = run.stats.latency.summary_ms();
    let expected = sent * occupants;
    let cpu = cpu_between(cpu0, cpu1);
    out.put(
        "muc",
        json!({
            "room": room,
            "occupants": occupants,
            "offered_rate_per_s": args.rate,
            "seconds": round2(secs),
            "messages": sent,
            "deliveries": received,
            "expected_deliveries": expected,
            "delivery_rate_per_s": round2(received as f64 / secs),
            "latency_ms": lat,
            "server_cpu_s": cpu.map(round2),
            "server_cpu_us_per_delivery": cpu
                .filter(|_| received > 0)
                .map(|c| round2(c * 1e6 / received as f64)),
        }),
        format!(
            "muc: {occupants} occupants, {sent} messages, {received} of {expected} deliveries ({:.0}/s); latency {}",
            received as f64 / secs,
            latency_line(&lat)
        ),
    );
    sender.close().await;
    run.finish(set).await;
    out
}

/// Sends stamped groupchat messages at `rate` for the run's duration, and counts the
/// sender's own reflections as deliveries.
async fn send(run: &Run, conn: &mut Conn, room: &str, rate: f64) -> u64 {
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let end = Instant::now() + run.common.duration;
    let mut sent = 0;
    let room = esc(room);
    loop {
        tokio::select! {
            r = conn.next_element() => match r {
                Ok(el) => {
                    if !record(run, &el) && conn.handle_common(&el).await.is_err() {
                        break;
                    }
                }
                Err(e) => { run.stats.error(e.kind()); break; }
            },
            _ = tick.tick() => {
                let msg = format!(
                    "<message to='{room}' type='groupchat'><body>{}</body></message>",
                    now_us()
                );
                if conn.send(msg.as_bytes()).await.is_err() { break; }
                sent += 1;
                run.stats.sent.fetch_add(1, Ordering::Relaxed);
            }
            _ = tokio::time::sleep_until(end) => break,
        }
    }
    // The reflections of the last messages arrive during the hold.
    let hold = Instant::now() + Duration::from_secs(2);
    while let Ok(Ok(el)) = tokio::time::timeout_at(hold, conn.next_element()).await {
        record(run, &el);
    }
    sent
}

/// Records a stamped groupchat message; whether `el` was one.
fn record(run: &Run, el: &Element) -> bool {
    if !el.is("message", CONTENT_NS) || el.attr("type") != Some("groupchat") {
        return false;
    }
    let Some(t) = el
        .child_text("body", CONTENT_NS)
        .as_deref()
        .and_then(stamp_of)
    else {
        return false;
    };
    run.stats.latency.record_us(now_us().saturating_sub(t));
    run.stats.received.fetch_add(1, Ordering::Relaxed);
    true
}

async fn occupant(
    run: &Arc<Run>,
    mut conn: Conn,
    i: usize,
    room: &str,
    entered: &AtomicU64,
    settled: &AtomicU64,
) -> Result<(), ClientError> {
    let result = enter(&mut conn, room, &format!("n{i}")).await;
    settled.fetch_add(1, Ordering::Relaxed);
    result?;
    entered.fetch_add(1, Ordering::Relaxed);
    let mut phase = run.phase();
    loop {
        tokio::select! {
            r = conn.next_element() => {
                let el = r?;
                if !record(run, &el) {
                    conn.handle_common(&el).await?;
                }
            }
            _ = super::stopped(&mut phase) => break,
        }
    }
    conn.close().await;
    Ok(())
}
