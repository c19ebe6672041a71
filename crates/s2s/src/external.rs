//! SASL EXTERNAL for server-to-server streams (RFC 6120 §6.4, RFC 4422 Appendix A, XEP-0178
//! §2–3): the peer is authenticated by the certificate it presented in the TLS handshake.
//!
//! Sans-IO: the listener hands over the (decoded) response and the stream header's `from`;
//! whether the certificate is valid for a domain is asked through a closure, so this file
//! knows nothing of TLS.

use rookery_sasl::{Credentials, Failure, Step};
use rookery_stream::negotiation::sasl::SaslServer;

/// The mechanism name.
pub const MECHANISM: &str = "EXTERNAL";

/// Decides an EXTERNAL exchange on the receiving side. `response` is the decoded initial
/// response (empty when the peer sent `=`); `stream_from` the `from` of its stream header;
/// `valid_for(domain)` whether its certificate is valid for `domain`.
///
/// The identity is the authorization identity when one is given (XEP-0178 §3 step 6: it
/// must be a domain, and the one the stream header named when there is one), else the stream
/// header's `from`. Returns the authenticated domain or the SASL failure condition.
pub fn server(
    response: &[u8],
    stream_from: Option<&str>,
    valid_for: impl Fn(&str) -> bool,
) -> Result<String, &'static str> {
    let claimed = if response.is_empty() {
        stream_from.ok_or("not-authorized")?.to_string()
    } else {
        let authzid = std::str::from_utf8(response).map_err(|_| "invalid-authzid")?;
        let domain = rookery_jid::normalize_domain(authzid).map_err(|_| "invalid-authzid")?;
        if stream_from.is_some_and(|f| f != domain) {
            return Err("invalid-authzid");
        }
        domain
    };
    if valid_for(&claimed) {
        Ok(claimed)
    } else {
        Err("not-authorized")
    }
}

/// The receiving side's EXTERNAL as a mechanism of the shared SASL exchange
/// (`rookery_stream::negotiation::sasl`). It is only offered when the certificate is valid
/// for the domain the stream header named, so that domain is all it needs to know.
#[derive(Debug)]
pub struct ExternalServer {
    /// The `from` of the peer's stream header.
    pub stream_from: Option<String>,
    /// The domain the peer's certificate was found valid for (and that we do not host).
    pub valid_for: Option<String>,
}

impl ExternalServer {
    /// The first step: an empty challenge when the `<auth/>` carried no initial response
    /// (RFC 6120 §6.4.2), else the decision.
    pub fn start(&mut self, initial: Option<Vec<u8>>) -> Step {
        match initial {
            None => Step::Challenge(Vec::new()),
            Some(response) => self.decide(&response),
        }
    }

    fn decide(&self, response: &[u8]) -> Step {
        let valid = self.valid_for.as_deref();
        match server(response, self.stream_from.as_deref(), |d| Some(d) == valid) {
            Ok(domain) => Step::Success {
                username: domain,
                authzid: None,
                additional_data: None,
            },
            Err(condition) => {
                Step::Failure(Failure::from_condition(condition).unwrap_or(Failure::NotAuthorized))
            }
        }
    }
}

impl SaslServer for ExternalServer {
    fn respond(&mut self, response: &[u8]) -> Step {
        self.decide(response)
    }

    /// EXTERNAL never asks for credentials.
    fn provide_credentials(&mut self, _creds: Option<&Credentials>) -> Step {
        Step::Failure(Failure::TemporaryAuthFailure)
    }
}

/// The initial response of the initiating side: its own domain as authorization identity
/// (what Prosody and ejabberd send and accept).
pub fn client(local_domain: &str) -> Vec<u8> {
    local_domain.as_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_for_a(d: &str) -> bool {
        d == "a.test"
    }

    #[test]
    fn empty_response_uses_the_stream_from() {
        assert_eq!(server(b"", Some("a.test"), cert_for_a), Ok("a.test".into()));
        assert_eq!(
            server(b"", Some("b.test"), cert_for_a),
            Err("not-authorized")
        );
        assert_eq!(server(b"", None, cert_for_a), Err("not-authorized"));
    }

    #[test]
    fn authzid_must_be_a_domain_the_certificate_covers() {
        assert_eq!(server(b"a.test", None, cert_for_a), Ok("a.test".into()));
        assert_eq!(
            server(b"A.Test", Some("a.test"), cert_for_a),
            Ok("a.test".into())
        );
        assert_eq!(server(b"b.test", None, cert_for_a), Err("not-authorized"));
        assert_eq!(
            server(b"a.test", Some("c.test"), cert_for_a),
            Err("invalid-authzid")
        );
        assert_eq!(
            server(b"user@a.test", None, cert_for_a),
            Err("invalid-authzid")
        );
        assert_eq!(
            server(&[0xff, 0xfe], None, cert_for_a),
            Err("invalid-authzid")
        );
    }

    #[test]
    fn as_a_mechanism() {
        let mut x = ExternalServer {
            stream_from: Some("a.test".into()),
            valid_for: Some("a.test".into()),
        };
        assert_eq!(x.start(None), Step::Challenge(Vec::new()));
        assert!(matches!(x.respond(b""), Step::Success { username, .. } if username == "a.test"));
        assert_eq!(x.respond(b"b.test"), Step::Failure(Failure::InvalidAuthzid));
        x.valid_for = None;
        assert_eq!(
            x.start(Some(Vec::new())),
            Step::Failure(Failure::NotAuthorized)
        );
    }

    #[test]
    fn client_sends_its_domain() {
        assert_eq!(client("a.test"), b"a.test");
    }
}
