//! The element tree every layer above the parser works with.
//!
//! Namespaces are resolved at parse time: an [`Element`] carries its namespace URI, never a
//! prefix, so code above this crate compares `(name, ns)` pairs and never sees `xmlns`
//! attributes. Attributes are unprefixed names, `xml:lang` (kept under that key), and
//! attributes in a namespace under their expanded name `{namespace}local` (the writer
//! declares a prefix for them on the element that carries them).
//!
//! Stanza-level elements are always held in the [`CONTENT_NS`] (`jabber:client`), whatever the
//! stream they came in on: the parser maps `jabber:server` and `jabber:component:accept` to it
//! and the writer writes it as the stream's default namespace. This lets one stanza travel from
//! a client stream to a server or component stream without rewriting.

use std::fmt;

/// The canonical namespace of stanzas (`message`, `presence`, `iq`) inside this server.
pub const CONTENT_NS: &str = "jabber:client";

/// A child of an [`Element`]: another element or character data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A nested element.
    Element(Element),
    /// Unescaped character data.
    Text(String),
}

/// An XML element with resolved namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    name: String,
    ns: String,
    attrs: Vec<(String, String)>,
    children: Vec<Node>,
}

impl Element {
    /// A new empty element `name` in namespace `ns`.
    pub fn new(name: impl Into<String>, ns: impl Into<String>) -> Self {
        Element {
            name: name.into(),
            ns: ns.into(),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// An element with its attributes, which the caller guarantees to be distinct; no children.
    pub(crate) fn with_attrs(
        name: impl Into<String>,
        ns: impl Into<String>,
        attrs: Vec<(String, String)>,
    ) -> Self {
        Element {
            name: name.into(),
            ns: ns.into(),
            attrs,
            children: Vec::new(),
        }
    }

    /// Builder form of [`Element::set_attr`].
    #[must_use]
    pub fn with_attr(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.set_attr(name, value);
        self
    }

    /// Builder form of [`Element::push_child`].
    #[must_use]
    pub fn with_child(mut self, child: Element) -> Self {
        self.push_child(child);
        self
    }

    /// Builder form of [`Element::push_text`].
    #[must_use]
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.push_text(text);
        self
    }

    /// Local name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Namespace URI.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// True when this element is `name` in namespace `ns`.
    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    /// Value of attribute `name`, if present.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// All attributes in document order.
    pub fn attrs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Sets (or replaces) attribute `name`.
    pub fn set_attr(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        match self.attrs.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.attrs.push((name, value)),
        }
    }

    /// Removes attribute `name`, returning its value.
    pub fn remove_attr(&mut self, name: &str) -> Option<String> {
        let pos = self.attrs.iter().position(|(k, _)| k == name)?;
        Some(self.attrs.remove(pos).1)
    }

    /// All child nodes.
    pub fn nodes(&self) -> &[Node] {
        &self.children
    }

    /// Child elements, skipping text.
    pub fn children(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// Mutable child elements, skipping text.
    pub fn children_mut(&mut self) -> impl Iterator<Item = &mut Element> {
        self.children.iter_mut().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// First child element `name` in `ns`.
    pub fn get_child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.children().find(|c| c.is(name, ns))
    }

    /// True when a child element `name` in `ns` exists.
    pub fn has_child(&self, name: &str, ns: &str) -> bool {
        self.get_child(name, ns).is_some()
    }

    /// Removes every child element `name` in `ns`; returns how many were removed.
    pub fn remove_children(&mut self, name: &str, ns: &str) -> usize {
        self.remove_children_where(|e| e.is(name, ns))
    }

    /// Removes every child element for which `unwanted` holds (text stays); returns how
    /// many were removed.
    pub fn remove_children_where(&mut self, mut unwanted: impl FnMut(&Element) -> bool) -> usize {
        let before = self.children.len();
        self.children
            .retain(|n| !matches!(n, Node::Element(e) if unwanted(e)));
        before - self.children.len()
    }

    /// Appends a child element.
    pub fn push_child(&mut self, child: Element) {
        self.children.push(Node::Element(child));
    }

    /// Appends character data (merged with a preceding text node).
    pub fn push_text(&mut self, text: impl Into<String>) {
        let text = text.into();
        if text.is_empty() {
            return;
        }
        if let Some(Node::Text(prev)) = self.children.last_mut() {
            prev.push_str(&text);
        } else {
            self.children.push(Node::Text(text));
        }
    }

    /// Concatenated character data of the direct text children.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                out.push_str(t);
            }
        }
        out
    }

    /// Text of the first child element `name` in `ns`.
    pub fn child_text(&self, name: &str, ns: &str) -> Option<String> {
        self.get_child(name, ns).map(Element::text)
    }

    /// Serializes this element as a stanza on a stream whose default namespace is
    /// [`CONTENT_NS`] (or its server/component equivalent).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        self.write_to(&mut out, CONTENT_NS);
        out
    }

    /// Writes this element into `out`, with `parent_ns` the default namespace in scope.
    /// An `xmlns` declaration is written only where the namespace changes.
    pub fn write_to(&self, out: &mut Vec<u8>, parent_ns: &str) {
        self.write_start(out, parent_ns);
        if self.children.is_empty() {
            out.extend_from_slice(b"/>");
            return;
        }
        out.push(b'>');
        self.write_children(out);
        self.write_end(out);
    }

    /// Writes this element like [`Element::write_to`], with what `inner` writes after its
    /// children (`inner` gets `out` and the default namespace in scope there): a large
    /// payload can be written straight from where it is kept, without an element tree of it
    /// in between (a whole roster, say).
    pub fn write_around(
        &self,
        out: &mut Vec<u8>,
        parent_ns: &str,
        inner: impl FnOnce(&mut Vec<u8>, &str),
    ) {
        self.write_start(out, parent_ns);
        out.push(b'>');
        self.write_children(out);
        inner(out, &self.ns);
        self.write_end(out);
    }

    /// The start tag without its closing `>` (or `/>`).
    fn write_start(&self, out: &mut Vec<u8>, parent_ns: &str) {
        out.push(b'<');
        out.extend_from_slice(self.name.as_bytes());
        if self.ns != parent_ns {
            out.extend_from_slice(b" xmlns=\"");
            escape_into(out, &self.ns, true);
            out.push(b'"');
        }
        // Prefixes for attributes in a namespace, declared here: `a0`, `a1`… by namespace.
        let mut prefixes: Vec<&str> = Vec::new();
        for (k, v) in &self.attrs {
            out.push(b' ');
            match expanded(k) {
                Some((ns, local)) => {
                    let n = match prefixes.iter().position(|p| *p == ns) {
                        Some(n) => n,
                        None => {
                            prefixes.push(ns);
                            let n = prefixes.len() - 1;
                            out.extend_from_slice(format!("xmlns:a{n}=\"").as_bytes());
                            escape_into(out, ns, true);
                            out.extend_from_slice(b"\" ");
                            n
                        }
                    };
                    out.extend_from_slice(format!("a{n}:").as_bytes());
                    out.extend_from_slice(local.as_bytes());
                }
                None => out.extend_from_slice(k.as_bytes()),
            }
            out.extend_from_slice(b"=\"");
            escape_into(out, v, true);
            out.push(b'"');
        }
    }

    fn write_children(&self, out: &mut Vec<u8>) {
        for child in &self.children {
            child.write_to(out, &self.ns);
        }
    }

    fn write_end(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"</");
        out.extend_from_slice(self.name.as_bytes());
        out.push(b'>');
    }
}

impl Node {
    /// Writes this child, with `ns` the default namespace in scope.
    fn write_to(&self, out: &mut Vec<u8>, ns: &str) {
        match self {
            Node::Element(e) => e.write_to(out, ns),
            Node::Text(t) => escape_into(out, t, false),
        }
    }
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

/// The namespace and local name of an attribute key in expanded form (`{ns}local`).
fn expanded(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix('{')?.split_once('}')
}

/// Escapes `s` for character data (`attr == false`) or a double-quoted attribute value.
///
/// Characters a parser would normalize away are written as character references, so what is
/// written parses back to `s`: `\r` everywhere (line-end normalization) and tab and line feed in
/// attribute values (attribute-value normalization, XML 1.0 §2.11 and §3.3.3). Characters
/// XML does not allow at all (the C0 controls but tab, line feed and carriage return, and
/// U+FFFE/U+FFFF: the `Char` production) are written as U+FFFD: the parser never lets them
/// in, but text the server makes from other input (an operator's announcement, say) could
/// carry them, and one would break every stream it reached (RFC 6120 §11.1).
pub fn escape_into(out: &mut Vec<u8>, s: &str, attr: bool) {
    const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();
    let bytes = s.as_bytes();
    let mut last = 0;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let (rep, len): (&[u8], usize) = match b {
            b'<' => (b"&lt;", 1),
            b'>' => (b"&gt;", 1),
            b'&' => (b"&amp;", 1),
            b'\r' => (b"&#xD;", 1),
            b'"' if attr => (b"&quot;", 1),
            b'\'' if attr => (b"&apos;", 1),
            b'\t' if attr => (b"&#x9;", 1),
            b'\n' if attr => (b"&#xA;", 1),
            b'\t' | b'\n' => {
                i += 1;
                continue;
            }
            0..=0x1f => (REPLACEMENT, 1),
            // U+FFFE and U+FFFF.
            0xef if matches!(bytes.get(i + 1..i + 3), Some([0xbf, 0xbe | 0xbf])) => {
                (REPLACEMENT, 3)
            }
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(bytes.get(last..i).unwrap_or_default());
        out.extend_from_slice(rep);
        i += len;
        last = i;
    }
    out.extend_from_slice(bytes.get(last..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_namespaces_only_where_they_change() {
        let el = Element::new("iq", CONTENT_NS)
            .with_attr("type", "get")
            .with_attr("id", "a&b\"")
            .with_child(Element::new("ping", "urn:xmpp:ping"));
        assert_eq!(
            el.to_string(),
            r#"<iq type="get" id="a&amp;b&quot;"><ping xmlns="urn:xmpp:ping"/></iq>"#
        );
    }

    #[test]
    fn escapes_text() {
        let el = Element::new("body", CONTENT_NS).with_text("1 < 2 & 3 > 'x'");
        assert_eq!(el.to_string(), "<body>1 &lt; 2 &amp; 3 &gt; 'x'</body>");
    }

    /// What `write_around` adds goes inside the element, after its children, in its
    /// namespace scope: the same bytes as the element with those children.
    #[test]
    fn write_around_matches_the_tree() {
        let q = |n: usize| {
            let mut q = Element::new("query", "urn:q").with_attr("ver", "7");
            for i in 0..n {
                q.push_child(Element::new("item", "urn:q").with_attr("jid", format!("a{i}&")));
            }
            q
        };
        let iq = Element::new("iq", CONTENT_NS).with_attr("type", "result");
        let mut out = Vec::new();
        iq.write_around(&mut out, CONTENT_NS, |out, ns| {
            q(0).write_around(out, ns, |out, ns| {
                for item in q(2).children() {
                    item.write_to(out, ns);
                }
            });
        });
        assert_eq!(out, iq.clone().with_child(q(2)).to_bytes());
    }

    /// What XML cannot carry is never written (it would end the recipient's stream).
    #[test]
    fn characters_xml_forbids_are_replaced() {
        let el = Element::new("body", CONTENT_NS)
            .with_attr("a", "x\u{1}y\u{FFFF}")
            .with_text("a\u{0}b\tc\nd\u{1f}\u{FFFE}é\u{FFFD}");
        assert_eq!(
            el.to_string(),
            "<body a=\"x\u{FFFD}y\u{FFFD}\">a\u{FFFD}b\tc\nd\u{FFFD}\u{FFFD}é\u{FFFD}</body>"
        );
    }
}
