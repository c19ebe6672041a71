//! What the metrics add to every routed stanza: `Metrics::route` (one counter add) and its
//! guard's drop (an `Instant` pair and the histogram's bucket, count and sum adds). Compared
//! in docs/performance.md with the router's own cost per message (rookery-core's `route`
//! bench) and the whole server's CPU per message.

#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use rookery_proto::stanza::MessageType;
use rookery_proto::StanzaKind;

fn route_timer(c: &mut Criterion) {
    let m = rookery_metrics::get();
    c.bench_function("metrics per routed stanza", |b| {
        b.iter(|| drop(m.route(black_box(StanzaKind::Message(MessageType::Chat)))))
    });
}

criterion_group!(benches, route_timer);
criterion_main!(benches);
