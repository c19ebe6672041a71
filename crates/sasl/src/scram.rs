//! SCRAM message syntax (RFC 5802 §5 and §7): parsing of client messages for the server,
//! of server messages for the client, and the shared helpers.
//!
//! Parsers return `None` on any syntax error; the server maps that to `malformed-request`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

/// The gs2-cbind-flag of a client-first-message (RFC 5802 §7).
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) enum CbFlag {
    /// `n`: the client does not support channel binding.
    No,
    /// `y`: the client supports channel binding but thinks the server does not.
    SupportedNotUsed,
    /// `p=<cb-name>`: the client requires channel binding of this type.
    Used(String),
}

/// A parsed client-first-message.
#[derive(Debug)]
pub(crate) struct ClientFirst<'a> {
    /// The gs2-header exactly as sent, including its trailing comma.
    pub(crate) gs2_header: &'a str,
    pub(crate) cb_flag: CbFlag,
    pub(crate) authzid: Option<String>,
    pub(crate) username: String,
    pub(crate) nonce: &'a str,
    /// client-first-message-bare, part of AuthMessage.
    pub(crate) bare: &'a str,
}

/// A parsed client-final-message.
#[derive(Debug)]
pub(crate) struct ClientFinal<'a> {
    /// The decoded `c=` attribute: gs2-header followed by any channel binding data.
    pub(crate) channel_binding: Vec<u8>,
    pub(crate) nonce: &'a str,
    pub(crate) proof: Vec<u8>,
    /// client-final-message-without-proof, part of AuthMessage.
    pub(crate) without_proof: &'a str,
}

/// A parsed server-first-message.
#[derive(Debug)]
pub(crate) struct ServerFirst<'a> {
    pub(crate) nonce: &'a str,
    pub(crate) salt: Vec<u8>,
    pub(crate) iterations: u32,
}

/// Splits `k=value` where `k` is one ASCII letter (RFC 5802 `attr-val`).
fn attribute(part: &str) -> Option<(char, &str)> {
    let (key, value) = part.split_once('=')?;
    let mut chars = key.chars();
    let k = chars.next()?;
    if chars.next().is_some() || !k.is_ascii_alphabetic() {
        return None;
    }
    Some((k, value))
}

/// The value of attribute `key` in `part`, if `part` is that attribute.
fn expect(part: Option<&str>, key: char) -> Option<&str> {
    match attribute(part?)? {
        (k, v) if k == key => Some(v),
        _ => None,
    }
}

/// Whether every remaining part is a well-formed extension attribute (values are ignored).
/// `m` is the reserved mandatory extension: its presence fails authentication (§5.1).
fn valid_extensions<'a>(mut parts: impl Iterator<Item = &'a str>) -> bool {
    parts.all(|p| matches!(attribute(p), Some((k, _)) if k != 'm'))
}

/// Whether `nonce` is a valid `c-nonce`/`nonce`: printable ASCII except `,` (§7).
pub(crate) fn valid_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Decodes a `saslname` (§5.1): UTF-8 without NUL, `,` or bare `=`, with `=2C` for `,` and
/// `=3D` for `=`. Empty names are invalid.
pub(crate) fn unescape_saslname(name: &str) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        match c {
            '=' => match (chars.next(), chars.next()) {
                (Some('2'), Some('C')) => out.push(','),
                (Some('3'), Some('D')) => out.push('='),
                _ => return None,
            },
            '\0' | ',' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// Encodes a `saslname` (the inverse of [`unescape_saslname`]).
pub(crate) fn escape_saslname(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            ',' => out.push_str("=2C"),
            '=' => out.push_str("=3D"),
            c => out.push(c),
        }
    }
    out
}

/// Whether `name` is a valid `cb-name`: 1*(ALPHA / DIGIT / "." / "-") (§7).
fn valid_cb_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// Parses a client-first-message:
/// `gs2-cbind-flag "," [authzid] "," [reserved-mext ","] username "," nonce ["," extensions]`.
pub(crate) fn parse_client_first(msg: &str) -> Option<ClientFirst<'_>> {
    let (flag, rest) = msg.split_once(',')?;
    let (authz, bare) = rest.split_once(',')?;
    let gs2_header = msg.get(..flag.len() + authz.len() + 2)?;
    let cb_flag = match flag {
        "n" => CbFlag::No,
        "y" => CbFlag::SupportedNotUsed,
        _ => {
            let name = flag.strip_prefix("p=")?;
            if !valid_cb_name(name) {
                return None;
            }
            CbFlag::Used(name.to_owned())
        }
    };
    let authzid = if authz.is_empty() {
        None
    } else {
        Some(unescape_saslname(authz.strip_prefix("a=")?)?)
    };
    let mut parts = bare.split(',');
    let username = unescape_saslname(expect(parts.next(), 'n')?)?;
    let nonce = expect(parts.next(), 'r')?;
    if !valid_nonce(nonce) || !valid_extensions(parts) {
        return None;
    }
    Some(ClientFirst {
        gs2_header,
        cb_flag,
        authzid,
        username,
        nonce,
        bare,
    })
}

/// Parses a client-final-message: `channel-binding "," nonce ["," extensions] "," proof`.
pub(crate) fn parse_client_final(msg: &str) -> Option<ClientFinal<'_>> {
    let (without_proof, proof) = msg.rsplit_once(",p=")?;
    let proof = B64.decode(proof).ok()?;
    let mut parts = without_proof.split(',');
    let channel_binding = B64.decode(expect(parts.next(), 'c')?).ok()?;
    let nonce = expect(parts.next(), 'r')?;
    if !valid_nonce(nonce) || !valid_extensions(parts) {
        return None;
    }
    Some(ClientFinal {
        channel_binding,
        nonce,
        proof,
        without_proof,
    })
}

/// Parses a server-first-message: `[reserved-mext ","] nonce "," salt "," iteration-count
/// ["," extensions]`. Iteration counts that do not fit in `u32` are rejected.
pub(crate) fn parse_server_first(msg: &str) -> Option<ServerFirst<'_>> {
    let mut parts = msg.split(',');
    let nonce = expect(parts.next(), 'r')?;
    let salt = B64.decode(expect(parts.next(), 's')?).ok()?;
    let iterations_text = expect(parts.next(), 'i')?;
    if !iterations_text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let iterations: u32 = iterations_text.parse().ok()?;
    if !valid_nonce(nonce) || salt.is_empty() || !valid_extensions(parts) {
        return None;
    }
    Some(ServerFirst {
        nonce,
        salt,
        iterations,
    })
}

/// What a server-final-message says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ServerFinal {
    /// `v=`: the server signature.
    Verifier(Vec<u8>),
    /// `e=`: a server error value.
    Error(String),
}

/// Parses a server-final-message: `(server-error / verifier) ["," extensions]`.
pub(crate) fn parse_server_final(msg: &str) -> Option<ServerFinal> {
    let mut parts = msg.split(',');
    let result = match attribute(parts.next()?)? {
        ('v', v) => ServerFinal::Verifier(B64.decode(v).ok()?),
        ('e', e) => ServerFinal::Error(e.to_owned()),
        _ => return None,
    };
    if !valid_extensions(parts) {
        return None;
    }
    Some(result)
}

/// Base64 (RFC 4648 §4, padded) as SCRAM uses it.
pub(crate) fn b64(data: &[u8]) -> String {
    B64.encode(data)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn saslname_escaping() {
        assert_eq!(unescape_saslname("a=2Cb=3Dc").as_deref(), Some("a,b=c"));
        assert_eq!(escape_saslname("a,b=c"), "a=2Cb=3Dc");
        for bad in ["", "a=", "a=2", "a=2c", "a=41", "a\0b", "a,b", "="] {
            assert_eq!(unescape_saslname(bad), None, "{bad:?}");
        }
        assert_eq!(unescape_saslname("jürgen").as_deref(), Some("jürgen"));
    }

    #[test]
    fn client_first_shapes() {
        let m = parse_client_first("n,,n=user,r=abc").unwrap();
        assert_eq!(m.gs2_header, "n,,");
        assert_eq!(m.cb_flag, CbFlag::No);
        assert_eq!(m.bare, "n=user,r=abc");
        assert_eq!(m.authzid, None);
        let m = parse_client_first("p=tls-exporter,a=admin=2Cx,n=u,r=n,x=ext").unwrap();
        assert_eq!(m.gs2_header, "p=tls-exporter,a=admin=2Cx,");
        assert_eq!(m.cb_flag, CbFlag::Used("tls-exporter".into()));
        assert_eq!(m.authzid.as_deref(), Some("admin,x"));
        let m = parse_client_first("y,,n=u,r=n").unwrap();
        assert_eq!(m.cb_flag, CbFlag::SupportedNotUsed);
        for bad in [
            "",
            "n",
            "n,",
            "n,,",
            "x,,n=u,r=n",
            "p=,,n=u,r=n",
            "p=a b,,n=u,r=n",
            "n,b=x,n=u,r=n",
            "n,a=,n=u,r=n",
            "n,,m=x,n=u,r=n",
            "n,,n=u,r=n,m=x",
            "n,,n=,r=n",
            "n,,n=u",
            "n,,r=n,n=u",
            "n,,n=u,r=",
            "n,,n=u,r=a b",
            "n,,n=u,r=n,garbage",
        ] {
            assert!(parse_client_first(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn client_final_shapes() {
        let m = parse_client_final("c=biws,r=abc,p=AAAA").unwrap();
        assert_eq!(m.channel_binding, b"n,,");
        assert_eq!(m.without_proof, "c=biws,r=abc");
        assert_eq!(m.proof, vec![0, 0, 0]);
        assert!(parse_client_final("c=biws,r=abc,x=1,p=AAAA").is_some());
        for bad in [
            "",
            "c=biws,r=abc",
            "c=biws,r=abc,p=!!",
            "c=!!,r=abc,p=AAAA",
            "r=abc,c=biws,p=AAAA",
            "c=biws,p=AAAA",
            "c=biws,r=abc,m=1,p=AAAA",
            "c=biws,r=abc,p=AAAA,x=1",
        ] {
            assert!(parse_client_final(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn server_messages() {
        let m = parse_server_first("r=abc,s=QUJD,i=4096").unwrap();
        assert_eq!(
            (m.nonce, m.salt.as_slice(), m.iterations),
            ("abc", &b"ABC"[..], 4096)
        );
        for bad in [
            "m=x,r=abc,s=QUJD,i=4096",
            "r=abc,s=,i=4096",
            "r=abc,s=QUJD,i=-1",
            "r=abc,s=QUJD,i=+1",
            "r=abc,s=QUJD,i=99999999999",
            "r=abc,s=QUJD",
        ] {
            assert!(parse_server_first(bad).is_none(), "{bad:?}");
        }
        assert_eq!(
            parse_server_final("v=QUJD"),
            Some(ServerFinal::Verifier(b"ABC".to_vec()))
        );
        assert_eq!(
            parse_server_final("e=invalid-proof"),
            Some(ServerFinal::Error("invalid-proof".into()))
        );
        assert_eq!(parse_server_final("x=1"), None);
    }
}
