//! The first negotiation step of every stream: checking the peer's stream header (RFC 6120
//! §4.7). Sans-IO, so c2s, both s2s directions and components judge a header the same way;
//! each listener decides the `to` domain itself, between the two checks, as the RFC orders
//! the errors: namespace (§4.9.3.10), host (§4.9.3.6), version (§4.9.3.25).

use rookery_proto::{StreamError, StreamErrorCondition as SEC};
use rookery_xml::StreamHeader;

/// The major version of the header's `version` (RFC 6120 §4.7.5: `major.minor`, leading
/// zeros ignored), if it has a readable one.
pub fn major_version(header: &StreamHeader) -> Option<u32> {
    header
        .attr("version")?
        .split('.')
        .next()?
        .parse::<u32>()
        .ok()
}

/// The stream's content namespace must be `content_ns` (`invalid-namespace` otherwise).
pub fn check_namespace(header: &StreamHeader, content_ns: &str) -> Result<(), StreamError> {
    if header.default_ns == content_ns {
        return Ok(());
    }
    Err(StreamError::with_text(
        SEC::InvalidNamespace,
        format!("expected {content_ns}"),
    ))
}

/// The peer must speak XMPP 1.x (`unsupported-version` otherwise).
pub fn check_version(header: &StreamHeader) -> Result<(), StreamError> {
    if major_version(header) == Some(1) {
        return Ok(());
    }
    Err(StreamError::with_text(
        SEC::UnsupportedVersion,
        "XMPP 1.0 required",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(ns: &str, version: Option<&str>) -> StreamHeader {
        StreamHeader {
            default_ns: ns.into(),
            prefixes: Vec::new(),
            attrs: version
                .map(|v| vec![("version".to_string(), v.to_string())])
                .unwrap_or_default(),
        }
    }

    #[test]
    fn version_major_one_only() {
        assert!(check_version(&header("jabber:client", Some("1.0"))).is_ok());
        assert!(check_version(&header("jabber:client", Some("01.5"))).is_ok());
        for bad in [None, Some("2.0"), Some("0.9"), Some(""), Some("x.0")] {
            let e = check_version(&header("jabber:client", bad));
            assert_eq!(e.map_err(|e| e.condition), Err(SEC::UnsupportedVersion));
        }
        assert_eq!(major_version(&header("jabber:server", Some("1"))), Some(1));
    }

    #[test]
    fn namespace_must_match() {
        assert!(check_namespace(&header("jabber:server", None), "jabber:server").is_ok());
        let e = check_namespace(&header("jabber:client", None), "jabber:server");
        assert_eq!(e.map_err(|e| e.condition), Err(SEC::InvalidNamespace));
    }
}
