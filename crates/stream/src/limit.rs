//! One rate-limit type for every listener: events (connections, failed authentications,
//! failed handshakes) counted per key in fixed one-minute windows.
//!
//! Keys for addresses are [`IpKey`]s: an IPv6 peer is counted by its /64, since one host
//! commonly holds a whole /64 and could otherwise step around a per-address limit by using
//! a fresh address for each attempt (RFC 6177 §3 assigns /64s and larger to end sites).
//!
//! Why not `governor`: its keyed GCRA limiter answers "may this one event happen?" and
//! counts it in the same call, while two of our three uses ask "is this key blocked?"
//! before the event (a failure) is known; a peek is not part of its API.

use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// The length of one counting window.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Keys past which stale windows are swept, so a flood from many addresses cannot grow the
/// map without bound.
const SWEEP_AT: usize = 10_000;

/// The key a peer address is counted under: the address itself for IPv4 (an IPv4-mapped
/// IPv6 address counts as its IPv4 address), its /64 prefix for IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpKey {
    /// One IPv4 address.
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6Prefix(u64),
}

impl From<IpAddr> for IpKey {
    fn from(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => IpKey::V4(v4.octets()),
            IpAddr::V6(v6) => IpKey::V6Prefix((v6.to_bits() >> 64) as u64),
        }
    }
}

/// Events per key in fixed one-minute windows, with a limit of `max` per window.
#[derive(Debug)]
pub struct RateLimit<K: Eq + Hash> {
    /// Changeable at run time (reload).
    max: AtomicU32,
    map: DashMap<K, (Instant, u32)>,
}

impl<K: Eq + Hash> RateLimit<K> {
    /// A limit of `max` events per key per minute.
    pub fn new(max: u32) -> Self {
        RateLimit {
            max: AtomicU32::new(max),
            map: DashMap::new(),
        }
    }

    /// Applies a new limit from the next event on (reload); counts so far are kept.
    pub fn set_max(&self, max: u32) {
        self.max.store(max, Ordering::Relaxed);
    }

    fn max(&self) -> u32 {
        self.max.load(Ordering::Relaxed)
    }

    /// Whether `key` has used up its events in the current window (the event that is about
    /// to happen would be over the limit). Counts nothing.
    pub fn exceeded(&self, key: &K) -> bool {
        self.exceeded_at(key, Instant::now())
    }

    /// Counts one event for `key`; true while it is within the limit (at most `max` in the
    /// window, this one included).
    pub fn hit(&self, key: K) -> bool {
        self.hit_at(key, Instant::now())
    }

    fn exceeded_at(&self, key: &K, now: Instant) -> bool {
        self.map
            .get(key)
            .is_some_and(|e| now.duration_since(e.0) < WINDOW && e.1 >= self.max())
    }

    fn hit_at(&self, key: K, now: Instant) -> bool {
        let count = {
            let mut e = self.map.entry(key).or_insert((now, 0));
            if now.duration_since(e.0) >= WINDOW {
                *e = (now, 0);
            }
            e.1 = e.1.saturating_add(1);
            e.1
        };
        if self.map.len() > SWEEP_AT {
            self.map.retain(|_, v| now.duration_since(v.0) < WINDOW);
        }
        count <= self.max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpKey {
        IpKey::from(s.parse::<IpAddr>().unwrap_or(IpAddr::from([0u8; 4])))
    }

    #[test]
    fn counts_per_key_and_window() {
        let l = RateLimit::new(2);
        let (a, b) = (ip("127.0.0.2"), ip("127.0.0.3"));
        let t = Instant::now();
        assert!(!l.exceeded_at(&a, t));
        assert!(l.hit_at(a, t));
        assert!(l.hit_at(a, t));
        assert!(l.exceeded_at(&a, t));
        assert!(!l.hit_at(a, t));
        assert!(!l.exceeded_at(&b, t));
        assert!(l.hit_at(b, t));
        // A new window starts afresh.
        assert!(!l.exceeded_at(&a, t + WINDOW));
        assert!(l.hit_at(a, t + WINDOW));
        // A higher limit (reload) counts the window so far against the new one.
        l.set_max(3);
        assert!(l.hit_at(a, t + WINDOW));
        assert!(!l.exceeded_at(&a, t + WINDOW));
        assert!(l.hit_at(a, t + WINDOW));
        assert!(l.exceeded_at(&a, t + WINDOW));
    }

    #[test]
    fn ipv6_is_keyed_by_its_64() {
        assert_eq!(ip("2001:db8:1:2::1"), ip("2001:db8:1:2:ffff::9"));
        assert_ne!(ip("2001:db8:1:2::1"), ip("2001:db8:1:3::1"));
        assert_eq!(ip("::ffff:192.0.2.1"), ip("192.0.2.1"));
        assert_ne!(ip("192.0.2.1"), ip("192.0.2.2"));
        let l = RateLimit::new(1);
        assert!(l.hit(ip("2001:db8::1")));
        assert!(l.exceeded(&ip("2001:db8::2")));
    }
}
