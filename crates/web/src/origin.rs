//! Who is asking, and may they: the Origin check against cross-site WebSocket hijacking
//! (RFC 6455 §10.2, RFC 7395 §5), and the client's address behind trusted reverse proxies
//! (`X-Forwarded-For`, RFC 7239 `Forwarded`). Sans-IO: header values in, verdicts out.

use std::net::{IpAddr, SocketAddr};

use axum::http::{header, HeaderMap, HeaderValue};

/// Whether a page of `origin` may open a WebSocket to the listener reached as `host` (the
/// request's `Host`): no `Origin` (not a browser), the same origin, or one `allowed` lists
/// (`"*"`: any). Same origin compares the authority (host and port, default ports
/// dropped, case-insensitive), not the scheme: behind a TLS-terminating proxy the page is
/// `https` while the request reaches us in plain HTTP.
pub fn origin_allowed(origin: Option<&str>, host: Option<&str>, allowed: &[String]) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let origin = origin.trim().trim_end_matches('/');
    if allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let Some((scheme, authority)) = origin.split_once("://") else {
        // "null" (sandboxed frames, file: pages) and anything unreadable.
        return false;
    };
    let Some(host) = host else {
        return false;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => return false,
    };
    let strip = |a: &str| {
        let a = a.to_ascii_lowercase();
        match a.strip_suffix(default_port) {
            Some(s) => s.to_string(),
            None => a,
        }
    };
    strip(authority) == strip(host)
}

/// The `Access-Control-Allow-Origin` a request with `headers` is answered with, by
/// [`origin_allowed`] against `allowed`: `Some(None)` without an `Origin` (no CORS),
/// `Some(origin)` when allowed, `None` when the origin is not allowed.
pub fn cors_origin(headers: &HeaderMap, allowed: &[String]) -> Option<Option<HeaderValue>> {
    let origin = headers.get(header::ORIGIN);
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_text = origin.and_then(|v| v.to_str().ok());
    origin_allowed(origin_text, host, allowed).then(|| origin.cloned())
}

/// Adds the [`cors_origin`] answer to a response's headers (and `Vary: Origin`, since the
/// answer depends on it).
pub fn add_cors(h: &mut HeaderMap, origin: Option<HeaderValue>) {
    if let Some(o) = origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// The client's address: the TCP peer, or, when that peer is one of `trusted` proxies, the
/// address the proxies recorded: walking `X-Forwarded-For` (else `Forwarded`'s `for=`) from
/// the right, the first address that is not a trusted proxy itself. Anything unreadable
/// leaves the last trustworthy address.
pub fn client_addr(
    peer: SocketAddr,
    forwarded_for: Option<&str>,
    forwarded: Option<&str>,
    trusted: &[IpAddr],
) -> SocketAddr {
    if !trusted.contains(&peer.ip()) {
        return peer;
    }
    let hops: Vec<&str> = match (forwarded_for, forwarded) {
        (Some(xff), _) => xff.split(',').map(str::trim).collect(),
        (None, Some(fwd)) => fwd
            .split(',')
            .filter_map(|el| {
                el.split(';').find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    k.eq_ignore_ascii_case("for")
                        .then_some(v.trim().trim_matches('"'))
                })
            })
            .collect(),
        (None, None) => return peer,
    };
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            return client;
        };
        client = SocketAddr::new(ip, 0);
        if !trusted.contains(&ip) {
            return client;
        }
    }
    client
}

/// One hop's address: `1.2.3.4`, `1.2.3.4:5`, `2001:db8::1`, `[2001:db8::1]:5`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = hop.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    hop.strip_prefix('[')?.split(']').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn same_origin_by_default() {
        let host = Some("chat.example.org");
        assert!(origin_allowed(None, host, &[]));
        assert!(origin_allowed(Some("https://chat.example.org"), host, &[]));
        assert!(origin_allowed(
            Some("https://Chat.Example.org:443"),
            host,
            &[]
        ));
        assert!(origin_allowed(
            Some("http://127.0.0.1:5280"),
            Some("127.0.0.1:5280"),
            &[]
        ));
        assert!(!origin_allowed(Some("https://evil.example"), host, &[]));
        assert!(!origin_allowed(
            Some("http://127.0.0.1:8000"),
            Some("127.0.0.1:5280"),
            &[]
        ));
        assert!(!origin_allowed(Some("null"), host, &[]));
        assert!(!origin_allowed(Some("https://chat.example.org"), None, &[]));
    }

    #[test]
    fn the_allowlist_adds_origins() {
        let allowed = vec!["https://app.example.net/".to_string()];
        assert!(origin_allowed(
            Some("https://app.example.net"),
            Some("x"),
            &allowed
        ));
        assert!(!origin_allowed(
            Some("http://app.example.net"),
            Some("x"),
            &allowed
        ));
        assert!(origin_allowed(Some("null"), Some("x"), &["*".to_string()]));
    }

    #[test]
    fn forwarded_addresses_only_from_trusted_proxies() {
        let proxy: SocketAddr = "10.0.0.1:4000".parse().unwrap();
        let trusted: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        let ip = |s: SocketAddr| s.ip().to_string();
        // Untrusted peer: headers ignored.
        let stranger: SocketAddr = "192.0.2.9:1".parse().unwrap();
        assert_eq!(
            client_addr(stranger, Some("1.1.1.1"), None, &trusted),
            stranger
        );
        // The rightmost hop that is not a proxy of ours; a forged left part is not believed.
        let xff = Some("6.6.6.6, 203.0.113.7, 10.0.0.2");
        assert_eq!(ip(client_addr(proxy, xff, None, &trusted)), "203.0.113.7");
        let fwd = Some("for=\"[2001:db8::7]:99\";proto=https, for=10.0.0.2");
        assert_eq!(ip(client_addr(proxy, None, fwd, &trusted)), "2001:db8::7");
        assert_eq!(
            ip(client_addr(proxy, Some("junk"), None, &trusted)),
            "10.0.0.1"
        );
        assert_eq!(client_addr(proxy, None, None, &trusted), proxy);
    }
}
