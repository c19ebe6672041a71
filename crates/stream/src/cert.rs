//! The server's own certificate, replaceable while the server runs (`rookery ctl reload`,
//! SIGHUP; docs/operations.md "Certificate renewal").
//!
//! Every rustls configuration of the server (c2s and s2s, server and client side) is built
//! with a [`LiveCert`] as its certificate resolver instead of a fixed chain, so the
//! configurations themselves never change: each handshake asks for the current certificate,
//! a renewed one serves the next handshake, and established TLS sessions keep theirs.
//! An `ArcSwap` makes that read a couple of atomic operations, without a lock.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

/// The current certificate chain and key, for every handshake.
#[derive(Debug)]
pub struct LiveCert {
    current: ArcSwap<CertifiedKey>,
}

impl LiveCert {
    /// Checks that `key` belongs to the first certificate of `chain` and pairs them for
    /// signing with the ring provider (the server's only provider).
    pub fn certified(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<CertifiedKey, rustls::Error> {
        if chain.is_empty() {
            return Err(rustls::Error::General("empty certificate chain".into()));
        }
        CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider())
    }

    /// Starts with `key`.
    pub fn new(key: CertifiedKey) -> Arc<LiveCert> {
        Arc::new(LiveCert {
            current: ArcSwap::from_pointee(key),
        })
    }

    /// Serves `key` from the next handshake on.
    pub fn replace(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }

    /// The certificate served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }
}

impl ResolvesServerCert for LiveCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Our certificate as client certificate on outgoing server-to-server streams (SASL
/// EXTERNAL at the peer, XEP-0178).
impl ResolvesClientCert for LiveCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn generate(name: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        let key = PrivateKeyDer::try_from(ck.key_pair.serialize_der()).unwrap();
        (vec![ck.cert.der().clone()], key)
    }

    #[test]
    fn serves_the_replacement_and_refuses_a_key_of_another_certificate() {
        let (a_chain, a_key) = generate("a.example");
        let (b_chain, b_key) = generate("b.example");
        let live = LiveCert::new(LiveCert::certified(a_chain.clone(), a_key).unwrap());
        assert_eq!(live.current().cert, a_chain);
        live.replace(LiveCert::certified(b_chain.clone(), b_key.clone_key()).unwrap());
        assert_eq!(live.current().cert, b_chain);
        assert!(LiveCert::certified(a_chain, b_key).is_err());
        assert!(LiveCert::certified(Vec::new(), generate("c").1).is_err());
    }
}
