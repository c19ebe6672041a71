//! Reading and writing a node's items over HTTP (docs/http.md, "Items"): XEP-0060 §6.5
//! retrieval, §7.1 publication (with §7.1.5 publish-options from the query string) and §7.2
//! retraction, each one engine call — as an XMPP client's IQ would make it.
//!
//! - `GET /pubsub/{service}/{node}/items?max=N&after=ID`: JSON, newest first, one page (its
//!   `Link: rel="next"` names the next);
//! - `POST …/items[?id=…&pubsub#…=…]` with `application/xml` (one payload element) or
//!   `application/json` (stored in an XEP-0335 `<json/>` container): `201 Created` once the
//!   item is committed and its notifications are sent, `Location` naming the item;
//! - `DELETE …/items/{id}`: `204 No Content`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rookery_jid::Jid;
use rookery_proto::rsm::{self, Anchor};
use rookery_pubsub::engine::{ItemsQuery, PublishRequest};
use rookery_pubsub::form::{Field, Form};
use rookery_pubsub::model::Item;
use rookery_store::tokens::Scope;
use rookery_xml::Element;

use super::{HttpError, Payload, JSON_NS};
use crate::auth::{AuthError, Caller};
use crate::WebContext;

/// An item as JSON: `json` for an XEP-0335 container, `xml` (a string) otherwise; neither
/// for a notification-only item.
pub fn item_json(item: &Item) -> serde_json::Value {
    let mut v = serde_json::Map::new();
    v.insert("id".into(), item.id.clone().into());
    v.insert("publisher".into(), item.publisher.clone().into());
    v.insert("updated_at".into(), item.updated_at.into());
    match item.payload.as_ref().map(Payload::of) {
        Some(Payload::Json(text)) => {
            // Stored JSON is valid (checked on publish); XMPP publishers may store anything.
            let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
            v.insert("json".into(), json);
        }
        Some(Payload::Xml(xml)) => {
            v.insert("xml".into(), xml.into());
        }
        None => {}
    }
    v.into()
}

/// `GET …/items?max=N&after=ID`: one page of items, newest first — the newest, or those
/// older than the item `after` — with `count` (the node's items) and, when older items
/// remain, `Link: <…?after=…>; rel="next"` (RFC 8288) naming the next page. A page is at most
/// `[pubsub] max_page_items` items and ends with the one that brings its payloads to
/// `max_page_bytes`, as over XMPP (XEP-0060 §6.5.4, the same RSM page).
pub async fn list(
    State(ctx): State<Arc<WebContext>>,
    Path((service, node)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    caller: Caller,
) -> Result<Response, HttpError> {
    let (svc, engine) = super::engine(&ctx.nodes, &ctx.store, &service).await?;
    let who = caller.jid_for(Scope::Read)?;
    let max = match q.get("max") {
        Some(m) => Some(
            m.parse::<u64>()
                .map_err(|_| HttpError::BadRequest("max must be a number".into()))?,
        ),
        None => None,
    };
    let anchor = match q.get("after").map(String::as_str) {
        Some("") => return Err(HttpError::BadRequest("after names no item".into())),
        Some(id) => Anchor::After(id.to_string()),
        None => Anchor::First,
    };
    let query = ItemsQuery {
        rsm: Some(rsm::Request { max, anchor }),
        ..ItemsQuery::default()
    };
    let page = engine.items_as(&svc, who, &node, &query).await?;
    let items: Vec<serde_json::Value> = page.items.iter().map(item_json).collect();
    let body = serde_json::json!({ "node": node, "count": page.count, "items": items });
    let mut r = Json(body).into_response();
    if let Some(last) = page.items.last().filter(|_| page.more_older()) {
        let next = next_page(svc.as_str(), &node, &last.id, max);
        if let Ok(v) = HeaderValue::from_str(&next) {
            r.headers_mut().append(header::LINK, v);
        }
    }
    Ok(r)
}

/// The `Link` to the page of items after the item `last` (the same `max`, if one was given).
fn next_page(service: &str, node: &str, last: &str, max: Option<u64>) -> String {
    let max = max.map(|m| format!("&max={m}")).unwrap_or_default();
    format!(
        "</pubsub/{}/{}/items?after={}{max}>; rel=\"next\"",
        encode_segment(service),
        encode_segment(node),
        encode_segment(last)
    )
}

/// The payload element of a POST body, by its content type.
pub fn payload_of(content_type: &str, body: &[u8]) -> Result<Element, HttpError> {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || mime.ends_with("+json") {
        let v: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| HttpError::BadRequest(format!("malformed JSON: {e}")))?;
        Ok(Element::new("json", JSON_NS).with_text(v.to_string()))
    } else if mime == "application/xml" || mime == "text/xml" || mime.ends_with("+xml") {
        rookery_xml::first_element(body, rookery_xml::Limits::C2S)
            .ok_or_else(|| HttpError::BadRequest("malformed XML: expected one element".into()))
    } else {
        Err(HttpError::UnsupportedMediaType)
    }
}

/// The publish-options form (§7.1.5) from the query's `pubsub#…` parameters, if any.
fn publish_options(q: &HashMap<String, String>) -> Option<Form> {
    let mut fields: Vec<(&String, &String)> =
        q.iter().filter(|(k, _)| k.starts_with("pubsub#")).collect();
    if fields.is_empty() {
        return None;
    }
    fields.sort();
    let mut form = Form::new("submit", rookery_pubsub::ns::PUBLISH_OPTIONS);
    for (k, v) in fields {
        form.push(Field {
            var: k.clone(),
            values: vec![v.clone()],
            ..Field::default()
        });
    }
    Some(form)
}

/// A path segment, percent-encoded (RFC 3986 §2.3: unreserved characters stay).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `POST …/items`.
pub async fn publish(
    State(ctx): State<Arc<WebContext>>,
    Path((service, node)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    let (svc, engine) = super::engine(&ctx.nodes, &ctx.store, &service).await?;
    let actor: Jid = caller
        .jid_for(Scope::Publish)?
        .ok_or(AuthError::Required)?
        .clone()
        .into();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let payload = payload_of(content_type, &body)?;
    let req = PublishRequest {
        node: Some(node.clone()),
        has_item: true,
        item_id: q.get("id").cloned(),
        payload: Some(payload),
        options: publish_options(&q),
    };
    let id = engine.publish(&svc, &actor, req).await?;
    let location = format!(
        "/pubsub/{}/{}/items/{}",
        encode_segment(svc.as_str()),
        encode_segment(&node),
        encode_segment(&id)
    );
    let mut r = (
        StatusCode::CREATED,
        Json(serde_json::json!({ "id": id, "node": node })),
    )
        .into_response();
    if let Ok(v) = location.parse() {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

/// `DELETE …/items/{id}`.
pub async fn retract(
    State(ctx): State<Arc<WebContext>>,
    Path((service, node, id)): Path<(String, String, String)>,
    caller: Caller,
) -> Result<StatusCode, HttpError> {
    let (svc, engine) = super::engine(&ctx.nodes, &ctx.store, &service).await?;
    let actor: Jid = caller
        .jid_for(Scope::Publish)?
        .ok_or(AuthError::Required)?
        .clone()
        .into();
    engine
        .retract(&svc, &actor, Some(&node), Some(&id), None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bodies_by_content_type() {
        let j = payload_of("application/json; charset=utf-8", b"{ \"a\" : [1, 2] }").unwrap();
        assert_eq!(
            (j.name(), j.ns(), j.text()),
            ("json", JSON_NS, "{\"a\":[1,2]}".into())
        );
        let x = payload_of("application/xml", b"<entry xmlns='urn:x'>hi</entry>").unwrap();
        assert_eq!((x.name(), x.ns()), ("entry", "urn:x"));
        assert!(matches!(
            payload_of("application/json", b"{nope"),
            Err(HttpError::BadRequest(_))
        ));
        assert!(matches!(
            payload_of("application/xml", b"<a>"),
            Err(HttpError::BadRequest(_))
        ));
        assert!(matches!(
            payload_of("text/plain", b"x"),
            Err(HttpError::UnsupportedMediaType)
        ));
    }

    #[test]
    fn options_and_segments() {
        let mut q = HashMap::new();
        q.insert("pubsub#access_model".to_string(), "open".to_string());
        q.insert("id".to_string(), "x".to_string());
        let f = publish_options(&q).unwrap();
        assert_eq!(f.data_fields().count(), 1);
        assert!(publish_options(&HashMap::new()).is_none());
        assert_eq!(encode_segment("a b/c~d"), "a%20b%2Fc~d");
    }
}
