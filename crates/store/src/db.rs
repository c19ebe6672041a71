//! The backend dispatch: one pool per backend behind an enum, and a macro that expands a
//! query body once per native driver, so each query is written once.

/// A connection pool of one of the supported backends.
#[derive(Clone)]
pub(crate) enum Pool {
    /// SQLite (file or memory).
    Sqlite(sqlx::SqlitePool),
    /// PostgreSQL.
    Postgres(sqlx::PgPool),
}

/// Runs `$body` with `$pool` bound to the store's native pool (`&SqlitePool` or `&PgPool`).
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
            $crate::db::Pool::Sqlite($pool) => $body,
            $crate::db::Pool::Postgres($pool) => $body,
        }
    };
}

pub(crate) use with_pool;
