//! XEP-0357 push registrations on every backend (see `common/mod.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use crate::common::backends;

/// XEP-0357 registrations: enable (twice replaces the options and the resource), list, all,
/// disable one node or the whole service; the message count (counted on, started again);
/// both gone with the account.
#[tokio::test]
async fn push_registrations() {
    use rookery_store::push::Registration;
    for b in backends("push").await {
        let d = b.domain.as_str();
        b.create_account("juliet").await;
        let p = b.store.push();
        let reg = |node: &str, options: &str, resource: &str| Registration {
            service: "push.example".into(),
            node: node.into(),
            options: options.into(),
            resource: resource.into(),
        };
        p.enable(d, "juliet", &reg("n1", "", "old")).await.unwrap();
        p.enable(d, "juliet", &reg("n1", "<x/>", "phone"))
            .await
            .unwrap();
        p.enable(d, "juliet", &reg("n2", "", "")).await.unwrap();
        let both = vec![reg("n1", "<x/>", "phone"), reg("n2", "", "")];
        assert_eq!(p.list(d, "juliet").await.unwrap(), both, "{}", b.name);
        let all: Vec<_> = p
            .all()
            .await
            .unwrap()
            .into_iter()
            .filter(|(domain, user, _)| domain == d && user == "juliet")
            .map(|(_, _, r)| r)
            .collect();
        assert_eq!(all, both, "{}", b.name);
        assert_eq!(
            p.disable(d, "juliet", "push.example", Some("n1"))
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            p.disable(d, "juliet", "push.example", None).await.unwrap(),
            1
        );
        p.enable(d, "juliet", &reg("n3", "", "")).await.unwrap();
        assert_eq!(p.count_one(d, "juliet").await.unwrap(), 1, "{}", b.name);
        assert_eq!(p.count_one(d, "juliet").await.unwrap(), 2, "{}", b.name);
        p.reset_count(d, "juliet").await.unwrap();
        p.reset_count(d, "juliet").await.unwrap();
        assert_eq!(p.count_one(d, "juliet").await.unwrap(), 1, "{}", b.name);
        b.store.accounts().delete(d, "juliet").await.unwrap();
        assert!(p.list(d, "juliet").await.unwrap().is_empty());
        b.create_account("juliet").await;
        assert_eq!(p.count_one(d, "juliet").await.unwrap(), 1, "{}", b.name);
    }
}
