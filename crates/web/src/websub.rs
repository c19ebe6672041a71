//! `/websub`: the W3C WebSub hub's HTTP face (§5.1). The hub itself — verification,
//! access, delivery — is `rookery-websub`; this maps requests onto it.
//!
//! - `POST /websub` (`application/x-www-form-urlencoded`: `hub.mode`, `hub.topic`,
//!   `hub.callback`, `hub.secret`, `hub.lease_seconds`): `202 Accepted` once the request is
//!   well-formed and its callback allowed, then verification happens asynchronously;
//!   `400 Bad Request` with the reason as text otherwise (`403` for a new subscription over
//!   the per-topic or per-callback-host cap, `503` while 1,024 verifications are under way).
//! - `GET /websub?hub.topic=…&hub.callback=…`: that subscription's state as JSON (`active`
//!   or `failing`, lease end, deliveries owed, last error), `404` if there is none. Not in
//!   the specification: how a subscriber sees that its deliveries are failing.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use rookery_http::Peer;
use rookery_websub::{HubError, HubRequest};

use crate::auth::Caller;
use crate::{host_meta, WebContext};
use rookery_store::tokens::Scope;

/// The hub's path.
pub const PATH: &str = rookery_websub::topic::HUB_PATH;

fn fields(text: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(text).into_owned().collect()
}

fn error(e: &HubError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    (status, format!("{e}\n")).into_response()
}

/// `POST /websub`: a subscription request.
pub async fn request(
    State(ctx): State<Arc<WebContext>>,
    Extension(peer): Extension<Peer>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(hub) = &ctx.websub else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form {
        return (
            StatusCode::BAD_REQUEST,
            "expected application/x-www-form-urlencoded\n",
        )
            .into_response();
    }
    let fields = fields(&body);
    let req = match HubRequest::from_fields(fields.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
        Ok(r) => r,
        Err(e) => return error(&e),
    };
    // The subscriber reads the node as the bearer token's account (a `read` token), or
    // anonymously, which the engine allows on `open` nodes only (docs/http.md, "Tokens").
    let who = match caller.jid_for(Scope::Read) {
        Ok(j) => j.cloned(),
        Err(e) => return e.into_response(),
    };
    let base = host_meta::base(&ctx, peer, &headers);
    match hub.request(req, who, &base).await {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(e) => error(&e),
    }
}

/// `GET /websub?hub.topic=…&hub.callback=…`: a subscription's state.
pub async fn status(
    State(ctx): State<Arc<WebContext>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(hub) = &ctx.websub else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let fields = fields(query.unwrap_or_default().as_bytes());
    let get = |name: &str| {
        fields
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let (Some(topic), Some(callback)) = (get("hub.topic"), get("hub.callback")) else {
        return (
            StatusCode::BAD_REQUEST,
            "missing hub.topic or hub.callback\n",
        )
            .into_response();
    };
    match hub
        .status(topic, callback, &host_meta::base(&ctx, peer, &headers))
        .await
    {
        Ok(Some(s)) => axum::Json(serde_json::json!({
            "topic": s.sub.topic,
            "callback": s.sub.callback,
            "state": s.state,
            "lease_seconds": s.sub.lease_seconds,
            "expires_at": s.sub.expires_at,
            "pending": s.pending,
            "attempts": s.attempts,
            "last_error": s.last_error,
        }))
        .into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => error(&e),
    }
}
