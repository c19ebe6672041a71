//! The WebSub tables, on every backend (see `common/mod.rs`): outbox rows written with the
//! item (and with a retraction or a purge), ordered heads, deletion only on delivery, retry
//! state, lease expiry, and everything going with the node.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use crate::common::{backends, TestBackend};
use rookery_store::pubsub::ItemRow;
use rookery_store::websub::{Change, NewSubscription, FAILING};

fn item(id: &str, seq: i64) -> ItemRow {
    ItemRow {
        id: id.into(),
        seq,
        publisher: "alice@example.org/phone".into(),
        payload: Some(format!("<entry xmlns='urn:test'>{id}</entry>")),
        updated_at: 1_700_000_000 + seq,
    }
}

fn sub(svc: &str, node: &str, callback: &str, expires_at: i64) -> NewSubscription {
    NewSubscription {
        service: svc.into(),
        node: node.into(),
        topic: format!("http://h/pubsub/{svc}/{node}"),
        callback: callback.into(),
        secret: Some("k".into()),
        caller: None,
        lease_seconds: 60,
        expires_at,
    }
}

fn far() -> i64 {
    now() + 3600
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn outbox_follows_publications_and_deliveries() {
    for b in backends("websub-outbox").await {
        let (ps, ws) = (b.store.pubsub(), b.store.websub());
        let svc = format!("pubsub.{}", b.domain);
        // The queries under test span every service of the database, which other runs
        // (and tests of other modules) share: this test counts from what was there and
        // looks at its own subscriptions only.
        let base = ws.pending_items().await.unwrap();
        ps.create_node(&svc, "news", "<x/>", "alice@x")
            .await
            .unwrap();
        // Published before any subscription: owed to nobody.
        ps.publish(&svc, "news", &item("before", 1), Some(10), 0, None)
            .await
            .unwrap();
        // No subscription on a node that does not exist.
        assert_eq!(
            ws.upsert(&sub(&svc, "nope", "http://cb/a", far()))
                .await
                .unwrap(),
            None
        );
        let a = ws
            .upsert(&sub(&svc, "news", "http://cb/a", far()))
            .await
            .unwrap()
            .unwrap();
        let bb = ws
            .upsert(&sub(&svc, "news", "http://cb/b", far()))
            .await
            .unwrap()
            .unwrap();
        // An expired subscription gets nothing.
        ws.upsert(&sub(&svc, "news", "http://cb/old", 1))
            .await
            .unwrap()
            .unwrap();
        // Renewal keeps the id.
        assert_eq!(
            ws.upsert(&sub(&svc, "news", "http://cb/a", far()))
                .await
                .unwrap(),
            Some(a)
        );
        for (i, id) in ["i1", "i2", "i3"].iter().enumerate() {
            ps.publish(
                &svc,
                "news",
                &item(id, 2 + i as i64),
                Some(10),
                1 + i as u64,
                None,
            )
            .await
            .unwrap();
        }
        // The publications woke the worker (a stored permit: this returns at once).
        ws.wait_for_work().await;
        let now = now();
        let own = |ids: Vec<i64>| -> Vec<i64> {
            let mut ids: Vec<i64> = ids.into_iter().filter(|id| [a, bb].contains(id)).collect();
            ids.sort();
            ids
        };
        assert_eq!(
            own(ws.due(i64::MAX, 100).await.unwrap()),
            vec![a, bb],
            "{}",
            b.name
        );
        let h = ws.head(a, now).await.unwrap().unwrap();
        assert_eq!((h.item_id.as_str(), h.attempts), ("i1", 0));
        assert_eq!(h.secret.as_deref(), Some("k"));
        assert!(h.payload.unwrap().contains("i1"));

        // A failure keeps the row and records the retry state.
        ws.failed(a, 3, 5_000, FAILING, "HTTP 500").await.unwrap();
        let s = ws.get(&svc, "news", "http://cb/a").await.unwrap().unwrap();
        assert_eq!((s.state.as_str(), s.attempts, s.pending), ("failing", 3, 3));
        assert_eq!(s.last_error.as_deref(), Some("HTTP 500"));
        assert_eq!(own(ws.due(4_999, 100).await.unwrap()), vec![bb]);
        assert_eq!(ws.next_retry(4_999).await.unwrap(), Some(5_000));

        // Delivery deletes the row, clears the state; the item goes with its last row.
        ws.delivered(a, h.item).await.unwrap();
        let s = ws.get(&svc, "news", "http://cb/a").await.unwrap().unwrap();
        assert_eq!((s.state.as_str(), s.attempts, s.pending), ("active", 0, 2));
        assert_eq!(ws.head(a, now).await.unwrap().unwrap().item_id, "i2");
        assert_eq!(ws.pending_items().await.unwrap(), base + 3);
        ws.delivered(bb, h.item).await.unwrap();
        assert_eq!(ws.pending_items().await.unwrap(), base + 2);

        // Lease expiry removes the expired subscription only.
        let mut gone = ws.expire(now).await.unwrap();
        gone.retain(|s| s.topic == format!("http://h/pubsub/{svc}/news"));
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].callback, "http://cb/old");
        // Unsubscribing drops what was owed only to that callback: "i1" went to both, "i2"
        // and "i3" are still owed to "a".
        assert!(ws.remove(&svc, "news", "http://cb/b").await.unwrap());
        assert!(!ws.remove(&svc, "news", "http://cb/b").await.unwrap());
        assert_eq!(ws.pending_items().await.unwrap(), base + 2);
        assert!(ws.remove(&svc, "news", "http://cb/a").await.unwrap());
        assert_eq!(ws.pending_items().await.unwrap(), base);
        ws.upsert(&sub(&svc, "news", "http://cb/a", far()))
            .await
            .unwrap()
            .unwrap();
        ps.publish(&svc, "news", &item("i4", 5), Some(10), 3, None)
            .await
            .unwrap();
        assert_eq!(ws.pending_items().await.unwrap(), base + 1);

        // Deleting the node takes subscriptions, rows and items with it.
        assert!(ps.delete_node(&svc, "news").await.unwrap());
        assert!(ws.get(&svc, "news", "http://cb/a").await.unwrap().is_none());
        assert_eq!(ws.pending_items().await.unwrap(), base, "{}", b.name);
        assert!(own(ws.due(i64::MAX, 100).await.unwrap()).is_empty());
        retractions_and_purges_are_queued_with_the_change(&b).await;
    }
}

/// Retractions and purges queue rows in order with the items (run inside the test above:
/// its assertions on the whole outbox must not see another test's rows on PostgreSQL).
async fn retractions_and_purges_are_queued_with_the_change(b: &TestBackend) {
    {
        let (ps, ws) = (b.store.pubsub(), b.store.websub());
        let svc = format!("pubsub.{}", b.domain);
        ps.create_node(&svc, "log", "<x/>", "alice@x")
            .await
            .unwrap();
        let a = ws
            .upsert(&sub(&svc, "log", "http://cb/a", far()))
            .await
            .unwrap()
            .unwrap();
        ps.publish(&svc, "log", &item("i1", 1), Some(10), 0, None)
            .await
            .unwrap();
        ps.publish(&svc, "log", &item("i2", 2), Some(10), 1, None)
            .await
            .unwrap();
        assert!(ps.retract(&svc, "log", "i1").await.unwrap());
        // Retracting what is not there changes nothing and is not sent.
        assert!(!ps.retract(&svc, "log", "i1").await.unwrap());
        assert_eq!(ps.purge(&svc, "log").await.unwrap(), 1);
        let now = now();
        let mut seen = Vec::new();
        while let Some(h) = ws.head(a, now).await.unwrap() {
            seen.push((h.change, h.item_id.clone(), h.payload.is_some()));
            ws.delivered(a, h.item).await.unwrap();
        }
        assert_eq!(
            seen,
            vec![
                (Change::Item, "i1".into(), true),
                (Change::Item, "i2".into(), true),
                (Change::Retract, "i1".into(), false),
                (Change::Purge, String::new(), false),
            ],
            "{}",
            b.name
        );
        let left = ws.get(&svc, "log", "http://cb/a").await.unwrap().unwrap();
        assert_eq!(left.pending, 0);
    }
}

/// The counts the hub caps (audit 37 L12): live subscriptions per node, and per callback
/// host across nodes, whatever the port, user info or path of the callback.
#[tokio::test]
async fn subscriptions_are_counted_per_topic_and_per_callback_host() {
    for b in backends("websub-counts").await {
        let (ps, ws) = (b.store.pubsub(), b.store.websub());
        let svc = format!("pubsub.{}", b.domain);
        // Hosts of this run only: the database is shared with other runs.
        let host = format!("counts-{}.example", b.domain);
        for node in ["a", "b"] {
            ps.create_node(&svc, node, "<x/>", "alice@x").await.unwrap();
        }
        let at = |path: &str| format!("https://u@{host}:8443/{path}");
        ws.upsert(&sub(&svc, "a", &at("1"), far())).await.unwrap();
        ws.upsert(&sub(&svc, "a", &format!("http://{host}/2"), far()))
            .await
            .unwrap();
        ws.upsert(&sub(&svc, "b", &at("1"), far())).await.unwrap();
        // Expired: not counted.
        ws.upsert(&sub(&svc, "b", &at("old"), 1)).await.unwrap();
        ws.upsert(&sub(&svc, "b", "http://elsewhere.example/", far()))
            .await
            .unwrap();
        let t = now();
        assert_eq!(ws.count_for_topic(&svc, "a", t).await.unwrap(), 2);
        assert_eq!(ws.count_for_topic(&svc, "b", t).await.unwrap(), 2);
        let other = format!("HTTP://{}/x", host.to_uppercase());
        assert_eq!(ws.count_for_callback_host(&other, t).await.unwrap(), 3);
    }
}
