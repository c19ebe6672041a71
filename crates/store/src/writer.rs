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
//! timeout rather than fail), runs the jobs (a job that fails is left out and the batch run
//! again without it, see [`commit`]; the others are kept), commits, and only then answers
//! each caller. A
//! caller that got `Ok` therefore has its write committed and synced, as before; a batch of
//! N writes costs one fsync instead of N. Readers keep the pool: under WAL they never wait
//! for the writer.
//!
//! The writer is kept off the server's runtime: it runs on a thread of its own
//! (`rookery-store-writer`, a single-threaded runtime), so its many short waits on the
//! connection are not queued behind session tasks. The SQLite calls themselves (and the
//! fsyncs) run on the connection's own worker thread: sqlx runs every SQLite connection on a
//! dedicated thread (`sqlx-sqlite-worker-N`) whatever the caller's runtime.

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

/// The handle to a SQLite store's writer (cheap to clone). Its thread ends when every handle
/// is dropped.
#[derive(Clone)]
pub(crate) struct Writer {
    jobs: mpsc::Sender<Box<dyn Job>>,
    /// The writer connection's pool, to close it.
    pool: SqlitePool,
}

impl Writer {
    /// Starts the writer on `pool` (which should hold one connection: the writer's), on a
    /// thread of its own running a single-threaded runtime: on the server's runtime the
    /// writer task waited behind thousands of session tasks at each of its round trips to
    /// the connection (145 µs per job under load), and every write waits for the writer.
    pub(crate) fn spawn(pool: SqlitePool) -> Result<Writer, StoreError> {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()?;
        let writer_pool = pool.clone();
        std::thread::Builder::new()
            .name("rookery-store-writer".into())
            .spawn(move || runtime.block_on(serve(writer_pool, queue)))?;
        Ok(Writer { jobs, pool })
    }

    /// Closes the writer connection once the batch in progress is committed; later writes
    /// fail with [`StoreError::NotCommitted`].
    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }

    /// Runs `write` on the writer connection inside the next batch's transaction and returns
    /// its value once that transaction is committed. `Err` if `write` failed (nothing of it
    /// is kept) or if the batch could not be committed. `write` is `Clone` so that the batch
    /// can be run again without a job that failed (see [`commit`]).
    pub(crate) async fn run<T, F>(&self, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, StoreError>>
            + Clone
            + Send
            + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let task = Task {
            write,
            result: None,
            reply,
        };
        self.jobs
            .send(Box::new(task))
            .await
            .map_err(|_| StoreError::NotCommitted("the store writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::NotCommitted("the store writer has stopped".into()))?
    }
}

/// A queued write, with its result type erased so jobs of every method share the queue.
trait Job: Send {
    /// Runs (a copy of) the write on `conn` and keeps its result; `false` if it failed.
    fn run<'c>(&'c mut self, conn: &'c mut SqliteConnection) -> BoxFuture<'c, bool>;

    /// Answers the caller with the kept result: a failure as it is, a success only if the
    /// batch was committed (`not_committed` is `None`); a job never run gets `not_committed`.
    fn answer(self: Box<Self>, not_committed: Option<String>);
}

/// A write closure, its last result and the channel to its caller.
struct Task<T, F> {
    write: F,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for Task<T, F>
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, StoreError>>
        + Clone
        + Send
        + 'static,
{
    fn run<'c>(&'c mut self, conn: &'c mut SqliteConnection) -> BoxFuture<'c, bool> {
        let write = self.write.clone();
        Box::pin(async move {
            let result = write(conn).await;
            let ok = result.is_ok();
            self.result = Some(result);
            ok
        })
    }

    fn answer(self: Box<Self>, not_committed: Option<String>) {
        let result = match (self.result, not_committed) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(value)), None) => Ok(value),
            (_, Some(why)) => Err(StoreError::NotCommitted(why)),
            (None, None) => Err(StoreError::NotCommitted("the write was not run".into())),
        };
        // The caller may have gone (its request was cancelled): nothing to tell.
        let _ = self.reply.send(result);
    }
}

/// The writer loop: commits what is queued, batch after batch, until every handle is gone.
async fn serve(pool: SqlitePool, mut queue: mpsc::Receiver<Box<dyn Job>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        commit(&pool, std::mem::take(&mut batch)).await;
    }
}

/// Runs `batch` in one `BEGIN IMMEDIATE` transaction, commits, then answers every caller.
///
/// Jobs run one after the other with no savepoint between them (a savepoint costs two more
/// round trips to the connection's thread per job, which at 500,000 roster writes was most
/// of the writer's time). When a job fails, the whole transaction is rolled back, the failed
/// job keeps its error, and the batch runs again without it: the jobs are `Clone`, so each
/// run starts from a fresh copy. A failure is rare (a foreign key to a deleted account, a
/// name taken), so the rerun is too; the jobs before the failed one run twice.
async fn commit(pool: &SqlitePool, mut batch: Vec<Box<dyn Job>>) {
    let started = std::time::Instant::now();
    let mut failed: Vec<Box<dyn Job>> = Vec::new();
    let mut conn = match pool.acquire().await {
        Ok(c) => c,
        Err(e) => return answer_all(batch, failed, Some(cannot_start(&e))),
    };
    let outcome = loop {
        let mut tx = match conn.begin_with("BEGIN IMMEDIATE").await {
            Ok(tx) => tx,
            Err(e) => break Some(cannot_start(&e)),
        };
        let mut failed_at = None;
        for (i, job) in batch.iter_mut().enumerate() {
            if !job.run(&mut tx).await {
                failed_at = Some(i);
                break;
            }
        }
        let Some(i) = failed_at else {
            let committed = tx.commit().await;
            if let Err(e) = &committed {
                tracing::error!(error = %e, jobs = batch.len(), "store writer: commit failed");
            }
            break committed.err().map(|e| e.to_string());
        };
        failed.push(batch.remove(i));
        if let Err(e) = tx.rollback().await {
            tracing::error!(error = %e, "store writer: rollback failed");
            break Some(e.to_string());
        }
    };
    tracing::debug!(
        jobs = batch.len(),
        failed = failed.len(),
        micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "store writer: batch committed"
    );
    answer_all(batch, failed, outcome);
}

/// Answers the jobs of a batch: `outcome` is `None` if `batch` was committed, else why not;
/// the `failed` jobs get their own errors.
fn answer_all(batch: Vec<Box<dyn Job>>, failed: Vec<Box<dyn Job>>, outcome: Option<String>) {
    for job in batch {
        job.answer(outcome.clone());
    }
    for job in failed {
        job.answer(None);
    }
}

/// Logs why a batch could not start and returns it for its callers.
fn cannot_start(e: &sqlx::Error) -> String {
    tracing::error!(error = %e, "store writer: cannot start a transaction");
    e.to_string()
}
