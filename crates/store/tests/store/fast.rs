//! XEP-0484 FAST tokens on every backend (see `common/mod.rs`): rotation, replay, the
//! per-account bound, and the end of tokens with a password change or the account.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use crate::common::backends;
use rookery_store::fast::Used;
use rookery_store::Credentials;

#[tokio::test]
async fn rotation_replay_bound_and_invalidation() {
    for b in backends("fast").await {
        let d = b.domain.as_str();
        b.create_account("juliet").await;
        let f = b.store.fast();
        assert_eq!(f.get(d, "juliet", "phone").await.unwrap(), None);
        f.issue(d, "juliet", "phone", b"k1", 100, 1, 8)
            .await
            .unwrap();
        f.issue(d, "juliet", "phone", b"k2", 200, 2, 8)
            .await
            .unwrap();
        let t = f.get(d, "juliet", "phone").await.unwrap().unwrap();
        assert_eq!(t.current_key, b"k2", "{}", b.name);
        assert_eq!(t.previous, Some((b"k1".to_vec(), 100)));
        // The previous token still works; counts must rise.
        assert!(f
            .use_token(d, "juliet", "phone", Used::Previous, 1)
            .await
            .unwrap());
        assert!(!f
            .use_token(d, "juliet", "phone", Used::Previous, 1)
            .await
            .unwrap());
        assert!(f
            .get(d, "juliet", "phone")
            .await
            .unwrap()
            .unwrap()
            .previous
            .is_some());
        // Using the current one ends the previous one.
        assert!(f
            .use_token(d, "juliet", "phone", Used::Current, 2)
            .await
            .unwrap());
        let t = f.get(d, "juliet", "phone").await.unwrap().unwrap();
        assert_eq!((t.previous, t.last_count), (None, 2));

        // At most 3 devices: the oldest issued goes.
        for (i, dev) in ["a", "b", "c"].iter().enumerate() {
            f.issue(d, "juliet", dev, b"k", 100, 10 + i as i64, 3)
                .await
                .unwrap();
        }
        assert_eq!(
            f.get(d, "juliet", "phone").await.unwrap(),
            None,
            "{}",
            b.name
        );
        assert!(f.get(d, "juliet", "a").await.unwrap().is_some());

        // A password change ends every token; so does deleting the account.
        let creds = Credentials::derive("new", 64).unwrap();
        b.store
            .accounts()
            .set_credentials(d, "juliet", &creds)
            .await
            .unwrap();
        assert_eq!(f.get(d, "juliet", "a").await.unwrap(), None, "{}", b.name);
        f.issue(d, "juliet", "a", b"k", 100, 20, 3).await.unwrap();
        f.invalidate(d, "juliet", "a").await.unwrap();
        assert_eq!(f.get(d, "juliet", "a").await.unwrap(), None);
        f.issue(d, "juliet", "a", b"k", 100, 21, 3).await.unwrap();
        b.store.accounts().delete(d, "juliet").await.unwrap();
        assert_eq!(f.get(d, "juliet", "a").await.unwrap(), None);
    }
}
