//! The harness that runs each store test on every backend: SQLite in a temp file always,
//! PostgreSQL when `ROOKERY_TEST_POSTGRES_URL` is set (see `scripts/pg-start.sh`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use rookery_store::{Credentials, Store};
use tempfile::TempDir;

/// The environment variable naming the PostgreSQL database for tests.
pub const POSTGRES_ENV: &str = "ROOKERY_TEST_POSTGRES_URL";

/// One backend under test.
pub struct TestBackend {
    /// "sqlite" or "postgres", for assertion messages.
    pub name: &'static str,
    /// The URL the store was opened with (to reopen it).
    pub url: String,
    /// The open store.
    pub store: Store,
    /// A domain no other test (or earlier run) uses, so tests can share one database.
    pub domain: String,
    /// Keeps the SQLite temp dir alive.
    _dir: Option<TempDir>,
}

impl TestBackend {
    /// Creates the account `username` on this backend's domain, with [`creds`].
    pub async fn create_account(&self, username: &str) {
        self.store
            .accounts()
            .create(&self.domain, username, creds())
            .await
            .unwrap();
    }
}

/// A domain unique to this process, test and call.
pub fn unique_domain(test: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{test}-{}-{nanos}-{n}.test", std::process::id())
}

/// Opens every available backend for `test`.
pub async fn backends(test: &str) -> Vec<TestBackend> {
    let dir = tempfile::tempdir().unwrap();
    // A subdirectory that does not exist yet: open() creates it.
    let path = dir.path().join("data").join("rookery.db");
    let url = format!("sqlite://{}", path.display());
    let store = Store::open(&url).await.unwrap();
    let mut out = vec![TestBackend {
        name: "sqlite",
        url,
        store,
        domain: unique_domain(test),
        _dir: Some(dir),
    }];
    match std::env::var(POSTGRES_ENV) {
        Ok(url) if !url.is_empty() => {
            let store = Store::open(&url)
                .await
                .unwrap_or_else(|e| panic!("{POSTGRES_ENV} is set but opening it failed: {e}"));
            out.push(TestBackend {
                name: "postgres",
                url,
                store,
                domain: unique_domain(test),
                _dir: None,
            });
        }
        _ => eprintln!(
            "{test}: PostgreSQL half skipped ({POSTGRES_ENV} not set; see scripts/pg-start.sh)"
        ),
    }
    out
}

/// Credentials for tests (derived once: Argon2 is deliberately slow).
pub fn creds() -> &'static Credentials {
    static C: OnceLock<Credentials> = OnceLock::new();
    C.get_or_init(|| Credentials::derive("pencil", 64).unwrap())
}

/// A second, different set of credentials.
pub fn other_creds() -> &'static Credentials {
    static C: OnceLock<Credentials> = OnceLock::new();
    C.get_or_init(|| Credentials::derive("new password", 128).unwrap())
}

/// An offline cap of `messages`, bytes unbounded.
pub fn messages(messages: u64) -> rookery_store::offline::OfflineCap {
    rookery_store::offline::OfflineCap {
        messages,
        bytes: u64::MAX,
    }
}

/// Runs on `db`, in order, the SQLite migrations whose file names `pick` selects: for tests
/// of one migration on rows from before it.
pub async fn run_migrations(db: &mut sqlx::SqliteConnection, pick: impl Fn(&str) -> bool) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        let name = f.file_name().unwrap().to_str().unwrap().to_owned();
        if pick(&name) {
            exec(db, &std::fs::read_to_string(&f).unwrap()).await;
        }
    }
}

/// An in-memory SQLite database with the migrations before `first` (a number such as
/// `"0039"`) run: the schema a migration from `first` on finds.
pub async fn sqlite_before(first: &str) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    let mut db = sqlx::SqliteConnection::connect("sqlite::memory:")
        .await
        .unwrap();
    run_migrations(&mut db, |name| name < first).await;
    db
}

/// Runs `sql` (statements separated by `;`) on `db`.
pub async fn exec(db: &mut sqlx::SqliteConnection, sql: &str) {
    sqlx::raw_sql(sql).execute(db).await.unwrap();
}
