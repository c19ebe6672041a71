//! Incoming connection rate per IP address: a peer (or an attacker posing as many) cannot
//! open unauthenticated streams faster than the configured rate.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;

const WINDOW: Duration = Duration::from_secs(60);

/// Counts connections per IP in fixed one-minute windows.
#[derive(Debug)]
pub struct ConnLimiter {
    max: u32,
    map: DashMap<IpAddr, (Instant, u32)>,
}

impl ConnLimiter {
    /// At most `per_minute` connections per IP per minute (0: no limit).
    pub fn new(per_minute: u32) -> Self {
        ConnLimiter {
            max: per_minute,
            map: DashMap::new(),
        }
    }

    /// Counts a new connection from `ip`; false when it is over the limit.
    pub fn admit(&self, ip: IpAddr) -> bool {
        self.admit_at(ip, Instant::now())
    }

    fn admit_at(&self, ip: IpAddr, now: Instant) -> bool {
        if self.max == 0 {
            return true;
        }
        let ok = {
            let mut e = self.map.entry(ip).or_insert((now, 0));
            if now.duration_since(e.0) >= WINDOW {
                *e = (now, 0);
            }
            e.1 = e.1.saturating_add(1);
            e.1 <= self.max
        };
        if self.map.len() > 10_000 {
            self.map.retain(|_, v| now.duration_since(v.0) < WINDOW);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_ip_and_window() {
        let l = ConnLimiter::new(2);
        let a: IpAddr = [127, 0, 0, 2].into();
        let b: IpAddr = [127, 0, 0, 3].into();
        let t = Instant::now();
        assert!(l.admit_at(a, t));
        assert!(l.admit_at(a, t));
        assert!(!l.admit_at(a, t));
        assert!(l.admit_at(b, t));
        assert!(l.admit_at(a, t + WINDOW));
        assert!(ConnLimiter::new(0).admit_at(a, t));
    }
}
