//! The configuration file (`rookery.toml`). Every key, its default and its meaning are
//! documented in `docs/configuration.md`; with no file at all the server runs for
//! `localhost` on 127.0.0.1 with SQLite in `./rookery-data/`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rookery_c2s::C2sConfig;
use rookery_component::ComponentConfig;
use rookery_core::config::{RegistrationConfig, VersionConfig};
use rookery_core::CoreConfig;
use rookery_s2s::S2sConfig;
use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The XMPP domain served (the primary host).
    pub domain: String,
    /// Further hosted domains (`[[host]]`, virtual hosting).
    pub host: Vec<HostTable>,
    /// Where the SQLite database and the generated certificate live.
    pub data_dir: PathBuf,
    /// Listening addresses.
    pub listen: ListenConfig,
    /// Certificate and key.
    pub tls: TlsConfig,
    /// Database.
    pub store: StoreConfig,
    /// Client listener settings.
    pub c2s: C2sConfig,
    /// Federation (server-to-server) settings.
    pub s2s: S2sConfig,
    /// Instant messaging: roster, offline storage, blocking, carbons, vCard (`[im]`).
    pub im: rookery_im::ImConfig,
    /// Publish-subscribe: the service at `pubsub.<domain>` and PEP (`[pubsub]`).
    pub pubsub: rookery_pubsub::PubsubConfig,
    /// Multi-user chat: the service at `conference.<domain>` (`[muc]`).
    pub muc: rookery_muc::MucConfig,
    /// Message archives of accounts (`[mam]`).
    pub mam: rookery_mam::MamConfig,
    /// External components (XEP-0114): listener and `[[component.service]]` declarations.
    pub component: ComponentConfig,
    /// In-band registration.
    pub registration: RegistrationConfig,
    /// XEP-0092 disclosure.
    pub version: VersionConfig,
    /// Stanzas queued per session before a non-reading client is disconnected.
    pub session_queue: usize,
    /// Bytes queued per session before a non-reading client is disconnected.
    pub session_queue_bytes: usize,
    /// Logging.
    pub log: LogConfig,
    /// The admin API (`[admin]`).
    pub admin: AdminConfig,
    /// Accounts (bare JIDs) that may run the XEP-0133 administration commands (XEP-0050
    /// ad-hoc commands) from their XMPP client.
    pub admins: Vec<String>,
    /// XEP-0157 contact addresses (`[contact]`).
    pub contact: rookery_core::modules::contact::ContactConfig,
    /// XEP-0215 STUN/TURN services (`[[external_services]]`).
    pub external_services: Vec<rookery_core::modules::extdisco::ExternalService>,
    /// XEP-0363 HTTP file upload (`[upload]`).
    pub upload: rookery_upload::UploadConfig,
    // --- web transports (issue 13) ---
    /// The public HTTP listeners' settings: WebSocket origins, proxies (`[http]`).
    pub http: rookery_web::HttpConfig,
    /// WebSub webhook deliveries: SSRF switch, timeouts, retries, leases (`[webhooks]`).
    pub webhooks: rookery_websub::WebhooksConfig,
    /// Several nodes serving one domain over NATS (`[cluster]`); unset: a single node.
    pub cluster: rookery_cluster::ClusterConfig,
}

impl Default for Config {
    fn default() -> Self {
        let core = CoreConfig::default();
        Config {
            domain: core.domain,
            host: Vec::new(),
            data_dir: PathBuf::from("rookery-data"),
            listen: ListenConfig::default(),
            tls: TlsConfig::default(),
            store: StoreConfig::default(),
            c2s: C2sConfig::default(),
            s2s: S2sConfig::default(),
            im: rookery_im::ImConfig::default(),
            pubsub: rookery_pubsub::PubsubConfig::default(),
            muc: rookery_muc::MucConfig::default(),
            mam: rookery_mam::MamConfig::default(),
            component: ComponentConfig::default(),
            registration: core.registration,
            version: core.version,
            session_queue: core.session_queue,
            session_queue_bytes: core.session_queue_bytes,
            log: LogConfig::default(),
            admin: AdminConfig::default(),
            admins: Vec::new(),
            contact: core.contact,
            external_services: core.external_services,
            upload: rookery_upload::UploadConfig::default(),
            http: rookery_web::HttpConfig::default(),
            webhooks: rookery_websub::WebhooksConfig::default(),
            cluster: rookery_cluster::ClusterConfig::default(),
        }
    }
}

/// Listening addresses; an empty string disables a listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenConfig {
    /// Client connections with STARTTLS (RFC 6120).
    pub c2s: String,
    /// Client connections with direct TLS (XEP-0368).
    pub c2s_direct_tls: String,
    /// Server connections with STARTTLS (RFC 6120, federation).
    pub s2s: String,
    /// Server connections with direct TLS (XEP-0368).
    pub s2s_direct_tls: String,
    /// The admin HTTP listener: `/health`, `/ready`, `/metrics` and the REST admin API.
    /// Loopback by default: it is for the operator, not the world.
    pub admin: String,
    // --- web transports (issue 13) ---
    /// The public HTTP listener (WebSocket at `/xmpp-websocket`). Loopback only unless
    /// `[http] behind_tls_proxy = true`.
    pub http: String,
    /// The public HTTPS listener, with the server's certificate.
    pub https: String,
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            c2s: "127.0.0.1:5222".into(),
            c2s_direct_tls: "127.0.0.1:5223".into(),
            s2s: String::new(),
            s2s_direct_tls: String::new(),
            admin: "127.0.0.1:5290".into(),
            http: "127.0.0.1:5280".into(),
            https: "127.0.0.1:5281".into(),
        }
    }
}

/// Certificate settings. Without both paths a self-signed certificate is generated into
/// the data directory on first start.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
}

/// A further hosted domain (`[[host]]`): its own accounts, its own certificate (picked by
/// SNI), its own registration policy, its own pubsub and MUC services.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostTable {
    /// The domain.
    pub domain: String,
    /// PEM certificate chain for this domain; without it (and `key`) the primary
    /// certificate is served for it too.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// In-band registration on this host; unset: `[registration] enabled`.
    pub allow_registration: Option<bool>,
    /// The domain of this host's pubsub service; unset: `pubsub.<domain>`, empty: none.
    pub pubsub: Option<String>,
    /// The domain of this host's MUC service; unset: `conference.<domain>`, empty: none.
    pub muc: Option<String>,
}

/// One host's service on its own domain (pubsub or MUC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostService {
    /// The hosted domain whose service it is (whose accounts are local to it).
    pub host: String,
    /// The service's domain.
    pub service: String,
}

/// Database settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://...` or `postgres://...`; default: `sqlite://<data_dir>/rookery.db`.
    pub url: Option<String>,
}

/// The admin API.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// The bearer token of `/api/v1`; without it one is generated into
    /// `<data_dir>/admin.token` (mode 0600) at first start and read from there afterwards.
    pub token: Option<String>,
}

/// Log output.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// One line per event, or JSON objects (an unknown value is a parse error, not silently
    /// human-readable).
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `rookery_c2s=debug,info`; `RUST_LOG` wins.
    /// Checked by [`LogConfig::filter`].
    pub level: String,
}

/// `[log] format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

impl LogConfig {
    /// The filter `level` names, stricter than `tracing`'s own parser: there a bare word is a
    /// target, so a misspelt level (`inof`) is a valid filter that logs nothing at all, the
    /// warnings included. Here a directive without `=` must be a level or a target of
    /// Rookery's (`rookery_c2s`); other targets are written `target=level`.
    pub fn filter(&self) -> Result<tracing_subscriber::EnvFilter, String> {
        let level = &self.level;
        let directives: Vec<&str> = level
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .collect();
        if directives.is_empty() {
            return Err(format!("[log] level {level:?}: names no level"));
        }
        let bare_unknown = directives.iter().find(|d| {
            !d.contains('=')
                && d.parse::<tracing_subscriber::filter::LevelFilter>()
                    .is_err()
                && !d.starts_with("rookery")
        });
        if let Some(d) = bare_unknown {
            return Err(format!(
                "[log] level {level:?}: {d:?} is neither a level (trace, debug, info, warn, \
                 error, off) nor a rookery target; write other targets as target=level"
            ));
        }
        tracing_subscriber::EnvFilter::try_new(level)
            .map_err(|e| format!("[log] level {level:?}: {e}"))
    }
}

impl Config {
    /// Reads `path`, or the defaults when `None`.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let cfg: Config =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok(cfg)
    }

    /// The database URL.
    pub fn store_url(&self) -> String {
        self.store
            .url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("rookery.db").display()))
    }

    /// The hosted domains, checked (valid, none twice), primary first.
    pub fn hosts(&self) -> anyhow::Result<rookery_core::Hosts> {
        Ok(rookery_core::Hosts::new(&self.domain, &self.core().host)?)
    }

    /// Each host's pubsub service, primary first: `[pubsub] host` for the primary, a
    /// `[[host]]`'s `pubsub` for it, `pubsub.<host>` by default; none at all with
    /// `[pubsub] enabled = false`.
    pub fn pubsub_services(&self) -> anyhow::Result<Vec<HostService>> {
        if !self.pubsub.enabled {
            return Ok(Vec::new());
        }
        self.host_services(
            "pubsub",
            &self.pubsub.service_host(&self.domain),
            |h| h.pubsub.as_deref(),
            |d| rookery_pubsub::PubsubConfig::default().service_host(d),
        )
    }

    /// Each host's MUC service, primary first, as [`Config::pubsub_services`] (`[muc]
    /// domain`, a `[[host]]`'s `muc`, `conference.<host>`).
    pub fn muc_services(&self) -> anyhow::Result<Vec<HostService>> {
        if !self.muc.enabled {
            return Ok(Vec::new());
        }
        self.host_services(
            "muc",
            &self.muc.service_domain(&self.domain),
            |h| h.muc.as_deref(),
            |d| rookery_muc::MucConfig::default().service_domain(d),
        )
    }

    /// The services of `key`: the `primary`'s, then each table's as `of` names it
    /// (`default` of the host's domain when unset: the primary's section names the
    /// primary's service only; none when empty), normalized; fails on an invalid domain, on
    /// one named twice and on one that is a host itself.
    fn host_services(
        &self,
        key: &str,
        primary: &str,
        of: impl Fn(&HostTable) -> Option<&str>,
        default: impl Fn(&str) -> String,
    ) -> anyhow::Result<Vec<HostService>> {
        let hosts = self.hosts()?;
        // `Hosts` keeps the tables' order after the primary.
        // The primary always has its service while the section is enabled, first.
        let primary = Some(primary).filter(|p| !p.trim().is_empty());
        let named = std::iter::once(primary).chain(self.host.iter().map(&of));
        let mut out: Vec<HostService> = Vec::new();
        for (host, named) in hosts.iter().map(rookery_core::Host::domain).zip(named) {
            let service = match named.map(str::trim) {
                Some("") => continue,
                Some(s) => s.to_string(),
                None => default(host),
            };
            let service = rookery_jid::normalize_domain(&service)
                .map_err(|e| anyhow::anyhow!("{key} service {service:?} of {host}: {e}"))?;
            if hosts.contains(&service) || out.iter().any(|s| s.service == service) {
                anyhow::bail!(
                    "{key} service {service:?} of {host}: a hosted domain or another host's service"
                );
            }
            out.push(HostService {
                host: host.to_string(),
                service,
            });
        }
        Ok(out)
    }

    /// The part the core acts on.
    pub fn core(&self) -> CoreConfig {
        CoreConfig {
            domain: self.domain.clone(),
            host: self
                .host
                .iter()
                .map(|h| rookery_core::HostConfig {
                    domain: h.domain.clone(),
                    allow_registration: h.allow_registration,
                })
                .collect(),
            registration: self.registration.clone(),
            version: self.version.clone(),
            session_queue: self.session_queue,
            session_queue_bytes: self.session_queue_bytes,
            contact: self.contact.clone(),
            external_services: self.external_services.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn example_config_parses() {
        let text = include_str!("../../../deploy/rookery.toml");
        let cfg: Config = toml::from_str(text).unwrap();
        assert_eq!(cfg.domain, "example.org");
    }

    #[test]
    fn host_tables_add_hosted_domains() {
        let cfg: Config = toml::from_str(
            "domain = 'a.test'\n\
             [[host]]\ndomain = 'b.test'\ncert = 'b.pem'\nkey = 'b.key'\n\
             allow_registration = true\n",
        )
        .unwrap();
        let hosts = cfg.hosts().unwrap();
        let names: Vec<&str> = hosts.iter().map(rookery_core::Host::domain).collect();
        assert_eq!(names, ["a.test", "b.test"]);
        let b = cfg.host.first().and_then(|h| h.cert.as_deref());
        assert_eq!(b, Some(Path::new("b.pem")));
        assert!(Config::default().hosts().unwrap().iter().count() == 1);
        let twice: Config =
            toml::from_str("domain = 'a.test'\n[[host]]\ndomain = 'A.test'\n").unwrap();
        assert!(twice.hosts().is_err());
    }

    #[test]
    fn each_host_has_its_services_unless_a_table_says_otherwise() {
        let cfg: Config = toml::from_str(
            "domain = 'a.test'\n[pubsub]\nhost = 'news.a.test'\n\
             [[host]]\ndomain = 'B.test'\n\
             [[host]]\ndomain = 'c.test'\npubsub = 'ps.C.test'\nmuc = ''\n",
        )
        .unwrap();
        let of = |v: Vec<HostService>| -> Vec<(String, String)> {
            v.into_iter().map(|s| (s.host, s.service)).collect()
        };
        let pair = |h: &str, s: &str| (h.to_string(), s.to_string());
        assert_eq!(
            of(cfg.pubsub_services().unwrap()),
            [
                pair("a.test", "news.a.test"),
                pair("b.test", "pubsub.b.test"),
                pair("c.test", "ps.c.test")
            ]
        );
        assert_eq!(
            of(cfg.muc_services().unwrap()),
            [
                pair("a.test", "conference.a.test"),
                pair("b.test", "conference.b.test")
            ]
        );
        let mut off = cfg.clone();
        off.pubsub.enabled = false;
        assert!(off.pubsub_services().unwrap().is_empty());
        // A service named twice, or named as a host, is refused.
        for bad in ["muc = 'conference.a.test'", "pubsub = 'a.test'"] {
            let text = format!("domain = 'a.test'\n[[host]]\ndomain = 'b.test'\n{bad}\n");
            let cfg: Config = toml::from_str(&text).unwrap();
            let services = [cfg.pubsub_services(), cfg.muc_services()];
            assert!(services.iter().any(Result::is_err), "{bad}");
        }
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(toml::from_str::<Config>("domian = 'x'").is_err());
    }
}
