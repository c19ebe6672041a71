//! Settings the core acts on. The server binary reads them from the TOML config file;
//! every key is documented in `docs/configuration.md`.

use serde::Deserialize;

/// Core settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoreConfig {
    /// The primary domain this server hosts: what it speaks as where no host was named.
    pub domain: String,
    /// Further hosted domains (the `[[host]]` tables), see [`crate::hosts`].
    pub host: Vec<crate::hosts::HostConfig>,
    /// In-band registration (XEP-0077).
    pub registration: RegistrationConfig,
    /// Software version disclosure (XEP-0092).
    pub version: VersionConfig,
    /// Outbound queue length per session, in stanzas. A session whose queue is full is
    /// disconnected rather than allowed to grow memory without bound.
    pub session_queue: usize,
    /// Outbound queue size per session, in bytes of serialized stanzas: the same cut-off,
    /// counted in what the queue costs in memory.
    pub session_queue_bytes: usize,
    /// XEP-0157 contact addresses in the server's disco#info (`[contact]`).
    pub contact: crate::modules::contact::ContactConfig,
    /// XEP-0215 STUN/TURN services offered to local users (`[[external_services]]`).
    pub external_services: Vec<crate::modules::extdisco::ExternalService>,
}

impl CoreConfig {
    /// The bound of a session's outbound queue.
    pub fn queue_limit(&self) -> crate::session::QueueLimit {
        crate::session::QueueLimit {
            stanzas: self.session_queue,
            bytes: self.session_queue_bytes,
        }
    }
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            domain: "localhost".into(),
            host: Vec::new(),
            registration: RegistrationConfig::default(),
            version: VersionConfig::default(),
            session_queue: 1024,
            session_queue_bytes: crate::session::QueueLimit::DEFAULT_BYTES,
            contact: Default::default(),
            external_services: Vec::new(),
        }
    }
}

/// In-band registration settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationConfig {
    /// Whether unauthenticated clients may create accounts. Off by default: open registration
    /// invites spam accounts.
    pub enabled: bool,
    /// Minimum seconds between two registrations from the same IP address.
    pub min_interval_secs: u64,
    /// Minimum password length accepted for new accounts and password changes.
    pub min_password_len: usize,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        RegistrationConfig {
            enabled: false,
            min_interval_secs: 60,
            min_password_len: 8,
        }
    }
}

/// XEP-0092 settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VersionConfig {
    /// Answer `jabber:iq:version` at all.
    pub enabled: bool,
    /// Include the operating system.
    pub show_os: bool,
}

impl Default for VersionConfig {
    fn default() -> Self {
        VersionConfig {
            enabled: true,
            show_os: false,
        }
    }
}
