//! SCRAM-*-PLUS with the `tls-exporter` channel binding (RFC 9266, XEP-0440) against the real
//! `rookery` binary, over STARTTLS and direct TLS (XEP-0368).
//!
//! Python's `ssl` cannot export keying material, so the end-to-end suite in `tests/` cannot
//! log in with -PLUS; this test does it with rustls, taking the exporter value from the client
//! side of the TLS connection and [`rookery_sasl::ScramClient`] for the exchange. It checks
//! the server signature, that a wrong binding is refused with `not-authorized`, and that a
//! client that could bind but picks a non-PLUS mechanism while -PLUS is offered (the `y`
//! flag: a downgrade) is refused too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rookery_s2s::tls::AnyCert;
use rookery_sasl::{Mechanism, ScramClient};
use rookery_xml::{Element, Event, Limits, StreamParser};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
const NS_STREAMS: &str = "http://etherx.jabber.org/streams";
const NS_CB: &str = "urn:xmpp:sasl-cb:0";
const TIMEOUT: Duration = Duration::from_secs(20);
const PASSWORD: &str = "s3cret-pässword";

/// The server process; killed on drop.
struct Server {
    child: Child,
    starttls_port: u16,
    direct_tls_port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rookery(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rookery"));
    c.arg("--config").arg(config).env_remove("RUST_LOG");
    c
}

/// The port the server's log says it listens on for clients in `mode` (`StartTls`,
/// `DirectTls`), once it does.
fn listening_port(log: &str, mode: &str) -> Option<u16> {
    log.lines()
        .filter(|l| l.contains("listening for clients") && l.contains(&format!("mode={mode}")))
        .find_map(|l| {
            let addr = l.split_whitespace().find_map(|w| w.strip_prefix("addr="))?;
            addr.rsplit_once(':')?.1.parse().ok()
        })
}

async fn start_server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rookery.toml");
    // Port 0: the server binds what the system gives and logs it. A port picked here and
    // released before the server binds could meanwhile become the source port of a parallel
    // test's connection.
    std::fs::write(
        &config,
        format!(
            "domain = \"localhost\"\ndata_dir = {:?}\n[listen]\nc2s = \"127.0.0.1:0\"\n\
             c2s_direct_tls = \"127.0.0.1:0\"\nadmin = \"\"\nhttp = \"\"\nhttps = \"\"\n[log]\n\
             level = \"info\"\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let mut add = rookery(&config)
        .args(["user", "add", "alice"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(add.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    assert!(add.wait().unwrap().success(), "rookery user add failed");
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = rookery(&config)
        .arg("serve")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let (starttls_port, direct_tls_port) = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let (Some(p1), Some(p2)) = (
            listening_port(&log, "StartTls"),
            listening_port(&log, "DirectTls"),
        ) {
            break (p1, p2);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "server did not listen: {log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    Server {
        child,
        starttls_port,
        direct_tls_port,
        _dir: dir,
    }
}

fn connector(alpn: bool) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        // The server's certificate is self-signed; handshake signatures are still verified,
        // so the handshake (and hence the exporter) is a real one.
        .with_custom_certificate_verifier(Arc::new(AnyCert::new(provider)))
        .with_no_client_auth();
    if alpn {
        config.alpn_protocols = vec![b"xmpp-client".to_vec()];
    }
    TlsConnector::from(Arc::new(config))
}

/// A minimal XMPP client stream over any transport, parsing with rookery-xml.
struct Stream<T> {
    io: T,
    parser: StreamParser,
    buf: Vec<u8>,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Stream<T> {
    fn new(io: T) -> Self {
        Stream {
            io,
            parser: StreamParser::new(Limits::C2S),
            buf: vec![0; 16384],
        }
    }

    async fn send(&mut self, data: &str) {
        self.io.write_all(data.as_bytes()).await.unwrap();
        self.io.flush().await.unwrap();
    }

    /// The next top-level element (stream headers are skipped).
    async fn recv(&mut self) -> Element {
        tokio::time::timeout(TIMEOUT, async {
            loop {
                match self.parser.next_event().unwrap() {
                    Some(Event::Element(el)) => return el,
                    Some(Event::StreamOpen(_)) => continue,
                    Some(Event::StreamClose) => panic!("server closed the stream"),
                    None => {}
                }
                let n = self.io.read(&mut self.buf).await.unwrap();
                assert!(n > 0, "server closed the connection");
                self.parser.feed(&self.buf[..n]);
            }
        })
        .await
        .expect("timed out waiting for the server")
    }

    /// Opens a stream; returns the features.
    async fn open(&mut self) -> Element {
        self.parser = StreamParser::new(Limits::C2S);
        self.send(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>",
        )
        .await;
        let features = self.recv().await;
        assert!(features.is("features", NS_STREAMS), "{features:?}");
        features
    }
}

/// An encrypted stream with its features and the tls-exporter channel binding.
async fn connect_tls(
    server: &Server,
    direct: bool,
) -> (Stream<TlsStream<TcpStream>>, Element, Vec<u8>) {
    let name = ServerName::try_from("localhost").unwrap();
    let tls = if direct {
        let tcp = TcpStream::connect(("127.0.0.1", server.direct_tls_port))
            .await
            .unwrap();
        connector(true).connect(name, tcp).await.unwrap()
    } else {
        let tcp = TcpStream::connect(("127.0.0.1", server.starttls_port))
            .await
            .unwrap();
        let mut plain = Stream::new(tcp);
        let f = plain.open().await;
        assert!(f.has_child("starttls", NS_TLS));
        plain
            .send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .await;
        assert!(plain.recv().await.is("proceed", NS_TLS));
        connector(false).connect(name, plain.io).await.unwrap()
    };
    let conn = tls.get_ref().1;
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let cb = conn
        .export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
        .unwrap();
    let mut stream = Stream::new(tls);
    let features = stream.open().await;
    (stream, features, cb)
}

fn mechanisms(features: &Element) -> Vec<String> {
    features
        .get_child("mechanisms", NS_SASL)
        .map(|m| m.children().map(Element::text).collect())
        .unwrap_or_default()
}

/// Runs one SCRAM exchange; returns the server's final element, after verifying the server
/// signature on success.
async fn scram<T: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut Stream<T>,
    mut client: ScramClient,
) -> Element {
    let first = B64.encode(client.client_first());
    stream
        .send(&format!(
            "<auth xmlns='{NS_SASL}' mechanism='{}'>{first}</auth>",
            client.mechanism().name()
        ))
        .await;
    let challenge = stream.recv().await;
    assert!(challenge.is("challenge", NS_SASL), "{challenge:?}");
    let server_first = B64.decode(challenge.text().trim()).unwrap();
    let response = client.handle_challenge(&server_first).unwrap();
    stream
        .send(&format!(
            "<response xmlns='{NS_SASL}'>{}</response>",
            B64.encode(response)
        ))
        .await;
    let outcome = stream.recv().await;
    if outcome.is("success", NS_SASL) {
        let data = B64.decode(outcome.text().trim()).unwrap();
        client
            .verify_success(&data)
            .expect("the server signature must verify");
    }
    outcome
}

const PLUS: [Mechanism; 3] = [
    Mechanism::ScramSha1Plus,
    Mechanism::ScramSha256Plus,
    Mechanism::ScramSha512Plus,
];

#[tokio::test]
async fn plus_mechanisms_log_in_and_bind() {
    let server = start_server().await;
    for direct in [false, true] {
        for mech in PLUS {
            let (mut s, features, cb) = connect_tls(&server, direct).await;
            let offered = mechanisms(&features);
            assert!(offered.iter().any(|m| m == mech.name()), "{offered:?}");
            let cb_type = features
                .get_child("sasl-channel-binding", NS_CB)
                .and_then(|e| e.get_child("channel-binding", NS_CB))
                .and_then(|e| e.attr("type"));
            assert_eq!(cb_type, Some("tls-exporter"), "XEP-0440 advertisement");
            let outcome = scram(&mut s, ScramClient::new(mech, "alice", PASSWORD, Some(cb))).await;
            assert!(
                outcome.is("success", NS_SASL),
                "{mech} over {}: {outcome:?}",
                if direct { "direct TLS" } else { "STARTTLS" }
            );
            s.open().await;
            s.send(
                "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
                 <resource>plus</resource></bind></iq>",
            )
            .await;
            let bound = s.recv().await;
            assert_eq!(bound.attr("type"), Some("result"), "{bound:?}");
            let jid = bound
                .get_child("bind", "urn:ietf:params:xml:ns:xmpp-bind")
                .and_then(|b| b.child_text("jid", "urn:ietf:params:xml:ns:xmpp-bind"));
            assert_eq!(jid.as_deref(), Some("alice@localhost/plus"));
            s.send("</stream:stream>").await;
        }
    }
}

#[tokio::test]
async fn wrong_channel_binding_is_not_authorized() {
    let server = start_server().await;
    for mech in PLUS {
        let (mut s, _, cb) = connect_tls(&server, false).await;
        let wrong: Vec<u8> = cb.iter().map(|b| b ^ 0x5a).collect();
        let outcome = scram(
            &mut s,
            ScramClient::new(mech, "alice", PASSWORD, Some(wrong)),
        )
        .await;
        assert!(outcome.is("failure", NS_SASL), "{mech}: {outcome:?}");
        assert!(
            outcome.has_child("not-authorized", NS_SASL),
            "{mech}: {outcome:?}"
        );
    }
}

#[tokio::test]
async fn binding_from_another_connection_is_not_authorized() {
    // A man in the middle relays the exchange, but its TLS session to the server differs from
    // the client's: the binding the client computed does not match the server's side.
    let server = start_server().await;
    let (_other, _, other_cb) = connect_tls(&server, false).await;
    let (mut s, _, _) = connect_tls(&server, true).await;
    let outcome = scram(
        &mut s,
        ScramClient::new(
            Mechanism::ScramSha256Plus,
            "alice",
            PASSWORD,
            Some(other_cb),
        ),
    )
    .await;
    assert!(outcome.has_child("not-authorized", NS_SASL), "{outcome:?}");
}

#[tokio::test]
async fn downgrade_from_plus_is_detected() {
    // The client could bind ('y' flag: "I support it but you did not offer it") while the
    // server did offer -PLUS: somebody stripped it from the features (RFC 5802 §6).
    let server = start_server().await;
    let (mut s, _, cb) = connect_tls(&server, false).await;
    let first = {
        let mut c = ScramClient::new(Mechanism::ScramSha256, "alice", PASSWORD, Some(cb));
        String::from_utf8(c.client_first()).unwrap()
    };
    assert!(first.starts_with("y,"), "{first}");
    s.send(&format!(
        "<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-256'>{}</auth>",
        B64.encode(first)
    ))
    .await;
    let el = s.recv().await;
    assert!(el.is("failure", NS_SASL), "{el:?}");
    assert!(el.has_child("not-authorized", NS_SASL), "{el:?}");
}

#[tokio::test]
async fn correct_password_without_binding_still_works() {
    let server = start_server().await;
    let (mut s, _, _) = connect_tls(&server, true).await;
    let outcome = scram(
        &mut s,
        ScramClient::new(Mechanism::ScramSha512, "alice", PASSWORD, None),
    )
    .await;
    assert!(outcome.is("success", NS_SASL), "{outcome:?}");
}
