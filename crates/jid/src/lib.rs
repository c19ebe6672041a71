//! XMPP addresses (RFC 7622) — placeholder API, normalization in progress.
use std::fmt;
use std::sync::Arc;

/// Why a string is not a valid JID (maps to the `jid-malformed` stanza error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JidError {
    /// Empty or missing domainpart.
    #[error("empty domainpart")]
    EmptyDomain,
    /// Localpart present but empty (`@example.com`).
    #[error("empty localpart")]
    EmptyLocal,
    /// Resourcepart present but empty (`example.com/`).
    #[error("empty resourcepart")]
    EmptyResource,
    /// A part is longer than 1023 octets.
    #[error("{0} too long")]
    TooLong(&'static str),
    /// A part fails its PRECIS profile or IDNA.
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// A bare JID: `[local@]domain`, normalized. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BareJid {
    s: Arc<str>,
    at: Option<usize>,
}

/// A JID, bare or full (`[local@]domain[/resource]`), normalized. Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Jid {
    s: Arc<str>,
    at: Option<usize>,
    slash: Option<usize>,
}

impl BareJid {
    /// Parses and normalizes `[local@]domain`; a resource is an error.
    pub fn parse(s: &str) -> Result<BareJid, JidError> {
        let j = Jid::parse(s)?;
        if j.resource().is_some() {
            return Err(JidError::Invalid("bare jid"));
        }
        Ok(j.to_bare())
    }
    /// From already separate parts.
    pub fn new(local: Option<&str>, domain: &str) -> Result<BareJid, JidError> {
        let s = match local {
            Some(l) => format!("{l}@{domain}"),
            None => domain.to_string(),
        };
        BareJid::parse(&s)
    }
    /// The localpart.
    pub fn local(&self) -> Option<&str> {
        self.at.map(|a| &self.s[..a])
    }
    /// The domainpart.
    pub fn domain(&self) -> &str {
        match self.at {
            Some(a) => &self.s[a + 1..],
            None => &self.s,
        }
    }
    /// The full JID with `resource` (normalized).
    pub fn with_resource(&self, resource: &str) -> Result<Jid, JidError> {
        Jid::parse(&format!("{}/{}", self.s, resource))
    }
    /// The string form.
    pub fn as_str(&self) -> &str {
        &self.s
    }
}

impl Jid {
    /// Parses and normalizes a JID.
    pub fn parse(s: &str) -> Result<Jid, JidError> {
        let slash = s.find('/');
        let bare = &s[..slash.unwrap_or(s.len())];
        let at = bare.find('@');
        if bare.is_empty() {
            return Err(JidError::EmptyDomain);
        }
        Ok(Jid {
            s: Arc::from(s),
            at,
            slash,
        })
    }
    /// The localpart.
    pub fn local(&self) -> Option<&str> {
        self.at.map(|a| &self.s[..a])
    }
    /// The domainpart.
    pub fn domain(&self) -> &str {
        let start = self.at.map_or(0, |a| a + 1);
        let end = self.slash.unwrap_or(self.s.len());
        &self.s[start..end]
    }
    /// The resourcepart.
    pub fn resource(&self) -> Option<&str> {
        self.slash.map(|p| &self.s[p + 1..])
    }
    /// True when there is no resource.
    pub fn is_bare(&self) -> bool {
        self.slash.is_none()
    }
    /// The bare part.
    pub fn to_bare(&self) -> BareJid {
        match self.slash {
            None => BareJid {
                s: self.s.clone(),
                at: self.at,
            },
            Some(p) => BareJid {
                s: Arc::from(&self.s[..p]),
                at: self.at,
            },
        }
    }
    /// The string form.
    pub fn as_str(&self) -> &str {
        &self.s
    }
}

impl From<BareJid> for Jid {
    fn from(b: BareJid) -> Jid {
        Jid {
            s: b.s,
            at: b.at,
            slash: None,
        }
    }
}

macro_rules! string_traits {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.s)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($t), &*self.s)
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

/// Normalizes a localpart alone (UsernameCaseMapped), e.g. for account names.
pub fn normalize_local(local: &str) -> Result<String, JidError> {
    Ok(local.to_lowercase())
}
