//! The upgraded WebSocket as its connection's [`MessageTransport`]: the `Conn` reads and
//! writes the socket itself, within its own polls, so a stanza in or out costs no channel
//! hop and no wake-up of another task (an earlier relay task between the socket and the
//! connection cost about half again the CPU of a TCP client per message).
//!
//! What RFC 6455 and RFC 7395 ask of the socket is done here:
//! - a text message is one element (RFC 7395 §3.3.3), handed to the connection as it is;
//! - a binary message is not XMPP (§3.3.3: UTF-8 text only): closed with 1003;
//! - a message beyond the stanza limit is refused by the WebSocket layer while reading its
//!   header, never buffered: closed with 1009;
//! - pings are answered by the WebSocket layer when it next reads;
//! - our frames go out as text messages; after RFC 7395's `<close/>` comes the closing
//!   handshake with 1000, and the peer's close is answered before the input ends;
//! - a write that cannot go on for [`WRITE_TIMEOUT`] (the client stopped reading) fails,
//!   which ends the stream as a lost connection;
//! - a socket let go of still open (its connection dropped without closing) is closed with
//!   1000 by a short task of its own, as the relay did when the connection went away.
//!
//! The connection reads only when it wants an element, so a client that sends faster than
//! its session works is held back by TCP, never buffered here.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{ready, Context, Poll};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream};
use rookery_stream::listen::Permit;
use rookery_stream::{Frame, MessageTransport};
use tokio::time::Sleep;

use super::{close_element, render, WRITE_TIMEOUT};

/// RFC 6455 §7.4.1 close codes.
pub(super) const CLOSE_NORMAL: u16 = 1000;
const CLOSE_UNSUPPORTED_DATA: u16 = 1003;
const CLOSE_TOO_BIG: u16 = 1009;

/// A WebSocket driven by its connection.
pub(super) struct Socket {
    /// `None` once closed or failed: the TCP connection goes with it, and everything after
    /// reads as ended. In a mutex never locked, only reached through `&mut` ([`Socket::ws`]):
    /// the connection must be `Sync` (negotiation holds `&Conn` across awaits) and the
    /// upgraded HTTP connection is not; a mutex is `Sync` for any `Send` value, and
    /// `get_mut` costs nothing.
    ws: Option<Mutex<WebSocket>>,
    /// Our close frame is queued (or the peer's close answered): what is left is flushing
    /// it.
    closing: bool,
    /// When a blocked write gives up: armed when a write first cannot go on, disarmed when
    /// one completes. Boxed and only while blocked, so an idle socket holds none.
    deadline: Option<Pin<Box<Sleep>>>,
    /// The socket's place under the client connection cap: held as long as the socket,
    /// wherever the connection goes (a resumed session moves it to the session's task).
    _permit: Permit,
}

impl Socket {
    pub(super) fn new(ws: WebSocket, permit: Permit) -> Self {
        Socket {
            ws: Some(Mutex::new(ws)),
            closing: false,
            deadline: None,
            _permit: permit,
        }
    }

    /// The socket, unless closed.
    fn ws(&mut self) -> Option<&mut WebSocket> {
        let ws = self.ws.as_mut()?;
        Some(ws.get_mut().unwrap_or_else(PoisonError::into_inner))
    }

    /// Queues our close frame with `code`; the closing handshake is then flushed by
    /// [`Socket::poll_closed`].
    fn start_close(&mut self, code: u16, reason: &'static str) {
        if self.closing {
            return;
        }
        self.closing = true;
        let Some(ws) = self.ws() else { return };
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        if Pin::new(ws)
            .start_send(Message::Close(Some(frame)))
            .is_err()
        {
            self.ws = None;
        }
    }

    /// Finishes the closing handshake (our close frame, or the answer to the peer's) within
    /// the write deadline, then lets go of the socket.
    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.start_close(CLOSE_NORMAL, "");
        let Some(ws) = self.ws() else {
            return Poll::Ready(());
        };
        let flushed = Pin::new(ws).poll_close(cx).map_err(io::Error::other);
        let _ = ready!(self.timed(cx, flushed));
        self.ws = None;
        Poll::Ready(())
    }

    /// Sends `frames` and flushes; after a `<close/>`, the closing handshake.
    fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        frames: &mut VecDeque<Frame>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.closing {
                // Nothing follows RFC 7395's <close/>.
                frames.clear();
                ready!(self.poll_closed(cx));
                return Poll::Ready(Ok(()));
            }
            let Some(ws) = self.ws() else {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            };
            if frames.is_empty() {
                return Pin::new(ws).poll_flush(cx).map_err(io::Error::other);
            }
            ready!(Pin::new(&mut *ws).poll_ready(cx)).map_err(io::Error::other)?;
            let Some(frame) = frames.pop_front() else {
                continue;
            };
            let text = render(frame);
            let last = text.is_none();
            let text = text.unwrap_or_else(|| close_element(None).into());
            Pin::new(ws)
                .start_send(Message::Text(text))
                .map_err(io::Error::other)?;
            if last {
                self.start_close(CLOSE_NORMAL, "");
            }
        }
    }

    /// `poll` as a write under the write deadline: pending for [`WRITE_TIMEOUT`] since the
    /// first blocked write is a failure.
    fn timed<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(r) = poll {
            self.deadline = None;
            return Poll::Ready(r);
        }
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_TIMEOUT)));
        ready!(deadline.as_mut().poll(cx));
        self.deadline = None;
        tracing::info!("WebSocket write stalled: the client stopped reading");
        Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
    }
}

impl MessageTransport for Socket {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        loop {
            if self.closing {
                ready!(self.poll_closed(cx));
            }
            let Some(ws) = self.ws() else {
                return Poll::Ready(None);
            };
            match ready!(Pin::new(ws).poll_next(cx)) {
                Some(Ok(Message::Text(text))) => return Poll::Ready(Some(Bytes::from(text))),
                Some(Ok(Message::Binary(_))) => {
                    tracing::info!("binary WebSocket message: closing with 1003");
                    self.start_close(
                        CLOSE_UNSUPPORTED_DATA,
                        "XMPP messages are text (RFC 7395 3.3.3)",
                    );
                }
                // Pings are answered by the WebSocket layer (at its next read: the loop).
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                // The WebSocket layer queued the answer; flushing it ends the input.
                Some(Ok(Message::Close(_))) => self.closing = true,
                Some(Err(e)) => {
                    let too_big = e
                        .into_inner()
                        .downcast_ref::<tungstenite::Error>()
                        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)));
                    if too_big {
                        tracing::info!(
                            "WebSocket message beyond the stanza limit: closing with 1009"
                        );
                        self.start_close(CLOSE_TOO_BIG, "message larger than the stanza limit");
                    } else {
                        tracing::debug!("WebSocket read failed");
                        self.ws = None;
                    }
                }
                None => self.ws = None,
            }
        }
    }

    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        frames: &mut VecDeque<Frame>,
    ) -> Poll<io::Result<()>> {
        let written = self.poll_write(cx, frames);
        let written = ready!(self.timed(cx, written));
        if written.is_err() {
            // Failed or stalled: no closing handshake could go through either.
            self.ws = None;
        }
        Poll::Ready(written)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_closed(cx)
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.start_close(CLOSE_NORMAL, "");
        let Some(ws) = self.ws.take() else {
            return;
        };
        let mut ws = ws.into_inner().unwrap_or_else(PoisonError::into_inner);
        // The connection let go of an open socket (its stream ended without closing): the
        // handshake is finished here, as the relay did when the connection went away.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = tokio::time::timeout(WRITE_TIMEOUT, ws.close()).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::future::{poll_fn, IntoFuture};
    use std::sync::Arc;

    use axum::extract::ws::WebSocketUpgrade;
    use axum::routing::get;
    use futures_util::StreamExt;
    use rookery_stream::ConnectionCap;
    use tokio::net::TcpStream;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::Message as Client;
    use tokio_tungstenite::WebSocketStream;

    /// Messages beyond this are refused in these tests.
    const LIMIT: usize = 1024;

    /// A server-side `Socket` under `cap` and the client at the other end of it.
    async fn pair(cap: &ConnectionCap) -> (Socket, WebSocketStream<TcpStream>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tx = Arc::new(Mutex::new(Some(tx)));
        let app = axum::Router::new().route(
            "/",
            get(move |ws: WebSocketUpgrade| async move {
                ws.max_message_size(LIMIT).on_upgrade(move |ws| async move {
                    if let Some(tx) = tx.lock().unwrap().take() {
                        let _ = tx.send(ws);
                    }
                })
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(axum::serve(listener, app).into_future());
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (client, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp)
            .await
            .unwrap();
        let ws = rx.await.unwrap();
        let permit = cap.try_acquire(addr.ip()).unwrap();
        (Socket::new(ws, permit), client)
    }

    async fn recv(s: &mut Socket) -> Option<Bytes> {
        poll_fn(|cx| s.poll_recv(cx)).await
    }

    /// The close code the client got next, after any other messages.
    async fn close_code(client: &mut WebSocketStream<TcpStream>) -> Option<CloseCode> {
        while let Some(m) = client.next().await {
            if let Client::Close(frame) = m.unwrap() {
                return frame.map(|f| f.code);
            }
        }
        None
    }

    #[tokio::test]
    async fn frames_go_out_as_text_then_close_with_1000() {
        let cap = ConnectionCap::new(10);
        let (mut s, mut client) = pair(&cap).await;
        let mut frames = VecDeque::from([
            Frame::Element(Bytes::from_static(b"<a xmlns='jabber:client'/>")),
            Frame::Close,
            Frame::Element(Bytes::from_static(b"<b/>")),
        ]);
        poll_fn(|cx| s.poll_send(cx, &mut frames)).await.unwrap();
        assert!(frames.is_empty());
        let text = |m: Option<Result<Client, _>>| m.unwrap().unwrap().into_text().unwrap();
        assert_eq!(text(client.next().await), "<a xmlns='jabber:client'/>");
        assert!(text(client.next().await).starts_with("<close"));
        // Nothing after <close/>: the closing handshake, and the socket is let go of.
        assert_eq!(close_code(&mut client).await, Some(CloseCode::Normal));
        assert!(s.ws.is_none());
        let mut more = VecDeque::from([Frame::Close]);
        assert!(poll_fn(|cx| s.poll_send(cx, &mut more)).await.is_ok());
        assert_eq!(recv(&mut s).await, None);
        drop(s);
        assert_eq!(cap.in_use(), 0);
    }

    #[tokio::test]
    async fn text_is_read_pings_answered_binary_closed_with_1003() {
        let cap = ConnectionCap::new(10);
        let (mut s, mut client) = pair(&cap).await;
        client
            .send(Client::Ping(b"p".to_vec().into()))
            .await
            .unwrap();
        client.send(Client::text("<presence/>")).await.unwrap();
        assert_eq!(recv(&mut s).await.as_deref(), Some(&b"<presence/>"[..]));
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Client::Pong(b"p".to_vec().into())
        );
        client
            .send(Client::binary(b"<presence/>".to_vec()))
            .await
            .unwrap();
        assert_eq!(recv(&mut s).await, None);
        assert_eq!(close_code(&mut client).await, Some(CloseCode::Unsupported));
        // Closed and let go of: the cap counts it only until the socket is dropped.
        assert_eq!(cap.in_use(), 1);
        drop(s);
        assert_eq!(cap.in_use(), 0);
    }

    #[tokio::test]
    async fn a_message_beyond_the_limit_closes_with_1009() {
        let cap = ConnectionCap::new(10);
        let (mut s, mut client) = pair(&cap).await;
        client
            .send(Client::text("x".repeat(LIMIT + 1)))
            .await
            .unwrap();
        assert_eq!(recv(&mut s).await, None);
        assert_eq!(close_code(&mut client).await, Some(CloseCode::Size));
    }

    #[tokio::test]
    async fn the_peers_close_is_answered_and_ends_the_input() {
        let cap = ConnectionCap::new(10);
        let (mut s, mut client) = pair(&cap).await;
        client.close(None).await.unwrap();
        assert_eq!(recv(&mut s).await, None);
        assert!(s.ws.is_none());
        // The answer came back: the client's stream ends cleanly.
        assert!(matches!(
            client.next().await,
            Some(Ok(Client::Close(_))) | None
        ));
    }

    #[tokio::test]
    async fn an_open_socket_let_go_of_is_closed_with_1000() {
        let cap = ConnectionCap::new(10);
        let (s, mut client) = pair(&cap).await;
        drop(s);
        assert_eq!(cap.in_use(), 0);
        assert_eq!(close_code(&mut client).await, Some(CloseCode::Normal));
    }
}
