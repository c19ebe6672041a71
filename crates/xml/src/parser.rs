//! Sans-IO XMPP stream parser: an XML stream (RFC 6120 §4) in the restricted XML of RFC 6120 §11.
//!
//! Bytes are [fed](StreamParser::feed) in whatever chunks the network delivers;
//! [`StreamParser::next_event`] yields the stream header, each top-level element as a whole
//! [`Element`], and the stream close, or `Ok(None)` when it needs more bytes.
//!
//! How it works: an incremental scanner finds where the next token (character data, a tag, a
//! CDATA section, the XML declaration) ends. It remembers how far it looked and whether it is
//! inside a quoted attribute value, so every byte is scanned once however the input is chunked.
//! Complete tokens are decoded at once: quick-xml's [`Attributes`] tokenizes attributes (and
//! rejects duplicates); names, references and characters are checked here; namespaces are
//! resolved against a scope stack. A processed token's bytes are dropped, so the buffer holds only
//! the unfinished token, and the tree being built is bounded by [`Limits`].
//!
//! What RFC 6120 §11.1 forbids is rejected as soon as it is seen, before anything is expanded:
//! comments, processing instructions (the XML declaration is allowed before the header only),
//! document type declarations (so no entity is ever defined, let alone expanded), and references
//! to entities other than the five predefined ones. Only UTF-8 is accepted (§11.6).

use std::borrow::Cow;

use quick_xml::events::attributes::Attributes;

use crate::{Element, CONTENT_NS};

/// Namespace of the stream element (RFC 6120 §4.8.1).
const STREAM_NS: &str = "http://etherx.jabber.org/streams";
/// Namespace bound to the `xml` prefix (Namespaces in XML §3).
const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";
/// Default namespaces whose elements are held in [`CONTENT_NS`] (see [`crate::element`]).
const CONTENT_STREAM_NS: [&str; 3] = ["jabber:client", "jabber:server", "jabber:component:accept"];
/// The UTF-8 byte order mark, skipped at the start of a stream.
const BOM: &[u8] = b"\xEF\xBB\xBF";
/// How a CDATA section opens.
const CDATA_OPEN: &[u8] = b"<![CDATA[";
/// Buffer capacity kept when every byte was consumed but the parser was not yet asked for
/// more; more is released. A parser that returns `Ok(None)` with nothing pending frees its
/// buffer altogether (see [`StreamParser::next_event`]).
const IDLE_CAPACITY: usize = 16 * 1024;

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
    /// Defaults for an authenticated server-to-server stream: peers relay for many users.
    pub const S2S: Limits = Limits {
        max_stanza_bytes: 512 * 1024,
        max_depth: 32,
        max_attrs: 64,
        max_elements: 20_000,
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
    /// The stream element is not in the streams namespace (RFC 6120 §4.9.3.10): a wrong
    /// namespace, or its prefix bound to none. Namespace errors inside the stream (an
    /// undeclared prefix, a bad prefix declaration) break the well-formedness rules of
    /// XML-NAMES and are [`XmlError::NotWellFormed`] (§4.9.3.13).
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
///
/// Feed it bytes, then call [`next_event`](Self::next_event) until it returns `Ok(None)`. After
/// an error it is dead: every later call returns that error, until [`reset`](Self::reset).
#[derive(Debug)]
pub struct StreamParser {
    limits: Limits,
    /// Received bytes; `buf[pos..]` is not processed yet.
    buf: Vec<u8>,
    pos: usize,
    /// Stream offset of `buf[0]` (wrapping: only differences are used).
    base: usize,
    scan: Scan,
    /// True until the first token: only there may a BOM or the XML declaration appear.
    at_start: bool,
    tree: Tree,
    failed: Option<XmlError>,
}

impl StreamParser {
    /// A parser expecting a stream header first.
    pub fn new(limits: Limits) -> Self {
        StreamParser {
            limits,
            buf: Vec::new(),
            pos: 0,
            base: 0,
            scan: Scan::default(),
            at_start: true,
            tree: Tree::default(),
            failed: None,
        }
    }

    /// Changes the limits (e.g. from pre-auth to authenticated).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Appends bytes read from the network.
    pub fn feed(&mut self, data: &[u8]) {
        if self.failed.is_none() {
            self.compact();
            self.buf.extend_from_slice(data);
        }
    }

    /// Bytes received but not yet consumed (at most the unfinished token).
    pub fn buffered_len(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The next complete event, `Ok(None)` when more bytes are needed.
    pub fn next_event(&mut self) -> Result<Option<Event>, XmlError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        match self.advance() {
            Ok(None) => {
                self.compact();
                if self.buf.is_empty() {
                    // Waiting for input with nothing pending is where an idle connection
                    // spends its life: it holds no buffer there (the next read allocates one
                    // of the size it needs, freed again once parsed).
                    self.buf = Vec::new();
                }
                Ok(None)
            }
            Ok(event) => Ok(event),
            Err(err) => {
                *self = StreamParser {
                    failed: Some(err.clone()),
                    ..StreamParser::new(self.limits)
                };
                Err(err)
            }
        }
    }

    /// Whether the stream header was read and the stream is neither closed nor failed.
    pub fn is_open(&self) -> bool {
        self.failed.is_none() && self.tree.phase == Phase::Open
    }

    /// Whether the stream is open with nothing of a stanza pending: every byte fed so far
    /// consumed and no element open. A message framing (RFC 7395 §3.3.3: each message holds
    /// complete elements) checks this at the end of each message.
    pub fn between_stanzas(&self) -> bool {
        self.is_open() && self.tree.stack.is_empty() && self.buffered_len() == 0
    }

    /// Forgets everything: buffered bytes and state; the next event must be a stream header.
    pub fn reset(&mut self) {
        *self = StreamParser::new(self.limits);
    }

    /// Processes complete tokens until one yields an event or more bytes are needed.
    fn advance(&mut self) -> Result<Option<Event>, XmlError> {
        loop {
            let Some((kind, len)) = self.next_token()? else {
                let pending = if self.tree.stack.is_empty() {
                    self.buffered_len()
                } else {
                    (self.base.wrapping_add(self.buf.len())).wrapping_sub(self.tree.stanza_start)
                };
                if pending > self.limits.max_stanza_bytes {
                    return Err(too_large());
                }
                return Ok(None);
            };
            let start = self.pos;
            self.pos += len;
            self.scan = Scan::default();
            self.at_start = false;
            let token = self.buf.get(start..self.pos).unwrap_or_default();
            let offset = self.base.wrapping_add(start);
            if let Some(event) = self.tree.token(kind, token, offset, self.limits)? {
                return Ok(Some(event));
            }
        }
    }

    /// The kind and length of the complete token at `pos`, if it has arrived.
    fn next_token(&mut self) -> Result<Option<(Token, usize)>, XmlError> {
        if self.base == 0 && self.pos == 0 {
            // The very first bytes of the stream may be a UTF-8 byte order mark.
            let rest = self.buf.get(self.pos..).unwrap_or_default();
            if rest.starts_with(BOM) {
                self.pos += BOM.len();
            } else if !rest.is_empty() && BOM.starts_with(rest) {
                return Ok(None);
            } else if rest.starts_with(b"\xFE\xFF") || rest.starts_with(b"\xFF\xFE") {
                return Err(XmlError::UnsupportedEncoding);
            }
        }
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let Some(&first) = rest.first() else {
            return Ok(None);
        };
        if first != b'<' {
            if !self.tree.stack.is_empty() {
                return Ok(self.scan.find(rest, 0, b'<', b"").map(|n| (Token::Text, n)));
            }
            // Between stanzas only whitespace may appear (keepalives, RFC 6120 §4.6.1): it is
            // dropped as soon as it arrives, anything else is refused at once.
            let n = rest
                .iter()
                .position(|&b| !is_space(b))
                .unwrap_or(rest.len());
            return match rest.get(n) {
                None | Some(b'<') => Ok(Some((Token::Text, n))),
                Some(_) => Err(not_well_formed("character data outside a stanza")),
            };
        }
        let found = match rest.get(1) {
            None => None,
            Some(b'!') => self.scan.bang(rest)?.map(|n| (Token::CData, n)),
            Some(b'?') if self.at_start => self
                .scan
                .find(rest, 3, b'>', b"?")
                .map(|n| (Token::Decl, n + 1)),
            Some(b'?') => return Err(XmlError::Restricted("processing instruction")),
            Some(_) => self.scan.tag(rest)?.map(|n| (Token::Tag, n)),
        };
        Ok(found)
    }

    /// Drops consumed bytes when that costs no more than consuming them did.
    fn compact(&mut self) {
        if self.pos == self.buf.len() {
            self.buf.clear();
            if self.buf.capacity() > IDLE_CAPACITY {
                self.buf.shrink_to(IDLE_CAPACITY);
            }
        } else if self.pos >= self.buf.len() - self.pos {
            self.buf.drain(..self.pos);
        } else {
            return;
        }
        self.base = self.base.wrapping_add(self.pos);
        self.pos = 0;
    }
}

/// The first top-level element of `xml`, parsed as content of a `jabber:client` stream under
/// `limits`: XML we serialized ourselves ([`Element::to_bytes`]) read back from storage or a
/// queue. `None` if `xml` does not start with a complete, well-formed element.
pub fn first_element(xml: &[u8], limits: Limits) -> Option<Element> {
    const HEADER: &[u8] =
        b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
    let mut parser = StreamParser::new(limits);
    parser.feed(HEADER);
    parser.feed(xml);
    loop {
        match parser.next_event() {
            Ok(Some(Event::StreamOpen(_))) => continue,
            Ok(Some(Event::Element(el))) => return Some(el),
            _ => return None,
        }
    }
}

/// What kind of token the scanner found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// Character data up to the next `<`.
    Text,
    /// A start, end or empty-element tag.
    Tag,
    /// `<![CDATA[...]]>`.
    CData,
    /// `<?xml ...?>` at the start of the stream.
    Decl,
}

/// How far the scanner got through the unfinished token, so no byte is scanned twice.
#[derive(Debug, Default)]
struct Scan {
    /// Offset (from the token start) where the search resumes.
    scanned: usize,
    /// The quote of the attribute value the scanner is in.
    quote: Option<u8>,
}

impl Scan {
    /// Length of `rest` up to the first `byte` at or after `min` that is preceded by `before`
    /// (`byte` itself excluded); `None` if it has not arrived.
    fn find(&mut self, rest: &[u8], min: usize, byte: u8, before: &[u8]) -> Option<usize> {
        let mut from = self.scanned.max(min);
        while let Some(at) = rest
            .get(from..)
            .and_then(|tail| tail.iter().position(|&b| b == byte))
            .map(|i| from + i)
        {
            if rest.get(..at).is_some_and(|head| head.ends_with(before)) {
                return Some(at);
            }
            from = at + 1;
        }
        self.scanned = rest.len();
        None
    }

    /// Scans `<!...`: only a CDATA section is allowed.
    fn bang(&mut self, rest: &[u8]) -> Result<Option<usize>, XmlError> {
        match rest.get(2) {
            None => Ok(None),
            Some(b'-') => Err(XmlError::Restricted("comment")),
            Some(b'[') => {
                let n = rest.len().min(CDATA_OPEN.len());
                if rest.get(..n) != CDATA_OPEN.get(..n) {
                    return Err(not_well_formed("bad markup declaration"));
                }
                let min = CDATA_OPEN.len() + 2;
                Ok(self.find(rest, min, b'>', b"]]").map(|at| at + 1))
            }
            Some(b'D') => Err(XmlError::Restricted("document type declaration")),
            Some(_) => Err(not_well_formed("bad markup declaration")),
        }
    }

    /// Scans a tag up to the `>` outside quoted attribute values.
    fn tag(&mut self, rest: &[u8]) -> Result<Option<usize>, XmlError> {
        let mut from = self.scanned.max(1);
        loop {
            let tail = rest.get(from..).unwrap_or_default();
            let found = match self.quote {
                Some(q) => tail.iter().position(|&b| b == q),
                None => tail
                    .iter()
                    .position(|&b| matches!(b, b'>' | b'"' | b'\'' | b'<')),
            };
            let Some((i, &b)) = found.and_then(|i| Some((i, tail.get(i)?))) else {
                self.scanned = rest.len();
                return Ok(None);
            };
            match (self.quote, b) {
                (Some(_), _) => self.quote = None,
                (None, b'>') => return Ok(Some(from + i + 1)),
                (None, b'<') => return Err(not_well_formed("'<' inside a tag")),
                (None, q) => self.quote = Some(q),
            }
            from += i + 1;
        }
    }
}

/// Where the stream is.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the stream header.
    #[default]
    Prolog,
    /// Inside `<stream:stream>`.
    Open,
    /// After `</stream:stream>`.
    Closed,
}

/// An element of the current stanza whose end tag has not arrived.
#[derive(Debug)]
struct Frame {
    el: Element,
    /// The prefix of its start tag, which the end tag must repeat.
    prefix: Option<Box<str>>,
    /// Length of the namespace scope stack before its declarations.
    scope_mark: usize,
}

/// Document state: namespaces in scope and the stanza being built.
#[derive(Debug, Default)]
struct Tree {
    phase: Phase,
    /// Namespace bindings in scope as (prefix, uri), `""` for the default namespace; the
    /// stream's own stay at the bottom for the whole stream.
    scopes: Vec<(String, String)>,
    /// Qualified name of the stream element, which `</stream:stream>` must repeat.
    stream_qname: String,
    /// The stream's default namespace, when its elements are held in [`CONTENT_NS`].
    content_ns: Option<String>,
    /// Open elements of the current stanza, outermost first.
    stack: Vec<Frame>,
    /// Stream offset where the current stanza began.
    stanza_start: usize,
    /// Elements seen so far in the current stanza.
    elements: usize,
}

impl Tree {
    /// Processes one complete token starting at stream offset `offset`.
    fn token(
        &mut self,
        kind: Token,
        token: &[u8],
        offset: usize,
        limits: Limits,
    ) -> Result<Option<Event>, XmlError> {
        let size = match self.stack.is_empty() {
            true => token.len(),
            false => offset
                .wrapping_add(token.len())
                .wrapping_sub(self.stanza_start),
        };
        if size > limits.max_stanza_bytes {
            return Err(too_large());
        }
        let inner = |skip_start: usize, skip_end: usize| {
            let end = token.len().saturating_sub(skip_end);
            utf8(token.get(skip_start..end).unwrap_or_default())
        };
        match kind {
            Token::Text => {
                // Outside stanzas the scanner let only whitespace through, which is dropped.
                if let Some(frame) = self.stack.last_mut() {
                    frame.el.push_text(decode_text(utf8(token)?)?);
                }
            }
            Token::CData => match self.stack.last_mut() {
                Some(frame) => {
                    let text = inner(CDATA_OPEN.len(), 3)?;
                    check_chars(text)?;
                    frame.el.push_text(normalize_newlines(text));
                }
                None => return Err(not_well_formed("CDATA section outside a stanza")),
            },
            Token::Decl => xml_declaration(inner(2, 2)?)?,
            Token::Tag => {
                let tag = inner(1, 1)?;
                if let Some(name) = tag.strip_prefix('/') {
                    return self.end_tag(name.trim_end_matches([' ', '\t', '\r', '\n']));
                }
                let (tag, empty) = tag.strip_suffix('/').map_or((tag, false), |t| (t, true));
                return self.start_tag(tag, empty, offset, limits);
            }
        }
        Ok(None)
    }

    /// Processes a start tag (`tag` is what lies between `<` and `>` or `/>`).
    fn start_tag(
        &mut self,
        tag: &str,
        empty: bool,
        offset: usize,
        limits: Limits,
    ) -> Result<Option<Event>, XmlError> {
        let name_end = tag.bytes().position(is_space).unwrap_or(tag.len());
        let qname = tag.get(..name_end).unwrap_or_default();
        let (prefix, local) = split_qname(qname)?;
        let scope_mark = self.scopes.len();
        let mut attrs = Vec::new();
        for (i, attr) in Attributes::new(tag, name_end).enumerate() {
            if i >= limits.max_attrs {
                return Err(XmlError::LimitExceeded("too many attributes"));
            }
            let attr = attr.map_err(|e| not_well_formed(format!("bad attribute: {e}")))?;
            let key = utf8(attr.key.as_ref())?;
            let value = decode_attr(utf8(&attr.value)?)?;
            split_qname(key)?;
            if key == "xmlns" {
                self.scopes.push((String::new(), value));
            } else if let Some(prefix) = key.strip_prefix("xmlns:") {
                if value.is_empty() || prefix == "xmlns" || (prefix == "xml") != (value == XML_NS) {
                    return Err(not_well_formed(format!(
                        "bad declaration of prefix '{}'",
                        clip(prefix)
                    )));
                }
                self.scopes.push((prefix.to_owned(), value));
            } else {
                attrs.push((key.to_owned(), value));
            }
        }
        // A prefixed attribute is kept by its expanded name, `{namespace}local` (see
        // `Element::attr`): its prefix's declaration is not kept, and the writer declares one
        // of its own. (`xml:` is predefined and stays as it is.)
        for (key, _) in &mut attrs {
            if let Some((prefix, local)) = key.split_once(':') {
                let ns = self.resolve(Some(prefix))?;
                if prefix != "xml" {
                    *key = format!("{{{ns}}}{local}");
                }
            }
        }
        // XML-NAMES "Attributes Unique": also by expanded name.
        for (i, (key, _)) in attrs.iter().enumerate() {
            if key.starts_with('{') && attrs.iter().skip(i + 1).any(|(k, _)| k == key) {
                return Err(not_well_formed("attribute repeated under two prefixes"));
            }
        }
        let resolved = match (self.resolve(prefix), &self.phase) {
            // A stream header whose prefix is bound to nothing has no streams namespace.
            (Err(XmlError::NotWellFormed(why)), Phase::Prolog) => {
                return Err(XmlError::InvalidNamespace(why))
            }
            (r, _) => r?,
        };
        let ns = match (resolved, &self.content_ns) {
            (ns, Some(content)) if content == ns => CONTENT_NS.to_owned(),
            (ns, _) => ns.to_owned(),
        };
        match self.phase {
            Phase::Prolog => self.stream_header(qname, prefix, local, &ns, empty, attrs),
            Phase::Closed => Err(not_well_formed("element after the stream was closed")),
            Phase::Open => {
                if self.stack.is_empty() {
                    self.stanza_start = offset;
                    self.elements = 0;
                }
                self.elements += 1;
                if self.elements > limits.max_elements {
                    return Err(XmlError::LimitExceeded("too many elements"));
                }
                if self.stack.len() >= limits.max_depth {
                    return Err(XmlError::LimitExceeded("elements nested too deep"));
                }
                // Duplicates were refused by `Attributes`.
                let el = Element::with_attrs(local, ns, attrs);
                if empty {
                    self.scopes.truncate(scope_mark);
                    return Ok(self.close(el));
                }
                self.stack.push(Frame {
                    el,
                    prefix: prefix.map(Box::from),
                    scope_mark,
                });
                Ok(None)
            }
        }
    }

    /// Checks the stream header (RFC 6120 §4.7) and opens the stream.
    fn stream_header(
        &mut self,
        qname: &str,
        prefix: Option<&str>,
        local: &str,
        ns: &str,
        empty: bool,
        attrs: Vec<(String, String)>,
    ) -> Result<Option<Event>, XmlError> {
        if local != "stream" {
            return Err(XmlError::BadFormat(format!(
                "root element is '{}', not stream",
                clip(qname)
            )));
        }
        if ns != STREAM_NS {
            return Err(XmlError::InvalidNamespace(format!(
                "stream namespace is '{}'",
                clip(ns)
            )));
        }
        if empty {
            return Err(XmlError::BadFormat("empty stream element".into()));
        }
        let default_ns = self.resolve(None)?.to_owned();
        let prefixes = self
            .scopes
            .iter()
            .filter(|(p, _)| !p.is_empty() && Some(p.as_str()) != prefix)
            .cloned()
            .collect();
        self.content_ns = CONTENT_STREAM_NS
            .contains(&default_ns.as_str())
            .then(|| default_ns.clone());
        self.stream_qname = qname.to_owned();
        self.phase = Phase::Open;
        Ok(Some(Event::StreamOpen(StreamHeader {
            default_ns,
            prefixes,
            attrs,
        })))
    }

    /// Processes an end tag with qualified name `qname`.
    fn end_tag(&mut self, qname: &str) -> Result<Option<Event>, XmlError> {
        let Some(frame) = self.stack.pop() else {
            if self.phase == Phase::Open && qname == self.stream_qname {
                self.phase = Phase::Closed;
                self.scopes.clear();
                return Ok(Some(Event::StreamClose));
            }
            return Err(not_well_formed(format!(
                "unexpected end tag '{}'",
                clip(qname)
            )));
        };
        let local = match frame.prefix.as_deref() {
            Some(prefix) => qname.strip_prefix(prefix).and_then(|q| q.strip_prefix(':')),
            None => Some(qname),
        };
        if local != Some(frame.el.name()) {
            return Err(not_well_formed(format!(
                "end tag '{}' does not match its start tag",
                clip(qname)
            )));
        }
        self.scopes.truncate(frame.scope_mark);
        Ok(self.close(frame.el))
    }

    /// Attaches a finished element to its parent, or returns it when it is a stanza.
    fn close(&mut self, el: Element) -> Option<Event> {
        match self.stack.last_mut() {
            Some(parent) => {
                parent.el.push_child(el);
                None
            }
            None => Some(Event::Element(el)),
        }
    }

    /// The namespace bound to `prefix` (`None`: the default namespace, `""` if none).
    fn resolve(&self, prefix: Option<&str>) -> Result<&str, XmlError> {
        let lookup = |p: &str| {
            self.scopes
                .iter()
                .rev()
                .find(|(k, _)| k == p)
                .map(|(_, v)| v.as_str())
        };
        match prefix {
            None => Ok(lookup("").unwrap_or_default()),
            Some("xml") => Ok(XML_NS),
            // XML-NAMES "Prefix Declared" is a well-formedness constraint.
            Some(p) => {
                lookup(p).ok_or_else(|| not_well_formed(format!("undeclared prefix '{}'", clip(p))))
            }
        }
    }
}

/// Checks an XML declaration (`decl` is what lies between `<?` and `?>`): only UTF-8.
fn xml_declaration(decl: &str) -> Result<(), XmlError> {
    let Some(rest) = decl.strip_prefix("xml") else {
        return Err(XmlError::Restricted("processing instruction"));
    };
    if rest.bytes().next().is_some_and(|b| !is_space(b)) {
        return Err(XmlError::Restricted("processing instruction"));
    }
    let mut version = false;
    for attr in Attributes::new(decl, 3) {
        let attr = attr.map_err(|e| not_well_formed(format!("bad XML declaration: {e}")))?;
        match (attr.key.as_ref(), attr.value.as_ref()) {
            (b"version", v) => version = v.starts_with(b"1."),
            (b"encoding", v) if v.eq_ignore_ascii_case(b"UTF-8") => {}
            (b"encoding", _) => return Err(XmlError::UnsupportedEncoding),
            (b"standalone", b"yes" | b"no") => {}
            _ => return Err(not_well_formed("bad XML declaration")),
        }
    }
    match version {
        true => Ok(()),
        false => Err(not_well_formed("XML declaration without version 1.x")),
    }
}

/// Decodes character data: line ends normalized, references resolved.
fn decode_text(raw: &str) -> Result<String, XmlError> {
    check_chars(raw)?;
    unescape(normalize_newlines(raw))
}

/// Decodes an attribute value: whitespace normalized (XML 1.0 §3.3.3), references resolved.
fn decode_attr(raw: &str) -> Result<String, XmlError> {
    if raw.contains('<') {
        return Err(not_well_formed("'<' in an attribute value"));
    }
    check_chars(raw)?;
    let raw = match raw.contains(['\t', '\n', '\r']) {
        true => Cow::Owned(raw.replace("\r\n", " ").replace(['\t', '\n', '\r'], " ")),
        false => Cow::Borrowed(raw),
    };
    unescape(raw)
}

/// Line-end normalization (XML 1.0 §2.11): `\r\n` and lone `\r` become `\n`.
fn normalize_newlines(s: &str) -> Cow<'_, str> {
    match s.contains('\r') {
        true => Cow::Owned(s.replace("\r\n", "\n").replace('\r', "\n")),
        false => Cow::Borrowed(s),
    }
}

/// Resolves character and predefined entity references; anything else is refused.
fn unescape(s: Cow<'_, str>) -> Result<String, XmlError> {
    let Some((head, mut rest)) = s.split_once('&') else {
        return Ok(s.into_owned());
    };
    let mut out = String::with_capacity(s.len());
    out.push_str(head);
    loop {
        let (name, tail) = rest
            .split_once(';')
            .ok_or_else(|| not_well_formed("unterminated reference"))?;
        out.push(resolve_reference(name)?);
        match tail.split_once('&') {
            Some((text, more)) => {
                out.push_str(text);
                rest = more;
            }
            None => {
                out.push_str(tail);
                return Ok(out);
            }
        }
    }
}

/// The character a reference `&name;` stands for.
fn resolve_reference(name: &str) -> Result<char, XmlError> {
    let c = match name {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "apos" => '\'',
        "quot" => '"',
        _ => {
            let Some(number) = name.strip_prefix('#') else {
                return Err(match is_ncname(name) {
                    true => XmlError::Restricted("entity reference"),
                    false => not_well_formed("bad reference"),
                });
            };
            let (digits, radix) = match number.strip_prefix('x') {
                Some(hex) => (hex, 16),
                None => (number, 10),
            };
            let digits_ok = !digits.is_empty() && digits.chars().all(|c| c.is_digit(radix));
            return u32::from_str_radix(digits, radix)
                .ok()
                .filter(|_| digits_ok)
                .and_then(char::from_u32)
                .filter(|&c| is_xml_char(c))
                .ok_or_else(|| not_well_formed("invalid character reference"));
        }
    };
    Ok(c)
}

/// Rejects characters XML 1.0 §2.2 does not allow (controls, U+FFFE, U+FFFF).
fn check_chars(s: &str) -> Result<(), XmlError> {
    let bytes = s.as_bytes();
    let bad = bytes.iter().enumerate().any(|(i, &b)| match b {
        b'\t' | b'\n' | b'\r' => false,
        0..=0x1F => true,
        0xEF => matches!(bytes.get(i + 1..i + 3), Some([0xBF, 0xBE | 0xBF])),
        _ => false,
    });
    match bad {
        true => Err(not_well_formed("character not allowed in XML")),
        false => Ok(()),
    }
}

/// XML 1.0 §2.2 `Char`.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// XML 1.0 §2.3 `S`.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// XML 1.0 §2.3 `NameStartChar`, without `:`.
fn is_name_start(c: char) -> bool {
    matches!(c,
        'A'..='Z' | 'a'..='z' | '_' | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}'
        | '\u{F8}'..='\u{2FF}' | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}'
        | '\u{200C}'..='\u{200D}' | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}'
        | '\u{3001}'..='\u{D7FF}' | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}'
        | '\u{10000}'..='\u{EFFFF}')
}

/// Namespaces in XML §3 `NCName`: an XML name without `:`.
fn is_ncname(s: &str) -> bool {
    let ascii_name = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.');
    if s.bytes().all(ascii_name) {
        return s
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    }
    let mut chars = s.chars();
    chars.next().is_some_and(is_name_start)
        && chars.all(|c| {
            is_name_start(c)
                || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
        })
}

/// Splits a qualified name into prefix and local part, checking both.
fn split_qname(qname: &str) -> Result<(Option<&str>, &str), XmlError> {
    let (prefix, local) = match qname.split_once(':') {
        Some((prefix, local)) => (Some(prefix), local),
        None => (None, qname),
    };
    match prefix.is_none_or(is_ncname) && is_ncname(local) {
        true => Ok((prefix, local)),
        false => Err(not_well_formed(format!("invalid name '{}'", clip(qname)))),
    }
}

/// `bytes` as UTF-8, or `not-well-formed` (RFC 6120 §11.6).
fn utf8(bytes: &[u8]) -> Result<&str, XmlError> {
    std::str::from_utf8(bytes).map_err(|_| not_well_formed("invalid UTF-8"))
}

/// At most the first 40 characters of `s`, for error messages.
fn clip(s: &str) -> &str {
    s.char_indices()
        .nth(40)
        .and_then(|(i, _)| s.get(..i))
        .unwrap_or(s)
}

/// A `not-well-formed` error.
fn not_well_formed(msg: impl Into<String>) -> XmlError {
    XmlError::NotWellFormed(msg.into())
}

/// The error for a stanza (or header) over `max_stanza_bytes`.
fn too_large() -> XmlError {
    XmlError::LimitExceeded("stanza too large")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `is_open` from the header to the close; `between_stanzas` only where nothing of a
    /// stanza is pending (no open element, no partial token).
    #[test]
    fn open_and_between_stanzas() {
        let mut p = StreamParser::new(Limits::PRE_AUTH);
        assert!(!p.is_open() && !p.between_stanzas());
        p.feed(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>");
        assert!(matches!(p.next_event(), Ok(Some(Event::StreamOpen(_)))));
        assert!(p.is_open() && p.between_stanzas());
        p.feed(b"<message><body>");
        assert_eq!(p.next_event(), Ok(None));
        assert!(p.is_open() && !p.between_stanzas());
        p.feed(b"x</body></message><pres");
        assert!(matches!(p.next_event(), Ok(Some(Event::Element(_)))));
        assert_eq!(p.next_event(), Ok(None));
        assert!(!p.between_stanzas());
        p.feed(b"ence/> </stream:stream>");
        assert!(matches!(p.next_event(), Ok(Some(Event::Element(_)))));
        // The close is fed but not read yet.
        assert!(!p.between_stanzas());
        assert_eq!(p.next_event(), Ok(Some(Event::StreamClose)));
        assert!(!p.is_open() && !p.between_stanzas());
    }

    /// A prefixed attribute is kept by its namespace, and written with a prefix declared for
    /// it: what the server sends on stays namespace-well-formed (RFC 6120 §11.2), and reads
    /// back as it came; the same name under two prefixes is one attribute twice.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn attributes_in_a_namespace_round_trip() {
        let xml = b"<message xmlns:x='urn:x' xmlns:y='urn:y'><body x:a='1' y:a='2' \
                    xml:lang='de'>hi</body></message>";
        let el = first_element(xml, Limits::C2S).unwrap();
        let body = el.get_child("body", CONTENT_NS).unwrap();
        assert_eq!(body.attr("{urn:x}a"), Some("1"));
        assert_eq!(body.attr("{urn:y}a"), Some("2"));
        assert_eq!(body.attr("xml:lang"), Some("de"));
        let out = el.to_string();
        assert!(
            !out.contains(" x:") && out.contains("xmlns:a0=\"urn:x\""),
            "{out}"
        );
        assert_eq!(first_element(out.as_bytes(), Limits::C2S), Some(el));
        let twice = b"<message xmlns:x='urn:x' xmlns:z='urn:x'><body x:a='1' z:a='2'/></message>";
        assert_eq!(first_element(twice, Limits::C2S), None);
    }

    #[test]
    fn references() {
        let ok = [
            ("lt", '<'),
            ("quot", '"'),
            ("#65", 'A'),
            ("#x263A", '\u{263A}'),
            ("#x9", '\t'),
        ];
        for (name, c) in ok {
            assert_eq!(resolve_reference(name), Ok(c), "{name}");
        }
        for name in [
            "#0",
            "#xD800",
            "#x1F",
            "#xFFFF",
            "#x110000",
            "#",
            "#x",
            "#-1",
            "#+1",
            "#X41",
            "#99999999999",
            " lt",
            "",
        ] {
            assert_eq!(
                resolve_reference(name).map_err(|e| e.condition()),
                Err("not-well-formed"),
                "{name}"
            );
        }
        assert_eq!(
            resolve_reference("nbsp"),
            Err(XmlError::Restricted("entity reference"))
        );
        assert_eq!(unescape("a&amp;b&lt;&#x41;".into()).as_deref(), Ok("a&b<A"));
    }

    #[test]
    fn names() {
        for name in ["a", "_x", "body", "a-b.c1", "\u{e9}t\u{e9}", "\u{4E2D}"] {
            assert!(is_ncname(name), "{name}");
        }
        for name in ["", "1a", "-a", ".a", "a b", "a:b", "a$", "\u{D7}"] {
            assert!(!is_ncname(name), "{name}");
        }
        assert_eq!(split_qname("db:result"), Ok((Some("db"), "result")));
        assert!(split_qname("a:b:c").is_err());
        assert!(split_qname(":a").is_err());
    }

    #[test]
    fn normalization() {
        assert_eq!(decode_text("a\r\nb\rc").as_deref(), Ok("a\nb\nc"));
        assert_eq!(decode_attr("a\r\nb\tc\nd&#xA;").as_deref(), Ok("a b c d\n"));
    }

    #[test]
    fn scanner_resumes_where_it_stopped() {
        let mut scan = Scan::default();
        assert_eq!(scan.tag(b"<a b='x>"), Ok(None));
        assert_eq!((scan.scanned, scan.quote), (8, Some(b'\'')));
        assert_eq!(scan.tag(b"<a b='x>y'/>"), Ok(Some(12)));
        let mut scan = Scan::default();
        assert_eq!(scan.bang(b"<![CDATA[a]"), Ok(None));
        assert_eq!(scan.bang(b"<![CDATA[a]]>"), Ok(Some(13)));
    }

    #[test]
    fn first_element_reads_back_what_was_written() {
        let el = Element::new("message", CONTENT_NS)
            .with_attr("to", "a@b")
            .with_child(Element::new("body", CONTENT_NS).with_text("x < y"));
        assert_eq!(first_element(&el.to_bytes(), Limits::C2S), Some(el));
        assert_eq!(first_element(b"<a>", Limits::C2S), None);
        assert_eq!(first_element(b"not xml", Limits::C2S), None);
        let tight = Limits {
            max_depth: 1,
            ..Limits::C2S
        };
        assert_eq!(first_element(b"<a><b/></a>", tight), None);
    }
}
