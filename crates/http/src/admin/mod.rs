//! The admin listener's router: health and readiness, metrics, and the REST admin API.
//!
//! | path | auth | what |
//! |---|---|---|
//! | `GET /health` | none | the process is alive (always 200) |
//! | `GET /ready` | none | the store answers and the listeners are bound (200), else 503 |
//! | `GET /metrics` | none | OpenMetrics text (Prometheus) |
//! | `/api/v1/…` | bearer token | users, sessions, announce, stats, reload, s2s, components, pubsub nodes (`docs/openapi.yaml`) |
//!
//! The unauthenticated endpoints reveal counts, never JIDs; the listener binds to loopback by
//! default, and operators who expose it put it behind their proxy.

mod api;
pub mod auth;
mod error;
mod health;
mod metrics;
pub mod services;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::routing::get;
use axum::Router;
use rookery_core::Core;
use rookery_jid::Jid;
use rookery_store::Store;
use serde::Serialize;

/// Open connections by kind, as `/health`, `/ready`, `/metrics` and the stats report them.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Connections {
    /// Bound client sessions (hibernating XEP-0198 sessions included).
    pub c2s: usize,
    /// The same by transport (`tcp`, `websocket`, `bosh`), for the metrics.
    #[serde(skip)]
    pub c2s_by_transport: [(&'static str, usize); 3],
    /// Incoming server-to-server streams.
    pub s2s_incoming: usize,
    /// Outgoing server-to-server streams.
    pub s2s_outgoing: usize,
    /// Connected external components.
    pub components: usize,
}

/// Names the client software of a session, when known.
type ClientName = Box<dyn Fn(&Jid) -> Option<String> + Send + Sync>;

/// What the server tells the admin listener about itself.
pub struct Status {
    started: Instant,
    listening: AtomicBool,
    connections: Box<dyn Fn() -> Connections + Send + Sync>,
    client: ClientName,
    /// The nodes of a cluster and where sessions live, when this node is one of several.
    cluster: Option<Box<dyn Fn() -> serde_json::Value + Send + Sync>>,
}

impl std::fmt::Debug for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Status")
            .field("started", &self.started)
            .field("listening", &self.listening)
            .finish_non_exhaustive()
    }
}

impl Status {
    /// A status whose connection counts come from `connections`, read at each request.
    pub fn new(connections: impl Fn() -> Connections + Send + Sync + 'static) -> Status {
        Status {
            started: Instant::now(),
            listening: AtomicBool::new(false),
            connections: Box::new(connections),
            client: Box::new(|_| None),
            cluster: None,
        }
    }

    /// Adds the cluster's view (this node, the others alive, sessions per node) to
    /// `/api/v1/stats`, read at each request.
    pub fn with_cluster(
        mut self,
        view: impl Fn() -> serde_json::Value + Send + Sync + 'static,
    ) -> Status {
        self.cluster = Some(Box::new(view));
        self
    }

    /// Names the client software of a session in the session list (e.g. the node of its
    /// XEP-0115 capabilities), when the server knows it.
    pub fn with_client_names(
        mut self,
        client: impl Fn(&Jid) -> Option<String> + Send + Sync + 'static,
    ) -> Status {
        self.client = Box::new(client);
        self
    }

    /// Every configured listener is bound: `/ready` may say so.
    pub fn set_listening(&self) {
        self.listening.store(true, Ordering::Release);
    }

    fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    fn connections(&self) -> Connections {
        (self.connections)()
    }

    fn cluster(&self) -> Option<serde_json::Value> {
        self.cluster.as_ref().map(|f| f())
    }
}

/// Reloads the server's configuration: what changed as JSON, or why nothing did.
pub type Reload = Arc<dyn Fn() -> Result<serde_json::Value, String> + Send + Sync>;

/// Everything the admin router acts on.
#[derive(Clone)]
pub struct AdminContext {
    /// The running server's core (sessions, routing, the account directory).
    pub core: Arc<Core>,
    /// The database, for what the core's directory does not answer (listing and counting
    /// accounts) and for readiness.
    pub store: Store,
    /// The bearer token of `/api/v1` (from `[admin] token` or `data_dir/admin.token`).
    pub token: Arc<str>,
    /// Readiness, uptime and connection counts.
    pub status: Arc<Status>,
    /// `POST /api/v1/reload`; `None` answers that the server cannot reload.
    pub reload: Option<Reload>,
    /// Federation, components and the pubsub service.
    pub services: services::SharedServices,
}

impl std::fmt::Debug for AdminContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("AdminContext")
            .field("domain", &self.core.domain())
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// The admin listener's router.
pub fn router(ctx: AdminContext) -> Router {
    let gauges = metrics::server_registry(ctx.status.clone());
    Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(metrics::metrics).with_state(gauges))
        .nest("/api/v1", api::router(ctx.clone()))
        .with_state(ctx)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use rookery_core::{CoreBuilder, CoreConfig};
    use tower::ServiceExt;

    async fn context() -> AdminContext {
        let store = Store::open("sqlite::memory:").await.unwrap();
        let accounts = Arc::new(rookery_core::MemoryAccounts::new());
        let core = CoreBuilder::new(CoreConfig::default(), accounts)
            .build()
            .unwrap();
        AdminContext {
            core,
            store,
            token: "t0ken".into(),
            status: Arc::new(Status::new(|| Connections {
                c2s: 3,
                c2s_by_transport: [("tcp", 2), ("websocket", 0), ("bosh", 1)],
                ..Connections::default()
            })),
            reload: None,
            services: Arc::new(services::NoServices),
        }
    }

    async fn get(router: &Router, path: &str, token: Option<&str>) -> (StatusCode, String) {
        let mut req = Request::get(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = router
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn ready_only_once_the_listeners_are_bound() {
        let ctx = context().await;
        let router = router(ctx.clone());
        let (status, body) = get(&router, "/ready", None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("\"listeners\":false") && body.contains("\"store\":true"));
        ctx.status.set_listening();
        let (status, body) = get(&router, "/ready", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("\"c2s\":3"));
        assert_eq!(get(&router, "/health", None).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn the_api_wants_the_token_and_metrics_do_not() {
        let router = router(context().await);
        assert_eq!(
            get(&router, "/api/v1/stats", None).await.0,
            StatusCode::UNAUTHORIZED
        );
        let wrong = get(&router, "/api/v1/stats", Some("t0ke")).await;
        assert_eq!(wrong.0, StatusCode::UNAUTHORIZED);
        let (status, body) = get(&router, "/api/v1/stats", Some("t0ken")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("\"users\":0"), "{body}");
        let (status, body) = get(&router, "/metrics", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.contains("rookery_sessions{transport=\"tcp\"} 2"),
            "{body}"
        );
        assert!(
            body.contains("rookery_sessions{transport=\"bosh\"} 1"),
            "{body}"
        );
        assert!(body.ends_with("# EOF\n"));
    }
}
