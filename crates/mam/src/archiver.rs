//! The archiver: one task that writes the archive rows of many messages in one transaction
//! (group commit), so that archiving costs the message path a queue hand-off and a wake-up
//! rather than a transaction of its own.
//!
//! # Why
//! Measured on the release server (docs/performance.md, "Archiving cost on the message
//! path"): with every message's row a store write of its own, archiving cost 220 µs of CPU per
//! message. The SQLite writer already committed concurrent writes together, but each write
//! was still a job: a closure boxed and queued, a round trip to the connection's thread for
//! its `INSERT`, a reply. Here the rows of every message queued while the previous batch was
//! committing are taken at once and go to the store as one [`Mam::append`] — a few multi-row
//! `INSERT`s in one transaction, one store job — and each waiting message is answered when it
//! is committed.
//!
//! # Never lost once acknowledged
//! [`Archiver::archive`] returns once the transaction holding its rows is committed, and the
//! module awaits it before the message goes on. A client's session routes its stanzas one
//! after the other and answers an XEP-0198 `<r/>` only after the stanzas before it were
//! routed, so what the server acknowledged (and what a recipient received, with the archive's
//! `<stanza-id/>`) is in the archive: at least once, as before. The wait is one commit's
//! latency, shared by every message of the batch; the CPU is what the batch costs divided by
//! its messages.
//!
//! # Bounds
//! The queue holds [`QUEUE`] submissions; when the store falls behind, archiving waits to
//! enqueue (the sending session stops reading: back-pressure to the client, never unbounded
//! memory). A batch takes at most [`MAX_BATCH`] submissions, so one transaction stays short.
//!
//! # Failure
//! When a batch fails (a row whose account was deleted meanwhile breaks the foreign key),
//! each of its submissions is written again in a transaction of its own: only the bad one
//! fails, and its caller is told why.
//!
//! [`Mam::append`]: rookery_store::mam::Mam::append

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use rookery_store::mam::NewArchived;
use rookery_store::{Store, StoreError};

/// Submissions waiting for the archiver; beyond it callers wait to enqueue.
const QUEUE: usize = 4096;

/// The most submissions committed in one transaction: a burst costs a few commits, and the
/// first message of a batch does not wait for a long one.
const MAX_BATCH: usize = 512;

/// The least time between the starts of two commits. Under load, rows arriving within it join
/// the next batch instead of each paying a commit of its own (the profile showed the per-commit
/// work — the fsync, the round trips to the connection's thread for `BEGIN`, `INSERT` and
/// `COMMIT` — at a third of archiving's CPU with batches of five rows); an archiver that was
/// idle for longer commits a message at once, so a lone message waits no longer.
const COMMIT_INTERVAL: Duration = Duration::from_millis(4);

/// The handle to the archiver task (cheap to clone); the task ends, once its queue is
/// drained, when every handle is dropped.
#[derive(Clone, Debug)]
pub struct Archiver {
    queue: mpsc::Sender<Submission>,
}

/// The rows of one message and the channel to its waiting caller.
#[derive(Debug)]
struct Submission {
    rows: Vec<NewArchived>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

impl Archiver {
    /// Starts the archiver writing into `store`, on the current tokio runtime.
    pub fn spawn(store: Store) -> Archiver {
        let (queue, jobs) = mpsc::channel(QUEUE);
        tokio::spawn(serve(store, jobs));
        Archiver { queue }
    }

    /// Archives `rows` (all of them or none) with the next batch; returns once they are
    /// committed.
    pub async fn archive(&self, rows: Vec<NewArchived>) -> Result<(), StoreError> {
        let stopped = || StoreError::NotCommitted("the archiver has stopped".into());
        let (done, answer) = oneshot::channel();
        self.queue
            .send(Submission { rows, done })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The archiver loop: commits what is queued, batch after batch, at most one commit started
/// per [`COMMIT_INTERVAL`].
async fn serve(store: Store, mut jobs: mpsc::Receiver<Submission>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut next = Instant::now();
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        while batch.len() < MAX_BATCH {
            let room = MAX_BATCH - batch.len();
            match tokio::time::timeout_at(next, jobs.recv_many(&mut batch, room)).await {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        next = Instant::now() + COMMIT_INTERVAL;
        commit(&store, std::mem::take(&mut batch)).await;
    }
}

/// Writes `batch` in one transaction and answers its callers; if that fails, writes each
/// submission on its own.
async fn commit(store: &Store, batch: Vec<Submission>) {
    let mut sizes = Vec::with_capacity(batch.len());
    let mut waiting: Vec<oneshot::Sender<_>> = Vec::with_capacity(batch.len());
    let mut rows = Vec::with_capacity(batch.len());
    for s in batch {
        sizes.push(s.rows.len());
        waiting.push(s.done);
        rows.extend(s.rows);
    }
    let rows: Arc<[NewArchived]> = rows.into();
    let e = match store.mam().append(rows.clone()).await {
        Ok(()) => {
            for w in waiting {
                // The caller may have gone (its session closed): nothing to tell.
                let _ = w.send(Ok(()));
            }
            return;
        }
        Err(e) => e,
    };
    if let [_] = waiting.as_slice() {
        if let Some(w) = waiting.pop() {
            let _ = w.send(Err(e));
        }
        return;
    }
    tracing::warn!(error = %e, messages = waiting.len(), "archive batch failed; writing its messages one by one");
    let mut rest: &[NewArchived] = &rows;
    for (n, w) in sizes.into_iter().zip(waiting) {
        let Some((mine, tail)) = rest.split_at_checked(n) else {
            break;
        };
        rest = tail;
        let _ = w.send(store.mam().append(mine.to_vec()).await);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use rookery_store::mam::{Filter, Owner};

    fn row(user: &str, n: usize) -> NewArchived {
        NewArchived {
            owner: Owner::Account {
                domain: "localhost".into(),
                username: user.into(),
            },
            stanza_id: format!("{user}-{n}"),
            with_jid: "romeo@localhost".into(),
            ts: 1,
            stanza: format!("<message><body>{n}</body></message>"),
        }
    }

    /// Every submission of a batch is answered once committed, in order; a bad one (no such
    /// account: the foreign key) fails alone.
    #[tokio::test]
    async fn a_batch_commits_together_and_a_bad_row_fails_alone() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let creds = rookery_store::Credentials::derive("pw", 4096).unwrap();
        store
            .accounts()
            .create("localhost", "juliet", &creds)
            .await
            .unwrap();
        let archiver = Archiver::spawn(store.clone());
        // All queued before the archiver runs (one thread): one batch.
        let results = futures_join(
            (0..100)
                .map(|n| {
                    let a = archiver.clone();
                    let user = if n == 50 { "nobody" } else { "juliet" };
                    async move { a.archive(vec![row(user, n)]).await.is_ok() }
                })
                .collect(),
        )
        .await;
        let failed: Vec<usize> = (0..100).filter(|n| !results[*n]).collect();
        assert_eq!(failed, [50]);
        let juliet = Owner::Account {
            domain: "localhost".into(),
            username: "juliet".into(),
        };
        let kept = store
            .mam()
            .query(&juliet, &Filter::default(), 200, false)
            .await
            .unwrap();
        let expected: Vec<String> = (0..100)
            .filter(|n| *n != 50)
            .map(|n| format!("juliet-{n}"))
            .collect();
        let ids: Vec<String> = kept.into_iter().map(|a| a.stanza_id).collect();
        assert_eq!(ids, expected);
    }

    /// Runs the futures concurrently on this task and returns their outputs in order.
    async fn futures_join<F: std::future::Future<Output = bool> + Send + 'static>(
        futures: Vec<F>,
    ) -> Vec<bool> {
        let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }
}
