//! Reloading the configuration while the server runs (SIGHUP, `rookery ctl reload`,
//! `POST /api/v1/reload`) without dropping a connection.
//!
//! A reload reads the file again and checks everything that can fail first: what `serve`
//! would refuse at the next start (validate.rs, the same function), then the certificate and
//! key and the component declarations against the running ones; a bad file changes nothing
//! and is reported as one error. Then it applies, from the next connection or event
//! on:
//! - the certificate: new TLS handshakes (c2s, s2s both ways) get the new one through
//!   [`LiveCert`]; established streams keep theirs;
//! - the log filter (`[log] level`, unless `RUST_LOG` is set);
//! - the connection limits and rate limits of every listener;
//! - components declared or removed (`[[component.service]]`).
//!
//! Everything else (addresses, domain, store, the other per-listener settings) takes effect at
//! the next restart; the reload names those sections in its answer and log line, so nobody
//! believes a change is live when it is not.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use anyhow::{anyhow, Context};
use rookery_adhoc::Admins;
use rookery_c2s::C2sContext;
use rookery_component::Components;
use rookery_s2s::S2s;
use rookery_stream::LiveCert;
use serde::Serialize;
use tracing_subscriber::EnvFilter;

use crate::config::Config;
use crate::tls;

/// Replaces the log filter of the running subscriber.
pub type LogReload = tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>;

/// What a successful reload did.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Outcome {
    /// The served certificate's SHA-256 fingerprint (hex).
    pub certificate_sha256: String,
    /// Component domains routed from now on.
    pub components_added: Vec<String>,
    /// Component domains no longer routed.
    pub components_removed: Vec<String>,
    /// Sections (or keys) that differ from the running configuration but take effect only
    /// at the next restart.
    pub restart_needed: Vec<&'static str>,
}

/// What a reload acts on in the running server.
pub struct Targets {
    /// The certificate every TLS configuration serves.
    pub cert: Arc<LiveCert>,
    /// `None` when `RUST_LOG` set the filter: the environment wins over the file.
    pub log: Option<LogReload>,
    /// Who may run the XEP-0133 commands.
    pub admins: Arc<Admins>,
    /// Weak: the shutdown waits for the connections' clones of the context to go.
    pub c2s: Weak<C2sContext>,
    /// Federation, when enabled.
    pub s2s: Option<Arc<S2s>>,
    /// The declared components.
    pub components: Arc<Components>,
}

/// Everything a reload changes, and the configuration the server started with.
pub struct Reloader {
    path: Option<PathBuf>,
    /// What the keys a reload does not apply are running with: a change to one of them is
    /// named by every reload until the restart, not only by the first.
    started: Config,
    /// One reload at a time.
    reloading: Mutex<()>,
    targets: Targets,
}

impl Reloader {
    /// A reloader for the server started with `config` read from `path`.
    pub fn new(path: Option<PathBuf>, config: Config, targets: Targets) -> Reloader {
        Reloader {
            path,
            started: config,
            reloading: Mutex::new(()),
            targets,
        }
    }

    /// Reloads, logging the outcome: one `info` line, or one `error` line with the reason
    /// (the running configuration is kept).
    pub fn reload_logged(&self) -> anyhow::Result<Outcome> {
        let result = self.reload();
        rookery_metrics::get().reload(result.is_ok());
        match &result {
            Ok(o) => tracing::info!(
                certificate_sha256 = %o.certificate_sha256,
                components_added = ?o.components_added,
                components_removed = ?o.components_removed,
                restart_needed = ?o.restart_needed,
                "configuration reloaded"
            ),
            Err(e) => tracing::error!(
                error = format!("{e:#}"),
                "configuration not reloaded; the running one is kept"
            ),
        }
        result
    }

    /// Reads the file again and applies what can change at run time (module docs).
    pub fn reload(&self) -> anyhow::Result<Outcome> {
        // One reload at a time: a second signal waits for the first to finish.
        let _one = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(path) = &self.path else {
            return Err(anyhow!(
                "the server runs without a configuration file; nothing to reload"
            ));
        };
        let new = Config::load(Some(path))?;
        // Everything that can fail, before anything changes: first what `serve` would
        // refuse, so that the next start works with the file a reload took.
        crate::validate::ensure(&new)?;
        let cert = tls::certified(&new).context("certificate")?;
        let host_certs = tls::host_certs(&new).context("certificate")?;
        let t = &self.targets;
        let filter = match &t.log {
            Some(_) => Some(new.log.filter().map_err(|e| anyhow!(e))?),
            None => None,
        };
        let admins = crate::wiring::adhoc::admins(&new)?;
        let changes = t.components.reload(&new.component).context("[component]")?;
        // From here on nothing fails.
        let certificate_sha256 = cert.cert.first().map(tls::fingerprint).unwrap_or_default();
        t.cert.replace(cert, host_certs);
        t.admins.set(admins);
        if let (Some(handle), Some(filter)) = (&t.log, filter) {
            if let Err(e) = handle.reload(filter) {
                tracing::warn!(error = %e, "log filter not replaced");
            }
        }
        if let Some(c2s) = t.c2s.upgrade() {
            c2s.connections.set_limits(new.c2s.connection_limits());
            c2s.limiter.set_limits(
                new.c2s.auth_failures_per_ip_per_minute,
                new.c2s.auth_failures_per_account_per_minute,
            );
        }
        if let Some(s2s) = &t.s2s {
            s2s.set_limits(&new.s2s);
        }
        let restart_needed = restart_needed(&self.started, &new);
        Ok(Outcome {
            certificate_sha256,
            components_added: changes.added,
            components_removed: changes.removed,
            restart_needed,
        })
    }
}

/// The sections of `new` that differ from `running` in a key a reload does not apply; and
/// the component listener when a reload declares the first component, since the listener
/// opens at start only when a service is declared (`Components::bind`).
///
/// Both are compared with the reloadable keys blanked, section by section through their
/// `Debug` form: every section type has one, so a new key of a section is covered without a
/// list here to keep in step, and [`sections`] names every section of [`Config`].
fn restart_needed(running: &Config, new: &Config) -> Vec<&'static str> {
    let (old, static_new) = (static_part(running), static_part(new));
    let mut out: Vec<&'static str> = sections(&old)
        .into_iter()
        .zip(sections(&static_new))
        .filter(|((_, a), (_, b))| a != b)
        .map(|((name, _), _)| name)
        .collect();
    let first_component = running.component.service.is_empty()
        && !new.component.service.is_empty()
        && !new.component.listen.is_empty();
    if first_component {
        out.push("[component] listener");
    }
    out
}

/// Each section of `c` by name, as text to compare. The destructuring lists every key of
/// [`Config`], so a section added to it cannot be forgotten here: the compiler asks for it.
fn sections(c: &Config) -> Vec<(&'static str, String)> {
    let Config {
        domain,
        host,
        data_dir,
        listen,
        // Reloaded in full: the certificates and the admin JIDs.
        tls: _,
        admins: _,
        store,
        c2s,
        s2s,
        im,
        pubsub,
        muc,
        mam,
        component,
        registration,
        version,
        session_queue,
        session_queue_bytes,
        log,
        admin,
        contact,
        external_services,
        upload,
        http,
        webhooks,
        cluster,
    } = c;
    // Their certificates are reloaded; the hosts themselves are not.
    let hosts: Vec<_> = host
        .iter()
        .map(|h| (&h.domain, h.allow_registration, &h.pubsub, &h.muc))
        .collect();
    vec![
        ("domain", format!("{domain:?}")),
        ("[[host]]", format!("{hosts:?}")),
        ("data_dir", format!("{data_dir:?}")),
        ("[listen]", format!("{listen:?}")),
        ("[store]", format!("{store:?}")),
        ("[c2s]", format!("{c2s:?}")),
        ("[s2s]", format!("{s2s:?}")),
        ("[im]", format!("{im:?}")),
        ("[pubsub]", format!("{pubsub:?}")),
        ("[muc]", format!("{muc:?}")),
        ("[mam]", format!("{mam:?}")),
        ("[component]", format!("{component:?}")),
        ("[registration]", format!("{registration:?}")),
        ("[version]", format!("{version:?}")),
        (
            "session_queue, session_queue_bytes",
            format!("{session_queue:?}{session_queue_bytes:?}"),
        ),
        ("[log] format, [admin]", format!("{log:?}{admin:?}")),
        ("[contact]", format!("{contact:?}")),
        ("[[external_services]]", format!("{external_services:?}")),
        ("[upload]", format!("{upload:?}")),
        ("[http]", format!("{http:?}")),
        ("[webhooks]", format!("{webhooks:?}")),
        ("[cluster]", format!("{cluster:?}")),
    ]
}

/// `cfg` with every key a reload applies inside a section set to its default (what a reload
/// applies whole, `[tls]` and `admins`, [`sections`] leaves out).
fn static_part(cfg: &Config) -> Config {
    let mut c = cfg.clone();
    let d = Config::default();
    c.log.level = d.log.level;
    c.c2s.max_connections = d.c2s.max_connections;
    c.c2s.max_connections_per_ip = d.c2s.max_connections_per_ip;
    c.c2s.max_negotiating = d.c2s.max_negotiating;
    c.c2s.auth_failures_per_ip_per_minute = d.c2s.auth_failures_per_ip_per_minute;
    c.c2s.auth_failures_per_account_per_minute = d.c2s.auth_failures_per_account_per_minute;
    c.s2s.max_connections = d.s2s.max_connections;
    c.s2s.max_connections_per_ip = d.s2s.max_connections_per_ip;
    c.s2s.max_negotiating = d.s2s.max_negotiating;
    c.s2s.connections_per_ip_per_minute = d.s2s.connections_per_ip_per_minute;
    c.component.max_connections = d.component.max_connections;
    c.component.max_connections_per_ip = d.component.max_connections_per_ip;
    c.component.max_negotiating = d.component.max_negotiating;
    c.component.handshake_failures_per_ip_per_minute =
        d.component.handshake_failures_per_ip_per_minute;
    c.component.service = d.component.service;
    c
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_only_the_sections_a_reload_does_not_apply() {
        let old = Config::default();
        let mut new = Config::default();
        new.log.level = "debug".into();
        new.c2s.max_connections_per_ip = 5;
        new.s2s.max_negotiating = 7;
        assert!(restart_needed(&old, &new).is_empty());
        new.c2s.max_stanza_bytes = 1;
        new.listen.c2s = "127.0.0.1:1".into();
        assert_eq!(restart_needed(&old, &new), vec!["[listen]", "[c2s]"]);
        let mut muc = Config::default();
        muc.muc.default_max_occupants += 1;
        muc.session_queue_bytes += 1;
        assert_eq!(
            restart_needed(&old, &muc),
            vec!["[muc]", "session_queue, session_queue_bytes"]
        );
        // The first component: its listener was not opened at start.
        let mut component = Config::default();
        component
            .component
            .service
            .push(toml::from_str("domain = 'bot.test'\nsecret = 's'").unwrap());
        assert_eq!(
            restart_needed(&old, &component),
            vec!["[component] listener"]
        );
        assert!(restart_needed(&component, &component).is_empty());
    }
}
