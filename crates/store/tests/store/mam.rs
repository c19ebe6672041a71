//! Message archives: append, query both ways with every bound, purge, preferences, and
//! removal with the account, on every backend (see `common/mod.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use crate::common::{backends, exec, run_migrations, sqlite_before};
use rookery_store::mam::{ArchiveId, ArchivePage, Filter, NewArchived, Owner, Prefs};
use rookery_store::page::PageLimit;
use rookery_store::pubsub::ItemRow;

fn row(domain: &str, n: i64, with: &str) -> NewArchived {
    NewArchived {
        owner: juliet(domain),
        id: ArchiveId::Named(format!("id{n}")),
        with_jid: with.into(),
        ts: n * 10,
        stanza: format!("<message><body>{n}</body></message>"),
        real_jid: None,
    }
}

/// The stanza-ids of `rows`, in their order.
fn stanza_ids(rows: Vec<rookery_store::mam::Archived>) -> Vec<String> {
    rows.into_iter().map(|a| a.stanza_id).collect()
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
        let all = Filter::default();
        assert_eq!(
            stanza_ids(mam.query(&j, &all, 3, false).await.unwrap()),
            ["id1", "id2", "id3"],
            "{}",
            b.name
        );
        assert_eq!(
            stanza_ids(mam.query(&j, &all, 3, true).await.unwrap()),
            ["id8", "id9", "id10"]
        );
        // The metadata's ends: the first and last message's stanza-id and time.
        let first = mam.edge(&j, false).await.unwrap().unwrap();
        let last = mam.edge(&j, true).await.unwrap().unwrap();
        assert_eq!((first.0.as_str(), last.0.as_str()), ("id1", "id10"));
        assert!(first.1 <= last.1);
        assert_eq!(
            mam.edge(&juliet("nowhere.example"), true).await.unwrap(),
            None
        );
        let romeo = Filter {
            with: Some("romeo@x".into()),
            ..Filter::default()
        };
        assert_eq!(
            stanza_ids(mam.query(&j, &romeo, 2, true).await.unwrap()),
            ["id8", "id10"]
        );
        // Narrowed by the stored stanza's text (a full JID's `from`/`to`): any of the strings.
        let text = Filter {
            with: Some("romeo@x".into()),
            stanza_contains: vec!["<body>4<".into(), "<body>10<".into(), "<body>5<".into()],
            ..Filter::default()
        };
        assert_eq!(
            stanza_ids(mam.query(&j, &text, 10, false).await.unwrap()),
            ["id4", "id10"],
            "{}",
            b.name
        );
        let id5 = mam.position(&j, "id5").await.unwrap().unwrap();
        assert!(mam.position(&j, "nope").await.unwrap().is_none());
        let after = Filter {
            after: Some(id5),
            ..Filter::default()
        };
        assert_eq!(
            stanza_ids(mam.query(&j, &after, 2, false).await.unwrap()),
            ["id6", "id7"]
        );
        let before = Filter {
            before: Some(id5),
            ..Filter::default()
        };
        assert_eq!(
            stanza_ids(mam.query(&j, &before, 2, true).await.unwrap()),
            ["id3", "id4"]
        );
        let window = Filter {
            start: Some(30),
            end: Some(50),
            ..Filter::default()
        };
        assert_eq!(
            stanza_ids(mam.query(&j, &window, 10, false).await.unwrap()),
            ["id3", "id4", "id5"]
        );
        let picked = Filter {
            ids: vec!["id9".into(), "id2".into()],
            ..Filter::default()
        };
        assert_eq!(
            stanza_ids(mam.query(&j, &picked, 10, false).await.unwrap()),
            ["id2", "id9"]
        );
        // Age, then cap: the oldest go first.
        assert_eq!(mam.purge(Some(25), None).await.unwrap(), 2);
        assert_eq!(mam.purge(None, Some(5)).await.unwrap(), 3);
        assert_eq!(
            stanza_ids(mam.query(&j, &all, 10, false).await.unwrap()),
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
            stanza_ids(mam.query(&room, &all, 10, false).await.unwrap()),
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

/// Rows numbered by SQLite's archiver (`ArchiveId::Position`) beside rows written with names
/// (before migration 0033, or a room's): each found by its own stanza-id — a position's
/// derived from it, 16 hex digits — and only by it; in the one order of their ids. On
/// PostgreSQL, where the database numbers rows, a position is refused and nothing written.
/// Pages end at their count or with the message that brings their stanzas to the byte
/// budget (at least one), from either end, and say whether more follow; walking them from
/// each end meets every message once. Messages of very different sizes exercise the reads in
/// chunks (sized by the largest message read so far). The archive is a pubsub node's history
/// (the same query code): an account's of 70 messages would be cut by the purge of
/// `archive_query_purge_and_account_removal`, which PostgreSQL's tests share.
#[tokio::test]
async fn archive_pages_stop_at_their_count_or_byte_budget() {
    for b in backends("mam_pages").await {
        let mam = b.store.mam();
        let service = format!("pubsub.{}", b.domain);
        let ps = b.store.pubsub();
        ps.create_node(&service, "log", "<x/>", "alice@x")
            .await
            .unwrap();
        // 30 small entries, then 10 of 10 KB, then 30 small.
        for n in 1..=70 {
            let payload = match n {
                31..=40 => format!("<p>{}</p>", "x".repeat(10_000)),
                _ => format!("<p>{n}</p>"),
            };
            let item = ItemRow {
                id: format!("id{n}"),
                seq: n,
                publisher: "alice@x".into(),
                payload: Some(payload),
                updated_at: n,
            };
            ps.publish(&service, "log", &item, None, 0, None)
                .await
                .unwrap();
        }
        let j = Owner::Node {
            service,
            node: "log".into(),
        };
        let all = Filter::default();
        let page = |filter: Filter, max: u64, max_bytes: usize, from_end: bool| {
            let limit = PageLimit { max, max_bytes };
            let (mam, j) = (mam, j.clone());
            async move { mam.page(&j, &filter, limit, from_end).await.unwrap() }
        };
        let ids = |p: &ArchivePage| stanza_ids(p.rows.clone());
        let bytes = |p: &ArchivePage| p.rows.iter().map(|r| r.stanza.len()).sum::<usize>();

        // By count, from either end.
        let first = page(all.clone(), 3, 1 << 20, false).await;
        assert_eq!(ids(&first), ["id1", "id2", "id3"], "{}", b.name);
        assert!(first.more);
        let last = page(all.clone(), 3, 1 << 20, true).await;
        assert_eq!(ids(&last), ["id68", "id69", "id70"]);
        assert!(last.more);
        // By bytes: the 10 KB message that passes 15,000 bytes is the last of the page.
        let cut = page(all.clone(), 100, 15_000, false).await;
        assert_eq!(ids(&cut).last().map(String::as_str), Some("id32"));
        assert!(cut.more && bytes(&cut) >= 15_000 && cut.rows.len() == 32);
        // Backwards the page keeps the newest: the cut is at its old end.
        let back = page(all.clone(), 100, 15_000, true).await;
        assert_eq!(ids(&back).first().map(String::as_str), Some("id39"));
        assert!(back.more && back.rows.len() == 32);
        // One message always fits; none for max 0, which still tells whether there are any.
        let one = page(all.clone(), 100, 1, false).await;
        assert_eq!(ids(&one), ["id1"]);
        assert!(one.more);
        let none = page(all.clone(), 0, 1 << 20, false).await;
        assert!(none.rows.is_empty() && none.more);
        let whole = page(all.clone(), 100, 1 << 20, false).await;
        assert!(whole.rows.len() == 70 && !whole.more);

        // Walked in pages of at most 25,000 bytes from either end: each message once.
        let expected: Vec<String> = (1..=70).map(|n| format!("id{n}")).collect();
        for from_end in [false, true] {
            let (mut seen, mut pages, mut rest) = (Vec::new(), 0, all.clone());
            loop {
                let p = page(rest.clone(), 20, 25_000, from_end).await;
                pages += 1;
                // The message read last (the oldest when read from the end) may pass the
                // budget, none before it.
                let read_last = match from_end {
                    false => p.rows.last(),
                    true => p.rows.first(),
                };
                let before_it = bytes(&p) - read_last.map_or(0, |r| r.stanza.len());
                assert!(before_it < 25_000 && p.rows.len() <= 20, "{}", b.name);
                seen = match from_end {
                    false => [seen, ids(&p)].concat(),
                    true => [ids(&p), seen].concat(),
                };
                if !p.more {
                    break;
                }
                match from_end {
                    false => rest.after = p.rows.last().map(|r| r.id),
                    true => rest.before = p.rows.first().map(|r| r.id),
                }
            }
            assert_eq!(seen, expected, "{} from_end={from_end}", b.name);
            assert!(pages >= 6, "{pages} pages");
        }

        // Counted, not read: the ids a query names that are there.
        let picked = Filter {
            ids: vec!["id9".into(), "id2".into(), "nope".into()],
            ..Filter::default()
        };
        assert_eq!(mam.count(&j, &picked).await.unwrap(), 2);
        assert_eq!(mam.count(&j, &all).await.unwrap(), 70);
    }
}

#[tokio::test]
async fn rows_numbered_by_the_writer_beside_named_rows() {
    for b in backends("mam-positions").await {
        let d = b.domain.as_str();
        b.create_account("juliet").await;
        let mam = b.store.mam();
        let j = juliet(d);
        let first = 1_765_000_000_000_i64 << 20;
        if b.name != "sqlite" {
            assert!(mam.last_position().await.unwrap().is_none());
            assert!(mam.numbering().await.unwrap().is_none());
            // A position made on SQLite is refused.
            let sqlite = rookery_store::Store::open("sqlite::memory:").await.unwrap();
            let numbering = sqlite.mam().numbering().await.unwrap().unwrap().clone();
            let mut r = row(d, 3, "romeo@x");
            r.id = numbering.numbered(first + 3);
            assert!(mam.append(vec![r]).await.is_err(), "{}", b.name);
            assert!(mam
                .query(&j, &Filter::default(), 10, false)
                .await
                .unwrap()
                .is_empty());
            continue;
        }
        let numbering = mam.numbering().await.unwrap().unwrap();
        let numbered = |n: i64| {
            let mut r = row(d, n, "romeo@x");
            r.id = numbering.numbered(first + n);
            r
        };
        mam.append(vec![row(d, 1, "romeo@x"), row(d, 2, "nurse@x")])
            .await
            .unwrap();
        let named_last = mam.last_position().await.unwrap().unwrap();
        mam.append(vec![numbered(3), numbered(4), numbered(5)])
            .await
            .unwrap();
        assert_eq!(mam.last_position().await.unwrap(), Some(first + 5));
        let rows = mam.query(&j, &Filter::default(), 10, false).await.unwrap();
        let sid = |n: i64| numbering.numbered(first + n).stanza_id().to_owned();
        let ids: Vec<&str> = rows.iter().map(|a| a.stanza_id.as_str()).collect();
        assert_eq!(ids, ["id1", "id2", &sid(3), &sid(4), &sid(5)]);
        assert_eq!(rows[1].id, named_last);
        assert_eq!(rows[3].id, first + 4);
        assert_eq!(mam.position(&j, &sid(4)).await.unwrap(), Some(first + 4));
        assert_eq!(mam.position(&j, "id2").await.unwrap(), Some(named_last));
        // A named row's number spelled as a position is not its id; nor is a position
        // nobody was given, nor one of another archive.
        let spelled = numbering.numbered(named_last).stanza_id().to_owned();
        assert!(mam.position(&j, &spelled).await.unwrap().is_none());
        assert!(mam.position(&j, &sid(9)).await.unwrap().is_none());
        let romeo = Owner::Account {
            domain: d.into(),
            username: "romeo".into(),
        };
        assert!(mam.position(&romeo, &sid(4)).await.unwrap().is_none());
        let picked = Filter {
            ids: vec![sid(5), "id1".into(), spelled, "nope".into()],
            ..Filter::default()
        };
        let picked = stanza_ids(mam.query(&j, &picked, 10, false).await.unwrap());
        assert_eq!(picked, ["id1".to_string(), sid(5)]);
        let none = Filter {
            ids: vec!["nope".into()],
            ..Filter::default()
        };
        assert!(mam.query(&j, &none, 10, false).await.unwrap().is_empty());
        let romeo_only = Filter {
            with: Some("romeo@x".into()),
            after: Some(first + 3),
            ..Filter::default()
        };
        let after: Vec<i64> = mam
            .query(&j, &romeo_only, 10, false)
            .await
            .unwrap()
            .iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(after, [first + 4, first + 5]);
        // A named row written after numbered ones goes after them (AUTOINCREMENT's counter).
        mam.append(vec![row(d, 6, "romeo@x")]).await.unwrap();
        let last = mam.query(&j, &Filter::default(), 1, true).await.unwrap();
        assert_eq!(last[0].stanza_id, "id6");
        assert!(last[0].id > first + 5);
    }
}

/// A batch with a row of an account that is gone (deleted while its message waited): on
/// SQLite that row is skipped and the others are kept in their order (the insert cannot fail
/// midway, see `insert_sql`); on PostgreSQL the batch fails whole and nothing is kept (the
/// archiver then writes its messages one by one).
#[tokio::test]
async fn a_row_of_a_gone_account_in_a_batch() {
    for b in backends("mam-gone").await {
        let d = b.domain.as_str();
        b.create_account("juliet").await;
        let mam = b.store.mam();
        let mut rows: Vec<NewArchived> = (1..=5).map(|n| row(d, n, "romeo@x")).collect();
        rows[2].owner = Owner::Account {
            domain: d.into(),
            username: "nobody".into(),
        };
        let appended = mam.append(rows).await;
        let kept = stanza_ids(
            mam.query(&juliet(d), &Filter::default(), 10, false)
                .await
                .unwrap(),
        );
        if b.name == "sqlite" {
            appended.unwrap();
            assert_eq!(kept, ["id1", "id2", "id4", "id5"]);
        } else {
            assert!(appended.is_err(), "{}", b.name);
            assert!(kept.is_empty(), "{}", b.name);
        }
    }
}

/// Migration 0032 rebuilds SQLite's account archive with its foreign key deferred: the rows
/// and their ids are kept, and an account's rows still go with it.
#[tokio::test]
async fn the_archive_rebuild_keeps_rows_ids_and_the_cascade() {
    use sqlx::Connection;
    let mut db = sqlite_before("0032").await;
    exec(&mut db, "PRAGMA foreign_keys = ON").await;
    // Two accounts, every other column a value of its type (1 passes the CHECKs).
    let columns: Vec<(String, String)> =
        sqlx::query_as("SELECT name, type FROM pragma_table_info('accounts')")
            .fetch_all(&mut db)
            .await
            .unwrap();
    for user in ["juliet", "romeo"] {
        let values: Vec<String> = columns
            .iter()
            .map(|(name, ty)| match (name.as_str(), ty.as_str()) {
                ("domain", _) => "'l'".into(),
                ("username", _) => format!("'{user}'"),
                (_, "BLOB") => "x'00'".into(),
                (_, "INTEGER") => "1".into(),
                _ => "'x'".into(),
            })
            .collect();
        exec(
            &mut db,
            &format!("INSERT INTO accounts VALUES ({})", values.join(", ")),
        )
        .await;
    }
    exec(
        &mut db,
        "INSERT INTO mam_messages (id, domain, username, stanza_id, with_jid, ts, stanza) VALUES
           (7, 'l', 'juliet', 'a', 'romeo@l', 1, '<m/>'),
           (9, 'l', 'romeo', 'b', 'juliet@l', 2, '<m/>'),
           (12, 'l', 'juliet', 'c', 'romeo@l', 3, '<m/>');",
    )
    .await;
    run_migrations(&mut db, |name| name.starts_with("0032_")).await;
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, stanza_id FROM mam_messages ORDER BY id")
            .fetch_all(&mut db)
            .await
            .unwrap();
    assert_eq!(rows, [(7, "a".into()), (9, "b".into()), (12, "c".into())]);
    // New rows continue after the highest id ever given (AUTOINCREMENT's counter kept).
    exec(
        &mut db,
        "INSERT INTO mam_messages (domain, username, stanza_id, with_jid, ts, stanza) \
         VALUES ('l', 'romeo', 'd', 'juliet@l', 4, '<m/>')",
    )
    .await;
    let last: i64 = sqlx::query_scalar("SELECT MAX(id) FROM mam_messages")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(last, 13);
    // The key is deferred: a bad row fails the commit, not the statement.
    let mut tx = db.begin().await.unwrap();
    exec(
        &mut tx,
        "INSERT INTO mam_messages (domain, username, stanza_id, with_jid, ts, stanza) \
         VALUES ('l', 'nobody', 'e', 'juliet@l', 5, '<m/>')",
    )
    .await;
    assert!(tx.commit().await.is_err());
    // And it still cascades.
    exec(&mut db, "DELETE FROM accounts WHERE username = 'juliet'").await;
    let left: Vec<String> = sqlx::query_scalar("SELECT stanza_id FROM mam_messages ORDER BY id")
        .fetch_all(&mut db)
        .await
        .unwrap();
    assert_eq!(left, ["b", "d"]);
}

/// A bounced message's row is taken back by its stanza-id (a name, or on SQLite a
/// position): only that row of that archive goes, and a row nobody has is no error.
#[tokio::test]
async fn a_row_is_removed_by_its_stanza_id() {
    for b in backends("mam-remove").await {
        let d = b.domain.as_str();
        b.create_account("juliet").await;
        b.create_account("romeo").await;
        let mam = b.store.mam();
        let (j, romeo) = (
            juliet(d),
            Owner::Account {
                domain: d.into(),
                username: "romeo".into(),
            },
        );
        let mut rows: Vec<NewArchived> = (1..=3).map(|n| row(d, n, "romeo@x")).collect();
        let mut theirs = row(d, 2, "juliet@x");
        theirs.owner = romeo.clone();
        rows.push(theirs);
        let numbering = mam.numbering().await.unwrap();
        if let Some(n) = numbering {
            let mut numbered = row(d, 4, "romeo@x");
            numbered.id = n.numbered(1 << 40);
            rows.push(numbered);
        }
        // Not the old times the purge test counts on in a shared database.
        for r in &mut rows {
            r.ts += 1 << 40;
        }
        mam.append(rows).await.unwrap();
        assert!(mam.remove(&j, "id2").await.unwrap(), "{}", b.name);
        assert!(!mam.remove(&j, "id2").await.unwrap());
        assert!(!mam.remove(&j, "nope").await.unwrap());
        let left = ["id1", "id3"];
        if let Some(n) = numbering {
            assert!(mam
                .remove(&j, n.numbered(1 << 40).stanza_id())
                .await
                .unwrap());
        }
        let all = Filter::default();
        assert_eq!(
            stanza_ids(mam.query(&j, &all, 10, false).await.unwrap()),
            left
        );
        // Romeo's row of the same name stays.
        assert_eq!(
            stanza_ids(mam.query(&romeo, &all, 10, false).await.unwrap()),
            ["id2"]
        );
    }
}

/// SQLite stanza-ids are keyed (`Numbering`) from the first use of a key on: rows numbered
/// before it existed — a database from before migration 0036 — keep the 16 hex digits they
/// were given (XEP-0359 §3), found by them in `ids` and as RSM/`after-id` positions, and the
/// rows after get keyed ids; an old-style spelling of a new row finds nothing.
#[tokio::test]
async fn ids_given_before_the_key_keep_working() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("a.db").display());
    let store = rookery_store::Store::open(&url).await.unwrap();
    let creds = rookery_store::Credentials::derive("pw", 64).unwrap();
    store
        .accounts()
        .create("l", "juliet", &creds)
        .await
        .unwrap();
    let first = 1_765_000_000_000_i64 << 20;
    let at = |n: &rookery_store::mam::Numbering, p: i64| {
        let mut r = row("l", p - first, "romeo@x");
        r.id = n.numbered(p);
        r
    };
    let n = store.mam().numbering().await.unwrap().unwrap().clone();
    store
        .mam()
        .append(vec![at(&n, first + 1), at(&n, first + 2)])
        .await
        .unwrap();
    store.close().await;
    // As if these rows were written before the key: it goes, a new one is made at the next
    // open, from the position after them.
    let mut raw = sqlx::SqliteConnection::connect(&url).await.unwrap();
    exec(&mut raw, "DELETE FROM mam_id_key").await;
    raw.close().await.unwrap();
    let store = rookery_store::Store::open(&url).await.unwrap();
    let mam = store.mam();
    let n = mam.numbering().await.unwrap().unwrap().clone();
    mam.append(vec![at(&n, first + 3)]).await.unwrap();
    let j = juliet("l");
    let ids = stanza_ids(mam.query(&j, &Filter::default(), 10, false).await.unwrap());
    let hex = |p: i64| format!("{p:016x}");
    assert_eq!(ids[..2], [hex(first + 1), hex(first + 2)]);
    assert_eq!(ids[2], n.numbered(first + 3).stanza_id());
    assert_eq!(ids[2].len(), 11, "{ids:?}");
    assert_eq!(
        mam.position(&j, &hex(first + 1)).await.unwrap(),
        Some(first + 1)
    );
    assert_eq!(mam.position(&j, &ids[2]).await.unwrap(), Some(first + 3));
    assert_eq!(mam.position(&j, &hex(first + 3)).await.unwrap(), None);
    let picked = Filter {
        ids: vec![hex(first + 2), ids[2].clone()],
        ..Filter::default()
    };
    assert_eq!(
        stanza_ids(mam.query(&j, &picked, 10, false).await.unwrap()),
        ids[1..]
    );
}

/// A room's rows keep their sender's real JID (migration sqlite 0037 / postgres 0034), a
/// row without one reads back as none, and an account's rows have none.
#[tokio::test]
async fn a_rooms_rows_keep_the_senders_real_jid() {
    for b in backends("mam-real-jid").await {
        let d = b.domain.as_str();
        let mam = b.store.mam();
        let owner = Owner::Room {
            service: format!("conference.{d}"),
            room: "coven".into(),
        };
        let rows: Vec<NewArchived> = [Some("hag66@shakespeare.lit"), None]
            .into_iter()
            .enumerate()
            .map(|(n, real)| NewArchived {
                owner: owner.clone(),
                id: ArchiveId::Named(format!("r{n}")),
                with_jid: "coven@conference/witch".into(),
                ts: 1 << 40,
                stanza: "<message type=\"groupchat\"><body>x</body></message>".into(),
                real_jid: real.map(str::to_owned),
            })
            .collect();
        mam.append(rows).await.unwrap();
        let got: Vec<Option<String>> = mam
            .query(&owner, &Filter::default(), 10, false)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.real_jid)
            .collect();
        assert_eq!(
            got,
            [Some("hag66@shakespeare.lit".to_string()), None],
            "{}",
            b.name
        );
        b.create_account("juliet").await;
        let mut mine = row(d, 1, "romeo@x");
        mine.ts = 1 << 40;
        mam.append(vec![mine]).await.unwrap();
        let got = mam
            .query(&juliet(d), &Filter::default(), 10, false)
            .await
            .unwrap();
        assert_eq!(got[0].real_jid, None);
    }
}

/// A page read first of all on a store in memory: the archive's numbering, set up at its
/// first use with a write, must not wait for the one connection the page holds.
#[tokio::test]
async fn a_first_page_on_a_store_in_memory_does_not_wait_for_itself() {
    let store = rookery_store::Store::open("sqlite::memory:").await.unwrap();
    let limit = PageLimit {
        max: 10,
        max_bytes: 1 << 20,
    };
    let page = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        store
            .mam()
            .page(&juliet("localhost"), &Filter::default(), limit, true),
    )
    .await
    .expect("the page is read, not stuck");
    assert!(page.unwrap().rows.is_empty());
}
