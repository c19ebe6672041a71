//! The channel-binding data of one TLS connection, by type (the names XEP-0440 advertises):
//! RFC 9266 `tls-exporter` (TLS 1.3 only) and RFC 5929 `tls-server-end-point`, the hash of
//! the server's own certificate, which works on TLS 1.2 too and which XEP-0440 (1.0.0,
//! Business Rules) makes mandatory for servers.
//!
//! The certificate's signature algorithm is read with the `der` crate (RustCrypto): only the
//! outer `Certificate` sequence and its `signatureAlgorithm` are decoded, nothing is trusted
//! from it (it is our own certificate).

use der::asn1::{AnyRef, ObjectIdentifier};
use der::{Decode, Reader, SliceReader};
use sha2::{Digest, Sha256, Sha384, Sha512};

/// RFC 9266, as XEP-0440 names it.
pub const TLS_EXPORTER: &str = "tls-exporter";
/// RFC 5929 §4, as XEP-0440 names it.
pub const TLS_SERVER_END_POINT: &str = "tls-server-end-point";

/// What a connection can bind to; empty without TLS.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ChannelBindings {
    /// The `tls-exporter` keying material (32 bytes), on TLS 1.3.
    pub exporter: Option<Vec<u8>>,
    /// The `tls-server-end-point` hash of the certificate we served.
    pub server_end_point: Option<Vec<u8>>,
}

impl ChannelBindings {
    /// Only `tls-exporter` (a connection whose certificate is not known here).
    pub fn exporter(data: Option<Vec<u8>>) -> Self {
        ChannelBindings {
            exporter: data,
            server_end_point: None,
        }
    }

    /// Whether there is no binding at all (no -PLUS mechanism can be offered).
    pub fn is_empty(&self) -> bool {
        self.exporter.is_none() && self.server_end_point.is_none()
    }

    /// The data of the type the client named in its gs2 header (`p=`), if we have it.
    pub fn data(&self, kind: &str) -> Option<&[u8]> {
        match kind {
            TLS_EXPORTER => self.exporter.as_deref(),
            TLS_SERVER_END_POINT => self.server_end_point.as_deref(),
            _ => None,
        }
    }

    /// The types this connection offers, for `<sasl-channel-binding/>` (XEP-0440) and the
    /// XEP-0474 hash.
    pub fn types(&self) -> Vec<&'static str> {
        let mut types = Vec::new();
        if self.exporter.is_some() {
            types.push(TLS_EXPORTER);
        }
        if self.server_end_point.is_some() {
            types.push(TLS_SERVER_END_POINT);
        }
        types
    }
}

/// An exporter's keying material alone: what the client side and the tests know.
impl From<Option<Vec<u8>>> for ChannelBindings {
    fn from(exporter: Option<Vec<u8>>) -> Self {
        ChannelBindings::exporter(exporter)
    }
}

/// Binding data is key material: never in a log.
impl std::fmt::Debug for ChannelBindings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.types()).finish()
    }
}

/// The hash functions RFC 5929 §4.1 can pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndPointHash {
    Sha256,
    Sha384,
    Sha512,
}

/// RFC 5929 §4.1: the hash of the DER certificate with the hash function of its signature
/// algorithm — SHA-256 when that is MD5 or SHA-1. `None` for a certificate that does not
/// parse, or whose algorithm names no single hash (Ed25519, RSASSA-PSS): the binding is
/// then not offered rather than guessed.
pub fn tls_server_end_point(cert_der: &[u8]) -> Option<Vec<u8>> {
    let hash = end_point_hash(&signature_algorithm(cert_der)?)?;
    Some(match hash {
        EndPointHash::Sha256 => Sha256::digest(cert_der).to_vec(),
        EndPointHash::Sha384 => Sha384::digest(cert_der).to_vec(),
        EndPointHash::Sha512 => Sha512::digest(cert_der).to_vec(),
    })
}

/// `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm AlgorithmIdentifier,
/// signatureValue }` (RFC 5280 §4.1): the algorithm's OID.
fn signature_algorithm(cert_der: &[u8]) -> Option<ObjectIdentifier> {
    let mut reader = SliceReader::new(cert_der).ok()?;
    let oid = reader
        .sequence(|cert| {
            let _tbs = AnyRef::decode(cert)?;
            let oid = cert.sequence(|alg| {
                let oid = ObjectIdentifier::decode(alg)?;
                let _parameters: Option<AnyRef<'_>> = alg.decode()?;
                Ok(oid)
            })?;
            let _signature = AnyRef::decode(cert)?;
            Ok(oid)
        })
        .ok()?;
    reader.finish(oid).ok()
}

/// The hash RFC 5929 §4.1 uses for a signature algorithm.
fn end_point_hash(oid: &ObjectIdentifier) -> Option<EndPointHash> {
    use EndPointHash as H;
    const TABLE: &[(&str, EndPointHash)] = &[
        // md5WithRSAEncryption, sha1WithRSAEncryption, ecdsa-with-SHA1, dsa-with-sha1:
        // SHA-256 (§4.1).
        ("1.2.840.113549.1.1.4", H::Sha256),
        ("1.2.840.113549.1.1.5", H::Sha256),
        ("1.2.840.10045.4.1", H::Sha256),
        ("1.2.840.10040.4.3", H::Sha256),
        // sha256/384/512WithRSAEncryption.
        ("1.2.840.113549.1.1.11", H::Sha256),
        ("1.2.840.113549.1.1.12", H::Sha384),
        ("1.2.840.113549.1.1.13", H::Sha512),
        // ecdsa-with-SHA256/384/512.
        ("1.2.840.10045.4.3.2", H::Sha256),
        ("1.2.840.10045.4.3.3", H::Sha384),
        ("1.2.840.10045.4.3.4", H::Sha512),
        // dsa-with-sha256.
        ("2.16.840.1.101.3.4.3.2", H::Sha256),
    ];
    let name = oid.to_string();
    TABLE
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, hash)| *hash)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cert(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let params = rcgen::CertificateParams::new(vec!["example.test".into()]).unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    /// The hash follows the signature algorithm; Ed25519 names none, so nothing is offered.
    #[test]
    fn end_point_hash_follows_the_signature() {
        let p256 = cert(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(
            tls_server_end_point(&p256),
            Some(Sha256::digest(&p256).to_vec())
        );
        let p384 = cert(&rcgen::PKCS_ECDSA_P384_SHA384);
        assert_eq!(
            tls_server_end_point(&p384),
            Some(Sha384::digest(&p384).to_vec())
        );
        assert_eq!(tls_server_end_point(&cert(&rcgen::PKCS_ED25519)), None);
        assert_eq!(tls_server_end_point(b"not a certificate"), None);
        let truncated = p256.get(..p256.len() - 1).unwrap();
        assert_eq!(tls_server_end_point(truncated), None);
    }

    #[test]
    fn md5_and_sha1_signatures_use_sha256() {
        for oid in [
            "1.2.840.113549.1.1.5",
            "1.2.840.10045.4.1",
            "1.2.840.113549.1.1.4",
        ] {
            let oid = ObjectIdentifier::new(oid).unwrap();
            assert_eq!(end_point_hash(&oid), Some(EndPointHash::Sha256));
        }
        let pss = ObjectIdentifier::new("1.2.840.113549.1.1.10").unwrap();
        assert_eq!(end_point_hash(&pss), None);
    }

    #[test]
    fn bindings_by_type() {
        let b = ChannelBindings {
            exporter: Some(vec![1]),
            server_end_point: Some(vec![2]),
        };
        assert_eq!(b.types(), [TLS_EXPORTER, TLS_SERVER_END_POINT]);
        assert_eq!(b.data(TLS_SERVER_END_POINT), Some(&[2u8][..]));
        assert_eq!(b.data("tls-unique"), None);
        assert!(ChannelBindings::default().is_empty());
        assert_eq!(
            format!("{b:?}"),
            "[\"tls-exporter\", \"tls-server-end-point\"]"
        );
    }
}
