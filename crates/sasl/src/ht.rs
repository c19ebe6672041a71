//! The HT-* mechanisms (draft-schmaus-kitten-sasl-ht) that XEP-0484 FAST authenticates
//! tokens with: the client sends `authcid NUL HMAC(token, "Initiator" || cb-data)` as its
//! only message; the server checks it and answers `HMAC(token, "Responder" || cb-data)` as
//! additional data, so the client knows the server held the token too.
//!
//! Only SHA-256 is offered, with no channel binding (`-NONE`) or the RFC 9266
//! `tls-exporter` binding (`-EXPR`, where the stream has it). `-UNIQ` (tls-unique) exists
//! only for TLS 1.2, which this server's TLS 1.3 streams never have, and `-ENDP` is not
//! computed by the stream layer.
//!
//! # What is stored
//! Tokens are [`new_token`]s of 72 characters, longer than SHA-256's 64-byte block, so
//! HMAC (RFC 2104 §2) uses `SHA-256(token)` as its key: the server keeps only
//! [`token_key`], never the token. That key still authenticates with HT (any verifier of a
//! keyed MAC must be able to compute it), so the store must be protected like a session
//! secret; it is not a password verifier like SCRAM's StoredKey.

use rand::RngCore;
use subtle::ConstantTimeEq;

use crate::hash::ScramHash;

/// Random bytes in a token (72 base64 characters, more than the HMAC block of 64).
const TOKEN_BYTES: usize = 54;

/// An HT mechanism this server offers.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum HtMechanism {
    /// `HT-SHA-256-NONE`: no channel binding.
    Sha256None,
    /// `HT-SHA-256-EXPR`: the `tls-exporter` channel binding (RFC 9266).
    Sha256Expr,
}

impl HtMechanism {
    /// Every HT mechanism, strongest first.
    pub const ALL: [HtMechanism; 2] = [HtMechanism::Sha256Expr, HtMechanism::Sha256None];

    /// The registered name.
    pub fn name(self) -> &'static str {
        match self {
            HtMechanism::Sha256None => "HT-SHA-256-NONE",
            HtMechanism::Sha256Expr => "HT-SHA-256-EXPR",
        }
    }

    /// The mechanism with this exact name.
    pub fn from_name(name: &str) -> Option<HtMechanism> {
        HtMechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether it needs channel-binding data.
    pub fn is_bound(self) -> bool {
        self == HtMechanism::Sha256Expr
    }
}

/// The client's message: who, and its proof of the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HtMessage {
    /// The authentication identity (the account's localpart).
    pub authcid: String,
    /// `HMAC(token, "Initiator" || cb-data)`.
    pub initiator_hash: Vec<u8>,
}

/// Parses `authcid NUL initiator-hashed-token`; `None` when malformed.
pub fn parse(message: &[u8]) -> Option<HtMessage> {
    let nul = message.iter().position(|&b| b == 0)?;
    let authcid = std::str::from_utf8(message.get(..nul)?).ok()?;
    let hash = message.get(nul + 1..)?;
    if authcid.is_empty() || hash.len() != ScramHash::Sha256.output_len() {
        return None;
    }
    Some(HtMessage {
        authcid: authcid.to_string(),
        initiator_hash: hash.to_vec(),
    })
}

/// A fresh token for a client.
pub fn new_token() -> String {
    use base64::Engine;
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// What the server stores for `token`: the HMAC key HT effectively uses.
pub fn token_key(token: &str) -> Vec<u8> {
    ScramHash::Sha256.hash(token.as_bytes())
}

/// Whether `initiator_hash` proves the token whose stored key is `key`, on a stream with
/// `cb_data` (empty for `-NONE`). Constant time.
pub fn verify(key: &[u8], cb_data: &[u8], initiator_hash: &[u8]) -> bool {
    let want = mac(key, b"Initiator", cb_data);
    bool::from(want.ct_eq(initiator_hash))
}

/// The server's answer, `HMAC(token, "Responder" || cb-data)`.
pub fn responder(key: &[u8], cb_data: &[u8]) -> Vec<u8> {
    mac(key, b"Responder", cb_data)
}

fn mac(key: &[u8], label: &[u8], cb_data: &[u8]) -> Vec<u8> {
    let mut data = label.to_vec();
    data.extend_from_slice(cb_data);
    ScramHash::Sha256.hmac(key, &data)
}

/// The client side, for tests and tools: the message for `token`.
pub fn client_message(authcid: &str, token: &str, cb_data: &[u8]) -> Vec<u8> {
    let mut m = authcid.as_bytes().to_vec();
    m.push(0);
    m.extend(mac(token.as_bytes(), b"Initiator", cb_data));
    m
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The stored key gives the same HMACs as the token itself (RFC 2104 key hashing), so a
    /// client holding the token and a server holding only its hash agree.
    #[test]
    fn stored_key_is_the_hmac_key() {
        let token = new_token();
        assert_eq!(token.len(), 72);
        assert_ne!(token, new_token());
        let key = token_key(&token);
        let msg = client_message("alice", &token, b"");
        let parsed = parse(&msg).unwrap();
        assert_eq!(parsed.authcid, "alice");
        assert!(verify(&key, b"", &parsed.initiator_hash));
        assert!(!verify(&key, b"cb", &parsed.initiator_hash));
        assert!(!verify(&token_key("other"), b"", &parsed.initiator_hash));
        assert_eq!(
            responder(&key, b"x"),
            mac(token.as_bytes(), b"Responder", b"x")
        );
    }

    #[test]
    fn malformed_messages() {
        for bad in [&b""[..], b"alice", b"\0abc", b"alice\0short", b"\xff\0"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(
            HtMechanism::from_name("HT-SHA-256-NONE"),
            Some(HtMechanism::Sha256None)
        );
        assert_eq!(HtMechanism::from_name("HT-SHA-256-UNIQ"), None);
        assert!(HtMechanism::Sha256Expr.is_bound());
    }
}
