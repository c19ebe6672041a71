//! Sans-IO XMPP stream parser (placeholder API; implementation in progress).

use crate::Element;

/// Limits that bound a parser's memory and work. Exceeding one is a `policy-violation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest serialized size of one top-level element (stanza), in bytes.
    pub max_stanza_bytes: usize,
    /// Deepest nesting of elements inside a stanza (the stanza itself is depth 1).
    pub max_depth: usize,
    /// Most attributes on one element.
    pub max_attrs: usize,
    /// Most elements (the stanza and all descendants) in one stanza.
    pub max_elements: usize,
}

impl Limits {
    /// Defaults for an authenticated client stream (RFC 6120 §13.12: at least 10000 bytes).
    pub const C2S: Limits = Limits {
        max_stanza_bytes: 256 * 1024,
        max_depth: 32,
        max_attrs: 64,
        max_elements: 10_000,
    };
    /// Tight limits before authentication: negotiation needs only tiny elements.
    pub const PRE_AUTH: Limits = Limits {
        max_stanza_bytes: 8 * 1024,
        max_depth: 8,
        max_attrs: 16,
        max_elements: 32,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::C2S
    }
}

/// The attributes of an opening `<stream:stream>` tag.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamHeader {
    /// The default namespace declared on the stream (`jabber:client`, `jabber:server`, ...).
    pub default_ns: String,
    /// Prefixed namespace declarations other than `stream`, as (prefix, uri), e.g. `db`.
    pub prefixes: Vec<(String, String)>,
    /// Plain attributes (`to`, `from`, `id`, `version`, `xml:lang`).
    pub attrs: Vec<(String, String)>,
}

impl StreamHeader {
    /// Value of attribute `name`.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the parser produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `<stream:stream ...>` was opened.
    StreamOpen(StreamHeader),
    /// A complete top-level element (a stanza or a negotiation element).
    Element(Element),
    /// `</stream:stream>` was received.
    StreamClose,
}

/// Why a stream cannot be parsed further. Each maps to one RFC 6120 §4.9.3 stream error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// Not well-formed XML.
    #[error("not well-formed: {0}")]
    NotWellFormed(String),
    /// XML that RFC 6120 §11 forbids (DOCTYPE, PI, comment, entity reference).
    #[error("restricted xml: {0}")]
    Restricted(&'static str),
    /// A limit was exceeded.
    #[error("limit exceeded: {0}")]
    LimitExceeded(&'static str),
    /// Namespace prefix not declared, or the stream namespace is wrong.
    #[error("invalid namespace: {0}")]
    InvalidNamespace(String),
    /// The root element is not `stream:stream`.
    #[error("bad format: {0}")]
    BadFormat(String),
    /// Input is not UTF-8.
    #[error("unsupported encoding")]
    UnsupportedEncoding,
}

impl XmlError {
    /// The RFC 6120 §4.9.3 stream error condition for this failure.
    pub fn condition(&self) -> &'static str {
        match self {
            XmlError::NotWellFormed(_) => "not-well-formed",
            XmlError::Restricted(_) => "restricted-xml",
            XmlError::LimitExceeded(_) => "policy-violation",
            XmlError::InvalidNamespace(_) => "invalid-namespace",
            XmlError::BadFormat(_) => "bad-format",
            XmlError::UnsupportedEncoding => "unsupported-encoding",
        }
    }
}

/// Incremental XMPP stream parser.
#[derive(Debug)]
pub struct StreamParser {
    limits: Limits,
    buf: Vec<u8>,
}

impl StreamParser {
    /// A parser expecting a stream header first.
    pub fn new(limits: Limits) -> Self {
        StreamParser {
            limits,
            buf: Vec::new(),
        }
    }

    /// Changes the limits (e.g. from pre-auth to authenticated).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Appends bytes read from the network.
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete event, `Ok(None)` when more bytes are needed.
    pub fn next_event(&mut self) -> Result<Option<Event>, XmlError> {
        Ok(None)
    }

    /// Forgets everything: buffered bytes and state; the next event must be a stream header.
    pub fn reset(&mut self) {
        self.buf.clear();
    }
}
