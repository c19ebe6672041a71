//! Pubsub nodes on the web (docs/http.md): a URL per node, `/pubsub/{service}/{node}`, read as
//! Server-Sent Events ([`sse`]) and read and written as JSON/XML ([`items`]).
//!
//! These handlers are clients of the pubsub engine, never a second engine (design.md, "The
//! HTTP face"): access decisions, persistence and notifications are the engine's
//! ([`rookery_pubsub::Engine`]), the same calls an XMPP client's IQs make. `service` is the
//! pubsub service's JID (`pubsub.<domain>`) or an account's bare JID for its PEP nodes
//! (XEP-0163); both path segments are percent-decoded by the router.
//!
//! Payloads: an XML element as published; XEP-0335 JSON containers
//! (`<json xmlns='urn:xmpp:json:0'>…</json>`) are read and written as JSON ([`Payload`]).
//! Errors are [`HttpError`]: one table from the engine's [`PubsubError`] to an HTTP status,
//! with the XMPP condition in a JSON body. Pages on other origins reach the API through
//! [`cors`], with the listener's origin allowlist.

pub mod items;
pub mod sse;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::Extension;
use axum::Router;
use rookery_http::Peer;
use rookery_jid::BareJid;
use rookery_pubsub::{Engine, Engines, PubsubError};
use rookery_xml::Element;

use crate::auth::AuthError;
use crate::{origin, WebContext};

/// The XEP-0335 namespace of JSON containers.
pub const JSON_NS: &str = "urn:xmpp:json:0";

/// The engine serving the service named `service` (a path segment), and its JID; `404` for
/// a service not served here (a PEP service must be an existing account, see
/// [`Engines::resolve`]).
pub async fn engine<'a>(
    engines: &'a Engines,
    store: &rookery_store::Store,
    service: &str,
) -> Result<(BareJid, &'a Arc<Engine>), HttpError> {
    let not_found = || HttpError::from(PubsubError::NodeNotFound);
    let svc = BareJid::parse(service).map_err(|_| not_found())?;
    match engines.resolve(store, &svc).await {
        Ok(Some(e)) => Ok((svc, e)),
        Ok(None) => Err(not_found()),
        Err(_) => Err(PubsubError::Storage.into()),
    }
}

/// The routes of this module, and `/presence/{jid}` (the same API's other stream), each
/// with its CORS preflight, behind [`cors`].
pub fn routes(ctx: &Arc<WebContext>) -> Router<Arc<WebContext>> {
    Router::new()
        .route(
            "/pubsub/{service}/{node}",
            get(sse::stream)
                .options(preflight("GET, OPTIONS"))
                .layer(middleware::from_fn_with_state(ctx.clone(), topic_links)),
        )
        .route(
            "/pubsub/{service}/{node}/items",
            get(items::list)
                .post(items::publish)
                .options(preflight("GET, POST, OPTIONS")),
        )
        .route(
            "/pubsub/{service}/{node}/items/{id}",
            delete(items::retract).options(preflight("DELETE, OPTIONS")),
        )
        .route(
            "/presence/{jid}",
            get(crate::presence::stream).options(preflight("GET, OPTIONS")),
        )
        .route_layer(middleware::from_fn_with_state(ctx.clone(), cors))
}

/// W3C WebSub §4: a node's URL is a topic, and every answer for it names its hub and itself
/// (`Link: <…/websub>; rel="hub", <topic>; rel="self"`), so that a subscriber that fetches
/// the topic finds where to subscribe.
async fn topic_links(
    State(ctx): State<Arc<WebContext>>,
    Extension(peer): Extension<Peer>,
    req: Request,
    next: Next,
) -> Response {
    let topic = format!(
        "{}{}",
        crate::host_meta::base(&ctx, peer, req.headers()),
        req.uri().path()
    );
    let mut r = next.run(req).await;
    let link = format!(
        "<{}>; rel=\"hub\", <{topic}>; rel=\"self\"",
        rookery_websub::topic::hub_url(&topic)
    );
    if let Ok(v) = HeaderValue::from_str(&link) {
        // Appended: an items answer may carry its own (`rel="next"`).
        r.headers_mut().append(header::LINK, v);
    }
    r
}

/// The request headers a page on another origin may send to the API: the bearer token, a
/// body's type, and the point an `EventSource` resumes from.
const ALLOWED_HEADERS: &str = "Authorization, Content-Type, Last-Event-ID";

/// A route's CORS preflight answer, allowing `methods`.
fn preflight(
    methods: &'static str,
) -> impl Fn() -> std::future::Ready<Response> + Clone + Send + Sync + 'static {
    move || {
        std::future::ready(rookery_http::cors::preflight_allowing(
            methods,
            ALLOWED_HEADERS,
        ))
    }
}

/// CORS for the API (Fetch standard, "CORS protocol"), with the origin allowlist of the
/// whole public listener (`[http] allowed_origins`, same origin always): a request from
/// another origin is refused (`403`) before its handler runs, as BOSH's are; an allowed
/// one — a preflight, an `EventSource`, a `fetch` — is answered with
/// `Access-Control-Allow-Origin` and may read `Location` (a publication's item) and `Link`
/// (the next page of items).
pub async fn cors(State(ctx): State<Arc<WebContext>>, req: Request, next: Next) -> Response {
    let Some(allow) = origin::cors_origin(req.headers(), &ctx.config.allowed_origins) else {
        return HttpError::Status(StatusCode::FORBIDDEN, "origin-not-allowed").into_response();
    };
    let mut r = next.run(req).await;
    let expose = allow.is_some();
    origin::add_cors(r.headers_mut(), allow);
    if expose {
        r.headers_mut().insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Location, Link"),
        );
    }
    r
}

/// A payload as the HTTP face shows it.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// The text inside an XEP-0335 container: JSON.
    Json(String),
    /// Any other element, serialized.
    Xml(String),
}

impl Payload {
    /// How `el` is shown.
    pub fn of(el: &Element) -> Payload {
        if el.name() == "json" && el.ns() == JSON_NS {
            Payload::Json(el.text())
        } else {
            Payload::Xml(String::from_utf8_lossy(&el.to_bytes()).into_owned())
        }
    }
}

/// An error of the HTTP API: a status with a JSON body naming the XMPP condition
/// (`{"error": "item-not-found", "type": "cancel", "pubsub": "closed-node", "text": …}`).
#[derive(Debug)]
pub enum HttpError {
    /// The engine refused.
    Pubsub(PubsubError),
    /// The credentials were refused.
    Auth(AuthError),
    /// The request itself is malformed (body, query), before reaching the engine.
    BadRequest(String),
    /// The request asks for a representation this URL does not serve.
    NotAcceptable(&'static str),
    /// The body's content type is neither XML nor JSON.
    UnsupportedMediaType,
    /// Any other refusal: a status and the XMPP (or pubsub) condition it stands for.
    Status(StatusCode, &'static str),
}

impl From<PubsubError> for HttpError {
    fn from(e: PubsubError) -> Self {
        HttpError::Pubsub(e)
    }
}

impl From<AuthError> for HttpError {
    fn from(e: AuthError) -> Self {
        HttpError::Auth(e)
    }
}

/// The table: each engine error to an HTTP status. The XMPP condition travels in the body.
pub fn status_of(e: &PubsubError) -> StatusCode {
    use PubsubError as E;
    match e {
        E::NodeNotFound | E::ItemNotFound => StatusCode::NOT_FOUND,
        E::AuthenticationRequired => StatusCode::UNAUTHORIZED,
        E::Forbidden
        | E::PresenceSubscriptionRequired
        | E::NotInRosterGroup
        | E::ClosedNode
        | E::NotSubscribedForItems
        | E::PendingSubscription
        | E::MaxNodesExceeded => StatusCode::FORBIDDEN,
        E::PayloadTooBig => StatusCode::PAYLOAD_TOO_LARGE,
        E::NodeExists | E::PreconditionNotMet | E::NotSubscribed => StatusCode::CONFLICT,
        E::NotPersistent | E::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
        E::TooManySubscriptions | E::ResourceConstraint | E::Storage => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        E::NodeIdRequired
        | E::InstantNotSupported
        | E::InvalidJid
        | E::SubidRequired
        | E::InvalidSubid
        | E::InvalidOptions
        | E::JidRequired
        | E::InvalidPayload
        | E::PayloadRequired
        | E::ItemRequired
        | E::ItemForbidden
        | E::InvalidConfig(_)
        | E::BadRequest(_)
        | E::Rsm(_)
        | E::NotAcceptable(_) => StatusCode::BAD_REQUEST,
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        match self {
            HttpError::Auth(a) => a.into_response(),
            HttpError::Pubsub(e) => {
                let se = e.to_stanza_error();
                let mut body = serde_json::Map::new();
                body.insert("error".into(), se.condition.as_str().into());
                body.insert("type".into(), se.error_type.as_str().into());
                body.insert("text".into(), e.to_string().into());
                if let Some(app) = &se.app {
                    body.insert("pubsub".into(), app.name().into());
                }
                let mut r = (status_of(&e), axum::Json(body)).into_response();
                if e == PubsubError::AuthenticationRequired {
                    r.headers_mut().insert(
                        axum::http::header::WWW_AUTHENTICATE,
                        axum::http::HeaderValue::from_static("Bearer"),
                    );
                }
                r
            }
            HttpError::BadRequest(text) => simple(StatusCode::BAD_REQUEST, "bad-request", text),
            HttpError::NotAcceptable(text) => {
                simple(StatusCode::NOT_ACCEPTABLE, "not-acceptable", text.into())
            }
            HttpError::Status(status, condition) => simple(status, condition, condition.into()),
            HttpError::UnsupportedMediaType => simple(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "bad-request",
                "post application/xml or application/json".into(),
            ),
        }
    }
}

fn simple(status: StatusCode, condition: &str, text: String) -> Response {
    let body = serde_json::json!({ "error": condition, "type": "modify", "text": text });
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn payloads_show_json_containers_as_json() {
        let j = Element::new("json", JSON_NS).with_text("{\"a\":1}");
        assert_eq!(Payload::of(&j), Payload::Json("{\"a\":1}".into()));
        let x = Element::new("entry", "urn:x").with_text("hi");
        assert_eq!(
            Payload::of(&x),
            Payload::Xml("<entry xmlns=\"urn:x\">hi</entry>".into())
        );
    }

    #[test]
    fn the_error_table() {
        assert_eq!(status_of(&PubsubError::NodeNotFound), StatusCode::NOT_FOUND);
        assert_eq!(status_of(&PubsubError::ClosedNode), StatusCode::FORBIDDEN);
        assert_eq!(
            status_of(&PubsubError::AuthenticationRequired),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status_of(&PubsubError::PayloadTooBig),
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }
}
