//! XEP-0050 "Session Lifetime": the `sessionid`s this responder issued, so that a
//! made-up one is refused (`bad-sessionid`) and one whose session ended — completed,
//! canceled or timed out — is not run again (`session-expired`). The form carries all a
//! command needs, so a session holds no data, only who opened it, for which command, and
//! whether it is still open. The table is small and bounded: only administrators reach it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rookery_jid::Jid;

use crate::commands::Command;
use crate::Refusal;

/// How long a session stays open without an answer, and how long one that ended or timed
/// out is remembered as expired (after that its id is simply unknown).
const LIFETIME: Duration = Duration::from_secs(600);

/// At most this many sessions are remembered; the oldest goes first.
const MAX_SESSIONS: usize = 256;

/// One issued session.
#[derive(Debug)]
struct Session {
    /// "Session Lifetime": valid only between one requester and this responder.
    requester: Jid,
    command: Command,
    open: bool,
    /// When it was opened or ended.
    at: Instant,
}

impl Session {
    fn expired(&self, now: Instant) -> bool {
        !self.open || now.duration_since(self.at) > LIFETIME
    }

    /// Whether it is no longer worth remembering: [`LIFETIME`] after it ended or timed out.
    fn forgotten(&self, now: Instant) -> bool {
        let kept = if self.open { 2 * LIFETIME } else { LIFETIME };
        now.duration_since(self.at) > kept
    }
}

/// The sessions issued by the ad-hoc module.
#[derive(Debug, Default)]
pub struct Sessions(Mutex<HashMap<String, Session>>);

impl Sessions {
    /// A new open session of `command` for `requester`; returns its id.
    pub fn open(&self, requester: &Jid, command: Command) -> String {
        let id = format!("{:016x}", rand::random::<u64>());
        self.put(&id, requester, command, true);
        id
    }

    /// Checks that `id` is an open session of `command` issued to `requester`.
    pub fn check(&self, id: &str, requester: &Jid, command: Command) -> Result<(), Refusal> {
        let table = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match table.get(id) {
            Some(s) if s.requester != *requester || s.command != command => {
                Err(Refusal::BadSessionid)
            }
            Some(s) if s.expired(Instant::now()) => Err(Refusal::SessionExpired),
            Some(_) => Ok(()),
            None => Err(Refusal::BadSessionid),
        }
    }

    /// Ends session `id` (completed or canceled): from now on it is `session-expired`.
    pub fn end(&self, id: &str, requester: &Jid, command: Command) {
        self.put(id, requester, command, false);
    }

    /// Records `id`, first dropping what is too old and, when full, the oldest entry.
    fn put(&self, id: &str, requester: &Jid, command: Command, open: bool) {
        let now = Instant::now();
        let mut table = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        table.retain(|_, s| !s.forgotten(now));
        if table.len() >= MAX_SESSIONS && !table.contains_key(id) {
            if let Some(oldest) = table
                .iter()
                .min_by_key(|(_, s)| s.at)
                .map(|(k, _)| k.clone())
            {
                table.remove(&oldest);
            }
        }
        let session = Session {
            requester: requester.clone(),
            command,
            open,
            at: now,
        };
        table.insert(id.to_owned(), session);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn unknown_foreign_and_ended_sessions_are_refused() {
        let s = Sessions::default();
        let admin = Jid::parse("root@x/a").unwrap();
        let other = Jid::parse("root@x/b").unwrap();
        let id = s.open(&admin, Command::AddUser);
        assert_eq!(s.check(&id, &admin, Command::AddUser), Ok(()));
        assert_eq!(
            s.check("nope", &admin, Command::AddUser),
            Err(Refusal::BadSessionid)
        );
        assert_eq!(
            s.check(&id, &other, Command::AddUser),
            Err(Refusal::BadSessionid)
        );
        assert_eq!(
            s.check(&id, &admin, Command::Announce),
            Err(Refusal::BadSessionid)
        );
        s.end(&id, &admin, Command::AddUser);
        assert_eq!(
            s.check(&id, &admin, Command::AddUser),
            Err(Refusal::SessionExpired)
        );
    }

    #[test]
    fn the_table_is_bounded() {
        let s = Sessions::default();
        let admin = Jid::parse("root@x/a").unwrap();
        let first = s.open(&admin, Command::AddUser);
        for _ in 0..MAX_SESSIONS {
            s.open(&admin, Command::AddUser);
        }
        assert_eq!(s.0.lock().unwrap().len(), MAX_SESSIONS);
        assert_eq!(
            s.check(&first, &admin, Command::AddUser),
            Err(Refusal::BadSessionid)
        );
    }
}
