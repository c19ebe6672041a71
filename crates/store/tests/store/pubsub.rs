//! The pubsub store, on every backend (see `common/mod.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use crate::common::backends;
use rookery_store::page::PageLimit;
use rookery_store::pubsub::{ItemRow, Pubsub, Scan, SubscriptionRow};
use rookery_store::{Store, StoreError};

/// No limit worth the name, for tests that look at every item.
const ALL: PageLimit = PageLimit {
    max: u64::MAX,
    max_bytes: usize::MAX,
};

/// The newest `max` items, newest first.
async fn newest(ps: &Pubsub<'_>, svc: &str, node: &str, max: u64) -> Vec<ItemRow> {
    let limit = PageLimit { max, ..ALL };
    ps.items_page(svc, node, Scan::NewestFirst { below: None }, limit)
        .await
        .unwrap()
}

fn item(id: &str, seq: i64, payload: Option<&str>) -> ItemRow {
    ItemRow {
        id: id.into(),
        seq,
        publisher: "alice@example.org/phone".into(),
        payload: payload.map(str::to_string),
        updated_at: 1_700_000_000 + seq,
    }
}

#[tokio::test]
async fn nodes_affiliations_and_subscriptions() {
    for b in backends("pubsub-nodes").await {
        let ps = b.store.pubsub();
        let svc = format!("pubsub.{}", b.domain);
        let owner = format!("alice@{}", b.domain);
        ps.create_node(&svc, "news", "<x/>", &owner).await.unwrap();
        assert!(matches!(
            ps.create_node(&svc, "news", "<y/>", &owner).await,
            Err(StoreError::Conflict)
        ));
        ps.create_node(&svc, "blog", "<x/>", &owner).await.unwrap();
        let nodes = ps.nodes(&svc).await.unwrap();
        let names: Vec<&str> = nodes.iter().map(|n| n.node.as_str()).collect();
        assert_eq!(names, ["blog", "news"], "{}", b.name);
        assert_eq!(nodes[1].config, "<x/>");
        assert!(ps.set_config(&svc, "news", "<z/>").await.unwrap());
        assert!(!ps.set_config(&svc, "nope", "<z/>").await.unwrap());
        assert_eq!(ps.nodes(&svc).await.unwrap()[1].config, "<z/>");

        // The creator is owner; affiliations can be changed and removed.
        let affs = ps.affiliations(&svc).await.unwrap();
        assert_eq!(affs.len(), 2);
        assert!(affs
            .iter()
            .all(|a| a.jid == owner && a.affiliation == "owner"));
        let bob = format!("bob@{}", b.domain);
        ps.set_affiliation(&svc, "news", &bob, Some("publisher"))
            .await
            .unwrap();
        ps.set_affiliation(&svc, "news", &bob, Some("member"))
            .await
            .unwrap();
        let affs = ps.affiliations(&svc).await.unwrap();
        assert!(affs
            .iter()
            .any(|a| a.node == "news" && a.jid == bob && a.affiliation == "member"));
        ps.set_affiliation(&svc, "news", &bob, None).await.unwrap();
        assert_eq!(ps.affiliations(&svc).await.unwrap().len(), 2);

        // Subscriptions by subid.
        let mut sub = SubscriptionRow {
            node: "news".into(),
            subid: "s1".into(),
            jid: format!("{bob}/phone"),
            state: "pending".into(),
            options: String::new(),
        };
        ps.set_subscription(&svc, &sub).await.unwrap();
        sub.state = "subscribed".into();
        ps.set_subscription(&svc, &sub).await.unwrap();
        let subs = ps.subscriptions(&svc).await.unwrap();
        assert_eq!(subs, vec![sub.clone()], "{}", b.name);
        assert!(ps.remove_subscription(&svc, "news", "s1").await.unwrap());
        assert!(!ps.remove_subscription(&svc, "news", "s1").await.unwrap());
        ps.set_subscription(&svc, &sub).await.unwrap();

        // Deleting a node deletes what hangs on it; other services are untouched.
        let other = owner.clone();
        ps.create_node(&other, "news", "<x/>", &owner)
            .await
            .unwrap();
        ps.publish(&svc, "news", &item("a", 1, Some("<p/>")), None, 0, None)
            .await
            .unwrap();
        assert!(ps.delete_node(&svc, "news").await.unwrap());
        assert!(!ps.delete_node(&svc, "news").await.unwrap());
        assert!(ps.subscriptions(&svc).await.unwrap().is_empty());
        assert_eq!(ps.affiliations(&svc).await.unwrap().len(), 1);
        assert!(newest(&ps, &svc, "news", u64::MAX).await.is_empty());
        assert_eq!(ps.nodes(&other).await.unwrap().len(), 1);
        assert_eq!(ps.delete_service(&other).await.unwrap(), 1);
        assert!(ps.nodes(&other).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn items_publish_replace_trim_retract_purge() {
    for b in backends("pubsub-items").await {
        let ps = b.store.pubsub();
        let svc = format!("pubsub.{}", b.domain);
        ps.create_node(&svc, "n", "<x/>", "alice@x").await.unwrap();
        let mut count = 0;
        for (seq, id) in ["a", "b", "c"].iter().enumerate() {
            let replaced = ps
                .publish(
                    &svc,
                    "n",
                    &item(id, seq as i64 + 1, Some("<p/>")),
                    Some(2),
                    count,
                    None,
                )
                .await
                .unwrap();
            assert!(!replaced);
            count = (count + 1).min(2);
        }
        // max_items 2: "a" was dropped.
        let ids: Vec<String> = newest(&ps, &svc, "n", u64::MAX)
            .await
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(ids, ["c", "b"], "{}", b.name);
        // Republishing "b" replaces it and makes it the newest.
        let replaced = ps
            .publish(&svc, "n", &item("b", 4, Some("<q/>")), Some(2), 2, None)
            .await
            .unwrap();
        assert!(replaced);
        let items = newest(&ps, &svc, "n", 1).await;
        assert_eq!(items, vec![item("b", 4, Some("<q/>"))], "{}", b.name);
        let stats = ps.item_stats(&svc).await.unwrap();
        assert_eq!(stats.len(), 1);
        assert_eq!(stats[0].1.count, 2);
        assert_eq!(stats[0].1.max_seq, 4);
        // By id: unknown ids are skipped, newest first, duplicates once.
        let got = ps
            .items_by_id(
                &svc,
                "n",
                &["c".into(), "zz".into(), "b".into(), "c".into()],
                usize::MAX,
            )
            .await
            .unwrap();
        let ids: Vec<&str> = got.items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["b", "c"]);
        assert!(got.complete);
        assert_eq!(ps.item_ids(&svc, "n", 10).await.unwrap(), ["b", "c"]);
        // Notification-only items have no payload.
        ps.publish(&svc, "n", &item("d", 5, None), None, 2, None)
            .await
            .unwrap();
        assert_eq!(newest(&ps, &svc, "n", 1).await[0].payload, None);
        assert_eq!(ps.trim(&svc, "n", 3, 1).await.unwrap(), 2);
        assert_eq!(ps.item_ids(&svc, "n", 10).await.unwrap(), ["d"]);
        assert!(ps.retract(&svc, "n", "d").await.unwrap());
        assert!(!ps.retract(&svc, "n", "d").await.unwrap());
        ps.publish(&svc, "n", &item("e", 6, Some("<p/>")), None, 0, None)
            .await
            .unwrap();
        assert_eq!(ps.purge(&svc, "n").await.unwrap(), 1);
        assert!(ps.item_stats(&svc).await.unwrap().is_empty());
    }
}

/// A payload of `bytes` bytes.
fn sized(bytes: usize) -> String {
    format!("<p>{}</p>", "x".repeat(bytes - 7))
}

#[tokio::test]
async fn publications_keep_the_services_byte_budget() {
    for b in backends("pubsub-budget").await {
        let pep = format!("alice@{}", b.domain);
        let ps = b.store.pubsub();
        for node in ["a", "b"] {
            ps.create_node(&pep, node, "<x/>", &pep).await.unwrap();
        }
        // A budget of 4,000 over both nodes of the service.
        let budget = Some(4000);
        let svc = pep.as_str();
        let publish = |node: &'static str, id: &str, seq, payload: String, max, count| {
            let row = item(id, seq, Some(payload.as_str()));
            async move { ps.publish(svc, node, &row, max, count, budget).await }
        };
        publish("a", "1", 1, sized(1500), None, 0).await.unwrap();
        // 1,497 bytes in 752 characters: bytes count.
        let accents = format!("<p>{}</p>", "\u{e9}".repeat(745));
        publish("b", "1", 1, accents, None, 0).await.unwrap();
        // A small item counts for MIN_ITEM_BYTES (1,024): 4,021 would be too many.
        let over = publish("a", "2", 2, "<p/>".into(), None, 1).await;
        assert!(
            matches!(over, Err(StoreError::OverBudget)),
            "{}: {over:?}",
            b.name
        );
        assert_eq!(
            ps.item_ids(&pep, "a", 10).await.unwrap(),
            ["1"],
            "nothing stored"
        );
        // Replacing an item with one no larger passes at the budget, and so does a new item
        // that the node's max_items trims the old one for (a new avatar).
        assert!(publish("a", "1", 3, sized(1500), None, 1).await.unwrap());
        assert!(!publish("a", "new", 4, sized(1500), Some(1), 1)
            .await
            .unwrap());
        assert_eq!(ps.item_ids(&pep, "a", 10).await.unwrap(), ["new"]);
        // A larger replacement does not (4,097).
        let over = publish("a", "new", 5, sized(2600), None, 1).await;
        assert!(matches!(over, Err(StoreError::OverBudget)), "{}", b.name);
        // Derived from the stored rows: after reopening too; a retraction frees its bytes.
        let store = Store::open(&b.url).await.unwrap();
        assert_eq!(store.pubsub().stored_bytes(&pep).await.unwrap(), 2997);
        let row = item("2", 6, Some("<p/>"));
        let over = store
            .pubsub()
            .publish(&pep, "b", &row, None, 1, budget)
            .await;
        assert!(matches!(over, Err(StoreError::OverBudget)), "{}", b.name);
        assert!(ps.retract(&pep, "b", "1").await.unwrap());
        publish("b", "2", 6, sized(1500), None, 0).await.unwrap();
        // Other services have budgets of their own; without one, anything goes.
        let bob = format!("bob@{}", b.domain);
        ps.create_node(&bob, "a", "<x/>", &bob).await.unwrap();
        let row = item("1", 1, Some(sized(3000).as_str()));
        ps.publish(&bob, "a", &row, None, 0, budget).await.unwrap();
        let big = item("2", 2, Some(sized(5000).as_str()));
        ps.publish(&bob, "a", &big, None, 1, None).await.unwrap();
        store.close().await;
    }
}

#[tokio::test]
async fn state_survives_reopen() {
    for b in backends("pubsub-reopen").await {
        let svc = format!("pubsub.{}", b.domain);
        {
            let ps = b.store.pubsub();
            ps.create_node(&svc, "n", "<x/>", "alice@x").await.unwrap();
            ps.publish(&svc, "n", &item("a", 1, Some("<p>é</p>")), None, 0, None)
                .await
                .unwrap();
        }
        b.store.close().await;
        let store = Store::open(&b.url).await.unwrap();
        let items = newest(&store.pubsub(), &svc, "n", u64::MAX).await;
        assert_eq!(items, vec![item("a", 1, Some("<p>é</p>"))], "{}", b.name);
        store.close().await;
    }
}

#[tokio::test]
async fn item_pages_stop_at_their_count_or_byte_budget() {
    for b in backends("pubsub-pages").await {
        let ps = b.store.pubsub();
        let svc = format!("pubsub.{}", b.domain);
        ps.create_node(&svc, "n", "<x/>", "alice@x").await.unwrap();
        // Ten items of 100 bytes each, seq 1..=10.
        let payload = format!("<p>{}</p>", "y".repeat(93));
        for seq in 1..=10 {
            let id = format!("i{seq}");
            ps.publish(&svc, "n", &item(&id, seq, Some(&payload)), None, 0, None)
                .await
                .unwrap();
        }
        let ids = |rows: Vec<ItemRow>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
        let page =
            |scan, max, max_bytes| ps.items_page(&svc, "n", scan, PageLimit { max, max_bytes });
        let newest = Scan::NewestFirst { below: None };
        assert_eq!(
            ids(page(newest, 3, usize::MAX).await.unwrap()),
            ["i10", "i9", "i8"]
        );
        // 250 bytes: the third item reaches the budget and ends the page.
        assert_eq!(
            ids(page(newest, 100, 250).await.unwrap()),
            ["i10", "i9", "i8"],
            "{}",
            b.name
        );
        // A budget below one item still gives one.
        assert_eq!(ids(page(newest, 100, 1).await.unwrap()), ["i10"]);
        let older = Scan::NewestFirst { below: Some(8) };
        assert_eq!(ids(page(older, 2, usize::MAX).await.unwrap()), ["i7", "i6"]);
        let newer = Scan::OldestFirst { above: Some(8) };
        assert_eq!(
            ids(page(newer, 5, usize::MAX).await.unwrap()),
            ["i9", "i10"]
        );
        let oldest = Scan::OldestFirst { above: None };
        assert_eq!(
            ids(page(oldest, 2, usize::MAX).await.unwrap()),
            ["i1", "i2"]
        );
        assert!(page(newest, 0, usize::MAX).await.unwrap().is_empty());
        assert_eq!(ps.item_seq(&svc, "n", "i4").await.unwrap(), Some(4));
        assert_eq!(ps.item_seq(&svc, "n", "zz").await.unwrap(), None);
        assert_eq!(ps.count_newer(&svc, "n", 7).await.unwrap(), 3);
        // By id, the budget holds too.
        let wanted: Vec<String> = ["i2", "i5", "i9"].iter().map(|s| s.to_string()).collect();
        let cut = ps.items_by_id(&svc, "n", &wanted, 150).await.unwrap();
        assert!(!cut.complete);
        assert_eq!(ids(cut.items), ["i5", "i2"]);
        // The item that spends the budget last is no item left out.
        let last = ps.items_by_id(&svc, "n", &wanted[..2], 150).await.unwrap();
        assert!(last.complete);
        assert_eq!(ids(last.items), ["i5", "i2"]);
    }
}
