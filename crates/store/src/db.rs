//! The backend dispatch: one pool per backend behind an enum, and a macro that expands a
//! query body once per native driver, so each query is written once; with it, [`execute`] and
//! [`execute_each`] for the commonest statement shape (text parameters, rows changed).

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

/// Runs one statement whose parameters are all text (`$1`, `$2`, … bound to `args` in order)
/// and returns how many rows it changed: the shape of most of the store's writes.
pub(crate) async fn execute(
    store: &crate::Store,
    sql: &str,
    args: &[&str],
) -> Result<u64, crate::StoreError> {
    let n = with_pool!(store, pool => {
        let mut q = sqlx::query(sql);
        for a in args {
            q = q.bind(*a);
        }
        q.execute(pool).await?.rows_affected()
    });
    Ok(n)
}

/// Runs `sql` once per row of text parameters in `rows` (bound as in [`execute`]), all in one
/// transaction: when this returns `Ok`, every row is committed. (A slice rather than an
/// iterator: a borrowing closure held across `.await` would make callers' futures not `Send`.)
pub(crate) async fn execute_each<const N: usize>(
    store: &crate::Store,
    sql: &str,
    rows: &[[&str; N]],
) -> Result<(), crate::StoreError> {
    with_pool!(store, pool => {
        let mut tx = pool.begin().await?;
        for args in rows {
            let mut q = sqlx::query(sql);
            for a in args {
                q = q.bind(*a);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
    });
    Ok(())
}
