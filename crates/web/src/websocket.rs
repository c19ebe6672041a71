//! XMPP over WebSocket (RFC 7395) at [`PATH`].
//!
//! The handshake (§3.1-3.2): a GET upgrade offering the subprotocol `xmpp` (refused with
//! `400` otherwise), from an allowed Origin (`403` otherwise), within the c2s connection cap
//! (`503` at the cap). The upgraded connection becomes a message-framed client `Conn` and
//! runs the c2s negotiation and session; this module only relays between WebSocket
//! messages and the connection's channels ([`relay`]):
//! - a text message is one element (§3.3.3), read by the connection with the stream
//!   parser's limits; messages larger than the stanza limit are refused by the WebSocket
//!   layer itself (close code 1009, "message too big");
//! - a binary message is not XMPP (§3.3.3: UTF-8 text only): close code 1003;
//! - our frames go out as text messages: `<open/>`, each element, `<close/>` (§3.3.2,
//!   §3.6: a stream error is the `<stream:error/>` then `<close/>`), then the closing
//!   handshake with 1000.
//!
//! The relay reads the socket only while the connection can take a message, so a client
//! that sends faster than its session works is held back by TCP, never buffered here.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use rookery_http::Peer;
use rookery_proto::ns;
use rookery_stream::message::NS_FRAMING;
use rookery_stream::{Conn, Frame, Messages};
use rookery_xml::{Element, Limits};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::origin;
use crate::WebContext;

/// Where the WebSocket endpoint is served (the path XEP-0156 discovery documents name).
pub const PATH: &str = "/xmpp-websocket";

/// The subprotocol of RFC 7395 §3.1.
const SUBPROTOCOL: &str = "xmpp";

/// RFC 6455 §7.4.1 close codes.
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_UNSUPPORTED_DATA: u16 = 1003;
const CLOSE_TOO_BIG: u16 = 1009;

/// Bytes the WebSocket layer reads from the socket at once. An idle session keeps this
/// buffer (tungstenite allocates it up front and grows it for a larger message, never
/// shrinking), so it is small: most stanzas fit in one read, larger ones take several.
/// tungstenite's default of 128 KiB would dominate the memory of idle sessions; 4 KiB
/// cost 19.7 KiB per idle session at 10,000 (figures in docs/performance.md).
const READ_BUFFER: usize = 1024;

/// Messages from the client waiting for the connection. One is enough to keep the
/// connection busy; the rest waits in TCP.
const INCOMING_DEPTH: usize = 1;

/// Frames from the connection waiting for the socket: one wake-up's worth of stanzas
/// (the session flushes up to 64 KiB at a time).
const OUTGOING_DEPTH: usize = 32;

/// Longest a message may take to go out to a client that stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// `GET /xmpp-websocket`: checks the handshake and upgrades.
pub async fn upgrade(
    State(ctx): State<Arc<WebContext>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let client = origin::client_addr(
        peer.addr,
        text("x-forwarded-for"),
        text("forwarded"),
        &ctx.config.trusted_proxies,
    );
    if !origin::origin_allowed(
        text(header::ORIGIN.as_str()),
        text(header::HOST.as_str()),
        &ctx.config.allowed_origins,
    ) {
        tracing::info!(%client, origin = ?text(header::ORIGIN.as_str()), "websocket refused: origin not allowed");
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    let ws = ws.protocols([SUBPROTOCOL]);
    if ws.selected_protocol().is_none() {
        return (
            StatusCode::BAD_REQUEST,
            "the WebSocket subprotocol 'xmpp' is required (RFC 7395 §3.1)\n",
        )
            .into_response();
    }
    let Some(permit) = ctx.c2s.connections.try_acquire(client.ip()) else {
        tracing::warn!(%client, "websocket refused: client connection cap reached");
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections\n").into_response();
    };
    let limit = ctx.c2s.config.max_stanza_bytes;
    let secure = peer.tls || peer.addr.ip().is_loopback() || ctx.config.behind_tls_proxy;
    let channel_binding = channel_binding(&peer, &ctx.config.trusted_proxies);
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |socket| async move {
            serve(ctx, socket, client, peer.tls, secure, channel_binding).await;
            drop(permit);
        })
}

/// The RFC 9266 `tls-exporter` channel binding a WebSocket's stream offers SCRAM -PLUS (and
/// XEP-0440, SASL2's and FAST's bound mechanisms) with: the exporter of the HTTPS connection
/// the WebSocket was upgraded from — sound, since the stream lives on that one TLS
/// connection from the upgrade to its end. None on plain HTTP (behind a TLS-terminating
/// proxy the client's TLS is the proxy's, whose exporter we cannot know), and none when the
/// TLS peer is a trusted proxy re-encrypting to us: the binding would be the proxy's, and a
/// client's -PLUS would fail against it.
fn channel_binding(peer: &Peer, trusted_proxies: &[std::net::IpAddr]) -> Option<[u8; 32]> {
    if trusted_proxies.contains(&peer.addr.ip()) {
        return None;
    }
    peer.tls_exporter
}

/// Runs one upgraded WebSocket: the c2s stream on its message-framed `Conn`, and the relay
/// between the socket and that connection, until both are done. Both run in this task: the
/// relay outlives the negotiation when the connection resumes a session (XEP-0198) and
/// moves to that session's task.
async fn serve(
    ctx: Arc<WebContext>,
    socket: WebSocket,
    client: SocketAddr,
    tls: bool,
    secure: bool,
    channel_binding: Option<[u8; 32]>,
) {
    let span = tracing::info_span!("websocket", peer = %client, jid = tracing::field::Empty);
    if let Some(uri) = &ctx.config.websocket_see_other_uri {
        redirect(socket, uri).instrument(span).await;
        return;
    }
    let (to_conn, incoming) = mpsc::channel(INCOMING_DEPTH);
    let (outgoing, from_conn) = mpsc::channel(OUTGOING_DEPTH);
    let messages = Messages {
        incoming,
        outgoing,
        tls,
        secure,
        channel_binding,
        kind: rookery_core::Transport::WebSocket,
    };
    let conn = Conn::framed(
        messages,
        client,
        Limits::PRE_AUTH,
        ctx.c2s.core.domain(),
        ns::CLIENT,
    );
    let stream = rookery_c2s::negotiate::serve_framed(ctx.c2s.clone(), conn, ctx.stopped.clone());
    tokio::join!(
        stream.instrument(span.clone()),
        relay(socket, to_conn, from_conn).instrument(span)
    );
}

/// Moves messages between the socket and the connection until either side ends.
async fn relay(
    mut socket: WebSocket,
    to_conn: mpsc::Sender<Bytes>,
    mut from_conn: mpsc::Receiver<Frame>,
) {
    // A message read from the socket that the connection has not taken yet.
    let mut held: Option<Bytes> = None;
    let close = loop {
        tokio::select! {
            permit = to_conn.reserve(), if held.is_some() => {
                // Without a permit the connection is gone; its frames (the close) still
                // come through `from_conn`.
                if let (Ok(p), Some(m)) = (permit, held.take()) {
                    p.send(m);
                }
            }
            msg = socket.recv(), if held.is_none() => match msg {
                Some(Ok(Message::Text(text))) => held = Some(Bytes::from(text)),
                Some(Ok(Message::Binary(_))) => {
                    tracing::info!("binary WebSocket message: closing with 1003");
                    break Some((CLOSE_UNSUPPORTED_DATA, "XMPP messages are text (RFC 7395 3.3.3)"));
                }
                // Pings are answered by the WebSocket layer.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => break None,
                Some(Err(e)) => {
                    let too_big = e
                        .into_inner()
                        .downcast_ref::<tungstenite::Error>()
                        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)));
                    if too_big {
                        tracing::info!("WebSocket message beyond the stanza limit: closing with 1009");
                        break Some((CLOSE_TOO_BIG, "message larger than the stanza limit"));
                    }
                    tracing::debug!("WebSocket read failed");
                    break None;
                }
            },
            frame = from_conn.recv() => {
                let (text, last) = match frame {
                    Some(Frame::Close) => (Some(close_element(None).into()), true),
                    Some(f) => (render(f), false),
                    None => (None, true),
                };
                if let Some(text) = text {
                    let sent = tokio::time::timeout(WRITE_TIMEOUT, socket.send(Message::Text(text))).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        break None;
                    }
                }
                if last {
                    break Some((CLOSE_NORMAL, ""));
                }
            }
        }
    };
    // Ends the connection's stream (it sees end of input) before the closing handshake.
    drop(to_conn);
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(WRITE_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
    }
}

/// RFC 7395 §3.6.1: answers the client's `<open/>` with `<close see-other-uri/>`.
async fn redirect(mut socket: WebSocket, uri: &str) {
    let opened = tokio::time::timeout(WRITE_TIMEOUT, socket.recv()).await;
    if matches!(opened, Ok(Some(Ok(Message::Text(_))))) {
        let _ = socket
            .send(Message::Text(close_element(Some(uri)).into()))
            .await;
    }
    let frame = CloseFrame {
        code: CLOSE_NORMAL,
        reason: "".into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

/// A frame as the text of a WebSocket message; `None` for a close (sent by the caller).
/// An element's bytes are the message as they are (no copy).
fn render(frame: Frame) -> Option<Utf8Bytes> {
    match frame {
        Frame::Open(h) => {
            let rookery_stream::Header { from, to, id } = *h;
            let mut open = Element::new("open", NS_FRAMING)
                .with_attr("from", from)
                .with_attr("id", id)
                .with_attr("version", "1.0")
                .with_attr("xml:lang", "en");
            if let Some(to) = to {
                open.set_attr("to", to);
            }
            Some(
                String::from_utf8_lossy(&open.to_bytes())
                    .into_owned()
                    .into(),
            )
        }
        Frame::Element(bytes) => Some(
            Utf8Bytes::try_from(bytes.clone())
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned().into()),
        ),
        Frame::Close => None,
    }
}

/// RFC 7395 `<close/>`, with a `see-other-uri` when redirecting.
fn close_element(see_other_uri: Option<&str>) -> String {
    let mut close = Element::new("close", NS_FRAMING);
    if let Some(uri) = see_other_uri {
        close.set_attr("see-other-uri", uri);
    }
    String::from_utf8_lossy(&close.to_bytes()).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn frames_render_as_rfc7395_messages() {
        let open = render(Frame::Open(Box::new(rookery_stream::Header {
            from: "example.org".into(),
            to: Some("a@example.org".into()),
            id: "s1".into(),
        })))
        .unwrap()
        .to_string();
        assert!(
            open.starts_with("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'")
                || open.starts_with("<open xmlns=\"urn:ietf:params:xml:ns:xmpp-framing\""),
            "{open}"
        );
        for attr in ["from", "to", "id", "version"] {
            assert!(open.contains(&format!(" {attr}=")), "{open}");
        }
        assert!(open.ends_with("/>"), "{open}");
        assert!(close_element(Some("wss://other.example/ws")).contains("see-other-uri="));
    }

    #[test]
    fn a_trusted_proxys_tls_binds_nothing() {
        let peer = |ip: &str, tls_exporter| Peer {
            addr: SocketAddr::new(ip.parse().unwrap(), 443),
            tls: true,
            tls_exporter,
        };
        let proxy: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let cb = Some([7u8; 32]);
        assert_eq!(channel_binding(&peer("192.0.2.1", cb), &[proxy]), cb);
        assert_eq!(channel_binding(&peer("10.0.0.1", cb), &[proxy]), None);
        assert_eq!(channel_binding(&peer("192.0.2.1", None), &[]), None);
    }
}
