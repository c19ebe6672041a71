//! Client listener settings; documented in `docs/configuration.md` under `[c2s]`.

use serde::Deserialize;

/// Client listener settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct C2sConfig {
    /// Max bytes of one stanza after authentication (RFC 6120 §13.12 asks for ≥ 10000).
    pub max_stanza_bytes: usize,
    /// Seconds a connection may take from TCP accept to a bound resource.
    pub negotiation_timeout_secs: u64,
    /// Seconds without any byte from a bound client before the stream is closed with
    /// `connection-timeout`; 0 disables (keepalive pings come with stream management).
    pub idle_timeout_secs: u64,
    /// SASL attempts allowed on one stream before it is closed.
    pub max_auth_attempts: u32,
    /// Failed authentications per IP address per minute before further attempts get
    /// `temporary-auth-failure`.
    pub auth_failures_per_ip_per_minute: u32,
    /// Failed authentications per account per minute, likewise.
    pub auth_failures_per_account_per_minute: u32,
}

impl Default for C2sConfig {
    fn default() -> Self {
        C2sConfig {
            max_stanza_bytes: 256 * 1024,
            negotiation_timeout_secs: 30,
            idle_timeout_secs: 0,
            max_auth_attempts: 3,
            auth_failures_per_ip_per_minute: 10,
            auth_failures_per_account_per_minute: 5,
        }
    }
}
