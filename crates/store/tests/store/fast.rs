//! XEP-0484 FAST tokens on every backend (see `common/mod.rs`): rotation, replay, the
//! mechanism and count of each token, the per-account bound, and the end of tokens with a password change or the account.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use crate::common::{backends, exec, run_migrations, sqlite_before};
use rookery_store::fast::{Token, Used};
use rookery_store::Credentials;

const NONE: &str = "HT-SHA-256-NONE";
const EXPR: &str = "HT-SHA-256-EXPR";

#[tokio::test]
async fn rotation_replay_bound_and_invalidation() {
    for b in backends("fast").await {
        let d = b.domain.as_str();
        b.create_account("juliet").await;
        let f = b.store.fast();
        assert_eq!(f.get(d, "juliet", "phone").await.unwrap(), None);
        f.issue(d, "juliet", "phone", b"k1", 100, EXPR, 1, 8)
            .await
            .unwrap();
        assert!(f
            .use_token(d, "juliet", "phone", Used::Current, b"k1", 5)
            .await
            .unwrap());
        f.issue(d, "juliet", "phone", b"k2", 200, NONE, 2, 8)
            .await
            .unwrap();
        let t = f.get(d, "juliet", "phone").await.unwrap().unwrap();
        // Each token keeps its mechanism and its count; the new one starts at 0.
        let token = |key: &[u8], expires, mechanism: &str, last_count| Token {
            key: key.to_vec(),
            expires,
            mechanism: Some(mechanism.to_owned()),
            last_count,
        };
        assert_eq!(t.current, token(b"k2", 200, NONE, 0), "{}", b.name);
        assert_eq!(t.previous, Some(token(b"k1", 100, EXPR, 5)));
        // A login that checked k1 while it was current, recorded after k2 took its place:
        // refused, and k2's count is not k1's.
        assert!(!f
            .use_token(d, "juliet", "phone", Used::Current, b"k1", 9)
            .await
            .unwrap());
        let t = f.get(d, "juliet", "phone").await.unwrap().unwrap();
        assert_eq!(t.current.last_count, 0, "{}", b.name);
        assert_eq!(t.previous.as_ref().map(|p| p.last_count), Some(5));
        // The previous token still works; counts must rise above its own.
        assert!(!f
            .use_token(d, "juliet", "phone", Used::Previous, b"k1", 5)
            .await
            .unwrap());
        assert!(f
            .use_token(d, "juliet", "phone", Used::Previous, b"k1", 6)
            .await
            .unwrap());
        assert!(!f
            .use_token(d, "juliet", "phone", Used::Previous, b"k1", 6)
            .await
            .unwrap());
        assert!(f
            .get(d, "juliet", "phone")
            .await
            .unwrap()
            .unwrap()
            .previous
            .is_some());
        // Using the current one (a count of its own) ends the previous one.
        assert!(f
            .use_token(d, "juliet", "phone", Used::Current, b"k2", 1)
            .await
            .unwrap());
        let t = f.get(d, "juliet", "phone").await.unwrap().unwrap();
        assert_eq!((t.previous, t.current.last_count), (None, 1));
        assert!(!f
            .use_token(d, "juliet", "phone", Used::Previous, b"k1", 7)
            .await
            .unwrap());

        // At most 3 devices: the oldest issued goes.
        for (i, dev) in ["a", "b", "c"].iter().enumerate() {
            f.issue(d, "juliet", dev, b"k", 100, NONE, 10 + i as i64, 3)
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
        f.issue(d, "juliet", "a", b"k", 100, NONE, 20, 3)
            .await
            .unwrap();
        assert!(!f.invalidate(d, "juliet", "a", b"other").await.unwrap());
        assert!(f.get(d, "juliet", "a").await.unwrap().is_some());
        assert!(f.invalidate(d, "juliet", "a", b"k").await.unwrap());
        assert_eq!(f.get(d, "juliet", "a").await.unwrap(), None);
        f.issue(d, "juliet", "a", b"k", 100, NONE, 21, 3)
            .await
            .unwrap();
        b.store.accounts().delete(d, "juliet").await.unwrap();
        assert_eq!(f.get(d, "juliet", "a").await.unwrap(), None);
    }
}

/// Migration 0034 (SQLite; 0032 is the same on PostgreSQL) on a row from before it: no
/// mechanism for either token, and the replaced token keeps the count both shared, so none
/// of its uses can be replayed.
#[tokio::test]
async fn tokens_from_before_mechanisms_keep_their_count() {
    let mut db = sqlite_before("0034").await;
    // Without foreign keys, no account is needed.
    exec(&mut db, "PRAGMA foreign_keys = OFF").await;
    exec(
        &mut db,
        "INSERT INTO fast_tokens (domain, username, device, current_key, current_expires, \
         previous_key, previous_expires, last_count, issued_at) VALUES \
         ('l', 'juliet', 'phone', x'02', 200, x'01', 100, 7, 1), \
         ('l', 'juliet', 'tablet', x'03', 200, NULL, NULL, 4, 2)",
    )
    .await;
    run_migrations(&mut db, |name| name.starts_with("0034_")).await;
    /// Device, the two mechanisms, the two counts.
    type Row = (String, Option<String>, Option<String>, i64, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT device, current_mechanism, previous_mechanism, last_count, previous_count \
         FROM fast_tokens ORDER BY device",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            ("phone".into(), None, None, 7, 7),
            ("tablet".into(), None, None, 4, 0)
        ]
    );
}
