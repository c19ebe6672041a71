//! Certificates: load the configured PEM files, or generate a self-signed certificate into
//! the data directory on first start (and reuse it after), logging its fingerprint so users
//! can pin it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use rookery_stream::LiveCert;
use rustls::pki_types::pem::{Error as PemError, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};

use crate::config::Config;

/// TLS settings for the STARTTLS and the direct-TLS listener (the latter with ALPN
/// `xmpp-client`, XEP-0368), both serving the certificate of `cert`.
pub struct TlsConfigs {
    /// For STARTTLS.
    pub starttls: Arc<rustls::ServerConfig>,
    /// For direct TLS.
    pub direct: Arc<rustls::ServerConfig>,
    /// The certificate every configuration serves, replaced on reload; the federation
    /// listener and connector use it too.
    pub cert: Arc<LiveCert>,
    /// For the public HTTPS listener (ALPN `http/1.1`).
    pub https: Arc<rustls::ServerConfig>,
}

/// Loads or generates the certificate, loads those of the `[[host]]`s, and builds the rustls
/// configurations (TLS 1.2+).
pub fn load(cfg: &Config) -> anyhow::Result<TlsConfigs> {
    let cert = LiveCert::with_hosts(certified(cfg)?, host_certs(cfg)?);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let base = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(cert.clone());
    let mut direct = base.clone();
    direct.alpn_protocols = vec![b"xmpp-client".to_vec()];
    let mut https = base.clone();
    https.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConfigs {
        https: Arc::new(https),
        starttls: Arc::new(base),
        direct: Arc::new(direct),
        cert,
    })
}

/// The configured certificate chain and key (generated on first start when none is
/// configured), checked to belong together; at start and on every reload.
pub fn certified(cfg: &Config) -> anyhow::Result<CertifiedKey> {
    let (cert_path, key_path) = paths(cfg)?;
    if cfg.tls.cert.is_none() && (!cert_path.exists() || !key_path.exists()) {
        generate(&cfg.domain, &cert_path, &key_path)?;
    }
    let certified = read_pair(&cert_path, &key_path)?;
    if let Some(first) = certified.cert.first() {
        tracing::info!(
            cert = %cert_path.display(),
            sha256 = %fingerprint(first),
            "TLS certificate"
        );
    }
    Ok(certified)
}

/// The certificates of the `[[host]]`s that have their own (by SNI, see [`LiveCert`]): (the
/// normalized domain, its chain and key); at start and on every reload.
pub fn host_certs(cfg: &Config) -> anyhow::Result<Vec<(String, CertifiedKey)>> {
    let mut certs = Vec::new();
    for h in &cfg.host {
        let (cert, key) = match (&h.cert, &h.key) {
            (Some(c), Some(k)) => (c, k),
            (None, None) => continue,
            _ => bail!("[[host]] {:?}: cert and key must be set together", h.domain),
        };
        let domain = rookery_jid::normalize_domain(h.domain.trim())
            .map_err(|e| anyhow!("[[host]] {:?}: {e}", h.domain))?;
        let certified = read_pair(cert, key).with_context(|| format!("[[host]] {:?}", h.domain))?;
        if let Some(first) = certified.cert.first() {
            tracing::info!(host = %domain, cert = %cert.display(), sha256 = %fingerprint(first), "TLS certificate");
        }
        certs.push((domain, certified));
    }
    Ok(certs)
}

/// The chain in `cert_path` and the key in `key_path`, checked to belong together.
pub fn read_pair(cert_path: &Path, key_path: &Path) -> anyhow::Result<CertifiedKey> {
    let certs = read_certs(cert_path)?;
    let key = read_key(key_path)?;
    LiveCert::certified(certs, key).with_context(|| {
        format!(
            "{} and {} do not make a usable certificate",
            cert_path.display(),
            key_path.display()
        )
    })
}

/// The certificate and key files: configured, or the generated pair in the data directory.
pub fn paths(cfg: &Config) -> anyhow::Result<(PathBuf, PathBuf)> {
    match (&cfg.tls.cert, &cfg.tls.key) {
        (Some(c), Some(k)) => Ok((c.clone(), k.clone())),
        (None, None) => Ok((cfg.data_dir.join("cert.pem"), cfg.data_dir.join("key.pem"))),
        _ => Err(anyhow!("tls.cert and tls.key must be set together")),
    }
}

/// The SHA-256 fingerprint of a certificate, in hex, as clients pin it.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    hex::encode(Sha256::digest(cert.as_ref()))
}

fn generate(domain: &str, cert: &Path, key: &Path) -> anyhow::Result<()> {
    let names = vec![domain.to_string(), format!("*.{domain}")];
    let ck = rcgen::generate_simple_self_signed(names).context("generating certificate")?;
    if let Some(dir) = cert.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(cert, ck.cert.pem()).with_context(|| format!("writing {}", cert.display()))?;
    write_private(key, ck.key_pair.serialize_pem().as_bytes())?;
    tracing::warn!(
        cert = %cert.display(),
        "generated a self-signed certificate; clients will not trust it without pinning"
    );
    Ok(())
}

#[cfg(unix)]
fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(data)?;
    Ok(())
}

#[cfg(not(unix))]
fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", path.display()))?;
    if certs.is_empty() {
        return Err(anyhow!("no certificate in {}", path.display()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        PemError::NoItemsFound => anyhow!("no private key in {}", path.display()),
        e => anyhow!("parsing {}: {e}", path.display()),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_the_pem_files_it_generates_and_names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        generate("example.org", &cert, &key).unwrap();
        // A chain file may carry other sections (here a key) and text around the blocks.
        let mut chain = b"leaf:\n".to_vec();
        chain.extend(std::fs::read(&cert).unwrap());
        chain.extend(std::fs::read(&key).unwrap());
        chain.extend(std::fs::read(&cert).unwrap());
        std::fs::write(&cert, chain).unwrap();
        assert_eq!(read_certs(&cert).unwrap().len(), 2);
        assert!(matches!(read_key(&key).unwrap(), PrivateKeyDer::Pkcs8(_)));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        let e = read_key(&empty).unwrap_err().to_string();
        assert!(e.starts_with("no private key in"), "{e}");
        let e = read_certs(&empty).unwrap_err().to_string();
        assert!(e.starts_with("no certificate in"), "{e}");
    }
}
