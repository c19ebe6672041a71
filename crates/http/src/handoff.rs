//! Responses whose body leaves hyper once their head is written: long-lived streams
//! (Server-Sent Events) that the handler writes to the connection itself; and answers that
//! leave hyper before they exist (a held BOSH request), head and body written together once
//! the body is known.
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
//! A response made by [`held`] (a long-polling answer: BOSH) is one body whose length its
//! head states (`Content-Length`: XEP-0124 §5 asks BOSH not to use chunked transfer coding,
//! which old clients and proxies mishandle) — but that body does not exist when the handler
//! returns. So hyper never sees that response: the listener keeps hyper waiting for it, takes
//! the connection back once hyper has flushed what it held (an earlier pipelined response),
//! and runs the function with an [`Answer`], which writes head and body together once the
//! body is there. It does not end the connection: after the answer the listener serves the
//! connection's next request with a fresh hyper connection. It closes instead, and its head
//! says so, when the client asked for it (`Connection: close`, HTTP/1.0), pipelined a
//! request behind this one, or sent anything while the answer was pending.

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

/// The connection as a [`BodyWriter`] or an [`Answer`] holds it: a TCP or TLS stream.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What a hand-off runs once it has the connection.
enum Run {
    /// The body after the head hyper wrote ([`response`]).
    Body(Box<dyn FnOnce(BodyWriter) -> BoxFuture + Send>),
    /// A whole answer ([`held`]), and its head's header fields, rendered (they wait as long
    /// as the answer does: a held request keeps them as a few bytes, not a `HeaderMap`).
    Answer(Box<dyn FnOnce(Answer) -> BoxFuture + Send>, Bytes),
}

/// The hand-off a response carries in its extensions until the listener takes it
/// (extensions must be `Clone`: the clones share the one function).
#[derive(Clone)]
struct Handoff {
    run: Arc<Mutex<Option<Run>>>,
}

/// Where an answer's writer leaves the connection for the listener.
type Back = Arc<Mutex<Option<Box<dyn Io>>>>;

/// A `200 OK` with `headers` whose body `run` writes once the listener has handed it the
/// connection. Served by anything but [`crate::listener`], the body never comes.
pub fn response<F, Fut>(headers: HeaderMap, run: F) -> Response
where
    F: FnOnce(BodyWriter) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut r = handoff(headers, |_| Run::Body(Box::new(move |w| Box::pin(run(w)))));
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// A `200 OK` with `headers` and the body `run` sends through its [`Answer`] once it has it,
/// after which the connection serves further requests (see the module docs): for answers
/// that wait long and end soon, such as a held BOSH request. Served by anything but
/// [`crate::listener`] (or to `HEAD`), the body never comes.
pub fn held<F, Fut>(headers: HeaderMap, run: F) -> Response
where
    F: FnOnce(Answer) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    handoff(headers, |h| {
        Run::Answer(Box::new(move |a| Box::pin(run(a))), fields(h))
    })
}

/// A response with `headers` (less any framing of theirs) carrying the hand-off `run` makes
/// of them.
fn handoff(mut headers: HeaderMap, run: impl FnOnce(&HeaderMap) -> Run) -> Response {
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::TRANSFER_ENCODING);
    headers.remove(header::CONNECTION);
    let run = run(&headers);
    // Hyper sees a body of unknown length that never ends: for a [`response`] it announces
    // chunked framing (close-delimited to an HTTP/1.0 client) and never writes the last chunk.
    let mut r = Response::new(Body::from_stream(futures_util::stream::pending::<
        Result<Bytes, Infallible>,
    >()));
    *r.headers_mut() = headers;
    r.extensions_mut().insert(Handoff {
        run: Arc::new(Mutex::new(Some(run))),
    });
    r
}

/// `headers` as the lines of a head.
fn fields(headers: &HeaderMap) -> Bytes {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    Bytes::from(out)
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
    /// when `framing` says the response has no body). `None` when hyper is not to write
    /// `resp` at all: a [`held`] answer, whose head the listener writes with its body.
    /// `reusable`: the request allows the connection to serve another one (HTTP/1.1
    /// without `Connection: close`), see [`reusable`].
    pub(crate) fn intercept(
        &self,
        mut resp: Response,
        framing: Option<Framing>,
        reusable: bool,
    ) -> Option<Response> {
        let Some(handoff) = resp.extensions_mut().remove::<Handoff>() else {
            return Some(resp);
        };
        let run = handoff
            .run
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let (Some(run), Some(framing)) = (run, framing) else {
            return Some(resp);
        };
        let answer = matches!(run, Run::Answer(..));
        self.flushed.store(false, Ordering::Relaxed);
        *self.pending.lock().unwrap_or_else(PoisonError::into_inner) = Some(Ready {
            run,
            framing,
            reuse: answer && reusable,
        });
        (!answer).then_some(resp)
    }

    /// The noted hand-off, once its head (or, for an answer, what hyper held) is flushed.
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

/// A hand-off whose head is on the wire (an answer: hyper's writes are), waiting for the
/// connection.
pub(crate) struct Ready {
    run: Run,
    framing: Framing,
    /// The connection serves further requests once the answer is written.
    reuse: bool,
}

impl Ready {
    /// This hand-off closes its connection when finished, whatever its request allowed.
    pub(crate) fn closing(self) -> Self {
        Self {
            reuse: false,
            ..self
        }
    }

    /// Writes the body (or the answer) to `io`, the connection taken back from hyper;
    /// returns the connection when it is to serve further requests.
    pub(crate) async fn run(self, io: Box<dyn Io>) -> Option<Box<dyn Io>> {
        match self.run {
            Run::Body(run) => {
                run(BodyWriter {
                    io,
                    framing: self.framing,
                })
                .await;
                None
            }
            Run::Answer(run, fields) => {
                let back = Back::default();
                run(Answer {
                    io,
                    fields,
                    reuse: self.reuse,
                    back: back.clone(),
                })
                .await;
                let mut io = back.lock().unwrap_or_else(PoisonError::into_inner);
                io.take()
            }
        }
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
        until_closed(&mut self.io, || {}).await;
    }

    /// Ends the body (the last chunk), then closes the connection.
    pub async fn finish(mut self) -> io::Result<()> {
        if self.framing == Framing::Chunked {
            self.io.write_all(b"0\r\n\r\n").await?;
        }
        self.io.shutdown().await
    }
}

/// The answer of a [`held`] response: the connection, before the head.
pub struct Answer {
    io: Box<dyn Io>,
    /// The head's header fields ([`fields`]).
    fields: Bytes,
    /// The connection serves further requests after the answer.
    reuse: bool,
    /// Where [`Answer::send`] leaves the connection when it does.
    back: Back,
}

impl Answer {
    /// Resolves when the client has closed the connection (or it failed). Anything the
    /// client sends meanwhile (a request behind this one, read in part) is dropped, and the
    /// connection closes after the answer.
    pub async fn closed(&mut self) {
        let reuse = &mut self.reuse;
        until_closed(&mut self.io, || *reuse = false).await;
    }

    /// Writes the head — `200 OK`, the fields, `Content-Length`, and `Connection: close`
    /// when the connection ends after it — and `body`; then closes the connection, or
    /// leaves it to the listener for the next request. Waits as long as the client does
    /// not read.
    pub async fn send(mut self, body: &[u8]) -> io::Result<()> {
        let head = head(&self.fields, body.len(), !self.reuse);
        let mut out = Buf::chain(&head[..], body);
        self.io.write_all_buf(&mut out).await?;
        if !self.reuse {
            return self.io.shutdown().await;
        }
        self.io.flush().await?;
        *self.back.lock().unwrap_or_else(PoisonError::into_inner) = Some(self.io);
        Ok(())
    }
}

/// The head of an answer of `len` bytes with `fields`. `Date` as hyper writes it on every
/// response (RFC 9110 §6.6.1). `HTTP/1.1` to an HTTP/1.0 client too (RFC 9110 §6.2: the
/// highest version of the same major), whose connection closes after it.
fn head(fields: &[u8], len: usize, close: bool) -> Vec<u8> {
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let mut out = Vec::with_capacity(fields.len() + 128);
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    out.extend_from_slice(fields);
    out.extend_from_slice(format!("date: {date}\r\ncontent-length: {len}\r\n").as_bytes());
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Reads `io` until the client closes it (or it fails), dropping what comes and calling
/// `on_data` for each piece.
async fn until_closed(io: &mut Box<dyn Io>, mut on_data: impl FnMut()) {
    let mut buf = [0u8; 64];
    while let Ok(1..) = io.read(&mut buf).await {
        on_data();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn writer(framing: Framing) -> (BodyWriter, tokio::io::DuplexStream) {
        let (a, b) = tokio::io::duplex(1024);
        let io: Box<dyn Io> = Box::new(a);
        (BodyWriter { io, framing }, b)
    }

    /// An answer with a `content-type` field, on a connection that may serve more
    /// requests (`reuse`) or not.
    fn answer(reuse: bool) -> (Answer, Back, tokio::io::DuplexStream) {
        let (a, b) = tokio::io::duplex(1024);
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
        let back = Back::default();
        let answer = Answer {
            io: Box::new(a),
            fields: fields(&h),
            reuse,
            back: back.clone(),
        };
        (answer, back, b)
    }

    /// The head and body `peer` got, up to the end of a body of `len` bytes.
    async fn read_answer(peer: &mut tokio::io::DuplexStream, len: usize) -> (String, String) {
        let mut got = Vec::new();
        loop {
            let text = String::from_utf8(got.clone()).unwrap();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                if body.len() == len {
                    return (head.to_string(), body.to_string());
                }
            }
            let mut buf = [0u8; 256];
            let n = peer.read(&mut buf).await.unwrap();
            assert!(n > 0, "{text}");
            got.extend_from_slice(buf.get(..n).unwrap());
        }
    }

    /// An answer is one head with its `Content-Length` and no chunks (XEP-0124 §5), and
    /// leaves its connection to the listener.
    #[tokio::test]
    async fn an_answer_states_its_length_and_keeps_the_connection() {
        let (a, back, mut peer) = answer(true);
        a.send(b"<body/>").await.unwrap();
        let (head, body) = read_answer(&mut peer, 7).await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("\r\ncontent-type: text/xml\r\n"), "{head}");
        assert!(head.contains("\r\ncontent-length: 7"), "{head}");
        assert!(head.contains("\r\ndate: "), "{head}");
        assert!(!head.contains("transfer-encoding") && !head.contains("connection"));
        assert_eq!(body, "<body/>");
        assert!(back.lock().unwrap().is_some());
    }

    /// A client that sends something while its answer is pending gets the answer with
    /// `Connection: close`, then the close.
    #[tokio::test]
    async fn an_answer_after_data_from_the_client_closes() {
        let (mut a, back, mut peer) = answer(true);
        peer.write_all(b"GET /pipelined HTTP/1.1\r\n")
            .await
            .unwrap();
        let _ = tokio::time::timeout(std::time::Duration::from_millis(50), a.closed()).await;
        a.send(b"").await.unwrap();
        let mut got = String::new();
        peer.read_to_string(&mut got).await.unwrap();
        assert!(
            got.contains("\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"),
            "{got}"
        );
        assert!(got.ends_with("\r\n\r\n"), "{got}");
        assert!(back.lock().unwrap().is_none());
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
