//! The listener runner every HTTP listener shares: accept on a bound `TcpListener` (plain,
//! or TLS with [`run_tls`]), serve each connection with hyper under the listener's limits,
//! stop accepting when the server's shutdown signal fires and let the requests in flight
//! finish (bounded: what is still running after the drain is cut).
//!
//! Connections are served with upgrades enabled, so a handler can take the connection over
//! (the public listener's WebSocket); an upgraded connection leaves the listener's count and
//! its drain, and belongs to whoever took it. A response that hands its body off
//! ([`crate::handoff`]) gets the connection back from hyper once its head is flushed (a
//! held answer: before hyper sees it, head and body written together later); the body is
//! then written in the connection's task, which stays in the count and the drain.
//! Each request carries a [`Peer`] extension: the client's address, whether the
//! connection is TLS, and its RFC 9266 `tls-exporter` channel binding.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::StatusCode;
use axum::Router;
use bytes::Bytes;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::handoff::{self, Framing, Io, Ready, Slot, Tap};

/// The limits of one HTTP listener.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once; further ones wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Time a client has to send a request's headers (slowloris), and to finish the TLS
    /// handshake on an HTTPS listener.
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

/// Who sent a request: put into every request's extensions by the runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The TCP peer (a proxy's address when there is one in front).
    pub addr: SocketAddr,
    /// Whether the connection is TLS (HTTPS).
    pub tls: bool,
    /// The connection's RFC 9266 `tls-exporter` channel binding (TLS 1.3 only), exported
    /// once after the handshake: whoever serves a stream that lives on this one connection
    /// (a WebSocket) can offer SCRAM -PLUS with it. It binds to the TLS peer, which is a
    /// proxy's when there is one in front.
    pub tls_exporter: Option<[u8; 32]>,
    /// The name the client asked for in its TLS handshake (SNI): which certificate it was
    /// served, for the `tls-server-end-point` binding (RFC 5929). Shared, as every request
    /// of the connection carries a copy of its `Peer`.
    pub tls_server_name: Option<Arc<str>>,
}

/// Serves `router` on `listener` until `shutdown` completes, then drains the connections in
/// flight for at most `limits.drain_timeout`.
pub async fn run(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) {
    serve(listener, None, router, limits, shutdown).await;
}

/// [`run`] for HTTPS: each connection is a TLS handshake with `acceptor` first.
pub async fn run_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) {
    serve(listener, Some(acceptor), router, limits, shutdown).await;
}

/// `router` with a body size limit (`413` beyond) and a request deadline (`408`): what the
/// runner puts around every listener's router, and what a listener whose routes differ
/// (small XMPP bodies, large uploads) puts around the stricter ones.
pub fn limited(router: Router, max_body_bytes: usize, request_timeout: Duration) -> Router {
    router
        .layer(RequestBodyLimitLayer::new(max_body_bytes))
        .layer(axum::middleware::from_fn(move |req, next| {
            refuse_declared_oversize(max_body_bytes, req, next)
        }))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .layer(axum::middleware::from_fn(close_after_refused_body))
}

/// An error answer to a request that came with a body says `Connection: close` (RFC 9112
/// §9.6). The body may not have been read — the request was refused on its headers: no
/// token, a declared length over the limit, a deadline — and hyper then closes the
/// connection once the answer is written, unless the body had already arrived; without the
/// header a client that keeps connections alive sends its next request on that connection
/// and sees it cut ("server disconnected without sending a response").
async fn close_after_refused_body(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::header;
    let headers = req.headers();
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    let mut response = next.run(req).await;
    let status = response.status();
    if has_body && (status.is_client_error() || status.is_server_error()) {
        response.headers_mut().insert(
            header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// A request whose declared length is over `max` gets `413` with the JSON error body the APIs
/// behind the listeners answer with (docs/openapi.yaml, docs/http.md), where the limit layer
/// would answer plain text; a body without a declared length is cut by that layer as it is
/// read, and its reader answers the error.
async fn refuse_declared_oversize(
    max: usize,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > u64::try_from(max).unwrap_or(u64::MAX)) {
        let error = format!("the request body is larger than the {max} bytes this listener takes");
        let body = axum::Json(serde_json::json!({ "error": error }));
        return (StatusCode::PAYLOAD_TOO_LARGE, body).into_response();
    }
    next.run(req).await
}

async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let app = limited(router, limits.max_body_bytes, limits.request_timeout);
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let permits = Arc::new(Semaphore::new(max));
    // Told to every connection task when the shutdown signal fires.
    let (stop_tx, stop_rx) = watch::channel(false);
    // The connection tasks, to cut those still running after the drain.
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Finished tasks are reaped as new ones come, so the set holds the live ones.
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, addr) = tokio::select! {
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
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        let stop = stop_rx.clone();
        let header_timeout = limits.header_read_timeout;
        connections.spawn(async move {
            let mut peer = Peer {
                addr,
                tls: tls.is_some(),
                tls_exporter: None,
                tls_server_name: None,
            };
            let io: Box<dyn Io> = match tls {
                None => Box::new(stream),
                // Boxed: the task stays the size of a connection between requests.
                Some(acceptor) => match Box::pin(tokio::time::timeout(
                    header_timeout,
                    acceptor.accept(stream),
                ))
                .await
                {
                    Ok(Ok(s)) => {
                        let tls = s.get_ref().1;
                        peer.tls_exporter = rookery_stream::transport::tls_exporter(tls);
                        peer.tls_server_name = tls.server_name().map(Arc::from);
                        Box::new(s)
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%addr, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%addr, "TLS handshake timed out");
                        return;
                    }
                },
            };
            serve_requests(io, peer, app, header_timeout, stop).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a permit until it ends: all of them back means all ended.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.drain_timeout, permits.acquire_many(all))
        .await
        .is_err()
    {
        // A request whose body never comes, a TLS handshake that stalls: cut, so that what
        // they hold (the c2s context a BOSH request shares) does not keep the server from
        // ending. Upgraded connections run in tasks of their own and are not cut here.
        tracing::debug!(
            connections = connections.len(),
            "http connections still open after the drain timeout: cut"
        );
        connections.abort_all();
    }
}

/// A hand-off and the connection it writes to, taken back from hyper.
type Handed = (Ready, Box<dyn Io>);

/// Serves the requests of one connection. Between requests the connection waits outside
/// hyper for the first bytes of the next one ([`next_request`]): hyper's buffers (an 8 KiB
/// read buffer from the first read, an 8 KiB header write buffer from the start) and its
/// connection state exist while a request is read and answered, not while a kept-alive
/// connection idles — a BOSH client keeps one idle beside the one its held request is on.
/// A response whose body is handed off ([`crate::handoff`]) is written here; after a held
/// answer, the connection then waits for its next request again. A connection hyper keeps (after a
/// plain response) idles in hyper until its header timeout, as before.
async fn serve_requests(
    mut io: Box<dyn Io>,
    peer: Peer,
    app: Router,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let Some(first) = next_request(&mut io, header_timeout, &mut stop).await else {
            return;
        };
        // Boxed: hyper's connection exists only while it serves; and as a `Send` trait
        // object, since the compiler cannot prove the future `Send` for every lifetime when
        // it is awaited in this loop.
        let served: Pin<Box<dyn Future<Output = Option<Handed>> + Send>> =
            Box::pin(serve_connection(
                Prefixed { first, io },
                peer.clone(),
                app.clone(),
                header_timeout,
                stop.clone(),
            ));
        let Some((ready, handed)) = served.await else {
            return;
        };
        let Some(back) = ready.run(handed).await else {
            return;
        };
        io = back;
    }
}

/// Largest first read of a request outside hyper: one a BOSH or WebSocket request fits in.
const FIRST_READ: usize = 4096;

/// The first bytes of the connection's next request, read outside hyper into a buffer on
/// the stack of the poll that finds them, so a connection waiting for a request holds no
/// buffer. `None` when the client closed, the read failed, no request began within
/// `timeout` (hyper's header timeout for a kept-alive connection: it closed an idle one
/// after as long), or the server is stopping.
async fn next_request(
    io: &mut Box<dyn Io>,
    timeout: Duration,
    stop: &mut watch::Receiver<bool>,
) -> Option<Bytes> {
    if *stop.borrow() {
        return None;
    }
    let read = std::future::poll_fn(|cx| {
        let mut buf = [0u8; FIRST_READ];
        let mut read = ReadBuf::new(&mut buf);
        Pin::new(&mut **io)
            .poll_read(cx, &mut read)
            .map_ok(|()| Bytes::copy_from_slice(read.filled()))
    });
    tokio::select! {
        r = tokio::time::timeout(timeout, read) => r.ok()?.ok().filter(|b| !b.is_empty()),
        _ = stop.wait_for(|s| *s) => None,
    }
}

/// A connection as hyper gets it: the bytes [`next_request`] read, then the connection.
struct Prefixed {
    first: Bytes,
    io: Box<dyn Io>,
}

impl Prefixed {
    /// The connection, once hyper is done with it: the box it came in when hyper read all
    /// of the bytes read before it (a connection comes back once per kept-alive request; a
    /// box around the box each time would nest one more per request).
    fn into_box(self) -> Box<dyn Io> {
        if self.first.is_empty() {
            self.io
        } else {
            Box::new(self)
        }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.first.is_empty() {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        }
        let n = self.first.len().min(buf.remaining());
        buf.put_slice(self.first.split_to(n).as_ref());
        if self.first.is_empty() {
            // Let go of the read's allocation (an upgraded connection keeps this wrapper).
            self.first = Bytes::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Serves one connection with hyper until it ends, is upgraded, or (after `stop`) has
/// finished the request in flight; or until a response that hands its body off
/// ([`crate::handoff::response`]) has its head flushed, or one held
/// ([`crate::handoff::held`]) finds hyper's writes flushed: then the hand-off and the
/// connection, taken back from hyper, are returned.
async fn serve_connection(
    io: Prefixed,
    peer: Peer,
    app: Router,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) -> Option<Handed> {
    let slot = Arc::new(Slot::default());
    let addr = peer.addr;
    let svc = {
        let slot = slot.clone();
        tower::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(peer.clone());
            let (framing, reusable) = (Framing::of(&req), handoff::reusable(&req));
            let (app, slot) = (app.clone(), slot.clone());
            async move {
                let resp = app.oneshot(req).await?;
                match slot.intercept(resp, framing, reusable) {
                    Some(resp) => Ok::<_, Infallible>(resp),
                    // A held answer: hyper waits for it until the connection is taken back.
                    None => std::future::pending().await,
                }
            }
        })
    };
    let mut conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(
            TokioIo::new(Tap::new(io, slot.clone())),
            TowerToHyperService::new(svc),
        )
        .with_upgrades();
    let ended = tokio::select! {
        e = drive(&mut conn, &slot) => e,
        _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => {
            Pin::new(&mut conn).graceful_shutdown();
            drive(&mut conn, &slot).await
        }
    };
    match ended {
        Ok(Ok(())) => None,
        Ok(Err(e)) => {
            tracing::debug!(%addr, error = %e, "http connection ended with an error");
            None
        }
        // Hyper's buffers, its service and what the client pipelined are dropped here; a
        // connection with a request pipelined behind this one closes after the body.
        Err(handoff) => conn.into_parts().map(|parts| {
            let pipelined = !parts.read_buf.is_empty();
            let io = parts.io.into_inner().into_inner();
            let handoff = if pipelined || !io.first.is_empty() {
                handoff.closing()
            } else {
                handoff
            };
            (handoff, io.into_box())
        }),
    }
}

/// Polls `conn` until it ends (`Ok`) or the hand-off noted in `slot` is ready (`Err`).
async fn drive<C: Future + Unpin>(conn: &mut C, slot: &Slot) -> Result<C::Output, Ready> {
    std::future::poll_fn(|cx| match Pin::new(&mut *conn).poll(cx) {
        Poll::Ready(r) => Poll::Ready(Ok(r)),
        Poll::Pending => slot
            .take_ready()
            .map_or(Poll::Pending, |h| Poll::Ready(Err(h))),
    })
    .await
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
            if status == "413" {
                // The JSON error body the APIs answer with, not the limit layer's text.
                assert!(out.contains("application/json"), "{out}");
                assert!(out.contains("larger than the 16 bytes"), "{out}");
            }
        }
    }

    /// A router with `/x` (plain), `/stream` (a hand-off writing two chunks then ending,
    /// or, at `/wait`, writing one and waiting for the client to leave) and `/held` (a held
    /// answer).
    fn streaming() -> (Router, tokio::sync::mpsc::UnboundedReceiver<&'static str>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let head = || {
            let mut h = axum::http::HeaderMap::new();
            h.insert("content-type", "text/event-stream".parse().unwrap());
            h
        };
        let router = Router::new()
            .route("/x", get(|| async { "hello" }))
            .route(
                "/stream",
                get(move || async move {
                    crate::handoff::response(head(), |mut w| async move {
                        w.send(b"one\n").await.unwrap();
                        w.send(b"two\n").await.unwrap();
                        w.finish().await.unwrap();
                    })
                }),
            )
            .route(
                "/held",
                get(move || async move {
                    crate::handoff::held(head(), |a| async move {
                        a.send(b"answer").await.unwrap();
                    })
                }),
            )
            .route(
                "/wait",
                get(move || async move {
                    crate::handoff::response(head(), move |mut w| async move {
                        w.send(b"one\n").await.unwrap();
                        w.closed().await;
                        tx.send("client left").unwrap();
                    })
                }),
            );
        (router, rx)
    }

    async fn exchange(addr: std::net::SocketAddr, raw: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(raw.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn handed_off_bodies_are_chunked_and_end_the_connection() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(run(l, streaming().0, Limits::ADMIN, std::future::pending()));
        // Pipelined: the plain response first, then the stream; the third request is
        // never served (the stream said `connection: close`).
        let out = exchange(
            addr,
            "GET /x HTTP/1.1\r\nhost: x\r\n\r\nGET /stream HTTP/1.1\r\nhost: x\r\n\r\n\
             GET /x HTTP/1.1\r\nhost: x\r\n\r\n",
        )
        .await;
        let (first, stream) = out.split_once("hello").unwrap();
        assert!(first.starts_with("HTTP/1.1 200"), "{out}");
        assert!(stream.starts_with("HTTP/1.1 200"), "{out}");
        let (head, body) = stream.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        assert!(head.contains("connection: close"), "{head}");
        assert!(head.contains("content-type: text/event-stream"), "{head}");
        assert_eq!(body, "4\r\none\n\r\n4\r\ntwo\n\r\n0\r\n\r\n");
    }

    /// Reads from `s` until what came ends with `end`.
    async fn read_until(s: &mut tokio::net::TcpStream, end: &[u8]) -> String {
        let mut seen = Vec::new();
        while !seen.ends_with(end) {
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "{}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(buf.get(..n).unwrap());
        }
        String::from_utf8(seen).unwrap()
    }

    /// A held answer comes with its `Content-Length`, not chunked, and leaves the
    /// connection to the next request.
    #[tokio::test]
    async fn a_held_answer_states_its_length_and_leaves_the_connection_to_the_next_request() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(run(l, streaming().0, Limits::ADMIN, std::future::pending()));
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        for _ in 0..2 {
            s.write_all(b"GET /held HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .unwrap();
            // Each answer is whole before the next request (as a long-polling client does).
            let text = read_until(&mut s, b"answer").await;
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
            assert!(head.contains("content-length: 6"), "{head}");
            assert!(head.contains("content-type: text/event-stream"), "{head}");
            assert!(!head.contains("transfer-encoding"), "{head}");
            assert!(!head.contains("connection: close"), "{head}");
            assert_eq!(body, "answer");
        }
        // A plain request on the same connection, asking to close: served, then closed.
        let out = {
            s.write_all(b"GET /x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        assert!(
            out.starts_with("HTTP/1.1 200") && out.ends_with("hello"),
            "{out}"
        );
        // Asked to close (or by an HTTP/1.0 client), a held answer says so and closes.
        for raw in [
            "GET /held HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
            "GET /held HTTP/1.0\r\n\r\n",
        ] {
            let out = exchange(addr, raw).await;
            assert!(
                out.contains("content-length: 6\r\nconnection: close\r\n\r\nanswer")
                    && out.ends_with("answer"),
                "{out}"
            );
        }
    }

    /// Pipelined: the plain response is on the wire before the held answer, which closes
    /// the connection (the request behind it is not served).
    #[tokio::test]
    async fn a_held_answer_follows_the_responses_before_it() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(run(l, streaming().0, Limits::ADMIN, std::future::pending()));
        let out = exchange(
            addr,
            "GET /x HTTP/1.1\r\nhost: x\r\n\r\nGET /held HTTP/1.1\r\nhost: x\r\n\r\n\
             GET /x HTTP/1.1\r\nhost: x\r\n\r\n",
        )
        .await;
        let (first, held) = out.split_once("hello").unwrap();
        assert!(first.starts_with("HTTP/1.1 200"), "{out}");
        assert!(held.starts_with("HTTP/1.1 200 OK"), "{out}");
        assert!(held.ends_with("connection: close\r\n\r\nanswer"), "{out}");
    }

    #[tokio::test]
    async fn handed_off_bodies_to_http10_and_head_requests() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(run(l, streaming().0, Limits::ADMIN, std::future::pending()));
        let out = exchange(addr, "GET /stream HTTP/1.0\r\n\r\n").await;
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.0 200"), "{head}");
        assert!(!head.contains("transfer-encoding"), "{head}");
        assert_eq!(body, "one\ntwo\n");
        // HEAD: the head alone, then the connection ends.
        let out = exchange(addr, "HEAD /stream HTTP/1.1\r\nhost: x\r\n\r\n").await;
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.ends_with("\r\n\r\n"), "{out}");
    }

    #[tokio::test]
    async fn a_handed_off_body_sees_the_client_leave() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (router, mut told) = streaming();
        tokio::spawn(run(l, router, Limits::ADMIN, std::future::pending()));
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /wait HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut seen = Vec::new();
        while !seen.ends_with(b"4\r\none\n\r\n") {
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0);
            seen.extend_from_slice(buf.get(..n).unwrap());
        }
        drop(s);
        assert_eq!(told.recv().await, Some("client left"));
    }

    /// A connection waits for a request's first bytes outside hyper: a request that arrives
    /// in pieces is served whole, and a connection that starts none within the header
    /// timeout — fresh, or kept alive after a request — is closed.
    #[tokio::test]
    async fn connections_between_requests() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let limits = Limits {
            header_read_timeout: Duration::from_millis(300),
            ..Limits::ADMIN
        };
        tokio::spawn(run(l, streaming().0, limits, std::future::pending()));
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"G").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        s.write_all(b"ET /held HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(read_until(&mut s, b"answer")
            .await
            .starts_with("HTTP/1.1 200"));
        for mut idle in [s, tokio::net::TcpStream::connect(addr).await.unwrap()] {
            let mut rest = Vec::new();
            let closed = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest));
            assert!(closed.await.is_ok_and(|r| r.is_ok()) && rest.is_empty());
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
