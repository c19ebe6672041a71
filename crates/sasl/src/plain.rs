//! The `PLAIN` message (RFC 4616 §2): `[authzid] NUL authcid NUL passwd`, all UTF-8.

/// A parsed `PLAIN` message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PlainMessage {
    pub(crate) authzid: Option<String>,
    pub(crate) authcid: String,
    pub(crate) password: String,
}

/// Parses a `PLAIN` message; `None` if it is malformed (wrong number of NULs, empty authcid
/// or password, invalid UTF-8).
pub(crate) fn parse(msg: &[u8]) -> Option<PlainMessage> {
    let mut parts = msg.split(|&b| b == 0);
    let authzid = std::str::from_utf8(parts.next()?).ok()?;
    let authcid = std::str::from_utf8(parts.next()?).ok()?;
    let password = std::str::from_utf8(parts.next()?).ok()?;
    if parts.next().is_some() || authcid.is_empty() || password.is_empty() {
        return None;
    }
    Some(PlainMessage {
        authzid: (!authzid.is_empty()).then(|| authzid.to_owned()),
        authcid: authcid.to_owned(),
        password: password.to_owned(),
    })
}

/// Builds a `PLAIN` message (the inverse of [`parse`]).
pub(crate) fn build(authzid: Option<&str>, authcid: &str, password: &str) -> Vec<u8> {
    let authzid = authzid.unwrap_or("");
    let mut out = Vec::with_capacity(authzid.len() + authcid.len() + password.len() + 2);
    out.extend_from_slice(authzid.as_bytes());
    out.push(0);
    out.extend_from_slice(authcid.as_bytes());
    out.push(0);
    out.extend_from_slice(password.as_bytes());
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let m = parse(&build(Some("admin@x"), "user", "pass")).unwrap();
        assert_eq!(m.authzid.as_deref(), Some("admin@x"));
        assert_eq!((m.authcid.as_str(), m.password.as_str()), ("user", "pass"));
        let m = parse(b"\0user\0pass").unwrap();
        assert_eq!(m.authzid, None);
    }

    #[test]
    fn malformed() {
        for bad in [
            &b""[..],
            b"\0",
            b"\0\0",
            b"user\0pass",
            b"\0\0pass",
            b"\0user\0",
            b"\0user\0pass\0",
            b"\0us\xffer\0pass",
            b"\0user\0pa\xc3",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
