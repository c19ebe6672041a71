//! Federation settings; documented in `docs/configuration.md` under `[s2s]`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// Server-to-server settings. The listen addresses are in `[listen]` (`s2s`,
/// `s2s_direct_tls`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S2sConfig {
    /// Federate at all: without it, stanzas to other domains bounce with
    /// `remote-server-not-found` and no listener runs.
    pub enabled: bool,
    /// Accept a peer only with a certificate valid for its domain (then SASL EXTERNAL, or
    /// dialback over the verified TLS). When false, a peer whose certificate does not verify
    /// is authenticated by Server Dialback (XEP-0220) instead — what most of the federated
    /// network still does, and what loopback tests with self-signed certificates need.
    pub require_valid_certificates: bool,
    /// Refuse incoming streams that do not use TLS. (Outgoing streams always use TLS.)
    pub require_encryption: bool,
    /// Offer and use Server Dialback at all.
    pub dialback: bool,
    /// Trust the Mozilla root certificates compiled in (webpki-roots).
    pub use_webpki_roots: bool,
    /// Extra trusted CA certificates (PEM), e.g. a private federation's CA.
    pub ca_file: Option<PathBuf>,
    /// The dialback secret; default: generated into `<data_dir>/dialback.secret` on first
    /// start. Set it when several processes serve the same domain.
    pub dialback_secret: Option<String>,
    /// Static routes, domain → `host:port` (STARTTLS) or `tls://host:port` (direct TLS);
    /// they replace DNS for those domains.
    pub routes: BTreeMap<String, String>,
    /// Look up SRV/A/AAAA records (off: only static routes and `domain:5269` through the
    /// system resolver).
    pub dns: bool,
    /// A DNS server `ip:port` to ask instead of the system's (private federations, tests).
    pub dns_server: Option<String>,
    /// Max bytes of one stanza from a peer server.
    pub max_stanza_bytes: usize,
    /// Seconds for an outgoing stream to connect and authenticate, and for an incoming one
    /// to authenticate its first domain.
    pub negotiation_timeout_secs: u64,
    /// Seconds to connect to one address before trying the next.
    pub connect_timeout_secs: u64,
    /// Seconds a dialback verification may take before the answer is an error.
    pub dialback_timeout_secs: u64,
    /// Seconds without traffic after which a stream (either direction) is closed; an
    /// outgoing one is opened again when the next stanza comes.
    pub idle_timeout_secs: u64,
    /// Stanzas queued per outgoing stream while it connects or when the peer is slow; past
    /// that they bounce with `resource-constraint`.
    pub queue_len: usize,
    /// Bytes of stanzas (serialized) queued per outgoing stream; past that they bounce with
    /// `resource-constraint`. `queue_len` alone let a domain that accepts TCP and never
    /// answers hold 512 stanzas of up to 512 KiB for the whole negotiation timeout.
    pub queue_max_bytes: usize,
    /// Bytes of stanzas queued over all outgoing streams together; past that they bounce
    /// the same way: the bound when a sender names many such domains.
    pub queue_total_bytes: usize,
    /// Incoming server connections open at once, both s2s ports together; at the cap no
    /// more are accepted until one ends. 0: the open-file limit less 50.
    pub max_connections: usize,
    /// Incoming server connections open at once from one IP address (IPv6: one /64); one
    /// more is closed right after it is accepted. 0: no limit.
    pub max_connections_per_ip: usize,
    /// Incoming server connections still negotiating at once; when full, the oldest of them
    /// is dropped for the new one. 0: no limit.
    pub max_negotiating: usize,
    /// New incoming connections accepted per IP address per minute.
    pub connections_per_ip_per_minute: u32,
    /// Dialback verifications one incoming stream may have pending.
    pub max_pending_dialback: usize,
    /// Seconds during which stanzas for a domain bounce at once after an outgoing stream to
    /// it failed (instead of a new DNS lookup and connection per stanza); doubled after each
    /// failure in a row, reset when a stream authenticates. `0` disables.
    pub backoff_initial_secs: u64,
    /// The longest back-off period, in seconds.
    pub backoff_max_secs: u64,
}

impl S2sConfig {
    /// How long a dialback verification may take (at least a second); both the incoming
    /// stream that asked and the outgoing stream that carries the question give up then.
    pub fn dialback_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.dialback_timeout_secs.max(1))
    }

    /// The connection limits of the federation listeners.
    pub fn connection_limits(&self) -> rookery_stream::CapLimits {
        rookery_stream::CapLimits {
            max_connections: self.max_connections,
            max_per_ip: self.max_connections_per_ip,
            max_negotiating: self.max_negotiating,
        }
    }
}

impl Default for S2sConfig {
    fn default() -> Self {
        S2sConfig {
            enabled: true,
            require_valid_certificates: true,
            require_encryption: true,
            dialback: true,
            use_webpki_roots: true,
            ca_file: None,
            dialback_secret: None,
            routes: BTreeMap::new(),
            dns: true,
            dns_server: None,
            max_stanza_bytes: 512 * 1024,
            negotiation_timeout_secs: 30,
            connect_timeout_secs: 10,
            dialback_timeout_secs: 30,
            idle_timeout_secs: 600,
            queue_len: 512,
            queue_max_bytes: 4 * 1024 * 1024,
            queue_total_bytes: 64 * 1024 * 1024,
            max_connections: 0,
            max_connections_per_ip: 0,
            max_negotiating: 200,
            connections_per_ip_per_minute: 60,
            max_pending_dialback: 32,
            backoff_initial_secs: 5,
            backoff_max_secs: 300,
        }
    }
}
