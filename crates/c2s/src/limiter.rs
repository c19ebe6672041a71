//! Auth-failure rate limits (per IP address, IPv6 by /64, and per account), so password
//! guessing costs the attacker time while legitimate users on other addresses are
//! unaffected. The counting is `rookery_stream::RateLimit`'s, shared with the other
//! listeners.

use std::net::IpAddr;

use rookery_stream::{IpKey, RateLimit};

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

    /// Records a failure.
    pub fn failed(&self, ip: IpAddr, account: Option<&str>) {
        self.ip.hit(IpKey::from(ip));
        if let Some(a) = account {
            self.account.hit(a.to_string());
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
