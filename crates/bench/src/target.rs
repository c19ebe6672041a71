//! Where the load goes and where it comes from: the loopback-only rule, source addresses
//! spread over 127.0.0.0/8, and the file-descriptor limit.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{bail, Context};

/// Whether `ip` is on this machine's loopback (127.0.0.0/8 or ::1).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets().first() == Some(&127),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Resolves `host:port`. A loopback address (or `localhost`) is always accepted; anything
/// else only with `allow_remote`, so nobody load-tests a production server by accident.
pub async fn resolve(host: &str, port: u16, allow_remote: bool) -> anyhow::Result<SocketAddr> {
    let addr = if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        SocketAddr::new(ip, port)
    } else if host.eq_ignore_ascii_case("localhost") {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
    } else if allow_remote {
        tokio::net::lookup_host((host, port))
            .await
            .with_context(|| format!("resolving {host}"))?
            .next()
            .with_context(|| format!("{host} has no address"))?
    } else {
        bail!(
            "refusing to resolve {host:?}: rookery-bench targets loopback (127.0.0.0/8, ::1) \
             only; pass --allow-remote to load-test a server you own on another host"
        );
    };
    if !is_loopback(addr.ip()) && !allow_remote {
        bail!(
            "refusing target {addr}: rookery-bench targets loopback (127.0.0.0/8, ::1) only; \
             pass --allow-remote to load-test a server you own on another host"
        );
    }
    Ok(addr)
}

/// The `i`-th source address when spreading connections over `count` loopback addresses:
/// 127.0.0.1, 127.0.0.2, … (skipping .0 and .255 in the last octet). Each (source, target)
/// pair has its own ~28,000 ephemeral ports, so 100,000 connections need 4 sources.
/// `None` (let the kernel choose) for a non-IPv4 or non-loopback target, or `count <= 1`.
pub fn source_addr(target: SocketAddr, count: u32, i: usize) -> Option<IpAddr> {
    if count <= 1 || !target.is_ipv4() || !is_loopback(target.ip()) {
        return None;
    }
    let n = (i as u64 % u64::from(count)) as u32;
    // 254 usable addresses per /24: x.y.z.1 … x.y.z.254.
    let low = n % 254 + 1;
    let mid = n / 254;
    Some(IpAddr::V4(Ipv4Addr::new(
        127,
        ((mid >> 8) & 0xff) as u8,
        (mid & 0xff) as u8,
        low as u8,
    )))
}

/// How many source addresses `clients` connections need (about 20,000 ports each).
pub fn sources_needed(clients: usize) -> u32 {
    u32::try_from(clients.div_ceil(20_000).max(1)).unwrap_or(u32::MAX)
}

/// Raises RLIMIT_NOFILE to at least `want` (root may raise the hard limit too); returns the
/// soft limit in force.
pub fn raise_nofile(want: u64) -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let cur = getrlimit(Resource::Nofile);
    let soft = cur.current.unwrap_or(u64::MAX);
    if soft >= want {
        return soft;
    }
    let hard = cur.maximum.unwrap_or(u64::MAX);
    if hard < want {
        // Only root can go past the hard limit (and only up to fs.nr_open).
        let raised = Rlimit {
            current: Some(want),
            maximum: Some(want),
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return want;
        }
    }
    let target = want.min(hard);
    let lim = Rlimit {
        current: Some(target),
        maximum: cur.maximum,
    };
    if setrlimit(Resource::Nofile, lim).is_ok() {
        target
    } else {
        soft
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only() {
        assert!(is_loopback(
            "127.0.0.1"
                .parse()
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
        ));
        assert!(is_loopback(
            "127.3.4.5"
                .parse()
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
        ));
        assert!(is_loopback(
            "::1".parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
        ));
        assert!(!is_loopback(
            "10.0.0.1"
                .parse()
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
        ));
        assert!(!is_loopback(
            "::2".parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
        ));
    }

    #[tokio::test]
    async fn refuses_remote_targets() {
        assert!(resolve("127.0.0.1", 5222, false).await.is_ok());
        assert!(resolve("localhost", 5222, false).await.is_ok());
        assert!(resolve("[::1]", 5222, false).await.is_ok());
        assert!(resolve("192.168.1.10", 5222, false).await.is_err());
        assert!(resolve("example.org", 5222, false).await.is_err());
        assert!(resolve("192.168.1.10", 5222, true).await.is_ok());
    }

    #[test]
    fn sources_spread_over_loopback() {
        let t: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5222);
        assert_eq!(source_addr(t, 1, 5), None);
        let a = source_addr(t, 300, 0);
        let b = source_addr(t, 300, 254);
        let c = source_addr(t, 300, 300);
        assert_eq!(a, Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1))));
        assert_eq!(b, Some(IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1))));
        assert_eq!(c, a);
        assert_eq!(sources_needed(100), 1);
        assert_eq!(sources_needed(100_000), 5);
    }
}
