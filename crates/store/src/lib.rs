//! Persistent storage for Rookery: accounts now; rosters, offline messages and pubsub
//! later, on SQLite (the default, zero setup) or PostgreSQL (for operators who already run
//! one, or want several server nodes on one database).
//!
//! # Why one code path for two backends
//! ejabberd's backend matrix shows the cost of a separate implementation per database:
//! features and bugs drift apart. Here every query is written once, in the SQL both
//! databases accept (`$1` placeholders, `ON CONFLICT`, `COUNT(*)`), and run through a small
//! enum dispatch (the private `with_pool!` macro) that instantiates it for the native sqlx driver
//! of each backend. Native drivers (rather than sqlx's `Any`) keep full connection options
//! (WAL, `synchronous`, busy timeout) and native types. Only the DDL differs, so migrations
//! come in two embedded sets, `migrations/sqlite/` and `migrations/postgres/`, applied by
//! [`Store::open`].
//!
//! # Layout
//! - `lib.rs`: [`Store`] (opening, migrations, backend choice) and [`StoreError`].
//! - `db.rs` (private): the pool enum and the `with_pool!` (reads) and `write_tx!` (writes)
//!   dispatch macros.
//! - `writer.rs` (private): the SQLite writer, one connection that group-commits every write.
//! - `last_queue.rs` (private): last-activity writes, coalesced per account and batched.
//! - [`accounts`]: [`Accounts`], one account per (domain, username), with SASL verifiers.
//! - [`rosters`]: [`Rosters`], roster items, versions and pending subscription requests.
//! - [`blocking`]: [`Blocking`], XEP-0191 block lists.
//! - [`offline`]: [`Offline`], XEP-0160 offline messages with a per-account cap.
//! - [`userdata`]: [`UserData`], vCards, private XML and last activity.
//! - [`pubsub`]: [`Pubsub`], pubsub nodes, affiliations, subscriptions and items of every
//!   service (the pubsub component and PEP).
//! - [`mam`]: [`Mam`], message archives (XEP-0313) and archiving preferences.
//! - [`page`]: [`page::PageLimit`], pages bounded in rows and bytes (pubsub items, archives).
//! - [`muc`]: [`Muc`], persistent multi-user chat rooms and their affiliations.
//! - [`tokens`]: [`Tokens`], bearer tokens of the public HTTP face (hashed, scoped, expiring).
//! - [`fast`]: [`Fast`], XEP-0484 FAST tokens per account and device.
//! - [`push`]: [`Push`], XEP-0357 push registrations per account.
//!
//! A later concern gets its own module the same way: `rosters.rs` with a `Rosters<'_>`
//! handle returned by `Store::rosters()`, its tables in `migrations/{sqlite,postgres}/
//! 000N_rosters.sql` (one file per backend, same number), its tests in `tests/` running on
//! both backends through the shared harness. Tables of per-account data reference
//! `accounts (domain, username)` with `ON DELETE CASCADE`, so deleting an account deletes
//! its data.
//!
//! # Durability and concurrency
//! A write that returned `Ok` is committed: every write method is one transaction, and SQLite
//! runs with `synchronous = FULL` (see [`Store::open`]). On SQLite the writes of every task
//! go through one writer connection that commits what is queued together (group commit, see
//! `writer.rs`), so concurrent writers neither fail with "database is locked" nor pay one
//! fsync each; reads run on a pool beside it. PostgreSQL runs each write in a transaction of
//! its own on its pool.

pub mod accounts;
pub mod blocking;
mod db;
pub mod fast;
mod last_queue;
pub mod mam;
pub mod muc;
pub mod offline;
pub mod page;
mod pg_batch;
pub mod pubsub;
pub mod push;
pub mod rosters;
pub mod tokens;
pub mod userdata;
pub mod websub;
mod writer;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub use accounts::Accounts;
pub use blocking::Blocking;
pub use fast::Fast;
pub use mam::Mam;
pub use muc::Muc;
pub use offline::Offline;
pub use pubsub::Pubsub;
pub use push::Push;
pub use rookery_sasl::{Credentials, ScramKeys};
pub use rosters::Rosters;
pub use tokens::Tokens;
pub use userdata::UserData;
pub use websub::WebSub;

use db::Pool;
use last_queue::LastActivityQueue;
use writer::Writer;

/// Embedded migrations for SQLite.
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
/// Embedded migrations for PostgreSQL.
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// How long a SQLite connection waits for another writer's lock before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Read connections of a SQLite file store (WAL: readers never wait for the writer).
const SQLITE_READ_CONNECTIONS: u32 = 4;

/// The writer connection's page cache, in KiB (SQLite's default is 2 MiB). A transaction
/// whose dirty pages do not fit spills them to the WAL before its commit and reads evicted
/// pages back: the archiver's batches (up to a second of messages, rows of every account that
/// wrote) did both, a sixth of archiving's CPU (docs/performance.md, "Archiving cost"). Not
/// more: the cache stays full for the process's life (16 MiB, which would hold a second's
/// batch at 2,000 messages/s, took `tests/test_memory.py`'s peak RSS past its bound).
const SQLITE_WRITER_CACHE_KIB: u32 = 4 * 1024;

/// The WAL's length in pages past which a commit copies its pages into the database file
/// (SQLite's `wal_autocheckpoint`, default 1,000). A page that several commits changed in
/// between is copied once; at the default, an archive batch (about 1,100 pages) had the
/// commit after it checkpoint every time. The WAL file grows to about 16 MiB between
/// checkpoints.
const SQLITE_WAL_CHECKPOINT_PAGES: u32 = 4096;
/// Connections in a PostgreSQL pool.
const POSTGRES_MAX_CONNECTIONS: u32 = 10;
/// A PostgreSQL connection idle for this long is tested (a round trip) before it is used
/// again: one the server or the network dropped meanwhile is replaced instead of failing
/// the query. sqlx tests every connection on every checkout by default — a round trip per
/// query on top of the query's own, for connections that were in use a moment before.
const POSTGRES_TEST_AFTER_IDLE: Duration = Duration::from_secs(10);

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The record already exists (for example an account with that name).
    #[error("already exists")]
    Conflict,
    /// The database failed or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying the embedded migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value is not what this version of Rookery writes.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The URL names no supported backend (only its scheme is kept, never credentials).
    #[error("unsupported database url scheme {0:?}: use sqlite:// or postgres://")]
    UnsupportedUrl(String),
    /// The database's schema is from another version of Rookery and the caller asked not to
    /// migrate it ([`Migrations::RequireCurrent`]).
    #[error("{0}")]
    OtherVersion(String),
    /// Creating the directory of a SQLite database file, or the writer's thread, failed.
    #[error("cannot set up the database: {0}")]
    Io(#[from] std::io::Error),
    /// The write would take what its owner stores past the owner's byte budget (a PEP
    /// account's items, see [`pubsub::Pubsub::publish`]); nothing of it is stored.
    #[error("over the storage budget")]
    OverBudget,
    /// The write ran but its transaction was not committed (the commit failed, or the store
    /// was closed first); nothing of it is stored.
    #[error("write not committed: {0}")]
    NotCommitted(String),
}

/// The database behind a [`Store`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Backend {
    /// SQLite, in a file or in memory.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Backend {
    /// A short lower-case name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Whether opening a store may change its schema.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Migrations {
    /// Apply the migrations the database lacks (the server at start, `rookery migrate`).
    Apply,
    /// Create the schema of an empty database, but refuse, without changing it, a database
    /// whose schema another version of Rookery wrote: older (migrations pending) or newer
    /// (migrations this binary does not know). For tools that should not upgrade a database
    /// behind the operator's back (`rookery user`).
    RequireCurrent,
}

/// Checks the migrations applied to a database (`None`: no migration table yet) against the
/// embedded ones, for [`Migrations::RequireCurrent`].
fn require_current(migrator: &Migrator, applied: Option<Vec<i64>>) -> Result<(), StoreError> {
    let applied = applied.unwrap_or_default();
    if applied.is_empty() {
        return Ok(());
    }
    let known: Vec<i64> = migrator.iter().map(|m| m.version).collect();
    if let Some(v) = applied.iter().find(|v| !known.contains(v)) {
        return Err(StoreError::OtherVersion(format!(
            "the database has schema migration {v}, which this version of rookery does not \
             know: it was written by a newer version; use that version"
        )));
    }
    let pending: Vec<String> = known
        .iter()
        .filter(|v| !applied.contains(v))
        .map(i64::to_string)
        .collect();
    if !pending.is_empty() {
        return Err(StoreError::OtherVersion(format!(
            "the database was created by an older version of rookery (schema migrations {} \
             pending); back it up, then run `rookery migrate` (or start the server, which \
             migrates at start)",
            pending.join(", ")
        )));
    }
    Ok(())
}

/// A handle to the database: cheap to clone (the pool is shared), safe to use from many
/// tasks at once.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    /// Last activities recorded and not written yet.
    last: Arc<LastActivityQueue>,
    /// Wakes the WebSub delivery worker after a publication wrote outbox rows.
    websub: Arc<websub::Signal>,
    /// How account archive positions become stanza-ids on SQLite, read at the first use.
    numbering: Arc<tokio::sync::OnceCell<mam::Numbering>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only the backend: connection options can hold a password.
        f.debug_struct("Store")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (and migrates) the database at `url`:
    ///
    /// - `sqlite://path/to/file.db` (relative to the working directory) or
    ///   `sqlite:///absolute/path.db`: the file and its directory are created if missing.
    /// - `sqlite::memory:`: a private in-memory database, for tests (one connection, gone
    ///   when the store is closed or dropped).
    /// - `postgres://user:password@host:port/database` (or `postgresql://`).
    ///
    /// SQLite runs with WAL journaling, foreign keys on, a 5 s busy timeout and
    /// `synchronous = FULL`. Under WAL, `NORMAL` only syncs at checkpoints: a transaction
    /// that returned could be lost on power failure or an OS crash (never on a process
    /// crash). Rookery tells a client its roster change, registration or offline message is
    /// stored once the call returns, so it needs `FULL`: one fsync of the WAL per commit.
    /// The store is off the message-routing hot path, so that cost is not on every stanza.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        Self::open_with(url, Migrations::Apply).await
    }

    /// Opens the database at `url` like [`Store::open`], migrating it only as `migrations`
    /// allows.
    pub async fn open_with(url: &str, migrations: Migrations) -> Result<Store, StoreError> {
        let scheme = url.split(':').next().unwrap_or_default();
        let pool = match scheme {
            "sqlite" => open_sqlite(url, migrations).await?,
            "postgres" | "postgresql" => {
                let pool = open_postgres(url).await?;
                if migrations == Migrations::RequireCurrent {
                    let exists: bool =
                        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                            .fetch_one(&pool)
                            .await?;
                    let applied = match exists {
                        true => Some(
                            sqlx::query_scalar("SELECT version FROM _sqlx_migrations")
                                .fetch_all(&pool)
                                .await?,
                        ),
                        false => None,
                    };
                    require_current(&POSTGRES_MIGRATIONS, applied)?;
                }
                POSTGRES_MIGRATIONS.run(&pool).await?;
                Pool::Postgres {
                    roster_puts: pg_batch::Batcher::spawn(pool.clone()),
                    pending_in: pg_batch::Batcher::spawn(pool.clone()),
                    pool,
                }
            }
            other => return Err(StoreError::UnsupportedUrl(other.to_owned())),
        };
        let store = Store {
            pool,
            last: Arc::default(),
            websub: Arc::default(),
            numbering: Arc::default(),
        };
        tracing::info!(backend = store.backend().name(), "store opened");
        Ok(store)
    }

    /// Which database this store uses.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite { .. } => Backend::Sqlite,
            Pool::Postgres { .. } => Backend::Postgres,
        }
    }

    /// The accounts of every hosted domain.
    pub fn accounts(&self) -> Accounts<'_> {
        Accounts::new(self)
    }

    /// Rosters, subscription states and pending subscription requests (RFC 6121).
    pub fn rosters(&self) -> Rosters<'_> {
        Rosters::new(self)
    }

    /// XEP-0191 block lists.
    pub fn blocking(&self) -> Blocking<'_> {
        Blocking::new(self)
    }

    /// XEP-0484 FAST tokens.
    pub fn fast(&self) -> Fast<'_> {
        Fast::new(self)
    }

    /// XEP-0357 push registrations.
    pub fn push(&self) -> Push<'_> {
        Push::new(self)
    }

    /// XEP-0160 offline messages.
    pub fn offline(&self) -> Offline<'_> {
        Offline::new(self)
    }

    /// vCards, private XML and last activity.
    pub fn userdata(&self) -> UserData<'_> {
        UserData::new(self)
    }

    /// Publish-subscribe nodes, affiliations, subscriptions and items (XEP-0060/0163).
    pub fn pubsub(&self) -> Pubsub<'_> {
        Pubsub::new(self)
    }

    /// WebSub subscriptions and the webhook delivery outbox.
    pub fn websub(&self) -> WebSub<'_> {
        WebSub::new(self)
    }

    /// Message archives and archiving preferences of accounts (XEP-0313).
    pub fn mam(&self) -> Mam<'_> {
        Mam::new(self)
    }

    /// Persistent multi-user chat rooms and their affiliations (XEP-0045).
    pub fn muc(&self) -> Muc<'_> {
        Muc::new(self)
    }

    /// Bearer tokens of the public HTTP face.
    pub fn tokens(&self) -> Tokens<'_> {
        Tokens::new(self)
    }

    /// Deletes an account and everything stored for it. Every way of removing an account
    /// goes through here (in-band, XEP-0077 §3.2, and `rookery user delete`), so they leave
    /// the same nothing behind: the account row and, by `ON DELETE CASCADE`, its roster,
    /// pending requests, block list, offline messages, vCard, private XML, last activity,
    /// message archive, archiving preferences and HTTP tokens;
    /// and its PEP nodes (the pubsub service named by its bare JID) with their items,
    /// affiliations and subscriptions — in one transaction: a crash or an error in between
    /// leaves the account whole, to be removed again, never an account gone with its PEP
    /// data (avatar, OMEMO keys) left for whoever registers the name next. `false` if there
    /// was no such account (leftover PEP nodes are deleted all the same).
    pub async fn delete_account(&self, domain: &str, username: &str) -> Result<bool, StoreError> {
        self.last.forget(domain, username);
        let (domain, username) = (domain.to_owned(), username.to_owned());
        let service = format!("{username}@{domain}");
        let deleted = db::write_tx!(self, conn => {
            let n = sqlx::query("DELETE FROM accounts WHERE domain = $1 AND username = $2")
                .bind(domain.as_str())
                .bind(username.as_str())
                .execute(&mut *conn)
                .await?
                .rows_affected();
            sqlx::query("DELETE FROM pubsub_nodes WHERE service = $1")
                .bind(service.as_str())
                .execute(&mut *conn)
                .await?;
            n
        });
        Ok(deleted > 0)
    }

    /// Checks that the database answers (for health endpoints).
    pub async fn ping(&self) -> Result<(), StoreError> {
        db::with_pool!(self, pool => {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    /// Writes the last activities recorded so far, then closes every connection; waits for
    /// those in use to be returned (a write batch being committed finishes first). Other
    /// clones of this store fail afterwards.
    pub async fn close(&self) {
        self.last.settle().await;
        match &self.pool {
            Pool::Sqlite { read, writer } => {
                writer.close().await;
                read.close().await;
            }
            Pool::Postgres { pool, .. } => pool.close().await,
        }
    }
}

/// Opens a SQLite store with Rookery's settings: the writer connection (which applies the
/// migrations) and the read pool.
async fn open_sqlite(url: &str, migrations: Migrations) -> Result<Pool, StoreError> {
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let mut options = SqliteConnectOptions::from_str(url)?
        .foreign_keys(true)
        .busy_timeout(SQLITE_BUSY_TIMEOUT)
        .synchronous(SqliteSynchronous::Full)
        // Statement journals (a statement's undo log inside a transaction, written for each
        // multi-row statement that may fail on a constraint midway) and sorts stay in
        // memory: on disk the archive's inserts paid a write system call per page they
        // touched (they keep none now, see mam.rs). They are bounded by one statement.
        .pragma("temp_store", "memory");
    if !in_memory {
        options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        if let Some(dir) = options.get_filename().parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
    }
    // The writer's pool: exactly one connection, kept (its statement cache with it).
    let write = SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(
            options
                .clone()
                .pragma("cache_size", format!("-{SQLITE_WRITER_CACHE_KIB}"))
                .pragma(
                    "wal_autocheckpoint",
                    SQLITE_WAL_CHECKPOINT_PAGES.to_string(),
                ),
        )
        .await?;
    if migrations == Migrations::RequireCurrent {
        let exists: bool = sqlx::query_scalar(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' \
             AND name = '_sqlx_migrations'",
        )
        .fetch_one(&write)
        .await?;
        let applied = match exists {
            true => Some(
                sqlx::query_scalar("SELECT version FROM _sqlx_migrations")
                    .fetch_all(&write)
                    .await?,
            ),
            false => None,
        };
        require_current(&SQLITE_MIGRATIONS, applied)?;
    }
    SQLITE_MIGRATIONS.run(&write).await?;
    let read = if in_memory {
        // Each connection to ":memory:" would be its own database: readers share the one.
        write.clone()
    } else {
        // `query_only`: a write that bypassed the writer fails loudly instead of racing it.
        // No test at checkout (sqlx's default sends a ping through the connection's thread
        // and waits for it, each read): the file in this process is not lost between uses.
        SqlitePoolOptions::new()
            .max_connections(SQLITE_READ_CONNECTIONS)
            .test_before_acquire(false)
            .connect_with(options.pragma("query_only", "ON"))
            .await?
    };
    Ok(Pool::Sqlite {
        read,
        writer: Writer::spawn(write)?,
    })
}

/// Opens a PostgreSQL pool.
async fn open_postgres(url: &str) -> Result<sqlx::PgPool, StoreError> {
    let options = PgConnectOptions::from_str(url)?;
    Ok(PgPoolOptions::new()
        .max_connections(POSTGRES_MAX_CONNECTIONS)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= POSTGRES_TEST_AFTER_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .connect_with(options)
        .await?)
}

/// Seconds since the Unix epoch, for `created_at` columns (portable across backends).
pub(crate) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod migration_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_a_database_at_this_schema_or_an_empty_one_is_current() {
        let known: Vec<i64> = SQLITE_MIGRATIONS.iter().map(|m| m.version).collect();
        assert!(require_current(&SQLITE_MIGRATIONS, None).is_ok());
        assert!(require_current(&SQLITE_MIGRATIONS, Some(Vec::new())).is_ok());
        assert!(require_current(&SQLITE_MIGRATIONS, Some(known.clone())).is_ok());
        let older = known.get(..known.len() - 1).unwrap().to_vec();
        let e = require_current(&SQLITE_MIGRATIONS, Some(older)).unwrap_err();
        assert!(e.to_string().contains("older version"), "{e}");
        let mut newer = known;
        newer.push(99_999);
        let e = require_current(&SQLITE_MIGRATIONS, Some(newer)).unwrap_err();
        assert!(e.to_string().contains("newer version"), "{e}");
    }
}
