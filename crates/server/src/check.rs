//! `rookery check`: what would stop the server from starting or from being reached, found
//! before it is started — the configuration, the certificate (chain, names, expiry) and, with
//! `--dns`, the SRV records (RFC 6120 §3.2.1, XEP-0368).
//!
//! Each problem is one line `problem: …` on standard output; things worth knowing that are
//! not problems (a self-signed certificate still to be generated) are `note: …` lines. The
//! exit status is non-zero when there is any problem, so a deploy script or a monitoring job
//! can run it. Nothing is changed: no certificate is generated, no database is opened.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::RootCertStore;

use crate::config::Config;
use crate::tls;

/// A certificate expiring within this is reported.
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// How long one DNS question may take.
const DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// What a check found.
#[derive(Debug, Default)]
pub struct Report {
    /// One line each; any makes the exit status non-zero.
    pub problems: Vec<String>,
    /// Worth knowing, not wrong.
    pub notes: Vec<String>,
}

impl Report {
    fn problem(&mut self, line: impl Into<String>) {
        self.problems.push(line.into());
    }

    /// Prints the report; whether it is free of problems.
    pub fn print(&self) -> bool {
        for n in &self.notes {
            println!("note: {n}");
        }
        for p in &self.problems {
            println!("problem: {p}");
        }
        match self.problems.len() {
            0 => println!("ok"),
            1 => println!("1 problem"),
            n => println!("{n} problems"),
        }
        self.problems.is_empty()
    }
}

/// Checks the configuration at `path` (the defaults without one).
pub async fn run(path: Option<&Path>, dns: bool) -> Report {
    let mut report = Report::default();
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            report.problem(format!("{e:#}").replace('\n', " "));
            return report;
        }
    };
    config(&cfg, &mut report);
    certificate(&cfg, &mut report);
    if dns {
        srv_records(&cfg, &mut report).await;
    }
    report
}

/// What the server checks at start, without starting it (the same function), and the admin
/// token and a cluster's per-node settings, which only deserve a note.
fn config(cfg: &Config, report: &mut Report) {
    report.problems.extend(crate::validate::problems(cfg));
    for why in crate::wiring::cluster::unshared(cfg) {
        report.notes.push(why.into());
    }
    if let Err(e) = crate::admin::token(cfg, false) {
        if cfg.admin.token.is_none() && !crate::admin::token_path(&cfg.data_dir).exists() {
            report
                .notes
                .push("no admin token yet: the server generates one at first start".into());
        } else {
            report.problem(format!("admin token: {e:#}"));
        }
    }
}

/// The domains the certificate must name: the server's, every `[[host]]`'s without a
/// certificate of its own, the pubsub services of these hosts and every component's (peer
/// servers connect to each of them).
fn names(cfg: &Config) -> Vec<String> {
    let mut hosts = vec![cfg.domain.clone()];
    hosts.extend(
        cfg.host
            .iter()
            .filter(|h| h.cert.is_none())
            .map(|h| h.domain.trim().to_string()),
    );
    let mut names = with_pubsub(cfg, hosts);
    names.extend(
        cfg.component
            .service
            .iter()
            .map(|s| s.domain.trim().to_string()),
    );
    names
}

/// `hosts` and their pubsub services (an invalid configuration is the config check's
/// problem: none are added then).
fn with_pubsub(cfg: &Config, mut hosts: Vec<String>) -> Vec<String> {
    let services = cfg.pubsub_services().unwrap_or_default();
    let of = |h: &String| {
        let h = rookery_jid::normalize_domain(h).unwrap_or_default();
        services.iter().filter(move |s| s.host == h)
    };
    let extra: Vec<String> = hosts
        .iter()
        .flat_map(of)
        .map(|s| s.service.clone())
        .collect();
    hosts.extend(extra);
    hosts
}

/// A generated certificate is for trying the server out: what is wrong with it is a note.
/// Each `[[host]]` certificate must name its host and its pubsub service.
fn certificate(cfg: &Config, report: &mut Report) {
    let generated = cfg.tls.cert.is_none();
    let mut found = Vec::new();
    certificate_problems(cfg, &mut found, &mut report.notes);
    if generated {
        report.notes.extend(found);
    } else {
        report.problems.extend(found);
    }
    for h in &cfg.host {
        match (&h.cert, &h.key) {
            (Some(cert), Some(key)) => {
                let names = with_pubsub(cfg, vec![h.domain.trim().to_string()]);
                pair_problems(cfg, cert, key, &names, &mut report.problems);
            }
            (None, None) => {}
            _ => report.problem(format!(
                "[[host]] {:?}: cert and key must be set together",
                h.domain
            )),
        }
    }
}

fn certificate_problems(cfg: &Config, problems: &mut Vec<String>, notes: &mut Vec<String>) {
    let (cert_path, key_path) = match tls::paths(cfg) {
        Ok(p) => p,
        Err(e) => return problems.push(format!("[tls]: {e}")),
    };
    if cfg.tls.cert.is_none() && (!cert_path.exists() || !key_path.exists()) {
        notes.push(format!(
            "no certificate yet: a self-signed one for {} is generated into {} at first start",
            cfg.domain,
            cert_path.display()
        ));
        return;
    }
    pair_problems(cfg, &cert_path, &key_path, &names(cfg), problems);
}

/// What is wrong with the chain in `cert_path` and the key in `key_path` for `names` (the
/// first is the one its trust is checked for).
fn pair_problems(
    cfg: &Config,
    cert_path: &Path,
    key_path: &Path,
    names: &[String],
    problems: &mut Vec<String>,
) {
    let Some(first) = names.first() else {
        return;
    };
    let pair = match tls::read_pair(cert_path, key_path) {
        Ok(p) => p,
        Err(e) => return problems.push(format!("{e:#}")),
    };
    let Some((ee, intermediates)) = pair.cert.split_first() else {
        return problems.push(format!("no certificate in {}", cert_path.display()));
    };
    // A CA file that cannot be read is reported by validate.rs (with federation on; off,
    // nothing reads it).
    let Ok(roots) = rookery_s2s::tls::roots(cfg.s2s.use_webpki_roots, cfg.s2s.ca_file.as_deref())
    else {
        return;
    };
    let now = UnixTime::now();
    // Trust first: a chain to a root the world trusts (or the configured CA file).
    if let Err(e) = verify(roots.clone(), ee, intermediates, first, now) {
        if is_untrusted(&e) {
            problems.push(format!(
                "{}: not issued by a trusted CA ({e}); clients and servers must pin it",
                cert_path.display()
            ));
        }
    }
    // Then names and dates, whoever issued it: the certificate itself as an extra anchor.
    let mut anchored = roots;
    if anchored.add(ee.clone()).is_err() {
        return problems.push(format!("{}: not a usable certificate", cert_path.display()));
    }
    let soon = UnixTime::since_unix_epoch(
        now.as_secs()
            .checked_add(EXPIRY_WARNING.as_secs())
            .map_or(Duration::MAX, Duration::from_secs),
    );
    for name in names {
        match verify(anchored.clone(), ee, intermediates, name, now) {
            Ok(()) => {
                if verify(anchored.clone(), ee, intermediates, name, soon).is_err() {
                    problems.push(format!(
                        "{}: expires within {} days",
                        cert_path.display(),
                        EXPIRY_WARNING.as_secs() / 86_400
                    ));
                    break;
                }
            }
            Err(e) if is_untrusted(&e) => {}
            Err(e) => problems.push(format!("{} for {name}: {e}", cert_path.display())),
        }
    }
}

fn is_untrusted(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
    )
}

/// Whether `ee` (with `intermediates`) chains to `roots` and names `name` at `at`.
fn verify(
    roots: RootCertStore,
    ee: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    name: &str,
    at: UnixTime,
) -> Result<(), rustls::Error> {
    let name = ServerName::try_from(name.to_string())
        .map_err(|_| rustls::Error::General(format!("{name:?} is not a DNS name")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    verifier
        .verify_server_cert(ee, intermediates, &name, &[], at)
        .map(|_| ())
}

/// The SRV records clients and servers look up for the domain (RFC 6120 §3.2.1; XEP-0368
/// for direct TLS): a problem when a client would find neither an SRV record nor an address.
async fn srv_records(cfg: &Config, report: &mut Report) {
    let resolver = match hickory_resolver::TokioResolver::builder_tokio() {
        Ok(b) => match b.build() {
            Ok(r) => r,
            Err(e) => return report.problem(format!("DNS: {e}")),
        },
        Err(e) => return report.problem(format!("DNS: no resolver configuration: {e}")),
    };
    let domain = &cfg.domain;
    let mut services = vec!["_xmpp-client", "_xmpps-client"];
    if cfg.s2s.enabled && !(cfg.listen.s2s.is_empty() && cfg.listen.s2s_direct_tls.is_empty()) {
        services.extend(["_xmpp-server", "_xmpps-server"]);
    }
    let mut client_srv = false;
    for service in services {
        let name = format!("{service}._tcp.{domain}.");
        let answer = tokio::time::timeout(DNS_TIMEOUT, resolver.srv_lookup(name.as_str())).await;
        let found = match answer {
            Ok(Ok(lookup)) => lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    hickory_resolver::proto::rr::RData::SRV(s) => {
                        Some(format!("{}:{}", s.target, s.port))
                    }
                    _ => None,
                })
                .collect::<Vec<_>>(),
            _ => Vec::new(),
        };
        if found.is_empty() {
            report.notes.push(format!("no SRV record {name}"));
        } else {
            client_srv |= service.ends_with("-client");
            report
                .notes
                .push(format!("SRV {name} → {}", found.join(", ")));
        }
    }
    if !client_srv {
        let host = format!("{domain}.");
        let addrs = tokio::time::timeout(DNS_TIMEOUT, resolver.lookup_ip(host.as_str())).await;
        if !matches!(addrs, Ok(Ok(ref a)) if a.iter().next().is_some()) {
            report.problem(format!(
                "DNS: {domain} has neither an _xmpp-client SRV record nor an address: clients \
                 cannot find the server"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn write_cert(dir: &Path, names: &[&str]) -> (std::path::PathBuf, std::path::PathBuf) {
        let ck = rcgen::generate_simple_self_signed(
            names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        let (c, k) = (dir.join("c.pem"), dir.join("k.pem"));
        std::fs::write(&c, ck.cert.pem()).unwrap();
        std::fs::write(&k, ck.key_pair.serialize_pem()).unwrap();
        (c, k)
    }

    fn config(dir: &Path, names: &[&str]) -> Config {
        let (cert, key) = write_cert(dir, names);
        let mut cfg = Config {
            domain: "example.org".into(),
            data_dir: dir.to_path_buf(),
            ..Config::default()
        };
        cfg.admin.token = Some("t".into());
        cfg.tls.cert = Some(cert);
        cfg.tls.key = Some(key);
        cfg
    }

    #[test]
    fn names_every_domain_the_certificate_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), &["example.org"]);
        let mut report = Report::default();
        certificate(&cfg, &mut report);
        // Self-signed and configured: untrusted is a problem; pubsub.example.org is not named.
        assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
        assert!(report
            .problems
            .iter()
            .any(|p| p.contains("not issued by a trusted CA")));
        assert!(report
            .problems
            .iter()
            .any(|p| p.contains("for pubsub.example.org")));
        let cfg = config(dir.path(), &["example.org", "*.example.org"]);
        let mut report = Report::default();
        certificate(&cfg, &mut report);
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    }

    #[test]
    fn each_host_certificate_must_name_its_host() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), &["example.org", "*.example.org"]);
        let other = dir.path().join("other");
        std::fs::create_dir(&other).unwrap();
        let (cert, key) = write_cert(&other, &["example.net"]);
        cfg.host = vec![
            crate::config::HostTable {
                domain: "example.net".into(),
                cert: Some(cert.clone()),
                key: Some(key),
                allow_registration: None,
                ..Default::default()
            },
            crate::config::HostTable {
                domain: "example.com".into(),
                cert: Some(cert),
                ..Default::default()
            },
            // Served the primary certificate, which does not name it.
            crate::config::HostTable {
                domain: "example.info".into(),
                ..Default::default()
            },
        ];
        let mut report = Report::default();
        certificate(&cfg, &mut report);
        let problems = report.problems.join("\n");
        // Untrusted (self-signed) twice; example.info and its pubsub service not named;
        // example.net's names the host, not its pubsub service; example.com half set.
        assert_eq!(report.problems.len(), 6, "{problems}");
        assert!(problems.contains("for example.info"), "{problems}");
        assert!(problems.contains("for pubsub.example.info"), "{problems}");
        assert!(problems.contains("for pubsub.example.net"), "{problems}");
        assert!(
            problems.contains("\"example.com\": cert and key"),
            "{problems}"
        );
        assert!(!problems.contains("for example.net"), "{problems}");
    }

    #[test]
    fn a_bad_listen_address_and_log_filter_are_problems() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), &["example.org"]);
        cfg.listen.c2s = "nowhere".into();
        cfg.log.level = "info,=[".into();
        let mut report = Report::default();
        super::config(&cfg, &mut report);
        assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
    }
}
