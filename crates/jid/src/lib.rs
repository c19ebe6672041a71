//! XMPP addresses: [RFC 7622](https://www.rfc-editor.org/rfc/rfc7622) JIDs with PRECIS
//! normalization.
//!
//! A JID has the form `[localpart@]domainpart[/resourcepart]` (RFC 7622 §3.1). Parsing splits
//! the string at the first `/` (the resourcepart may itself contain `/` and `@`) and then at
//! the first `@` before it, and normalizes each part:
//!
//! * **localpart** (§3.3): PRECIS UsernameCaseMapped profile (RFC 8265 §3.3), minus the
//!   characters `" & ' / : < > @`; so `Juliet` becomes `juliet` and `Σ` becomes `σ`.
//! * **domainpart** (§3.2): one trailing dot stripped, then IDNA2008 to U-labels (A-labels
//!   are decoded, letters lowercased), or an IP literal: dotted IPv4, or IPv6 in brackets
//!   (kept in its RFC 5952 canonical form).
//! * **resourcepart** (§3.4): PRECIS OpaqueString profile (RFC 8265 §4.2); case is kept.
//!
//! Each part must be 1 to 1023 octets long once normalized. The normalized form is the one
//! stored, compared, hashed and displayed: two JIDs are equal exactly when their normalized
//! strings are. [`Jid`] and [`BareJid`] hold it in an `Arc<str>` with the part offsets, so
//! cloning and [`Jid::to_bare`] never copy the string.
//!
//! Parsing never panics, whatever the input. Every [`JidError`] maps to the
//! `jid-malformed` stanza error condition (RFC 6120 §8.3.3.8).
//!
//! Pure-ASCII parts (nearly all JIDs in practice) take fast paths that give exactly the
//! result of the full PRECIS and IDNA processing without running it.
//!
//! ```
//! use rookery_jid::Jid;
//!
//! let jid: Jid = "Juliet@Example.COM/Balcony".parse()?;
//! assert_eq!(jid.as_str(), "juliet@example.com/Balcony");
//! assert_eq!(jid.local(), Some("juliet"));
//! assert_eq!(jid.domain(), "example.com");
//! assert_eq!(jid.resource(), Some("Balcony"));
//! assert_eq!(jid.to_bare().as_str(), "juliet@example.com");
//! # Ok::<(), rookery_jid::JidError>(())
//! ```
use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

mod normalize;

pub use normalize::MAX_PART_LEN;

/// Why a string is not a valid JID.
///
/// Every variant maps to the `jid-malformed` stanza error condition
/// ([`JidError::STANZA_CONDITION`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JidError {
    /// Empty or missing domainpart (`juliet@`, `/foobar`, the empty string).
    #[error("empty domainpart")]
    EmptyDomain,
    /// Localpart present but empty (`@example.com`).
    #[error("empty localpart")]
    EmptyLocal,
    /// Resourcepart present but empty (`example.com/`).
    #[error("empty resourcepart")]
    EmptyResource,
    /// A part is longer than 1023 octets once normalized; the payload names the part.
    #[error("{0} too long")]
    TooLong(&'static str),
    /// A part fails its PRECIS profile, IDNA2008 or the JID rules; the payload names the part
    /// (`"localpart"`, `"domainpart"`, `"resourcepart"`, or `"bare JID"` when a resource was
    /// given where none is allowed).
    #[error("invalid {0}")]
    Invalid(&'static str),
}

impl JidError {
    /// The RFC 6120 stanza error condition every JID error maps to.
    pub const STANZA_CONDITION: &'static str = "jid-malformed";
}

/// Octet offset of a separator in a normalized JID. Parts are at most 1023 octets, so a
/// whole JID (at most 3071 octets) always fits.
type Offset = u16;

fn offset(n: usize) -> Result<Offset, JidError> {
    Offset::try_from(n).map_err(|_| JidError::TooLong("JID"))
}

fn idx(o: Offset) -> usize {
    usize::from(o)
}

/// A JID, bare or full (`[local@]domain[/resource]`), normalized. Cheap to clone.
///
/// Equality, hashing, ordering and display all use the normalized string.
#[derive(Clone)]
pub struct Jid {
    s: Arc<str>,
    /// Position of the `@` ending the localpart.
    at: Option<Offset>,
    /// Position of the `/` starting the resourcepart.
    slash: Option<Offset>,
}

/// A bare JID (`[local@]domain`), normalized. Cheap to clone.
///
/// Equality, hashing, ordering and display all use the normalized string.
#[derive(Clone)]
pub struct BareJid {
    /// Shared with the full JID it may come from; the bare JID is `s[..len]`.
    s: Arc<str>,
    /// Position of the `@` ending the localpart.
    at: Option<Offset>,
    /// Length of the bare JID within `s`.
    len: Offset,
}

impl Jid {
    /// Parses and normalizes a JID (RFC 7622 §3.1).
    pub fn parse(s: &str) -> Result<Jid, JidError> {
        let (bare, resource) = match s.split_once('/') {
            Some((b, r)) => (b, Some(r)),
            None => (s, None),
        };
        let (local, domain) = match bare.split_once('@') {
            Some((l, d)) => (Some(l), d),
            None => (None, bare),
        };
        let local = local.map(normalize::local).transpose()?;
        let domain = normalize::domain(domain)?;
        let resource = resource.map(normalize::resource).transpose()?;
        Jid::assemble(Some(s), local.as_deref(), &domain, resource.as_deref())
    }

    /// Builds a JID from separate parts, normalizing each. Unlike [`Jid::parse`], the parts
    /// are never split further: a `/` in `domain` is an error, and `resource` may hold
    /// anything OpaqueString allows.
    pub fn new(local: Option<&str>, domain: &str, resource: Option<&str>) -> Result<Jid, JidError> {
        let local = local.map(normalize::local).transpose()?;
        let domain = normalize::domain(domain)?;
        let resource = resource.map(normalize::resource).transpose()?;
        Jid::assemble(None, local.as_deref(), &domain, resource.as_deref())
    }

    /// Joins normalized parts. Reuses `original` for the storage when it already is the
    /// normalized string, which saves building it in the common case.
    fn assemble(
        original: Option<&str>,
        local: Option<&str>,
        domain: &str,
        resource: Option<&str>,
    ) -> Result<Jid, JidError> {
        let at = local.map(str::len);
        let domain_start = at.map_or(0, |a| a + 1);
        let domain_end = domain_start + domain.len();
        let total = resource.map_or(domain_end, |r| domain_end + 1 + r.len());

        let unchanged = original.filter(|o| {
            o.len() == total
                && local.is_none_or(|l| o.get(..l.len()) == Some(l))
                && o.get(domain_start..domain_end) == Some(domain)
                && resource.is_none_or(|r| o.get(domain_end + 1..) == Some(r))
        });
        let s: Arc<str> = match unchanged {
            Some(o) => Arc::from(o),
            None => {
                let mut buf = String::with_capacity(total);
                if let Some(l) = local {
                    buf.push_str(l);
                    buf.push('@');
                }
                buf.push_str(domain);
                if let Some(r) = resource {
                    buf.push('/');
                    buf.push_str(r);
                }
                Arc::from(buf)
            }
        };
        Ok(Jid {
            s,
            at: at.map(offset).transpose()?,
            slash: resource.map(|_| offset(domain_end)).transpose()?,
        })
    }

    /// The localpart, if any.
    pub fn local(&self) -> Option<&str> {
        self.at.and_then(|a| self.s.get(..idx(a)))
    }

    /// The domainpart.
    pub fn domain(&self) -> &str {
        let start = self.at.map_or(0, |a| idx(a) + 1);
        let end = self.slash.map_or(self.s.len(), idx);
        self.s.get(start..end).unwrap_or_default()
    }

    /// The resourcepart, if any.
    pub fn resource(&self) -> Option<&str> {
        self.slash.and_then(|p| self.s.get(idx(p) + 1..))
    }

    /// True when there is no resourcepart.
    pub fn is_bare(&self) -> bool {
        self.slash.is_none()
    }

    /// True when there is a resourcepart.
    pub fn is_full(&self) -> bool {
        self.slash.is_some()
    }

    /// The bare part (`[local@]domain`), sharing this JID's storage.
    pub fn to_bare(&self) -> BareJid {
        BareJid {
            s: self.s.clone(),
            at: self.at,
            // The whole string is at most 3071 octets (checked when built).
            len: self
                .slash
                .unwrap_or_else(|| offset(self.s.len()).unwrap_or(Offset::MAX)),
        }
    }

    /// The bare part as a string slice, without building a [`BareJid`].
    pub fn bare_str(&self) -> &str {
        match self.slash {
            Some(p) => self.s.get(..idx(p)).unwrap_or_default(),
            None => &self.s,
        }
    }

    /// True when both JIDs have the same bare part (resources are ignored).
    pub fn bare_eq(&self, other: &Jid) -> bool {
        self.bare_str() == other.bare_str()
    }

    /// The domain alone as a JID (e.g. the server a JID is hosted on).
    pub fn domain_jid(&self) -> BareJid {
        BareJid::from_normalized_domain(self.domain())
    }

    /// The same bare JID with `resource` (normalized) as its resourcepart, replacing any.
    pub fn with_resource(&self, resource: &str) -> Result<Jid, JidError> {
        self.to_bare().with_resource(resource)
    }

    /// The normalized string form.
    pub fn as_str(&self) -> &str {
        &self.s
    }
}

impl BareJid {
    /// Parses and normalizes `[local@]domain`; a resourcepart is an error
    /// (`Invalid("bare JID")`).
    pub fn parse(s: &str) -> Result<BareJid, JidError> {
        if s.contains('/') {
            return Err(JidError::Invalid("bare JID"));
        }
        Jid::parse(s).map(|j| j.to_bare())
    }

    /// Builds a bare JID from separate parts, normalizing each (`local` is never split at
    /// `@`: one there is an error).
    pub fn new(local: Option<&str>, domain: &str) -> Result<BareJid, JidError> {
        Jid::new(local, domain, None).map(|j| j.to_bare())
    }

    fn from_normalized_domain(domain: &str) -> BareJid {
        BareJid {
            s: Arc::from(domain),
            at: None,
            len: offset(domain.len()).unwrap_or(Offset::MAX),
        }
    }

    /// The localpart, if any.
    pub fn local(&self) -> Option<&str> {
        self.at.and_then(|a| self.s.get(..idx(a)))
    }

    /// The domainpart.
    pub fn domain(&self) -> &str {
        let start = self.at.map_or(0, |a| idx(a) + 1);
        self.s.get(start..idx(self.len)).unwrap_or_default()
    }

    /// True when this is a domain alone (no localpart), as for servers and components.
    pub fn is_domain(&self) -> bool {
        self.at.is_none()
    }

    /// The domain alone as a JID (e.g. the server an account is hosted on).
    pub fn domain_jid(&self) -> BareJid {
        if self.at.is_none() && idx(self.len) == self.s.len() {
            self.clone()
        } else {
            BareJid::from_normalized_domain(self.domain())
        }
    }

    /// The full JID with `resource` (normalized) as its resourcepart.
    pub fn with_resource(&self, resource: &str) -> Result<Jid, JidError> {
        let resource = normalize::resource(resource)?;
        let bare = self.as_str();
        let mut buf = String::with_capacity(bare.len() + 1 + resource.len());
        buf.push_str(bare);
        buf.push('/');
        buf.push_str(&resource);
        Ok(Jid {
            s: Arc::from(buf),
            at: self.at,
            slash: Some(self.len),
        })
    }

    /// The normalized string form.
    pub fn as_str(&self) -> &str {
        self.s.get(..idx(self.len)).unwrap_or_default()
    }
}

impl From<BareJid> for Jid {
    fn from(b: BareJid) -> Jid {
        let s = if idx(b.len) == b.s.len() {
            b.s
        } else {
            Arc::from(b.as_str())
        };
        Jid {
            s,
            at: b.at,
            slash: None,
        }
    }
}

impl From<&BareJid> for Jid {
    fn from(b: &BareJid) -> Jid {
        Jid::from(b.clone())
    }
}

/// A full JID equals a bare JID when it has no resourcepart and the strings match.
impl PartialEq<BareJid> for Jid {
    fn eq(&self, other: &BareJid) -> bool {
        self.as_str() == other.as_str()
    }
}

/// A bare JID equals a JID when that JID has no resourcepart and the strings match.
impl PartialEq<Jid> for BareJid {
    fn eq(&self, other: &Jid) -> bool {
        self.as_str() == other.as_str()
    }
}

macro_rules! string_traits {
    ($t:ty) => {
        impl PartialEq for $t {
            fn eq(&self, other: &Self) -> bool {
                self.as_str() == other.as_str()
            }
        }
        impl Eq for $t {}
        impl Hash for $t {
            fn hash<H: Hasher>(&self, state: &mut H) {
                self.as_str().hash(state)
            }
        }
        impl PartialOrd for $t {
            fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
                Some(self.cmp(other))
            }
        }
        impl Ord for $t {
            fn cmp(&self, other: &Self) -> Ordering {
                self.as_str().cmp(other.as_str())
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($t), self.as_str())
            }
        }
        impl std::str::FromStr for $t {
            type Err = JidError;
            fn from_str(s: &str) -> Result<Self, JidError> {
                <$t>::parse(s)
            }
        }
    };
}
string_traits!(Jid);
string_traits!(BareJid);

/// Normalizes a localpart alone (PRECIS UsernameCaseMapped plus RFC 7622 §3.3.1), e.g. for
/// account names: `normalize_local("Juliet")` is `"juliet"`.
pub fn normalize_local(local: &str) -> Result<String, JidError> {
    normalize::local(local).map(Cow::into_owned)
}

/// Normalizes a domainpart alone (RFC 7622 §3.2), e.g. for configured host names:
/// `normalize_domain("Example.COM.")` is `"example.com"`.
pub fn normalize_domain(domain: &str) -> Result<String, JidError> {
    normalize::domain(domain).map(Cow::into_owned)
}

/// Normalizes a resourcepart alone (PRECIS OpaqueString, RFC 7622 §3.4), e.g. for a
/// resource a client asks to bind.
pub fn normalize_resource(resource: &str) -> Result<String, JidError> {
    normalize::resource(resource).map(Cow::into_owned)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ok(s: &str) -> Jid {
        Jid::parse(s).unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn norm(s: &str) -> String {
        ok(s).to_string()
    }

    fn err(s: &str) -> JidError {
        match Jid::parse(s) {
            Ok(j) => panic!("{s:?} should not parse, got {j:?}"),
            Err(e) => e,
        }
    }

    // RFC 7622 §3.5: examples of valid JIDs.
    #[test]
    fn rfc7622_valid_examples() {
        for s in [
            "juliet@example.com",
            "juliet@example.com/foo",
            "juliet@example.com/foo bar",
            "juliet@example.com/foo@bar",
            "foo\\20bar@example.com",
            "fussball@example.com",
            "fußball@example.com",
            "π@example.com",
            "σ@example.com",
            "ς@example.com",
            "king@example.com/♚",
            "example.com",
            "example.com/foobar",
            "a.example.com/b@example.net",
        ] {
            assert_eq!(norm(s), s, "{s:?} is already normalized");
        }
        assert_eq!(norm("Σ@example.com"), "σ@example.com");
        // ß is not case-folded to ss, and final sigma is kept: these are distinct accounts.
        assert_ne!(ok("fußball@example.com"), ok("fussball@example.com"));
        assert_ne!(ok("ς@example.com"), ok("σ@example.com"));
    }

    // RFC 7622 §3.5: examples of invalid JIDs.
    #[test]
    fn rfc7622_invalid_examples() {
        assert_eq!(
            err("\"juliet\"@example.com"),
            JidError::Invalid("localpart")
        );
        assert_eq!(err("foo bar@example.com"), JidError::Invalid("localpart"));
        assert_eq!(err("@example.com/"), JidError::EmptyLocal);
        assert_eq!(
            err("henry\u{2163}@example.com"),
            JidError::Invalid("localpart")
        );
        assert_eq!(err("♚@example.com"), JidError::Invalid("localpart"));
        assert_eq!(err("juliet@"), JidError::EmptyDomain);
        assert_eq!(err("/foobar"), JidError::EmptyDomain);
    }

    #[test]
    fn empty_parts() {
        assert_eq!(err(""), JidError::EmptyDomain);
        assert_eq!(err("@"), JidError::EmptyLocal);
        assert_eq!(err("/"), JidError::EmptyDomain);
        assert_eq!(err("@example.com"), JidError::EmptyLocal);
        assert_eq!(err("henry@example.com/"), JidError::EmptyResource);
        assert_eq!(err("example.com/"), JidError::EmptyResource);
        assert_eq!(err("lp@/rp"), JidError::EmptyDomain);
        assert_eq!(err("."), JidError::EmptyDomain);
    }

    #[test]
    fn spaces() {
        assert_eq!(err("juliet @example.com"), JidError::Invalid("localpart"));
        assert_eq!(
            err("juliet\u{3000}x@example.com"),
            JidError::Invalid("localpart")
        );
        assert_eq!(err("juliet@exa mple.com"), JidError::Invalid("domainpart"));
        assert_eq!(err("juliet@example.com "), JidError::Invalid("domainpart"));
        assert_eq!(
            err("juliet@exa\u{3000}mple.com"),
            JidError::Invalid("domainpart")
        );
        // OpaqueString allows spaces, and maps non-ASCII spaces to U+0020.
        assert_eq!(norm("juliet@example.com/ foo"), "juliet@example.com/ foo");
        assert_eq!(
            norm("juliet@example.com/a\u{3000}b"),
            "juliet@example.com/a b"
        );
        assert_eq!(
            norm("juliet@example.com/a\u{a0}b"),
            "juliet@example.com/a b"
        );
    }

    #[test]
    fn local_prohibited_chars() {
        for c in ['"', '&', '\'', ':', '<', '>'] {
            assert_eq!(
                err(&format!("a{c}b@example.com")),
                JidError::Invalid("localpart")
            );
        }
        assert_eq!(err("<foo>@example.com"), JidError::Invalid("localpart"));
        // '@' and '/' cannot reach the localpart by splitting, but width mapping can
        // produce them.
        assert_eq!(
            err("a\u{ff20}b@example.com"),
            JidError::Invalid("localpart")
        );
        assert_eq!(
            err("a\u{ff0f}b@example.com"),
            JidError::Invalid("localpart")
        );
        assert!(BareJid::new(Some("a@b"), "example.com").is_err());
        assert!(BareJid::new(Some("a/b"), "example.com").is_err());
        // Other ASCII punctuation is fine.
        assert_eq!(
            norm("a.b_c-d+e!#$%*=?^`{|}~\\@example.com"),
            "a.b_c-d+e!#$%*=?^`{|}~\\@example.com"
        );
    }

    #[test]
    fn control_chars() {
        assert!(Jid::parse("a\u{0}b@example.com").is_err());
        assert!(Jid::parse("ab@exa\u{0}mple.com").is_err());
        assert!(Jid::parse("ab@example.com/x\u{0}").is_err());
        assert!(Jid::parse("ab@example.com/x\ty").is_err());
        assert!(Jid::parse("ab@example.com/x\u{7f}").is_err());
        assert!(Jid::parse("ab@example.com/x\u{85}").is_err());
        assert!(Jid::parse("ab\u{7f}@example.com").is_err());
    }

    #[test]
    fn case_folding() {
        let j = ok("Juliet@Example.COM/Balcony");
        assert_eq!(j.as_str(), "juliet@example.com/Balcony");
        assert_eq!(j.local(), Some("juliet"));
        assert_eq!(j.domain(), "example.com");
        assert_eq!(j.resource(), Some("Balcony"));
        assert_eq!(ok("JULIET@example.com"), ok("juliet@example.com"));
        assert_ne!(ok("juliet@example.com/A"), ok("juliet@example.com/a"));
        // Non-ASCII case mapping and width mapping in the localpart.
        assert_eq!(norm("ÉLODIE@example.com"), "élodie@example.com");
        assert_eq!(norm("\u{ff2a}uliet@example.com"), "juliet@example.com");
        // KELVIN SIGN has a compatibility decomposition: IdentifierClass disallows it
        // rather than mapping it to 'k'.
        assert_eq!(
            err("\u{212a}ing@example.com"),
            JidError::Invalid("localpart")
        );
        // NFC: decomposed and precomposed forms are the same JID.
        assert_eq!(ok("e\u{301}@example.com"), ok("é@example.com"));
        assert_eq!(norm("x@example.com/Re\u{301}s"), "x@example.com/Rés");
    }

    #[test]
    fn domain_dns_lengths() {
        // RFC 7622 §3.2: the DNS limits apply — 63 octets a label, 253 a name, counted in
        // the A-label form.
        let label = |n: usize| "x".repeat(n);
        ok(&format!("a@{}.example", label(63)));
        assert_eq!(
            err(&format!("a@{}.example", label(64))),
            JidError::Invalid("domainpart")
        );
        let name = |labels: usize| vec![label(49); labels].join(".");
        ok(&name(5)); // 249 octets
        ok(&format!("{}.xxx", name(5))); // 253
        assert_eq!(
            err(&format!("{}.xxxx", name(5))),
            JidError::Invalid("domainpart")
        );
        // "ü" takes more octets as an A-label (xn--…) than it has letters.
        ok(&format!("a@{}ü.example", label(50)));
        assert_eq!(
            err(&format!("a@{}ü.example", label(60))),
            JidError::Invalid("domainpart")
        );
        // An IPv6 literal is no DNS name.
        ok("a@[::1]");
    }

    #[test]
    fn domain_idna() {
        assert_eq!(norm("juliet@Bücher.Example"), "juliet@bücher.example");
        assert_eq!(
            norm("juliet@xn--bcher-kva.example"),
            "juliet@bücher.example"
        );
        assert_eq!(
            norm("juliet@XN--BCHER-KVA.example"),
            "juliet@bücher.example"
        );
        assert_eq!(ok("a@xn--bcher-kva.example"), ok("a@bücher.example"));
        assert_eq!(norm("juliet@\u{ff25}xample.com"), "juliet@example.com");
        assert_eq!(norm("juliet@example\u{3002}com"), "juliet@example.com");
        assert_eq!(norm("faß.de"), "faß.de");
        assert_eq!(norm("παράδειγμα.δοκιμή"), "παράδειγμα.δοκιμή");
        // Symbols are DISALLOWED in IDNA2008 even where UTS #46 would take them.
        assert_eq!(err("♚.example"), JidError::Invalid("domainpart"));
        assert_eq!(err("a@xn--.example"), JidError::Invalid("domainpart"));
        assert_eq!(err("a@xn--zz-zz.example"), JidError::Invalid("domainpart"));
        for bad in [
            "a@exa_mple.com",
            "a@-example.com",
            "a@example-.com",
            "a@ab--cd.com",
            "a@example..com",
            "a@.example.com",
            "a@example.com..",
            "a@ex@mple.com",
            "a@exa:mple.com",
            "a@[127.0.0.1]",
            "a@[::1",
            "a@::1]",
            "a@::1",
            "a@[example.com]",
            "a@[fe80::1%eth0]",
            "a@exa\u{ff0f}mple.com",
        ] {
            assert!(Jid::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn trailing_dot() {
        assert_eq!(norm("juliet@example.com./res"), "juliet@example.com/res");
        assert_eq!(norm("example.com."), "example.com");
        assert_eq!(norm("example.com\u{3002}"), "example.com");
        assert_eq!(norm("Bücher.example."), "bücher.example");
        assert_eq!(ok("a@example.com."), ok("a@example.com"));
        assert_eq!(err("example.com.."), JidError::Invalid("domainpart"));
        assert_eq!(err("a@."), JidError::EmptyDomain);
    }

    #[test]
    fn ip_literals() {
        assert_eq!(norm("juliet@192.168.0.1/r"), "juliet@192.168.0.1/r");
        assert_eq!(norm("juliet@[::1]/r"), "juliet@[::1]/r");
        assert_eq!(norm("[2001:DB8:0:0:0:0:0:1]"), "[2001:db8::1]");
        assert_eq!(norm("a@[::FFFF:192.0.2.1]"), "a@[::ffff:192.0.2.1]");
        let j = ok("a@[2001:db8::1]/x");
        assert_eq!(j.domain(), "[2001:db8::1]");
        assert_eq!(j.resource(), Some("x"));
    }

    #[test]
    fn length_limits() {
        let max = "a".repeat(1023);
        let over = "a".repeat(1024);
        // A domainpart of 1023 octets is a valid JID part, but no DNS name (see
        // `domain_dns_lengths`): an IPv6 literal stands in for the domain here.
        let j = ok(&format!("{max}@[::1]/{max}"));
        assert_eq!(j.as_str().len(), 2053);
        assert_eq!(j.local(), Some(max.as_str()));
        assert_eq!(j.resource(), Some(max.as_str()));
        assert_eq!(
            err(&format!("{over}@example.com")),
            JidError::TooLong("localpart")
        );
        assert_eq!(err(&format!("a@{over}")), JidError::TooLong("domainpart"));
        assert_eq!(
            err(&format!("a@example.com/{over}")),
            JidError::TooLong("resourcepart")
        );
        // Octets, not characters: 'é' is two octets.
        assert!(Jid::parse(&format!("{}a@x", "é".repeat(511))).is_ok());
        assert_eq!(
            err(&format!("{}@x", "é".repeat(512))),
            JidError::TooLong("localpart")
        );
        assert_eq!(
            err(&format!("x/{}", "é".repeat(512))),
            JidError::TooLong("resourcepart")
        );
        // Limits apply after normalization: fullwidth letters (3 octets) map to ASCII.
        let wide = "\u{ff41}".repeat(1023);
        assert_eq!(ok(&format!("{wide}@x")).local(), Some(max.as_str()));
        // A trailing dot does not count.
        let longest_name = [63, 63, 63, 61].map(|n| "x".repeat(n)).join(".");
        assert_eq!(longest_name.len(), 253);
        assert!(Jid::parse(&format!("{longest_name}.")).is_ok());
        // Huge inputs are refused early.
        assert!(Jid::parse(&"a".repeat(1 << 20)).is_err());
        assert!(Jid::parse(&format!("x/{}", "\u{3000}".repeat(1 << 16))).is_err());
    }

    #[test]
    fn resource_keeps_separators() {
        let j = ok("juliet@example.com/foo/bar@baz");
        assert_eq!(j.resource(), Some("foo/bar@baz"));
        let j = ok("example.com/a@b");
        assert_eq!(j.local(), None);
        assert_eq!(j.domain(), "example.com");
        assert_eq!(j.resource(), Some("a@b"));
        // The first '@' splits the localpart: the domain then holds an '@'.
        assert_eq!(err("a@b@example.com"), JidError::Invalid("domainpart"));
    }

    #[test]
    fn bare_and_full() {
        let full = ok("Juliet@example.com/balcony");
        assert!(full.is_full());
        assert!(!full.is_bare());
        let bare = full.to_bare();
        assert_eq!(bare.as_str(), "juliet@example.com");
        assert_eq!(bare.local(), Some("juliet"));
        assert_eq!(bare.domain(), "example.com");
        assert_eq!(bare.to_string(), "juliet@example.com");
        assert_eq!(format!("{bare:?}"), "BareJid(\"juliet@example.com\")");
        assert_eq!(format!("{full:?}"), "Jid(\"juliet@example.com/balcony\")");
        assert_eq!(full.bare_str(), "juliet@example.com");
        assert!(full.bare_eq(&ok("juliet@example.com/orchard")));
        assert!(full.bare_eq(&ok("juliet@example.com")));
        assert!(!full.bare_eq(&ok("romeo@example.com/balcony")));

        let as_jid: Jid = bare.clone().into();
        assert!(as_jid.is_bare());
        assert_eq!(as_jid.as_str(), "juliet@example.com");
        assert_eq!(as_jid.local(), Some("juliet"));
        assert_eq!(as_jid.domain(), "example.com");
        assert_eq!(as_jid, bare);
        assert_eq!(bare, as_jid);
        assert_ne!(full, bare);
        assert_ne!(bare, full);
        assert_eq!(as_jid, ok("juliet@example.com"));

        let again = bare.with_resource("Orchard").unwrap();
        assert_eq!(again.as_str(), "juliet@example.com/Orchard");
        assert_eq!(again.local(), Some("juliet"));
        assert_eq!(again.domain(), "example.com");
        assert_eq!(again.resource(), Some("Orchard"));
        assert_eq!(again, ok("juliet@example.com/Orchard"));
        let moved = full.with_resource("a/b\u{3000}c").unwrap();
        assert_eq!(moved.as_str(), "juliet@example.com/a/b c");
        assert_eq!(bare.with_resource(""), Err(JidError::EmptyResource));

        assert_eq!(full.domain_jid().as_str(), "example.com");
        assert!(full.domain_jid().is_domain());
        assert_eq!(bare.domain_jid(), BareJid::parse("example.com").unwrap());
        let d = BareJid::parse("example.com").unwrap();
        assert_eq!(d.domain_jid(), d);
        assert_eq!(
            ok("example.com/r").to_bare().domain_jid().as_str(),
            "example.com"
        );

        assert_eq!(BareJid::parse("a@b/c"), Err(JidError::Invalid("bare JID")));
        assert_eq!("A@B".parse::<BareJid>().unwrap().as_str(), "a@b");
    }

    #[test]
    fn from_parts() {
        let j = Jid::new(Some("Juliet"), "Example.com.", Some("Balcony")).unwrap();
        assert_eq!(j, ok("juliet@example.com/Balcony"));
        assert_eq!(j.resource(), Some("Balcony"));
        let j = Jid::new(None, "example.com", None).unwrap();
        assert!(j.is_bare());
        assert_eq!(j.local(), None);
        let b = BareJid::new(Some("Σ"), "example.com").unwrap();
        assert_eq!(b.as_str(), "σ@example.com");
        assert_eq!(
            BareJid::new(Some(""), "example.com"),
            Err(JidError::EmptyLocal)
        );
        assert_eq!(BareJid::new(None, ""), Err(JidError::EmptyDomain));
        assert!(BareJid::new(None, "example.com/x").is_err());
        assert!(Jid::new(None, "example.com", Some("a@b/c")).is_ok());
    }

    #[test]
    fn hashing_and_ordering() {
        use std::collections::{BTreeSet, HashSet};
        let set: HashSet<Jid> = ["A@x", "a@X", "a@x.", "b@x"]
            .iter()
            .map(|s| ok(s))
            .collect();
        assert_eq!(set.len(), 2);
        let bare: HashSet<BareJid> = [ok("a@x/1").to_bare(), ok("a@x/2").to_bare()].into();
        assert_eq!(bare.len(), 1);
        let sorted: BTreeSet<Jid> = ["c@x", "a@x/2", "a@x"].iter().map(|s| ok(s)).collect();
        let sorted: Vec<_> = sorted.iter().map(Jid::as_str).collect();
        assert_eq!(sorted, ["a@x", "a@x/2", "c@x"]);
    }

    #[test]
    fn part_normalizers() {
        assert_eq!(normalize_local("Juliet").unwrap(), "juliet");
        assert_eq!(normalize_local("Σ").unwrap(), "σ");
        assert_eq!(normalize_local("a@b"), Err(JidError::Invalid("localpart")));
        assert_eq!(normalize_local(""), Err(JidError::EmptyLocal));
        assert_eq!(normalize_domain("Example.COM.").unwrap(), "example.com");
        assert_eq!(
            normalize_domain("xn--bcher-kva.example").unwrap(),
            "bücher.example"
        );
        assert_eq!(normalize_domain(""), Err(JidError::EmptyDomain));
        assert_eq!(normalize_resource("Balcony").unwrap(), "Balcony");
        assert_eq!(normalize_resource("\u{2163}").unwrap(), "\u{2163}");
        assert_eq!(normalize_resource(""), Err(JidError::EmptyResource));
    }

    #[test]
    fn unchanged_input_is_reused() {
        // Same result whether or not the input string could be reused as storage.
        for s in ["a@b/c", "A@b/c", "a@b./c", "b", "b/c", "a@b"] {
            let j = ok(s);
            let rebuilt = Jid::new(j.local(), j.domain(), j.resource()).unwrap();
            assert_eq!(j, rebuilt);
            assert_eq!(j.as_str(), rebuilt.as_str());
        }
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            JidError::TooLong("localpart").to_string(),
            "localpart too long"
        );
        assert_eq!(
            JidError::Invalid("domainpart").to_string(),
            "invalid domainpart"
        );
        assert_eq!(JidError::STANZA_CONDITION, "jid-malformed");
    }

    /// Strings built from characters that exercise the parser: separators, case, width,
    /// combining marks, spaces, sigma, dots, brackets and A-label prefixes.
    fn jidish() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("@".to_string()),
            Just("/".to_string()),
            Just(".".to_string()),
            Just("xn--".to_string()),
            Just("[::1]".to_string()),
            "[a-zA-Z0-9]{1,6}",
            "[a-zA-Z0-9\\-_ \\[\\]:\\\\\"&'<>.]",
            "[ßΣσςπÉéKkİı\u{212a}\u{301}\u{300}\u{200c}\u{200d}\u{ad}\u{3000}\u{a0}\u{ff21}-\u{ff3a}\u{ff41}\u{ff20}\u{ff0e}\u{3002}\u{2163}\u{265a}\u{5d0}\u{627}\u{660}\u{b7}\u{375}]",
            any::<char>().prop_map(String::from),
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|v| v.concat())
    }

    fn check_roundtrip(s: &str) {
        if let Ok(j) = Jid::parse(s) {
            let again = Jid::parse(j.as_str());
            assert_eq!(again.as_ref(), Ok(&j), "not idempotent for {s:?}");
            let again = again.unwrap();
            assert_eq!(again.local(), j.local());
            assert_eq!(again.domain(), j.domain());
            assert_eq!(again.resource(), j.resource());
            let rebuilt = Jid::new(j.local(), j.domain(), j.resource());
            assert_eq!(rebuilt.as_ref(), Ok(&j), "parts do not rebuild {s:?}");
            for part in [j.local(), Some(j.domain()), j.resource()]
                .into_iter()
                .flatten()
            {
                assert!(!part.is_empty() && part.len() <= MAX_PART_LEN);
            }
            let bare = j.to_bare();
            assert_eq!(BareJid::parse(bare.as_str()).as_ref(), Ok(&bare));
        }
    }

    proptest! {
        #[test]
        fn normalization_is_idempotent(s in jidish()) {
            check_roundtrip(&s);
        }

        #[test]
        fn parse_never_panics(s in any::<String>()) {
            check_roundtrip(&s);
        }

        #[test]
        fn ascii_fast_path_matches_precis(s in "[\\x20-\\x7e]{1,12}") {
            use precis_core::profile::PrecisFastInvocation;
            let precis_local = precis_profiles::UsernameCaseMapped::enforce(s.as_str())
                .ok()
                .filter(|l| !l.contains(['"', '&', '\'', '/', ':', '<', '>', '@']));
            prop_assert_eq!(normalize_local(&s).ok(), precis_local.map(|c| c.into_owned()));
            let precis_resource = precis_profiles::OpaqueString::enforce(s.as_str()).ok();
            prop_assert_eq!(normalize_resource(&s).ok(), precis_resource.map(|c| c.into_owned()));
        }

        #[test]
        fn ldh_fast_path_matches_idna(s in "[a-zA-Z0-9.\\-]{1,16}") {
            let slow = normalize::idna_to_unicode(&s).ok().map(Cow::into_owned);
            if s.ends_with('.') {
                return Ok(());
            }
            prop_assert_eq!(normalize_domain(&s).ok(), slow);
        }
    }
}
