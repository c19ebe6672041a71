//! One connection: transport, stream parser and the stream-level framing around them.
//!
//! A connection is framed one of two ways ([`Io`]): as an XML byte stream (RFC 6120 §4, TCP
//! or TLS), or as messages of one element each ([`crate::message`]: WebSocket, RFC 7395;
//! BOSH, XEP-0206). Negotiation and the session loop only use the methods here, so they run
//! unchanged over either. Both are driven from the connection's own futures: its socket, or
//! its [`MessageTransport`] (a WebSocket's socket, a BOSH session's request window), read and written within
//! the poll of the caller, with no relay task in between.

use std::net::SocketAddr;

use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::Poll;

use bytes::Bytes;
use rookery_proto::{ns, stream, Stanza, StanzaParseError, StreamError, StreamErrorCondition};
use rookery_sasl::ChannelBindings;
use rookery_xml::{Element, Event, Limits, StreamHeader, StreamParser};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::message::{self, Frame, MessageTransport, Messages};
use crate::transport::Transport;

/// Most bytes taken from the transport per read. The buffer lives on the stack only while a
/// read is polled (see [`read_with`]), so an idle connection holds no read buffer.
const READ_CHUNK: usize = 4096;

/// Longest wait for the peer to close after we sent a stream error.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Most bytes read and discarded while waiting for the peer to close after a stream error.
const LINGER_BYTES: usize = 2 * 1024 * 1024;

/// Why a connection stopped.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// I/O failure (reset, broken pipe, TLS error).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the TCP connection without closing the stream.
    #[error("connection closed by peer")]
    Eof,
    /// The peer closed the stream (`</stream:stream>`).
    #[error("stream closed by peer")]
    StreamClosed,
    /// The session moved to another connection (XEP-0198 resumption); this one is abandoned.
    #[error("session resumed on another connection")]
    Detached,
    /// We must end the stream with this error.
    #[error(transparent)]
    Stream(#[from] StreamError),
}

impl ConnError {
    /// A stream error with `condition` and `text`.
    pub fn stream(condition: StreamErrorCondition, text: &str) -> Self {
        ConnError::Stream(StreamError::with_text(condition, text))
    }
}

/// How a connection's XML travels.
enum Io {
    /// One XML byte stream (RFC 6120 §4).
    Stream(Transport),
    /// Messages of one element each (RFC 7395, XEP-0206), through a message transport.
    Messages(MessageIo),
}

/// The connection's side of a message transport.
struct MessageIo {
    transport: Box<dyn MessageTransport>,
    /// Frames waiting for the next [`Conn::flush`]; freed after it, like `Conn::out`.
    pending: std::collections::VecDeque<Frame>,
    /// A message was loaded into the parser and not read to its end yet.
    reading: bool,
    tls: bool,
    secure: bool,
    channel_binding: ChannelBindings,
    kind: rookery_core::Transport,
}

/// A connection of any kind (client, server, component).
pub struct Conn {
    /// The transport and its framing. Private: callers ask the connection (`is_tls`,
    /// `is_secure`, `channel_bindings`, `transport`), so every framing can answer.
    io: Io,
    /// The peer address.
    pub peer: SocketAddr,
    parser: StreamParser,
    /// When bytes last arrived (any bytes, whitespace keepalives included).
    last_read: Instant,
    header_sent: bool,
    /// Bytes waiting for the next [`Conn::flush`]: everything written at one wake-up goes to
    /// the transport in one write (one TLS record, one syscall) instead of one per stanza.
    /// Freed after each flush, so an idle connection holds no write buffer.
    out: Vec<u8>,
    domain: String,
    content_ns: &'static str,
    header_extra: &'static str,
    header_version: bool,
    /// The language the peer's stream header declared (`xml:lang`), if it is one.
    lang: Option<String>,
}

/// Whether `s` has the shape of a BCP 47 language tag (RFC 6120 §4.7.4 "MUST conform to
/// the NMTOKEN datatype" and be a language tag): ASCII letters, digits and hyphens in
/// subtags of 1–8, at most 35 characters. What else a client declares is ignored.
fn is_language_tag(s: &str) -> bool {
    (1..=35).contains(&s.len())
        && s.split('-')
            .all(|t| (1..=8).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// `el` as a stanza, or the error reply a malformed one gets (RFC 6120 §8.3; `None` when it
/// cannot be answered: an error or result, which must not be answered again). An element
/// that is no stanza is an `unsupported-stanza-type` stream error.
/// `answering` is the domain of this end of the stream, for the reply's `from` where the
/// stanza's `to` cannot give it.
pub fn parse_stanza(
    el: Element,
    answering: &str,
) -> Result<Result<Stanza, Option<Element>>, ConnError> {
    match Stanza::from_element(el) {
        Ok(s) => Ok(Ok(s)),
        Err(e @ StanzaParseError::Malformed { .. }) => Ok(Err(e.reply(answering))),
        Err(StanzaParseError::NotAStanza(name)) => Err(ConnError::Stream(StreamError::with_text(
            StreamErrorCondition::UnsupportedStanzaType,
            format!("unexpected <{name}/>"),
        ))),
    }
}

impl Conn {
    /// A connection with a fresh parser under `limits`, speaking `content_ns`
    /// (`jabber:client`, `jabber:server`, `jabber:component:accept`) as `domain`.
    pub fn new(
        io: Transport,
        peer: SocketAddr,
        limits: Limits,
        domain: &str,
        content_ns: &'static str,
    ) -> Self {
        Conn {
            io: Io::Stream(io),
            peer,
            parser: StreamParser::new(limits),
            last_read: Instant::now(),
            header_sent: false,
            out: Vec::new(),
            domain: domain.to_string(),
            content_ns,
            header_extra: "",
            header_version: true,
            lang: None,
        }
    }

    /// A client connection framed as messages (WebSocket, BOSH), carried by `messages`'
    /// transport. Each message is read with a fresh parser under `limits`.
    pub fn framed(
        messages: Messages,
        peer: SocketAddr,
        limits: Limits,
        domain: &str,
        content_ns: &'static str,
    ) -> Self {
        let Messages {
            transport,
            tls,
            secure,
            channel_binding,
            kind,
        } = messages;
        Conn {
            io: Io::Messages(MessageIo {
                transport,
                pending: Default::default(),
                reading: false,
                tls,
                secure,
                channel_binding,
                kind,
            }),
            peer,
            parser: StreamParser::new(limits),
            last_read: Instant::now(),
            header_sent: false,
            out: Vec::new(),
            domain: domain.to_string(),
            content_ns,
            header_extra: "",
            header_version: true,
            lang: None,
        }
    }

    /// Changes the domain our headers carry (a component stream speaks as the component's
    /// domain, known only once its header arrived).
    pub fn set_domain(&mut self, domain: &str) {
        self.domain = domain.to_string();
    }

    /// Whether our headers carry `version='1.0'` (default yes); off for peers that sent no
    /// version (RFC 6120 §4.7.5), such as XEP-0114 components.
    pub fn set_header_version(&mut self, version: bool) {
        self.header_version = version;
    }

    /// Extra namespace declarations for our stream headers (e.g. `xmlns:db='...'` for
    /// dialback), written verbatim; must start with a space.
    pub fn set_header_extra(&mut self, extra: &'static str) {
        self.header_extra = extra;
    }

    /// When bytes last arrived from the peer: any bytes count (a whitespace keepalive too), so
    /// this is what dead-peer detection looks at.
    pub fn last_read(&self) -> Instant {
        self.last_read
    }

    /// Whether the connection is encrypted (TLS, or HTTPS underneath a message framing).
    pub fn is_tls(&self) -> bool {
        match &self.io {
            Io::Stream(t) => t.is_tls(),
            Io::Messages(m) => m.tls,
        }
    }

    /// Whether the path to the peer counts as confidential: TLS, or a message framing
    /// judged secure by its adapter (HTTPS, loopback, a trusted TLS-terminating proxy).
    /// What may carry a password in the clear, and whether TLS is still required, is
    /// decided on this.
    pub fn is_secure(&self) -> bool {
        match &self.io {
            Io::Stream(t) => t.is_secure(),
            Io::Messages(m) => m.secure,
        }
    }

    /// Whether STARTTLS can still upgrade this connection: a plain byte stream. Never a
    /// message framing, whose TLS (if any) is the HTTP connection's.
    pub fn can_start_tls(&self) -> bool {
        matches!(self.io, Io::Stream(Transport::Plain(_)))
    }

    /// What the core calls this connection's transport (admin API, metrics).
    pub fn kind(&self) -> rookery_core::Transport {
        match &self.io {
            Io::Stream(_) => rookery_core::Transport::Tcp,
            Io::Messages(m) => m.kind,
        }
    }

    /// The channel bindings the connection has: a TLS stream's `tls-exporter` (the role
    /// that knows the certificate it served adds `tls-server-end-point`), or what the
    /// message framing's adapter vouched for.
    pub fn channel_bindings(&self) -> ChannelBindings {
        match &self.io {
            Io::Stream(t) => ChannelBindings::exporter(t.channel_binding()),
            Io::Messages(m) => m.channel_binding.clone(),
        }
    }

    /// The byte stream underneath (its TLS state: the peer's certificate chain); `None` for
    /// a message framing.
    pub fn transport(&self) -> Option<&Transport> {
        match &self.io {
            Io::Stream(t) => Some(t),
            Io::Messages(_) => None,
        }
    }

    /// The elements written to this connection that never reached the peer and can still be
    /// told apart, oldest first: on a message framing, what its transport kept
    /// ([`MessageTransport::take_unsent`]) and what waits for the next flush. A byte stream
    /// hands its bytes to the socket, whose buffer cannot be taken back: none.
    pub fn take_unsent(&mut self) -> Vec<Bytes> {
        let Io::Messages(m) = &mut self.io else {
            return Vec::new();
        };
        let mut unsent = m.transport.take_unsent();
        unsent.extend(m.pending.drain(..).filter_map(|f| match f {
            Frame::Element(b) => Some(b),
            _ => None,
        }));
        unsent
    }

    /// Closes the write side of the connection without a stream close (the peer is gone or
    /// the stream was already closed).
    pub async fn shutdown(&mut self) {
        match &mut self.io {
            Io::Stream(t) => {
                let _ = t.shutdown().await;
            }
            Io::Messages(m) => std::future::poll_fn(|cx| m.transport.poll_close(cx)).await,
        }
    }

    /// The domain we speak as.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The language of the peer's stream (its header's `xml:lang`), the default of its
    /// stanzas (RFC 6120 §4.7.4).
    pub fn lang(&self) -> Option<&str> {
        self.lang.as_deref()
    }

    /// Starts a new stream on the same transport (after SASL success): every byte the old
    /// parser had buffered is dropped (RFC 6120 §6.4.6).
    pub fn restart(&mut self) {
        self.parser.reset();
        if let Io::Messages(m) = &mut self.io {
            // The rest of the message that was being read went with the parser.
            m.reading = false;
        }
        self.header_sent = false;
    }

    /// Runs the TLS handshake after `<proceed/>` (RFC 6120 §5.4.3.3). The old parser and
    /// everything it buffered are dropped, so no byte sent before the handshake can reach the
    /// new stream.
    pub async fn start_tls(self, acceptor: &TlsAcceptor) -> Result<Conn, ConnError> {
        self.upgrade(Limits::PRE_AUTH, |tcp| async move {
            Ok(Transport::Tls(Box::new(acceptor.accept(tcp).await?)))
        })
        .await
    }

    /// The initiating side's [`Conn::start_tls`] (outgoing server streams): the TLS client
    /// handshake with `server_name` after `<proceed/>`, on a fresh parser with `limits`.
    pub async fn start_tls_client(
        self,
        connector: &tokio_rustls::TlsConnector,
        server_name: rustls::pki_types::ServerName<'static>,
        limits: Limits,
    ) -> Result<Conn, ConnError> {
        self.upgrade(limits, |tcp| async move {
            Ok(Transport::TlsClient(Box::new(
                connector.connect(server_name, tcp).await?,
            )))
        })
        .await
    }

    /// Both sides of STARTTLS: `handshake` turns the plain TCP stream into TLS; the new
    /// connection keeps the old one's identity but starts with a fresh parser under `limits`
    /// and nothing buffered.
    async fn upgrade<F, Fut>(self, limits: Limits, handshake: F) -> Result<Conn, ConnError>
    where
        F: FnOnce(tokio::net::TcpStream) -> Fut,
        Fut: std::future::Future<Output = std::io::Result<Transport>>,
    {
        let Conn {
            io,
            peer,
            domain,
            content_ns,
            header_extra,
            header_version,
            ..
        } = self;
        let Io::Stream(Transport::Plain(tcp)) = io else {
            return Err(ConnError::stream(
                StreamErrorCondition::PolicyViolation,
                "TLS already negotiated",
            ));
        };
        Ok(Conn {
            io: Io::Stream(handshake(tcp).await?),
            peer,
            parser: StreamParser::new(limits),
            last_read: Instant::now(),
            header_sent: false,
            out: Vec::new(),
            domain,
            content_ns,
            header_extra,
            header_version,
            // The header after TLS says it again.
            lang: None,
        })
    }

    /// Changes the parser limits (tight before authentication, wider after).
    pub fn set_limits(&mut self, limits: Limits) {
        self.parser.set_limits(limits);
    }

    /// The next parser event, reading from the transport as needed (a stream header's
    /// language is kept, [`Conn::lang`]). Cancel-safe: bytes read are handed to the parser
    /// before any other await.
    pub async fn next_event(&mut self) -> Result<Event, ConnError> {
        let event = self.read_event().await?;
        if let Event::StreamOpen(h) = &event {
            self.lang = h
                .attr("xml:lang")
                .filter(|l| is_language_tag(l))
                .map(str::to_string);
        }
        Ok(event)
    }

    /// [`Conn::next_event`] without the bookkeeping.
    async fn read_event(&mut self) -> Result<Event, ConnError> {
        if let Io::Messages(m) = &mut self.io {
            return next_message_event(m, &mut self.parser, &mut self.last_read, self.content_ns)
                .await;
        }
        loop {
            match self.parser.next_event() {
                Ok(Some(Event::StreamClose)) => return Err(ConnError::StreamClosed),
                Ok(Some(ev)) => return Ok(ev),
                Ok(None) => {}
                Err(e) => return Err(ConnError::Stream(StreamError::from(&e))),
            }
            let Io::Stream(io) = &mut self.io else {
                return Err(ConnError::Eof);
            };
            let parser = &mut self.parser;
            let n = read_with(io, |bytes| parser.feed(bytes)).await?;
            if n == 0 {
                return Err(ConnError::Eof);
            }
            self.last_read = Instant::now();
        }
    }

    /// The peer's stream header; anything else here is a `bad-format` stream error.
    pub async fn next_header(&mut self) -> Result<StreamHeader, ConnError> {
        match self.next_event().await? {
            Event::StreamOpen(h) => Ok(h),
            _ => Err(ConnError::stream(
                StreamErrorCondition::BadFormat,
                "expected a stream header",
            )),
        }
    }

    /// The next top-level element; a stream header here is a protocol error.
    pub async fn next_element(&mut self) -> Result<Element, ConnError> {
        match self.next_event().await? {
            Event::Element(el) => Ok(el),
            _ => Err(ConnError::stream(
                StreamErrorCondition::BadFormat,
                "unexpected stream header",
            )),
        }
    }

    /// `el` as a stanza. A malformed stanza is answered with its error reply (RFC 6120 §8.3)
    /// and gives `None`; an element that is no stanza is an `unsupported-stanza-type` stream
    /// error. (A stream that counts what it sends, XEP-0198, writes the reply of
    /// [`parse_stanza`] itself.)
    pub async fn stanza_or_reply(&mut self, el: Element) -> Result<Option<Stanza>, ConnError> {
        match parse_stanza(el, &self.domain)? {
            Ok(s) => Ok(Some(s)),
            Err(reply) => {
                if let Some(reply) = reply {
                    self.send(&reply).await?;
                }
                Ok(None)
            }
        }
    }

    /// Sends a SASL `<challenge/>` carrying `text` and reads the answer (RFC 6120 §6.4.2,
    /// §6.4.3): the `<response/>`, or the SASL failure condition for an `<abort/>`
    /// (`aborted`) or anything else (`malformed-request`).
    pub async fn sasl_challenge(
        &mut self,
        text: impl Into<String>,
    ) -> Result<Result<Element, &'static str>, ConnError> {
        self.send(&Element::new("challenge", ns::SASL).with_text(text))
            .await?;
        let el = self.next_element().await?;
        if el.is("abort", ns::SASL) {
            return Ok(Err("aborted"));
        }
        if !el.is("response", ns::SASL) {
            return Ok(Err("malformed-request"));
        }
        Ok(Ok(el))
    }

    /// Writes `bytes` after whatever [`Conn::queue`] gathered, and flushes.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        self.queue(bytes);
        self.flush().await
    }

    /// Adds `bytes` to what the next [`Conn::flush`] writes (no I/O). On a message framing
    /// `bytes` must be one top-level element (optionally followed by the stream close), as
    /// every writer of a stream produces them.
    pub fn queue(&mut self, bytes: &[u8]) {
        match &mut self.io {
            Io::Stream(_) => self.out.extend_from_slice(bytes),
            Io::Messages(m) => m.pending.extend(message::frames(bytes, self.content_ns)),
        }
    }

    /// How many bytes wait for the next [`Conn::flush`].
    pub fn queued(&self) -> usize {
        match &self.io {
            Io::Stream(_) => self.out.len(),
            Io::Messages(m) => m
                .pending
                .iter()
                .map(|f| match f {
                    Frame::Element(b) => b.len(),
                    _ => 0,
                })
                .sum(),
        }
    }

    /// Writes what [`Conn::queue`] gathered in one write and flushes the transport.
    ///
    /// With TLS, each write to the transport becomes at least one TLS record and one syscall
    /// (tokio-rustls sends eagerly), so gathering first is what makes a wake-up with many
    /// stanzas cost one record (up to 16 KiB) and one `sendmsg`. Cancel-safe: written bytes
    /// leave the buffer as they go, so a dropped flush resumes where it stopped.
    pub async fn flush(&mut self) -> Result<(), ConnError> {
        let io = match &mut self.io {
            Io::Stream(io) => io,
            Io::Messages(m) => return flush_frames(m).await,
        };
        while !self.out.is_empty() {
            let n = io.write(&self.out).await?;
            if n == 0 {
                return Err(ConnError::Io(std::io::ErrorKind::WriteZero.into()));
            }
            self.out.drain(..n);
        }
        // Freed, not kept: idle connections are the many, and a buffer kept for each would
        // cost more memory than one allocation per wake-up costs time.
        self.out = Vec::new();
        io.flush().await?;
        Ok(())
    }

    /// Sends a top-level element.
    pub async fn send(&mut self, el: &Element) -> Result<(), ConnError> {
        self.write(&stream::to_bytes(el)).await
    }

    /// Sends our stream header in reply to the client's.
    pub async fn send_header(&mut self, to: Option<&str>, id: &str) -> Result<(), ConnError> {
        self.header_sent = true;
        if let Io::Messages(m) = &mut self.io {
            m.pending.push_back(Frame::Open(Box::new(message::Header {
                from: self.domain.clone(),
                to: to.map(str::to_string),
                id: id.to_string(),
            })));
            return self.flush().await;
        }
        let h = stream::header_versioned(
            self.content_ns,
            &self.domain,
            to,
            id,
            self.header_extra,
            self.header_version,
        );
        self.write(&h).await
    }

    /// Ends the stream with `error` (opening a stream first if we never sent a header,
    /// RFC 6120 §4.9.1.2) and closes the transport.
    pub async fn fail(&mut self, error: &StreamError) {
        tracing::info!(condition = %error.condition, text = ?error.text, "closing stream with error");
        if matches!(self.io, Io::Messages(_)) {
            // RFC 7395 §3.6: the error, then <close/>; no linger, the adapter closes the
            // WebSocket with its closing handshake.
            if !self.header_sent {
                let _ = self.send_header(None, &new_stream_id()).await;
            }
            self.queue(&stream::to_bytes(&error.to_element()));
            self.close().await;
            return;
        }
        let mut out = Vec::new();
        if !self.header_sent {
            out.extend(stream::header_versioned(
                self.content_ns,
                &self.domain,
                None,
                &new_stream_id(),
                self.header_extra,
                self.header_version,
            ));
        }
        out.extend(stream::to_bytes(&error.to_element()));
        out.extend_from_slice(stream::CLOSE);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            let _ = self.write(&out).await;
            self.shutdown().await;
        })
        .await;
        self.linger().await;
    }

    /// After a stream error the peer may still be sending (the rest of an oversized stanza,
    /// say). Closing a socket with unread input makes the kernel answer with a TCP reset, and a
    /// reset can destroy our stream error before the peer reads it. So read and discard until
    /// the peer closes too, for at most [`LINGER_TIME`] and [`LINGER_BYTES`].
    async fn linger(&mut self) {
        let deadline = tokio::time::Instant::now() + LINGER_TIME;
        let mut left = LINGER_BYTES;
        let Io::Stream(io) = &mut self.io else {
            return;
        };
        while left > 0 {
            match tokio::time::timeout_at(deadline, read_with(io, |_| {})).await {
                Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
                _ => break,
            }
        }
    }

    /// Answers the peer's `</stream:stream>` and closes the transport (RFC 6120 §4.4).
    pub async fn close(&mut self) {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            let _ = self.write(stream::CLOSE).await;
            self.shutdown().await;
        })
        .await;
    }
}

/// The next event of a message-framed connection: the rest of the message in the parser,
/// else the next message. Cancel-safe: a message received is loaded before any other await.
async fn next_message_event(
    m: &mut MessageIo,
    parser: &mut StreamParser,
    last_read: &mut Instant,
    content_ns: &str,
) -> Result<Event, ConnError> {
    loop {
        if m.reading {
            match message::next_event(parser, content_ns)? {
                Some(Event::StreamClose) => return Err(ConnError::StreamClosed),
                Some(ev) => return Ok(ev),
                None => m.reading = false,
            }
        }
        let msg = std::future::poll_fn(|cx| m.transport.poll_recv(cx))
            .await
            .ok_or(ConnError::Eof)?;
        message::load(parser, content_ns, &msg);
        m.reading = true;
        *last_read = Instant::now();
    }
}

/// Hands the pending frames to the transport, in order, and flushes it; cancel-safe like
/// [`Conn::flush`] (a frame leaves the queue once the transport took it).
async fn flush_frames(m: &mut MessageIo) -> Result<(), ConnError> {
    let sent = std::future::poll_fn(|cx| m.transport.poll_send(cx, &mut m.pending)).await;
    // Freed, not kept, like `Conn::out`; after a failure nothing will go out anyway.
    m.pending = Default::default();
    Ok(sent?)
}

/// A fresh, unguessable stream id.
pub fn new_stream_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Reads once from the transport and hands the bytes to `take` within the same poll;
/// returns how many there were (0 at end of stream). The buffer is a local of the poll,
/// not part of the future, so a connection waiting for input (every idle one) keeps no
/// read buffer; and since the bytes are consumed before the poll returns, dropping the
/// future loses none (cancel-safe).
async fn read_with(io: &mut Transport, mut take: impl FnMut(&[u8])) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| {
        let mut buf = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut rb = ReadBuf::uninit(&mut buf);
        match Pin::new(&mut *io).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                let filled = rb.filled();
                take(filled);
                Poll::Ready(Ok(filled.len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    /// What is queued goes out in order at the flush, and the buffer is freed after it.
    #[tokio::test]
    async fn flush_writes_what_was_queued_and_frees_the_buffer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (tcp, addr) = listener.accept().await.unwrap();
        let mut conn = Conn::new(
            Transport::Plain(tcp),
            addr,
            Limits::PRE_AUTH,
            "localhost",
            ns::CLIENT,
        );
        conn.queue(b"<a/>");
        conn.queue(b"<b/>");
        assert_eq!(conn.queued(), 8);
        conn.write(b"<c/>").await.unwrap();
        assert_eq!(conn.queued(), 0);
        assert_eq!(conn.out.capacity(), 0);
        let mut got = [0u8; 12];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"<a/><b/><c/>");
    }

    /// An in-process pipe is a byte stream that counts as secure, cannot start TLS, and
    /// carries the stream like a socket.
    #[tokio::test]
    async fn memory_pipe_is_secure_and_carries_the_stream() {
        let (mut peer, server) = tokio::io::duplex(1024);
        let addr = "127.0.0.1:1".parse().unwrap();
        let mut conn = Conn::new(
            Transport::Memory(server),
            addr,
            Limits::PRE_AUTH,
            "localhost",
            ns::CLIENT,
        );
        assert!(conn.is_secure() && !conn.is_tls() && !conn.can_start_tls());
        assert!(conn.channel_bindings().is_empty());
        conn.write(b"<a/>").await.unwrap();
        let mut got = [0u8; 4];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"<a/>");
    }

    fn framed() -> (
        Conn,
        tokio::sync::mpsc::Sender<bytes::Bytes>,
        tokio::sync::mpsc::Receiver<Frame>,
    ) {
        let (to_conn, incoming) = tokio::sync::mpsc::channel(4);
        let (outgoing, from_conn) = tokio::sync::mpsc::channel(8);
        let messages = Messages {
            transport: Box::new(crate::channels::Channels::new(incoming, outgoing)),
            tls: false,
            secure: true,
            channel_binding: ChannelBindings::default(),
            kind: rookery_core::Transport::WebSocket,
        };
        let peer = "127.0.0.1:1".parse().unwrap();
        let conn = Conn::framed(messages, peer, Limits::PRE_AUTH, "localhost", ns::CLIENT);
        (conn, to_conn, from_conn)
    }

    /// A message-framed connection reads <open/> as the header and each message as an
    /// element, survives a restart mid-message, and ends an error with <close/>.
    #[tokio::test]
    async fn message_framing_reads_and_writes_frames() {
        let (mut conn, to_conn, mut from_conn) = framed();
        assert!(conn.is_secure() && !conn.is_tls() && !conn.can_start_tls());
        assert!(conn.transport().is_none());
        let open =
            "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>";
        to_conn.send(open.into()).await.unwrap();
        assert_eq!(
            conn.next_header().await.unwrap().attr("to"),
            Some("localhost")
        );
        conn.send_header(None, "id1").await.unwrap();
        assert!(matches!(from_conn.recv().await, Some(Frame::Open(h)) if h.id == "id1"));
        to_conn.send("<presence/>".into()).await.unwrap();
        assert!(conn
            .next_element()
            .await
            .unwrap()
            .is("presence", ns::CLIENT));
        // A restart drops the rest of the message being read, not the next one.
        conn.restart();
        to_conn.send(open.into()).await.unwrap();
        assert!(conn.next_header().await.is_ok());
        conn.send_header(None, "id2").await.unwrap();
        assert!(matches!(from_conn.recv().await, Some(Frame::Open(_))));
        conn.queue(b"<message to='a@b'/>");
        conn.flush().await.unwrap();
        let Some(Frame::Element(b)) = from_conn.recv().await else {
            panic!("no element")
        };
        assert_eq!(&b[..], b"<message xmlns='jabber:client' to='a@b'/>");
        conn.fail(&StreamError::new(StreamErrorCondition::PolicyViolation))
            .await;
        let Some(Frame::Element(e)) = from_conn.recv().await else {
            panic!("no error")
        };
        assert!(e.starts_with(b"<stream:error xmlns:stream="));
        assert_eq!(from_conn.recv().await, Some(Frame::Close));
        // The connection let go of its channel: the adapter closes the transport.
        assert_eq!(from_conn.recv().await, None);
    }

    /// Input that ends: the client's <close/>, or the adapter gone.
    #[tokio::test]
    async fn message_framing_ends_on_close_or_eof() {
        let (mut conn, to_conn, _from_conn) = framed();
        to_conn
            .send("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>".into())
            .await
            .unwrap();
        assert!(matches!(
            conn.next_event().await,
            Err(ConnError::StreamClosed)
        ));
        drop(to_conn);
        assert!(matches!(conn.next_event().await, Err(ConnError::Eof)));
    }
}
