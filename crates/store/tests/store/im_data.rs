//! Block lists, offline messages and per-account documents, on every backend (see
//! `common/mod.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use crate::common::{backends, exec, messages, run_migrations, sqlite_before};
use rookery_store::offline::OfflineCap;
use rookery_store::userdata::LastActivity;

#[tokio::test]
async fn blocklist_add_remove_clear() {
    for b in backends("blocklist").await {
        let d = b.domain.as_str();
        b.create_account("juliet").await;
        let bl = b.store.blocking();
        assert!(bl.list(d, "juliet").await.unwrap().is_empty());
        bl.add(
            d,
            "juliet",
            &["tybalt@x".into(), "x".into(), "tybalt@x".into()],
        )
        .await
        .unwrap();
        assert_eq!(
            bl.list(d, "juliet").await.unwrap(),
            vec!["tybalt@x", "x"],
            "{}",
            b.name
        );
        assert!(bl.any_blocked(d, "juliet", &["a@b/c", "x"]).await.unwrap());
        assert!(!bl
            .any_blocked(d, "juliet", &["a@b/c", "a@b"])
            .await
            .unwrap());
        bl.remove(d, "juliet", &["x".into(), "nobody".into()])
            .await
            .unwrap();
        assert_eq!(bl.list(d, "juliet").await.unwrap(), vec!["tybalt@x"]);
        bl.clear(d, "juliet").await.unwrap();
        assert!(bl.list(d, "juliet").await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn offline_byte_cap_counts_bytes_and_frees_on_delete() {
    for b in backends("offline-bytes").await {
        let d = b.domain.as_str();
        b.create_account("juliet").await;
        let o = b.store.offline();
        let cap = OfflineCap {
            messages: 100,
            bytes: 12,
        };
        // A stanza larger than the whole budget is never stored.
        assert!(!o.push(d, "juliet", &"x".repeat(13), cap).await.unwrap());
        // 6 bytes each ("é" is two), so two fit exactly and a third does not.
        assert!(o.push(d, "juliet", "<m\u{e9}/>", cap).await.unwrap());
        assert!(o.push(d, "juliet", "<mm1/>", cap).await.unwrap());
        assert!(
            !o.push(d, "juliet", "<m/>", cap).await.unwrap(),
            "{}",
            b.name
        );
        assert_eq!(o.count(d, "juliet").await.unwrap(), 2, "{}", b.name);
        // Derived from the stored rows: a reopened store refuses too, and a delivered
        // (deleted) message frees its bytes.
        let reopened = rookery_store::Store::open(&b.url).await.unwrap();
        assert!(!reopened
            .offline()
            .push(d, "juliet", "<m/>", cap)
            .await
            .unwrap());
        let first = o.list(d, "juliet", 0, 1).await.unwrap();
        o.delete(d, "juliet", &[first[0].id]).await.unwrap();
        assert!(
            o.push(d, "juliet", "<mm2/>", cap).await.unwrap(),
            "{}",
            b.name
        );
        assert!(!o.push(d, "juliet", "<m/>", cap).await.unwrap());
    }
}

/// Migrations 0039 and 0040 (SQLite; 0036 and 0037 on PostgreSQL) on rows from before them:
/// each offline message and pubsub item is counted with its size in bytes (not characters;
/// an item at least 1 KiB), so an account over a budget when the server is upgraded stays
/// refused.
#[tokio::test]
async fn stored_rows_from_before_the_byte_budgets_are_counted() {
    let mut db = sqlite_before("0039").await;
    // Without foreign keys, no account or node is needed.
    exec(&mut db, "PRAGMA foreign_keys = OFF").await;
    // 1,207 bytes in 607 characters; and an item without payload.
    let payload = format!("<p>{}</p>", "\u{e9}".repeat(600));
    let rows = format!(
        "INSERT INTO offline_messages (domain, username, stanza, created_at) \
         VALUES ('l', 'juliet', '<m>\u{e9}</m>', 1); \
         INSERT INTO pubsub_items (service, node, item_id, seq, publisher, payload, updated_at) \
         VALUES ('juliet@l', 'n', 'a', 1, 'juliet@l', '{payload}', 1), \
         ('juliet@l', 'n', 'b', 2, 'juliet@l', NULL, 1)"
    );
    exec(&mut db, &rows).await;
    run_migrations(&mut db, |name| name >= "0039").await;
    let offline: Vec<i64> = sqlx::query_scalar("SELECT bytes FROM offline_messages")
        .fetch_all(&mut db)
        .await
        .unwrap();
    assert_eq!(offline, [9]);
    let items: Vec<i64> = sqlx::query_scalar("SELECT counted_bytes FROM pubsub_items ORDER BY seq")
        .fetch_all(&mut db)
        .await
        .unwrap();
    assert_eq!(items, [1207, 1024]);
}

#[tokio::test]
async fn offline_cap_order_and_delete() {
    for b in backends("offline").await {
        let d = b.domain.as_str();
        b.create_account("juliet").await;
        let o = b.store.offline();
        assert_eq!(o.count(d, "juliet").await.unwrap(), 0);
        for i in 0..3 {
            assert!(o
                .push(d, "juliet", &format!("<m{i}/>"), messages(3))
                .await
                .unwrap());
        }
        assert!(
            !o.push(d, "juliet", "<m3/>", messages(3)).await.unwrap(),
            "{}",
            b.name
        );
        assert_eq!(o.count(d, "juliet").await.unwrap(), 3);
        let all = o.list(d, "juliet", 0, 100).await.unwrap();
        assert_eq!(
            all.iter().map(|m| m.stanza.as_str()).collect::<Vec<_>>(),
            vec!["<m0/>", "<m1/>", "<m2/>"]
        );
        assert_eq!(o.list(d, "juliet", 0, 2).await.unwrap().len(), 2);
        let after = o.list(d, "juliet", all[1].id, 100).await.unwrap();
        assert_eq!(after.len(), 1, "{}", b.name);
        assert_eq!(after[0].stanza, "<m2/>");
        o.delete(d, "juliet", &[all[0].id, all[1].id])
            .await
            .unwrap();
        let rest = o.list(d, "juliet", 0, 100).await.unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].stanza, "<m2/>");
        // Survives reopening the store (a restart).
        let reopened = rookery_store::Store::open(&b.url).await.unwrap();
        assert_eq!(reopened.offline().count(d, "juliet").await.unwrap(), 1);
        b.store.accounts().delete(d, "juliet").await.unwrap();
        assert_eq!(o.count(d, "juliet").await.unwrap(), 0);
    }
}

#[tokio::test]
async fn vcard_private_last() {
    for b in backends("userdata").await {
        let d = b.domain.as_str();
        b.create_account("juliet").await;
        let u = b.store.userdata();
        assert_eq!(u.vcard(d, "juliet").await.unwrap(), None);
        u.set_vcard(d, "juliet", "<vCard xmlns='vcard-temp'/>")
            .await
            .unwrap();
        u.set_vcard(d, "juliet", "<vCard xmlns='vcard-temp'><FN>J</FN></vCard>")
            .await
            .unwrap();
        assert!(
            u.vcard(d, "juliet").await.unwrap().unwrap().contains("FN"),
            "{}",
            b.name
        );

        assert_eq!(
            u.private(d, "juliet", "storage", "storage:bookmarks")
                .await
                .unwrap(),
            None
        );
        u.set_private(
            d,
            "juliet",
            &[
                ("storage".into(), "storage:bookmarks".into(), "<a/>".into()),
                (
                    "storage".into(),
                    "storage:rosternotes".into(),
                    "<b/>".into(),
                ),
            ],
        )
        .await
        .unwrap();
        u.set_private(
            d,
            "juliet",
            &[("storage".into(), "storage:bookmarks".into(), "<c/>".into())],
        )
        .await
        .unwrap();
        assert_eq!(
            u.private(d, "juliet", "storage", "storage:bookmarks")
                .await
                .unwrap()
                .as_deref(),
            Some("<c/>")
        );
        assert_eq!(
            u.private(d, "juliet", "storage", "storage:rosternotes")
                .await
                .unwrap()
                .as_deref(),
            Some("<b/>")
        );
        let mut keys = u.private_keys(d, "juliet").await.unwrap();
        keys.sort();
        assert_eq!(
            keys,
            [
                ("storage".into(), "storage:bookmarks".into()),
                ("storage".into(), "storage:rosternotes".into())
            ],
            "{}",
            b.name
        );

        assert_eq!(u.last_activity(d, "juliet").await.unwrap(), None);
        let last = LastActivity {
            at: 1234,
            status: "gone".into(),
        };
        u.set_last_activity(d, "juliet", &last).await.unwrap();
        u.set_last_activity(d, "juliet", &LastActivity { at: 1300, ..last })
            .await
            .unwrap();
        assert_eq!(
            u.last_activity(d, "juliet").await.unwrap().unwrap().at,
            1300
        );
    }
}

#[tokio::test]
async fn delete_account_takes_everything_with_it() {
    for b in backends("delete-account").await {
        let d = b.domain.as_str();
        let s = &b.store;
        for u in ["juliet", "romeo"] {
            b.create_account(u).await;
        }
        let romeo = format!("romeo@{d}");
        s.rosters()
            .put(
                d,
                "juliet",
                &rookery_store::rosters::RosterItem {
                    contact: romeo.clone(),
                    ..Default::default()
                },
                rookery_store::rosters::Request::Keep,
            )
            .await
            .unwrap();
        s.blocking()
            .add(d, "juliet", &["tybalt@x".into()])
            .await
            .unwrap();
        assert!(s
            .offline()
            .push(d, "juliet", "<m/>", messages(10))
            .await
            .unwrap());
        s.userdata()
            .set_last_activity(
                d,
                "juliet",
                &LastActivity {
                    at: 1,
                    status: String::new(),
                },
            )
            .await
            .unwrap();
        let pep = format!("juliet@{d}");
        let owner = format!("{pep}/balcony");
        s.pubsub()
            .create_node(&pep, "urn:xmpp:tune", "<x/>", &owner)
            .await
            .unwrap();
        s.pubsub()
            .create_node(&romeo, "urn:xmpp:tune", "<x/>", &romeo)
            .await
            .unwrap();

        assert!(s.delete_account(d, "juliet").await.unwrap(), "{}", b.name);
        assert!(!s.accounts().exists(d, "juliet").await.unwrap());
        assert!(s
            .rosters()
            .load(d, "juliet")
            .await
            .unwrap()
            .items
            .is_empty());
        assert!(s.blocking().list(d, "juliet").await.unwrap().is_empty());
        assert_eq!(s.offline().count(d, "juliet").await.unwrap(), 0);
        assert_eq!(s.userdata().last_activity(d, "juliet").await.unwrap(), None);
        assert!(s.pubsub().nodes(&pep).await.unwrap().is_empty());
        // Nobody else's data is touched.
        assert_eq!(s.pubsub().nodes(&romeo).await.unwrap().len(), 1);
        assert!(s.accounts().exists(d, "romeo").await.unwrap());
        assert!(!s.delete_account(d, "juliet").await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_activity_burst_is_coalesced_and_written_by_close() {
    for b in backends("last-burst").await {
        let d = b.domain.as_str();
        let users: Vec<String> = (0..300).map(|i| format!("u{i}")).collect();
        for u in &users {
            b.create_account(u).await;
        }
        let u = b.store.userdata();
        // Three logouts per account, all at once: the last one of each is kept.
        for round in 0..3 {
            for (i, name) in users.iter().enumerate() {
                let last = LastActivity {
                    at: i64::try_from(i * 10 + round).unwrap(),
                    status: format!("r{round}"),
                };
                u.set_last_activity(d, name, &last).await.unwrap();
            }
        }
        // Seen at once, written or not.
        assert_eq!(u.last_activity(d, "u7").await.unwrap().unwrap().at, 72);
        // An account deleted while its logout waits leaves nothing behind and spoils nothing.
        b.store.delete_account(d, "u0").await.unwrap();
        b.store.close().await;
        let reopened = rookery_store::Store::open(&b.url).await.unwrap();
        let u = reopened.userdata();
        for (i, name) in users.iter().enumerate().skip(1) {
            let last = u.last_activity(d, name).await.unwrap();
            assert_eq!(
                last,
                Some(LastActivity {
                    at: i64::try_from(i * 10 + 2).unwrap(),
                    status: "r2".into()
                }),
                "{} {name}",
                b.name
            );
        }
        assert_eq!(u.last_activity(d, "u0").await.unwrap(), None, "{}", b.name);
    }
}

/// The account and its PEP nodes go in one transaction: a failure in between (here a
/// trigger refusing the nodes' deletion; in production a crash or a lost connection) leaves
/// both, and the removal can be asked again — not an account gone with its PEP data (avatar,
/// OMEMO keys) left behind for whoever registers the name next.
#[tokio::test]
async fn delete_account_is_all_or_nothing() {
    use sqlx::Connection;
    let b = backends("delete-atomic").await.remove(0);
    let d = b.domain.as_str();
    let s = &b.store;
    b.create_account("juliet").await;
    let pep = format!("juliet@{d}");
    s.pubsub()
        .create_node(&pep, "urn:xmpp:avatar:data", "<x/>", &pep)
        .await
        .unwrap();
    let mut raw = sqlx::SqliteConnection::connect(&b.url).await.unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse BEFORE DELETE ON pubsub_nodes \
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
    )
    .execute(&mut raw)
    .await
    .unwrap();
    assert!(s.delete_account(d, "juliet").await.is_err());
    assert!(s.accounts().exists(d, "juliet").await.unwrap());
    assert_eq!(s.pubsub().nodes(&pep).await.unwrap().len(), 1);
    sqlx::query("DROP TRIGGER refuse")
        .execute(&mut raw)
        .await
        .unwrap();
    assert!(s.delete_account(d, "juliet").await.unwrap());
    assert!(!s.accounts().exists(d, "juliet").await.unwrap());
    assert!(s.pubsub().nodes(&pep).await.unwrap().is_empty());
}
