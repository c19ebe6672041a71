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
//! # Ids in the order of their rows
//! On SQLite the archiver numbers the account archive's rows itself and each stanza-id is
//! derived from its row's number (`rookery_store::mam::ArchiveId`: no index of names to
//! write). The number is handed out with a [`Ticket`] before the message is delivered
//! (which carries the stanza-id), and an archive's rows must be committed in the order of
//! their numbers: a client that paged to a number must never later find a smaller one
//! appear before it. So a ticket holds the archiver's order from its number until its rows
//! are queued: numbers go into the queue in their order, and a batch never leaves one out
//! that a later batch brings.
//!
//! # Bounces
//! A message archived for its recipient on its way and then bounced (offline storage full
//! or disabled) is taken back with [`Archiver::withdraw`]: queued behind its row, the
//! withdrawal leaves the row out of the batch still gathering, or deletes it once committed.
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

use tokio::sync::{mpsc, oneshot, Mutex, MutexGuard, Notify, Semaphore};
use tokio::time::Instant;

use rookery_store::mam::{new_name, ArchiveId, NewArchived, Numbering, Owner};
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
#[derive(Clone)]
pub struct Archiver {
    store: Store,
    /// The next ids, held by a [`Ticket`] until its rows are queued.
    ids: Arc<Mutex<Ids>>,
    queue: mpsc::Sender<Job>,
    /// Wakes the archiver while it gathers a batch: for a waiter, or a queue half full.
    /// Rows alone do not wake it — a wake-up per message was a tenth of archiving's CPU.
    wake: Arc<Notify>,
    /// Room for [`QUEUE_BYTES`] of rows: a row takes its bytes before it is queued, and
    /// gives them back once its batch is committed.
    room: Arc<Semaphore>,
}

impl std::fmt::Debug for Archiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archiver")
            .field("ids", &self.ids)
            .finish_non_exhaustive()
    }
}

/// What the archiver is asked.
#[derive(Debug)]
enum Job {
    /// The rows of one message (all of them or none) and the room they took.
    Rows(Vec<NewArchived>, u32),
    /// Answer once everything queued before is committed.
    Settle(oneshot::Sender<()>),
    /// Take back the row queued before under this stanza-id in this archive.
    Withdraw(Owner, String),
}

impl Job {
    /// The room in [`QUEUE_BYTES`] this job holds.
    fn bytes(&self) -> u32 {
        match self {
            Job::Rows(_, bytes) => *bytes,
            Job::Settle(_) | Job::Withdraw(..) => 0,
        }
    }
}

/// How the archiver names new rows.
#[derive(Debug)]
enum Ids {
    /// Not known yet: asked of the store at the first ticket.
    Unknown,
    /// Numbered here (SQLite): the last number given, and how numbers become stanza-ids
    /// (keyed: they tell nothing, `rookery_store::mam::Numbering`).
    Positions(i64, Numbering),
    /// Named, numbered by the database (PostgreSQL).
    Named,
}

impl Ids {
    /// The next id: a number above the last one and not below the current millisecond's
    /// first (the time, shifted by 20 bits, so that numbers stay in the order of time across
    /// restarts), or a new name.
    fn next(&mut self) -> ArchiveId {
        match self {
            Ids::Positions(last, numbering) => {
                let ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                let floor = i64::try_from(ms << 20).unwrap_or(0);
                *last = last.saturating_add(1).max(floor);
                numbering.numbered(*last)
            }
            Ids::Unknown | Ids::Named => ArchiveId::Named(new_name()),
        }
    }
}

/// A new archive id, holding the archiver's order until its rows are queued (see the
/// module's "Ids in the order of their rows"); dropped unused, its id is skipped.
#[derive(Debug)]
pub struct Ticket<'a> {
    archiver: &'a Archiver,
    _order: MutexGuard<'a, Ids>,
    id: ArchiveId,
}

impl Ticket<'_> {
    /// The id for the message's row.
    pub fn id(&self) -> &ArchiveId {
        &self.id
    }

    /// Queues `rows` (all of them or none, each with [`Ticket::id`]) for the next batch;
    /// waits only for room in the queue. [`Archiver::settle`] tells when they are committed.
    pub async fn queue(self, rows: Vec<NewArchived>) {
        self.archiver.enqueue(rows).await;
    }
}

impl Archiver {
    /// Starts the archiver writing into `store`, on the current tokio runtime; a batch
    /// nobody waits for is committed `delay` after its first message.
    pub fn spawn(store: Store, delay: Duration) -> Archiver {
        let (archiver, jobs) = Archiver::new(store.clone());
        let (wake, room) = (archiver.wake.clone(), archiver.room.clone());
        tokio::spawn(serve(store, jobs, wake, room, delay));
        archiver
    }

    /// A handle and the queue it feeds (read by [`serve`]).
    fn new(store: Store) -> (Archiver, mpsc::Receiver<Job>) {
        let (queue, jobs) = mpsc::channel(QUEUE);
        let archiver = Archiver {
            store,
            ids: Arc::new(Mutex::new(Ids::Unknown)),
            queue,
            wake: Arc::new(Notify::new()),
            room: Arc::new(Semaphore::new(QUEUE_BYTES as usize)),
        };
        (archiver, jobs)
    }

    /// The id of a new message's row; the archiver's order is held until its rows are queued
    /// ([`Ticket::queue`]) or the ticket is dropped. The first ticket asks the store where
    /// its numbers go on from (a store that cannot tell gets names from then on).
    pub async fn ticket(&self) -> Ticket<'_> {
        let mut ids = self.ids.lock().await;
        if matches!(*ids, Ids::Unknown) {
            let mam = self.store.mam();
            let numbering = async {
                Ok::<_, rookery_store::StoreError>((
                    mam.numbering().await?,
                    mam.last_position().await?,
                ))
            };
            match numbering.await {
                Ok((Some(numbering), Some(last))) => {
                    *ids = Ids::Positions(last, numbering.clone());
                }
                Ok(_) => *ids = Ids::Named,
                // For good: numbers given after names still waiting for their commit could
                // meet the numbers the database gives those.
                Err(e) => {
                    *ids = Ids::Named;
                    tracing::error!(error = %e, "reading the archive's last position failed; naming its rows instead");
                }
            }
        }
        let id = ids.next();
        Ticket {
            archiver: self,
            _order: ids,
            id,
        }
    }

    /// Queues `rows` for the next batch (see [`Ticket::queue`]).
    async fn enqueue(&self, rows: Vec<NewArchived>) {
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

    /// Takes back the row queued before under `stanza_id` in `owner`'s archive (a message
    /// that bounced after it was archived): left out of its batch if that is not committed
    /// yet, else deleted after the batch that holds the withdrawal. The order of the queue
    /// makes the row come first, so nothing waits here.
    pub async fn withdraw(&self, owner: Owner, stanza_id: String) {
        if self
            .queue
            .send(Job::Withdraw(owner, stanza_id))
            .await
            .is_err()
        {
            tracing::error!("the archiver has stopped; a bounced message stays archived");
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

/// How long the archiver waits before each new try of a batch that failed, before it tries
/// each message on its own (about 16 s in all, on top of the tries themselves): a database
/// restarting or failing over, or another process holding SQLite's write lock (each try
/// then waits out the busy timeout too), is waited for. Meanwhile the queue fills and the
/// message path waits for room in it, and `<a/>` for the commit: backpressure, not loss.
const RETRY_AFTER: [Duration; 7] = [
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
];

/// Writes the rows of `batch` in one transaction — tried again while it fails, for a while
/// ([`RETRY_AFTER`]) — or if it keeps failing each message's on its own (a row the database
/// refuses costs only its own message); then answers the waiters.
async fn commit(store: &Store, batch: Vec<Job>) {
    let mut messages: Vec<Vec<NewArchived>> = Vec::with_capacity(batch.len());
    let mut waiting = Vec::new();
    let mut withdrawn = Vec::new();
    for job in batch {
        match job {
            Job::Rows(r, _) => messages.push(r),
            Job::Settle(w) => waiting.push(w),
            Job::Withdraw(owner, id) => {
                if !left_out(&mut messages, &owner, &id) {
                    withdrawn.push((owner, id));
                }
            }
        }
    }
    messages.retain(|m| !m.is_empty());
    let sizes: Vec<usize> = messages.iter().map(Vec::len).collect();
    let rows: Vec<NewArchived> = messages.into_iter().flatten().collect();
    if !rows.is_empty() {
        let rows: Arc<[NewArchived]> = rows.into();
        if let Err(e) = append_patiently(store, rows.clone()).await {
            if sizes.len() > 1 {
                tracing::warn!(error = %e, messages = sizes.len(), "archive batch failed; writing its messages one by one");
                one_by_one(store, &rows, sizes).await;
            } else {
                lost(&rows, &e);
            }
        }
    }
    for (owner, id) in withdrawn {
        if let Err(e) = store.mam().remove(&owner, &id).await {
            tracing::error!(?owner, stanza_id = %id, error = %e, "taking back a bounced message's row failed");
        }
    }
    for w in waiting {
        // The waiter may have gone (its session closed): nothing to tell.
        let _ = w.send(());
    }
}

/// Removes from `messages` (not committed yet) the row `id` of `owner`'s archive; whether
/// it was there. A bounce comes right after its message: the newest are looked at first.
fn left_out(messages: &mut [Vec<NewArchived>], owner: &Owner, id: &str) -> bool {
    for rows in messages.iter_mut().rev() {
        if let Some(i) = rows
            .iter()
            .position(|r| r.owner == *owner && r.id.stanza_id() == id)
        {
            rows.remove(i);
            return true;
        }
    }
    false
}

/// Appends `rows` in one transaction, trying again while the database refuses them, for a
/// while ([`RETRY_AFTER`]); the last error if it never took them. (A room's messages are
/// archived through here too, one at a time under the room's lock.)
pub async fn append_patiently(
    store: &Store,
    rows: Arc<[NewArchived]>,
) -> Result<(), rookery_store::StoreError> {
    let mut result = store.mam().append(rows.clone()).await;
    for wait in RETRY_AFTER {
        let Err(e) = &result else { break };
        tracing::warn!(error = %e, rows = rows.len(), retry_in = ?wait, "archiving failed; trying again");
        tokio::time::sleep(wait).await;
        result = store.mam().append(rows.clone()).await;
    }
    result
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
        tracing::error!(owner = ?r.owner, stanza_id = %r.id.stanza_id(), error = %e, "archiving a message failed");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use rookery_store::mam::{Filter, Owner};

    fn row(user: &str, n: usize, id: &ArchiveId) -> NewArchived {
        NewArchived {
            owner: Owner::Account {
                domain: "localhost".into(),
                username: user.into(),
            },
            id: id.clone(),
            with_jid: "romeo@localhost".into(),
            ts: 1,
            stanza: format!("<message><body>{n}</body></message>"),
            real_jid: None,
        }
    }

    fn juliet() -> Owner {
        Owner::Account {
            domain: "localhost".into(),
            username: "juliet".into(),
        }
    }

    /// A store with the account juliet@localhost.
    async fn store_with_juliet(url: &str) -> Store {
        let store = Store::open(url).await.unwrap();
        let creds = rookery_store::Credentials::derive("pw", 4096).unwrap();
        store
            .accounts()
            .create("localhost", "juliet", &creds)
            .await
            .unwrap();
        store
    }

    /// Tickets taken by many tasks at once, each task yielding between its number and its
    /// queuing: the rows reach the queue in the order of their numbers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn rows_reach_the_queue_in_the_order_of_their_numbers() {
        let store = store_with_juliet("sqlite::memory:").await;
        let (archiver, mut jobs) = Archiver::new(store);
        let tasks: Vec<_> = (0..8)
            .map(|t| {
                let archiver = archiver.clone();
                tokio::spawn(async move {
                    for n in 0..25 {
                        let ticket = archiver.ticket().await;
                        let id = ticket.id().clone();
                        tokio::task::yield_now().await;
                        ticket.queue(vec![row("juliet", t * 100 + n, &id)]).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let mut queued = Vec::new();
        while let Ok(Job::Rows(rows, _)) = jobs.try_recv() {
            queued.extend(rows.into_iter().map(|r| match r.id {
                ArchiveId::Position(n) => n.position(),
                ArchiveId::Named(n) => panic!("a name on SQLite: {n}"),
            }));
        }
        assert_eq!(queued.len(), 200);
        assert!(queued.windows(2).all(|w| w[0] < w[1]), "{queued:?}");
    }

    /// The numbers go on after the highest id the archive had (a row of another writer far in
    /// the future here), also after a restart; every row is kept.
    #[tokio::test]
    async fn numbers_go_on_after_the_last_also_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("a.db").display());
        let store = store_with_juliet(&url).await;
        let future = i64::MAX / 2;
        let numbering = store.mam().numbering().await.unwrap().unwrap().clone();
        store
            .mam()
            .append(vec![row("juliet", 0, &numbering.numbered(future))])
            .await
            .unwrap();
        for round in 0..2 {
            let archiver = Archiver::spawn(store.clone(), Duration::from_millis(5));
            for n in 0..10 {
                let ticket = archiver.ticket().await;
                let id = ticket.id().clone();
                assert!(matches!(id, ArchiveId::Position(ref n) if n.position() > future));
                ticket.queue(vec![row("juliet", n, &id)]).await;
            }
            archiver.settle().await;
            let rows = store
                .mam()
                .query(&juliet(), &Filter::default(), 1000, false)
                .await
                .unwrap();
            assert_eq!(rows.len(), 1 + 10 * (round + 1));
            assert_eq!(rows[0].id, future);
        }
    }

    /// What was queued before a settle is committed when it returns, one batch for all;
    /// a bad message (no such account: the foreign key) is the only one lost.
    #[tokio::test]
    async fn a_settle_returns_once_the_rows_before_it_are_committed() {
        let store = store_with_juliet("sqlite::memory:").await;
        let archiver = Archiver::spawn(store.clone(), Duration::from_secs(60));
        let mut expected = Vec::new();
        for n in 0..100 {
            let user = if n == 50 { "nobody" } else { "juliet" };
            let ticket = archiver.ticket().await;
            if n != 50 {
                expected.push(ticket.id().stanza_id().to_owned());
            }
            let id = ticket.id().clone();
            ticket.queue(vec![row(user, n, &id)]).await;
        }
        // The batch delay is a minute: the settle has the batch committed at once.
        tokio::time::timeout(Duration::from_secs(10), archiver.settle())
            .await
            .unwrap();
        let ids: Vec<String> = store
            .mam()
            .query(&juliet(), &Filter::default(), 200, false)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.stanza_id)
            .collect();
        assert_eq!(ids, expected);
        // Nothing queued: a settle is answered at once.
        archiver.settle().await;
    }

    /// A bounced message's row is taken back whether its batch is still gathering (it is
    /// left out) or committed already (it is deleted); the others stay.
    #[tokio::test]
    async fn a_withdrawn_row_is_left_out_or_deleted() {
        let store = store_with_juliet("sqlite::memory:").await;
        let archiver = Archiver::spawn(store.clone(), Duration::from_secs(60));
        let mut ids = Vec::new();
        for n in 0..4 {
            let ticket = archiver.ticket().await;
            let id = ticket.id().clone();
            ids.push(id.stanza_id().to_owned());
            ticket.queue(vec![row("juliet", n, &id)]).await;
            if n == 1 {
                // Still in the gathering batch.
                archiver.withdraw(juliet(), ids[1].clone()).await;
            }
        }
        archiver.settle().await;
        // Committed: deleted from the store.
        archiver.withdraw(juliet(), ids[2].clone()).await;
        archiver.settle().await;
        let left: Vec<String> = store
            .mam()
            .query(&juliet(), &Filter::default(), 10, false)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.stanza_id)
            .collect();
        assert_eq!(left, [ids[0].clone(), ids[3].clone()]);
    }
}
