//! Auth-failure rate limits (per IP address, IPv6 by /64, and per account), so password
//! guessing costs the attacker time while legitimate users on other addresses are
//! unaffected. The counting is `rookery_stream::RateLimit`'s, shared with the other
//! listeners.
//!
//! In a cluster the limits are the cluster's, not each node's: a node tells its peers of
//! every failure it counts (a module note, `Core::tell_peers`), and each counts it as its
//! own — else an attacker spreading guesses over N nodes would get N times the limit. Only
//! counted failures cross, and an address or account past its limit is refused before it
//! can fail again, so the notes are bounded by the limits themselves.

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use rookery_core::{priority, Core, Declaration, Event, EventKind, Module};
use rookery_stream::{IpKey, RateLimit};

/// The note topic (see `Core::tell_peers`).
const TOPIC: &str = "c2s-auth-failure";

/// Per-IP and per-account failure windows.
#[derive(Debug)]
pub struct AuthLimiter {
    ip: RateLimit<IpKey>,
    account: RateLimit<String>,
}

impl AuthLimiter {
    /// Limits of `per_ip` and `per_account` failures a minute.
    pub fn new(per_ip: u32, per_account: u32) -> Self {
        AuthLimiter {
            ip: RateLimit::new(per_ip),
            account: RateLimit::new(per_account),
        }
    }

    /// Applies reloaded limits from the next failure on.
    pub fn set_limits(&self, per_ip: u32, per_account: u32) {
        self.ip.set_max(per_ip);
        self.account.set_max(per_account);
    }

    /// Whether an attempt from `ip` (for `account`, once known) must be refused now.
    pub fn blocked(&self, ip: IpAddr, account: Option<&str>) -> bool {
        self.ip.exceeded(&IpKey::from(ip))
            || account.is_some_and(|a| self.account.exceeded(&a.to_string()))
    }

    /// Records a failure, and tells the other nodes of a cluster.
    pub fn failed(&self, core: &Core, ip: IpAddr, account: Option<&str>) {
        self.count(ip, account);
        core.tell_peers(TOPIC, || note(ip, account));
    }

    fn count(&self, ip: IpAddr, account: Option<&str>) {
        self.ip.hit(IpKey::from(ip));
        if let Some(a) = account {
            self.account.hit(a.to_string());
        }
    }
}

/// A failure as a note's body: the address, then the account named, if any, after a line
/// break (what a client names may hold anything but the address comes first).
fn note(ip: IpAddr, account: Option<&str>) -> String {
    match account {
        Some(a) => format!("{ip}\n{a}"),
        None => ip.to_string(),
    }
}

/// What [`note`] wrote; `None` when it does not read.
fn read_note(body: &str) -> Option<(IpAddr, Option<&str>)> {
    let (ip, account) = match body.split_once('\n') {
        Some((ip, a)) => (ip, Some(a)),
        None => (body, None),
    };
    Some((ip.parse().ok()?, account))
}

/// The limiter hears the other nodes' failures (see the module docs).
#[async_trait]
impl Module for AuthLimiter {
    fn name(&self) -> &'static str {
        "auth-limits"
    }

    fn declare(&self) -> Declaration {
        Declaration {
            events: vec![(EventKind::ClusterNote, priority::DEFAULT)],
            ..Declaration::default()
        }
    }

    async fn event(&self, _core: &Arc<Core>, event: &Event) {
        let Event::ClusterNote { topic, body } = event else {
            return;
        };
        if topic != TOPIC {
            return;
        }
        match read_note(body) {
            Some((ip, account)) => self.count(ip, account),
            None => tracing::warn!(body, "unreadable auth failure note from a peer"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn blocks_after_the_limit() {
        let l = AuthLimiter::new(2, 10);
        let ip: IpAddr = [127, 0, 0, 1].into();
        assert!(!l.blocked(ip, None));
        l.count(ip, Some("alice"));
        l.count(ip, Some("alice"));
        assert!(l.blocked(ip, None));
        assert!(!l.blocked([127, 0, 0, 2].into(), Some("alice")));
    }

    #[test]
    fn failure_notes_read_back() {
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        for (ip, account) in [
            (v6, Some("al ice\nx")),
            (v6, None),
            ([10, 0, 0, 1].into(), Some("")),
        ] {
            assert_eq!(read_note(&note(ip, account)), Some((ip, account)));
        }
        assert_eq!(read_note("not an address\nalice"), None);
        assert_eq!(read_note(""), None);
    }
}
