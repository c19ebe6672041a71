//! Normalization of the three JID parts (RFC 7622 §3.2–§3.4).
//!
//! Every function here takes one part, already separated from the others, and returns its
//! canonical form or the reason it is not a valid part. Each has an ASCII fast path that
//! is taken only where it provably gives the same answer as the full PRECIS/IDNA machinery:
//! JIDs are parsed for every stanza's `to` and `from`, and nearly all of them are ASCII.

use std::borrow::Cow;
use std::net::Ipv6Addr;

use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};
use precis_core::profile::{stabilize, PrecisFastInvocation};
use precis_core::{IdentifierClass, StringClass};
use precis_profiles::{OpaqueString, UsernameCaseMapped};

use crate::JidError;

/// Longest a part may be once normalized, in octets (RFC 7622 §3.1).
pub const MAX_PART_LEN: usize = 1023;

/// Longest a part may be *before* normalization, in octets.
///
/// No PRECIS step shrinks text by more than a factor of three (width mapping of a three-octet
/// fullwidth character to one ASCII octet is the worst case), so this bound never rejects a
/// localpart or resourcepart that would have fitted. It caps the work done on hostile input.
/// A domainpart padded with more than three thousand code points that IDNA ignores is
/// rejected too; no real domain looks like that.
const MAX_INPUT_PART_LEN: usize = 4 * MAX_PART_LEN;

const LOCAL: &str = "localpart";
const DOMAIN: &str = "domainpart";
const RESOURCE: &str = "resourcepart";

/// ASCII octets that may appear in a localpart as is: the printable ASCII range that the
/// PRECIS IdentifierClass allows, minus the characters RFC 7622 §3.3.1 prohibits.
fn is_plain_local_byte(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && !is_local_prohibited_byte(b)
}

/// The characters RFC 7622 §3.3.1 disallows in a localpart although IdentifierClass allows
/// them.
fn is_local_prohibited_byte(b: u8) -> bool {
    matches!(b, b'"' | b'&' | b'\'' | b'/' | b':' | b'<' | b'>' | b'@')
}

fn check_len<'a>(s: Cow<'a, str>, part: &'static str) -> Result<Cow<'a, str>, JidError> {
    if s.len() > MAX_PART_LEN {
        Err(JidError::TooLong(part))
    } else {
        Ok(s)
    }
}

/// Normalizes a localpart: PRECIS UsernameCaseMapped (RFC 8265 §3.3) applied until stable
/// (RFC 8264 §7), then the extra prohibitions of RFC 7622 §3.3.1.
pub(crate) fn local(s: &str) -> Result<Cow<'_, str>, JidError> {
    if s.is_empty() {
        return Err(JidError::EmptyLocal);
    }
    if s.len() > MAX_INPUT_PART_LEN {
        return Err(JidError::TooLong(LOCAL));
    }
    let bytes = s.as_bytes();
    let out = if bytes.iter().all(|&b| is_plain_local_byte(b)) {
        // Fast path. Every printable ASCII code point is PVALID in IdentifierClass; width
        // mapping and NFC leave ASCII alone; the case mapping of ASCII is ASCII lowercase;
        // ASCII holds no right-to-left code point, so the bidi rule does not apply.
        if bytes.iter().any(u8::is_ascii_uppercase) {
            Cow::Owned(s.to_ascii_lowercase())
        } else {
            Cow::Borrowed(s)
        }
    } else if s.is_ascii() {
        // Space, a control character or one of the §3.3.1 characters.
        return Err(JidError::Invalid(LOCAL));
    } else {
        let out = stabilize(s, |x| UsernameCaseMapped::enforce(x))
            .map_err(|_| JidError::Invalid(LOCAL))?;
        // Width mapping turns e.g. FULLWIDTH COMMERCIAL AT into '@', so look at the output.
        if out.bytes().any(is_local_prohibited_byte) {
            return Err(JidError::Invalid(LOCAL));
        }
        out
    };
    check_len(out, LOCAL)
}

/// Normalizes a resourcepart: PRECIS OpaqueString (RFC 8265 §4.2) applied until stable.
pub(crate) fn resource(s: &str) -> Result<Cow<'_, str>, JidError> {
    if s.is_empty() {
        return Err(JidError::EmptyResource);
    }
    if s.len() > MAX_INPUT_PART_LEN {
        return Err(JidError::TooLong(RESOURCE));
    }
    let bytes = s.as_bytes();
    let out = if bytes.iter().all(|b| (0x20..=0x7e).contains(b)) {
        // Fast path. FreeformClass allows printable ASCII and U+0020; the additional mapping
        // only touches non-ASCII spaces, and NFC leaves ASCII alone.
        Cow::Borrowed(s)
    } else if s.is_ascii() {
        // A control character.
        return Err(JidError::Invalid(RESOURCE));
    } else {
        stabilize(s, |x| OpaqueString::enforce(x)).map_err(|_| JidError::Invalid(RESOURCE))?
    };
    check_len(out, RESOURCE)
}

/// Strips one trailing label separator (RFC 7622 §3.2: before any other canonicalization).
/// The separators are those of IDNA2008 (RFC 3490 §3.1).
fn strip_trailing_dot(s: &str) -> &str {
    ['.', '\u{3002}', '\u{ff0e}', '\u{ff61}']
        .iter()
        .find_map(|&dot| s.strip_suffix(dot))
        .unwrap_or(s)
}

/// The longest DNS label and name, in octets of their ASCII form (RFC 1035 §2.3.4, as RFC
/// 7622 §3.2 says "the length limits of DNS apply"; a name's 255 octets on the wire are 253
/// written out).
const MAX_LABEL: usize = 63;
const MAX_NAME: usize = 253;

/// True when `s` is a dot-separated sequence of NR-LDH labels (RFC 5890 §2.3.1): non-empty,
/// letters/digits/hyphens only, no hyphen first or last, and no hyphens in the third and
/// fourth positions (which rules out A-labels, handled by the slow path). Their lengths are
/// checked apart ([`dns_lengths_fit`]).
fn is_plain_ldh(s: &[u8]) -> bool {
    s.split(|&c| c == b'.').all(|label| {
        !label.is_empty()
            && label
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            && label.first() != Some(&b'-')
            && label.last() != Some(&b'-')
            && label.get(2..4) != Some(b"--".as_slice())
    })
}

/// Normalizes a domainpart (RFC 7622 §3.2): strips one trailing dot, keeps bracketed IPv6
/// literals (in canonical RFC 5952 form), and otherwise converts every label to its
/// lowercase U-label form, rejecting what IDNA2008 does not allow.
pub(crate) fn domain(s: &str) -> Result<Cow<'_, str>, JidError> {
    let s = strip_trailing_dot(s);
    if s.is_empty() {
        return Err(JidError::EmptyDomain);
    }
    if s.len() > MAX_INPUT_PART_LEN {
        return Err(JidError::TooLong(DOMAIN));
    }
    let bytes = s.as_bytes();
    let out = if let Some(inner) = s.strip_prefix('[') {
        let addr: Ipv6Addr = inner
            .strip_suffix(']')
            .and_then(|a| a.parse().ok())
            .ok_or(JidError::Invalid(DOMAIN))?;
        let canonical = format!("[{addr}]");
        if canonical == s {
            Cow::Borrowed(s)
        } else {
            Cow::Owned(canonical)
        }
    } else if is_plain_ldh(bytes) {
        // Fast path: NR-LDH labels (this includes dotted IPv4 addresses) are their own
        // U-label form once lowercased, and contain no right-to-left label.
        if bytes.len() <= MAX_PART_LEN && !dns_lengths_fit(bytes) {
            return Err(JidError::Invalid(DOMAIN));
        }
        if bytes.iter().any(u8::is_ascii_uppercase) {
            Cow::Owned(s.to_ascii_lowercase())
        } else {
            Cow::Borrowed(s)
        }
    } else {
        idna_to_unicode(s)?
    };
    check_len(out, DOMAIN)
}

/// The slow path for domainparts: UTS #46 non-transitional processing with the STD3 ASCII
/// rules and hyphen checks (which maps case and width, applies NFC, decodes A-labels and
/// checks the bidi and joiner rules), then RFC 5892 code point checks on each U-label.
pub(crate) fn idna_to_unicode(s: &str) -> Result<Cow<'_, str>, JidError> {
    let (out, result) = Uts46::new().to_unicode(s.as_bytes(), AsciiDenyList::STD3, Hyphens::Check);
    if result.is_err() {
        return Err(JidError::Invalid(DOMAIN));
    }
    if out.is_empty() {
        // Every code point was one that IDNA ignores.
        return Err(JidError::EmptyDomain);
    }
    let identifier = IdentifierClass::default();
    for label in out.split('.') {
        if label.is_empty() {
            return Err(JidError::Invalid(DOMAIN));
        }
        // UTS #46 accepts symbols and punctuation that IDNA2008 disallows. For lowercase,
        // NFC, non-ASCII code points the PRECIS IdentifierClass derivation coincides with
        // the IDNA2008 one (RFC 5892), including the CONTEXTJ/CONTEXTO rules.
        if !label.is_ascii() && identifier.allows(label).is_err() {
            return Err(JidError::Invalid(DOMAIN));
        }
    }
    // The DNS limits hold for the A-label form, which is what goes on the wire.
    let ascii = Uts46::new().to_ascii(
        out.as_bytes(),
        AsciiDenyList::STD3,
        Hyphens::Check,
        DnsLength::Verify,
    );
    if ascii.is_err() {
        return Err(JidError::Invalid(DOMAIN));
    }
    Ok(out)
}

/// Whether the labels of `name` (ASCII, dot-separated) and the name itself are within the
/// DNS limits.
fn dns_lengths_fit(name: &[u8]) -> bool {
    name.len() <= MAX_NAME && name.split(|&c| c == b'.').all(|l| l.len() <= MAX_LABEL)
}
