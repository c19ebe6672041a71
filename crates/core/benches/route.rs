//! Routing one chat message between two in-process sessions: `Core::route` (route table,
//! session lookup in the sharded registry, serialization once) and the recipient's queue.
//! No socket, TLS or parser: this is the router's own cost per message. The core runs with
//! no modules, so hooks cost nothing here; the figure is a floor for a real server.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use rookery_core::session::SessionEnd;
use rookery_core::{Core, CoreBuilder, CoreConfig, MemoryAccounts, Outbound, SessionHandle};
use rookery_jid::Jid;
use rookery_proto::Stanza;
use rookery_xml::{Element, CONTENT_NS};

fn message(to: &str) -> Stanza {
    let el = Element::new("message", CONTENT_NS)
        .with_attr("from", "alice@localhost/phone")
        .with_attr("to", to)
        .with_attr("type", "chat")
        .with_attr("id", "m-0001")
        .with_child(
            Element::new("body", CONTENT_NS)
                .with_text("But soft, what light through yonder window breaks? 1234567890"),
        )
        .with_child(Element::new(
            "active",
            "http://jabber.org/protocol/chatstates",
        ));
    Stanza::from_element(el).unwrap()
}

async fn setup() -> (Arc<Core>, Vec<SessionEnd>) {
    let core = CoreBuilder::new(CoreConfig::default(), Arc::new(MemoryAccounts::new()))
        .build()
        .unwrap();
    let mut ends = Vec::new();
    for jid in ["alice@localhost/phone", "bob@localhost/laptop"] {
        let jid = Jid::parse(jid).unwrap();
        let (handle, end) = SessionHandle::new(core.next_session_id(), jid.clone(), 1024);
        assert!(core.bind(handle).await.is_none());
        core.set_available(&jid, Some(0));
        ends.push(end);
    }
    (core, ends)
}

fn drain(end: &mut SessionEnd) -> usize {
    let mut n = 0;
    while let Ok(Outbound::Bytes(b)) = end.rx.try_recv() {
        n += b.len();
    }
    n
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (core, mut ends) = rt.block_on(setup());
    let mut group = c.benchmark_group("route");
    group.throughput(Throughput::Elements(1));
    for (name, to) in [
        ("message_to_full_jid", "bob@localhost/laptop"),
        ("message_to_bare_jid", "bob@localhost"),
    ] {
        let stanza = message(to);
        rt.block_on(core.route(stanza.clone()));
        assert!(drain(&mut ends[1]) > 0, "{name}: nothing delivered");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    let mut left = iters;
                    while left > 0 {
                        // Batches below the queue capacity, drained outside the timing.
                        let batch = left.min(512);
                        let t = Instant::now();
                        for _ in 0..batch {
                            core.route(black_box(stanza.clone())).await;
                        }
                        total += t.elapsed();
                        black_box(drain(&mut ends[1]));
                        left -= batch;
                    }
                    total
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
