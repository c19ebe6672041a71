//! Server Dialback (XEP-0220) elements and dialback keys (XEP-0185).
//!
//! Sans-IO: keys are computed and checked here, `<db:result/>` and `<db:verify/>` are parsed
//! from and written to bytes here; the listener and the connector decide when to send them.
//!
//! Roles (XEP-0220 §1.3): the *originating* server wants to send stanzas to the *receiving*
//! server; the receiving server asks the *authoritative* server of the originating domain
//! whether the key the originating server sent is right.
//!
//! Key (XEP-0185 §2): `hex(HMAC-SHA256(key = hex(SHA256(secret)), receiving ' ' originating
//! ' ' stream-id))`, where the stream id is the one the receiving server gave the stream the
//! key is sent on. The secret never leaves this server; it is generated into the data
//! directory on first start (see [`Secret::load_or_create`]).

use std::io::Write;
use std::path::Path;

use hmac::{Hmac, Mac};
use rookery_proto::{ns, StanzaErrorCondition, StreamErrorCondition};
use rookery_xml::{escape_into, Element};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The dialback namespace (XEP-0220 §2), bound to the `db` prefix on our stream headers.
pub use rookery_proto::ns::DIALBACK as NS;
/// The dialback stream feature (XEP-0220 §2.2), announcing support for dialback errors.
pub use rookery_proto::ns::DIALBACK_FEATURE as FEATURE_NS;
/// The declaration our stream headers carry when dialback is on (XEP-0220 §2.3.1).
pub const HEADER_EXTRA: &str = " xmlns:db='jabber:server:dialback'";
/// The longest key accepted. XEP-0185 keys are 64 hex characters; twice that leaves room
/// for other schemes, while a peer cannot make us relay (and keep, until the authoritative
/// server answers) a stanza-sized key per request.
pub const MAX_KEY_LEN: usize = 128;

/// The dialback secret, kept as the HMAC key XEP-0185 derives from it.
#[derive(Clone)]
pub struct Secret {
    /// `hex(SHA256(secret))`, the HMAC key.
    hmac_key: String,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A secret from its bytes.
    pub fn new(secret: &[u8]) -> Secret {
        Secret {
            hmac_key: hex::encode(Sha256::digest(secret)),
        }
    }

    /// Reads the secret from `path`, or generates 32 random bytes there (mode 0600) first.
    pub fn load_or_create(path: &Path) -> std::io::Result<Secret> {
        match std::fs::read_to_string(path) {
            Ok(text) if !text.trim().is_empty() => return Ok(Secret::new(text.trim().as_bytes())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let text = hex::encode(rand::random::<[u8; 32]>());
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        opts.open(path)?.write_all(text.as_bytes())?;
        tracing::info!(path = %path.display(), "generated the dialback secret");
        Ok(Secret::new(text.as_bytes()))
    }

    /// The key the originating server sends (XEP-0185 §2).
    pub fn key(&self, receiving: &str, originating: &str, stream_id: &str) -> String {
        // HMAC accepts keys of any length, so this cannot fail.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(self.hmac_key.as_bytes()) else {
            return String::new();
        };
        mac.update(receiving.as_bytes());
        mac.update(b" ");
        mac.update(originating.as_bytes());
        mac.update(b" ");
        mac.update(stream_id.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Whether `key` is the right one (constant time; case-insensitive hex).
    pub fn verify(&self, receiving: &str, originating: &str, stream_id: &str, key: &str) -> bool {
        let expected = self.key(receiving, originating, stream_id);
        let key = key.trim().to_ascii_lowercase();
        !key.is_empty() && bool::from(expected.as_bytes().ct_eq(key.as_bytes()))
    }
}

/// Which dialback element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `<db:result/>`: between originating and receiving server.
    Result,
    /// `<db:verify/>`: between receiving and authoritative server.
    Verify,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Result => "result",
            Kind::Verify => "verify",
        }
    }
}

/// The `type` of a dialback element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No type: a request carrying a key.
    Request,
    /// `valid`.
    Valid,
    /// `invalid`.
    Invalid,
    /// `error` (XEP-0220 §2.4), with the condition if it was understood.
    Error(Option<StanzaErrorCondition>),
}

/// A parsed `<db:result/>` or `<db:verify/>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialback {
    /// Result or verify.
    pub kind: Kind,
    /// The `from` domain (normalized).
    pub from: String,
    /// The `to` domain (normalized).
    pub to: String,
    /// The stream id (`db:verify` only).
    pub id: Option<String>,
    /// Request or answer.
    pub outcome: Outcome,
    /// The key (requests only; empty otherwise).
    pub key: String,
}

/// Why a dialback element could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialbackError {
    /// `from` or `to` is missing or not a domain.
    #[error("dialback element with a missing or invalid address")]
    BadAddress,
    /// `db:verify` without `id`.
    #[error("db:verify without id")]
    MissingId,
    /// A request without a key, or an unknown type.
    #[error("malformed dialback element")]
    Malformed,
    /// A key longer than [`MAX_KEY_LEN`].
    #[error("dialback key longer than {MAX_KEY_LEN} characters")]
    KeyTooLong,
}

impl DialbackError {
    /// The stream error that ends a stream on which a peer sent such an element
    /// (RFC 6120 §4.9.3.14 for a limit, §4.9.3.8 for the rest).
    pub fn stream_condition(&self) -> StreamErrorCondition {
        match self {
            DialbackError::KeyTooLong => StreamErrorCondition::PolicyViolation,
            _ => StreamErrorCondition::InvalidXml,
        }
    }
}

impl Dialback {
    /// Parses `el`; `None` when it is not a dialback element at all.
    pub fn parse(el: &Element) -> Option<Result<Dialback, DialbackError>> {
        if el.ns() != NS {
            return None;
        }
        let kind = match el.name() {
            "result" => Kind::Result,
            "verify" => Kind::Verify,
            _ => return None,
        };
        Some(Self::parse_kind(el, kind))
    }

    fn parse_kind(el: &Element, kind: Kind) -> Result<Dialback, DialbackError> {
        let domain = |attr: &str| {
            el.attr(attr)
                .and_then(|d| rookery_jid::normalize_domain(d).ok())
                .ok_or(DialbackError::BadAddress)
        };
        let from = domain("from")?;
        let to = domain("to")?;
        let id = el.attr("id").map(str::to_string);
        if kind == Kind::Verify && id.is_none() {
            return Err(DialbackError::MissingId);
        }
        let outcome = match el.attr("type") {
            None => Outcome::Request,
            Some("valid") => Outcome::Valid,
            Some("invalid") => Outcome::Invalid,
            Some("error") => Outcome::Error(
                el.get_child("error", rookery_xml::CONTENT_NS)
                    .and_then(|e| e.children().find(|c| c.ns() == ns::STANZAS))
                    .and_then(|c| StanzaErrorCondition::from_name(c.name())),
            ),
            Some(_) => return Err(DialbackError::Malformed),
        };
        let key = el.text().trim().to_string();
        if outcome == Outcome::Request && key.is_empty() {
            return Err(DialbackError::Malformed);
        }
        if key.len() > MAX_KEY_LEN {
            return Err(DialbackError::KeyTooLong);
        }
        Ok(Dialback {
            kind,
            from,
            to,
            id,
            outcome,
            key,
        })
    }

    /// A request (`db:result` when `id` is `None`, else `db:verify`).
    pub fn request(from: &str, to: &str, id: Option<&str>, key: &str) -> Dialback {
        Dialback {
            kind: if id.is_some() {
                Kind::Verify
            } else {
                Kind::Result
            },
            from: from.to_string(),
            to: to.to_string(),
            id: id.map(str::to_string),
            outcome: Outcome::Request,
            key: key.to_string(),
        }
    }

    /// The answer to this request with `outcome`: addresses swapped, same id, no key.
    pub fn answer(&self, outcome: Outcome) -> Dialback {
        Dialback {
            kind: self.kind,
            from: self.to.clone(),
            to: self.from.clone(),
            id: self.id.clone(),
            outcome,
            key: String::new(),
        }
    }

    /// Serialized with the `db:` prefix every implementation understands, declared on the
    /// element itself: our stream header declares it only when dialback is on
    /// ([`HEADER_EXTRA`]), and an answer (a refusal) may be written when it is off.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + self.key.len());
        out.extend_from_slice(b"<db:");
        out.extend_from_slice(self.kind.name().as_bytes());
        out.extend_from_slice(b" xmlns:db='");
        out.extend_from_slice(NS.as_bytes());
        out.push(b'\'');
        let mut attr = |name: &str, value: &str| {
            out.extend_from_slice(b" ");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"='");
            escape_into(&mut out, value, true);
            out.extend_from_slice(b"'");
        };
        attr("from", &self.from);
        attr("to", &self.to);
        if let Some(id) = &self.id {
            attr("id", id);
        }
        let ty = match self.outcome {
            Outcome::Request => None,
            Outcome::Valid => Some("valid"),
            Outcome::Invalid => Some("invalid"),
            Outcome::Error(_) => Some("error"),
        };
        if let Some(t) = ty {
            attr("type", t);
        }
        let body: Option<Vec<u8>> = match self.outcome {
            Outcome::Request => {
                let mut b = Vec::new();
                escape_into(&mut b, &self.key, false);
                Some(b)
            }
            Outcome::Error(c) => {
                let c = c.unwrap_or(StanzaErrorCondition::UndefinedCondition);
                Some(rookery_proto::StanzaError::new(c).to_element().to_bytes())
            }
            Outcome::Valid | Outcome::Invalid => None,
        };
        match body {
            Some(b) => {
                out.push(b'>');
                out.extend_from_slice(&b);
                out.extend_from_slice(b"</db:");
                out.extend_from_slice(self.kind.name().as_bytes());
                out.push(b'>');
            }
            None => out.extend_from_slice(b"/>"),
        }
        out
    }
}

/// The dialback stream feature with error support (XEP-0220 §2.2).
pub fn feature() -> Element {
    Element::new("dialback", FEATURE_NS).with_child(Element::new("errors", FEATURE_NS))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use rookery_xml::{Event, Limits, StreamParser};

    /// The example of XEP-0185 §3.
    #[test]
    fn key_matches_the_xep_0185_example() {
        let s = Secret::new(b"s3cr3tf0rd14lb4ck");
        assert_eq!(
            s.key("example.net", "example.com", "D60000229F"),
            "008c689ff366b50c63d69a3e2d2c0e0e1f8404b0118eb688a0102c87cb691bdc"
        );
    }

    #[test]
    fn verify_checks_every_input() {
        let s = Secret::new(b"secret");
        let k = s.key("b.test", "a.test", "id1");
        assert!(s.verify("b.test", "a.test", "id1", &k));
        assert!(s.verify("b.test", "a.test", "id1", &k.to_uppercase()));
        assert!(!s.verify("a.test", "b.test", "id1", &k));
        assert!(!s.verify("b.test", "a.test", "id2", &k));
        assert!(!s.verify("b.test", "a.test", "id1", ""));
        assert!(!Secret::new(b"other").verify("b.test", "a.test", "id1", &k));
    }

    #[test]
    fn secret_is_generated_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/dialback.secret");
        let a = Secret::load_or_create(&p).unwrap();
        let b = Secret::load_or_create(&p).unwrap();
        assert_eq!(a.key("x", "y", "z"), b.key("x", "y", "z"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    fn parse_one(xml: &str) -> Element {
        let mut p = StreamParser::new(Limits::S2S);
        p.feed(
            format!(
                "<stream:stream xmlns='jabber:server' xmlns:db='{NS}' \
                 xmlns:stream='http://etherx.jabber.org/streams'>{xml}"
            )
            .as_bytes(),
        );
        assert!(matches!(p.next_event(), Ok(Some(Event::StreamOpen(_)))));
        match p.next_event() {
            Ok(Some(Event::Element(e))) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn round_trips_through_the_parser() {
        let cases = [
            Dialback::request("a.test", "b.test", None, "abcd"),
            Dialback::request("b.test", "a.test", Some("s1"), "abcd"),
            Dialback::request("a.test", "b.test", None, "k").answer(Outcome::Valid),
            Dialback::request("a.test", "b.test", Some("i"), "k").answer(Outcome::Invalid),
            Dialback::request("a.test", "b.test", None, "k")
                .answer(Outcome::Error(Some(StanzaErrorCondition::ItemNotFound))),
        ];
        for d in cases {
            let xml = String::from_utf8(d.to_bytes()).unwrap();
            let back = Dialback::parse(&parse_one(&xml)).unwrap().unwrap();
            assert_eq!(back, d, "{xml}");
        }
    }

    #[test]
    fn answer_swaps_addresses() {
        let r = Dialback::request("a.test", "b.test", Some("i"), "k");
        let a = r.answer(Outcome::Valid);
        assert_eq!((a.from.as_str(), a.to.as_str()), ("b.test", "a.test"));
        assert_eq!(a.id.as_deref(), Some("i"));
        assert_eq!(
            String::from_utf8(a.to_bytes()).unwrap(),
            "<db:verify xmlns:db='jabber:server:dialback' from='b.test' to='a.test' id='i' \
             type='valid'/>"
        );
    }

    #[test]
    fn rejects_bad_input() {
        let el = parse_one("<db:result from='a..b' to='b.test'>k</db:result>");
        assert_eq!(Dialback::parse(&el), Some(Err(DialbackError::BadAddress)));
        let el = parse_one("<db:verify from='a.test' to='b.test'>k</db:verify>");
        assert_eq!(Dialback::parse(&el), Some(Err(DialbackError::MissingId)));
        let el = parse_one("<db:result from='a.test' to='b.test'/>");
        assert_eq!(Dialback::parse(&el), Some(Err(DialbackError::Malformed)));
        let el = parse_one("<db:result from='a.test' to='b.test' type='maybe'/>");
        assert_eq!(Dialback::parse(&el), Some(Err(DialbackError::Malformed)));
        let el = parse_one(&format!(
            "<db:result from='a.test' to='b.test'>{}</db:result>",
            "a".repeat(MAX_KEY_LEN + 1)
        ));
        assert_eq!(Dialback::parse(&el), Some(Err(DialbackError::KeyTooLong)));
        let el = parse_one("<message to='x@b.test'/>");
        assert_eq!(Dialback::parse(&el), None);
    }
}
