//! Component listener settings; documented in `docs/configuration.md` under `[component]` and
//! `[[component.service]]`.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

/// What happens when a component connects for a domain that already has a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnConflict {
    /// The new connection is refused with the `conflict` stream error; the connected one
    /// keeps serving (the default: a second instance started by mistake, or an attacker who
    /// learned the secret, cannot silently take the domain over; a component that lost its
    /// TCP connection without noticing is detected by the server when the socket dies).
    #[default]
    Conflict,
    /// The new connection wins; the old one is closed with `conflict` (for deployments whose
    /// components restart faster than dead connections are noticed).
    Replace,
}

/// The `[component]` section: the listener and the components it accepts.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ComponentConfig {
    /// Listening address (`host:port`); empty disables the listener. The listener is opened
    /// only when at least one service is declared.
    pub listen: String,
    /// Component connections open at once; at the cap no more are accepted until one
    /// ends. 0: the open-file limit less 50.
    pub max_connections: usize,
    /// Component connections open at once from one IP address (IPv6: one /64); one more is
    /// closed right after it is accepted. 0: no limit.
    pub max_connections_per_ip: usize,
    /// Component connections still in their handshake at once; when full, the oldest of them
    /// is dropped for the new one. 0: no limit.
    pub max_negotiating: usize,
    /// Max bytes of one stanza after the handshake (a component relays for many users).
    pub max_stanza_bytes: usize,
    /// Seconds a connection may take from TCP accept to a completed handshake.
    pub handshake_timeout_secs: u64,
    /// Failed handshakes per IP address per minute before further attempts are refused.
    pub handshake_failures_per_ip_per_minute: u32,
    /// Stanzas queued for one component before it is disconnected as not reading.
    pub queue: usize,
    /// Seconds without any byte from a connected component before the server pings it
    /// (XEP-0199); 0 disables.
    pub ping_interval_secs: u64,
    /// Seconds the component then has to send anything before its stream is closed with
    /// `connection-timeout` (a silently dead connection must not hold the domain).
    pub ping_timeout_secs: u64,
    /// `conflict` (refuse a second connection for a connected domain) or `replace`.
    pub on_conflict: OnConflict,
    /// The components: one `[[component.service]]` table each.
    pub service: Vec<ServiceConfig>,
}

impl ComponentConfig {
    /// The connection limits of the component listener.
    pub fn connection_limits(&self) -> rookery_stream::CapLimits {
        rookery_stream::CapLimits {
            max_connections: self.max_connections,
            max_per_ip: self.max_connections_per_ip,
            max_negotiating: self.max_negotiating,
        }
    }
}

impl Default for ComponentConfig {
    fn default() -> Self {
        ComponentConfig {
            listen: "127.0.0.1:5347".into(),
            max_stanza_bytes: 512 * 1024,
            handshake_timeout_secs: 10,
            handshake_failures_per_ip_per_minute: 10,
            max_connections: 0,
            max_connections_per_ip: 0,
            max_negotiating: 50,
            queue: 16 * 1024,
            ping_interval_secs: 60,
            ping_timeout_secs: 30,
            on_conflict: OnConflict::Conflict,
            service: Vec::new(),
        }
    }
}

/// One `[[component.service]]`: a domain a component may serve and how it proves it.
/// Exactly one of `secret`, `secret_env`, `secret_file` must be set.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// The component's domain (e.g. `bot.example.org`).
    pub domain: String,
    /// The shared secret, inline.
    pub secret: Option<String>,
    /// The name of an environment variable holding the secret.
    pub secret_env: Option<String>,
    /// A file holding the secret (trailing newlines are ignored).
    pub secret_file: Option<PathBuf>,
    /// The name disco#items shows for the component.
    pub name: Option<String>,
}

impl fmt::Debug for ServiceConfig {
    /// Never prints an inline secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("domain", &self.domain)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("secret_env", &self.secret_env)
            .field("secret_file", &self.secret_file)
            .field("name", &self.name)
            .finish()
    }
}

/// Why the component configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The domain is not a valid domainpart.
    #[error("component domain {0:?} is not a valid domain")]
    InvalidDomain(String),
    /// The domain is one the server hosts (`domain` or a `[[host]]`).
    #[error("component domain {0:?} is a domain the server hosts")]
    ServerDomain(String),
    /// Two services declare the same domain.
    #[error("component domain {0:?} is declared twice")]
    Duplicate(String),
    /// None or several of `secret`, `secret_env`, `secret_file`.
    #[error("component {0:?}: set exactly one of secret, secret_env, secret_file")]
    SecretSource(String),
    /// The environment variable is not set or not UTF-8.
    #[error("component {domain:?}: environment variable {var:?} is not set")]
    MissingEnv {
        /// The component.
        domain: String,
        /// The variable.
        var: String,
    },
    /// The secret file cannot be read.
    #[error("component {domain:?}: cannot read secret file {path:?}: {source}")]
    File {
        /// The component.
        domain: String,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The secret is empty.
    #[error("component {0:?}: the secret is empty")]
    EmptySecret(String),
}

impl ServiceConfig {
    /// The secret, from wherever the configuration says it is.
    pub fn resolve_secret(&self) -> Result<String, ConfigError> {
        let domain = || self.domain.clone();
        let secret = match (&self.secret, &self.secret_env, &self.secret_file) {
            (Some(s), None, None) => s.clone(),
            (None, Some(var), None) => std::env::var(var).map_err(|_| ConfigError::MissingEnv {
                domain: domain(),
                var: var.clone(),
            })?,
            (None, None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|source| ConfigError::File {
                    domain: domain(),
                    path: path.clone(),
                    source,
                })?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
            _ => return Err(ConfigError::SecretSource(domain())),
        };
        if secret.is_empty() {
            return Err(ConfigError::EmptySecret(domain()));
        }
        Ok(secret)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn parses_services_and_redacts_secrets() {
        let c: ComponentConfig = toml_like();
        assert_eq!(c.service.len(), 1);
        assert_eq!(c.on_conflict, OnConflict::Replace);
        let s = &c.service[0];
        assert_eq!(s.resolve_secret().unwrap(), "s3cret");
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    fn toml_like() -> ComponentConfig {
        toml::from_str(
            "on_conflict = 'replace'\n[[service]]\ndomain = 'bot.example.org'\nsecret = 's3cret'\n",
        )
        .unwrap()
    }

    #[test]
    fn exactly_one_secret_source() {
        let none = ServiceConfig {
            domain: "bot.example.org".into(),
            ..ServiceConfig::default()
        };
        assert!(matches!(
            none.resolve_secret(),
            Err(ConfigError::SecretSource(_))
        ));
        let two = ServiceConfig {
            secret: Some("a".into()),
            secret_env: Some("B".into()),
            ..none.clone()
        };
        assert!(matches!(
            two.resolve_secret(),
            Err(ConfigError::SecretSource(_))
        ));
    }

    #[test]
    fn secret_from_file_drops_the_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "from-file\n").unwrap();
        let s = ServiceConfig {
            domain: "bot.example.org".into(),
            secret_file: Some(path),
            ..ServiceConfig::default()
        };
        assert_eq!(s.resolve_secret().unwrap(), "from-file");
    }

    #[test]
    fn missing_env_is_an_error() {
        let s = ServiceConfig {
            domain: "bot.example.org".into(),
            secret_env: Some("ROOKERY_TEST_SURELY_UNSET_VARIABLE".into()),
            ..ServiceConfig::default()
        };
        assert!(matches!(
            s.resolve_secret(),
            Err(ConfigError::MissingEnv { .. })
        ));
    }
}
