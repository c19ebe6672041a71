//! Last-activity writes (XEP-0012), coalesced per account and written in batches.
//!
//! # Why
//! Every session that ends records its account's last logout. When thousands end at once
//! (a network split, a restart of a client fleet), one write each, each awaited by the
//! ending session, kept thousands of session tasks alive with their buffers while the writes
//! queued (RSS 151 → 345 MiB for 20,000 sessions). No client is ever told that its last
//! activity was stored, so the write need not be awaited: [`LastActivityQueue::record`]
//! puts the value in a map (a later logout of the same account replaces an earlier one) and
//! returns; one flush task at a time writes what the map holds, in chunks of
//! [`CHUNK`] upserts per transaction, until it is empty. Reads look at the map first, so a
//! probe right after a logout sees it.
//!
//! The flush waits [`COALESCE`] before each batch: without it, logouts at a steady few
//! hundred a second were written one transaction (and one fsync, and a dozen thread
//! wake-ups through the writer) each, a cost every login/logout paid. [`Store::close`]
//! (crate::Store::close) cuts the wait short and waits for the flush; a crash loses at most
//! what was not flushed yet (the last [`COALESCE`] of logouts, never acknowledged to
//! anyone).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use crate::db::write_tx;
use crate::userdata::LastActivity;
use crate::{Store, StoreError};

/// Upserts per transaction when flushing.
const CHUNK: usize = 1000;

/// How long a flush gathers logouts before writing them.
const COALESCE: Duration = Duration::from_millis(500);

/// An account: (domain, username).
type Account = (String, String);

/// Writes `last` unless the account is gone (deleted while its logout waited): such a row
/// would fail the foreign key and, with it, the rest of the chunk.
const UPSERT: &str = "INSERT INTO last_activity (domain, username, at, status) \
     SELECT $1, $2, $3, $4 WHERE EXISTS \
     (SELECT username FROM accounts WHERE domain = $1 AND username = $2) \
     ON CONFLICT (domain, username) DO UPDATE SET at = excluded.at, status = excluded.status";

/// The map of last activities not yet written, shared by the clones of a [`Store`].
#[derive(Default)]
pub(crate) struct LastActivityQueue {
    state: Mutex<State>,
    /// Woken when a flush ends.
    idle: Notify,
    /// Set by [`settle`](Self::settle): the flush writes without waiting from then on.
    closing: AtomicBool,
    /// Wakes a flush waiting out [`COALESCE`] once `closing` is set.
    hurry: Notify,
}

#[derive(Default)]
struct State {
    /// Recorded, not yet taken by a flush.
    pending: HashMap<Account, LastActivity>,
    /// Taken by the running flush, not yet committed (reads still see them).
    in_flight: HashMap<Account, LastActivity>,
    /// Whether a flush task runs.
    flushing: bool,
}

impl LastActivityQueue {
    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while the lock is held; a poisoned map is still a valid map.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `last` for `username@domain` and returns at once; starts a flush task on
    /// `store` unless one runs.
    pub(crate) fn record(&self, store: &Store, domain: &str, username: &str, last: LastActivity) {
        let start = {
            let mut s = self.state();
            s.pending
                .insert((domain.to_owned(), username.to_owned()), last);
            !std::mem::replace(&mut s.flushing, true)
        };
        if start {
            let store = store.clone();
            tokio::spawn(async move { store.last.flush(&store).await });
        }
    }

    /// The recorded value not yet committed for `username@domain`, if any.
    pub(crate) fn get(&self, domain: &str, username: &str) -> Option<LastActivity> {
        let s = self.state();
        let key = (domain.to_owned(), username.to_owned());
        s.pending
            .get(&key)
            .or_else(|| s.in_flight.get(&key))
            .cloned()
    }

    /// Forgets what is recorded for `username@domain` (its account is being deleted).
    pub(crate) fn forget(&self, domain: &str, username: &str) {
        let mut s = self.state();
        let key = (domain.to_owned(), username.to_owned());
        s.pending.remove(&key);
        s.in_flight.remove(&key);
    }

    /// Writes what is pending, chunk after chunk, until nothing is; then marks the flush
    /// done. Runs in the one flush task.
    async fn flush(&self, store: &Store) {
        loop {
            if !self.closing.load(Ordering::Acquire) {
                tokio::select! {
                    () = tokio::time::sleep(COALESCE) => {}
                    () = self.hurry.notified() => {}
                }
            }
            let batch: Vec<(Account, LastActivity)> = {
                let mut s = self.state();
                if s.pending.is_empty() {
                    s.flushing = false;
                    s.in_flight.clear();
                    drop(s);
                    self.idle.notify_waiters();
                    return;
                }
                let taken = std::mem::take(&mut s.pending);
                s.in_flight.clear();
                s.in_flight
                    .extend(taken.iter().map(|(k, v)| (k.clone(), v.clone())));
                taken.into_iter().collect()
            };
            for chunk in batch.chunks(CHUNK) {
                if let Err(e) = write(store, chunk.to_vec()).await {
                    tracing::warn!(error = %e, accounts = chunk.len(), "recording last activity failed");
                }
            }
        }
    }

    /// Waits until the running flush (if any) has written everything recorded before; from
    /// now on flushes do not wait to gather more.
    pub(crate) async fn settle(&self) {
        self.closing.store(true, Ordering::Release);
        // A stored permit if the flush is not waiting yet: it then does not start to.
        self.hurry.notify_one();
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.state().flushing {
                return;
            }
            notified.await;
        }
    }
}

/// Upserts `rows` in one transaction.
async fn write(store: &Store, rows: Vec<(Account, LastActivity)>) -> Result<(), StoreError> {
    write_tx!(store, conn => {
        for ((domain, username), last) in &rows {
            sqlx::query(UPSERT)
                .bind(domain)
                .bind(username)
                .bind(last.at)
                .bind(last.status.as_str())
                .execute(&mut *conn)
                .await?;
        }
    });
    Ok(())
}
