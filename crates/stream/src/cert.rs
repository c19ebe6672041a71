//! The server's own certificate, replaceable while the server runs (`rookery ctl reload`,
//! SIGHUP; docs/operations.md "Certificate renewal").
//!
//! Every rustls configuration of the server (c2s and s2s, server and client side) is built
//! with a [`LiveCert`] as its certificate resolver instead of a fixed chain (an outgoing
//! server-to-server stream asks it for its local domain's, `rookery-s2s` `tls.rs`), so the
//! configurations themselves never change: each handshake asks for the current certificate,
//! a renewed one serves the next handshake, and established TLS sessions keep theirs.
//! An `ArcSwap` makes that read a couple of atomic operations, without a lock.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::transport::Transport;

/// The current certificate chain and key, for every handshake: the default one and, for
/// virtual hosting, one per hosted domain, picked by the name the client asked for (SNI).
#[derive(Debug)]
pub struct LiveCert {
    current: ArcSwap<CertSet>,
}

/// The certificates served at one time.
#[derive(Debug)]
struct CertSet {
    default: Arc<CertifiedKey>,
    /// (normalized domain, its certificate), a handful at most.
    hosts: Vec<(String, Arc<CertifiedKey>)>,
}

impl CertSet {
    fn new(default: CertifiedKey, hosts: Vec<(String, CertifiedKey)>) -> CertSet {
        CertSet {
            default: Arc::new(default),
            hosts: hosts
                .into_iter()
                .map(|(d, k)| (d.to_ascii_lowercase(), Arc::new(k)))
                .collect(),
        }
    }

    /// The certificate of the host `name` is, or is a subdomain of (`pubsub.example.net`
    /// gets `example.net`'s: its services share its certificate), else the default.
    fn for_name(&self, name: &str) -> &Arc<CertifiedKey> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let mut candidate = name.as_str();
        loop {
            if let Some((_, k)) = self.hosts.iter().find(|(d, _)| d == candidate) {
                return k;
            }
            match candidate.split_once('.') {
                Some((_, parent)) if !parent.is_empty() => candidate = parent,
                _ => return &self.default,
            }
        }
    }
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

    /// Starts with `key` for every name.
    pub fn new(key: CertifiedKey) -> Arc<LiveCert> {
        Self::with_hosts(key, Vec::new())
    }

    /// Starts with `key` by default and each (domain, key) of `hosts` for that domain and
    /// its subdomains.
    pub fn with_hosts(key: CertifiedKey, hosts: Vec<(String, CertifiedKey)>) -> Arc<LiveCert> {
        Arc::new(LiveCert {
            current: ArcSwap::from_pointee(CertSet::new(key, hosts)),
        })
    }

    /// Serves `key` (and `hosts`, as [`LiveCert::with_hosts`]) from the next handshake on.
    pub fn replace(&self, key: CertifiedKey, hosts: Vec<(String, CertifiedKey)>) {
        self.current.store(Arc::new(CertSet::new(key, hosts)));
    }

    /// The default certificate served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load().default.clone()
    }

    /// The certificate served now to a client asking for `name` (SNI).
    pub fn for_name(&self, name: &str) -> Arc<CertifiedKey> {
        self.current.load().for_name(name).clone()
    }

    /// The RFC 5929 `tls-server-end-point` binding of a connection we accepted with TLS: the
    /// hash of the certificate its SNI name (or its lack of one) is served. Looked up again,
    /// as rustls does not say which one the handshake used: a reload in between would give
    /// the new one, and that connection's -PLUS exchange fails (the client may retry).
    pub fn server_end_point(&self, transport: &Transport) -> Option<Vec<u8>> {
        let Transport::Tls(tls) = transport else {
            return None;
        };
        self.end_point_for(tls.get_ref().1.server_name())
    }

    /// The `tls-server-end-point` binding of the certificate served to a handshake that
    /// asked for `sni` (or for no name).
    pub fn end_point_for(&self, sni: Option<&str>) -> Option<Vec<u8>> {
        let key = match sni {
            Some(name) => self.for_name(name),
            None => self.current(),
        };
        rookery_sasl::channel_binding::tls_server_end_point(key.cert.first()?)
    }
}

impl ResolvesServerCert for LiveCert {
    /// By the client's SNI name; without one (an IP address, or a client that sends none),
    /// the default.
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(match hello.server_name() {
            Some(name) => self.for_name(name),
            None => self.current(),
        })
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
        live.replace(
            LiveCert::certified(b_chain.clone(), b_key.clone_key()).unwrap(),
            Vec::new(),
        );
        assert_eq!(live.current().cert, b_chain);
        assert!(LiveCert::certified(a_chain, b_key).is_err());
        assert!(LiveCert::certified(Vec::new(), generate("c").1).is_err());
    }

    #[test]
    fn each_host_and_its_subdomains_get_their_certificate() {
        let key = |name| {
            let (chain, key) = generate(name);
            LiveCert::certified(chain, key).unwrap()
        };
        let live = LiveCert::with_hosts(
            key("a.example"),
            vec![("B.example".into(), key("b.example"))],
        );
        let served = |name| live.for_name(name).cert.clone();
        let (a, b) = (live.current().cert.clone(), served("b.example"));
        assert_ne!(a, b);
        assert_eq!(served("B.EXAMPLE."), b);
        assert_eq!(served("pubsub.b.example"), b);
        assert_eq!(served("a.example"), a);
        assert_eq!(served("xb.example"), a);
        assert_eq!(served("example"), a);
        assert_eq!(served(""), a);
        live.replace(key("c.example"), Vec::new());
        assert_eq!(served("b.example"), live.current().cert);
    }
}
