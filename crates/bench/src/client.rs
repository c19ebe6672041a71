//! One simulated XMPP client: TCP (from a chosen loopback source address), STARTTLS or
//! direct TLS (XEP-0368), or XMPP over WebSocket (RFC 7395, `ws://` only) or BOSH
//! (XEP-0206, `http://` only, [`crate::bosh`]), SASL (SCRAM-SHA-1/-256 with or without `-PLUS`, PLAIN), resource
//! binding, then optionally roster fetch, initial presence and stream management
//! (XEP-0198, with resumption).
//!
//! Memory: a client is one task holding its socket (plus rustls state), a
//! [`StreamParser`] and a few strings. Reads go through a 4 KiB buffer that lives on the
//! stack only during a poll, so an idle client keeps no read buffer of its own.

use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use base64::Engine;
use rookery_sasl::{plain_message, Mechanism, SaltedPasswordCache, ScramClient};
use rookery_xml::{Element, Event, Limits, StreamParser, CONTENT_NS};
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use crate::bosh::Bosh;

/// Namespaces this client speaks: [`rookery_proto::ns`], and those of stream management and
/// pubsub, whose constants live in crates a load generator does not link (c2s, pubsub).
pub mod ns {
    pub use rookery_proto::ns::{BIND, PING, SASL, SESSION, STANZAS, STREAM, STREAM_ERRORS, TLS};
    /// XEP-0198 stream management.
    pub const SM: &str = "urn:xmpp:sm:3";
    /// XEP-0060 pubsub.
    pub const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
    /// XEP-0060 pubsub events.
    pub const PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Our parser limits: generous (rosters and pubsub payloads can be large), still bounded.
pub(crate) const LIMITS: Limits = Limits {
    max_stanza_bytes: 1024 * 1024,
    max_depth: 32,
    max_attrs: 64,
    max_elements: 50_000,
};

/// How the stream is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsMode {
    /// Plain TCP, then `<starttls/>` (RFC 6120 §5).
    Starttls,
    /// TLS from the first byte (XEP-0368), ALPN `xmpp-client`.
    Direct,
    /// No TLS at all (only servers configured to allow it).
    None,
}

/// How the XML travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// One XML stream over TCP (RFC 6120).
    Tcp,
    /// XMPP over WebSocket (RFC 7395), `ws://<host>:<port><ws-path>`, subprotocol `xmpp`.
    Websocket,
    /// XMPP over BOSH (XEP-0206), `http://<host>:<port><bosh-path>`.
    Bosh,
}

impl Transport {
    /// Whether the transport carries one element per message, with `<open/>`/`<close/>`
    /// for the stream's header and end (WebSocket and BOSH) rather than an XML stream.
    fn framed(self) -> bool {
        self != Transport::Tcp
    }
}

/// RFC 7395's namespace of `<open/>` and `<close/>`.
pub(crate) const NS_FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";

/// Which SASL mechanism to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MechChoice {
    /// The best offered of SCRAM-SHA-256, SCRAM-SHA-1, PLAIN.
    Auto,
    /// SCRAM-SHA-1.
    ScramSha1,
    /// SCRAM-SHA-256.
    ScramSha256,
    /// SCRAM-SHA-1-PLUS (tls-exporter, TLS 1.3).
    ScramSha1Plus,
    /// SCRAM-SHA-256-PLUS (tls-exporter, TLS 1.3).
    ScramSha256Plus,
    /// PLAIN.
    Plain,
}

impl MechChoice {
    fn pick(self, offered: &[String]) -> Option<Mechanism> {
        let has = |m: Mechanism| offered.iter().any(|o| o == m.name());
        let wanted = match self {
            MechChoice::Auto => {
                return [
                    Mechanism::ScramSha256,
                    Mechanism::ScramSha1,
                    Mechanism::Plain,
                ]
                .into_iter()
                .find(|m| has(*m))
            }
            MechChoice::ScramSha1 => Mechanism::ScramSha1,
            MechChoice::ScramSha256 => Mechanism::ScramSha256,
            MechChoice::ScramSha1Plus => Mechanism::ScramSha1Plus,
            MechChoice::ScramSha256Plus => Mechanism::ScramSha256Plus,
            MechChoice::Plain => Mechanism::Plain,
        };
        has(wanted).then_some(wanted)
    }
}

/// What every client of a run shares.
pub struct ClientConfig {
    /// The server: one address, or several (the nodes of a cluster) that clients are spread
    /// over by number ([`ClientConfig::target`]). Never empty.
    pub targets: Vec<SocketAddr>,
    /// Loopback source addresses to spread connections over (1 = kernel's choice).
    pub sources: u32,
    /// XMPP domain (stream `to`, account domain, TLS server name).
    pub domain: String,
    /// STARTTLS, direct TLS or none.
    pub tls: TlsMode,
    /// TCP, WebSocket or BOSH (then `tls` is `None`).
    pub transport: Transport,
    /// The WebSocket endpoint's path.
    pub ws_path: String,
    /// The BOSH endpoint's path.
    pub bosh_path: String,
    /// TLS settings without ALPN (STARTTLS).
    pub tls_starttls: Arc<rustls::ClientConfig>,
    /// TLS settings with ALPN `xmpp-client` (direct TLS).
    pub tls_direct: Arc<rustls::ClientConfig>,
    /// SASL mechanism.
    pub mechanism: MechChoice,
    /// Account `i` is `<user_prefix><first + i>`.
    pub user_prefix: String,
    /// Number of the first account.
    pub first: usize,
    /// Password of every account.
    pub password: String,
    /// Resource of account `i` is `<resource_prefix><first + i>`.
    pub resource_prefix: String,
    /// Fetch the roster after binding.
    pub roster: bool,
    /// Send initial presence.
    pub presence: bool,
    /// Enable XEP-0198 when offered (with resumption).
    pub sm: bool,
    /// Log in with XEP-0388 SASL2 (SCRAM-SHA-256, Bind2 with SM enabled inline, a XEP-0484
    /// FAST token requested); resumptions then authenticate with the token and resume inline,
    /// in one round trip after the stream header.
    pub fast: bool,
    /// Limit for the whole login.
    pub login_timeout: Duration,
    /// SCRAM `SaltedPassword` results shared by every login of the run: with accounts made
    /// by `rookery user add-bulk` (one salt for all) PBKDF2 then runs once, not per login,
    /// so the generator's CPU goes to the protocol rather than to key stretching. `None`
    /// (`--no-scram-cache`) derives it for every login, as separate real clients would.
    pub scram_cache: Option<Arc<SaltedPasswordCache>>,
}

impl ClientConfig {
    /// Localpart of client `i`.
    pub fn user(&self, i: usize) -> String {
        format!("{}{}", self.user_prefix, self.first + i)
    }

    /// Bare JID of client `i`.
    pub fn bare(&self, i: usize) -> String {
        format!("{}@{}", self.user(i), self.domain)
    }

    /// Full JID client `i` asks for.
    pub fn full(&self, i: usize) -> String {
        format!(
            "{}/{}{}",
            self.bare(i),
            self.resource_prefix,
            self.first + i
        )
    }
}

/// Why a client failed; [`ClientError::kind`] is the key of the error table.
#[derive(Debug)]
pub enum ClientError {
    /// TCP connect failed.
    Connect(io::Error),
    /// TLS handshake failed.
    Tls(io::Error),
    /// Read or write failed.
    Io(io::Error),
    /// The server closed the TCP connection.
    Eof,
    /// The server closed the stream (`</stream:stream>`).
    StreamClosed,
    /// The server's XML could not be parsed.
    Xml(rookery_xml::XmlError),
    /// The server sent a stream error with this condition.
    StreamError(String),
    /// SASL failed with this condition (or a client-side reason).
    Auth(String),
    /// Resource binding failed.
    Bind(String),
    /// Stream resumption was refused.
    Resume(String),
    /// An IQ request of ours (roster, pubsub …) got an error with this condition.
    Iq(&'static str, String),
    /// The server did something this client does not expect.
    Protocol(&'static str),
    /// A step took too long.
    Timeout(&'static str),
}

impl ClientError {
    /// A short stable key: `connect:refused`, `auth:not-authorized`, `timeout:login` …
    pub fn kind(&self) -> String {
        let io_kind = |e: &io::Error| match e.kind() {
            io::ErrorKind::ConnectionRefused => "refused".to_string(),
            io::ErrorKind::ConnectionReset => "reset".to_string(),
            io::ErrorKind::AddrNotAvailable => "addr-not-available".to_string(),
            io::ErrorKind::AddrInUse => "addr-in-use".to_string(),
            io::ErrorKind::BrokenPipe => "broken-pipe".to_string(),
            io::ErrorKind::TimedOut => "timed-out".to_string(),
            _ => match e.raw_os_error() {
                Some(24) => "too-many-open-files".to_string(),
                Some(n) => format!("errno-{n}"),
                None => "other".to_string(),
            },
        };
        match self {
            ClientError::Connect(e) => format!("connect:{}", io_kind(e)),
            ClientError::Tls(e) => format!("tls:{}", io_kind(e)),
            ClientError::Io(e) => format!("io:{}", io_kind(e)),
            ClientError::Eof => "closed:eof".into(),
            ClientError::StreamClosed => "closed:stream-end".into(),
            ClientError::Xml(e) => format!("xml:{}", e.condition()),
            ClientError::StreamError(c) => format!("stream-error:{c}"),
            ClientError::Auth(c) => format!("auth:{c}"),
            ClientError::Bind(c) => format!("bind:{c}"),
            ClientError::Resume(c) => format!("resume:{c}"),
            ClientError::Iq(w, c) => format!("iq:{w}:{c}"),
            ClientError::Protocol(w) => format!("protocol:{w}"),
            ClientError::Timeout(w) => format!("timeout:{w}"),
        }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Connect(e) | ClientError::Tls(e) | ClientError::Io(e) => {
                write!(f, "{}: {e}", self.kind())
            }
            ClientError::Xml(e) => write!(f, "{}: {e}", self.kind()),
            _ => f.write_str(&self.kind()),
        }
    }
}

/// The socket, before or after TLS, a WebSocket, or a BOSH session.
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Ws(Box<WebSocketStream<TcpStream>>),
    Bosh(Box<Bosh>),
}

/// XEP-0198 state kept across a reconnection.
#[derive(Debug, Clone, Default)]
pub struct SmState {
    /// Resumption id, if the server allows resumption.
    pub id: Option<String>,
    /// Stanzas received (the `h` we acknowledge).
    pub inbound: u32,
    /// The XEP-0484 token and the count of its last use (`--fast`).
    pub token: Option<(String, i64)>,
}

/// A negotiated client stream.
pub struct Conn {
    io: Io,
    parser: StreamParser,
    /// Full JID assigned by the server.
    pub jid: String,
    /// Stream management state, when enabled.
    pub sm: Option<SmState>,
    next_id: u32,
}

/// Escapes text for XML content or a single-quoted attribute.
pub fn esc(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    rookery_xml::escape_into(&mut out, s, true);
    String::from_utf8(out).unwrap_or_default()
}

fn tls_err(e: impl Into<io::Error>) -> ClientError {
    ClientError::Tls(e.into())
}

/// The name of the first child in `ns` of a stream error or SASL failure.
fn condition(el: &Element, ns: &str) -> String {
    el.children()
        .find(|c| c.ns() == ns && c.name() != "text")
        .map(|c| c.name().to_string())
        .unwrap_or_else(|| "undefined-condition".into())
}

/// Whether `el` is a stanza (counted by XEP-0198).
fn is_stanza(el: &Element) -> bool {
    el.ns() == CONTENT_NS && matches!(el.name(), "message" | "presence" | "iq")
}

impl Conn {
    /// Connects and logs in client `i`, resuming `resume` instead of binding when given.
    pub async fn login(
        cfg: &ClientConfig,
        i: usize,
        resume: Option<&SmState>,
    ) -> Result<Conn, ClientError> {
        // Boxed: the login's state (TLS handshake, SASL, bind) is several KiB, far more than
        // an idle session needs; inline it would stay in the client's task for its lifetime.
        let work = Box::pin(Self::login_inner(cfg, i, resume));
        match tokio::time::timeout(cfg.login_timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout("login")),
        }
    }

    /// Connects client `i` and secures the stream as configured (STARTTLS, direct TLS or
    /// none); returns the connection and the stream features before authentication.
    async fn secure(cfg: &ClientConfig, i: usize) -> Result<(Conn, Element), ClientError> {
        let tcp = connect(cfg, i).await?;
        if cfg.transport.framed() {
            let io = if cfg.transport == Transport::Bosh {
                let conns = [tcp, connect(cfg, i).await?];
                let host = cfg.target(i).to_string();
                Io::Bosh(Box::new(
                    Bosh::new(conns, host, cfg.bosh_path.clone()).await?,
                ))
            } else {
                Io::Ws(Box::new(ws_handshake(cfg, i, tcp).await?))
            };
            let mut conn = Conn {
                io,
                parser: StreamParser::new(LIMITS),
                jid: String::new(),
                sm: None,
                next_id: 0,
            };
            conn.reset_parser();
            let features = conn.open(&cfg.domain).await?;
            return Ok((conn, features));
        }
        let io = if cfg.tls == TlsMode::Direct {
            Io::Tls(Box::new(handshake(cfg, &cfg.tls_direct, tcp).await?))
        } else {
            Io::Plain(tcp)
        };
        let mut conn = Conn {
            io,
            parser: StreamParser::new(LIMITS),
            jid: String::new(),
            sm: None,
            next_id: 0,
        };
        let mut features = conn.open(&cfg.domain).await?;
        if cfg.tls == TlsMode::Starttls {
            if !features.has_child("starttls", ns::TLS) {
                return Err(ClientError::Protocol("starttls-not-offered"));
            }
            conn.send(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
                .await?;
            let el = conn.next_raw().await?;
            if !el.is("proceed", ns::TLS) {
                return Err(ClientError::Protocol("starttls-refused"));
            }
            let Io::Plain(tcp) = conn.io else {
                return Err(ClientError::Protocol("starttls-twice"));
            };
            conn.io = Io::Tls(Box::new(handshake(cfg, &cfg.tls_starttls, tcp).await?));
            conn.parser = StreamParser::new(LIMITS);
            features = conn.open(&cfg.domain).await?;
        }
        Ok((conn, features))
    }

    /// Registers account `i` in band (XEP-0077) with the configured password; `Ok(false)`
    /// when it exists already (`conflict`).
    pub async fn register(cfg: &ClientConfig, i: usize) -> Result<bool, ClientError> {
        let work = async {
            let (mut conn, features) = Self::secure(cfg, i).await?;
            if !features.has_child("register", "http://jabber.org/features/iq-register") {
                return Err(ClientError::Protocol("registration-not-offered"));
            }
            let id = conn.id();
            conn.send(
                format!(
                    "<iq type='set' id='{id}'><query xmlns='jabber:iq:register'>\
                     <username>{}</username><password>{}</password></query></iq>",
                    esc(&cfg.user(i)),
                    esc(&cfg.password)
                )
                .as_bytes(),
            )
            .await?;
            let created = match conn.await_result(&id, "register").await {
                Ok(_) => true,
                Err(ClientError::Iq(_, c)) if c == "conflict" => false,
                Err(e) => return Err(e),
            };
            conn.close().await;
            Ok(created)
        };
        match tokio::time::timeout(cfg.login_timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout("register")),
        }
    }

    async fn login_inner(
        cfg: &ClientConfig,
        i: usize,
        resume: Option<&SmState>,
    ) -> Result<Conn, ClientError> {
        let (mut conn, features) = Self::secure(cfg, i).await?;
        if cfg.fast {
            conn.sasl2(cfg, i, resume).await?;
            if cfg.presence && resume.is_none() {
                conn.send(b"<presence/>").await?;
            }
            return Ok(conn);
        }
        conn.authenticate(cfg, i, &features).await?;
        conn.reset_parser();
        let features = conn.open(&cfg.domain).await?;
        let sm_offered = features.has_child("sm", ns::SM);
        if let Some(state) = resume {
            conn.resume(state, sm_offered).await?;
            return Ok(conn);
        }
        conn.bind(cfg, i, &features).await?;
        if cfg.roster {
            let id = conn.id();
            conn.send(
                format!("<iq type='get' id='{id}'><query xmlns='jabber:iq:roster'/></iq>")
                    .as_bytes(),
            )
            .await?;
            conn.await_result(&id, "roster").await?;
        }
        if cfg.sm && sm_offered {
            conn.send(b"<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
                .await?;
            loop {
                let el = conn.next_raw().await?;
                if el.is("enabled", ns::SM) {
                    let id = (el.attr("resume") == Some("true") || el.attr("resume") == Some("1"))
                        .then(|| el.attr("id").map(str::to_string))
                        .flatten();
                    conn.sm = Some(SmState {
                        id,
                        inbound: 0,
                        token: None,
                    });
                    break;
                }
                if el.is("failed", ns::SM) {
                    return Err(ClientError::Protocol("sm-enable-failed"));
                }
                // A stanza before <enabled/> (none expected): not counted.
            }
        }
        if cfg.presence {
            conn.send(b"<presence/>").await?;
        }
        Ok(conn)
    }

    /// A fresh stanza id.
    pub fn id(&mut self) -> String {
        self.next_id = self.next_id.wrapping_add(1);
        format!("b{}", self.next_id)
    }

    /// A fresh parser for a new stream. On a WebSocket it is primed with a stream header
    /// declaring `jabber:client`, and each message is fed to it as stream content: RFC
    /// 7395's `<open/>`/`<close/>` are then read as the header and close ([`Conn::next_event`]).
    fn reset_parser(&mut self) {
        self.parser = StreamParser::new(LIMITS);
        if self.framed() {
            self.parser.feed(
                b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
            );
        }
    }

    /// Whether the stream is framed ([`Transport::framed`]).
    fn framed(&self) -> bool {
        matches!(self.io, Io::Ws(_) | Io::Bosh(_))
    }

    /// Sends the stream header and returns the `<stream:features/>` that follow it.
    async fn open(&mut self, domain: &str) -> Result<Element, ClientError> {
        if let Io::Bosh(bosh) = &mut self.io {
            bosh.open(domain).await?;
            return self.features_after_header().await;
        }
        if matches!(self.io, Io::Ws(_)) {
            let open = format!(
                "<open xmlns='{NS_FRAMING}' to='{}' version='1.0' xml:lang='en'/>",
                esc(domain)
            );
            self.send(open.as_bytes()).await?;
            return self.features_after_header().await;
        }
        let header = format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' to='{}' version='1.0' xml:lang='en'>",
            esc(domain)
        );
        self.send(header.as_bytes()).await?;
        self.features_after_header().await
    }

    async fn features_after_header(&mut self) -> Result<Element, ClientError> {
        match self.next_event().await? {
            Event::StreamOpen(_) => {}
            Event::StreamClose => return Err(ClientError::StreamClosed),
            Event::Element(_) => return Err(ClientError::Protocol("element-before-header")),
        }
        let el = self.next_raw().await?;
        if !el.is("features", ns::STREAM) {
            return Err(ClientError::Protocol("no-features"));
        }
        Ok(el)
    }

    async fn authenticate(
        &mut self,
        cfg: &ClientConfig,
        i: usize,
        features: &Element,
    ) -> Result<(), ClientError> {
        let offered: Vec<String> = features
            .get_child("mechanisms", ns::SASL)
            .map(|m| m.children().map(|c| c.text().trim().to_string()).collect())
            .unwrap_or_default();
        let mech = cfg
            .mechanism
            .pick(&offered)
            .ok_or_else(|| ClientError::Auth("mechanism-not-offered".into()))?;
        let user = cfg.user(i);
        let mut scram = None;
        let initial = if mech == Mechanism::Plain {
            plain_message(None, &user, &cfg.password)
        } else {
            let cb = if mech.is_plus() {
                self.channel_binding()
            } else {
                None
            };
            let mut c = ScramClient::new(mech, &user, &cfg.password, cb);
            if let Some(cache) = &cfg.scram_cache {
                c = c.with_cache(cache.clone());
            }
            let first = c.client_first();
            scram = Some(c);
            first
        };
        self.send(
            format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{}'>{}</auth>",
                mech.name(),
                B64.encode(initial)
            )
            .as_bytes(),
        )
        .await?;
        loop {
            let el = self.next_raw().await?;
            let data = || {
                let t = el.text();
                let t = t.trim();
                if t.is_empty() || t == "=" {
                    Ok(Vec::new())
                } else {
                    B64.decode(t)
                        .map_err(|_| ClientError::Auth("bad-base64".into()))
                }
            };
            if el.is("challenge", ns::SASL) {
                let c = scram
                    .as_mut()
                    .ok_or_else(|| ClientError::Auth("unexpected-challenge".into()))?;
                let reply = c
                    .handle_challenge(&data()?)
                    .map_err(|e| ClientError::Auth(format!("client:{e}")))?;
                self.send(
                    format!(
                        "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
                        B64.encode(reply)
                    )
                    .as_bytes(),
                )
                .await?;
            } else if el.is("success", ns::SASL) {
                if let Some(c) = scram.as_mut() {
                    c.verify_success(&data()?)
                        .map_err(|_| ClientError::Auth("bad-server-signature".into()))?;
                }
                return Ok(());
            } else if el.is("failure", ns::SASL) {
                return Err(ClientError::Auth(condition(&el, ns::SASL)));
            } else {
                return Err(ClientError::Protocol("unexpected-sasl-element"));
            }
        }
    }

    fn channel_binding(&self) -> Option<Vec<u8>> {
        let Io::Tls(t) = &self.io else { return None };
        let conn = t.get_ref().1;
        if conn.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
            return None;
        }
        conn.export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
            .ok()
    }

    async fn bind(
        &mut self,
        cfg: &ClientConfig,
        i: usize,
        features: &Element,
    ) -> Result<(), ClientError> {
        if !features.has_child("bind", ns::BIND) {
            return Err(ClientError::Bind("not-offered".into()));
        }
        let resource = format!("{}{}", cfg.resource_prefix, cfg.first + i);
        let id = self.id();
        self.send(
            format!(
                "<iq type='set' id='{id}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
                 <resource>{}</resource></bind></iq>",
                esc(&resource)
            )
            .as_bytes(),
        )
        .await?;
        let result = self.await_result(&id, "bind").await?;
        self.jid = result
            .get_child("bind", ns::BIND)
            .and_then(|b| b.child_text("jid", ns::BIND))
            .map(|j| j.trim().to_string())
            .ok_or_else(|| ClientError::Bind("no-jid".into()))?;
        // RFC 3921 session establishment, for servers that still require it.
        if let Some(s) = features.get_child("session", ns::SESSION) {
            if !s.has_child("optional", ns::SESSION) {
                let id = self.id();
                self.send(
                    format!(
                        "<iq type='set' id='{id}'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>"
                    )
                    .as_bytes(),
                )
                .await?;
                self.await_result(&id, "session").await?;
            }
        }
        Ok(())
    }

    async fn resume(&mut self, state: &SmState, offered: bool) -> Result<(), ClientError> {
        let Some(previd) = state.id.as_deref().filter(|_| offered) else {
            return Err(ClientError::Resume("not-resumable".into()));
        };
        self.send(
            format!(
                "<resume xmlns='urn:xmpp:sm:3' h='{}' previd='{}'/>",
                state.inbound,
                esc(previd)
            )
            .as_bytes(),
        )
        .await?;
        let el = self.next_raw().await?;
        if el.is("resumed", ns::SM) {
            self.sm = Some(state.clone());
            Ok(())
        } else if el.is("failed", ns::SM) {
            Err(ClientError::Resume(condition(&el, ns::STANZAS)))
        } else {
            Err(ClientError::Protocol("unexpected-resume-answer"))
        }
    }

    /// Logs in with SASL2 (XEP-0388): with `resume` and its FAST token, one HT-SHA-256-NONE
    /// message with `<resume/>` inline; else SCRAM-SHA-256 with Bind2 (SM enabled inline) and
    /// a token requested. Either way the session is usable at `<success/>`.
    async fn sasl2(
        &mut self,
        cfg: &ClientConfig,
        i: usize,
        resume: Option<&SmState>,
    ) -> Result<(), ClientError> {
        const SASL2: &str = "urn:xmpp:sasl:2";
        const FAST: &str = "urn:xmpp:fast:0";
        let user = cfg.user(i);
        let agent = format!(
            "<user-agent id='bench-{}'><software>rookery-bench</software></user-agent>",
            cfg.first + i
        );
        let bind = "<bind xmlns='urn:xmpp:bind:0'><tag>bench</tag>                    <enable xmlns='urn:xmpp:sm:3' resume='true'/></bind>";
        let request_token = format!("<request-token xmlns='{FAST}' mechanism='HT-SHA-256-NONE'/>");
        let resuming = resume.and_then(|s| Some((s, s.id.as_deref()?, s.token.as_ref()?)));
        let mut scram = None;
        let (mechanism, initial, inline) = match resuming {
            Some((state, previd, (token, count))) => (
                "HT-SHA-256-NONE",
                rookery_sasl::ht::client_message(&user, token, b""),
                format!(
                    "<fast xmlns='{FAST}' count='{}'/><resume xmlns='urn:xmpp:sm:3' h='{}'                      previd='{}'/>{bind}",
                    count + 1,
                    state.inbound,
                    esc(previd)
                ),
            ),
            None => {
                let mut c =
                    ScramClient::new(Mechanism::ScramSha256, &user, &cfg.password, None);
                if let Some(cache) = &cfg.scram_cache {
                    c = c.with_cache(cache.clone());
                }
                let first = c.client_first();
                scram = Some(c);
                ("SCRAM-SHA-256", first, format!("{bind}{request_token}"))
            }
        };
        self.send(
            format!(
                "<authenticate xmlns='{SASL2}' mechanism='{mechanism}'>                 <initial-response>{}</initial-response>{agent}{inline}</authenticate>",
                B64.encode(initial)
            )
            .as_bytes(),
        )
        .await?;
        let success = loop {
            let el = self.next_raw().await?;
            if el.is("challenge", SASL2) {
                let c = scram
                    .as_mut()
                    .ok_or_else(|| ClientError::Auth("unexpected-challenge".into()))?;
                let data = B64
                    .decode(el.text().trim())
                    .map_err(|_| ClientError::Auth("bad-base64".into()))?;
                let reply = c
                    .handle_challenge(&data)
                    .map_err(|_| ClientError::Auth("bad-challenge".into()))?;
                self.send(
                    format!("<response xmlns='{SASL2}'>{}</response>", B64.encode(reply))
                        .as_bytes(),
                )
                .await?;
            } else if el.is("success", SASL2) {
                break el;
            } else if el.is("failure", SASL2) {
                return Err(ClientError::Auth(condition(&el, ns::SASL)));
            } else {
                return Err(ClientError::Protocol("unexpected-sasl2-answer"));
            }
        };
        self.jid = success
            .child_text("authorization-identifier", SASL2)
            .unwrap_or_default();
        let token = match (
            success
                .get_child("token", FAST)
                .and_then(|t| t.attr("token")),
            resuming,
        ) {
            (Some(t), _) => Some((t.to_string(), 0)),
            (None, Some((_, _, (t, count)))) => Some((t.clone(), count + 1)),
            (None, None) => None,
        };
        if let (Some(state), true) = (resume, success.has_child("resumed", ns::SM)) {
            self.sm = Some(SmState {
                token,
                ..state.clone()
            });
            return Ok(());
        }
        let enabled = success
            .get_child("bound", "urn:xmpp:bind:0")
            .and_then(|b| b.get_child("enabled", ns::SM))
            .ok_or_else(|| ClientError::Resume("not-resumed-nor-bound".into()))?;
        self.sm = Some(SmState {
            id: enabled.attr("id").map(str::to_string),
            inbound: 0,
            token,
        });
        if resume.is_some() {
            // Refused inline (the session was gone): bound afresh in the same round trip.
            return Err(ClientError::Resume("refused-inline".into()));
        }
        Ok(())
    }

    /// Waits for the IQ result with `id`, answering what else arrives; an IQ error becomes
    /// [`ClientError::Bind`] for `what == "bind"`, else [`ClientError::Iq`].
    pub async fn await_result(
        &mut self,
        id: &str,
        what: &'static str,
    ) -> Result<Element, ClientError> {
        loop {
            let el = self.next_element().await?;
            if el.is("iq", CONTENT_NS) && el.attr("id") == Some(id) {
                return match el.attr("type") {
                    Some("result") => Ok(el),
                    _ => {
                        let cond = el
                            .get_child("error", CONTENT_NS)
                            .map(|e| condition(e, ns::STANZAS))
                            .unwrap_or_else(|| "no-error-element".into());
                        Err(match what {
                            "bind" => ClientError::Bind(cond),
                            _ => ClientError::Iq(what, cond),
                        })
                    }
                };
            }
            self.handle_common(&el).await?;
        }
    }

    /// The next parser event, reading as needed. Cancel-safe: bytes are fed to the parser
    /// inside one poll, so dropping this future loses nothing.
    async fn next_event(&mut self) -> Result<Event, ClientError> {
        let framed = self.framed();
        loop {
            match self.parser.next_event().map_err(ClientError::Xml)? {
                // The header `reset_parser` primed a framed stream with.
                Some(Event::StreamOpen(_)) if framed => continue,
                Some(Event::Element(el)) if framed && el.ns() == NS_FRAMING => {
                    return Ok(if el.name() == "open" {
                        Event::StreamOpen(rookery_xml::StreamHeader::default())
                    } else {
                        Event::StreamClose
                    });
                }
                Some(ev) => return Ok(ev),
                None => {}
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> Result<(), ClientError> {
        let Conn { io, parser, .. } = self;
        if let Io::Bosh(bosh) = io {
            parser.feed(&bosh.next().await?);
            return Ok(());
        }
        if let Io::Ws(ws) = io {
            use futures_util::StreamExt;
            // One message is one element (RFC 7395 §3.3.3); pings are answered by tungstenite.
            loop {
                return match ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        parser.feed(t.as_bytes());
                        Ok(())
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    Some(Ok(Message::Binary(_))) => Err(ClientError::Protocol("binary-message")),
                    Some(Ok(Message::Close(_))) | None => Err(ClientError::Eof),
                    Some(Err(e)) => Err(ClientError::Io(io::Error::other(e))),
                };
            }
        }
        poll_fn(|cx| {
            let mut buf = [0u8; 4096];
            let mut rb = ReadBuf::new(&mut buf);
            let r = match io {
                Io::Plain(s) => Pin::new(s).poll_read(cx, &mut rb),
                Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, &mut rb),
                Io::Ws(_) | Io::Bosh(_) => {
                    return Poll::Ready(Err(ClientError::Protocol("unreachable")))
                }
            };
            match r {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(e)) => Poll::Ready(Err(ClientError::Io(e))),
                Poll::Ready(Ok(())) if rb.filled().is_empty() => Poll::Ready(Err(ClientError::Eof)),
                Poll::Ready(Ok(())) => {
                    parser.feed(rb.filled());
                    Poll::Ready(Ok(()))
                }
            }
        })
        .await
    }

    /// The next top-level element; a stream error or the stream's end is an error.
    async fn next_raw(&mut self) -> Result<Element, ClientError> {
        match self.next_event().await? {
            Event::Element(el) => {
                if el.is("error", ns::STREAM) {
                    return Err(ClientError::StreamError(condition(&el, ns::STREAM_ERRORS)));
                }
                Ok(el)
            }
            Event::StreamClose => Err(ClientError::StreamClosed),
            Event::StreamOpen(_) => Err(ClientError::Protocol("second-stream-header")),
        }
    }

    /// The next element of an established session, counting stanzas for XEP-0198.
    /// Cancel-safe. Pass each element to [`Conn::handle_common`] unless the scenario
    /// consumed it.
    pub async fn next_element(&mut self) -> Result<Element, ClientError> {
        let el = self.next_raw().await?;
        if is_stanza(&el) {
            if let Some(sm) = self.sm.as_mut() {
                sm.inbound = sm.inbound.wrapping_add(1);
            }
        }
        Ok(el)
    }

    /// What every session does whatever the scenario: acknowledges XEP-0198 requests and
    /// answers pings (XEP-0199) and other IQ requests (`service-unavailable`).
    pub async fn handle_common(&mut self, el: &Element) -> Result<(), ClientError> {
        if el.is("r", ns::SM) {
            let h = self.sm.as_ref().map(|s| s.inbound).unwrap_or(0);
            return self
                .send(format!("<a xmlns='urn:xmpp:sm:3' h='{h}'/>").as_bytes())
                .await;
        }
        if el.is("iq", CONTENT_NS) && matches!(el.attr("type"), Some("get" | "set")) {
            let id = esc(el.attr("id").unwrap_or_default());
            let to = el
                .attr("from")
                .map(|f| format!(" to='{}'", esc(f)))
                .unwrap_or_default();
            let is_ping = el.children().next().is_some_and(|c| c.is("ping", ns::PING));
            let reply = if is_ping {
                format!("<iq type='result' id='{id}'{to}/>")
            } else {
                format!(
                    "<iq type='error' id='{id}'{to}><error type='cancel'>\
                     <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
                )
            };
            return self.send(reply.as_bytes()).await;
        }
        Ok(())
    }

    /// Writes and flushes bytes.
    pub async fn send(&mut self, data: &[u8]) -> Result<(), ClientError> {
        let r = match &mut self.io {
            Io::Plain(s) => s.write_all(data).await,
            Io::Tls(s) => match s.write_all(data).await {
                Ok(()) => s.flush().await,
                Err(e) => Err(e),
            },
            Io::Ws(ws) => {
                use futures_util::SinkExt;
                // Every send is one element, or the stream's end (RFC 7395 <close/>).
                let text = if data == b"</stream:stream>" {
                    format!("<close xmlns='{NS_FRAMING}'/>")
                } else {
                    String::from_utf8_lossy(&crate::bosh::qualified(data)).into_owned()
                };
                ws.send(Message::Text(text.into()))
                    .await
                    .map_err(io::Error::other)
            }
            Io::Bosh(bosh) => return bosh.send(data).await,
        };
        r.map_err(ClientError::Io)
    }

    /// Ends the stream politely: `</stream:stream>`, then waits (briefly) for the server's.
    pub async fn close(mut self) {
        if self.send(b"</stream:stream>").await.is_err() {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match self.next_event().await {
                    Ok(Event::StreamClose) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        let _ = match &mut self.io {
            Io::Plain(s) => s.shutdown().await,
            Io::Tls(s) => s.shutdown().await,
            Io::Ws(ws) => ws.close(None).await.map_err(io::Error::other),
            Io::Bosh(_) => Ok(()),
        };
    }

    /// Drops the connection without closing the stream (a network failure, for churn with
    /// stream resumption). Returns the XEP-0198 state to resume with.
    pub fn kill(self) -> Option<SmState> {
        self.sm
    }
}

impl ClientConfig {
    /// Where client `i` connects: the targets in turn (client `i` on target `i mod n`), so
    /// that partners `i` and `i ± 1` are on different nodes of a cluster.
    pub fn target(&self, i: usize) -> SocketAddr {
        let n = self.targets.len().max(1);
        self.targets
            .get(i % n)
            .copied()
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 5222)))
    }
}

async fn connect(cfg: &ClientConfig, i: usize) -> Result<TcpStream, ClientError> {
    let target = cfg.target(i);
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(ClientError::Connect)?;
    if let Some(src) = crate::target::source_addr(target, cfg.sources, i) {
        socket
            .bind(SocketAddr::new(src, 0))
            .map_err(ClientError::Connect)?;
    }
    let tcp = socket.connect(target).await.map_err(ClientError::Connect)?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// The WebSocket opening handshake for `ws://<target><ws_path>` with subprotocol `xmpp`.
async fn ws_handshake(
    cfg: &ClientConfig,
    i: usize,
    tcp: TcpStream,
) -> Result<WebSocketStream<TcpStream>, ClientError> {
    use tungstenite::client::IntoClientRequest;
    let url = format!("ws://{}{}", cfg.target(i), cfg.ws_path);
    let mut request = url
        .into_client_request()
        .map_err(|e| ClientError::Connect(io::Error::other(e)))?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        tungstenite::http::HeaderValue::from_static("xmpp"),
    );
    // Small buffers: thousands of idle clients run in one generator.
    let config = tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, tcp, Some(config))
        .await
        .map_err(|e| ClientError::Connect(io::Error::other(e)))?;
    Ok(ws)
}

async fn handshake(
    cfg: &ClientConfig,
    tls: &Arc<rustls::ClientConfig>,
    tcp: TcpStream,
) -> Result<TlsStream<TcpStream>, ClientError> {
    let name = match cfg.domain.parse::<IpAddr>() {
        Ok(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
        Err(_) => rustls::pki_types::ServerName::try_from(cfg.domain.clone()).map_err(|_| {
            ClientError::Tls(io::Error::new(
                io::ErrorKind::InvalidInput,
                "domain is not a valid TLS server name",
            ))
        })?,
    };
    TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .map_err(tls_err)
}

/// Builds the two TLS client configurations (without and with ALPN `xmpp-client`).
/// `insecure` accepts any certificate (handshake signatures are still checked); otherwise
/// the certificates in `ca_file` (PEM) are the trust anchors.
pub fn tls_configs(
    insecure: bool,
    ca_file: Option<&std::path::Path>,
) -> anyhow::Result<(Arc<rustls::ClientConfig>, Arc<rustls::ClientConfig>)> {
    use anyhow::Context;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let mut config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        let path = ca_file.context(
            "certificate verification needs --ca-file (or pass --insecure for a test server)",
        )?;
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            roots
                .add(cert.context("parsing the CA file")?)
                .context("adding a CA certificate")?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.resumption = rustls::client::Resumption::disabled();
    let starttls = Arc::new(config.clone());
    config.alpn_protocols = vec![b"xmpp-client".to_vec()];
    Ok((starttls, Arc::new(config)))
}

/// Accepts any server certificate: for test servers with self-signed certificates only.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
