//! Certificates: load the configured PEM files, or generate a self-signed certificate into
//! the data directory on first start (and reuse it after), logging its fingerprint so users
//! can pin it.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use rustls::pki_types::pem::{Error as PemError, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::config::Config;

/// TLS settings for the STARTTLS and the direct-TLS listener (the latter with ALPN
/// `xmpp-client`, XEP-0368).
pub struct TlsConfigs {
    /// For STARTTLS.
    pub starttls: Arc<rustls::ServerConfig>,
    /// For direct TLS.
    pub direct: Arc<rustls::ServerConfig>,
    /// For the public HTTPS listener (ALPN `http/1.1`).
    pub https: Arc<rustls::ServerConfig>,
    /// The certificate chain, for the federation listener and connector.
    pub certs: Vec<CertificateDer<'static>>,
    /// The private key, likewise.
    pub key: PrivateKeyDer<'static>,
}

/// Loads or generates the certificate and builds the rustls configurations (TLS 1.2+).
pub fn load(cfg: &Config) -> anyhow::Result<TlsConfigs> {
    let (cert_path, key_path) = match (&cfg.tls.cert, &cfg.tls.key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        (None, None) => {
            let c = cfg.data_dir.join("cert.pem");
            let k = cfg.data_dir.join("key.pem");
            if !c.exists() || !k.exists() {
                generate(&cfg.domain, &c, &k)?;
            }
            (c, k)
        }
        _ => return Err(anyhow!("tls.cert and tls.key must be set together")),
    };
    let certs = read_certs(&cert_path)?;
    let key = read_key(&key_path)?;
    if let Some(first) = certs.first() {
        tracing::info!(
            cert = %cert_path.display(),
            sha256 = %hex::encode(Sha256::digest(first.as_ref())),
            "TLS certificate"
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let base = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs.clone(), key.clone_key())
        .context("certificate and key do not match")?;
    let mut direct = base.clone();
    direct.alpn_protocols = vec![b"xmpp-client".to_vec()];
    let mut https = base.clone();
    https.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConfigs {
        https: Arc::new(https),
        starttls: Arc::new(base),
        direct: Arc::new(direct),
        certs,
        key,
    })
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
