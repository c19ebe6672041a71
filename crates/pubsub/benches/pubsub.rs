//! Pubsub benchmarks (a bench binary: `cargo bench -p rookery-pubsub --bench pubsub`).
//!
//! 1. Fan-out: one node, 10,000 subscribers online as in-process sessions (bound in the real
//!    core's registry, each drained by a task like a connection's writer). Figures: the time
//!    from `publish` until the last subscriber's queue has the notification (one publication
//!    at a time), and the sustained publication rate (publications back to back, until every
//!    notification has been drained). Run with the in-memory store (the engine and fan-out
//!    alone) and with SQLite (`synchronous = FULL`: every acknowledged publication is on
//!    disk first).
//! 2. Retrieval: a persistent node holding 100,000 items on SQLite (and PostgreSQL when
//!    `ROOKERY_TEST_POSTGRES_URL` is set): the time to retrieve the last N items.
//!
//! Environment: `PUBSUB_BENCH_SUBSCRIBERS` (default 10000), `PUBSUB_BENCH_ITEMS` (100000).

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rookery_core::{CoreBuilder, CoreConfig, MemoryAccounts, Outbound, SessionHandle};
use rookery_jid::{BareJid, Jid};
use rookery_pubsub::engine::{ItemsQuery, PublishRequest};
use rookery_pubsub::form::{Field, Form};
use rookery_pubsub::policy::NoRosters;
use rookery_pubsub::{ns, CoreBroadcaster, Engine, MemoryStore, NodeStore, Profile, SqlStore};
use rookery_store::Store;
use rookery_xml::Element;
use tokio::sync::Notify;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn payload(i: usize) -> Element {
    // A typical small payload (~200 bytes serialized): an Atom-like entry.
    Element::new("entry", "http://www.w3.org/2005/Atom")
        .with_child(
            Element::new("title", "http://www.w3.org/2005/Atom")
                .with_text(format!("Update number {i} from the benchmark")),
        )
        .with_child(
            Element::new("summary", "http://www.w3.org/2005/Atom")
                .with_text("But soft, what light through yonder window breaks? 1234567890"),
        )
}

fn publish(i: usize) -> PublishRequest {
    PublishRequest {
        node: Some("bench".into()),
        has_item: true,
        item_id: Some(format!("item-{i}")),
        payload: Some(payload(i)),
        options: None,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// CPU seconds used by this process so far (user + system, from /proc; 0 elsewhere): the
/// figure that stays meaningful on a machine busy with other work.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses and may contain spaces).
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat(5): indexes 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Deliveries counted by the draining tasks; the waiter is woken once, when the count it
/// waits for is reached (not once per delivery, which would measure the harness).
struct Counter {
    delivered: AtomicU64,
    target: AtomicU64,
    bytes: AtomicU64,
    notify: Notify,
}

impl Counter {
    fn delivered(&self, bytes: usize) {
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        let v = self.delivered.fetch_add(1, Ordering::AcqRel) + 1;
        if v == self.target.load(Ordering::Acquire) {
            self.notify.notify_one();
        }
    }

    async fn wait_for(&self, n: u64) {
        self.target.store(n, Ordering::Release);
        while self.delivered.load(Ordering::Acquire) < n {
            // notify_one keeps a permit if it fires before we wait: no lost wake-up.
            let _ = tokio::time::timeout(Duration::from_millis(50), self.notify.notified()).await;
        }
    }
}

async fn fanout(label: &str, store: Arc<dyn NodeStore>, subscribers: usize) {
    let core = CoreBuilder::new(
        CoreConfig {
            session_queue: 4096,
            ..CoreConfig::default()
        },
        Arc::new(MemoryAccounts::new()),
    )
    .build()
    .unwrap();
    let broadcaster = Arc::new(CoreBroadcaster::new());
    broadcaster.attach(&core);
    let mut profile = Profile::service("localhost");
    profile.max_subscriptions_per_node = subscribers + 1;
    let engine = Engine::new(profile, store, broadcaster, Arc::new(NoRosters));
    let svc = BareJid::parse("pubsub.localhost").unwrap();
    let owner = bench_node(&engine, &svc, "10").await;

    // PUBSUB_BENCH_NODRAIN=1: nobody reads the queues (no task wake-ups): the publish call
    // alone then measures the engine and the fan-out into the queues.
    let no_drain = std::env::var("PUBSUB_BENCH_NODRAIN").is_ok();
    let mut kept = Vec::new();
    let counter = Arc::new(Counter {
        delivered: AtomicU64::new(0),
        target: AtomicU64::new(u64::MAX),
        bytes: AtomicU64::new(0),
        notify: Notify::new(),
    });
    let t = Instant::now();
    for i in 0..subscribers {
        let jid = Jid::parse(&format!("user{i}@localhost/r")).unwrap();
        let (handle, mut end) = SessionHandle::new(core.next_session_id(), jid.clone(), 4096);
        core.bind(handle).await;
        core.set_available(&jid, Some(0));
        let c = counter.clone();
        if no_drain {
            kept.push(end);
            let bare: Jid = jid.to_bare().into();
            engine
                .subscribe(&svc, &bare, "bench", &bare, None)
                .await
                .unwrap();
            continue;
        }
        tokio::spawn(async move {
            while let Some(Outbound::Bytes(b)) = end.rx.recv().await {
                c.delivered(b.len());
            }
        });
        let bare: Jid = jid.to_bare().into();
        engine
            .subscribe(&svc, &bare, "bench", &bare, None)
            .await
            .unwrap();
    }
    println!(
        "[{label}] {subscribers} subscribers online and subscribed in {}",
        ms(t.elapsed())
    );

    if no_drain {
        let n = 100;
        let cpu0 = cpu_seconds();
        let t0 = Instant::now();
        for i in 0..n {
            engine.publish(&svc, &owner, publish(i)).await.unwrap();
        }
        let el = t0.elapsed();
        let cpu = cpu_seconds() - cpu0;
        println!(
            "[{label}] no readers: {n} publications to {subscribers} queues in {} \
             ({:.2} ms per publication, CPU {:.2} µs per notification)",
            ms(el),
            el.as_secs_f64() * 1000.0 / n as f64,
            cpu * 1e6 / (n * subscribers) as f64
        );
        drop(kept);
        return;
    }

    // Latency: one publication at a time, until the last subscriber has it.
    let rounds = 50;
    let mut lat = Vec::with_capacity(rounds);
    let mut publish_only = Vec::with_capacity(rounds);
    let mut expected = 0u64;
    for i in 0..rounds {
        let t0 = Instant::now();
        engine.publish(&svc, &owner, publish(i)).await.unwrap();
        publish_only.push(t0.elapsed());
        expected += subscribers as u64;
        counter.wait_for(expected).await;
        lat.push(t0.elapsed());
    }
    lat.sort();
    publish_only.sort();
    let bytes_per = counter.bytes.load(Ordering::Relaxed) / expected.max(1);
    println!(
        "[{label}] publish → last of {subscribers} subscribers has it: p50 {}, p90 {}, max {} \
         (publish call alone, store write + fan-out to queues: p50 {}); {bytes_per} bytes per notification",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.9)),
        ms(*lat.last().unwrap()),
        ms(percentile(&publish_only, 0.5)),
    );

    // Sustained: publications back to back from one publisher, until all are drained.
    let n = 200;
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    for i in 0..n {
        engine
            .publish(&svc, &owner, publish(rounds + i))
            .await
            .unwrap();
    }
    let published = t0.elapsed();
    expected += (n * subscribers) as u64;
    counter.wait_for(expected).await;
    let all = t0.elapsed();
    let cpu = cpu_seconds() - cpu0;
    println!(
        "[{label}] sustained: {n} publications in {} ({:.0} publications/s, {:.2} M notifications/s \
         delivered to queues; all drained after {}); CPU {:.1} ms per publication \
         ({:.2} µs per notification, publisher and {subscribers} draining tasks together)",
        ms(published),
        n as f64 / all.as_secs_f64(),
        (n * subscribers) as f64 / all.as_secs_f64() / 1e6,
        ms(all),
        cpu * 1000.0 / n as f64,
        cpu * 1e6 / (n * subscribers) as f64,
    );
}

/// Creates the node `bench` of `svc` keeping `max_items` items; its owner.
async fn bench_node(engine: &Engine, svc: &BareJid, max_items: &str) -> Jid {
    let owner = Jid::parse("owner@localhost/bench").unwrap();
    let mut cfg = Form::new("submit", ns::NODE_CONFIG);
    cfg.push(Field::new("pubsub#max_items", "text-single", max_items));
    engine
        .create(svc, &owner, Some("bench"), Some(&cfg))
        .await
        .unwrap();
    owner
}

async fn retrieval(label: &str, store: Store, items: usize) {
    let svc = BareJid::parse(&format!(
        "bench{}.pubsub.localhost",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ))
    .unwrap();
    let mut profile = Profile::service("localhost");
    profile.max_items_limit = items as u64;
    let engine = Engine::new(
        profile,
        Arc::new(SqlStore::new(store.clone())),
        Arc::new(rookery_pubsub::broadcast::Discard),
        Arc::new(NoRosters),
    );
    let owner = bench_node(&engine, &svc, "max").await;
    let t = Instant::now();
    for i in 0..items {
        engine.publish(&svc, &owner, publish(i)).await.unwrap();
    }
    let fill = t.elapsed();
    println!(
        "[{label}] {items} items published one by one (each committed) in {:.1} s ({:.0}/s)",
        fill.as_secs_f64(),
        items as f64 / fill.as_secs_f64()
    );
    for n in [1u64, 10, 100, 1000]
        .into_iter()
        .filter(|n| *n <= items as u64)
    {
        let reps = 200;
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps {
            let t0 = Instant::now();
            let got = engine
                .items(
                    &svc,
                    &owner,
                    "bench",
                    &ItemsQuery {
                        max: Some(n),
                        ..ItemsQuery::default()
                    },
                )
                .await
                .unwrap();
            times.push(t0.elapsed());
            assert_eq!(got.items.len(), n as usize);
            assert_eq!(got.items[0].id, format!("item-{}", items - 1));
        }
        times.sort();
        println!(
            "[{label}] last {n:>4} of {items} items: p50 {}, p90 {}",
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.9))
        );
    }
    let t0 = Instant::now();
    let got = engine
        .items(
            &svc,
            &owner,
            "bench",
            &ItemsQuery {
                ids: vec!["item-7".into(), format!("item-{}", items / 2)],
                ..ItemsQuery::default()
            },
        )
        .await
        .unwrap();
    println!(
        "[{label}] 2 items by id among {items}: {} ({} found)",
        ms(t0.elapsed()),
        got.items.len()
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let subscribers = env("PUBSUB_BENCH_SUBSCRIBERS", 10_000);
    let items = env("PUBSUB_BENCH_ITEMS", 100_000);
    println!(
        "pubsub bench: {} worker threads",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    rt.block_on(async {
        fanout(
            "fan-out, memory store",
            Arc::new(MemoryStore::new()),
            subscribers,
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let store = Store::open(&url).await.unwrap();
        fanout(
            "fan-out, SQLite store",
            Arc::new(SqlStore::new(store.clone())),
            subscribers,
        )
        .await;
        // The same queries on a small node first: the large one must not be slower.
        retrieval("retrieval, SQLite", store.clone(), 1000).await;
        retrieval("retrieval, SQLite", store, items).await;
        if let Ok(pg) = std::env::var("ROOKERY_TEST_POSTGRES_URL") {
            if !pg.is_empty() {
                let store = Store::open(&pg).await.unwrap();
                retrieval("retrieval, PostgreSQL", store.clone(), 1000).await;
                retrieval("retrieval, PostgreSQL", store, items).await;
            }
        }
    });
}
