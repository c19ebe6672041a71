//! XEP-0388 Extensible SASL Profile (SASL2), the receiving side's wire: the
//! `<authentication/>` feature (§2.1), the `<authenticate/>` request with its initial
//! response and `<user-agent/>` (§2.2, §2.3), `<success/>` with the authorization
//! identifier (§2.6) and `<failure/>` with an RFC 6120 condition (§2.7).
//!
//! The exchange between request and outcome (challenges, responses, abort) is
//! [`super::sasl::Exchange`] in this namespace: SASL2's `<challenge/>` and `<response/>`
//! have the shape of RFC 6120's. Unlike RFC 6120, success does not restart the stream, and
//! the request carries the inline features of other extensions (Bind2, XEP-0198 resumption,
//! FAST), which stay children of [`Authenticate`] for their roles to read.

use base64::Engine;
use rookery_proto::ns;
use rookery_xml::Element;

use super::sasl;

/// The SASL2 namespace.
pub const NS: &str = "urn:xmpp:sasl:2";

/// The longest `<user-agent id=…/>`, `<software/>` or `<device/>` text kept: XEP-0388 §2.3
/// asks for a UUID-like id; anything much longer is not a device name but a way to make the
/// server store junk.
pub const MAX_USER_AGENT_TEXT: usize = 256;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The client's `<user-agent/>` (§2.3): who is connecting, stable per installation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserAgent {
    /// The stable identifier of this installation (`id`).
    pub id: Option<String>,
    /// `<software/>`: the client's name.
    pub software: Option<String>,
    /// `<device/>`: the device's name.
    pub device: Option<String>,
}

/// A parsed `<authenticate/>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Authenticate {
    /// The mechanism asked for.
    pub mechanism: String,
    /// The decoded initial response: `None` when absent, empty for `=`.
    pub initial_response: Option<Vec<u8>>,
    /// The user agent, when given.
    pub user_agent: Option<UserAgent>,
    /// The other children (inline requests of other extensions), in order.
    pub inline: Vec<Element>,
}

/// Whether `el` is a SASL2 `<authenticate/>`.
pub fn is_authenticate(el: &Element) -> bool {
    el.is("authenticate", NS)
}

/// Parses an `<authenticate/>`; the SASL condition for a malformed one (no mechanism,
/// bad base64, an over-long or empty user-agent id).
pub fn parse_authenticate(el: &Element) -> Result<Authenticate, &'static str> {
    let mechanism = el
        .attr("mechanism")
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .ok_or("malformed-request")?
        .to_string();
    let mut initial_response = None;
    let mut user_agent = None;
    let mut inline = Vec::new();
    for child in el.children() {
        if child.is("initial-response", NS) {
            if initial_response.is_some() {
                return Err("malformed-request");
            }
            initial_response = Some(sasl::decode(child)?);
        } else if child.is("user-agent", NS) {
            if user_agent.is_some() {
                return Err("malformed-request");
            }
            user_agent = Some(parse_user_agent(child)?);
        } else {
            inline.push(child.clone());
        }
    }
    Ok(Authenticate {
        mechanism,
        initial_response,
        user_agent,
        inline,
    })
}

fn parse_user_agent(el: &Element) -> Result<UserAgent, &'static str> {
    let text = |v: Option<String>| -> Result<Option<String>, &'static str> {
        match v.map(|t| t.trim().to_string()) {
            Some(t) if t.len() > MAX_USER_AGENT_TEXT => Err("malformed-request"),
            Some(t) if t.is_empty() => Ok(None),
            other => Ok(other),
        }
    };
    let id = match el.attr("id") {
        Some(id) if id.trim().is_empty() => return Err("malformed-request"),
        other => text(other.map(str::to_string))?,
    };
    Ok(UserAgent {
        id,
        software: text(el.child_text("software", NS))?,
        device: text(el.child_text("device", NS))?,
    })
}

/// The `<authentication/>` feature listing `mechanisms`, with the inline features of other
/// extensions (§2.1, §4), if any.
pub fn feature<'a>(mechanisms: impl IntoIterator<Item = &'a str>, inline: Vec<Element>) -> Element {
    let mut f = Element::new("authentication", NS);
    for name in mechanisms {
        f.push_child(Element::new("mechanism", NS).with_text(name));
    }
    if !inline.is_empty() {
        let mut i = Element::new("inline", NS);
        for el in inline {
            i.push_child(el);
        }
        f.push_child(i);
    }
    f
}

/// `<success/>` (§2.6): the mechanism's additional data, the authorization identifier the
/// stream now speaks as (bare, or full once a resource is bound), then what inline features
/// answered.
pub fn success(
    additional_data: Option<&[u8]>,
    authorization_identifier: &str,
    inline: Vec<Element>,
) -> Element {
    let mut s = Element::new("success", NS);
    if let Some(d) = additional_data {
        s.push_child(Element::new("additional-data", NS).with_text(B64.encode(d)));
    }
    s.push_child(Element::new("authorization-identifier", NS).with_text(authorization_identifier));
    for el in inline {
        s.push_child(el);
    }
    s
}

/// `<failure/>` (§2.7): an RFC 6120 §6.5 condition, with an optional text.
pub fn failure(condition: &str, text: Option<&str>) -> Element {
    let mut f = Element::new("failure", NS).with_child(Element::new(condition, ns::SASL));
    if let Some(t) = text {
        f.push_child(Element::new("text", NS).with_text(t));
    }
    f
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn authenticate(children: Vec<Element>) -> Element {
        let mut a = Element::new("authenticate", NS).with_attr("mechanism", "PLAIN");
        for c in children {
            a.push_child(c);
        }
        a
    }

    #[test]
    fn parses_authenticate() {
        let a = authenticate(vec![
            Element::new("initial-response", NS).with_text("YQ=="),
            Element::new("user-agent", NS)
                .with_attr("id", "d4565fa7")
                .with_child(Element::new("software", NS).with_text("App"))
                .with_child(Element::new("device", NS).with_text(" Phone ")),
            Element::new("bind", "urn:xmpp:bind:0"),
        ]);
        let p = parse_authenticate(&a).unwrap();
        assert_eq!(p.mechanism, "PLAIN");
        assert_eq!(p.initial_response, Some(b"a".to_vec()));
        let ua = p.user_agent.unwrap();
        assert_eq!(ua.id.as_deref(), Some("d4565fa7"));
        assert_eq!(ua.software.as_deref(), Some("App"));
        assert_eq!(ua.device.as_deref(), Some("Phone"));
        assert_eq!(p.inline.len(), 1);

        let p = parse_authenticate(&authenticate(vec![])).unwrap();
        assert_eq!((p.initial_response, p.user_agent), (None, None));
        let eq = authenticate(vec![Element::new("initial-response", NS).with_text("=")]);
        assert_eq!(
            parse_authenticate(&eq).unwrap().initial_response,
            Some(vec![])
        );
    }

    #[test]
    fn malformed_authenticate() {
        let no_mech = Element::new("authenticate", NS);
        assert_eq!(parse_authenticate(&no_mech), Err("malformed-request"));
        let bad = authenticate(vec![Element::new("initial-response", NS).with_text("***")]);
        assert_eq!(parse_authenticate(&bad), Err("incorrect-encoding"));
        let twice = authenticate(vec![
            Element::new("initial-response", NS).with_text("YQ=="),
            Element::new("initial-response", NS).with_text("YQ=="),
        ]);
        assert_eq!(parse_authenticate(&twice), Err("malformed-request"));
        let long = authenticate(vec![
            Element::new("user-agent", NS).with_attr("id", "x".repeat(MAX_USER_AGENT_TEXT + 1))
        ]);
        assert_eq!(parse_authenticate(&long), Err("malformed-request"));
        let empty = authenticate(vec![Element::new("user-agent", NS).with_attr("id", " ")]);
        assert_eq!(parse_authenticate(&empty), Err("malformed-request"));
    }

    #[test]
    fn outcomes() {
        let s = success(
            Some(b"v=x"),
            "a@b/c",
            vec![Element::new("bound", "urn:xmpp:bind:0")],
        );
        let names: Vec<&str> = s.children().map(Element::name).collect();
        assert_eq!(
            names,
            ["additional-data", "authorization-identifier", "bound"]
        );
        assert_eq!(s.child_text("additional-data", NS).unwrap(), "dj14");
        let f = failure("not-authorized", Some("no"));
        assert!(f.has_child("not-authorized", ns::SASL));
        assert_eq!(f.child_text("text", NS).unwrap(), "no");
        let f = feature(["PLAIN"], vec![Element::new("bind", "urn:xmpp:bind:0")]);
        assert!(f
            .get_child("inline", NS)
            .unwrap()
            .has_child("bind", "urn:xmpp:bind:0"));
    }
}
