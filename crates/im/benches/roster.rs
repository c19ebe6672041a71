//! A 100,000-item roster (RFC 6121 §4.2): the account `big` has every contact with
//! `subscription='both'`, and every contact is online with a session of its own. Measured:
//!
//! - `initial_presence/broadcast`: `big` sends initial presence; the time until the broadcast
//!   has been queued to all 100,000 contacts' sessions (the core's and im's real route:
//!   blocking check, inbound presence handling, serialization, queueing);
//! - `initial_presence/probe_answers`: from the same presence until the presence of all
//!   100,000 contacts has been delivered into `big`'s own queue (answered in place, paced into
//!   a 1024-stanza queue drained by a reader task);
//! - `roster_get`: `big` fetches its whole roster (RFC 6121 §2.2), until the serialized
//!   result is in its queue;
//! - printed once: the memory of the cached 100,000-item roster, the size of the roster
//!   result, and the latency of messages between two unrelated sessions while a broadcast runs
//!   (the "does not stall other sessions" figure).
//!
//! In-process: no sockets or TLS, an in-memory SQLite store, on a multi-threaded runtime.
//! `ROOKERY_BENCH_CONTACTS` changes the roster size (default 100000).
//!
//!     cargo bench -p rookery-im --bench roster

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use rookery_core::session::SessionEnd;
use rookery_core::{
    Accounts, Core, CoreBuilder, CoreConfig, MemoryAccounts, Outbound, SessionHandle,
};
use rookery_im::{Im, ImConfig};
use rookery_jid::{BareJid, Jid};
use rookery_proto::Stanza;
use rookery_store::rosters::{Request, RosterItem, Subscription};
use rookery_store::{Credentials, Store};
use rookery_xml::{Element, CONTENT_NS};
use tokio::sync::Notify;

fn contacts() -> usize {
    std::env::var("ROOKERY_BENCH_CONTACTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000)
}

fn presence(from: &Jid, t: Option<&str>) -> Stanza {
    let mut el = Element::new("presence", CONTENT_NS).with_attr("from", from.as_str());
    if let Some(t) = t {
        el.set_attr("type", t);
    }
    el.push_child(Element::new("status", CONTENT_NS).with_text("benchmarking"));
    Stanza::from_element(el).unwrap()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|v| v.parse().unwrap_or(0)))
        })
        .unwrap_or(0)
}

struct Fixture {
    core: Arc<Core>,
    im: Arc<Im>,
    big: Jid,
    contact_ends: Vec<SessionEnd>,
    /// Presence stanzas `big`'s reader task has seen.
    big_seen: Arc<AtomicUsize>,
    /// Size of the last IQ `big`'s reader task has seen (0: none yet).
    big_iq_len: Arc<AtomicUsize>,
    big_notify: Arc<Notify>,
    x1: Jid,
    x2_end: SessionEnd,
}

fn item(contact: &str) -> RosterItem {
    RosterItem {
        contact: contact.into(),
        subscription: Subscription::Both,
        ..RosterItem::default()
    }
}

async fn bind(core: &Arc<Core>, jid: &Jid, queue: usize) -> SessionEnd {
    let (h, end) = SessionHandle::new(core.next_session_id(), jid.clone(), queue);
    assert!(core.bind(h).await.is_none());
    end
}

fn drain(end: &mut SessionEnd) -> usize {
    let mut n = 0;
    while let Ok(Outbound::Bytes(_)) = end.rx.try_recv() {
        n += 1;
    }
    n
}

async fn setup(n: usize) -> Fixture {
    let t = Instant::now();
    let store = Store::open("sqlite::memory:").await.unwrap();
    let creds = Credentials::derive("pencil", 64).unwrap();
    let d = "localhost";
    // The same accounts in the store (rosters refer to them) and in the core's directory.
    let directory = Arc::new(MemoryAccounts::new());
    let accounts = store.accounts();
    for u in ["big", "x1", "x2"] {
        accounts.create(d, u, &creds).await.unwrap();
        directory.create(d, u, &creds).await.unwrap();
    }
    for i in 0..n {
        let u = format!("c{i}");
        accounts.create(d, &u, &creds).await.unwrap();
        directory.create(d, &u, &creds).await.unwrap();
        store
            .rosters()
            .put(d, "big", &item(&format!("{u}@localhost")), Request::Keep)
            .await
            .unwrap();
        store
            .rosters()
            .put(d, &u, &item("big@localhost"), Request::Keep)
            .await
            .unwrap();
    }
    let (im, modules) = rookery_im::modules(ImConfig::default(), store);
    let mut b = CoreBuilder::new(CoreConfig::default(), directory);
    for m in modules {
        b = b.module(m);
    }
    let core = b.build().unwrap();
    // Every contact online and available, its roster cached (as after a client's login).
    let mut contact_ends = Vec::with_capacity(n);
    for i in 0..n {
        let jid = Jid::parse(&format!("c{i}@localhost/r")).unwrap();
        contact_ends.push(bind(&core, &jid, 8).await);
        core.route_from_session(presence(&jid, None)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // their initial-delivery tasks
    for e in &mut contact_ends {
        drain(e);
    }
    let big = Jid::parse("big@localhost/r").unwrap();
    let mut big_end = bind(&core, &big, 1024).await;
    let big_seen = Arc::new(AtomicUsize::new(0));
    let big_notify = Arc::new(Notify::new());
    let big_iq_len = Arc::new(AtomicUsize::new(0));
    {
        let seen = big_seen.clone();
        let notify = big_notify.clone();
        let iq_len = big_iq_len.clone();
        tokio::spawn(async move {
            while let Some(Outbound::Bytes(b)) = big_end.rx.recv().await {
                if b.starts_with(b"<presence") {
                    seen.fetch_add(1, Ordering::Relaxed);
                    notify.notify_one();
                } else if b.starts_with(b"<iq") {
                    iq_len.store(b.len(), Ordering::Relaxed);
                    notify.notify_one();
                }
            }
        });
    }
    let x1 = Jid::parse("x1@localhost/r").unwrap();
    let x2 = Jid::parse("x2@localhost/r").unwrap();
    let _x1_end = bind(&core, &x1, 1024).await;
    std::mem::forget(_x1_end);
    let x2_end = bind(&core, &x2, 1 << 16).await;
    eprintln!(
        "setup: {n} contacts in {:.1}s, RSS {} MiB",
        t.elapsed().as_secs_f64(),
        rss_kib() / 1024
    );
    Fixture {
        core,
        im,
        big,
        contact_ends,
        big_seen,
        big_iq_len,
        big_notify,
        x1,
        x2_end,
    }
}

/// One initial presence of `big`: (broadcast done, all probe answers received).
async fn initial_presence(f: &mut Fixture, n: usize) -> (Duration, Duration) {
    // Reset: unavailable (untimed), drain everything.
    f.core
        .route_from_session(presence(&f.big, Some("unavailable")))
        .await;
    for e in &mut f.contact_ends {
        drain(e);
    }
    f.big_seen.store(0, Ordering::Relaxed);
    let t0 = Instant::now();
    f.core.route_from_session(presence(&f.big, None)).await;
    let broadcast = t0.elapsed();
    // `big` also gets its own presence back (implicit self-subscription).
    while f.big_seen.load(Ordering::Relaxed) < n + 1 {
        let _ = tokio::time::timeout(Duration::from_secs(1), f.big_notify.notified()).await;
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "probe answers stalled"
        );
    }
    let probes = t0.elapsed();
    let got: usize = f.contact_ends.iter_mut().map(drain).sum();
    assert_eq!(got, n, "every contact got big's presence exactly once");
    (broadcast, probes)
}

/// `big` fetches its roster: time until the result is in its queue, and its size.
async fn roster_get(f: &mut Fixture) -> (Duration, usize) {
    f.big_iq_len.store(0, Ordering::Relaxed);
    let el = Element::new("iq", CONTENT_NS)
        .with_attr("from", f.big.as_str())
        .with_attr("type", "get")
        .with_attr("id", "roster")
        .with_child(Element::new("query", "jabber:iq:roster"));
    let t0 = Instant::now();
    f.core
        .route_from_session(Stanza::from_element(el).unwrap())
        .await;
    loop {
        let len = f.big_iq_len.load(Ordering::Relaxed);
        if len > 0 {
            return (t0.elapsed(), len);
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), f.big_notify.notified()).await;
    }
}

/// Latency of messages x1 → x2 (unrelated to `big`) while `big` broadcasts.
async fn latency_during_broadcast(f: &mut Fixture) -> (Duration, Duration, usize) {
    f.core
        .route_from_session(presence(&f.big, Some("unavailable")))
        .await;
    for e in &mut f.contact_ends {
        drain(e);
    }
    let core = f.core.clone();
    let x1 = f.x1.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let mut x2_end = std::mem::replace(
        &mut f.x2_end,
        SessionHandle::new(0, x1.clone(), 1).1, // placeholder, restored below
    );
    let pinger = tokio::spawn(async move {
        let mut lat = Vec::new();
        let mut i = 0u64;
        while !stop2.load(Ordering::Relaxed) {
            let el = Element::new("message", CONTENT_NS)
                .with_attr("from", x1.as_str())
                .with_attr("to", "x2@localhost/r")
                .with_attr("type", "chat")
                .with_child(Element::new("body", CONTENT_NS).with_text(format!("{i}")));
            let s = Stanza::from_element(el).unwrap();
            let t = Instant::now();
            core.route_from_session(s).await;
            let _ = x2_end.rx.recv().await;
            lat.push(t.elapsed());
            i += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        (lat, x2_end)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t0 = Instant::now();
    f.core.route_from_session(presence(&f.big, None)).await;
    let broadcast = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (mut lat, x2_end) = pinger.await.unwrap();
    f.x2_end = x2_end;
    lat.sort();
    let max = lat.last().copied().unwrap_or_default();
    let p99 = lat
        .get(lat.len().saturating_mul(99) / 100)
        .copied()
        .unwrap_or_default();
    eprintln!(
        "during a {:.0} ms broadcast: {} messages between two other sessions, p99 {:?}, max {:?}",
        broadcast.as_secs_f64() * 1e3,
        lat.len(),
        p99,
        max
    );
    (p99, max, lat.len())
}

fn bench(c: &mut Criterion) {
    let n = contacts();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut f = rt.block_on(setup(n));
    // Memory of the cached roster: drop it, measure RSS around loading it again.
    let bare: BareJid = f.big.to_bare();
    rt.block_on(async {
        let before = rss_kib();
        let account = f.im.account(&f.core, &bare).await.unwrap();
        let after = rss_kib();
        let items = rookery_im::state::read(&account.roster).items.len();
        eprintln!(
            "roster cache of {items} items: +{} MiB RSS when loaded ({} bytes per item)",
            after.saturating_sub(before) / 1024,
            after.saturating_sub(before) * 1024 / items.max(1) as u64
        );
    });
    rt.block_on(async {
        let before = rss_kib();
        let (t, len) = roster_get(&mut f).await;
        eprintln!(
            "roster get: {len} bytes in {t:?} (RSS {} MiB -> {} MiB)",
            before / 1024,
            rss_kib() / 1024
        );
    });
    rt.block_on(latency_during_broadcast(&mut f));
    let mut group = c.benchmark_group(format!("initial_presence_{n}_contacts"));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(30));
    group.bench_function("broadcast", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += initial_presence(&mut f, n).await.0;
                }
                total
            })
        })
    });
    group.bench_function("probe_answers", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += initial_presence(&mut f, n).await.1;
                }
                total
            })
        })
    });
    group.bench_function("roster_get", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += roster_get(&mut f).await.0;
                }
                total
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
