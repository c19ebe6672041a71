//! The listener runner every HTTP listener shares: accept on a bound `TcpListener`, serve
//! each connection with hyper under the listener's limits, stop accepting when the server's
//! shutdown signal fires and let the requests in flight finish (bounded).
//!
//! The admin listener runs on it now; the public listener (WebSocket, BOSH, host-meta,
//! pubsub SSE) will run on it too with its own router. A WebSocket upgrade needs hyper's
//! upgradeable connection (`hyper_util::server::conn::auto`), which is a change of the
//! builder here, not of the routers.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

/// The limits of one HTTP listener.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once; further ones wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Time a client has to send a request's headers (slowloris).
    pub header_read_timeout: Duration,
    /// Time a request may take from its headers to the end of the response (`408` then).
    pub request_timeout: Duration,
    /// Largest request body accepted (`413` beyond).
    pub max_body_bytes: usize,
    /// How long requests in flight may run on after the shutdown signal.
    pub drain_timeout: Duration,
}

impl Limits {
    /// The admin listener's: few operators and scrapers, small JSON bodies.
    pub const ADMIN: Limits = Limits {
        max_connections: 64,
        header_read_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(30),
        max_body_bytes: 64 * 1024,
        drain_timeout: Duration::from_secs(5),
    };
}

/// Serves `router` on `listener` until `shutdown` completes, then drains the connections in
/// flight for at most `limits.drain_timeout`.
pub async fn run(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let app = router
        .layer(RequestBodyLimitLayer::new(limits.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ));
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "http connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("http connections still open after the drain timeout");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn request(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_until_shutdown() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let router = Router::new().route("/x", get(|| async { "hello" }));
        let task = tokio::spawn(run(l, router, Limits::ADMIN, async {
            let _ = rx.await;
        }));
        let resp = request(addr, "/x").await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(resp.ends_with("hello"));
        assert!(request(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        tx.send(()).unwrap();
        task.await.unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn bodies_beyond_the_limit_are_refused() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let limits = Limits {
            max_body_bytes: 16,
            ..Limits::ADMIN
        };
        let router = Router::new().route("/x", axum::routing::post(|b: String| async move { b }));
        tokio::spawn(run(l, router, limits, std::future::pending()));
        for (body, status) in [("small", "200"), ("x".repeat(17).as_str(), "413")] {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let req = format!(
                "POST /x HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            assert!(out.starts_with(&format!("HTTP/1.1 {status}")), "{out}");
        }
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_wait() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let limits = Limits {
            max_connections: 1,
            ..Limits::ADMIN
        };
        let router = Router::new().route("/x", get(|| async { "hello" }));
        tokio::spawn(run(l, router, limits, std::future::pending()));
        // The first connection holds the only slot while it is open.
        let idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        let second = tokio::spawn(request(addr, "/x"));
        tokio::task::yield_now().await;
        assert!(!second.is_finished());
        drop(idle);
        assert!(second.await.unwrap().starts_with("HTTP/1.1 200"));
    }
}
