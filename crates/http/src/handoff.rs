//! Responses whose body leaves hyper once their head is written: long-lived streams
//! (Server-Sent Events) that the handler writes to the connection itself.
//!
//! Why: hyper 1.x keeps an HTTP/1 connection's read buffer (8 KiB from the first read) and
//! its header write buffer (8 KiB) for as long as the connection lives, and neither can be
//! made smaller — 16 KiB per stream that writes a few bytes every few seconds, most of an
//! idle stream's cost (docs/performance.md, "SSE"). A WebSocket sheds them when it leaves
//! hyper through the upgrade; a response made by [`response`] sheds them the same way.
//!
//! How: the handler answers with [`response`] — the head, and the function that writes the
//! body. On its way out the listener ([`crate::listener`]) notes the hand-off in the
//! connection's [`Slot`] and lets hyper write the head, with `Connection: close` (the stream
//! is the connection's last response, RFC 9112 §9.6) and a body hyper never sees the end
//! of. Once hyper has flushed the head, the listener takes the connection back
//! (`into_parts`, dropping hyper's buffers and whatever the client pipelined after the
//! request) and runs the function with a [`BodyWriter`], which frames the body as hyper
//! announced it: chunked for HTTP/1.1 (RFC 9112 §7.1), delimited by the close for HTTP/1.0
//! (RFC 9112 §6.3).
//!
//! "Hyper has flushed the head" is seen through [`Tap`], the connection's IO as hyper gets
//! it: hyper flushes its IO only once its own write buffer is empty (its `Buffered`
//! writes everything it holds first; the early flush of `pipeline_flush` is never enabled
//! here), so the first IO flush after the hand-off was noted means the head — and any
//! earlier pipelined response — is on the wire, or in a TLS layer that flushed it too.
//!
//! A `HEAD` request gets the head alone from hyper, and no hand-off.
//!
//! A response made by [`kept_alive`] (a long-polling answer: BOSH) does not end the
//! connection: its head says nothing of closing, and once its body is finished the listener
//! serves the connection's next request with a fresh hyper connection. It falls back to
//! closing when the client asked for it (`Connection: close`, HTTP/1.0), pipelined a request
//! behind this one, or sent anything while the body was pending.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, Version};
use axum::response::Response;
use bytes::Buf;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The connection as a [`BodyWriter`] holds it: a TCP or TLS stream.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
type Run = Box<dyn FnOnce(BodyWriter) -> BoxFuture + Send>;

/// The hand-off a [`response`] carries in its extensions until the listener takes it
/// (extensions must be `Clone`: the clones share the one function).
#[derive(Clone)]
struct Handoff {
    run: Arc<Mutex<Option<Run>>>,
    /// The connection serves further requests after this body ([`kept_alive`]).
    keep_alive: bool,
}

/// Where a kept-alive body's writer leaves the connection for the listener.
type Back = Arc<Mutex<Option<Box<dyn Io>>>>;

/// A `200 OK` with `headers` whose body `run` writes once the listener has handed it the
/// connection. Served by anything but [`crate::listener`], the body never comes.
pub fn response<F, Fut>(headers: HeaderMap, run: F) -> Response
where
    F: FnOnce(BodyWriter) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    handoff(headers, Box::new(move |w| Box::pin(run(w))), false)
}

/// A [`response`] after which the connection serves further requests (see the module
/// docs): for answers that wait long and end soon, such as a held BOSH request.
pub fn kept_alive<F, Fut>(headers: HeaderMap, run: F) -> Response
where
    F: FnOnce(BodyWriter) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    handoff(headers, Box::new(move |w| Box::pin(run(w))), true)
}

fn handoff(headers: HeaderMap, run: Run, keep_alive: bool) -> Response {
    // Hyper sees a body of unknown length that never ends: it announces chunked framing
    // (close-delimited to an HTTP/1.0 client) and never writes the last chunk.
    let mut r = Response::new(Body::from_stream(futures_util::stream::pending::<
        Result<Bytes, Infallible>,
    >()));
    *r.headers_mut() = headers;
    let h = r.headers_mut();
    h.remove(header::CONTENT_LENGTH);
    h.remove(header::TRANSFER_ENCODING);
    if !keep_alive {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r.extensions_mut().insert(Handoff {
        run: Arc::new(Mutex::new(Some(run))),
        keep_alive,
    });
    r
}

/// How the body after a hand-off is framed, from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// HTTP/1.1: chunks.
    Chunked,
    /// HTTP/1.0: the bytes as they are, ended by the close.
    CloseDelimited,
}

impl Framing {
    /// The framing of a response to `req`; `None` when the response has no body (`HEAD`).
    pub(crate) fn of<B>(req: &Request<B>) -> Option<Framing> {
        if req.method() == Method::HEAD {
            None
        } else if req.version() <= Version::HTTP_10 {
            Some(Framing::CloseDelimited)
        } else {
            Some(Framing::Chunked)
        }
    }
}

/// One connection's hand-off state, shared by the listener, the service wrapper that sees
/// the responses, and the [`Tap`] that sees the IO.
#[derive(Default)]
pub(crate) struct Slot {
    pending: Mutex<Option<Ready>>,
    /// The IO was flushed and not written since.
    flushed: AtomicBool,
}

impl Slot {
    /// `resp` on its way to hyper: a hand-off in it is noted for the listener (or dropped
    /// when `framing` says the response has no body).
    /// `reusable`: the request allows the connection to serve another one (HTTP/1.1
    /// without `Connection: close`), see [`reusable`].
    pub(crate) fn intercept(
        &self,
        mut resp: Response,
        framing: Option<Framing>,
        reusable: bool,
    ) -> Response {
        let Some(handoff) = resp.extensions_mut().remove::<Handoff>() else {
            return resp;
        };
        let run = handoff
            .run
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let (Some(run), Some(framing)) = (run, framing) {
            let reuse = handoff.keep_alive && reusable && framing == Framing::Chunked;
            if handoff.keep_alive && !reuse {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            self.flushed.store(false, Ordering::Relaxed);
            *self.pending.lock().unwrap_or_else(PoisonError::into_inner) = Some(Ready {
                run,
                framing,
                reuse,
            });
        }
        resp
    }

    /// The noted hand-off, once its head is flushed.
    pub(crate) fn take_ready(&self) -> Option<Ready> {
        if !self.flushed.load(Ordering::Relaxed) {
            return None;
        }
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// A hand-off whose head is on the wire: the body's writer, waiting for the connection.
pub(crate) struct Ready {
    run: Run,
    framing: Framing,
    /// The connection serves further requests once the body is finished.
    reuse: bool,
}

impl Ready {
    /// This body closes its connection when finished, whatever its response said.
    pub(crate) fn closing(self) -> Self {
        Self {
            reuse: false,
            ..self
        }
    }

    /// Writes the body to `io`, the connection taken back from hyper; returns the
    /// connection when it is to serve further requests.
    pub(crate) async fn run(self, io: Box<dyn Io>) -> Option<Box<dyn Io>> {
        let back = self.reuse.then(Back::default);
        (self.run)(BodyWriter {
            io,
            framing: self.framing,
            back: back.clone(),
        })
        .await;
        back.and_then(|b| b.lock().unwrap_or_else(PoisonError::into_inner).take())
    }
}

/// Whether `req` lets its connection serve another request after the response: HTTP/1.1
/// without a `close` connection option (RFC 9112 §9.3).
pub(crate) fn reusable<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && !req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|o| o.trim().eq_ignore_ascii_case("close"))
}

/// The connection's IO as hyper gets it: passes everything through and tells the [`Slot`]
/// whether the last thing done was a completed flush.
pub(crate) struct Tap<I> {
    io: I,
    slot: Arc<Slot>,
}

impl<I> Tap<I> {
    pub(crate) fn new(io: I, slot: Arc<Slot>) -> Tap<I> {
        Tap { io, slot }
    }

    pub(crate) fn into_inner(self) -> I {
        self.io
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Tap<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tap<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.slot.flushed.store(false, Ordering::Relaxed);
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.slot.flushed.store(false, Ordering::Relaxed);
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        if matches!(r, Poll::Ready(Ok(()))) {
            self.slot.flushed.store(true, Ordering::Relaxed);
        }
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The body of a handed-off response: the connection after the head, framed as the head
/// announced.
pub struct BodyWriter {
    io: Box<dyn Io>,
    framing: Framing,
    /// Where [`BodyWriter::finish`] leaves the connection of a [`kept_alive`] response that
    /// may serve further requests; `None`: it closes.
    back: Option<Back>,
}

impl BodyWriter {
    /// Writes `data` (as one chunk) and flushes it. Empty data writes nothing: an empty
    /// chunk would end the body. Waits as long as the client does not read.
    pub async fn send(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        match self.framing {
            Framing::Chunked => {
                let size = format!("{:X}\r\n", data.len());
                let mut chunk = Buf::chain(Buf::chain(size.as_bytes(), data), &b"\r\n"[..]);
                self.io.write_all_buf(&mut chunk).await?;
            }
            Framing::CloseDelimited => self.io.write_all(data).await?,
        }
        self.io.flush().await
    }

    /// Resolves when the client has closed the connection (or it failed). What the client
    /// sends meanwhile is read and dropped: the head said `Connection: close`, no further
    /// request is served.
    pub async fn closed(&mut self) {
        let mut buf = [0u8; 64];
        while let Ok(1..) = self.io.read(&mut buf).await {
            // A request behind this one, read in part: the connection cannot serve it.
            self.back = None;
        }
    }

    /// Ends the body (the last chunk), then closes the connection — or, for a
    /// [`kept_alive`] response, leaves it to the listener for the next request.
    pub async fn finish(mut self) -> io::Result<()> {
        if self.framing == Framing::Chunked {
            self.io.write_all(b"0\r\n\r\n").await?;
        }
        match self.back.take() {
            Some(back) => {
                self.io.flush().await?;
                *back.lock().unwrap_or_else(PoisonError::into_inner) = Some(self.io);
                Ok(())
            }
            None => self.io.shutdown().await,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn writer(framing: Framing) -> (BodyWriter, tokio::io::DuplexStream) {
        let (a, b) = tokio::io::duplex(1024);
        let io: Box<dyn Io> = Box::new(a);
        let back = None;
        (BodyWriter { io, framing, back }, b)
    }

    #[tokio::test]
    async fn chunked_bodies_are_framed_and_ended() {
        let (mut w, mut peer) = writer(Framing::Chunked);
        w.send(b"event: x\n\n").await.unwrap();
        w.send(b"").await.unwrap();
        w.send(&[b'a'; 26]).await.unwrap();
        w.finish().await.unwrap();
        let mut got = String::new();
        peer.read_to_string(&mut got).await.unwrap();
        let a = "a".repeat(26);
        assert_eq!(got, format!("A\r\nevent: x\n\n\r\n1A\r\n{a}\r\n0\r\n\r\n"));
    }

    #[tokio::test]
    async fn close_delimited_bodies_are_the_bytes() {
        let (mut w, mut peer) = writer(Framing::CloseDelimited);
        w.send(b"data: 1\n\n").await.unwrap();
        w.finish().await.unwrap();
        let mut got = String::new();
        peer.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "data: 1\n\n");
    }

    #[tokio::test]
    async fn closed_resolves_when_the_client_leaves() {
        let (mut w, mut peer) = writer(Framing::Chunked);
        peer.write_all(b"GET /pipelined HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        drop(peer);
        w.closed().await;
    }

    #[test]
    fn framing_follows_the_request() {
        let req = |m: Method, v: Version| Request::builder().method(m).version(v).body(()).unwrap();
        assert_eq!(
            Framing::of(&req(Method::GET, Version::HTTP_11)),
            Some(Framing::Chunked)
        );
        assert_eq!(
            Framing::of(&req(Method::GET, Version::HTTP_10)),
            Some(Framing::CloseDelimited)
        );
        assert_eq!(Framing::of(&req(Method::HEAD, Version::HTTP_11)), None);
    }
}
