//! The SQLite writer: every write of a SQLite store runs on one connection, queued, and the
//! writes queued together are committed in one transaction (group commit).
//!
//! # Why
//! SQLite allows one writer at a time. With writes spread over a pool, a transaction that
//! reads before it writes (the offline cap: count, then insert) takes a read snapshot, and
//! when another connection commits first its upgrade to a write fails at once with
//! `SQLITE_BUSY` ("database is locked"): the busy timeout cannot help, because waiting would
//! not make the snapshot current. And with `synchronous = FULL`, each commit costs an fsync,
//! so one transaction per write caps the store at the disk's fsync rate.
//!
//! So a SQLite store has one writer connection fed by a queue. The writer takes every job
//! queued (up to [`MAX_BATCH`]), opens one `BEGIN IMMEDIATE` transaction (the write lock is
//! taken up front, so another process — `rookery user add` — makes it wait for the busy
//! timeout rather than fail), runs each job in a savepoint of its own (a job that fails is
//! rolled back alone; the others are kept), commits, and only then answers each caller. A
//! caller that got `Ok` therefore has its write committed and synced, as before; a batch of
//! N writes costs one fsync instead of N. Readers keep the pool: under WAL they never wait
//! for the writer.
//!
//! The writer is an async task, but it does not block the runtime's worker threads: sqlx runs
//! every SQLite connection on a worker thread of its own (`sqlx-sqlite-worker`), and the task
//! only awaits it.

use std::future::Future;
use std::pin::Pin;

use sqlx::{Connection, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use crate::StoreError;

/// A boxed future that borrows for `'a` (the connection a job runs on).
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The most jobs committed in one transaction: large enough that a burst costs a few fsyncs,
/// small enough that the first caller of a batch is not kept waiting for a long one.
const MAX_BATCH: usize = 512;

/// Jobs waiting for the writer; callers beyond that wait to enqueue (back-pressure).
const QUEUE: usize = 4096;

/// The handle to a SQLite store's writer task (cheap to clone). The task stops when every
/// handle is dropped.
#[derive(Clone)]
pub(crate) struct Writer {
    jobs: mpsc::Sender<Box<dyn Job>>,
    /// The writer connection's pool, to close it.
    pool: SqlitePool,
}

impl Writer {
    /// Starts the writer task on `pool` (which should hold one connection: the writer's).
    pub(crate) fn spawn(pool: SqlitePool) -> Writer {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(serve(pool.clone(), queue));
        Writer { jobs, pool }
    }

    /// Closes the writer connection once the batch in progress is committed; later writes
    /// fail with [`StoreError::NotCommitted`].
    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }

    /// Runs `write` on the writer connection inside the next batch's transaction and returns
    /// its value once that transaction is committed. `Err` if `write` failed (its statements
    /// are rolled back) or if the batch could not be committed.
    pub(crate) async fn run<T, F>(&self, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, StoreError>>
            + Send
            + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Box::new(Task { write, reply }))
            .await
            .map_err(|_| StoreError::NotCommitted("the store writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::NotCommitted("the store writer has stopped".into()))?
    }
}

/// A queued write, with its result type erased so jobs of every method share the queue.
trait Job: Send {
    /// Runs the write on `conn` (inside a savepoint); the returned [`Ran`] answers the
    /// caller once the batch's fate is known.
    fn run<'c>(self: Box<Self>, conn: &'c mut SqliteConnection) -> BoxFuture<'c, Ran>;

    /// Answers the caller that its write was never run.
    fn abort(self: Box<Self>, why: String);
}

/// A job that ran: whether its statements succeeded, and how to answer its caller.
struct Ran {
    ok: bool,
    /// Called with `None` once the batch is committed, or with why it was not. A job that
    /// failed answers with its own error either way.
    answer: Box<dyn FnOnce(Option<String>) + Send>,
}

/// A write closure and the channel to its caller.
struct Task<T, F> {
    write: F,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for Task<T, F>
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, StoreError>>
        + Send
        + 'static,
{
    fn run<'c>(self: Box<Self>, conn: &'c mut SqliteConnection) -> BoxFuture<'c, Ran> {
        let Task { write, reply } = *self;
        Box::pin(async move {
            let result = write(conn).await;
            Ran {
                ok: result.is_ok(),
                answer: Box::new(move |failed: Option<String>| {
                    let result = match failed {
                        Some(why) if result.is_ok() => Err(StoreError::NotCommitted(why)),
                        _ => result,
                    };
                    // The caller may have gone (its request was cancelled): nothing to tell.
                    let _ = reply.send(result);
                }),
            }
        })
    }

    fn abort(self: Box<Self>, why: String) {
        let _ = self.reply.send(Err(StoreError::NotCommitted(why)));
    }
}

/// The writer task: commits what is queued, batch after batch, until every handle is gone.
async fn serve(pool: SqlitePool, mut queue: mpsc::Receiver<Box<dyn Job>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        commit(&pool, batch.drain(..)).await;
    }
}

/// Runs `batch` in one `BEGIN IMMEDIATE` transaction, each job in a savepoint, commits, then
/// answers every caller.
async fn commit(pool: &SqlitePool, batch: impl ExactSizeIterator<Item = Box<dyn Job>>) {
    let mut conn = match pool.acquire().await {
        Ok(c) => c,
        Err(e) => return abort_all(batch, &e),
    };
    let mut tx = match conn.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(e) => return abort_all(batch, &e),
    };
    // Answers to send after the commit; `Some` for a job whose savepoint could not be
    // released (its fate is the transaction's, but it must not be told `Ok`).
    let mut ran: Vec<(Ran, Option<String>)> = Vec::with_capacity(batch.len());
    for job in batch {
        let mut savepoint = match tx.begin().await {
            Ok(sp) => sp,
            Err(e) => {
                job.abort(e.to_string());
                continue;
            }
        };
        let done = job.run(&mut savepoint).await;
        let released = if done.ok {
            savepoint.commit().await
        } else {
            savepoint.rollback().await
        };
        let failed = released.err().map(|e| e.to_string());
        ran.push((done, failed));
    }
    let committed = tx.commit().await;
    if let Err(e) = &committed {
        tracing::error!(error = %e, jobs = ran.len(), "store writer: commit failed");
    }
    let why = committed.err().map(|e| e.to_string());
    for (done, failed) in ran {
        (done.answer)(failed.or_else(|| why.clone()));
    }
}

/// Answers every job of a batch that could not start.
fn abort_all(batch: impl Iterator<Item = Box<dyn Job>>, e: &sqlx::Error) {
    tracing::error!(error = %e, "store writer: cannot start a transaction");
    let why = e.to_string();
    for job in batch {
        job.abort(why.clone());
    }
}
