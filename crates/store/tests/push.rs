//! XEP-0357 push registrations on every backend (see `common/mod.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::backends;

/// XEP-0357 registrations: enable (twice replaces the options), list, disable one node or
/// the whole service, gone with the account.
#[tokio::test]
async fn push_registrations() {
    use rookery_store::push::Registration;
    for b in backends("push").await {
        let d = b.domain.as_str();
        b.create_account("juliet").await;
        let p = b.store.push();
        let reg = |node: &str, options: &str| Registration {
            service: "push.example".into(),
            node: node.into(),
            options: options.into(),
        };
        p.enable(d, "juliet", &reg("n1", "")).await.unwrap();
        p.enable(d, "juliet", &reg("n1", "<x/>")).await.unwrap();
        p.enable(d, "juliet", &reg("n2", "")).await.unwrap();
        assert_eq!(
            p.list(d, "juliet").await.unwrap(),
            vec![reg("n1", "<x/>"), reg("n2", "")],
            "{}",
            b.name
        );
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
        p.enable(d, "juliet", &reg("n3", "")).await.unwrap();
        b.store.accounts().delete(d, "juliet").await.unwrap();
        assert!(p.list(d, "juliet").await.unwrap().is_empty());
    }
}
