//! SASL mechanism names (RFC 4422 §3.1) as offered in `<mechanisms/>` (RFC 6120 §6.4.1).

use crate::hash::ScramHash;

/// A SASL mechanism this crate implements.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Mechanism {
    /// `SCRAM-SHA-1` (RFC 5802).
    ScramSha1,
    /// `SCRAM-SHA-1-PLUS` (RFC 5802 with RFC 9266 `tls-exporter` channel binding).
    ScramSha1Plus,
    /// `SCRAM-SHA-256` (RFC 7677).
    ScramSha256,
    /// `SCRAM-SHA-256-PLUS` (RFC 7677 with channel binding).
    ScramSha256Plus,
    /// `SCRAM-SHA-512` (SCRAM with SHA-512, IANA-registered).
    ScramSha512,
    /// `SCRAM-SHA-512-PLUS` (SCRAM with SHA-512 and channel binding).
    ScramSha512Plus,
    /// `PLAIN` (RFC 4616): only over TLS; verified against an Argon2id hash.
    Plain,
}

impl Mechanism {
    /// Every mechanism, strongest first: this is the order to advertise them in.
    ///
    /// Channel-bound variants come first because they also defeat a man in the middle
    /// holding a certificate the client trusts; `PLAIN` comes last.
    pub const ALL: [Mechanism; 7] = [
        Mechanism::ScramSha512Plus,
        Mechanism::ScramSha256Plus,
        Mechanism::ScramSha1Plus,
        Mechanism::ScramSha512,
        Mechanism::ScramSha256,
        Mechanism::ScramSha1,
        Mechanism::Plain,
    ];

    /// The registered mechanism name, as sent in `<mechanism/>` and `<auth mechanism=…/>`.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::ScramSha1Plus => "SCRAM-SHA-1-PLUS",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
            Mechanism::ScramSha512Plus => "SCRAM-SHA-512-PLUS",
            Mechanism::Plain => "PLAIN",
        }
    }

    /// The mechanism with this exact name (names are upper case, RFC 4422 §3.1).
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether this is a `-PLUS` (channel-binding) mechanism.
    pub fn is_plus(self) -> bool {
        matches!(
            self,
            Mechanism::ScramSha1Plus | Mechanism::ScramSha256Plus | Mechanism::ScramSha512Plus
        )
    }

    /// The hash function of a SCRAM mechanism, `None` for `PLAIN`.
    pub fn scram_hash(self) -> Option<ScramHash> {
        match self {
            Mechanism::ScramSha1 | Mechanism::ScramSha1Plus => Some(ScramHash::Sha1),
            Mechanism::ScramSha256 | Mechanism::ScramSha256Plus => Some(ScramHash::Sha256),
            Mechanism::ScramSha512 | Mechanism::ScramSha512Plus => Some(ScramHash::Sha512),
            Mechanism::Plain => None,
        }
    }
}

impl std::fmt::Display for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for m in Mechanism::ALL {
            assert_eq!(Mechanism::from_name(m.name()), Some(m));
            assert_eq!(m.is_plus(), m.name().ends_with("-PLUS"));
            assert_eq!(m.scram_hash().is_some(), m.name().starts_with("SCRAM-"));
        }
        assert_eq!(Mechanism::from_name("scram-sha-1"), None);
        assert_eq!(Mechanism::from_name("DIGEST-MD5"), None);
        assert_eq!(Mechanism::ALL.first(), Some(&Mechanism::ScramSha512Plus));
        assert_eq!(Mechanism::ALL.last(), Some(&Mechanism::Plain));
    }
}
