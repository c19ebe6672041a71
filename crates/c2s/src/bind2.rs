//! XEP-0386 Bind 2, inline in XEP-0388 SASL2: the `<bind/>` inline feature with the
//! features that may be enabled in the same round trip (§3: XEP-0280 carbons, XEP-0352
//! client state, XEP-0198 stream management), the request (§4: `<tag/>` and the inline
//! elements) and the resource the server picks (§4.1).
//!
//! The resource is derived from the client's `<user-agent id=…/>` (XEP-0388 §2.3): the tag
//! (or `rookery`), a dot and a short hash of the account and the id. So a device gets the
//! same resource on every connection, which the other party's view of the conversation (and
//! the device's own old session, replaced on conflict) relies on, and the id itself never
//! shows in a JID. Without an id the suffix is random.

use rookery_jid::{BareJid, Jid};
use rookery_proto::ns;
use rookery_sasl::ScramHash;
use rookery_xml::Element;

use crate::{csi, sm};

/// The Bind2 namespace.
pub const NS: &str = "urn:xmpp:bind:0";

/// The longest `<tag/>` kept in a resource.
pub const MAX_TAG: usize = 64;

/// The `<bind/>` inline feature of the SASL2 `<authentication/>`, with what may be enabled
/// inline (stream management only where it is on).
pub fn feature(stream_management: bool) -> Element {
    let mut inline = Element::new("inline", NS)
        .with_child(Element::new("feature", NS).with_attr("var", ns::CARBONS))
        .with_child(Element::new("feature", NS).with_attr("var", csi::NS));
    if stream_management {
        inline.push_child(Element::new("feature", NS).with_attr("var", sm::NS));
    }
    Element::new("bind", NS).with_child(inline)
}

/// What the client asked for in `<bind/>`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    /// `<tag/>`: the client's name for the resource's prefix.
    pub tag: Option<String>,
    /// `<enable xmlns='urn:xmpp:carbons:2'/>`.
    pub carbons: bool,
    /// `<inactive/>` (true) or `<active/>` (false) of XEP-0352.
    pub inactive: Option<bool>,
    /// `<enable xmlns='urn:xmpp:sm:3'/>`, as sent.
    pub sm_enable: Option<Element>,
}

/// Whether `el` is a Bind2 request.
pub fn is_bind(el: &Element) -> bool {
    el.is("bind", NS)
}

/// Parses `<bind/>`; `Err` (for a SASL `malformed-request`) when a tag is too long or an
/// inline element is repeated. Elements of unknown extensions are ignored (§4: the server
/// only acts on the features it announced).
pub fn parse(el: &Element) -> Result<Request, &'static str> {
    let mut r = Request::default();
    for child in el.children() {
        let repeated = match (child.ns(), child.name()) {
            (NS, "tag") => {
                let tag = child.text().trim().to_string();
                if tag.len() > MAX_TAG {
                    return Err("malformed-request");
                }
                r.tag.replace(tag).is_some()
            }
            (ns::CARBONS, "enable") => std::mem::replace(&mut r.carbons, true),
            (csi::NS, "active") => r.inactive.replace(false).is_some(),
            (csi::NS, "inactive") => r.inactive.replace(true).is_some(),
            (sm::NS, "enable") => r.sm_enable.replace(child.clone()).is_some(),
            _ => false,
        };
        if repeated {
            return Err("malformed-request");
        }
    }
    r.tag = r.tag.filter(|t| !t.is_empty());
    Ok(r)
}

/// The resource for a device of `account` that said `device_id` and asked for `tag`.
fn resource(account: &str, tag: Option<&str>, device_id: Option<&str>) -> String {
    let prefix = tag.unwrap_or("rookery");
    match device_id {
        Some(id) => {
            let digest = ScramHash::Sha256.hash(format!("{account}\0{id}").as_bytes());
            let short: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
            format!("{prefix}.{short}")
        }
        None => format!("{prefix}.{:08x}", rand::random::<u32>()),
    }
}

/// The full JID a Bind2 request binds `user` to: the tag as the resource's prefix or, when
/// the tag makes no valid resourcepart (RFC 7622 §3.4), the default prefix. The tag is a
/// hint "subject to the necessary validation" (XEP-0386 §4.1), and the credentials were
/// right: refusing the attempt over it would tell the client its password is wrong.
pub fn jid(user: &BareJid, tag: Option<&str>, device_id: Option<&str>) -> Option<Jid> {
    let local = user.local().unwrap_or_default();
    let bind = |tag| user.with_resource(&resource(local, tag, device_id)).ok();
    tag.and_then(|t| bind(Some(t))).or_else(|| bind(None))
}

/// `<bound/>` with what the inline features answered (§4.2).
pub fn bound(inline: Vec<Element>) -> Element {
    let mut b = Element::new("bound", NS);
    for el in inline {
        b.push_child(el);
    }
    b
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn bind(children: Vec<Element>) -> Element {
        let mut b = Element::new("bind", NS);
        for c in children {
            b.push_child(c);
        }
        b
    }

    #[test]
    fn parses_inline_requests() {
        let r = parse(&bind(vec![
            Element::new("tag", NS).with_text("Conversations"),
            Element::new("enable", ns::CARBONS),
            Element::new("inactive", csi::NS),
            Element::new("enable", sm::NS).with_attr("resume", "true"),
            Element::new("unknown", "urn:example"),
        ]))
        .unwrap();
        assert_eq!(r.tag.as_deref(), Some("Conversations"));
        assert!(r.carbons);
        assert_eq!(r.inactive, Some(true));
        assert_eq!(r.sm_enable.unwrap().attr("resume"), Some("true"));
        assert_eq!(parse(&bind(vec![])).unwrap(), Request::default());
    }

    #[test]
    fn malformed_requests() {
        let long = bind(vec![
            Element::new("tag", NS).with_text("x".repeat(MAX_TAG + 1))
        ]);
        assert_eq!(parse(&long), Err("malformed-request"));
        let twice = bind(vec![
            Element::new("enable", ns::CARBONS),
            Element::new("enable", ns::CARBONS),
        ]);
        assert_eq!(parse(&twice), Err("malformed-request"));
        let both = bind(vec![
            Element::new("active", csi::NS),
            Element::new("inactive", csi::NS),
        ]);
        assert_eq!(parse(&both), Err("malformed-request"));
    }

    /// Stable per account and device, different across either, random without an id.
    #[test]
    fn resource_from_the_device() {
        let a = resource("alice", Some("App"), Some("dev-1"));
        assert_eq!(a, resource("alice", Some("App"), Some("dev-1")));
        assert!(a.starts_with("App.") && a.len() == "App.".len() + 8, "{a}");
        assert_ne!(a, resource("alice", Some("App"), Some("dev-2")));
        assert_ne!(a, resource("bob", Some("App"), Some("dev-1")));
        assert!(resource("alice", None, Some("d")).starts_with("rookery."));
        assert_ne!(resource("alice", None, None), resource("alice", None, None));
    }

    /// A tag that makes no resourcepart (an unassigned code point) is dropped, not refused.
    #[test]
    fn unusable_tag_falls_back_to_the_default_prefix() {
        let alice = BareJid::parse("alice@example.test").unwrap();
        let good = jid(&alice, Some("App"), Some("d")).unwrap();
        assert!(good.resource().unwrap().starts_with("App."), "{good}");
        let bad = jid(&alice, Some("x\u{378}"), Some("d")).unwrap();
        assert_eq!(bad, jid(&alice, None, Some("d")).unwrap());
        assert!(bad.resource().unwrap().starts_with("rookery."), "{bad}");
    }

    #[test]
    fn feature_lists_inline_features() {
        let f = feature(true);
        let vars: Vec<String> = f
            .get_child("inline", NS)
            .unwrap()
            .children()
            .filter_map(|c| c.attr("var").map(str::to_string))
            .collect();
        assert_eq!(vars, [ns::CARBONS, csi::NS, sm::NS]);
        assert_eq!(
            feature(false)
                .get_child("inline", NS)
                .unwrap()
                .children()
                .count(),
            2
        );
    }
}
