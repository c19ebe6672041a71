//! XEP-0114 §3: the handshake. The server opens its stream with a fresh id; the component
//! answers with `<handshake>` holding the lowercase hex SHA-1 of the stream id followed by the
//! shared secret. Pure functions, so the rule is tested without sockets.

use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// The digest a component with `secret` must send on the stream `stream_id`.
pub fn digest(stream_id: &str, secret: &str) -> String {
    let mut h = Sha1::new();
    h.update(stream_id.as_bytes());
    h.update(secret.as_bytes());
    hex::encode(h.finalize())
}

/// Whether `received` (the text of the component's `<handshake/>`) proves `secret` on this
/// stream. The comparison takes the same time wherever the first differing byte is; case and
/// surrounding whitespace are ignored (some components send uppercase hex).
pub fn verify(stream_id: &str, secret: &str, received: &str) -> bool {
    let expected = digest(stream_id, secret);
    let got = received.trim().to_ascii_lowercase();
    expected.as_bytes().ct_eq(got.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn digest_is_sha1_hex_of_id_then_secret() {
        // sha1("3BF96D32" + "secret"), computed independently with `printf %s ... | sha1sum`.
        assert_eq!(
            digest("3BF96D32", "secret"),
            "b09ea9b3b7f586be8a08d0a3dd7466f110aeb136"
        );
        assert_eq!(digest("", ""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    }

    #[test]
    fn verify_accepts_the_right_digest_only() {
        let d = digest("abc", "componentsecret");
        assert!(verify("abc", "componentsecret", &d));
        assert!(verify(
            "abc",
            "componentsecret",
            &format!(" {}\n", d.to_uppercase())
        ));
        assert!(!verify("abc", "wrong", &d));
        assert!(!verify("abd", "componentsecret", &d));
        assert!(!verify("abc", "componentsecret", ""));
        assert!(!verify("abc", "componentsecret", &d[..39]));
        assert!(!verify("abc", "componentsecret", &format!("{d}0")));
    }
}
