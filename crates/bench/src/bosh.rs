//! XMPP over BOSH (XEP-0124, XEP-0206) for a simulated client: what a web client's BOSH
//! library does, on two HTTP/1.1 keep-alive connections (hyper's client connections; the
//! server grants `hold` = 1, so `requests` = 2).
//!
//! The client keeps one request held by the server whenever it has nothing to send, so the
//! server can push; a payload goes out on the other connection, and the server then answers
//! the held request (empty) and holds the new one. Each response's children are handed to
//! the client's stream parser as if one XML stream carried them: a session creation or
//! `xmpp:restart` is preceded by a framing `<open/>` (as a WebSocket stream would carry) and
//! a `type='terminate'` answer is followed by a `<close/>`, so [`crate::client::Conn`] sees
//! the same events over all transports.
//!
//! Cancel-safe where [`crate::client::Conn::next_element`] must be: requests in flight live
//! in a [`FuturesUnordered`] owned here, so a scenario's `select!` that drops a wait loses no
//! response.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rookery_xml::Element;
use tokio::net::TcpStream;

use crate::client::{esc, ClientError, LIMITS, NS_FRAMING};

/// XEP-0124's namespace.
const NS_HTTPBIND: &str = "http://jabber.org/protocol/httpbind";

/// XEP-0206's namespace (`xmpp:version`, `xmpp:restart`).
const NS_XBOSH: &str = "urn:xmpp:xbosh";

/// The `wait` asked for at creation (seconds).
const WAIT: u32 = 60;

type Sender = SendRequest<Full<Bytes>>;
type InFlight = Pin<Box<dyn Future<Output = Result<(Sender, Bytes), ClientError>> + Send>>;

/// One BOSH session seen from the client.
pub struct Bosh {
    /// `Host` header and path of the endpoint.
    host: String,
    path: String,
    /// The session id, once the creation was answered.
    sid: Option<String>,
    /// The `rid` of the next request.
    rid: u64,
    /// Connections with no request on them.
    idle: Vec<Sender>,
    /// Requests sent and not answered yet (at most two).
    in_flight: FuturesUnordered<InFlight>,
    /// Elements received and not yet handed to the parser, serialized.
    received: VecDeque<Bytes>,
}

fn http_err(e: impl std::error::Error + Send + Sync + 'static) -> ClientError {
    ClientError::Io(io::Error::other(e))
}

impl Bosh {
    /// A session over `conns` (two TCP connections to the server's HTTP listener) at
    /// `http://host<path>`; nothing is sent yet.
    pub async fn new(
        conns: [TcpStream; 2],
        host: String,
        path: String,
    ) -> Result<Bosh, ClientError> {
        let mut idle = Vec::with_capacity(2);
        for tcp in conns {
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(http_err)?;
            tokio::spawn(conn);
            idle.push(sender);
        }
        Ok(Bosh {
            host,
            path,
            sid: None,
            rid: u64::from(rand::random::<u32>()),
            idle,
            in_flight: FuturesUnordered::new(),
            received: VecDeque::new(),
        })
    }

    /// Opens the stream: the session creation request (XEP-0206 §3), or an `xmpp:restart`
    /// (§5) once the session exists. The answer comes through [`Bosh::next`].
    pub async fn open(&mut self, domain: &str) -> Result<(), ClientError> {
        let domain = esc(domain);
        self.received.push_back(framing("open"));
        if self.sid.is_some() {
            let attrs =
                format!(" to='{domain}' xml:lang='en' xmpp:restart='true' xmlns:xmpp='{NS_XBOSH}'");
            return self.request(&attrs, b"").await;
        }
        let attrs = format!(
            " to='{domain}' xml:lang='en' wait='{WAIT}' hold='1' ver='1.11' \
             xmpp:version='1.0' xmlns:xmpp='{NS_XBOSH}'"
        );
        self.request(&attrs, b"").await?;
        // Everything else waits for the sid.
        while self.sid.is_none() {
            self.answer().await?;
        }
        Ok(())
    }

    /// Sends one element (or the stream's end, `</stream:stream>`: a `terminate` request).
    pub async fn send(&mut self, data: &[u8]) -> Result<(), ClientError> {
        if data == b"</stream:stream>" {
            return self.request(" type='terminate'", b"").await;
        }
        self.request("", &qualified(data)).await
    }

    /// The next received element, serialized; waits for the server, keeping one request
    /// held while there is nothing to send.
    pub async fn next(&mut self) -> Result<Bytes, ClientError> {
        loop {
            if let Some(b) = self.received.pop_front() {
                return Ok(b);
            }
            if self.in_flight.is_empty() {
                self.request("", b"").await?;
            }
            self.answer().await?;
        }
    }

    /// Sends a request with `attrs` and `payload`, on an idle connection (waiting for an
    /// answer to free one).
    async fn request(&mut self, attrs: &str, payload: &[u8]) -> Result<(), ClientError> {
        let mut sender = loop {
            if let Some(s) = self.idle.pop() {
                break s;
            }
            self.answer().await?;
        };
        let sid = self
            .sid
            .as_deref()
            .map(|s| format!(" sid='{}'", esc(s)))
            .unwrap_or_default();
        let mut body = format!(
            "<body xmlns='{NS_HTTPBIND}' rid='{}'{sid}{attrs}>",
            self.rid
        )
        .into_bytes();
        self.rid += 1;
        body.extend_from_slice(payload);
        body.extend_from_slice(b"</body>");
        let request = hyper::Request::post(self.path.as_str())
            .header(hyper::header::HOST, self.host.as_str())
            .header(hyper::header::CONTENT_TYPE, "text/xml; charset=utf-8")
            .body(Full::new(Bytes::from(body)))
            .map_err(http_err)?;
        sender.ready().await.map_err(http_err)?;
        let response = sender.send_request(request);
        self.in_flight.push(Box::pin(async move {
            let response = response.await.map_err(http_err)?;
            if !response.status().is_success() {
                return Err(ClientError::Protocol("bosh-http-status"));
            }
            let body = response.into_body().collect().await.map_err(http_err)?;
            Ok((sender, body.to_bytes()))
        }));
        Ok(())
    }

    /// Waits for one answer and takes in what it carries.
    async fn answer(&mut self) -> Result<(), ClientError> {
        let (sender, bytes) = self.in_flight.next().await.ok_or(ClientError::Eof)??;
        self.idle.push(sender);
        let body = rookery_xml::first_element(&bytes, LIMITS)
            .filter(|b| b.is("body", NS_HTTPBIND))
            .ok_or(ClientError::Protocol("bosh-bad-body"))?;
        if self.sid.is_none() {
            self.sid = Some(
                body.attr("sid")
                    .ok_or(ClientError::Protocol("bosh-no-sid"))?
                    .to_string(),
            );
        }
        self.received
            .extend(body.children().map(|c| Bytes::from(c.to_bytes())));
        if body.attr("type") == Some("terminate") {
            if body
                .attr("condition")
                .is_some_and(|c| c != "remote-stream-error")
            {
                return Err(ClientError::StreamError(format!(
                    "bosh-{}",
                    body.attr("condition").unwrap_or_default()
                )));
            }
            self.received.push_back(framing("close"));
        }
        Ok(())
    }
}

/// `data` with its top element in `jabber:client` if it named no namespace: inside a BOSH
/// `<body/>` an unqualified stanza would be in the body's namespace (XEP-0206 §6 asks for
/// `jabber:client`), and a WebSocket message has no enclosing stream to inherit it from
/// (RFC 7395 §3.3.3), whereas the scenarios write stanzas as a stream would carry them.
pub(crate) fn qualified(data: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let start_tag = data.split(|b| *b == b'>').next().unwrap_or_default();
    let name_end = start_tag
        .iter()
        .position(|b| matches!(b, b' ' | b'/' | b'\t' | b'\n'))
        .unwrap_or(start_tag.len());
    let has_xmlns = start_tag.windows(7).any(|w| w == b" xmlns=");
    if has_xmlns || !data.starts_with(b"<") || data.starts_with(b"</") {
        return data.into();
    }
    let mut out = Vec::with_capacity(data.len() + 24);
    out.extend_from_slice(data.get(..name_end).unwrap_or_default());
    out.extend_from_slice(b" xmlns='jabber:client'");
    out.extend_from_slice(data.get(name_end..).unwrap_or_default());
    out.into()
}

/// A framing `<open/>` or `<close/>` (RFC 7395's namespace, as the WebSocket transport
/// delivers them to the parser).
fn framing(name: &str) -> Bytes {
    Bytes::from(Element::new(name, NS_FRAMING).to_bytes())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::qualified;

    #[test]
    fn stanzas_are_put_in_jabber_client() {
        let q = |s: &str| String::from_utf8(qualified(s.as_bytes()).into_owned()).unwrap();
        assert_eq!(q("<presence/>"), "<presence xmlns='jabber:client'/>");
        assert_eq!(
            q("<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>"),
            "<iq xmlns='jabber:client' type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>"
        );
        let sm = "<a xmlns='urn:xmpp:sm:3' h='1'/>";
        assert_eq!(q(sm), sm);
    }
}
