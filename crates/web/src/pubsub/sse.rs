//! A node as a Server-Sent Events stream (HTML Living Standard §9.2, "Server-sent events";
//! docs/http.md, "Streaming a node"): `GET /pubsub/{service}/{node}` with
//! `Accept: text/event-stream`.
//!
//! One event per committed change of the node, from the engine's watch channel
//! ([`rookery_pubsub::Engine::watch`], fed in publish order after the store commit):
//! `event: item` with `id:` the ItemID and `data:` the payload (XML as published, or the JSON
//! of an XEP-0335 container), `retract` (data: the ItemID), `purge` and `delete` (data: the
//! node). Only items carry an `id:`, so a browser's `lastEventId` always names an item.
//!
//! # Resuming
//! `Last-Event-ID` (or `?last_event_id=`) replays, from the store, the items published after
//! that one, oldest first — also after a server restart, since items and their order are
//! stored. What is read is one page of the newest items, as an items request without
//! `max_items` reads (`[pubsub] max_page_items` / `max_page_bytes`), so a replay costs a
//! page of memory however large the node: an ItemID that is not in it (no longer retained,
//! or more than a page behind) gets a `reset` event, then the page. The watch is taken
//! *before* the store is read, and live items at or below the last replayed sequence number
//! are skipped: nothing is missed or sent twice.
//!
//! # Bounded
//! A stream holds a watch receiver on the node's shared ring (no queue of its own) and
//! writes the next event only once the socket took the last one. A client that stops
//! reading is dropped after two heartbeats without progress, or as soon as it falls behind
//! the ring (`Lagged`); it may reconnect and resume.
//! A comment every [`HEARTBEAT`] keeps proxies from closing an idle stream; `retry:` asks
//! browsers to reconnect after [`RETRY_MS`].
//!
//! # Off hyper
//! The body is written by [`respond`] on the connection hyper hands back once the head is
//! out ([`rookery_http::handoff`]), with `Connection: close`: an idle stream costs its
//! socket, its receiver and a timer, not hyper's 16 KiB of connection buffers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use futures_util::{Stream, StreamExt};
use rookery_http::handoff::BodyWriter;
use rookery_pubsub::engine::{ItemsQuery, NodeEvent};
use rookery_pubsub::model::Item;
use rookery_pubsub::PubsubError;
use rookery_store::tokens::Scope;
use tokio::sync::{broadcast, watch};

use super::{HttpError, Payload};
use crate::auth::Caller;
use crate::WebContext;

/// How often an idle stream gets a comment line.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// The reconnection delay suggested to browsers, in milliseconds.
pub const RETRY_MS: u32 = 2000;
/// Heartbeats a write may wait for a client that does not read before it is dropped
/// (15–30 s: the first beat may come right after the write started).
const STALLED_BEATS: u32 = 2;

/// One event in the text/event-stream format: `event:`, `id:` when given and safe (no line
/// break or NUL, which would end the field or be ignored), one `data:` line per line of
/// `data`, and the blank line that dispatches it.
pub fn format_event(kind: &str, id: Option<&str>, data: &str) -> String {
    let mut out = format!("event: {kind}\n");
    if let Some(id) = id.filter(|i| !i.contains(['\r', '\n', '\0'])) {
        out.push_str("id: ");
        out.push_str(id);
        out.push('\n');
    }
    // CRLF, CR and LF all end a line in this format.
    let normalized = data.replace("\r\n", "\n");
    for line in normalized.split(['\n', '\r']) {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}

/// The `item` event of `item`.
pub fn item_event(item: &Item) -> String {
    let data = match item.payload.as_ref().map(Payload::of) {
        Some(Payload::Json(s) | Payload::Xml(s)) => s,
        // A notification-only item: its id is all there is (and data must not be empty, or
        // a browser would not dispatch the event).
        None => item.id.clone(),
    };
    format_event("item", Some(&item.id), &data)
}

/// The event of a live change of `node`. An item is rendered once for all the node's
/// streams ([`rookery_pubsub::engine::WatchedItem::rendered`]).
pub fn node_event(node: &str, ev: &NodeEvent) -> Bytes {
    match ev {
        NodeEvent::Item(i) => i.rendered(|item| Bytes::from(item_event(item))),
        NodeEvent::Retract(id) => Bytes::from(format_event("retract", None, id)),
        NodeEvent::Purge => Bytes::from(format_event("purge", None, node)),
        NodeEvent::Delete => Bytes::from(format_event("delete", None, node)),
    }
}

/// What to replay after the item `last` from `retained` (the newest page, newest first, as
/// the engine gives it): the events, oldest first — led by `reset` when `last` is not in the
/// page — and the sequence number up to which live items are already covered.
pub fn replay(node: &str, last: &str, retained: &[Item]) -> (String, i64) {
    let mut out = String::new();
    let newest = retained.iter().map(|i| i.seq).max().unwrap_or(0);
    let after = match retained.iter().find(|i| i.id == last) {
        Some(i) => i.seq,
        None => {
            out.push_str(&format_event("reset", None, node));
            i64::MIN
        }
    };
    for item in retained.iter().rev().filter(|i| i.seq > after) {
        out.push_str(&item_event(item));
    }
    (out, newest.max(after))
}

/// Whether the request asks for an event stream.
pub fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

/// The live part of a node's stream.
struct Live {
    node: String,
    rx: broadcast::Receiver<NodeEvent>,
    /// Items at or below this sequence number were replayed already.
    after_seq: i64,
}

impl Live {
    /// The next event, or `None` to end the stream: the node is gone or the client fell
    /// behind.
    async fn next(mut self) -> Option<(Bytes, Live)> {
        loop {
            match self.rx.recv().await {
                Ok(NodeEvent::Item(i)) if i.item.seq <= self.after_seq => continue,
                Ok(ev) => {
                    let chunk = node_event(&self.node, &ev);
                    return Some((chunk, self));
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(node = %self.node, missed = n, "SSE client fell behind; dropped");
                    return None;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// The `text/event-stream` response: `first` (the `retry:` hint and what is replayed),
/// then `events` as they come, a comment every [`HEARTBEAT`] in between. The body leaves
/// hyper once the head is written ([`rookery_http::handoff`]): an idle stream holds its
/// socket, its event source and a timer, not hyper's buffers. It ends (the last chunk, then
/// the close) when `events` does or the server stops, and at once when the client leaves.
pub fn respond<S>(stopped: watch::Receiver<()>, first: String, events: S) -> Response
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx would otherwise buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    rookery_http::handoff::response(h, move |out| write(out, stopped, first, events))
}

/// Writes a stream's body: see [`respond`]. A client that does not read holds up only its
/// own writes; one whose socket has not taken a chunk for [`STALLED_BEATS`] heartbeats is
/// dropped (and one that reads again late finds itself behind the node's ring: `Lagged`).
async fn write<S: Stream<Item = Bytes>>(
    mut out: BodyWriter,
    mut stopped: watch::Receiver<()>,
    first: String,
    events: S,
) {
    let mut events = std::pin::pin!(events);
    let mut heartbeat =
        tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next = Some(Bytes::from(first));
    while let Some(chunk) = next {
        // One write, polled to its end (a write given up halfway would cut an event).
        let sent = {
            let send = out.send(&chunk);
            tokio::pin!(send);
            let mut beats = 0;
            loop {
                tokio::select! {
                    r = &mut send => break r.is_ok(),
                    _ = stopped.changed() => break false,
                    _ = heartbeat.tick() => {
                        beats += 1;
                        if beats >= STALLED_BEATS {
                            tracing::debug!("SSE client stopped reading; dropped");
                            break false;
                        }
                    }
                }
            }
        };
        if !sent {
            return;
        }
        next = tokio::select! {
            e = events.next() => e,
            _ = heartbeat.tick() => Some(Bytes::from_static(b": keep-alive\n\n")),
            _ = stopped.changed() => None,
            () = out.closed() => return,
        };
    }
    let _ = out.finish().await;
}

/// `GET /pubsub/{service}/{node}` as `text/event-stream`.
pub async fn stream(
    State(ctx): State<Arc<WebContext>>,
    Path((service, node)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    caller: Caller,
) -> Result<Response, HttpError> {
    if !wants_event_stream(&headers) {
        // A plain GET (or HEAD) of the topic: its items, as at …/items — what a WebSub
        // subscriber fetches to discover the hub (the links are added by the route).
        return super::items::list(State(ctx), Path((service, node)), Query(q), caller).await;
    }
    let (svc, engine) = super::engine(&ctx.nodes, &ctx.store, &service).await?;
    let who = caller.jid_for(Scope::Read)?;
    // Browsers send the last event's id UTF-8 encoded (an ItemID may be any string):
    // `to_str` would take only visible ASCII. Bytes that are not UTF-8 name no item we sent,
    // which the replay below answers with `reset`.
    let last = headers
        .get("last-event-id")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .or_else(|| q.get("last_event_id").cloned())
        .filter(|s| !s.is_empty());
    // Watch first, then read the store: a change between the two is in both, and the
    // sequence numbers tell which to skip.
    let rx = engine.watch(&svc, who, &node).await?;
    let mut first = format!("retry: {RETRY_MS}\n\n");
    let mut after_seq = i64::MIN;
    if let Some(last) = last {
        let retained = match engine
            .items_as(&svc, who, &node, &ItemsQuery::default())
            .await
        {
            Ok(page) => page.items,
            Err(PubsubError::NotPersistent) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let (events, seq) = replay(&node, &last, &retained);
        first.push_str(&events);
        after_seq = seq;
    }
    let live = Live {
        node,
        rx,
        after_seq,
    };
    let events = futures_util::stream::unfold(live, Live::next);
    Ok(respond(ctx.stopped.clone(), first, events))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rookery_xml::Element;

    fn item(id: &str, seq: i64, payload: Option<Element>) -> Item {
        Item {
            id: id.into(),
            publisher: "a@x".into(),
            payload,
            seq,
            updated_at: 0,
        }
    }

    #[test]
    fn event_format() {
        assert_eq!(
            format_event("item", Some("1"), "a\nb\r\nc"),
            "event: item\nid: 1\ndata: a\ndata: b\ndata: c\n\n"
        );
        assert_eq!(
            format_event("item", Some("bad\nid"), "x"),
            "event: item\ndata: x\n\n"
        );
        let j = Element::new("json", super::super::JSON_NS).with_text("{\"t\":1}");
        assert_eq!(
            item_event(&item("i", 1, Some(j))),
            "event: item\nid: i\ndata: {\"t\":1}\n\n"
        );
        assert_eq!(
            node_event("n", &NodeEvent::Retract("i".into())),
            "event: retract\ndata: i\n\n"
        );
        // An item is rendered once, whoever asks.
        let w = NodeEvent::Item(std::sync::Arc::new(
            rookery_pubsub::engine::WatchedItem::new(item("i", 1, None)),
        ));
        let (a, b) = (node_event("n", &w), node_event("n", &w));
        assert_eq!(a, "event: item\nid: i\ndata: i\n\n");
        assert_eq!(a.as_ptr(), b.as_ptr());
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_is_dropped() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (_stop, stopped) = watch::channel(());
        // A node that never stops publishing large events.
        let router = axum::Router::new().route(
            "/s",
            axum::routing::get(move || {
                let events = futures_util::stream::repeat(Bytes::from(vec![b'x'; 1 << 20]));
                std::future::ready(respond(stopped.clone(), String::new(), events))
            }),
        );
        let limits = rookery_http::Limits::ADMIN;
        tokio::spawn(rookery_http::listener::run(
            l,
            router,
            limits,
            std::future::pending(),
        ));
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /s HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        // Not reading: the socket buffers fill, the server's write waits, the heartbeats
        // go by (the clock is paused: it moves when everything waits).
        tokio::time::sleep(HEARTBEAT * 3).await;
        // What was in flight, then the end: the stream was dropped.
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        assert!(got.starts_with(b"HTTP/1.1 200"));
        assert!(got.len() < 64 << 20, "{}", got.len());
    }

    #[test]
    fn replay_after_a_retained_item_or_reset() {
        // Newest first, as the store gives them.
        let retained = [item("c", 3, None), item("b", 2, None), item("a", 1, None)];
        let (s, seq) = replay("n", "a", &retained);
        assert_eq!(
            s,
            "event: item\nid: b\ndata: b\n\nevent: item\nid: c\ndata: c\n\n"
        );
        assert_eq!(seq, 3);
        let (s, seq) = replay("n", "c", &retained);
        assert_eq!((s.as_str(), seq), ("", 3));
        let (s, seq) = replay("n", "gone", &retained);
        assert!(s.starts_with("event: reset\ndata: n\n\nevent: item\nid: a\n"));
        assert_eq!(seq, 3);
        let (s, seq) = replay("n", "gone", &[]);
        assert_eq!(s, "event: reset\ndata: n\n\n");
        assert_eq!(seq, 0);
    }
}
