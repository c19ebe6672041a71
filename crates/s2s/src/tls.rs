//! TLS for server-to-server streams (RFC 6120 §5, §13.7; RFC 7590; XEP-0368 for direct TLS).
//!
//! The handshake itself accepts any certificate chain (signatures of the handshake are still
//! checked), because a certificate that does not verify is not fatal in federation: the peer
//! may still be authenticated by dialback when policy allows. Whether a chain is valid for a
//! domain is decided afterwards, once the domain is known, by [`S2sTls::valid_for`] against
//! the trusted roots (webpki-roots and/or a configured CA file). Incoming streams ask for a
//! client certificate (optional) so SASL EXTERNAL can use it; outgoing streams present ours —
//! the certificate of the local domain the stream speaks for (a `[[host]]` with its own, or
//! the primary's), so a peer that requires valid certificates authenticates every host by
//! SASL EXTERNAL (XEP-0178), not the primary only.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rookery_stream::{LiveCert, Transport};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

/// ALPN protocol for direct-TLS server streams (XEP-0368 §3).
pub const ALPN: &[u8] = b"xmpp-server";

/// Why the TLS settings could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// rustls refused the configuration (bad key, unsupported versions).
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// The CA file could not be read.
    #[error("reading CA file {path}: {source}")]
    CaFile {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The TLS configurations of the federation listener and connector.
pub struct S2sTls {
    /// Incoming STARTTLS (client certificate requested, optional).
    pub server: Arc<rustls::ServerConfig>,
    /// Incoming direct TLS (same, with ALPN `xmpp-server`).
    pub server_direct: Arc<rustls::ServerConfig>,
    /// Outgoing, before a local domain's certificate is chosen (see [`S2sTls::client`]).
    client: rustls::ClientConfig,
    cert: Arc<LiveCert>,
    /// The outgoing configurations made so far, by local domain: (STARTTLS, direct TLS).
    /// As many as the domains we send from (hosts and their services), a handful.
    clients: Mutex<HashMap<String, Outgoing>>,
    verifier: Option<Arc<WebPkiServerVerifier>>,
}

/// The outgoing configurations of one local domain: for STARTTLS, and for direct TLS.
#[derive(Clone)]
struct Outgoing {
    starttls: Arc<rustls::ClientConfig>,
    direct: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for S2sTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S2sTls")
            .field("verifies", &self.verifier.is_some())
            .finish_non_exhaustive()
    }
}

/// The trust anchors: webpki-roots when `webpki`, plus every certificate in `ca_file`.
pub fn roots(webpki: bool, ca_file: Option<&Path>) -> Result<RootCertStore, TlsSetupError> {
    let mut store = RootCertStore::empty();
    if webpki {
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(p) = ca_file {
        let err = |source| TlsSetupError::CaFile {
            path: p.display().to_string(),
            source,
        };
        let pem = std::fs::read(p).map_err(err)?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert =
                cert.map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
            if let Err(e) = store.add(cert) {
                tracing::warn!(file = %p.display(), error = %e, "CA certificate skipped");
            }
        }
    }
    Ok(store)
}

impl S2sTls {
    /// Builds the configurations from our certificate chain and key and the trust anchors.
    pub fn new(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        roots: RootCertStore,
    ) -> Result<S2sTls, TlsSetupError> {
        Self::with_cert(LiveCert::new(LiveCert::certified(certs, key)?), roots)
    }

    /// Builds the configurations from our certificate, read at each handshake (so one
    /// replaced on reload serves the next streams), and the trust anchors.
    pub fn with_cert(cert: Arc<LiveCert>, roots: RootCertStore) -> Result<S2sTls, TlsSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = if roots.is_empty() {
            None
        } else {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| tracing::warn!(error = %e, "no certificate verification"))
                .ok()
        };
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(Arc::new(AnyCert(provider.clone())))
            .with_cert_resolver(cert.clone());
        let mut server_direct = server.clone();
        server_direct.alpn_protocols = vec![ALPN.to_vec()];
        let client = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
            .with_no_client_auth();
        Ok(S2sTls {
            server: Arc::new(server),
            server_direct: Arc::new(server_direct),
            client,
            cert,
            clients: Mutex::new(HashMap::new()),
            verifier,
        })
    }

    /// The configuration of an outgoing stream from `local` (direct TLS with ALPN
    /// `xmpp-server`, or STARTTLS): it presents `local`'s certificate as client certificate,
    /// read at each handshake like the server side's (a reload serves the next stream).
    pub fn client(&self, local: &str, direct: bool) -> Arc<rustls::ClientConfig> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let made = clients
            .entry(local.to_ascii_lowercase())
            .or_insert_with(|| {
                let mut starttls = self.client.clone();
                starttls.client_auth_cert_resolver = Arc::new(HostCert {
                    cert: self.cert.clone(),
                    host: local.to_string(),
                });
                let mut direct = starttls.clone();
                direct.alpn_protocols = vec![ALPN.to_vec()];
                Outgoing {
                    starttls: Arc::new(starttls),
                    direct: Arc::new(direct),
                }
            });
        if direct {
            made.direct.clone()
        } else {
            made.starttls.clone()
        }
    }

    /// Whether `chain` (end entity first) is valid for `domain` (RFC 6125 DNS-ID, wildcards
    /// included) and chains to a trusted root.
    pub fn valid_for(&self, chain: &[CertificateDer<'_>], domain: &str) -> bool {
        let (Some(verifier), Some((ee, intermediates))) = (&self.verifier, chain.split_first())
        else {
            return false;
        };
        let Ok(name) = ServerName::try_from(domain.to_string()) else {
            return false;
        };
        match verifier.verify_server_cert(ee, intermediates, &name, &[], UnixTime::now()) {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!(domain, error = %e, "peer certificate not valid");
                false
            }
        }
    }
}

/// The certificate of one local domain as client certificate (SASL EXTERNAL at the peer,
/// XEP-0178): its host's, or the default where it has none of its own.
#[derive(Debug)]
struct HostCert {
    cert: Arc<LiveCert>,
    host: String,
}

impl ResolvesClientCert for HostCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.cert.for_name(&self.host))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The peer's certificate chain on a TLS transport.
pub fn peer_chain(io: &Transport) -> Vec<CertificateDer<'static>> {
    let certs = match io {
        Transport::Plain(_) | Transport::Memory(_) => None,
        Transport::Tls(t) => t.get_ref().1.peer_certificates(),
        Transport::TlsClient(t) => t.get_ref().1.peer_certificates(),
    };
    certs.map(<[_]>::to_vec).unwrap_or_default()
}

/// Accepts any chain in the handshake (see the module docs) while still checking the
/// handshake signatures with the provider's algorithms, as server and as client verifier.
/// Public for clients that must complete a real handshake with a server whose certificate
/// they cannot verify (the tests of the `rookery` binary against its self-signed one).
#[derive(Debug)]
pub struct AnyCert(Arc<CryptoProvider>);

/// The TLS version whose handshake signature is checked.
#[derive(Debug, Clone, Copy)]
enum Tls {
    V12,
    V13,
}

impl AnyCert {
    /// A verifier checking handshake signatures with `provider`'s algorithms.
    pub fn new(provider: Arc<CryptoProvider>) -> AnyCert {
        AnyCert(provider)
    }

    /// The handshake-signature check of both roles (we verify servers we dial and clients
    /// that dial us the same way): the chain is accepted whatever it is, but the peer must
    /// prove it holds the certificate's key, with the provider's algorithms.
    fn signature(
        &self,
        version: Tls,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        match version {
            Tls::V12 => verify_tls12_signature(message, cert, dss, algs),
            Tls::V13 => verify_tls13_signature(message, cert, dss, algs),
        }
    }
}

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signature(Tls::V12, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signature(Tls::V13, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for AnyCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signature(Tls::V12, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signature(Tls::V13, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

    /// A CA and a certificate it issued for `names`.
    fn issued(names: &[&str]) -> (CertificateDer<'static>, CertificateDer<'static>) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
        (ca_cert.der().clone(), cert.der().clone())
    }

    fn tls_trusting(ca: Option<CertificateDer<'static>>) -> S2sTls {
        let ck = rcgen::generate_simple_self_signed(vec!["me.test".to_string()]).unwrap();
        let key = PrivateKeyDer::try_from(ck.key_pair.serialize_der()).unwrap();
        let mut roots = RootCertStore::empty();
        if let Some(ca) = ca {
            roots.add(ca).unwrap();
        }
        S2sTls::new(vec![ck.cert.der().clone()], key, roots).unwrap()
    }

    #[test]
    fn valid_only_for_the_names_the_ca_signed() {
        let (ca, cert) = issued(&["a.test", "*.b.test"]);
        let tls = tls_trusting(Some(ca));
        let chain = std::slice::from_ref(&cert);
        assert!(tls.valid_for(chain, "a.test"));
        assert!(tls.valid_for(chain, "x.b.test"));
        assert!(!tls.valid_for(chain, "b.test"));
        assert!(!tls.valid_for(chain, "c.test"));
        assert!(!tls.valid_for(&[], "a.test"));
    }

    #[test]
    fn untrusted_or_self_signed_is_not_valid() {
        let (_ca, cert) = issued(&["a.test"]);
        let (other_ca, _) = issued(&["z.test"]);
        assert!(!tls_trusting(Some(other_ca)).valid_for(std::slice::from_ref(&cert), "a.test"));
        assert!(!tls_trusting(None).valid_for(&[cert], "a.test"));
        let ss = rcgen::generate_simple_self_signed(vec!["a.test".to_string()]).unwrap();
        let tls = tls_trusting(Some(ss.cert.der().clone()));
        // A self-signed end-entity certificate is not a trust anchor for itself in webpki.
        let _ = tls.valid_for(&[ss.cert.der().clone()], "a.test");
    }

    /// An outgoing stream presents the certificate of the domain it speaks for: a host's
    /// own (its services' too), else the default; direct TLS asks for `xmpp-server`.
    #[test]
    fn outgoing_streams_present_their_hosts_certificate() {
        let certified = |name: &str| {
            let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
            let key = PrivateKeyDer::try_from(ck.key_pair.serialize_der()).unwrap();
            LiveCert::certified(vec![ck.cert.der().clone()], key).unwrap()
        };
        let live = LiveCert::with_hosts(
            certified("a.example"),
            vec![("b.example".into(), certified("b.example"))],
        );
        let tls = S2sTls::with_cert(live.clone(), RootCertStore::empty()).unwrap();
        let presented = |local: &str, direct: bool| {
            let config = tls.client(local, direct);
            assert_eq!(config.alpn_protocols.is_empty(), !direct);
            config
                .client_auth_cert_resolver
                .resolve(&[], &[])
                .unwrap()
                .cert
                .clone()
        };
        let (a, b) = (
            live.current().cert.clone(),
            live.for_name("b.example").cert.clone(),
        );
        assert_ne!(a, b);
        assert_eq!(presented("a.example", false), a);
        assert_eq!(presented("b.example", false), b);
        assert_eq!(presented("B.example", true), b);
        assert_eq!(presented("pubsub.b.example", false), b);
        // A renewed certificate serves the next handshake of a configuration made before.
        live.replace(certified("a.example"), Vec::new());
        assert_eq!(presented("b.example", false), live.current().cert);
    }

    #[test]
    fn webpki_roots_load() {
        let r = roots(true, None).unwrap();
        assert!(r.len() > 50);
        assert!(roots(false, Some(Path::new("/nonexistent/ca.pem"))).is_err());
    }
}
