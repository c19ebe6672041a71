//! Many writers at once, on every backend (see `common/mod.rs`): every write the store
//! answered `Ok` is there afterwards, and no write fails because another one ran at the same
//! time ("database is locked" on SQLite). The shapes are the ones a busy server produces:
//! offline messages to several accounts, roster changes of many accounts, pubsub publications
//! to several nodes, push counts of one account, and a mix of all writers. Counted, not timed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;

use crate::common::{backends, messages, TestBackend};
use rookery_store::pubsub::ItemRow;
use rookery_store::rosters::{Request, RosterItem, Subscription};
use rookery_store::userdata::LastActivity;
use tokio::task::JoinSet;

/// Concurrent writers (tasks) per test.
const WRITERS: usize = 10;
/// Writes per writer.
const PER_WRITER: usize = 200;

/// Creates the accounts `user0` … `user{n-1}`.
async fn accounts(b: &TestBackend, n: usize) -> Vec<String> {
    let mut names = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("user{i}");
        b.create_account(&name).await;
        names.push(name);
    }
    names
}

/// Runs `WRITERS` tasks at once, task `w` calling `write(store, domain, w, i)` for each
/// `i < PER_WRITER`; returns the errors (as text) of every failed write.
async fn hammer<F, Fut>(b: &TestBackend, write: F) -> Vec<String>
where
    F: Fn(rookery_store::Store, String, usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), rookery_store::StoreError>> + Send,
{
    let write = Arc::new(write);
    let mut tasks = JoinSet::new();
    for w in 0..WRITERS {
        let (store, domain, write) = (b.store.clone(), b.domain.clone(), Arc::clone(&write));
        tasks.spawn(async move {
            let mut errors = Vec::new();
            for i in 0..PER_WRITER {
                if let Err(e) = write(store.clone(), domain.clone(), w, i).await {
                    errors.push(e.to_string());
                }
            }
            errors
        });
    }
    let mut errors = Vec::new();
    while let Some(r) = tasks.join_next().await {
        errors.extend(r.unwrap());
    }
    errors
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_offline_pushes_all_stored() {
    for b in backends("concurrent-offline").await {
        let users = accounts(&b, WRITERS).await;
        // Writer w sends to user w: as many accounts as writers, all at once.
        let errors = hammer(&b, |store, domain, w, i| async move {
            let stored = store
                .offline()
                .push(
                    &domain,
                    &format!("user{w}"),
                    &format!("<m{i}/>"),
                    messages(10_000),
                )
                .await?;
            assert!(stored, "under the cap");
            Ok(())
        })
        .await;
        assert_eq!(errors, Vec::<String>::new(), "{}", b.name);
        let mut total = 0;
        for u in &users {
            let n = b.store.offline().count(&b.domain, u).await.unwrap();
            assert_eq!(n, PER_WRITER as u64, "{} {u}", b.name);
            total += n;
        }
        assert_eq!(total, (WRITERS * PER_WRITER) as u64, "{}", b.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_offline_pushes_keep_the_cap() {
    for b in backends("concurrent-offline-cap").await {
        accounts(&b, 1).await;
        // Every writer to the same account, serialized per account as the offline module
        // does (the store's contract for an exact cap on PostgreSQL); the cap (100) holds.
        let account_lock = Arc::new(tokio::sync::Mutex::new(()));
        let errors = hammer(&b, move |store, domain, _, i| {
            let account_lock = Arc::clone(&account_lock);
            async move {
                let _serialized = account_lock.lock().await;
                store
                    .offline()
                    .push(&domain, "user0", &format!("<m{i}/>"), messages(100))
                    .await?;
                Ok(())
            }
        })
        .await;
        assert_eq!(errors, Vec::<String>::new(), "{}", b.name);
        assert_eq!(
            b.store.offline().count(&b.domain, "user0").await.unwrap(),
            100,
            "{}",
            b.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_push_counts_are_each_their_own() {
    for b in backends("concurrent-push-counts").await {
        accounts(&b, 1).await;
        // Every writer counts for the same account, as cluster nodes holding its messages
        // at once do: each gets a number of its own, and none is skipped.
        let counted = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Arc::clone(&counted);
        let errors = hammer(&b, move |store, domain, _, _| {
            let sink = Arc::clone(&sink);
            async move {
                let n = store.push().count_one(&domain, "user0").await?;
                sink.lock().unwrap().push(n);
                Ok(())
            }
        })
        .await;
        assert_eq!(errors, Vec::<String>::new(), "{}", b.name);
        let mut counted = counted.lock().unwrap().clone();
        counted.sort_unstable();
        let all: Vec<u64> = (1..=(WRITERS * PER_WRITER) as u64).collect();
        assert_eq!(counted, all, "{}", b.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_roster_sets_all_stored() {
    for b in backends("concurrent-roster").await {
        let users = accounts(&b, WRITERS).await;
        let errors = hammer(&b, |store, domain, w, i| async move {
            let item = RosterItem {
                contact: format!("contact{i}@example.net"),
                subscription: Subscription::Both,
                groups: vec!["Friends".into()],
                ..Default::default()
            };
            store
                .rosters()
                .put(&domain, &format!("user{w}"), &item, Request::Keep)
                .await?;
            Ok(())
        })
        .await;
        assert_eq!(errors, Vec::<String>::new(), "{}", b.name);
        for u in &users {
            let roster = b.store.rosters().load(&b.domain, u).await.unwrap();
            assert_eq!(roster.items.len(), PER_WRITER, "{} {u}", b.name);
            // One version bump per change, none lost.
            assert_eq!(roster.ver, PER_WRITER as i64, "{} {u}", b.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pubsub_publishes_all_stored() {
    for b in backends("concurrent-pubsub").await {
        let service = format!("pubsub.{}", b.domain);
        for w in 0..WRITERS {
            b.store
                .pubsub()
                .create_node(&service, &format!("node{w}"), "<x/>", "owner@x")
                .await
                .unwrap();
        }
        let svc = service.clone();
        let errors = hammer(&b, move |store, _, w, i| {
            let service = svc.clone();
            async move {
                let item = ItemRow {
                    id: format!("item{i}"),
                    seq: i64::try_from(i).unwrap_or_default() + 1,
                    publisher: "owner@x".into(),
                    payload: Some(format!("<p>{i}</p>")),
                    updated_at: 1,
                };
                let count_before = u64::try_from(i).unwrap_or_default();
                store
                    .pubsub()
                    .publish(
                        &service,
                        &format!("node{w}"),
                        &item,
                        None,
                        count_before,
                        None,
                    )
                    .await?;
                Ok(())
            }
        })
        .await;
        assert_eq!(errors, Vec::<String>::new(), "{}", b.name);
        let stats = b.store.pubsub().item_stats(&service).await.unwrap();
        assert_eq!(stats.len(), WRITERS, "{}", b.name);
        for (node, s) in stats {
            assert_eq!(s.count, PER_WRITER as u64, "{} {node}", b.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_mixed_writers_all_stored() {
    for b in backends("concurrent-mixed").await {
        let users = accounts(&b, WRITERS).await;
        // Each writer does a different kind of write in turn, to its own account.
        let errors = hammer(&b, |store, domain, w, i| async move {
            let user = format!("user{w}");
            match i % 5 {
                0 => {
                    store
                        .offline()
                        .push(&domain, &user, "<m/>", messages(10_000))
                        .await?;
                }
                1 => {
                    let item = RosterItem {
                        contact: format!("c{i}@x"),
                        ..Default::default()
                    };
                    store
                        .rosters()
                        .put(&domain, &user, &item, Request::Keep)
                        .await?;
                }
                2 => {
                    store
                        .userdata()
                        .set_vcard(&domain, &user, &format!("<vCard>{i}</vCard>"))
                        .await?;
                }
                3 => {
                    let doc = ("q".to_owned(), format!("ns{i}"), "<q/>".to_owned());
                    store.userdata().set_private(&domain, &user, &[doc]).await?;
                }
                _ => {
                    let last = LastActivity {
                        at: i64::try_from(i).unwrap_or_default(),
                        status: String::new(),
                    };
                    store
                        .userdata()
                        .set_last_activity(&domain, &user, &last)
                        .await?;
                }
            }
            Ok(())
        })
        .await;
        assert_eq!(errors, Vec::<String>::new(), "{}", b.name);
        let rounds = PER_WRITER / 5;
        for u in &users {
            let d = b.domain.as_str();
            assert_eq!(
                b.store.offline().count(d, u).await.unwrap(),
                rounds as u64,
                "{} {u}",
                b.name
            );
            let roster = b.store.rosters().load(d, u).await.unwrap();
            assert_eq!(roster.items.len(), rounds, "{} {u}", b.name);
            let last = b.store.userdata().last_activity(d, u).await.unwrap();
            assert_eq!(
                last.map(|l| l.at),
                Some(i64::try_from(PER_WRITER - 1).unwrap()),
                "{} {u}",
                b.name
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_write_leaves_the_others_of_its_batch() {
    for b in backends("concurrent-conflict").await {
        let service = format!("pubsub.{}", b.domain);
        let svc = service.clone();
        // Every writer creates the same node first (one wins, the rest conflict, in the same
        // batches as the others' publications), then publishes to a node of its own.
        let errors = hammer(&b, move |store, _, w, i| {
            let service = svc.clone();
            async move {
                let ps = store.pubsub();
                if i == 0 {
                    match ps.create_node(&service, "shared", "<x/>", "o@x").await {
                        Ok(()) | Err(rookery_store::StoreError::Conflict) => {}
                        Err(e) => return Err(e),
                    }
                    ps.create_node(&service, &format!("own{w}"), "<x/>", "o@x")
                        .await?;
                    return Ok(());
                }
                let item = ItemRow {
                    id: format!("i{i}"),
                    seq: i64::try_from(i).unwrap_or_default(),
                    publisher: "o@x".into(),
                    payload: None,
                    updated_at: 1,
                };
                let before = u64::try_from(i - 1).unwrap_or_default();
                ps.publish(&service, &format!("own{w}"), &item, None, before, None)
                    .await?;
                Ok(())
            }
        })
        .await;
        assert_eq!(errors, Vec::<String>::new(), "{}", b.name);
        let nodes = b.store.pubsub().nodes(&service).await.unwrap();
        assert_eq!(nodes.len(), WRITERS + 1, "{}", b.name);
        let stats = b.store.pubsub().item_stats(&service).await.unwrap();
        for (node, s) in stats {
            assert_eq!(s.count, (PER_WRITER - 1) as u64, "{} {node}", b.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_puts_to_one_roster() {
    // Many requests and puts to one account at once (on PostgreSQL they share statements:
    // see `pg_batch.rs`): each put gets a version of its own, the roster's version counts them all,
    // each item holds its last put, the requests they answer and the tombstones of their
    // contacts are gone, and a put for an account that does not exist fails alone.
    const PUTS: usize = 60;
    const CONTACTS: usize = 20;
    for b in backends("concurrent-one-roster").await {
        let d = b.domain.clone();
        b.create_account("juliet").await;
        let r = b.store.rosters();
        // Every contact's request stored twice at once (a batch may hold both).
        let mut requests = JoinSet::new();
        for c in 0..2 * CONTACTS {
            let (store, d) = (b.store.clone(), d.clone());
            requests.spawn(async move {
                let (contact, stanza) = (
                    format!("c{}@x", c % CONTACTS),
                    format!("<presence n='{c}'/>"),
                );
                store
                    .rosters()
                    .set_pending_in(&d, "juliet", &contact, &stanza)
                    .await
            });
        }
        while let Some(stored) = requests.join_next().await {
            stored.unwrap().unwrap();
        }
        assert_eq!(
            r.pending_in(&d, "juliet").await.unwrap().len(),
            CONTACTS,
            "{}",
            b.name
        );
        r.put(&d, "juliet", &item_of("c0@x", 0), Request::Keep)
            .await
            .unwrap();
        let base = r.remove(&d, "juliet", "c0@x").await.unwrap().unwrap();
        let mut tasks = JoinSet::new();
        for i in 0..PUTS {
            let (store, d) = (b.store.clone(), d.clone());
            tasks.spawn(async move {
                let contact = format!("c{}@x", i % CONTACTS);
                let ver = store
                    .rosters()
                    .put(&d, "juliet", &item_of(&contact, i), Request::Forget)
                    .await
                    .unwrap();
                (contact, i, ver)
            });
        }
        let ghost = {
            let (store, d) = (b.store.clone(), d.clone());
            tasks.spawn(async move {
                let r = store.rosters();
                let err = r.put(&d, "ghost", &item_of("c1@x", 0), Request::Keep).await;
                assert!(err.is_err(), "a put for a missing account");
                (String::new(), usize::MAX, 0)
            })
        };
        let mut puts = Vec::new();
        while let Some(done) = tasks.join_next_with_id().await {
            let (id, put) = done.unwrap();
            if id != ghost.id() {
                puts.push(put);
            }
        }
        let mut vers: Vec<i64> = puts.iter().map(|p| p.2).collect();
        vers.sort_unstable();
        let expected: Vec<i64> = (base + 1..=base + PUTS as i64).collect();
        assert_eq!(vers, expected, "{}: one version per put", b.name);
        let roster = r.load(&d, "juliet").await.unwrap();
        assert_eq!(roster.ver, base + PUTS as i64, "{}", b.name);
        assert_eq!(roster.items.len(), CONTACTS, "{}", b.name);
        for item in &roster.items {
            let last = puts
                .iter()
                .filter(|p| p.0 == item.contact)
                .max_by_key(|p| p.2)
                .unwrap();
            assert_eq!(item.ver, last.2, "{} {}", b.name, item.contact);
            assert_eq!(item.name, Some(format!("put {}", last.1)), "{}", b.name);
        }
        assert!(
            r.pending_in(&d, "juliet").await.unwrap().is_empty(),
            "{}",
            b.name
        );
        assert!(
            r.removed_since(&d, "juliet", 0).await.unwrap().is_empty(),
            "{}",
            b.name
        );
    }
}

/// An item for `contact` named after put `i`.
fn item_of(contact: &str, i: usize) -> RosterItem {
    RosterItem {
        contact: contact.into(),
        name: Some(format!("put {i}")),
        subscription: Subscription::Both,
        ..Default::default()
    }
}
