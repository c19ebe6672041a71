//! The backend dispatch: one pool per backend behind an enum, and two macros that expand a
//! query body once per native driver, so each query is written once — [`with_pool!`] for
//! reads, [`write_tx!`] for writes; with them, [`execute`] and [`execute_each`] for the
//! commonest write shape (text parameters, rows changed).

use crate::pg_batch::Batcher;
use crate::writer::Writer;

/// The connections of one of the supported backends.
#[derive(Clone)]
pub(crate) enum Pool {
    /// SQLite (file or memory): readers on a pool, every write through the one writer
    /// (see `writer.rs`).
    Sqlite {
        /// Read connections (`query_only` for a file; the writer's own pool in memory).
        read: sqlx::SqlitePool,
        /// The queue to the writer connection.
        writer: Writer,
    },
    /// PostgreSQL: reads and writes on one pool (it runs concurrent writers itself).
    Postgres {
        /// Every connection.
        pool: sqlx::PgPool,
        /// Roster puts, many to a statement (see `pg_batch.rs`).
        roster_puts: Batcher<crate::rosters::Put>,
        /// Stored inbound subscription requests, many to a statement.
        pending_in: Batcher<crate::rosters::NewRequest>,
    },
}

/// Runs the read `$body` with `$pool` bound to the store's native read pool (`&SqlitePool`
/// or `&PgPool`).
///
/// The body is compiled once per backend, so it must only use SQL and Rust types both
/// drivers accept: `$N` placeholders, `i64`, `String`/`&str`, `Vec<u8>`/`&[u8]`, `bool`.
///
/// ```text
/// let n: i64 = with_pool!(store, pool => {
///     sqlx::query_scalar("SELECT COUNT(*) FROM accounts").fetch_one(pool).await?
/// });
/// ```
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            $crate::db::Pool::Sqlite { read: $pool, .. } => $body,
            $crate::db::Pool::Postgres { pool: $pool, .. } => $body,
        }
    };
}

/// Runs the write `$body` in a transaction with `$conn` bound to its connection
/// (`&mut SqliteConnection` or `&mut PgConnection`; pass `&mut *$conn` to queries) and
/// evaluates to its value once committed, or returns the error from the enclosing function
/// (nothing of it is kept).
///
/// On SQLite the body runs on the writer connection in the next group commit, so it is a
/// `'static` future that may run more than once (a batch is run again without a job that
/// failed): move owned, `Clone` copies of borrowed parameters in (`let d = d.to_owned();`)
/// and do nothing in it but SQL.
/// On PostgreSQL it runs in a transaction of its own on the pool. Same body, same rules as
/// [`with_pool!`].
macro_rules! write_tx {
    ($store:expr, $conn:ident => $body:expr) => {
        match &$store.pool {
            $crate::db::Pool::Sqlite { writer, .. } => {
                writer
                    .run(move |$conn: &mut sqlx::SqliteConnection| {
                        Box::pin(async move { Ok::<_, $crate::StoreError>($body) })
                    })
                    .await?
            }
            $crate::db::Pool::Postgres { pool, .. } => {
                let mut tx = pool.begin().await?;
                let value = {
                    let $conn: &mut sqlx::PgConnection = &mut tx;
                    async move { Ok::<_, $crate::StoreError>($body) }.await?
                };
                tx.commit().await?;
                value
            }
        }
    };
}

/// Runs the write `$body`, which is a single statement on PostgreSQL (atomic by itself) and
/// evaluates to its value once committed, as [`write_tx!`] does.
///
/// On SQLite it is [`write_tx!`]: the body runs in the writer's next group commit (and may be
/// several statements sent in one call, which that transaction makes atomic). On PostgreSQL
/// it runs on a pooled connection without `BEGIN`/`COMMIT`: a write that is one statement
/// then costs one round trip instead of three, which under many small writes (a roster set-up
/// of 100,000 subscriptions is 500,000 of them) is most of their cost.
macro_rules! write_one {
    ($store:expr, $conn:ident => $body:expr) => {
        match &$store.pool {
            $crate::db::Pool::Sqlite { .. } => $crate::db::write_tx!($store, $conn => $body),
            $crate::db::Pool::Postgres { pool, .. } => {
                let mut pooled = pool.acquire().await?;
                let $conn: &mut sqlx::PgConnection = &mut pooled;
                async move { Ok::<_, $crate::StoreError>($body) }.await?
            }
        }
    };
}

/// A read connection checked out of the pool for several statements: the reads of a page
/// in chunks ([`crate::page::read_in_chunks`]). sqlx tests a connection each time it goes
/// back to its pool (a round trip to SQLite's connection thread or to the PostgreSQL
/// server), so a page costs one such test, not one per chunk.
pub(crate) enum ReadConn {
    Sqlite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
    Postgres(sqlx::pool::PoolConnection<sqlx::Postgres>),
}

impl Pool {
    /// A connection of the read pool, for the caller's statements until it is dropped.
    pub(crate) async fn read_conn(&self) -> Result<ReadConn, crate::StoreError> {
        Ok(match self {
            Pool::Sqlite { read, .. } => ReadConn::Sqlite(read.acquire().await?),
            Pool::Postgres { pool, .. } => ReadConn::Postgres(pool.acquire().await?),
        })
    }
}

/// Runs the read `$body` with `$conn` bound to the native connection of a [`ReadConn`]
/// (`&mut SqliteConnection` or `&mut PgConnection`; pass `&mut *$conn` to queries). The
/// body's rules are those of [`with_pool!`].
macro_rules! with_conn {
    ($read:expr, $conn:ident => $body:expr) => {
        match $read {
            $crate::db::ReadConn::Sqlite(c) => {
                let $conn: &mut sqlx::SqliteConnection = &mut *c;
                $body
            }
            $crate::db::ReadConn::Postgres(c) => {
                let $conn: &mut sqlx::PgConnection = &mut *c;
                $body
            }
        }
    };
}

pub(crate) use {with_conn, with_pool, write_one, write_tx};

/// Owned copies of text parameters, to move into a write.
fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// Runs one write statement whose parameters are all text (`$1`, `$2`, … bound to `args` in
/// order) and returns how many rows it changed: the shape of most of the store's writes.
pub(crate) async fn execute(
    store: &crate::Store,
    sql: &'static str,
    args: &[&str],
) -> Result<u64, crate::StoreError> {
    let args = owned(args);
    let n = write_one!(store, conn => {
        let mut q = sqlx::query(sql);
        for a in &args {
            q = q.bind(a.as_str());
        }
        q.execute(&mut *conn).await?.rows_affected()
    });
    Ok(n)
}

/// Runs `sql` once per row of text parameters in `rows` (bound as in [`execute`]), all in one
/// transaction: when this returns `Ok`, every row is committed. (A slice rather than an
/// iterator: a borrowing closure held across `.await` would make callers' futures not `Send`.)
pub(crate) async fn execute_each<const N: usize>(
    store: &crate::Store,
    sql: &'static str,
    rows: &[[&str; N]],
) -> Result<(), crate::StoreError> {
    let rows: Vec<Vec<String>> = rows.iter().map(|r| owned(r)).collect();
    write_tx!(store, conn => {
        for args in &rows {
            let mut q = sqlx::query(sql);
            for a in args {
                q = q.bind(a.as_str());
            }
            q.execute(&mut *conn).await?;
        }
    });
    Ok(())
}
