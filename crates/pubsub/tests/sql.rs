//! The engine on the SQL store, on SQLite and (with `ROOKERY_TEST_POSTGRES_URL`, see
//! `scripts/pg-start.sh`) PostgreSQL: state and items survive closing and reopening the store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;

use rookery_jid::{BareJid, Jid};
use rookery_pubsub::broadcast::Discard;
use rookery_pubsub::engine::{ItemsQuery, PublishRequest};
use rookery_pubsub::form::{Field, Form};
use rookery_pubsub::model::SubState;
use rookery_pubsub::policy::NoRosters;
use rookery_pubsub::{ns, Engine, Profile, SqlStore};
use rookery_store::Store;
use rookery_xml::Element;

async fn urls() -> (Vec<String>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut v = vec![format!("sqlite://{}", dir.path().join("ps.db").display())];
    match std::env::var("ROOKERY_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => v.push(u),
        _ => eprintln!("PostgreSQL half skipped (ROOKERY_TEST_POSTGRES_URL not set)"),
    }
    (v, dir)
}

fn engine(store: &Store) -> Engine {
    Engine::new(
        Profile::service("example.org"),
        Arc::new(SqlStore::new(store.clone())),
        Arc::new(Discard),
        Arc::new(NoRosters),
    )
}

fn unique_service() -> BareJid {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    BareJid::parse(&format!("pubsub{n}.example.org")).unwrap()
}

#[tokio::test]
async fn nodes_subscriptions_and_items_survive_reopen() {
    let (urls, _dir) = urls().await;
    for url in urls {
        let svc = unique_service();
        let alice = Jid::parse("alice@example.org/a").unwrap();
        let bob = Jid::parse("bob@example.org").unwrap();
        {
            let store = Store::open(&url).await.unwrap();
            let e = engine(&store);
            let mut cfg = Form::new("submit", ns::NODE_CONFIG);
            cfg.push(Field::new("pubsub#max_items", "text-single", "2"));
            cfg.push(Field::new("pubsub#title", "text-single", "Ünïcode <title>"));
            e.create(&svc, &alice, Some("n"), Some(&cfg)).await.unwrap();
            e.subscribe(&svc, &bob, "n", &bob, None).await.unwrap();
            for i in 0..3 {
                let payload = Element::new("entry", "urn:test")
                    .with_attr("n", i.to_string())
                    .with_text("a & b");
                e.publish(
                    &svc,
                    &alice,
                    PublishRequest {
                        node: Some("n".into()),
                        has_item: true,
                        item_id: Some(format!("i{i}")),
                        payload: Some(payload),
                        options: None,
                    },
                )
                .await
                .unwrap();
            }
            store.close().await;
        }
        let store = Store::open(&url).await.unwrap();
        let e = engine(&store);
        let c = e.configuration(&svc, &alice, Some("n")).await.unwrap();
        assert_eq!(c.title, "Ünïcode <title>", "{url}");
        let subs = e.subscriptions_of(&svc, &bob, None).await.unwrap();
        assert_eq!(subs.len(), 1);
        assert_eq!(subs[0].state, SubState::Subscribed);
        let items = e
            .items(&svc, &bob, "n", &ItemsQuery::default())
            .await
            .unwrap()
            .items;
        let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["i2", "i1"]);
        assert_eq!(
            items[0].payload.as_ref().unwrap().to_string(),
            "<entry xmlns=\"urn:test\" n=\"2\">a &amp; b</entry>"
        );
        e.delete(&svc, &alice, Some("n"), None).await.unwrap();
        store.close().await;
        let store = Store::open(&url).await.unwrap();
        assert!(engine(&store)
            .list_nodes(&svc, &alice)
            .await
            .unwrap()
            .is_empty());
        store.close().await;
    }
}
