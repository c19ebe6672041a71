//! Coalesced writes on PostgreSQL: many callers' writes of one kind run as one statement.
//!
//! # Why
//! A PostgreSQL statement has a fixed cost besides its rows: the round trip, waking the
//! backend, executor start-up and shutdown, the commit. For the commonest small writes that
//! cost is most of the work: a roster put (a version bump, the item, two deletes) measured
//! 84 µs of PostgreSQL CPU as a statement of its own and 35 µs as one of 200 in a statement
//! over arrays (`pgbench`, figures in docs/performance.md). A subscription set-up of 2,000
//! accounts × 50 contacts is 300,000 such puts, and the database's CPU was its limit.
//!
//! So a [`Batcher`] queues the writes of one kind, and one task runs what is queued as one
//! statement ([`BatchWrite::run_many`]) while the next batch gathers: under load each
//! statement carries many writes, alone a write runs at once by itself
//! ([`BatchWrite::run_one`], the plain statement). One batch runs at a time, so batches never
//! wait on each other's row locks. A caller's `Ok` comes after the statement committed (each
//! runs without a transaction of its own, atomic by itself), as for every other write. If a
//! batch fails (a foreign key to an account deleted meanwhile), each of its writes is run
//! again alone, so only the failing one reports the error.
//!
//! (SQLite needs none of this: its writer runs every write in one transaction per batch
//! already, and its statements cost no round trip to another process.)

use sqlx::{PgConnection, PgPool};
use tokio::sync::{mpsc, oneshot};

use crate::writer::BoxFuture;
use crate::StoreError;

/// The most writes in one statement: past a few hundred the statement's fixed cost is
/// already amortized, and the first caller of a batch should not wait for a huge one.
const MAX_BATCH: usize = 256;

/// Writes waiting for their batch; callers beyond that wait to enqueue (back-pressure).
const QUEUE: usize = 4096;

/// Each write's outcome, in order, from a statement that ran (see [`BatchWrite::run_many`]).
pub(crate) type Outcomes<T> = Vec<Result<T, StoreError>>;

/// A kind of write that can run for many callers in one statement.
pub(crate) trait BatchWrite: Send + Sync + Sized + 'static {
    /// What a caller gets back.
    type Out: Send + 'static;

    /// Runs this write alone.
    fn run_one<'a>(
        &'a self,
        conn: &'a mut PgConnection,
    ) -> BoxFuture<'a, Result<Self::Out, StoreError>>;

    /// Runs `batch` (two or more writes, in queue order) as one statement; each write's
    /// outcome in the same order. `Err` only when the statement failed (then nothing of it
    /// is stored, and each write is run again alone).
    fn run_many<'a>(
        batch: &'a [Self],
        conn: &'a mut PgConnection,
    ) -> BoxFuture<'a, Result<Outcomes<Self::Out>, StoreError>>;
}

/// A queued write and the channel to its caller.
type Queued<W> = (
    W,
    oneshot::Sender<Result<<W as BatchWrite>::Out, StoreError>>,
);

/// The handle to one kind of coalesced write (cheap to clone); its task ends when every
/// handle is dropped.
pub(crate) struct Batcher<W: BatchWrite> {
    queue: mpsc::Sender<Queued<W>>,
}

impl<W: BatchWrite> Clone for Batcher<W> {
    fn clone(&self) -> Self {
        Batcher {
            queue: self.queue.clone(),
        }
    }
}

impl<W: BatchWrite> Batcher<W> {
    /// Starts the batching task for writes on `pool` (on the current Tokio runtime).
    pub(crate) fn spawn(pool: PgPool) -> Batcher<W> {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(serve(pool, rx));
        Batcher { queue }
    }

    /// Runs `write` in the next batch and returns its output once committed.
    pub(crate) async fn run(&self, write: W) -> Result<W::Out, StoreError> {
        let stopped = || StoreError::NotCommitted("the store's batching task has stopped".into());
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((write, reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The batching loop: runs what is queued, batch after batch, until every handle is gone.
async fn serve<W: BatchWrite>(pool: PgPool, mut rx: mpsc::Receiver<Queued<W>>) {
    let mut queued = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut queued, MAX_BATCH).await > 0 {
        let (writes, replies): (Vec<W>, Vec<_>) = queued.drain(..).unzip();
        for (reply, out) in replies.into_iter().zip(run(&pool, &writes).await) {
            // The caller may have gone (its request was cancelled): nothing to tell.
            let _ = reply.send(out);
        }
    }
}

/// Runs `writes` — one statement for all, or each alone if that failed — and returns each
/// write's outcome in order.
async fn run<W: BatchWrite>(pool: &PgPool, writes: &[W]) -> Outcomes<W::Out> {
    let mut conn = match pool.acquire().await {
        Ok(c) => c,
        Err(e) => {
            let why = e.to_string();
            return writes
                .iter()
                .map(|_| Err(StoreError::NotCommitted(why.clone())))
                .collect();
        }
    };
    if writes.len() > 1 {
        match W::run_many(writes, &mut conn).await {
            Ok(outs) => return outs,
            Err(e) => tracing::debug!(
                error = %e,
                writes = writes.len(),
                "store: a batched write failed; running each alone"
            ),
        }
    }
    let mut outs = Vec::with_capacity(writes.len());
    for write in writes {
        outs.push(write.run_one(&mut conn).await);
    }
    outs
}
