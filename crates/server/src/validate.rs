//! What would stop `rookery serve` from starting with a configuration, found without starting
//! anything: no store opened, no certificate generated, no address bound.
//!
//! One function for the three places that judge a file: `serve` refuses a configuration with
//! problems before it touches the data directory, `rookery check` prints them, and a reload
//! refuses them and keeps the running configuration. So a green check or an accepted reload
//! means the next start is not refused for the file's values (a port taken, a database down
//! or a certificate are found where they are used: `check` reads the certificate itself).

use std::net::ToSocketAddrs;
use std::sync::Arc;

use rookery_core::CoreBuilder;

use crate::config::Config;

/// The smallest stanza limit a listener may have: RFC 6120 §13.12 has servers accept
/// stanzas of at least 10000 bytes. Below it, ordinary clients (or peers) are cut off at
/// their first larger stanza — at 0, every client at bind.
const MIN_STANZA_BYTES: usize = 10_000;

/// Every problem of `cfg`, one line each; empty when `serve` would take it.
pub fn problems(cfg: &Config) -> Vec<String> {
    // The hosted domains first: every service domain derives from them, so the later checks
    // would only repeat an invalid one.
    if let Err(e) = cfg.hosts() {
        return vec![format!("domain / [[host]]: {e}")];
    }
    let mut out = Vec::new();
    listen_addresses(cfg, &mut out);
    let url = cfg.store_url();
    if !["sqlite:", "postgres:", "postgresql:"]
        .iter()
        .any(|s| url.starts_with(s))
    {
        out.push("[store] url: use sqlite://… or postgres://…".into());
    }
    out.extend(crate::wiring::cluster::refusal(cfg));
    services(cfg, &mut out);
    sizes(cfg, &mut out);
    out.extend(cfg.http.validate().err());
    out.extend(cfg.log.filter().err());
    if let Err(e) = crate::wiring::adhoc::admins(cfg) {
        out.push(format!("{e:#}"));
    }
    if cfg.s2s.enabled {
        if let Err(e) =
            rookery_s2s::tls::roots(cfg.s2s.use_webpki_roots, cfg.s2s.ca_file.as_deref())
        {
            out.push(format!("[s2s] trust anchors: {e}"));
        }
    }
    components(cfg, &mut out);
    out
}

/// `Err` with every problem of `cfg` (see [`problems`]).
pub fn ensure(cfg: &Config) -> anyhow::Result<()> {
    match problems(cfg).as_slice() {
        [] => Ok(()),
        [one] => Err(anyhow::anyhow!("{one}")),
        many => Err(anyhow::anyhow!(
            "{} problems in the configuration: {}",
            many.len(),
            many.join("; ")
        )),
    }
}

/// Each listen address must be `host:port`; plain HTTP only on loopback unless a
/// TLS-terminating proxy is declared in front (it would carry passwords in the clear).
fn listen_addresses(cfg: &Config, out: &mut Vec<String>) {
    let l = &cfg.listen;
    let plain_http_anywhere = cfg.http.behind_tls_proxy;
    for (key, addr, loopback_only) in [
        ("[listen] c2s", &l.c2s, false),
        ("[listen] c2s_direct_tls", &l.c2s_direct_tls, false),
        ("[listen] s2s", &l.s2s, false),
        ("[listen] s2s_direct_tls", &l.s2s_direct_tls, false),
        ("[listen] admin", &l.admin, false),
        ("[listen] http", &l.http, !plain_http_anywhere),
        ("[listen] https", &l.https, false),
        ("[component] listen", &cfg.component.listen, false),
    ] {
        if addr.is_empty() {
            continue;
        }
        let Ok(mut resolved) = addr.to_socket_addrs() else {
            out.push(format!("{key} = {addr:?} is not a host:port address"));
            continue;
        };
        if loopback_only && !resolved.all(|a| a.ip().is_loopback()) {
            out.push(format!(
                "{key} = {addr:?} is not a loopback address: plain HTTP would carry \
                 passwords in the clear. Put a TLS-terminating proxy in front and set \
                 [http] behind_tls_proxy = true, or use [listen] https"
            ));
        }
    }
}

/// The pubsub and MUC services each host gets, and the settings of the services and the
/// archive, checked by the code that builds them at start.
fn services(cfg: &Config, out: &mut Vec<String>) {
    match cfg.pubsub_services() {
        Err(e) => out.push(format!("[[host]]: {e}")),
        Ok(s) if !s.is_empty() => {
            if let Err(e) = cfg.pubsub.service_profile(&cfg.domain) {
                out.push(format!("[pubsub] {e}"));
            }
        }
        Ok(_) => {}
    }
    match cfg.muc_services() {
        Err(e) => out.push(format!("[[host]]: {e}")),
        Ok(s) if !s.is_empty() => out.extend(cfg.muc.validate().err()),
        Ok(_) => {}
    }
    if cfg.mam.enabled {
        out.extend(cfg.mam.validate().err());
    }
}

/// The stanza and queue bounds that would cut every session off.
fn sizes(cfg: &Config, out: &mut Vec<String>) {
    for (key, bytes) in [
        ("[c2s]", cfg.c2s.max_stanza_bytes),
        ("[s2s]", cfg.s2s.max_stanza_bytes),
        ("[component]", cfg.component.max_stanza_bytes),
    ] {
        if bytes < MIN_STANZA_BYTES {
            out.push(format!(
                "{key} max_stanza_bytes = {bytes}: must be at least {MIN_STANZA_BYTES} \
                 (RFC 6120 §13.12)"
            ));
        }
    }
    for (key, n) in [
        ("session_queue", cfg.session_queue),
        ("session_queue_bytes", cfg.session_queue_bytes),
    ] {
        if n == 0 {
            out.push(format!(
                "{key} = 0: must be at least 1 (a session's queue must hold a stanza)"
            ));
        }
    }
}

/// The component declarations, checked by the same code as at start, against a core that
/// serves nothing.
fn components(cfg: &Config, out: &mut Vec<String>) {
    let core = CoreBuilder::new(cfg.core(), Arc::new(rookery_core::MemoryAccounts::new())).build();
    match core {
        Ok(core) => {
            if let Err(e) = rookery_component::Components::new(core, cfg.component.clone()) {
                out.push(format!("[component]: {e}"));
            }
        }
        Err(e) => out.push(e.to_string()),
    }
}
