//! Where to connect for a remote domain: static routes, DNS SRV (RFC 6120 §3.2.1, XEP-0368)
//! with RFC 2782 priority/weight ordering, and the A/AAAA fallback on port 5269.
//!
//! [`order`] is sans-IO (records in, targets out, randomness passed in) so the RFC 2782
//! rules are unit-tested; [`Resolver`] does the DNS queries with hickory.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use rand::Rng;

/// The default server-to-server port (RFC 6120 §14.7).
pub const DEFAULT_PORT: u16 = 5269;

/// A host to try, in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Host name or IP literal.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS from the first byte (XEP-0368) instead of STARTTLS.
    pub direct_tls: bool,
}

impl Target {
    /// Parses a static route: `host:port` (STARTTLS) or `tls://host:port` (direct TLS);
    /// the port defaults to 5269. IPv6 literals go in brackets: `[::1]:5269`.
    pub fn parse_route(s: &str) -> Option<Target> {
        let (direct_tls, rest) = match s.strip_prefix("tls://") {
            Some(r) => (true, r),
            None => (false, s.strip_prefix("tcp://").unwrap_or(s)),
        };
        let (host, port) = if let Some(r) = rest.strip_prefix('[') {
            let (h, after) = r.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().ok()?,
                None if after.is_empty() => DEFAULT_PORT,
                None => return None,
            };
            (h.to_string(), port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().ok()?),
                None => (rest.to_string(), DEFAULT_PORT),
            }
        };
        if host.is_empty() || port == 0 {
            return None;
        }
        Some(Target {
            host,
            port,
            direct_tls,
        })
    }
}

/// One SRV record, from `_xmpps-server` (`direct_tls`) or `_xmpp-server`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    /// Lower is tried first.
    pub priority: u16,
    /// Relative share within a priority.
    pub weight: u16,
    /// Port.
    pub port: u16,
    /// Target host (no trailing dot); `"."` means "no service here".
    pub target: String,
    /// From the XEP-0368 direct-TLS service.
    pub direct_tls: bool,
}

/// Orders the records of both services by RFC 2782: ascending priority; within a priority,
/// a weighted random order (zero-weight records get a small chance, as the RFC's running-sum
/// selection gives them). A lone `"."` target in a service means the domain offers no
/// service there, so it contributes nothing. Duplicates are dropped.
pub fn order(records: Vec<SrvRecord>, rng: &mut impl Rng) -> Vec<Target> {
    let mut records: Vec<SrvRecord> = records
        .into_iter()
        .filter(|r| r.target != "." && !r.target.is_empty())
        .collect();
    records.sort_by_key(|r| r.priority);
    let mut out: Vec<Target> = Vec::with_capacity(records.len());
    let mut i = 0;
    while i < records.len() {
        let prio = records.get(i).map_or(0, |r| r.priority);
        let end = records
            .iter()
            .skip(i)
            .position(|r| r.priority != prio)
            .map_or(records.len(), |n| i + n);
        // RFC 2782: zero-weight records first, then pick by running sum until none remain.
        let mut group: Vec<SrvRecord> = records.get(i..end).unwrap_or_default().to_vec();
        group.sort_by_key(|r| r.weight != 0);
        while !group.is_empty() {
            let total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
            let pick = rng.gen_range(0..=total);
            let mut sum = 0u32;
            let idx = group
                .iter()
                .position(|r| {
                    sum += u32::from(r.weight);
                    sum >= pick
                })
                .unwrap_or(0);
            let r = group.remove(idx);
            let t = Target {
                host: r.target,
                port: r.port,
                direct_tls: r.direct_tls,
            };
            if !out.contains(&t) {
                out.push(t);
            }
        }
        i = end;
    }
    out
}

/// Resolves remote domains to socket addresses.
pub struct Resolver {
    dns: Option<TokioResolver>,
    routes: HashMap<String, Target>,
}

/// Why a domain could not be resolved.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ResolveError {
    /// The domain publishes that it has no XMPP server service (`.` SRV target).
    #[error("{0} offers no server-to-server service")]
    NoService(String),
    /// No address found.
    #[error("no address found for {0}")]
    NotFound(String),
}

impl Resolver {
    /// A resolver with static `routes` (domain → target); DNS through `dns_server`
    /// (`ip:port`, for tests and private federations) or the system configuration; no DNS
    /// at all when `dns` is false.
    pub fn new(
        routes: HashMap<String, Target>,
        dns: bool,
        dns_server: Option<SocketAddr>,
    ) -> Resolver {
        let dns = if !dns {
            None
        } else if let Some(addr) = dns_server {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            let ns = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
            let cfg = ResolverConfig::from_name_servers(vec![ns]);
            TokioResolver::builder_with_config(cfg, Default::default())
                .build()
                .map_err(|e| tracing::warn!(error = %e, "DNS resolver unavailable"))
                .ok()
        } else {
            match TokioResolver::builder_tokio() {
                Ok(b) => b
                    .build()
                    .map_err(|e| tracing::warn!(error = %e, "DNS resolver unavailable"))
                    .ok(),
                Err(e) => {
                    tracing::warn!(error = %e, "no system DNS configuration; only static s2s routes work");
                    None
                }
            }
        };
        Resolver { dns, routes }
    }

    /// The targets for `domain`: its static route, else SRV records of both services in
    /// RFC 2782 order, else the domain itself on port 5269.
    pub async fn targets(&self, domain: &str) -> Result<Vec<Target>, ResolveError> {
        if let Some(t) = self.routes.get(domain) {
            return Ok(vec![t.clone()]);
        }
        let fallback = vec![Target {
            host: domain.to_string(),
            port: DEFAULT_PORT,
            direct_tls: false,
        }];
        let Some(dns) = &self.dns else {
            return Ok(fallback);
        };
        let (tls_name, plain_name) = (
            format!("_xmpps-server._tcp.{domain}."),
            format!("_xmpp-server._tcp.{domain}."),
        );
        let (tls, plain) = tokio::join!(srv(dns, &tls_name, true), srv(dns, &plain_name, false),);
        if tls.is_none() && plain.is_none() {
            return Ok(fallback);
        }
        let all: Vec<SrvRecord> = tls.into_iter().chain(plain).flatten().collect();
        let targets = order(all, &mut rand::thread_rng());
        if targets.is_empty() {
            return Err(ResolveError::NoService(domain.to_string()));
        }
        Ok(targets)
    }

    /// The addresses of a target host (IP literals as they are).
    pub async fn addresses(&self, t: &Target) -> Vec<SocketAddr> {
        let host = t.host.trim_end_matches('.');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return vec![SocketAddr::new(ip, t.port)];
        }
        match &self.dns {
            Some(dns) => match dns.lookup_ip(format!("{host}.")).await {
                Ok(ips) => ips.iter().map(|ip| SocketAddr::new(ip, t.port)).collect(),
                Err(e) => {
                    tracing::debug!(host, error = %e, "address lookup failed");
                    Vec::new()
                }
            },
            None => match tokio::net::lookup_host((host, t.port)).await {
                Ok(it) => it.collect(),
                Err(_) => Vec::new(),
            },
        }
    }
}

/// The SRV records of `name`; `None` when the name has none (or the query failed).
async fn srv(dns: &TokioResolver, name: &str, direct_tls: bool) -> Option<Vec<SrvRecord>> {
    let lookup = match dns.srv_lookup(name).await {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!(name, error = %e, "no SRV records");
            return None;
        }
    };
    let records: Vec<SrvRecord> = lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(SrvRecord {
                priority: s.priority,
                weight: s.weight,
                port: s.port,
                target: if s.target.is_root() {
                    ".".to_string()
                } else {
                    s.target.to_ascii().trim_end_matches('.').to_string()
                },
                direct_tls,
            }),
            _ => None,
        })
        .collect();
    (!records.is_empty()).then_some(records)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn rec(priority: u16, weight: u16, target: &str, direct_tls: bool) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port: 5269,
            target: target.into(),
            direct_tls,
        }
    }

    fn hosts(v: &[Target]) -> Vec<&str> {
        v.iter().map(|t| t.host.as_str()).collect()
    }

    #[test]
    fn priority_orders_groups() {
        let mut rng = StdRng::seed_from_u64(1);
        let v = order(
            vec![
                rec(20, 0, "c", false),
                rec(10, 5, "a", true),
                rec(30, 0, "d", false),
                rec(10, 5, "b", false),
            ],
            &mut rng,
        );
        let h = hosts(&v);
        assert_eq!(h.len(), 4);
        assert!(h[..2].contains(&"a") && h[..2].contains(&"b"));
        assert_eq!(&h[2..], ["c", "d"]);
        assert!(v.iter().find(|t| t.host == "a").unwrap().direct_tls);
    }

    #[test]
    fn weight_shares_first_place() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut first_heavy = 0;
        for _ in 0..2000 {
            let v = order(
                vec![rec(0, 90, "heavy", false), rec(0, 10, "light", false)],
                &mut rng,
            );
            if v[0].host == "heavy" {
                first_heavy += 1;
            }
        }
        // Expected 90 %; allow a wide margin.
        assert!((1600..1950).contains(&first_heavy), "{first_heavy}");
    }

    #[test]
    fn zero_weights_all_appear() {
        let mut rng = StdRng::seed_from_u64(3);
        let v = order(
            vec![
                rec(0, 0, "a", false),
                rec(0, 0, "b", false),
                rec(0, 0, "c", false),
            ],
            &mut rng,
        );
        let mut h = hosts(&v);
        h.sort();
        assert_eq!(h, ["a", "b", "c"]);
    }

    #[test]
    fn dot_target_means_no_service() {
        let mut rng = StdRng::seed_from_u64(0);
        assert!(order(vec![rec(0, 0, ".", false)], &mut rng).is_empty());
        let v = order(vec![rec(0, 0, ".", true), rec(5, 0, "x", false)], &mut rng);
        assert_eq!(hosts(&v), ["x"]);
    }

    #[test]
    fn duplicates_are_dropped() {
        let mut rng = StdRng::seed_from_u64(0);
        let v = order(vec![rec(0, 1, "a", false), rec(1, 1, "a", false)], &mut rng);
        assert_eq!(v.len(), 1);
    }

    #[test]
    fn static_routes_parse() {
        assert_eq!(
            Target::parse_route("127.0.0.2:5269"),
            Some(Target {
                host: "127.0.0.2".into(),
                port: 5269,
                direct_tls: false
            })
        );
        assert_eq!(
            Target::parse_route("tls://xmpp.example.net:5270"),
            Some(Target {
                host: "xmpp.example.net".into(),
                port: 5270,
                direct_tls: true
            })
        );
        assert_eq!(Target::parse_route("host").map(|t| t.port), Some(5269));
        assert_eq!(
            Target::parse_route("[::1]:5299").map(|t| (t.host, t.port)),
            Some(("::1".into(), 5299))
        );
        assert_eq!(Target::parse_route("host:x"), None);
        assert_eq!(Target::parse_route(":5269"), None);
    }

    #[tokio::test]
    async fn static_route_wins_and_fallback_is_5269() {
        let mut routes = HashMap::new();
        routes.insert(
            "a.test".to_string(),
            Target::parse_route("127.0.0.9:1234").unwrap(),
        );
        let r = Resolver::new(routes, false, None);
        let t = r.targets("a.test").await.unwrap();
        assert_eq!((t[0].host.as_str(), t[0].port), ("127.0.0.9", 1234));
        let t = r.targets("b.test").await.unwrap();
        assert_eq!((t[0].host.as_str(), t[0].port), ("b.test", DEFAULT_PORT));
        let a = r
            .addresses(&Target::parse_route("127.0.0.3:99").unwrap())
            .await;
        assert_eq!(a, vec!["127.0.0.3:99".parse().unwrap()]);
    }
}
