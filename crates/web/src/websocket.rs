//! XMPP over WebSocket (RFC 7395) at [`PATH`].
//!
//! The handshake (§3.1-3.2): a GET upgrade offering the subprotocol `xmpp` (refused with
//! `400` otherwise), from an allowed Origin (`403` otherwise), within the c2s connection cap
//! (`503` at the cap). The upgraded socket becomes the message transport of a client `Conn`
//! ([`socket`]), which runs the c2s negotiation and session and reads and writes the socket
//! itself:
//! - a text message is one element (§3.3.3), read by the connection with the stream
//!   parser's limits; messages larger than the stanza limit are refused by the WebSocket
//!   layer itself (close code 1009, "message too big");
//! - a binary message is not XMPP (§3.3.3: UTF-8 text only): close code 1003;
//! - our frames go out as text messages: `<open/>`, each element, `<close/>` (§3.3.2,
//!   §3.6: a stream error is the `<stream:error/>` then `<close/>`), then the closing
//!   handshake with 1000.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use rookery_http::Peer;
use rookery_proto::ns;
use rookery_sasl::ChannelBindings;
use rookery_stream::listen::Permit;
use rookery_stream::message::NS_FRAMING;
use rookery_stream::{Conn, Frame, LiveCert, Messages};
use rookery_xml::{Element, Limits};
use tracing::Instrument;

use crate::origin;
use crate::WebContext;

/// Where the WebSocket endpoint is served (the path XEP-0156 discovery documents name).
pub const PATH: &str = "/xmpp-websocket";

/// The subprotocol of RFC 7395 §3.1.
const SUBPROTOCOL: &str = "xmpp";

mod socket;

/// Bytes the WebSocket layer reads from the socket at once. An idle session keeps this
/// buffer (tungstenite allocates it up front and grows it for a larger message, never
/// shrinking), so it is small: most stanzas fit in one read, larger ones take several.
/// tungstenite's default of 128 KiB would dominate the memory of idle sessions; 4 KiB
/// cost 19.7 KiB per idle session at 10,000 (figures in docs/performance.md).
const READ_BUFFER: usize = 1024;

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
    let channel_binding =
        channel_binding(&peer, &ctx.config.trusted_proxies, ctx.c2s.cert.as_deref());
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |socket| {
            serve(
                ctx,
                socket,
                permit,
                client,
                peer.tls,
                secure,
                channel_binding,
            )
        })
}

/// The channel bindings a WebSocket's stream offers SCRAM -PLUS (and XEP-0440, SASL2's and
/// FAST's bound mechanisms) with: those of the HTTPS connection the WebSocket was upgraded
/// from — its RFC 9266 `tls-exporter` and the RFC 5929 `tls-server-end-point` of the
/// certificate `cert` served it — sound, since the stream lives on that one TLS connection
/// from the upgrade to its end. None on plain HTTP (behind a TLS-terminating proxy the
/// client's TLS is the proxy's, which we cannot know), and none when the TLS peer is a
/// trusted proxy re-encrypting to us: the binding would be the proxy's, and a client's
/// -PLUS would fail against it.
fn channel_binding(
    peer: &Peer,
    trusted_proxies: &[std::net::IpAddr],
    cert: Option<&LiveCert>,
) -> ChannelBindings {
    if !peer.tls || trusted_proxies.contains(&peer.addr.ip()) {
        return ChannelBindings::default();
    }
    ChannelBindings {
        exporter: peer.tls_exporter.map(Vec::from),
        server_end_point: cert.and_then(|c| c.end_point_for(peer.tls_server_name.as_deref())),
    }
}

/// Runs one upgraded WebSocket: the c2s stream on a message-framed `Conn` whose transport
/// is the socket itself (with `permit`, its place under the connection cap). When the
/// connection resumes a session (XEP-0198) it moves, socket and permit with it, to that
/// session's task, and this one ends.
async fn serve(
    ctx: Arc<WebContext>,
    socket: WebSocket,
    permit: Permit,
    client: SocketAddr,
    tls: bool,
    secure: bool,
    channel_binding: ChannelBindings,
) {
    let span = tracing::info_span!("websocket", peer = %client, jid = tracing::field::Empty);
    if let Some(uri) = &ctx.config.websocket_see_other_uri {
        redirect(socket, uri).instrument(span).await;
        return;
    }
    let messages = Messages {
        transport: Box::new(socket::Socket::new(socket, permit)),
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
    rookery_c2s::negotiate::serve_framed(ctx.c2s.clone(), conn, ctx.stopped.clone())
        .instrument(span)
        .await;
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
        code: socket::CLOSE_NORMAL,
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
            tls_server_name: None,
        };
        let proxy: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let cb = Some([7u8; 32]);
        let exporter =
            |p: &Peer, proxies: &[std::net::IpAddr]| channel_binding(p, proxies, None).exporter;
        assert_eq!(
            exporter(&peer("192.0.2.1", cb), &[proxy]),
            Some(vec![7; 32])
        );
        assert_eq!(exporter(&peer("10.0.0.1", cb), &[proxy]), None);
        assert_eq!(exporter(&peer("192.0.2.1", None), &[]), None);
    }
}
