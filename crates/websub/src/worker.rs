//! Content distribution (W3C WebSub §6, §7): the worker that drains the outbox.
//!
//! Rows come from the publication's own transaction (rookery-store `websub.rs`). The
//! dispatcher wakes when a publication wrote rows, when a retry falls due, or at the latest
//! every [`TICK`]; it starts one *lane* per subscription with deliveries due and none in
//! flight. A lane sends the subscription's oldest delivery, and only after a 2xx deletes it
//! and sends the next: one request in flight per subscription, in publication order. A
//! failure leaves the row, counts the attempt and schedules the next one after an
//! exponential back-off (capped); after `max_attempts` the subscription is marked `failing`
//! (logged, shown by `GET /websub`) and retried at the cap, until a 2xx makes it active
//! again or its lease ends. A crash loses nothing: the rows are still there on restart.
//!
//! Each POST carries the item's payload (`application/xml`; the JSON text of an XEP-0335
//! `<json xmlns='urn:xmpp:json:0'/>` container as `application/json`), `Link` headers
//! naming the hub and the topic (§7), `X-Hub-Signature: sha256=…` (HMAC-SHA256 of the body
//! with `hub.secret`, §8) when the subscription has a secret, and `X-Hub-Item-Id`, the
//! ItemID, so a receiver can discard the duplicates at-least-once delivery implies.
//!
//! # Retractions and purges
//! WebSub (§7) only defines the distribution of a topic's new content; what deleted it is
//! left to the publisher. A retraction or a purge of the node is distributed the same way —
//! a signed POST in order with the items, at least once — whose body is the XEP-0060 event
//! an XMPP subscriber gets (§7.2.2.1 `<retract id='…'/>`, §8.5.2 `<purge node='…'/>`, in
//! the `pubsub#event` namespace, `application/xml`). Every POST says which it is in
//! `X-Hub-Event` (`item`, `retract`, `purge`); the body, not the headers, is what the
//! signature covers, so the retracted ItemID is in the body.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, LINK};
use rookery_jid::BareJid;
use rookery_proto::ns;
use rookery_proto::time::now_unix;
use rookery_store::websub::{Change, Delivery, FAILING};
use rookery_xml::Element;
use sha2::Sha256;
use tokio::sync::watch;

use crate::hub::Hub;
use crate::topic;

/// Longest sleep of the dispatcher (it also removes expired subscriptions then).
pub const TICK: Duration = Duration::from_secs(1);

/// XEP-0335 JSON containers.
const JSON_NS: &str = "urn:xmpp:json:0";

/// Most subscriptions started per dispatcher round.
const DUE_BATCH: i64 = 10_000;

/// The header carrying the signature (§8).
const SIGNATURE: HeaderName = HeaderName::from_static("x-hub-signature");
/// The header carrying the ItemID.
const ITEM_ID: HeaderName = HeaderName::from_static("x-hub-item-id");
/// The header naming the change a POST announces.
const EVENT: HeaderName = HeaderName::from_static("x-hub-event");

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `sha256=<hex HMAC-SHA256 of body keyed with secret>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length; the error case cannot happen.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The body and content type for a stored payload.
pub fn content(payload: Option<&str>) -> (Bytes, &'static str) {
    let Some(p) = payload else {
        return (Bytes::new(), "application/xml");
    };
    match rookery_pubsub::xml::parse(p) {
        Some(el) if el.name() == "json" && el.ns() == JSON_NS => {
            (Bytes::from(el.text()), "application/json")
        }
        _ => (Bytes::from(p.to_string()), "application/xml"),
    }
}

/// The body and content type announcing `d`: the item's content, or the XEP-0060 event of
/// a retraction or purge.
fn body(d: &Delivery) -> (Bytes, &'static str) {
    let event = |name: &str, attr: &str, value: &str| {
        let el = Element::new(name, ns::pubsub::EVENT).with_attr(attr, value);
        (Bytes::from(el.to_bytes()), "application/xml")
    };
    match d.change {
        Change::Item => content(d.payload.as_deref()),
        Change::Retract => event("retract", "id", &d.item_id),
        Change::Purge => event("purge", "node", &d.node),
    }
}

/// The headers and body of a delivery.
fn request(d: &Delivery) -> (HeaderMap, Bytes) {
    let (body, ctype) = body(d);
    let mut h = HeaderMap::new();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(EVENT, HeaderValue::from_static(d.change.as_str()));
    let link = format!(
        "<{}>; rel=\"hub\", <{}>; rel=\"self\"",
        topic::hub_url(&d.topic),
        d.topic
    );
    if let Ok(v) = HeaderValue::from_str(&link) {
        h.insert(LINK, v);
    }
    if !d.item_id.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&d.item_id) {
            h.insert(ITEM_ID, v);
        }
    }
    if let Some(secret) = &d.secret {
        if let Ok(v) = HeaderValue::from_str(&signature(secret, &body)) {
            h.insert(SIGNATURE, v);
        }
    }
    (h, body)
}

/// The subscriptions with a lane running.
#[derive(Debug, Default)]
struct Busy(Mutex<HashSet<i64>>);

impl Busy {
    /// Claims `sub`; `false` if its lane runs already.
    fn claim(&self, sub: i64) -> bool {
        self.0.lock().is_ok_and(|mut s| s.insert(sub))
    }

    fn release(&self, sub: i64) {
        if let Ok(mut s) = self.0.lock() {
            s.remove(&sub);
        }
    }
}

/// Runs the delivery worker until `stop` turns true, while `serving()` says this process
/// is the one to deliver: in a cluster the nodes share one outbox, and a lane per
/// subscription must run in one process only (one request in flight, in publication order),
/// so only the rooms' home node delivers (`Core::home_node`); the others look again each
/// tick, and the outbox is durable, so a new home resumes where the old one stopped.
pub async fn run(
    hub: Arc<Hub>,
    mut stop: watch::Receiver<bool>,
    serving: impl Fn() -> bool + Send + 'static,
) {
    let busy = Arc::new(Busy::default());
    let (lane_done_tx, mut lane_done) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut last_sweep = 0;
    loop {
        if !serving() {
            tokio::select! {
                _ = tokio::time::sleep(TICK) => continue,
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        let now = now_unix();
        if now != last_sweep {
            last_sweep = now;
            expire(&hub, now).await;
        }
        let ws = hub.store.websub();
        match ws.due(now_ms(), DUE_BATCH).await {
            Ok(subs) => {
                for sub in subs {
                    if busy.claim(sub) {
                        let (hub, busy, done) = (hub.clone(), busy.clone(), lane_done_tx.clone());
                        tokio::spawn(async move {
                            lane(&hub, sub).await;
                            busy.release(sub);
                            let _ = done.send(());
                        });
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "websub outbox unreadable"),
        }
        let wait = match ws.next_retry(now_ms()).await {
            Ok(Some(at)) => {
                Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)).min(TICK)
            }
            _ => TICK,
        };
        tokio::select! {
            _ = ws.wait_for_work() => {}
            // A lane that ended may have left rows that arrived while it ran.
            _ = lane_done.recv() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Removes subscriptions whose lease ended.
async fn expire(hub: &Hub, now: i64) {
    match hub.store.websub().expire(now).await {
        Ok(gone) => {
            for g in gone {
                tracing::info!(topic = %g.topic, callback = %g.callback, "websub subscription expired");
            }
        }
        Err(e) => tracing::error!(error = %e, "websub lease expiry failed"),
    }
}

/// Delivers the deliveries owed to `sub`, oldest first, until none is left or one fails.
/// The subscriber's access is checked again first, once per lane: a node whose access
/// model no longer admits it ends the subscription with a denial (§5.2), as a stricter
/// access model ends XMPP subscriptions.
async fn lane(hub: &Hub, sub: i64) {
    let ws = hub.store.websub();
    let mut checked = false;
    loop {
        let d = match ws.head(sub, now_unix()).await {
            Ok(Some(d)) => d,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, "websub outbox unreadable");
                return;
            }
        };
        let Ok(url) = url::Url::parse(&d.callback) else {
            tracing::warn!(callback = %d.callback, "websub callback unreadable; subscription removed");
            let _ = ws.remove(&d.service, &d.node, &d.callback).await;
            return;
        };
        if !checked {
            checked = true;
            if let Err(reason) = still_allowed(hub, &d).await {
                if let Err(e) = ws.remove(&d.service, &d.node, &d.callback).await {
                    tracing::error!(error = %e, "websub subscription not removed");
                    return;
                }
                hub.deny(&url, &d.topic, &reason).await;
                return;
            }
        }
        let (headers, body) = request(&d);
        let (outcome, go_on) = match hub.outbound.post(url, headers, body).await {
            Ok(status) if (200..300).contains(&status) => (ws.delivered(sub, d.item).await, true),
            Ok(status) => (failed(hub, &d, &format!("HTTP {status}")).await, false),
            Err(e) => (failed(hub, &d, &e.to_string()).await, false),
        };
        if let Err(e) = outcome {
            tracing::error!(error = %e, "websub outbox not updated");
            return;
        }
        // After a failure the lane stops; the dispatcher starts it again at the retry time.
        if !go_on {
            return;
        }
    }
}

/// The engine's verdict on the subscriber of `d` now.
async fn still_allowed(hub: &Hub, d: &Delivery) -> Result<(), String> {
    let service = BareJid::parse(&d.service).map_err(|_| "unknown topic".to_string())?;
    let caller = match d.caller.as_deref().map(BareJid::parse) {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(_)) => return Err("access refused".into()),
    };
    hub.check_access(&service, &d.node, caller.as_ref()).await
}

/// Records a failed attempt; marks the subscription failing after `max_attempts`.
async fn failed(hub: &Hub, d: &Delivery, error: &str) -> Result<(), rookery_store::StoreError> {
    let attempts = d.attempts.saturating_add(1);
    let n = u32::try_from(attempts).unwrap_or(u32::MAX);
    let wait = hub.config.backoff(n);
    let retry_at = now_ms().saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
    let failing = n >= hub.config.max_attempts;
    if failing {
        tracing::warn!(callback = %d.callback, topic = %d.topic, attempts, error, "websub subscription failing");
    } else {
        tracing::info!(callback = %d.callback, attempts, error, retry_in_ms = wait.as_millis() as u64, "websub delivery failed");
    }
    let state = if failing {
        FAILING
    } else {
        rookery_store::websub::ACTIVE
    };
    hub.store
        .websub()
        .failed(d.sub, attempts, retry_at, state, error)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn json_containers_are_sent_as_json() {
        let (body, ctype) = content(Some("<json xmlns='urn:xmpp:json:0'>{\"a\":[1,2]}</json>"));
        assert_eq!(
            (body.as_ref(), ctype),
            (&b"{\"a\":[1,2]}"[..], "application/json")
        );
        let xml = "<entry xmlns='urn:test'>x</entry>";
        let (body, ctype) = content(Some(xml));
        assert_eq!((body.as_ref(), ctype), (xml.as_bytes(), "application/xml"));
        let (body, ctype) = content(Some("<json xmlns='urn:other'>{}</json>"));
        assert_eq!(
            (body.as_ref(), ctype),
            (&b"<json xmlns='urn:other'>{}</json>"[..], "application/xml")
        );
        assert_eq!(content(None).0.len(), 0);
    }

    #[test]
    fn deliveries_carry_link_signature_and_item_id() {
        let d = Delivery {
            sub: 1,
            item: 2,
            change: Change::Item,
            item_id: "i1".into(),
            payload: Some("<e xmlns='urn:t'/>".into()),
            topic: "https://h.example/pubsub/pubsub.h.example/n".into(),
            callback: "https://cb.example/".into(),
            secret: Some("k".into()),
            attempts: 0,
            service: "pubsub.h.example".into(),
            node: "n".into(),
            caller: None,
        };
        let (h, body) = request(&d);
        assert_eq!(
            h.get(LINK).and_then(|v| v.to_str().ok()),
            Some("<https://h.example/websub>; rel=\"hub\", <https://h.example/pubsub/pubsub.h.example/n>; rel=\"self\"")
        );
        assert_eq!(h.get(&ITEM_ID).and_then(|v| v.to_str().ok()), Some("i1"));
        let sig = signature("k", &body);
        assert_eq!(
            h.get(&SIGNATURE).and_then(|v| v.to_str().ok()),
            Some(sig.as_str())
        );
        assert_eq!(h.get(&EVENT).and_then(|v| v.to_str().ok()), Some("item"));
        let unsigned = Delivery {
            secret: None,
            ..d.clone()
        };
        assert!(request(&unsigned).0.get(&SIGNATURE).is_none());

        // A retraction: the XEP-0060 event, signed, with the ItemID; a purge names the node.
        let retract = Delivery {
            change: Change::Retract,
            item_id: "i\"1".into(),
            payload: None,
            ..d.clone()
        };
        let (h, body) = request(&retract);
        assert_eq!(
            body.as_ref(),
            &b"<retract xmlns=\"http://jabber.org/protocol/pubsub#event\" id=\"i&quot;1\"/>"[..]
        );
        assert_eq!(h.get(&EVENT).and_then(|v| v.to_str().ok()), Some("retract"));
        assert_eq!(h.get(&ITEM_ID).and_then(|v| v.to_str().ok()), Some("i\"1"));
        assert_eq!(
            h.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()),
            Some("application/xml")
        );
        let sig = signature("k", &body);
        assert_eq!(
            h.get(&SIGNATURE).and_then(|v| v.to_str().ok()),
            Some(sig.as_str())
        );
        let purge = Delivery {
            change: Change::Purge,
            item_id: String::new(),
            payload: None,
            ..d
        };
        let (h, body) = request(&purge);
        assert_eq!(
            body.as_ref(),
            &b"<purge xmlns=\"http://jabber.org/protocol/pubsub#event\" node=\"n\"/>"[..]
        );
        assert_eq!(h.get(&EVENT).and_then(|v| v.to_str().ok()), Some("purge"));
        assert!(h.get(&ITEM_ID).is_none());
    }
}
