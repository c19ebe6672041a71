//! Stream parser throughput on a realistic stanza mix, fed in 4 KiB chunks as a socket would.

#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use rookery_xml::{Event, Limits, StreamParser};

/// A client stream of chat messages, presence with caps and roster results (6 : 3 : 1).
fn stream() -> Vec<u8> {
    let mut s = String::from(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' to='example.org' version='1.0' xml:lang='en'>",
    );
    for i in 0..400 {
        for m in 0..6 {
            s.push_str(&format!(
                "<message from='romeo@montague.example/orchard' to='juliet@capulet.example/balcony' \
                 type='chat' id='msg-{i}-{m}' xml:lang='en'><body>But soft, what light through yonder \
                 window breaks? It is the east, and Juliet is the sun &amp; the moon &lt;3 ({i})</body>\
                 <active xmlns='http://jabber.org/protocol/chatstates'/><request xmlns='urn:xmpp:receipts'/>\
                 <origin-id xmlns='urn:xmpp:sid:0' id='5f1c9a7e-{i}-{m}'/></message>\n"
            ));
        }
        for p in 0..3 {
            s.push_str(&format!(
                "<presence from='user{p}@example.org/phone-{i}' to='romeo@montague.example'>\
                 <show>away</show><status>In a meeting until 3pm</status><priority>5</priority>\
                 <c xmlns='http://jabber.org/protocol/caps' hash='sha-1' \
                 node='https://conversations.im' ver='QgayPKawpkPSDYmwT/WM94uAlu0='/>\
                 <x xmlns='vcard-temp:x:update'><photo>01b87fcd030b72895ff8e88db57ec525450f000d</photo></x>\
                 </presence> "
            ));
        }
        s.push_str(&format!(
            "<iq type='result' id='roster-{i}' to='romeo@montague.example/orchard'>\
             <query xmlns='jabber:iq:roster' ver='ver{i}'>"
        ));
        for c in 0..20 {
            s.push_str(&format!(
                "<item jid='contact{c}@example.net' name='Contact {c}' subscription='both'>\
                 <group>Friends</group></item>"
            ));
        }
        s.push_str("</query></iq>");
    }
    s.push_str("</stream:stream>");
    s.into_bytes()
}

fn parse_in_chunks(input: &[u8], chunk: usize) -> usize {
    let mut parser = StreamParser::new(Limits::C2S);
    let mut elements = 0;
    for piece in input.chunks(chunk) {
        parser.feed(piece);
        while let Some(event) = parser.next_event().unwrap() {
            if let Event::Element(el) = event {
                elements += 1;
                black_box(el);
            }
        }
    }
    elements
}

fn bench(c: &mut Criterion) {
    let input = stream();
    assert_eq!(parse_in_chunks(&input, 4096), 4000);
    let mut group = c.benchmark_group("stream_parser");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("stanza_mix_4KiB_chunks", |b| {
        b.iter(|| parse_in_chunks(black_box(&input), 4096))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
