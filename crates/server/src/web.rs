//! Wiring of the public HTTP listeners (`[listen] http` / `https`, `[http]`): the router of
//! `rookery-web` on the shared runner of `rookery-http`, sharing the c2s context (its
//! negotiation, sessions and connection cap).

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderValue;
use axum::Router;
use bytes::Bytes;
use rookery_cluster::bosh::{BoshAnswer, BoshRelay, RelayError};
use rookery_upload::Upload;
use rookery_web::bosh::{Peers, Relayed, Unreached};
use rookery_web::WebContext;

use anyhow::Context;
use rookery_c2s::C2sContext;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;

/// How long an XMPP request (BOSH) may take: BOSH's longest `wait` (60 s) and some.
const XMPP_REQUEST: Duration = Duration::from_secs(90);
/// How long an upload's PUT may take: a large file on a slow mobile link. A stalled body is
/// cut much earlier (rookery-upload's idle timeout between chunks).
const UPLOAD_REQUEST: Duration = Duration::from_secs(3600);

/// The largest body of the web routes but BOSH's (pubsub, WebSub): a stanza's worth and
/// some.
fn xmpp_body(cfg: &Config) -> usize {
    cfg.c2s.max_stanza_bytes + 4096
}

/// The public listener's limits. Connections: as many as the process can hold (each BOSH
/// client keeps up to two; a WebSocket leaves this count once upgraded and counts against
/// the c2s cap). No body limit of the listener's own: each group of routes has its own
/// ([`router`]), BOSH's reads within its limit itself. The deadline is the longest one.
fn limits(upload: bool) -> rookery_http::Limits {
    rookery_http::Limits {
        max_connections: rookery_stream::CapLimits::automatic(),
        request_timeout: if upload { UPLOAD_REQUEST } else { XMPP_REQUEST },
        max_body_bytes: usize::MAX,
        ..rookery_http::Limits::ADMIN
    }
}

/// The public listener's routes, each group with its body limit and deadline: WebSocket,
/// host-meta and the HTTP APIs (rookery-web), BOSH (under none: it answers an oversized
/// body itself, as XEP-0124 §17.1 wants, within [`rookery_web::bosh::max_body_bytes`]), and
/// the upload's files when it is on.
fn router(cfg: &Config, ctx: Arc<rookery_web::WebContext>, upload: Option<&Arc<Upload>>) -> Router {
    use rookery_http::listener::limited;
    let web = limited(
        rookery_web::router(ctx.clone()),
        xmpp_body(cfg),
        XMPP_REQUEST,
    )
    .merge(limited(
        rookery_web::bosh_router(ctx),
        usize::MAX,
        XMPP_REQUEST,
    ));
    match upload {
        None => web,
        Some(up) => {
            let file = usize::try_from(cfg.upload.max_file_bytes).unwrap_or(usize::MAX);
            web.merge(limited(
                rookery_upload::http::router(up.clone()),
                file,
                UPLOAD_REQUEST,
            ))
        }
    }
}

/// The running public listeners.
pub struct Web {
    /// Their tasks, finished once the shutdown signal drained them.
    pub tasks: Vec<JoinHandle<()>>,
    /// Dropped at shutdown: WebSocket streams still negotiating end with `system-shutdown`.
    pub listening: watch::Sender<()>,
}

/// What the public listener's HTTP API (docs/http.md) serves besides the c2s transports.
pub struct Backends {
    /// The store: HTTP tokens.
    pub store: rookery_store::Store,
    /// The pubsub engines behind `/pubsub/…`.
    pub nodes: rookery_pubsub::Engines,
    /// The presence watchers behind `/presence/…` (registered with the core as a module).
    pub presence: Arc<rookery_web::presence::PresenceStreams>,
    /// HTTP file upload's routes under `/upload/…`, when it is on.
    pub upload: Option<Arc<Upload>>,
    /// The WebSub hub at `/websub`.
    pub websub: Arc<rookery_websub::Hub>,
}

/// The cluster's BOSH relay (crates/cluster) as the other nodes the BOSH endpoint passes
/// requests to (crates/web).
struct BoshPeers(BoshRelay);

#[async_trait::async_trait]
impl Peers for BoshPeers {
    fn node(&self) -> &str {
        self.0.node()
    }

    fn is_alive(&self, node: &str) -> bool {
        self.0.is_alive(node)
    }

    async fn pass(&self, node: &str, body: Bytes, timeout: Duration) -> Result<Relayed, Unreached> {
        let answer = self
            .0
            .pass(node, body, timeout)
            .await
            .map_err(|e| match e {
                RelayError::TooLarge => Unreached::TooLarge,
                e => Unreached::Failed(e.to_string()),
            })?;
        let content = HeaderValue::from_str(&answer.content_type)
            .map_err(|_| Unreached::Failed(format!("{node} answered a bad Content-Type")))?;
        Ok(Relayed {
            content,
            body: answer.body,
        })
    }
}

/// Serves the BOSH requests the other nodes pass to this one, for its sessions.
async fn serve_bosh_relayed(relay: &BoshRelay, ctx: &Arc<WebContext>) -> anyhow::Result<()> {
    let ctx = ctx.clone();
    relay
        .serve(move |body| {
            let ctx = ctx.clone();
            async move {
                let r = rookery_web::bosh::serve_relayed(ctx, body).await;
                BoshAnswer {
                    content_type: r.content.to_str().unwrap_or_default().to_string(),
                    body: r.body,
                }
            }
        })
        .await
        .context("serving BOSH requests of other nodes")
}

/// Binds and starts the listeners `cfg` asks for (plain HTTP on a non-loopback address
/// without `[http] behind_tls_proxy` was refused before, in validate.rs); in a cluster
/// (`relay`), serves this node's BOSH sessions to the others and theirs through them.
pub async fn start(
    cfg: &Config,
    c2s: Arc<C2sContext>,
    backends: Backends,
    https: Arc<rustls::ServerConfig>,
    relay: Option<BoshRelay>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Web> {
    let (listening, stopped) = watch::channel(());
    let upload = backends.upload;
    let ctx = Arc::new(rookery_web::WebContext {
        c2s,
        config: cfg.http.clone(),
        stopped,
        bosh: Default::default(),
        peers: relay
            .clone()
            .map(|r| Arc::new(BoshPeers(r)) as Arc<dyn Peers>),
        store: backends.store,
        nodes: backends.nodes,
        presence: Some(backends.presence),
        websub: Some(backends.websub),
    });
    if let Some(relay) = &relay {
        serve_bosh_relayed(relay, &ctx).await?;
    }
    let mut tasks = Vec::new();
    if !(cfg.listen.http.is_empty() && cfg.listen.https.is_empty()) {
        if let Some(why) = rookery_web::host_meta::link_warning(&cfg.http) {
            tracing::warn!("{why}");
        }
    }
    for (addr, tls) in [(&cfg.listen.http, false), (&cfg.listen.https, true)] {
        if addr.is_empty() {
            continue;
        }
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let local = l.local_addr()?;
        tracing::info!(addr = %local, tls, "listening for web clients (WebSocket, BOSH)");
        let router = router(cfg, ctx.clone(), upload.as_ref());
        let mut stop = stop.clone();
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        tasks.push(if tls {
            let acceptor = tokio_rustls::TlsAcceptor::from(https.clone());
            tokio::spawn(rookery_http::listener::run_tls(
                l,
                acceptor,
                router,
                limits(upload.is_some()),
                stopped,
            ))
        } else {
            tokio::spawn(rookery_http::listener::run(
                l,
                router,
                limits(upload.is_some()),
                stopped,
            ))
        });
    }
    Ok(Web { tasks, listening })
}
