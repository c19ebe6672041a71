//! Auth-failure rate limits (per IP address and per account), so password guessing costs
//! the attacker time while legitimate users on other addresses are unaffected.

use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;

const WINDOW: Duration = Duration::from_secs(60);

/// Failures counted in fixed one-minute windows.
#[derive(Debug)]
struct Window<K: Eq + Hash> {
    max: u32,
    map: DashMap<K, (Instant, u32)>,
}

impl<K: Eq + Hash> Window<K> {
    fn new(max: u32) -> Self {
        Window {
            max,
            map: DashMap::new(),
        }
    }

    fn blocked(&self, k: &K, now: Instant) -> bool {
        self.map
            .get(k)
            .is_some_and(|e| now.duration_since(e.0) < WINDOW && e.1 >= self.max)
    }

    fn fail(&self, k: K, now: Instant) {
        let mut e = self.map.entry(k).or_insert((now, 0));
        if now.duration_since(e.0) >= WINDOW {
            *e = (now, 0);
        }
        e.1 = e.1.saturating_add(1);
        drop(e);
        if self.map.len() > 10_000 {
            self.map.retain(|_, v| now.duration_since(v.0) < WINDOW);
        }
    }
}

/// Per-IP and per-account failure windows.
#[derive(Debug)]
pub struct AuthLimiter {
    ip: Window<IpAddr>,
    account: Window<String>,
}

impl AuthLimiter {
    /// Limits of `per_ip` and `per_account` failures a minute.
    pub fn new(per_ip: u32, per_account: u32) -> Self {
        AuthLimiter {
            ip: Window::new(per_ip),
            account: Window::new(per_account),
        }
    }

    /// Whether an attempt from `ip` (for `account`, once known) must be refused now.
    pub fn blocked(&self, ip: IpAddr, account: Option<&str>) -> bool {
        let now = Instant::now();
        self.ip.blocked(&ip, now)
            || account.is_some_and(|a| self.account.blocked(&a.to_string(), now))
    }

    /// Records a failure.
    pub fn failed(&self, ip: IpAddr, account: Option<&str>) {
        let now = Instant::now();
        self.ip.fail(ip, now);
        if let Some(a) = account {
            self.account.fail(a.to_string(), now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit() {
        let l = AuthLimiter::new(2, 10);
        let ip: IpAddr = [127, 0, 0, 1].into();
        assert!(!l.blocked(ip, None));
        l.failed(ip, Some("alice"));
        l.failed(ip, Some("alice"));
        assert!(l.blocked(ip, None));
        assert!(!l.blocked([127, 0, 0, 2].into(), Some("alice")));
    }
}
