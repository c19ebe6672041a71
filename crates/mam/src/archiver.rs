//! The archiver: one task that writes the archive rows of many messages in one transaction
//! (group commit), off the message path: archiving costs a message a queue push.
//!
//! # Why
//! Measured on the release server (docs/performance.md, "Archiving cost on the message
//! path"): with every message's row a store write of its own, archiving cost 220 µs of CPU per
//! message; with the rows of the messages queued during a commit written together, and each
//! message waiting for its batch, still three times the message's own cost. What was left was
//! the commits themselves: every commit writes each index page its rows touched, and the rows
//! of a few milliseconds belong to as many accounts as messages, so a row cost about three
//! page writes whatever the batch. So the message path no longer waits, and a batch gathers
//! for up to `[mam] batch_delay_ms` (a second by default) — many rows of each account share a page write.
//!
//! # Never lost once acknowledged
//! What the server promises a sender is the XEP-0198 acknowledgement (`<a/>`, `<resumed/>`):
//! the session asks [`rookery_core::Core::settle`] first, which comes here
//! ([`Archiver::settle`]): a marker queued behind the rows of every stanza routed before it,
//! answered once they are committed — and a waiting marker makes the batch commit at once
//! (at most one commit per [`COMMIT_INTERVAL`]), so an acknowledgement waits a commit, not
//! the batch delay. An archive query settles first too, so a client reads what it was sent
//! (the `<stanza-id/>` it got is found), and so does the shutdown. What is not promised: the
//! archive copies of messages sent without stream management, or not yet acknowledged, when
//! the process is killed within the batch delay — the messages themselves were delivered.
//!
//! # Bounds
//! The queue holds [`QUEUE`] jobs and [`QUEUE_BYTES`] of rows (large stanzas are as
//! welcome as small ones); when the store falls behind, archiving waits to enqueue
//! (the sending session stops reading: back-pressure to the client, never unbounded memory).
//! A batch takes at most [`MAX_BATCH`] jobs or [`MAX_BATCH_BYTES`], so one transaction
//! stays short.
//!
//! # Failure
//! When a batch fails (on PostgreSQL, a row whose account was deleted meanwhile breaks the
//! foreign key; SQLite skips such a row, see `rookery_store::mam`), each of its messages is
//! written again in a transaction of its own: only the bad one is lost, and logged.
//!
//! [`Mam::append`]: rookery_store::mam::Mam::append

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tokio::time::Instant;

use rookery_store::mam::NewArchived;
use rookery_store::Store;

/// Jobs waiting for the archiver; beyond it callers wait to enqueue.
const QUEUE: usize = 8192;

/// The most jobs committed in one transaction: a burst costs a few commits.
const MAX_BATCH: usize = 4096;

/// The most bytes of rows queued or gathered at once: beyond, archiving waits to enqueue.
const QUEUE_BYTES: u32 = 4 << 20;

/// A batch whose rows hold this many bytes is committed without waiting for its delay.
const MAX_BATCH_BYTES: u32 = 1 << 20;

/// The least time between the starts of two commits, also when an acknowledgement waits:
/// under load, what arrives within it joins the next batch instead of each waiter paying a
/// commit of its own; an archiver that was idle for longer commits at once.
const COMMIT_INTERVAL: Duration = Duration::from_millis(4);

/// The handle to the archiver task (cheap to clone); the task ends, once its queue is
/// drained, when every handle is dropped.
#[derive(Clone, Debug)]
pub struct Archiver {
    queue: mpsc::Sender<Job>,
    /// Wakes the archiver while it gathers a batch: for a waiter, or a queue half full.
    /// Rows alone do not wake it — a wake-up per message was a tenth of archiving's CPU.
    wake: Arc<Notify>,
    /// Room for [`QUEUE_BYTES`] of rows: a row takes its bytes before it is queued, and
    /// gives them back once its batch is committed.
    room: Arc<Semaphore>,
}

/// What the archiver is asked.
#[derive(Debug)]
enum Job {
    /// The rows of one message (all of them or none) and the room they took.
    Rows(Vec<NewArchived>, u32),
    /// Answer once everything queued before is committed.
    Settle(oneshot::Sender<()>),
}

impl Job {
    /// The room in [`QUEUE_BYTES`] this job holds.
    fn bytes(&self) -> u32 {
        match self {
            Job::Rows(_, bytes) => *bytes,
            Job::Settle(_) => 0,
        }
    }
}

impl Archiver {
    /// Starts the archiver writing into `store`, on the current tokio runtime; a batch
    /// nobody waits for is committed `delay` after its first message.
    pub fn spawn(store: Store, delay: Duration) -> Archiver {
        let (queue, jobs) = mpsc::channel(QUEUE);
        let wake = Arc::new(Notify::new());
        let room = Arc::new(Semaphore::new(QUEUE_BYTES as usize));
        tokio::spawn(serve(store, jobs, wake.clone(), room.clone(), delay));
        Archiver { queue, wake, room }
    }

    /// Queues `rows` (all of them or none) for the next batch; waits only for room in the
    /// queue. [`Archiver::settle`] tells when they are committed.
    pub async fn archive(&self, rows: Vec<NewArchived>) {
        let bytes = rows.iter().map(|r| r.stanza.len()).sum::<usize>();
        let bytes = u32::try_from(bytes)
            .unwrap_or(u32::MAX)
            .clamp(1, QUEUE_BYTES);
        match self.room.acquire_many(bytes).await {
            // Given back by the archiver after the commit.
            Ok(permit) => permit.forget(),
            // Closed: never, the archiver does not close it.
            Err(_) => return,
        }
        if self.queue.send(Job::Rows(rows, bytes)).await.is_err() {
            tracing::error!("the archiver has stopped; a message was not archived");
        } else if self.queue.capacity() < QUEUE / 2
            || self.room.available_permits() < QUEUE_BYTES as usize / 2
        {
            self.wake.notify_one();
        }
    }

    /// Returns once the rows queued before the call are committed (or failed, logged).
    pub async fn settle(&self) {
        let (done, committed) = oneshot::channel();
        if self.queue.send(Job::Settle(done)).await.is_ok() {
            self.wake.notify_one();
            // An error: the archiver stopped, nothing more will be committed.
            let _ = committed.await;
        }
    }
}

/// The archiver loop: waits for a batch's first job, then gathers the batch until a waiter
/// asks for it (at most one commit started per [`COMMIT_INTERVAL`]), `delay` passed since
/// its first job, or it is full; then commits it. While gathering it sleeps until then or
/// until woken (by a waiter or a filling queue), and takes what was queued meanwhile at once.
async fn serve(
    store: Store,
    mut jobs: mpsc::Receiver<Job>,
    wake: Arc<Notify>,
    room: Arc<Semaphore>,
    delay: Duration,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut next = Instant::now();
    while jobs.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let first = Instant::now();
        let mut waited_for = batch.iter().any(|j| matches!(j, Job::Settle(_)));
        let mut bytes: u32 = batch.iter().map(Job::bytes).sum();
        loop {
            while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
                // Empty, or closed: what is gathered is committed when due.
                let Ok(job) = jobs.try_recv() else { break };
                waited_for |= matches!(job, Job::Settle(_));
                bytes = bytes.saturating_add(job.bytes());
                batch.push(job);
            }
            let rows = bytes > 0;
            let due = if !rows {
                // Only waiters, nothing to commit (a query on an idle archive): at once.
                first
            } else if waited_for {
                next
            } else {
                next.max(first + delay)
            };
            if batch.len() >= MAX_BATCH || bytes >= MAX_BATCH_BYTES || Instant::now() >= due {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep_until(due) => {}
                () = wake.notified() => {}
            }
        }
        if bytes > 0 {
            next = Instant::now() + COMMIT_INTERVAL;
        }
        commit(&store, std::mem::take(&mut batch)).await;
        room.add_permits(bytes as usize);
    }
}

/// Writes the rows of `batch` in one transaction, or if that fails each message's on its
/// own; then answers the waiters.
async fn commit(store: &Store, batch: Vec<Job>) {
    let mut sizes = Vec::with_capacity(batch.len());
    let mut waiting = Vec::new();
    let mut rows = Vec::with_capacity(batch.len());
    for job in batch {
        match job {
            Job::Rows(r, _) => {
                sizes.push(r.len());
                rows.extend(r);
            }
            Job::Settle(w) => waiting.push(w),
        }
    }
    if !rows.is_empty() {
        let rows: Arc<[NewArchived]> = rows.into();
        if let Err(e) = store.mam().append(rows.clone()).await {
            if sizes.len() > 1 {
                tracing::warn!(error = %e, messages = sizes.len(), "archive batch failed; writing its messages one by one");
                one_by_one(store, &rows, sizes).await;
            } else {
                lost(&rows, &e);
            }
        }
    }
    for w in waiting {
        // The waiter may have gone (its session closed): nothing to tell.
        let _ = w.send(());
    }
}

/// Writes each message's rows (`sizes` of them, in order) in a transaction of its own.
async fn one_by_one(store: &Store, rows: &[NewArchived], sizes: Vec<usize>) {
    let mut rest = rows;
    for n in sizes {
        let Some((mine, tail)) = rest.split_at_checked(n) else {
            break;
        };
        rest = tail;
        if let Err(e) = store.mam().append(mine.to_vec()).await {
            lost(mine, &e);
        }
    }
}

/// Logs the message whose rows `rows` could not be archived.
fn lost(rows: &[NewArchived], e: &rookery_store::StoreError) {
    if let Some(r) = rows.first() {
        tracing::error!(owner = ?r.owner, stanza_id = %r.stanza_id, error = %e, "archiving a message failed");
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

    /// What was queued before a settle is committed when it returns, one batch for all;
    /// a bad message (no such account: the foreign key) is the only one lost.
    #[tokio::test]
    async fn a_settle_returns_once_the_rows_before_it_are_committed() {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let creds = rookery_store::Credentials::derive("pw", 4096).unwrap();
        store
            .accounts()
            .create("localhost", "juliet", &creds)
            .await
            .unwrap();
        let archiver = Archiver::spawn(store.clone(), Duration::from_secs(60));
        for n in 0..100 {
            let user = if n == 50 { "nobody" } else { "juliet" };
            archiver.archive(vec![row(user, n)]).await;
        }
        // The batch delay is a minute: the settle has the batch committed at once.
        tokio::time::timeout(Duration::from_secs(10), archiver.settle())
            .await
            .unwrap();
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
        // Nothing queued: a settle is answered at once.
        archiver.settle().await;
    }
}
