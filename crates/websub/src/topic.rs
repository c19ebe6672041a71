//! Topic URLs (W3C WebSub §1 "topic"): a pubsub node's URL on the public listener,
//! `{base}/pubsub/{service}/{node}`, where `base` is `[http] public_url` (or, without it,
//! the scheme and authority the subscriber used), `service` is `pubsub.<domain>` or an
//! account's bare JID (PEP) and both segments are percent-encoded. The one place that
//! builds and reads them.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rookery_jid::BareJid;

/// The path of node URLs under the base.
pub const NODES_PATH: &str = "/pubsub/";

/// The hub's path under the base.
pub const HUB_PATH: &str = "/websub";

/// What stays unencoded in a path segment: RFC 3986 unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A topic that names a node of this server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    /// `scheme://host[:port][/prefix]`, without a trailing slash.
    pub base: String,
    /// The pubsub service.
    pub service: BareJid,
    /// The NodeID.
    pub node: String,
}

/// Why a string is not a topic of this hub.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Not an absolute `http`/`https` URL.
    #[error("hub.topic is not an http(s) URL")]
    NotAUrl,
    /// A URL, but not a node URL of this server.
    #[error("hub.topic is not a node of this hub")]
    NotANode,
}

impl Topic {
    /// The node's URL.
    pub fn url(&self) -> String {
        format!(
            "{}{NODES_PATH}{}/{}",
            self.base,
            utf8_percent_encode(self.service.as_str(), SEGMENT),
            utf8_percent_encode(&self.node, SEGMENT)
        )
    }
}

/// Reads `topic` as a node URL under `base` (`[http] public_url`, else the scheme and host
/// the request came to, as for the XEP-0156 documents). A topic that is not a URL is a bad
/// request; a URL that names no node under `base` is for the hub to deny.
pub fn parse(base: &str, topic: &str) -> Result<Topic, TopicError> {
    let url = url::Url::parse(topic).map_err(|_| TopicError::NotAUrl)?;
    if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
        return Err(TopicError::NotAUrl);
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(TopicError::NotANode);
    }
    let base = base.trim_end_matches('/');
    let rest = topic
        .strip_prefix(base)
        .and_then(|r| r.strip_prefix(NODES_PATH))
        .ok_or(TopicError::NotANode)?;
    let (service, node) = rest.split_once('/').ok_or(TopicError::NotANode)?;
    if node.contains('/') || service.is_empty() || node.is_empty() {
        return Err(TopicError::NotANode);
    }
    let decode = |s: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| TopicError::NotANode)
    };
    let service = BareJid::parse(&decode(service)?).map_err(|_| TopicError::NotANode)?;
    Ok(Topic {
        base: base.to_string(),
        service,
        node: decode(node)?,
    })
}

/// The hub URL that goes with a topic URL this hub accepted (for `Link: rel="hub"`).
pub fn hub_url(topic: &str) -> String {
    let base = topic
        .rfind(NODES_PATH)
        .and_then(|i| topic.get(..i))
        .unwrap_or(topic);
    format!("{base}{HUB_PATH}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_service_and_pep_topics() {
        let t = parse(
            "http://127.0.0.1:5280",
            "http://127.0.0.1:5280/pubsub/pubsub.example.org/news%2Fsports",
        )
        .unwrap();
        assert_eq!(t.base, "http://127.0.0.1:5280");
        assert_eq!(t.service.as_str(), "pubsub.example.org");
        assert_eq!(t.node, "news/sports");
        assert_eq!(
            t.url(),
            "http://127.0.0.1:5280/pubsub/pubsub.example.org/news%2Fsports"
        );
        let t = parse(
            "https://chat.example.org/x/",
            "https://chat.example.org/x/pubsub/alice%40example.org/urn%3Axmpp%3Ameter",
        )
        .unwrap();
        assert_eq!(t.base, "https://chat.example.org/x");
        assert_eq!(t.service.as_str(), "alice@example.org");
        assert_eq!(t.node, "urn:xmpp:meter");
        assert_eq!(hub_url(&t.url()), "https://chat.example.org/x/websub");
    }

    #[test]
    fn refuses_what_is_not_a_node() {
        assert_eq!(parse("http://h", "not a url"), Err(TopicError::NotAUrl));
        assert_eq!(
            parse("http://h", "ftp://h/pubsub/a/b"),
            Err(TopicError::NotAUrl)
        );
        for t in [
            "http://h/pubsub/a",
            "http://h/pubsub/a/b/c",
            "http://h/other/a/b",
            "http://h/pubsub/a/b?x=1",
            "http://h/pubsub//b",
            "http://h/pubsub/a%40%40b/n",
        ] {
            assert_eq!(parse("http://h", t), Err(TopicError::NotANode), "{t}");
        }
        assert_eq!(
            parse(
                "https://chat.example.org",
                "https://evil.example/pubsub/a/b"
            ),
            Err(TopicError::NotANode)
        );
    }
}
