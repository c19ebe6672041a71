//! XEP-0156 §3 discovery over HTTP: `/.well-known/host-meta` (XRD, RFC 6415) and
//! `/.well-known/host-meta.json` (JRD) name the WebSocket (`urn:xmpp:alt-connections:websocket`)
//! and BOSH (`urn:xmpp:alt-connections:xbosh`) endpoints, so a web client given only a JID
//! finds them (Converse.js' `discover_connection_methods`).
//!
//! The URLs are built on `[http] public_url` when set (what a proxy in front publishes), else
//! on the request itself (its scheme and `Host`). The documents are public, so any page may
//! read them (`Access-Control-Allow-Origin: *`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use rookery_http::Peer;
use rookery_xml::escape_into;

use crate::{bosh, websocket, HttpConfig, WebContext};

/// The path of the XRD document.
pub const PATH_XRD: &str = "/.well-known/host-meta";

/// The path of the JSON document.
pub const PATH_JSON: &str = "/.well-known/host-meta.json";

const REL_WEBSOCKET: &str = "urn:xmpp:alt-connections:websocket";
const REL_BOSH: &str = "urn:xmpp:alt-connections:xbosh";

/// The endpoints under `base` (`scheme://host[:port][/prefix]`): (WebSocket, BOSH).
pub fn endpoints(base: &str) -> (String, String) {
    let base = base.trim_end_matches('/');
    let ws_base = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_string()
    };
    (
        format!("{ws_base}{}", websocket::PATH),
        format!("{base}{}", bosh::PATH),
    )
}

/// The XRD document (XEP-0156 §3.1).
pub fn xrd(base: &str) -> String {
    let (ws, bosh) = endpoints(base);
    let mut out = b"<?xml version='1.0' encoding='utf-8'?>\n<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n".to_vec();
    for (rel, href) in [(REL_WEBSOCKET, ws), (REL_BOSH, bosh)] {
        out.extend_from_slice(b"  <Link rel='");
        out.extend_from_slice(rel.as_bytes());
        out.extend_from_slice(b"' href='");
        escape_into(&mut out, &href, true);
        out.extend_from_slice(b"'/>\n");
    }
    out.extend_from_slice(b"</XRD>\n");
    String::from_utf8_lossy(&out).into_owned()
}

/// The JSON document (XEP-0156 §3.2).
pub fn jrd(base: &str) -> String {
    let (ws, bosh) = endpoints(base);
    let link =
        |rel: &str, href: &str| format!("{{\"rel\":\"{rel}\",\"href\":{}}}", json_string(href));
    format!(
        "{{\"links\":[{},{}]}}\n",
        link(REL_WEBSOCKET, &ws),
        link(REL_BOSH, &bosh)
    )
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Why the documents may name links XEP-0156 §3 forbids ("MUST only use connection URLs
/// starting with 'https://' or 'wss://'"), for a warning at start: a `public_url` that is
/// not https, or a proxy in front with no `public_url`, where the links take whatever `Host`
/// each request carries (a shared cache that does not key on it could be fed another
/// host). `None` when the links are secure, or on the loopback-only plain listener
/// (development), where they are `ws://` and `http://` by necessity.
pub fn link_warning(config: &HttpConfig) -> Option<&'static str> {
    match &config.public_url {
        Some(url) if !is_https(url) => Some(
            "[http] public_url is not https: host-meta (XEP-0156) names ws:// and http:// \
             endpoints, which the XEP forbids and browsers refuse from https pages",
        ),
        None if config.behind_tls_proxy => Some(
            "[http] public_url is not set: host-meta (XEP-0156) names the host of each \
             request's Host header; set public_url to the address clients use",
        ),
        _ => None,
    }
}

/// Whether `url` is an https URL (the scheme is case-insensitive, RFC 3986 §3.1).
fn is_https(url: &str) -> bool {
    url.get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
}

/// The base URL for a request: `[http] public_url`, else its own scheme and `Host` (also the
/// base of WebSub topics and of the hub). Behind a TLS-terminating proxy
/// (`behind_tls_proxy`) the clients' scheme is https, whatever reached us: XEP-0156 §3
/// allows only `https://` and `wss://` links, and a browser page would refuse `ws://`.
pub(crate) fn base(ctx: &WebContext, peer: Peer, headers: &HeaderMap) -> String {
    if let Some(url) = &ctx.config.public_url {
        return url.clone();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = if peer.tls || ctx.config.behind_tls_proxy {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{host}")
}

fn document(body: String, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}

/// `GET /.well-known/host-meta`.
pub async fn get_xrd(
    State(ctx): State<Arc<WebContext>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    document(xrd(&base(&ctx, peer, &headers)), "application/xrd+xml")
}

/// `GET /.well-known/host-meta.json`.
pub async fn get_json(
    State(ctx): State<Arc<WebContext>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    document(jrd(&base(&ctx, peer, &headers)), "application/json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_of_links_that_are_not_https() {
        let with = |url: Option<&str>, proxy: bool| HttpConfig {
            public_url: url.map(str::to_string),
            behind_tls_proxy: proxy,
            ..HttpConfig::default()
        };
        assert!(link_warning(&with(Some("http://chat.example.org"), false)).is_some());
        assert!(link_warning(&with(Some("HTTPS://chat.example.org"), true)).is_none());
        assert!(link_warning(&with(None, true)).is_some());
        assert!(link_warning(&with(None, false)).is_none());
    }

    #[test]
    fn endpoints_follow_the_scheme() {
        assert_eq!(
            endpoints("https://chat.example.org/"),
            (
                "wss://chat.example.org/xmpp-websocket".to_string(),
                "https://chat.example.org/http-bind".to_string()
            )
        );
        assert_eq!(
            endpoints("http://127.0.0.1:5280").0,
            "ws://127.0.0.1:5280/xmpp-websocket"
        );
    }

    #[test]
    fn documents_name_both_endpoints() {
        let x = xrd("https://a.example/x");
        assert!(x.contains("<Link rel='urn:xmpp:alt-connections:websocket' href='wss://a.example/x/xmpp-websocket'/>"), "{x}");
        assert!(x.contains("href='https://a.example/x/http-bind'"), "{x}");
        let j = jrd("https://a.example");
        assert_eq!(
            j,
            "{\"links\":[{\"rel\":\"urn:xmpp:alt-connections:websocket\",\"href\":\"wss://a.example/xmpp-websocket\"},{\"rel\":\"urn:xmpp:alt-connections:xbosh\",\"href\":\"https://a.example/http-bind\"}]}\n"
        );
    }
}
