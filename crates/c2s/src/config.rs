//! Client listener settings; documented in `docs/configuration.md` under `[c2s]`.

use serde::Deserialize;

/// Client listener settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct C2sConfig {
    /// Whether the STARTTLS listener requires TLS before authentication (RFC 6120 §5.3.1).
    /// When false, STARTTLS is offered but optional and SCRAM may run on the plain stream:
    /// for measuring unencrypted sessions on loopback, never for a server on a network.
    pub require_encryption: bool,
    /// With `require_encryption = false`, also accept PLAIN and in-band registration on an
    /// unencrypted stream. Both carry the password itself, so this is a second, separate
    /// opt-in; SCRAM never sends the password and needs no such option.
    pub allow_unencrypted_plain: bool,
    /// Max bytes of one stanza after authentication (RFC 6120 §13.12 asks for ≥ 10000).
    pub max_stanza_bytes: usize,
    /// Client connections open at once, both c2s ports together (negotiating or bound); at
    /// the cap no more are accepted until one ends. 0: the open-file limit less 50.
    pub max_connections: usize,
    /// Client connections open at once from one IP address (IPv6: one /64); one more is
    /// closed right after it is accepted. 0: no limit (many users may share one NAT address).
    pub max_connections_per_ip: usize,
    /// Client connections still negotiating (not yet bound) at once; when full, the oldest
    /// of them is dropped for the new one. 0: no limit.
    pub max_negotiating: usize,
    /// Sessions (bound resources) one account may have at once; one more gets the
    /// `resource-constraint` error at bind (RFC 6120 §7.6.2.1). 0: no limit.
    pub max_sessions_per_account: usize,
    /// Seconds a connection may take from TCP accept to a bound resource.
    pub negotiation_timeout_secs: u64,
    /// Seconds without any byte from a bound client before the stream is closed with
    /// `connection-timeout`; 0 disables (dead peers are found by `ping_interval_secs`).
    pub idle_timeout_secs: u64,
    /// SASL attempts allowed on one stream before it is closed.
    pub max_auth_attempts: u32,
    /// Failed authentications per IP address per minute before further attempts get
    /// `temporary-auth-failure`.
    pub auth_failures_per_ip_per_minute: u32,
    /// Failed authentications per account per minute, likewise.
    pub auth_failures_per_account_per_minute: u32,
    /// Seconds without any byte from a bound client before the server checks that it is
    /// still there: an XEP-0199 ping, or an XEP-0198 `<r/>` when stream management is on.
    /// 0 disables the check.
    pub ping_interval_secs: u64,
    /// Seconds the client has to send anything after that check; then the connection counts
    /// as dead: it is closed (or, with a resumable XEP-0198 session, hibernated). Also the
    /// longest a write to a client that stopped reading may stall.
    pub ping_timeout_secs: u64,
    /// XEP-0198 stream management: offer `<sm xmlns='urn:xmpp:sm:3'/>`.
    pub stream_management: bool,
    /// Seconds a resumable XEP-0198 session survives without a connection (the `max` of
    /// `<enabled/>`; a client may ask for less). 0 turns resumption off.
    pub sm_resume_timeout_secs: u64,
    /// Stanzas sent but not acknowledged (plus those queued while the session is detached)
    /// a session may hold; beyond it the session ends and they are handled as undeliverable
    /// (messages to offline storage or bounced).
    pub sm_max_unacked: usize,
    /// The bytes of those stanzas a session may hold, likewise: the count alone let one
    /// client that never acknowledges pin `sm_max_unacked` × `max_stanza_bytes` (125 MiB).
    /// 16 MiB: far more than a client that answers `<r/>` has in flight.
    pub sm_max_unacked_bytes: usize,
    /// The server asks for an ack (`<r/>`) once this many stanzas are unacknowledged.
    pub sm_ack_every: u32,
    /// XEP-0352: stanzas held back (presence updates, chat states) while a client is
    /// inactive; when more arrive, everything held is sent.
    pub csi_max_held: usize,
    /// XEP-0484 FAST: how long a token is valid after it is issued, in seconds. 0: FAST is
    /// not offered.
    pub fast_token_lifetime_secs: u64,
    /// XEP-0484 FAST: devices of one account that hold tokens at once; issuing one more
    /// forgets the device whose token was issued longest ago.
    pub fast_max_devices: u32,
}

impl C2sConfig {
    /// The connection limits of the client listeners.
    pub fn connection_limits(&self) -> rookery_stream::CapLimits {
        rookery_stream::CapLimits {
            max_connections: self.max_connections,
            max_per_ip: self.max_connections_per_ip,
            max_negotiating: self.max_negotiating,
        }
    }
}

impl Default for C2sConfig {
    fn default() -> Self {
        C2sConfig {
            require_encryption: true,
            allow_unencrypted_plain: false,
            max_stanza_bytes: 256 * 1024,
            max_connections: 0,
            max_connections_per_ip: 0,
            max_negotiating: 1000,
            max_sessions_per_account: 0,
            negotiation_timeout_secs: 30,
            idle_timeout_secs: 0,
            max_auth_attempts: 3,
            auth_failures_per_ip_per_minute: 10,
            auth_failures_per_account_per_minute: 5,
            ping_interval_secs: 120,
            ping_timeout_secs: 60,
            stream_management: true,
            sm_resume_timeout_secs: 300,
            sm_max_unacked: 500,
            sm_max_unacked_bytes: 16 * 1024 * 1024,
            sm_ack_every: 5,
            csi_max_held: 100,
            fast_token_lifetime_secs: 14 * 24 * 3600,
            fast_max_devices: 16,
        }
    }
}
