//! The rosters store, on every backend (see `common/mod.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use crate::common::backends;
use rookery_store::rosters::{Request, RosterItem, Subscription};

fn item(contact: &str) -> RosterItem {
    RosterItem {
        contact: contact.into(),
        name: Some("Romeo".into()),
        subscription: Subscription::To,
        ask: false,
        approved: false,
        groups: vec!["Friends".into(), "Verona Ü".into()],
        ver: 0,
    }
}

#[tokio::test]
async fn put_get_load_remove_and_versions() {
    for b in backends("rosters").await {
        let d = b.domain.as_str();
        b.create_account("juliet").await;
        let r = b.store.rosters();
        assert_eq!(r.load(d, "juliet").await.unwrap().ver, 0, "{}", b.name);
        assert_eq!(r.version(d, "juliet").await.unwrap(), 0);
        assert!(r.get(d, "juliet", "romeo@x").await.unwrap().is_none());

        let v1 = r
            .put(d, "juliet", &item("romeo@x"), Request::Keep)
            .await
            .unwrap();
        let mut nurse = item("nurse@x");
        nurse.name = None;
        nurse.groups.clear();
        nurse.subscription = Subscription::None;
        nurse.ask = true;
        nurse.approved = true;
        let v2 = r.put(d, "juliet", &nurse, Request::Keep).await.unwrap();
        assert!(v2 > v1, "{}", b.name);
        let got = r.get(d, "juliet", "romeo@x").await.unwrap().unwrap();
        assert_eq!(
            got,
            RosterItem {
                ver: v1,
                ..item("romeo@x")
            },
            "{}",
            b.name
        );
        let all = r.load(d, "juliet").await.unwrap();
        assert_eq!(all.ver, v2);
        assert_eq!(all.items.len(), 2);
        assert_eq!(
            all.items[0],
            RosterItem {
                ver: v2,
                ..nurse.clone()
            },
            "{}",
            b.name
        );

        // Update in place.
        let mut romeo = item("romeo@x");
        romeo.subscription = Subscription::Both;
        romeo.groups = vec!["Lovers".into()];
        let v3 = r.put(d, "juliet", &romeo, Request::Keep).await.unwrap();
        assert_eq!(
            r.get(d, "juliet", "romeo@x").await.unwrap().unwrap(),
            RosterItem {
                ver: v3,
                ..romeo.clone()
            }
        );

        // Remove, tombstone, re-add clears the tombstone.
        assert_eq!(r.remove(d, "juliet", "nobody@x").await.unwrap(), None);
        let v4 = r.remove(d, "juliet", "nurse@x").await.unwrap().unwrap();
        assert!(v4 > v3);
        assert_eq!(r.version(d, "juliet").await.unwrap(), v4);
        assert_eq!(
            r.removed_since(d, "juliet", v3).await.unwrap(),
            vec![("nurse@x".to_string(), v4)]
        );
        assert!(r.removed_since(d, "juliet", v4).await.unwrap().is_empty());
        let all = r.load(d, "juliet").await.unwrap();
        assert_eq!(all.ver, v4);
        assert!(all.items.iter().all(|i| i.contact != "nurse@x"));
        r.put(d, "juliet", &nurse, Request::Keep).await.unwrap();
        assert!(
            r.removed_since(d, "juliet", 0).await.unwrap().is_empty(),
            "{}",
            b.name
        );

        // Another account's roster is separate.
        b.create_account("romeo").await;
        assert_eq!(r.load(d, "romeo").await.unwrap(), Default::default());

        // Deleting the account deletes its roster.
        b.store.accounts().delete(d, "juliet").await.unwrap();
        assert!(r.load(d, "juliet").await.unwrap().items.is_empty());
        assert_eq!(r.version(d, "juliet").await.unwrap(), 0);
    }
}

#[tokio::test]
async fn pending_in_requests() {
    for b in backends("pending-in").await {
        let d = b.domain.as_str();
        b.create_account("juliet").await;
        let r = b.store.rosters();
        assert!(r.pending_in(d, "juliet").await.unwrap().is_empty());
        assert!(!r.has_pending_in(d, "juliet", "romeo@x").await.unwrap());
        r.set_pending_in(d, "juliet", "romeo@x", "<presence type='subscribe'/>")
            .await
            .unwrap();
        r.set_pending_in(
            d,
            "juliet",
            "romeo@x",
            "<presence type='subscribe'><status>hi</status></presence>",
        )
        .await
        .unwrap();
        assert!(
            r.has_pending_in(d, "juliet", "romeo@x").await.unwrap(),
            "{}",
            b.name
        );
        let p = r.pending_in(d, "juliet").await.unwrap();
        assert_eq!(p.len(), 1);
        assert!(p[0].stanza.contains("hi"));
        assert_eq!(
            r.pending_in_contacts(d, "juliet").await.unwrap(),
            vec!["romeo@x".to_owned()]
        );
        assert!(r.remove_pending_in(d, "juliet", "romeo@x").await.unwrap());
        assert!(!r.remove_pending_in(d, "juliet", "romeo@x").await.unwrap());
        assert!(r.pending_in(d, "juliet").await.unwrap().is_empty());

        // A plain put leaves a request alone; the answering put forgets that contact's
        // request only, with the item at the new version.
        for from in ["romeo@x", "tybalt@x"] {
            r.set_pending_in(d, "juliet", from, "<presence type='subscribe'/>")
                .await
                .unwrap();
        }
        let item = |contact: &str, subscription| RosterItem {
            subscription,
            ..item(contact)
        };
        r.put(
            d,
            "juliet",
            &item("romeo@x", Subscription::None),
            Request::Keep,
        )
        .await
        .unwrap();
        assert!(r.has_pending_in(d, "juliet", "romeo@x").await.unwrap());
        let ver = r
            .put(
                d,
                "juliet",
                &item("romeo@x", Subscription::From),
                Request::Forget,
            )
            .await
            .unwrap();
        assert!(
            !r.has_pending_in(d, "juliet", "romeo@x").await.unwrap(),
            "{}",
            b.name
        );
        assert!(r.has_pending_in(d, "juliet", "tybalt@x").await.unwrap());
        let got = r.get(d, "juliet", "romeo@x").await.unwrap().unwrap();
        assert_eq!((got.subscription, got.ver), (Subscription::From, ver));
        assert_eq!(r.version(d, "juliet").await.unwrap(), ver);
    }
}
