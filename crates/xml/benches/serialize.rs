//! Element serialization: what the router pays once per stanza (fan-out shares the bytes).
//! A chat message with typical payloads, a presence with caps, and a 100-item roster
//! result (the size of a roster push or fetch for a busy account).

#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use rookery_xml::{Element, CONTENT_NS};

fn message() -> Element {
    Element::new("message", CONTENT_NS)
        .with_attr("from", "romeo@montague.example/orchard")
        .with_attr("to", "juliet@capulet.example/balcony")
        .with_attr("type", "chat")
        .with_attr("id", "msg-0001")
        .with_child(Element::new("body", CONTENT_NS).with_text(
            "But soft, what light through yonder window breaks? It is the east, & Juliet <3 the sun.",
        ))
        .with_child(Element::new("active", "http://jabber.org/protocol/chatstates"))
        .with_child(Element::new("request", "urn:xmpp:receipts"))
        .with_child(Element::new("origin-id", "urn:xmpp:sid:0").with_attr("id", "5f1c9a7e-0001"))
}

fn presence() -> Element {
    Element::new("presence", CONTENT_NS)
        .with_attr("from", "user1@example.org/phone")
        .with_attr("to", "romeo@montague.example")
        .with_child(Element::new("show", CONTENT_NS).with_text("away"))
        .with_child(Element::new("status", CONTENT_NS).with_text("In a meeting until 3pm"))
        .with_child(Element::new("priority", CONTENT_NS).with_text("5"))
        .with_child(
            Element::new("c", "http://jabber.org/protocol/caps")
                .with_attr("hash", "sha-1")
                .with_attr("node", "https://conversations.im")
                .with_attr("ver", "QgayPKawpkPSDYmwT/WM94uAlu0="),
        )
}

fn roster(items: usize) -> Element {
    let mut query = Element::new("query", "jabber:iq:roster").with_attr("ver", "ver42");
    for i in 0..items {
        query.push_child(
            Element::new("item", "jabber:iq:roster")
                .with_attr("jid", format!("contact{i}@example.net"))
                .with_attr("name", format!("Contact {i}"))
                .with_attr("subscription", "both")
                .with_child(Element::new("group", "jabber:iq:roster").with_text("Friends")),
        );
    }
    Element::new("iq", CONTENT_NS)
        .with_attr("type", "result")
        .with_attr("id", "roster-1")
        .with_attr("to", "romeo@montague.example/orchard")
        .with_child(query)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("serialize");
    for (name, el) in [
        ("chat_message", message()),
        ("presence_caps", presence()),
        ("roster_100_items", roster(100)),
    ] {
        group.throughput(Throughput::Bytes(el.to_bytes().len() as u64));
        group.bench_function(name, |b| b.iter(|| black_box(&el).to_bytes()));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
