//! Message archives: append, query both ways with every bound, purge, preferences, and
//! removal with the account, on every backend (see `common/mod.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::backends;
use rookery_store::mam::{Filter, NewArchived, Prefs};

fn row(domain: &str, n: i64, with: &str) -> NewArchived {
    NewArchived {
        domain: domain.into(),
        username: "juliet".into(),
        stanza_id: format!("id{n}"),
        with_jid: with.into(),
        ts: n * 10,
        stanza: format!("<message><body>{n}</body></message>"),
    }
}

#[tokio::test]
async fn archive_query_purge_and_account_removal() {
    for b in backends("mam").await {
        let d = b.domain.as_str();
        b.create_account("juliet").await;
        let mam = b.store.mam();
        let rows = (1..=10)
            .map(|n| row(d, n, if n % 2 == 0 { "romeo@x" } else { "nurse@x" }))
            .collect();
        mam.append(rows).await.unwrap();
        let ids = |v: Vec<rookery_store::mam::Archived>| -> Vec<String> {
            v.into_iter().map(|a| a.stanza_id).collect()
        };
        let all = Filter::default();
        assert_eq!(
            ids(mam.query(d, "juliet", &all, 3, false).await.unwrap()),
            ["id1", "id2", "id3"],
            "{}",
            b.name
        );
        assert_eq!(
            ids(mam.query(d, "juliet", &all, 3, true).await.unwrap()),
            ["id8", "id9", "id10"]
        );
        let romeo = Filter {
            with: Some("romeo@x".into()),
            ..Filter::default()
        };
        assert_eq!(
            ids(mam.query(d, "juliet", &romeo, 2, true).await.unwrap()),
            ["id8", "id10"]
        );
        let id5 = mam.position(d, "juliet", "id5").await.unwrap().unwrap();
        assert!(mam.position(d, "juliet", "nope").await.unwrap().is_none());
        let after = Filter {
            after: Some(id5),
            ..Filter::default()
        };
        assert_eq!(
            ids(mam.query(d, "juliet", &after, 2, false).await.unwrap()),
            ["id6", "id7"]
        );
        let before = Filter {
            before: Some(id5),
            ..Filter::default()
        };
        assert_eq!(
            ids(mam.query(d, "juliet", &before, 2, true).await.unwrap()),
            ["id3", "id4"]
        );
        let window = Filter {
            start: Some(30),
            end: Some(50),
            ..Filter::default()
        };
        assert_eq!(
            ids(mam.query(d, "juliet", &window, 10, false).await.unwrap()),
            ["id3", "id4", "id5"]
        );
        let picked = Filter {
            ids: vec!["id9".into(), "id2".into()],
            ..Filter::default()
        };
        assert_eq!(
            ids(mam.query(d, "juliet", &picked, 10, false).await.unwrap()),
            ["id2", "id9"]
        );
        // Age, then cap: the oldest go first.
        assert_eq!(mam.purge(Some(25), None).await.unwrap(), 2);
        assert_eq!(mam.purge(None, Some(5)).await.unwrap(), 3);
        assert_eq!(
            ids(mam.query(d, "juliet", &all, 10, false).await.unwrap()),
            ["id6", "id7", "id8", "id9", "id10"]
        );
        // Preferences.
        assert!(mam.prefs(d, "juliet").await.unwrap().is_none());
        let p = Prefs {
            default: "roster".into(),
            always: vec!["romeo@x".into()],
            never: vec!["tybalt@x".into(), "paris@x".into()],
        };
        mam.set_prefs(d, "juliet", &p).await.unwrap();
        assert_eq!(mam.prefs(d, "juliet").await.unwrap(), Some(p));
        // Gone with the account.
        b.store.delete_account(d, "juliet").await.unwrap();
        assert!(mam
            .query(d, "juliet", &all, 10, false)
            .await
            .unwrap()
            .is_empty());
        assert!(mam.prefs(d, "juliet").await.unwrap().is_none());
    }
}
