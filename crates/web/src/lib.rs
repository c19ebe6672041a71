//! The public HTTP listener's transports for browsers and web apps (design.md, "The HTTP
//! face"): XMPP over WebSocket (RFC 7395) at `/xmpp-websocket` and BOSH (XEP-0124,
//! XEP-0206) at `/http-bind`, and their XEP-0156 discovery (`/.well-known/host-meta`).
//!
//! A WebSocket or BOSH client gets the *same* c2s negotiation and session as a TCP client: the
//! handler turns the upgraded connection into a message-framed `rookery_stream::Conn`
//! ([`rookery_stream::message`]) and hands it to `rookery_c2s::negotiate::serve_framed`.
//! Only the adapter between WebSocket messages and the connection's channels lives here.
//!
//! Layout:
//! - [`config`]: the `[http]` settings and their defaults;
//! - [`origin`]: the Origin allowlist (cross-site WebSocket hijacking) and the client
//!   address behind a trusted proxy (sans-IO);
//! - [`websocket`]: the upgrade handler and the message adapter;
//! - [`bosh`]: the BOSH session manager (request window, holding, inactivity, CORS);
//! - [`host_meta`]: XEP-0156 discovery documents naming both endpoints;
//! - [`auth`]: the caller of the HTTP API ([`auth::Caller`]: anonymous or a bearer token's
//!   JID and scopes);
//! - [`pubsub`]: pubsub nodes on the web — Server-Sent Events, item retrieval, publication
//!   and retraction, as clients of the pubsub engine (docs/http.md);
//! - [`presence`]: `/presence/{jid}`, an account's resources as Server-Sent Events, fed by a
//!   core module observing presence broadcasts.
//! - [`websub`]: `/websub`, the W3C WebSub hub (`rookery-websub`).

pub mod auth;
pub mod bosh;
pub mod config;
pub mod host_meta;
pub mod origin;
pub mod presence;
pub mod pubsub;
pub mod websocket;
pub mod websub;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use rookery_c2s::C2sContext;

pub use config::HttpConfig;

/// Everything the public listener's handlers need.
pub struct WebContext {
    /// The client listener's context: negotiation, sessions, limits and the connection cap
    /// are the c2s ones.
    pub c2s: Arc<C2sContext>,
    /// `[http]`.
    pub config: HttpConfig,
    /// Fires (its sender is dropped) when the server shuts down: negotiating streams end
    /// with `system-shutdown`, as on the c2s listeners.
    pub stopped: tokio::sync::watch::Receiver<()>,
    /// The BOSH sessions.
    pub bosh: bosh::Sessions,
    /// In a cluster, the other nodes, where the BOSH sessions this node does not hold live.
    pub peers: Option<Arc<dyn bosh::Peers>>,
    /// The store: HTTP tokens.
    pub store: rookery_store::Store,
    /// The pubsub engines behind `/pubsub/…`.
    pub nodes: rookery_pubsub::Engines,
    /// The presence watchers behind `/presence/…` (a core module), when enabled.
    pub presence: Option<Arc<presence::PresenceStreams>>,
    /// The WebSub hub at `/websub` (`None`: not served).
    pub websub: Option<Arc<rookery_websub::Hub>>,
}

/// The public listener's router, but for BOSH ([`bosh_router`]): routes whose bodies the
/// listener's limit bounds.
pub fn router(ctx: Arc<WebContext>) -> Router {
    Router::new()
        .route(websocket::PATH, get(websocket::upgrade))
        .route(host_meta::PATH_XRD, get(host_meta::get_xrd))
        .route(host_meta::PATH_JSON, get(host_meta::get_json))
        .merge(pubsub::routes(&ctx))
        .route(websub::PATH, get(websub::status).post(websub::request))
        .with_state(ctx)
}

/// BOSH's route: it reads its request bodies itself, within its own limit
/// ([`bosh::max_body_bytes`]), so that an oversized one is answered as BOSH answers
/// (XEP-0124 §17.1), not with the listener's HTTP 413 — put it under no body limit.
pub fn bosh_router(ctx: Arc<WebContext>) -> Router {
    Router::new()
        .route(
            bosh::PATH,
            get(bosh::info).post(bosh::request).options(bosh::preflight),
        )
        .with_state(ctx)
}
