//! Public HTTP listener settings; documented in `docs/configuration.md` under `[http]`.

use std::net::IpAddr;

use serde::Deserialize;

/// The `[http]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Origins (`scheme://host[:port]`) whose pages may open a WebSocket, besides the
    /// listener's own origin (same-origin is always allowed); `"*"` allows any. Requests
    /// without an `Origin` header (non-browser clients) are always allowed: cross-site
    /// WebSocket hijacking needs a browser, and browsers always send one. The same list
    /// admits cross-origin pages calling BOSH and the HTTP API (CORS).
    pub allowed_origins: Vec<String>,
    /// The plain listener (`[listen] http`) is behind a TLS-terminating reverse proxy: it
    /// may then bind a non-loopback address, and its streams count as encrypted (PLAIN
    /// allowed). Without it plain HTTP is served on loopback only.
    pub behind_tls_proxy: bool,
    /// Addresses of reverse proxies whose `X-Forwarded-For` / `Forwarded` headers are
    /// believed; the client address found there feeds the per-IP limits and the logs.
    pub trusted_proxies: Vec<IpAddr>,
    /// RFC 7395 §3.6.1: when set, every WebSocket client is sent to this URI instead
    /// (`<close see-other-uri='…'/>` in answer to its `<open/>`).
    pub websocket_see_other_uri: Option<String>,
    /// BOSH sessions one client address may have open at once; beyond it a new one is
    /// refused (`policy-violation`).
    pub bosh_max_sessions_per_ip: usize,
    /// Seconds a BOSH session lives without a request held (XEP-0124 §7.1 `inactivity`, as
    /// its creation response states): a client between two requests, or one that lost its
    /// connection, has this long to come back; a closed tab holds its session this long.
    pub bosh_inactivity_secs: u64,
    /// The URL clients reach the web listener at (`https://chat.example.org`), for the
    /// XEP-0156 documents; without it they name the address each request came to.
    pub public_url: Option<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            allowed_origins: Vec::new(),
            behind_tls_proxy: false,
            trusted_proxies: Vec::new(),
            websocket_see_other_uri: None,
            bosh_max_sessions_per_ip: 20,
            bosh_inactivity_secs: 60,
            public_url: None,
        }
    }
}

/// The longest `bosh_inactivity_secs`: an hour, far beyond any client's pause between two
/// requests.
const MAX_BOSH_INACTIVITY_SECS: u64 = 3600;

impl HttpConfig {
    /// The settings `serve` would refuse.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_BOSH_INACTIVITY_SECS).contains(&self.bosh_inactivity_secs) {
            return Err(format!(
                "[http] bosh_inactivity_secs = {}: must be between 1 and \
                 {MAX_BOSH_INACTIVITY_SECS} (0 would end a session between two requests)",
                self.bosh_inactivity_secs
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bosh_inactivity_is_between_a_second_and_an_hour() {
        let with = |secs| {
            HttpConfig {
                bosh_inactivity_secs: secs,
                ..HttpConfig::default()
            }
            .validate()
        };
        assert!(with(60).is_ok() && with(1).is_ok() && with(3600).is_ok());
        assert!(with(0).is_err_and(|e| e.contains("bosh_inactivity_secs = 0")));
        assert!(with(3601).is_err());
    }
}
