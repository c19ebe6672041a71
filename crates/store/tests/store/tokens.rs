//! HTTP bearer tokens on every backend (see `common/mod.rs`): issue, verify, expiry,
//! revocation, and deletion with the account.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use crate::common::backends;
use rookery_store::tokens::Scope;

#[tokio::test]
async fn issue_verify_expire_revoke_cascade() {
    for b in backends("tokens").await {
        let d = b.domain.as_str();
        b.create_account("juliet").await;
        let t = b.store.tokens();
        let now = 1_000_000;
        let live = t
            .issue(d, "juliet", &[Scope::Read, Scope::Publish], now + 60)
            .await
            .unwrap();
        let old = t.issue(d, "juliet", &[Scope::Read], now - 1).await.unwrap();
        assert!(t.issue(d, "nobody", &[Scope::Read], now).await.is_err());

        let got = t.verify(&live.secret, now).await.unwrap().unwrap();
        assert_eq!(got.id, live.id, "{}", b.name);
        assert_eq!((got.domain.as_str(), got.username.as_str()), (d, "juliet"));
        assert_eq!(got.scopes, vec![Scope::Read, Scope::Publish]);
        assert!(t.verify(&old.secret, now).await.unwrap().is_none());
        assert!(t.verify("garbage", now).await.unwrap().is_none());
        assert!(t.verify(&"00".repeat(32), now).await.unwrap().is_none());
        assert_eq!(t.list(d, Some("juliet")).await.unwrap().len(), 2);
        assert_eq!(t.list(d, None).await.unwrap().len(), 2);

        assert!(t.revoke(&live.id).await.unwrap());
        assert!(!t.revoke(&live.id).await.unwrap());
        assert!(t.verify(&live.secret, now).await.unwrap().is_none());

        let again = t
            .issue(d, "juliet", &[Scope::Read], now + 60)
            .await
            .unwrap();
        b.store.delete_account(d, "juliet").await.unwrap();
        assert!(t.verify(&again.secret, now).await.unwrap().is_none());
        assert!(t.list(d, None).await.unwrap().is_empty(), "{}", b.name);
    }
}
