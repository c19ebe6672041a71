//! XEP-0363 slots without I/O: the request read from its element, the file name made safe
//! for a path and a URL, and the signature that binds a PUT URL to the slot it was handed out
//! for (owner, slot, name, size, type, expiry).
//!
//! A slot is not stored anywhere: everything the PUT handler must check travels in its URL,
//! signed with HMAC-SHA256 under a key kept in the data directory, so slots cost nothing until
//! used, survive restarts and need no clean-up. The GET URL is a capability: 128 random bits
//! in the path (§6, "the URL should be hard to guess").

use hmac::{Hmac, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rand::Rng;
use rookery_jid::BareJid;
use rookery_xml::Element;
use sha2::{Digest, Sha256};

use crate::error::UploadError;
use crate::NS;

/// Longest file name kept, in bytes (most file systems' limit).
const MAX_NAME: usize = 255;
/// Longest content type accepted.
const MAX_TYPE: usize = 255;

/// What a client asked for (§4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRequest {
    /// The file name, made safe ([`safe_name`]).
    pub filename: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its MIME type, if given.
    pub content_type: Option<String>,
}

impl SlotRequest {
    /// Reads `<request xmlns='urn:xmpp:http:upload:0' filename='…' size='…'
    /// content-type='…'/>`.
    pub fn parse(el: &Element) -> Result<SlotRequest, UploadError> {
        if !el.is("request", NS) {
            return Err(UploadError::BadRequest("not an upload request"));
        }
        let filename = safe_name(el.attr("filename").unwrap_or_default())?;
        let size = el
            .attr("size")
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|s| *s > 0)
            .ok_or(UploadError::BadRequest("size must be a positive integer"))?;
        let content_type = match el.attr("content-type") {
            None | Some("") => None,
            Some(t) if is_content_type(t) => Some(t.to_ascii_lowercase()),
            Some(_) => return Err(UploadError::BadRequest("malformed content-type")),
        };
        Ok(SlotRequest {
            filename,
            size,
            content_type,
        })
    }
}

/// `type/subtype` with token characters only (RFC 9110 §8.3.1, without parameters: they
/// would have to be signed and matched byte for byte).
fn is_content_type(t: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    t.len() <= MAX_TYPE && matches!(t.split_once('/'), Some((a, b)) if token(a) && token(b))
}

/// The client's file name as one safe path component: no separators, no `.`/`..`, no
/// control characters, at most [`MAX_NAME`] bytes (cut at a character boundary, keeping
/// the extension when it is short).
pub fn safe_name(name: &str) -> Result<String, UploadError> {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() || cleaned.chars().all(|c| c == '.') {
        return Err(UploadError::BadRequest("missing or empty filename"));
    }
    if cleaned.len() <= MAX_NAME {
        return Ok(cleaned.to_string());
    }
    let ext = cleaned
        .rfind('.')
        .and_then(|i| cleaned.get(i..))
        .filter(|e| e.len() <= 16)
        .unwrap_or("");
    let mut stem_end = MAX_NAME - ext.len();
    while !cleaned.is_char_boundary(stem_end) {
        stem_end -= 1;
    }
    Ok(format!(
        "{}{ext}",
        cleaned.get(..stem_end).unwrap_or_default()
    ))
}

/// Characters left as they are in a URL path segment (RFC 3986 unreserved).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `name` percent-encoded for a URL path segment.
pub fn encode_segment(name: &str) -> String {
    utf8_percent_encode(name, SEGMENT).to_string()
}

/// The directory of an account's files: a hash of its JID, so URLs do not reveal who
/// uploaded (and a JID needs no escaping to be a directory name).
pub fn owner_id(owner: &BareJid) -> String {
    let digest = Sha256::digest(owner.as_str().as_bytes());
    hex::encode(digest.get(..16).unwrap_or_default())
}

/// A new slot id: 128 random bits in hex.
pub fn slot_id() -> String {
    hex::encode(rand::thread_rng().gen::<[u8; 16]>())
}

/// Whether `s` has the shape of an id made by [`owner_id`] or [`slot_id`] (32 lowercase hex
/// digits): what the HTTP handlers accept as path components.
pub fn is_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The facts a PUT URL's signature covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutGrant<'a> {
    /// [`owner_id`] of the account.
    pub owner: &'a str,
    /// [`slot_id`].
    pub slot: &'a str,
    /// The safe file name.
    pub filename: &'a str,
    /// Exact size the body must have.
    pub size: u64,
    /// The type the PUT must declare (empty: none was asked for).
    pub content_type: &'a str,
    /// Unix time after which the URL is refused.
    pub expires: i64,
}

/// Signs and checks [`PutGrant`]s.
pub struct Signer {
    key: Vec<u8>,
}

impl Signer {
    /// A signer with `key` (random, kept in the data directory).
    pub fn new(key: Vec<u8>) -> Signer {
        Signer { key }
    }

    fn mac(&self, g: &PutGrant<'_>) -> Hmac<Sha256> {
        // HMAC takes any key length; fields are separated by NUL, which none may contain.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        for part in [g.owner, g.slot, g.filename, g.content_type] {
            mac.update(part.as_bytes());
            mac.update(b"\0");
        }
        mac.update(g.size.to_string().as_bytes());
        mac.update(b"\0");
        mac.update(g.expires.to_string().as_bytes());
        mac
    }

    /// The signature of `g`, in hex.
    pub fn sign(&self, g: &PutGrant<'_>) -> String {
        hex::encode(self.mac(g).finalize().into_bytes())
    }

    /// Whether `sig` (hex) is the signature of `g` (compared in constant time).
    pub fn verify(&self, g: &PutGrant<'_>, sig: &str) -> bool {
        match hex::decode(sig) {
            Ok(bytes) => self.mac(g).verify_slice(&bytes).is_ok(),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn req(attrs: &[(&str, &str)]) -> Result<SlotRequest, UploadError> {
        let mut el = Element::new("request", NS);
        for (k, v) in attrs {
            el.set_attr(*k, *v);
        }
        SlotRequest::parse(&el)
    }

    #[test]
    fn requests_are_read_and_checked() {
        let r = req(&[
            ("filename", "très cool.jpg"),
            ("size", "23456"),
            ("content-type", "image/JPEG"),
        ])
        .unwrap();
        assert_eq!(r.filename, "très cool.jpg");
        assert_eq!(
            (r.size, r.content_type.as_deref()),
            (23456, Some("image/jpeg"))
        );
        for bad in [
            vec![("filename", "a"), ("size", "0")],
            vec![("filename", "a"), ("size", "-5")],
            vec![("filename", "a"), ("size", "huge")],
            vec![("filename", "a"), ("size", "99999999999999999999999")],
            vec![("size", "5")],
            vec![("filename", ".."), ("size", "5")],
            vec![
                ("filename", "a"),
                ("size", "5"),
                ("content-type", "text/html; charset=x"),
            ],
        ] {
            assert!(
                matches!(req(&bad), Err(UploadError::BadRequest(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn names_never_leave_their_directory() {
        assert_eq!(safe_name("../../etc/passwd").unwrap(), ".._.._etc_passwd");
        assert_eq!(safe_name("a\\b\u{0}c").unwrap(), "a_b_c");
        assert!(safe_name(" . ").is_err());
        let long = format!("{}.jpeg", "é".repeat(300));
        let cut = safe_name(&long).unwrap();
        assert!(cut.len() <= MAX_NAME && cut.ends_with(".jpeg"));
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(encode_segment("très cool.jpg"), "tr%C3%A8s%20cool.jpg");
        assert_eq!(encode_segment("a?b#c"), "a%3Fb%23c");
    }

    #[test]
    fn a_signature_binds_every_fact() {
        let s = Signer::new(b"key".to_vec());
        let g = PutGrant {
            owner: "o",
            slot: "s",
            filename: "f",
            size: 5,
            content_type: "text/plain",
            expires: 100,
        };
        let sig = s.sign(&g);
        assert!(s.verify(&g, &sig));
        assert!(!s.verify(
            &PutGrant {
                size: 6,
                ..g.clone()
            },
            &sig
        ));
        assert!(!s.verify(
            &PutGrant {
                filename: "g",
                ..g.clone()
            },
            &sig
        ));
        assert!(!s.verify(
            &PutGrant {
                content_type: "",
                ..g.clone()
            },
            &sig
        ));
        assert!(!s.verify(
            &PutGrant {
                expires: 101,
                ..g.clone()
            },
            &sig
        ));
        assert!(!Signer::new(b"other".to_vec()).verify(&g, &sig));
        assert!(!s.verify(&g, "zz"));
    }

    #[test]
    fn ids() {
        assert!(is_id(&slot_id()));
        assert!(is_id(&owner_id(&"a@b".parse().unwrap())));
        assert!(!is_id("../x") && !is_id(&"A".repeat(32)));
    }
}
