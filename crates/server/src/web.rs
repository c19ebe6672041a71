//! Wiring of the public HTTP listeners (`[listen] http` / `https`, `[http]`): the router of
//! `rookery-web` on the shared runner of `rookery-http`, sharing the c2s context (its
//! negotiation, sessions and connection cap).

use std::sync::Arc;

use anyhow::{bail, Context};
use rookery_c2s::C2sContext;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;

/// The public listener's limits. Connections: as many as the process can hold (each BOSH
/// client keeps up to two; a WebSocket leaves this count once upgraded and counts against
/// the c2s cap). Requests may be held for BOSH's longest `wait` (60 s), and a body carries
/// up to a stanza.
fn limits(cfg: &Config) -> rookery_http::Limits {
    rookery_http::Limits {
        max_connections: rookery_stream::CapLimits::automatic(),
        request_timeout: std::time::Duration::from_secs(90),
        max_body_bytes: cfg.c2s.max_stanza_bytes + 4096,
        ..rookery_http::Limits::ADMIN
    }
}

/// The running public listeners.
pub struct Web {
    /// Their tasks, finished once the shutdown signal drained them.
    pub tasks: Vec<JoinHandle<()>>,
    /// Dropped at shutdown: WebSocket streams still negotiating end with `system-shutdown`.
    pub listening: watch::Sender<()>,
}

/// Binds and starts the listeners `cfg` asks for. Plain HTTP on a non-loopback address is
/// refused unless `[http] behind_tls_proxy` says a TLS-terminating proxy is in front.
pub async fn start(
    cfg: &Config,
    c2s: Arc<C2sContext>,
    https: Arc<rustls::ServerConfig>,
    websub: Arc<rookery_websub::Hub>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Web> {
    let (listening, stopped) = watch::channel(());
    let ctx = Arc::new(rookery_web::WebContext {
        c2s,
        config: cfg.http.clone(),
        stopped,
        bosh: Default::default(),
        websub: Some(websub),
    });
    let mut tasks = Vec::new();
    for (addr, tls) in [(&cfg.listen.http, false), (&cfg.listen.https, true)] {
        if addr.is_empty() {
            continue;
        }
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let local = l.local_addr()?;
        if !tls && !local.ip().is_loopback() && !cfg.http.behind_tls_proxy {
            bail!(
                "[listen] http = {addr:?} is not a loopback address: plain HTTP would carry \
                 passwords in the clear. Put a TLS-terminating proxy in front and set \
                 [http] behind_tls_proxy = true, or use [listen] https"
            );
        }
        tracing::info!(addr = %local, tls, "listening for web clients (WebSocket, BOSH)");
        let router = rookery_web::router(ctx.clone());
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
                limits(cfg),
                stopped,
            ))
        } else {
            tokio::spawn(rookery_http::listener::run(l, router, limits(cfg), stopped))
        });
    }
    Ok(Web { tasks, listening })
}
