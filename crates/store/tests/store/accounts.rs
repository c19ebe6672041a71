//! The accounts store, on every backend (see `common/mod.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use crate::common::{backends, creds, other_creds, unique_domain};
use rookery_sasl::{Mechanism, ScramClient, ServerSession, Step};
use rookery_store::{Backend, Store, StoreError};

#[tokio::test]
async fn create_conflict_and_credentials_round_trip() {
    for b in backends("create").await {
        let accounts = b.store.accounts();
        let d = b.domain.as_str();
        assert!(!accounts.exists(d, "juliet").await.unwrap(), "{}", b.name);
        assert_eq!(accounts.credentials(d, "juliet").await.unwrap(), None);
        accounts.create(d, "juliet", creds()).await.unwrap();
        assert!(accounts.exists(d, "juliet").await.unwrap());
        assert!(matches!(
            accounts.create(d, "juliet", other_creds()).await,
            Err(StoreError::Conflict)
        ));
        // The failed create changed nothing.
        assert_eq!(
            accounts.credentials(d, "juliet").await.unwrap().as_ref(),
            Some(creds()),
            "{}",
            b.name
        );
        // Same username on another domain is another account; names are exact matches.
        let other = format!("other.{d}");
        assert!(!accounts.exists(&other, "juliet").await.unwrap());
        accounts
            .create(&other, "juliet", other_creds())
            .await
            .unwrap();
        assert!(!accounts.exists(d, "Juliet").await.unwrap());
        assert_eq!(
            accounts
                .credentials(&other, "juliet")
                .await
                .unwrap()
                .as_ref(),
            Some(other_creds())
        );
        assert_eq!(accounts.count(d).await.unwrap(), 1);
        assert_eq!(accounts.count(&other).await.unwrap(), 1);
    }
}

#[tokio::test]
async fn set_credentials_and_delete() {
    for b in backends("set-delete").await {
        let accounts = b.store.accounts();
        let d = b.domain.as_str();
        assert!(!accounts
            .set_credentials(d, "romeo", other_creds())
            .await
            .unwrap());
        assert!(!accounts.exists(d, "romeo").await.unwrap(), "{}", b.name);
        accounts.create(d, "romeo", creds()).await.unwrap();
        assert!(accounts
            .set_credentials(d, "romeo", other_creds())
            .await
            .unwrap());
        assert_eq!(
            accounts.credentials(d, "romeo").await.unwrap().as_ref(),
            Some(other_creds()),
            "{}",
            b.name
        );
        assert!(accounts.delete(d, "romeo").await.unwrap());
        assert!(!accounts.delete(d, "romeo").await.unwrap());
        assert!(!accounts.exists(d, "romeo").await.unwrap());
        assert_eq!(accounts.credentials(d, "romeo").await.unwrap(), None);
        assert_eq!(accounts.count(d).await.unwrap(), 0);
        // The name is free again.
        accounts.create(d, "romeo", creds()).await.unwrap();
    }
}

#[tokio::test]
async fn list_is_sorted_by_code_point_and_per_domain() {
    let names = [
        "mercutio", "Zed", "benvolio", "émile", "a,b=c", "juliet", "ǆ", "0day",
    ];
    for b in backends("list").await {
        let accounts = b.store.accounts();
        let d = b.domain.as_str();
        assert_eq!(accounts.list(d).await.unwrap(), Vec::<String>::new());
        for name in names {
            accounts.create(d, name, creds()).await.unwrap();
        }
        accounts
            .create(&format!("x.{d}"), "tybalt", creds())
            .await
            .unwrap();
        let mut expected: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        expected.sort();
        assert_eq!(accounts.list(d).await.unwrap(), expected, "{}", b.name);
        assert_eq!(accounts.count(d).await.unwrap(), names.len() as u64);
    }
}

#[tokio::test]
async fn persists_across_reopen() {
    for b in backends("reopen").await {
        let d = b.domain.as_str();
        b.create_account("nurse").await;
        b.store.close().await;
        // Reopening runs the migrations again: they are already applied.
        let store = Store::open(&b.url).await.unwrap();
        assert_eq!(
            store
                .accounts()
                .credentials(d, "nurse")
                .await
                .unwrap()
                .as_ref(),
            Some(creds()),
            "{}",
            b.name
        );
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates() {
    for b in backends("concurrent").await {
        let mut tasks = Vec::new();
        // 16 different accounts and 8 racing for the same name.
        for i in 0..24 {
            let store = b.store.clone();
            let domain = b.domain.clone();
            tasks.push(tokio::spawn(async move {
                let name = if i < 16 {
                    format!("user{i:02}")
                } else {
                    "contested".into()
                };
                store.accounts().create(&domain, &name, creds()).await
            }));
        }
        let mut ok = 0;
        let mut conflicts = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(()) => ok += 1,
                Err(StoreError::Conflict) => conflicts += 1,
                Err(e) => panic!("{}: unexpected error {e}", b.name),
            }
        }
        assert_eq!((ok, conflicts), (17, 7), "{}", b.name);
        assert_eq!(b.store.accounts().count(&b.domain).await.unwrap(), 17);
    }
}

#[tokio::test]
async fn stored_credentials_authenticate_with_sasl() {
    for b in backends("sasl").await {
        let d = b.domain.as_str();
        b.create_account("juliet").await;
        for mech in [
            Mechanism::ScramSha1,
            Mechanism::ScramSha256,
            Mechanism::ScramSha512,
        ] {
            let mut client = ScramClient::new(mech, "juliet", "pencil", None);
            let (mut server, step) =
                ServerSession::start(mech, None, false, &client.client_first());
            let Step::NeedCredentials { username } = step else {
                panic!("{step:?}")
            };
            let stored = b.store.accounts().credentials(d, &username).await.unwrap();
            let Step::Challenge(ch) = server.provide_credentials(stored.as_ref()) else {
                panic!("expected challenge")
            };
            let step = server.respond(&client.handle_challenge(&ch).unwrap());
            let Step::Success {
                additional_data: Some(v),
                ..
            } = step
            else {
                panic!("{}: {mech}: {step:?}", b.name)
            };
            client.verify_success(&v).unwrap();
        }
    }
}

#[tokio::test]
async fn ping_and_backend() {
    for b in backends("ping").await {
        b.store.ping().await.unwrap();
        let expected = if b.name == "sqlite" {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        assert_eq!(b.store.backend(), expected);
    }
}

#[tokio::test]
async fn sqlite_in_memory() {
    let store = Store::open("sqlite::memory:").await.unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    let d = unique_domain("memory");
    store
        .accounts()
        .create(&d, "juliet", creds())
        .await
        .unwrap();
    // Every call sees the same database (a second connection would see an empty one).
    for _ in 0..3 {
        assert!(store.accounts().exists(&d, "juliet").await.unwrap());
    }
    store.close().await;
}

#[tokio::test]
async fn sqlite_file_is_wal_and_rejects_corrupt_rows() {
    use sqlx::Connection as _;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("r.db").display());
    let store = Store::open(&url).await.unwrap();
    store
        .accounts()
        .create("x.test", "juliet", creds())
        .await
        .unwrap();

    let mut raw = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    sqlx::query("UPDATE accounts SET scram_sha256_iterations = 5000000000")
        .execute(&mut raw)
        .await
        .unwrap();
    raw.close().await.unwrap();
    assert!(matches!(
        store.accounts().credentials("x.test", "juliet").await,
        Err(StoreError::Corrupt(_))
    ));
    store.close().await;
}

#[tokio::test]
async fn unsupported_url() {
    assert!(matches!(
        Store::open("mysql://root:secret@localhost/db").await,
        Err(StoreError::UnsupportedUrl(s)) if s == "mysql"
    ));
    let err = Store::open("mysql://root:secret@localhost/db")
        .await
        .unwrap_err();
    assert!(!err.to_string().contains("secret"));
}
