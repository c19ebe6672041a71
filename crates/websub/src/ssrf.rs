//! Server-side request forgery guard: a callback URL must not make the server talk to its own
//! network. Callbacks whose addresses are loopback, private, link-local, unspecified (and the
//! other non-global ranges below) are refused unless `[webhooks] allow_private` is set.
//!
//! The check applies to the *resolved* addresses, every time a connection is made: the HTTP
//! client resolves names through [`Resolver`], which drops refused addresses, so a name
//! that resolved to a public address at subscription time and to `127.0.0.1` later (DNS
//! rebinding) still cannot reach loopback. Literal addresses skip resolvers, so
//! [`check_literal`] runs before every request too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why a callback's address is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SsrfError {
    /// An address in a refused range.
    #[error("callback address {0} is not public (see [webhooks] allow_private)")]
    Refused(IpAddr),
    /// The name resolved to no address.
    #[error("callback host does not resolve")]
    NoAddress,
}

/// Whether `ip` is outside the public Internet: loopback, private (RFC 1918, RFC 4193),
/// link-local, unspecified, shared (RFC 6598), multicast, broadcast, `0.0.0.0/8`, and
/// IPv4-mapped IPv6 forms of those.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_internal(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4_internal(v4),
            None => v6_internal(v6),
        },
    }
}

fn v4_internal(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (b & 0xc0) == 64)
}

fn v6_internal(ip: Ipv6Addr) -> bool {
    let first = ip.segments().first().copied().unwrap_or_default();
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
}

/// Refuses `ip` unless `allow_private`.
pub fn check_ip(ip: IpAddr, allow_private: bool) -> Result<(), SsrfError> {
    if !allow_private && is_internal(ip) {
        return Err(SsrfError::Refused(ip));
    }
    Ok(())
}

/// Refuses a URL whose host is an internal address literal unless `allow_private` (names are
/// checked by [`Resolver`] when connecting, and by [`check_resolved`] up front).
pub fn check_literal(url: &url::Url, allow_private: bool) -> Result<(), SsrfError> {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => check_ip(IpAddr::V4(ip), allow_private),
        Some(url::Host::Ipv6(ip)) => check_ip(IpAddr::V6(ip), allow_private),
        _ => Ok(()),
    }
}

/// Resolves the URL's host now and refuses it if any address is internal (unless
/// `allow_private`): a subscription request naming such a callback gets `400` at once.
pub async fn check_resolved(url: &url::Url, allow_private: bool) -> Result<(), SsrfError> {
    check_literal(url, allow_private)?;
    let Some(url::Host::Domain(name)) = url.host() else {
        return Ok(());
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name, 0))
        .await
        .map_err(|_| SsrfError::NoAddress)?
        .collect();
    if addrs.is_empty() {
        return Err(SsrfError::NoAddress);
    }
    for a in addrs {
        check_ip(a.ip(), allow_private)?;
    }
    Ok(())
}

/// The HTTP client's resolver: the system's, minus refused addresses.
#[derive(Debug, Clone, Copy)]
pub struct Resolver {
    /// `[webhooks] allow_private`.
    pub allow_private: bool,
}

impl Resolve for Resolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow_private;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| check_ip(a.ip(), allow).is_ok())
                .collect();
            if addrs.is_empty() {
                return Err(
                    Box::new(SsrfError::NoAddress) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn internal_ranges() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1::1", "100.128.0.1"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn literals_and_names_are_checked() {
        let u = |s: &str| url::Url::parse(s).unwrap();
        assert!(check_literal(&u("http://127.0.0.1:8080/cb"), false).is_err());
        assert!(check_literal(&u("http://[::1]/cb"), false).is_err());
        assert!(check_literal(&u("http://127.0.0.1/cb"), true).is_ok());
        assert!(check_resolved(&u("http://localhost/cb"), false)
            .await
            .is_err());
        assert!(check_resolved(&u("http://localhost/cb"), true)
            .await
            .is_ok());
    }
}
