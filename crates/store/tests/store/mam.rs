//! Message archives: append, query both ways with every bound, purge, preferences, and
//! removal with the account, on every backend (see `common/mod.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use crate::common::backends;
use rookery_store::mam::{Filter, NewArchived, Owner, Prefs};

fn row(domain: &str, n: i64, with: &str) -> NewArchived {
    NewArchived {
        owner: juliet(domain),
        stanza_id: format!("id{n}"),
        with_jid: with.into(),
        ts: n * 10,
        stanza: format!("<message><body>{n}</body></message>"),
    }
}

fn juliet(domain: &str) -> Owner {
    Owner::Account {
        domain: domain.into(),
        username: "juliet".into(),
    }
}

#[tokio::test]
async fn archive_query_purge_and_account_removal() {
    for b in backends("mam").await {
        let d = b.domain.as_str();
        b.create_account("juliet").await;
        let mam = b.store.mam();
        let j = juliet(d);
        let rows: Vec<NewArchived> = (1..=10)
            .map(|n| row(d, n, if n % 2 == 0 { "romeo@x" } else { "nurse@x" }))
            .collect();
        mam.append(rows).await.unwrap();
        let ids = |v: Vec<rookery_store::mam::Archived>| -> Vec<String> {
            v.into_iter().map(|a| a.stanza_id).collect()
        };
        let all = Filter::default();
        assert_eq!(
            ids(mam.query(&j, &all, 3, false).await.unwrap()),
            ["id1", "id2", "id3"],
            "{}",
            b.name
        );
        assert_eq!(
            ids(mam.query(&j, &all, 3, true).await.unwrap()),
            ["id8", "id9", "id10"]
        );
        let romeo = Filter {
            with: Some("romeo@x".into()),
            ..Filter::default()
        };
        assert_eq!(
            ids(mam.query(&j, &romeo, 2, true).await.unwrap()),
            ["id8", "id10"]
        );
        let id5 = mam.position(&j, "id5").await.unwrap().unwrap();
        assert!(mam.position(&j, "nope").await.unwrap().is_none());
        let after = Filter {
            after: Some(id5),
            ..Filter::default()
        };
        assert_eq!(
            ids(mam.query(&j, &after, 2, false).await.unwrap()),
            ["id6", "id7"]
        );
        let before = Filter {
            before: Some(id5),
            ..Filter::default()
        };
        assert_eq!(
            ids(mam.query(&j, &before, 2, true).await.unwrap()),
            ["id3", "id4"]
        );
        let window = Filter {
            start: Some(30),
            end: Some(50),
            ..Filter::default()
        };
        assert_eq!(
            ids(mam.query(&j, &window, 10, false).await.unwrap()),
            ["id3", "id4", "id5"]
        );
        let picked = Filter {
            ids: vec!["id9".into(), "id2".into()],
            ..Filter::default()
        };
        assert_eq!(
            ids(mam.query(&j, &picked, 10, false).await.unwrap()),
            ["id2", "id9"]
        );
        // Age, then cap: the oldest go first.
        assert_eq!(mam.purge(Some(25), None).await.unwrap(), 2);
        assert_eq!(mam.purge(None, Some(5)).await.unwrap(), 3);
        assert_eq!(
            ids(mam.query(&j, &all, 10, false).await.unwrap()),
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
        // A room's archive: same queries, its own table, cleared by its service.
        let room = Owner::Room {
            service: format!("conference.{d}"),
            room: "coven".into(),
        };
        let mut r = row(d, 1, "coven@conference/crone");
        r.owner = room.clone();
        mam.append(vec![r]).await.unwrap();
        assert_eq!(
            ids(mam.query(&room, &all, 10, false).await.unwrap()),
            ["id1"]
        );
        assert!(mam.position(&room, "id6").await.unwrap().is_none());
        assert_eq!(mam.clear(&room).await.unwrap(), 1);
        assert!(mam.query(&room, &all, 10, false).await.unwrap().is_empty());
        // Gone with the account.
        b.store.delete_account(d, "juliet").await.unwrap();
        assert!(mam.query(&j, &all, 10, false).await.unwrap().is_empty());
        assert!(mam.prefs(d, "juliet").await.unwrap().is_none());
    }
}
