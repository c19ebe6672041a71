//! The component listener against a raw socket, with a real core on a temp SQLite store and a
//! client session bound directly in the core (the c2s listener has its own tests; here only
//! the routing to and from the component matters).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;
use std::time::Duration;

use rookery_component::handshake::digest;
use rookery_component::{ComponentConfig, ComponentRoute, Components, OnConflict, ServiceConfig};
use rookery_core::session::SessionEnd;
use rookery_core::{Core, CoreBuilder, CoreConfig, Outbound, SessionHandle};
use rookery_jid::Jid;
use rookery_proto::Stanza;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "componentsecret";
const WAIT: Duration = Duration::from_secs(5);

struct Server {
    core: Arc<Core>,
    comps: Arc<Components>,
    port: u16,
}

/// A core with an in-memory account directory, with disco when `disco`.
fn core(disco: bool) -> Arc<Core> {
    let mut builder = CoreBuilder::new(
        CoreConfig::default(),
        Arc::new(rookery_core::MemoryAccounts::new()),
    );
    if disco {
        builder = builder.module(Arc::new(rookery_core::modules::disco::Disco));
    }
    builder.build().unwrap()
}

/// The component listener of `core` with `config`, on a free loopback port.
async fn listen(core: &Arc<Core>, config: ComponentConfig) -> (Arc<Components>, u16) {
    let config = ComponentConfig {
        listen: "127.0.0.1:0".into(),
        ..config
    };
    let comps = Components::new(core.clone(), config).unwrap();
    let listener = comps.bind().await.unwrap().unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(rookery_component::run(listener, comps.clone()));
    (comps, port)
}

/// The service `bot.localhost` with [`SECRET`].
fn bot() -> ServiceConfig {
    ServiceConfig {
        domain: "bot.localhost".into(),
        secret: Some(SECRET.into()),
        ..ServiceConfig::default()
    }
}

/// Waits until the component of `route` is disconnected (at most about two seconds).
async fn disconnected(route: &ComponentRoute) -> bool {
    for _ in 0..100 {
        if !route.is_connected() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    !route.is_connected()
}

async fn server(on_conflict: OnConflict) -> Server {
    let core = core(true);
    let config = ComponentConfig {
        on_conflict,
        service: vec![
            ServiceConfig {
                name: Some("Echo bot".into()),
                ..bot()
            },
            ServiceConfig {
                domain: "gw.localhost".into(),
                secret: Some("other".into()),
                ..ServiceConfig::default()
            },
        ],
        ..ComponentConfig::default()
    };
    let (comps, port) = listen(&core, config).await;
    Server { core, comps, port }
}

/// A raw component connection.
struct Raw {
    s: TcpStream,
    buf: String,
    stream_id: String,
}

impl Raw {
    /// Opens a stream to `to` and reads the server's header.
    async fn open(port: u16, to: &str) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut r = Raw {
            s,
            buf: String::new(),
            stream_id: String::new(),
        };
        r.send(&format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
             xmlns:stream='http://etherx.jabber.org/streams' to='{to}'>"
        ))
        .await;
        r.until("<stream:stream").await;
        let header = r.until(">").await;
        let start = header.find("id='").expect("stream id") + 4;
        let len = header[start..].find('\'').unwrap();
        r.stream_id = header[start..start + len].to_string();
        r
    }

    /// Opens a stream and completes the handshake with `secret`.
    async fn connect(port: u16, to: &str, secret: &str) -> Raw {
        let mut r = Raw::open(port, to).await;
        r.handshake(secret).await;
        r.until("<handshake/>").await;
        r
    }

    async fn handshake(&mut self, secret: &str) {
        let d = digest(&self.stream_id, secret);
        self.send(&format!("<handshake>{d}</handshake>")).await;
    }

    async fn send(&mut self, s: &str) {
        self.s.write_all(s.as_bytes()).await.unwrap();
    }

    /// Reads until `needle` has arrived; returns everything up to and including it.
    async fn until(&mut self, needle: &str) -> String {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(i) = self.buf.find(needle) {
                    let rest = self.buf.split_off(i + needle.len());
                    return std::mem::replace(&mut self.buf, rest);
                }
                let mut chunk = [0u8; 4096];
                let n = self.s.read(&mut chunk).await.unwrap();
                assert!(n > 0, "closed before {needle:?}; got {:?}", self.buf);
                self.buf.push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {needle:?}; got {:?}", self.buf))
    }

    /// Reads to the end of the connection.
    async fn rest(&mut self) -> String {
        tokio::time::timeout(WAIT, async {
            let mut all = Vec::new();
            let _ = self.s.read_to_end(&mut all).await;
            self.buf.push_str(&String::from_utf8_lossy(&all));
            std::mem::take(&mut self.buf)
        })
        .await
        .expect("connection not closed")
    }
}

/// A client session bound in the core, as c2s would.
async fn client(core: &Arc<Core>, jid: &str) -> SessionEnd {
    let jid = Jid::parse(jid).unwrap();
    let (h, end) = SessionHandle::new(core.next_session_id(), jid.clone(), 64);
    core.bind(h).await;
    core.set_available(&jid, Some(0));
    end
}

async fn recv(end: &mut SessionEnd) -> String {
    match tokio::time::timeout(WAIT, end.rx.recv()).await {
        Ok(Some(Outbound::Bytes(b))) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("nothing for the client: {other:?}"),
    }
}

fn stanza(xml: &str) -> Stanza {
    Stanza::from_serialized(xml.as_bytes()).unwrap()
}

#[tokio::test]
async fn handshake_success_header_has_component_domain_and_no_version() {
    let s = server(OnConflict::Conflict).await;
    let mut r = Raw::open(s.port, "bot.localhost").await;
    assert_eq!(r.stream_id.len(), 32);
    r.handshake(SECRET).await;
    r.until("<handshake/>").await;
    assert!(s.comps.route("bot.localhost").unwrap().is_connected());
}

#[tokio::test]
async fn header_is_from_the_component_without_version() {
    let s = server(OnConflict::Conflict).await;
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).await.unwrap();
    c.write_all(
        b"<stream:stream xmlns='jabber:component:accept' \
          xmlns:stream='http://etherx.jabber.org/streams' to='bot.localhost'>",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = c.read(&mut buf).await.unwrap();
    let header = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(header.contains("from='bot.localhost'"), "{header}");
    let stream = &header[header.find("<stream:stream").unwrap()..];
    assert!(!stream.contains("version="), "{header}");
    assert!(
        header.contains("xmlns='jabber:component:accept'"),
        "{header}"
    );
}

#[tokio::test]
async fn wrong_secret_is_not_authorized() {
    let s = server(OnConflict::Conflict).await;
    let mut r = Raw::open(s.port, "bot.localhost").await;
    r.handshake("wrong").await;
    let rest = r.rest().await;
    assert!(rest.contains("<not-authorized"), "{rest}");
    assert!(rest.ends_with("</stream:stream>"), "{rest}");
    assert!(!s.comps.route("bot.localhost").unwrap().is_connected());
}

#[tokio::test]
async fn unknown_domain_is_host_unknown() {
    let s = server(OnConflict::Conflict).await;
    let mut r = Raw::open(s.port, "nobody.localhost").await;
    let rest = r.rest().await;
    assert!(rest.contains("<host-unknown"), "{rest}");
    // The server's own domain is not a component either.
    let mut r = Raw::open(s.port, "localhost").await;
    assert!(r.rest().await.contains("<host-unknown"));
}

#[tokio::test]
async fn second_connection_gets_conflict_by_default() {
    let s = server(OnConflict::Conflict).await;
    let mut first = Raw::connect(s.port, "bot.localhost", SECRET).await;
    let mut second = Raw::open(s.port, "bot.localhost").await;
    second.handshake(SECRET).await;
    assert!(second.rest().await.contains("<conflict"));
    // The first still works.
    let mut alice = client(&s.core, "alice@localhost/r").await;
    first
        .send("<message from='bot.localhost' to='alice@localhost/r'><body>hi</body></message>")
        .await;
    assert!(recv(&mut alice).await.contains("<body>hi</body>"));
    // Another domain connects beside it.
    Raw::connect(s.port, "gw.localhost", "other").await;
}

#[tokio::test]
async fn replace_policy_closes_the_old_connection() {
    let s = server(OnConflict::Replace).await;
    let mut first = Raw::connect(s.port, "bot.localhost", SECRET).await;
    let mut second = Raw::connect(s.port, "bot.localhost", SECRET).await;
    assert!(first.rest().await.contains("<conflict"));
    s.core
        .route(stanza(
            "<message from='alice@localhost/r' to='bot.localhost'><body>x</body></message>",
        ))
        .await;
    second.until("<body>x</body>").await;
    assert!(s.comps.route("bot.localhost").unwrap().is_connected());
}

#[tokio::test]
async fn routing_both_ways_and_iq_round_trip() {
    let s = server(OnConflict::Conflict).await;
    let mut bot = Raw::connect(s.port, "bot.localhost", SECRET).await;
    let mut alice = client(&s.core, "alice@localhost/r").await;
    s.core
        .route(stanza(
            "<message from='alice@localhost/r' to='echo@bot.localhost' type='chat'><body>ping</body></message>",
        ))
        .await;
    let got = bot.until("</message>").await;
    assert!(got.contains("from=\"alice@localhost/r\""), "{got}");
    assert!(got.contains("<body>ping</body>"), "{got}");
    assert!(!got.contains("xmlns=\"jabber:client\""), "{got}");
    bot.send(
        "<message from='echo@bot.localhost' to='alice@localhost/r' type='chat'><body>echo: ping</body></message>",
    )
    .await;
    let reply = recv(&mut alice).await;
    assert!(
        reply.contains("echo: ping") && reply.contains("echo@bot.localhost"),
        "{reply}"
    );

    // IQ from the client, answered by the component.
    s.core
        .route(stanza(
            "<iq from='alice@localhost/r' to='bot.localhost' type='get' id='q1'><query xmlns='jabber:iq:version'/></iq>",
        ))
        .await;
    let got = bot.until("</iq>").await;
    assert!(got.contains("id=\"q1\""), "{got}");
    bot.send("<iq from='bot.localhost' to='alice@localhost/r' type='result' id='q1'><query xmlns='jabber:iq:version'><name>bot</name></query></iq>").await;
    let reply = recv(&mut alice).await;
    assert!(
        reply.contains("type=\"result\"") && reply.contains("<name>bot</name>"),
        "{reply}"
    );

    // IQ from the component to the server (disco#items lists it with its name).
    bot.send("<iq from='bot.localhost' to='localhost' type='get' id='d1'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>").await;
    let got = bot.until("</iq>").await;
    assert!(got.contains("jid=\"bot.localhost\""), "{got}");
    assert!(got.contains("name=\"Echo bot\""), "{got}");
    assert!(
        !got.contains("gw.localhost"),
        "not connected, not listed: {got}"
    );

    // Directed presence both ways.
    s.core
        .route(stanza(
            "<presence from='alice@localhost/r' to='bot.localhost'/>",
        ))
        .await;
    bot.until("<presence").await;
    bot.send(
        "<presence from='bot.localhost' to='alice@localhost/r'><status>on</status></presence>",
    )
    .await;
    assert!(recv(&mut alice).await.contains("<status>on</status>"));
}

#[tokio::test]
async fn missing_from_is_stamped_and_missing_to_is_bad_request() {
    let s = server(OnConflict::Conflict).await;
    let mut bot = Raw::connect(s.port, "bot.localhost", SECRET).await;
    let mut alice = client(&s.core, "alice@localhost/r").await;
    bot.send("<message to='alice@localhost/r'><body>a</body></message>")
        .await;
    assert!(recv(&mut alice).await.contains("from=\"bot.localhost\""));
    bot.send("<message from='bot.localhost' id='m'><body>b</body></message>")
        .await;
    let got = bot.until("</message>").await;
    assert!(
        got.contains("type=\"error\"") && got.contains("<bad-request"),
        "{got}"
    );
}

#[tokio::test]
async fn spoofed_from_is_invalid_from() {
    let s = server(OnConflict::Conflict).await;
    let mut alice = client(&s.core, "alice@localhost/r").await;
    let mut bot = Raw::connect(s.port, "bot.localhost", SECRET).await;
    bot.send("<message from='bob@localhost' to='alice@localhost/r'><body>spoof</body></message>")
        .await;
    let rest = bot.rest().await;
    assert!(rest.contains("<invalid-from"), "{rest}");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), alice.rx.recv())
            .await
            .is_err(),
        "the spoofed stanza was delivered"
    );
    // A subdomain of the component is not the component's.
    let mut bot = Raw::connect(s.port, "bot.localhost", SECRET).await;
    bot.send("<presence from='x.bot.localhost' to='alice@localhost/r'/>")
        .await;
    assert!(bot.rest().await.contains("<invalid-from"));
}

#[tokio::test]
async fn disconnected_component_bounces_iq_and_message() {
    let s = server(OnConflict::Conflict).await;
    let mut alice = client(&s.core, "alice@localhost/r").await;
    {
        let mut bot = Raw::connect(s.port, "bot.localhost", SECRET).await;
        bot.send("</stream:stream>").await;
        bot.rest().await;
    }
    // Wait until the server noticed.
    assert!(disconnected(&s.comps.route("bot.localhost").unwrap()).await);
    s.core
        .route(stanza(
            "<message from='alice@localhost/r' to='bot.localhost' type='chat' id='m1'><body>x</body></message>",
        ))
        .await;
    let e = recv(&mut alice).await;
    assert!(
        e.contains("type=\"error\"") && e.contains("<service-unavailable"),
        "{e}"
    );
    s.core
        .route(stanza(
            "<iq from='alice@localhost/r' to='u@bot.localhost' type='get' id='i1'><ping xmlns='urn:xmpp:ping'/></iq>",
        ))
        .await;
    let e = recv(&mut alice).await;
    assert!(
        e.contains("id=\"i1\"") && e.contains("<service-unavailable"),
        "{e}"
    );
    s.core
        .route(stanza(
            "<presence from='alice@localhost/r' to='bot.localhost' type='subscribe'/>",
        ))
        .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), alice.rx.recv())
            .await
            .is_err(),
        "presence to a disconnected component must be dropped silently"
    );
}

#[tokio::test]
async fn a_component_that_does_not_read_is_disconnected() {
    let core = core(false);
    let config = ComponentConfig {
        queue: 4,
        service: vec![bot()],
        ..ComponentConfig::default()
    };
    let (comps, port) = listen(&core, config).await;
    let _bot = Raw::connect(port, "bot.localhost", SECRET).await;
    let mut alice = client(&core, "alice@localhost/r").await;
    // The bot never reads: big stanzas fill the socket buffers, then the queue.
    let body = "x".repeat(64 * 1024);
    let route = comps.route("bot.localhost").unwrap().clone();
    for i in 0..2000 {
        core.route(stanza(&format!(
            "<message from='alice@localhost/r' to='bot.localhost' id='{i}'><body>{body}</body></message>"
        )))
        .await;
        if !route.is_connected() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(
        disconnected(&route).await,
        "a stuck component must be disconnected"
    );
    // A stanza for the closed component bounces at once; the one that overflowed its queue
    // stays queued and bounces with the rest when the connection is finally dropped (after
    // the stalled write times out), so it is not looked for here.
    core.route(stanza(
        "<message from='alice@localhost/r' to='bot.localhost' id='after'><body>x</body></message>",
    ))
    .await;
    let mut after = false;
    while let Ok(Outbound::Bytes(b)) = alice.rx.try_recv() {
        let s = String::from_utf8_lossy(&b);
        after |= s.contains("id=\"after\"") && s.contains("service-unavailable");
    }
    assert!(after, "a stanza for a closed component is bounced");
}

#[test]
fn config_errors_stop_the_start() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let core = core(false);
        let svc = |d: &str| ServiceConfig {
            domain: d.into(),
            secret: Some("s".into()),
            ..ServiceConfig::default()
        };
        for service in [
            vec![svc("localhost")],
            vec![svc("a.localhost"), svc("A.localhost")],
            vec![svc("bad domain")],
            vec![ServiceConfig {
                domain: "x.localhost".into(),
                ..ServiceConfig::default()
            }],
        ] {
            let c = ComponentConfig {
                service,
                ..ComponentConfig::default()
            };
            assert!(Components::new(core.clone(), c).is_err());
        }
        // Zero config: no service, no listener.
        let c = Components::new(core.clone(), ComponentConfig::default()).unwrap();
        assert!(c.bind().await.unwrap().is_none());
    });
}

#[tokio::test]
async fn a_silent_component_is_pinged_then_dropped_and_the_domain_freed() {
    let core = core(false);
    let config = ComponentConfig {
        ping_interval_secs: 1,
        ping_timeout_secs: 1,
        service: vec![bot()],
        ..ComponentConfig::default()
    };
    let (comps, port) = listen(&core, config).await;

    // One that answers stays connected.
    let mut alive = Raw::connect(port, "bot.localhost", SECRET).await;
    let ping = alive.until("</iq>").await;
    assert!(
        ping.contains("urn:xmpp:ping") && ping.contains("from=\"localhost\""),
        "{ping}"
    );
    let id = ping
        .split("id=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    alive
        .send(&format!(
            "<iq type='result' id='{id}' from='bot.localhost' to='localhost'/>"
        ))
        .await;
    alive.until("urn:xmpp:ping").await; // pinged again a second later, still connected
    assert!(comps.route("bot.localhost").unwrap().is_connected());
    alive.send("</stream:stream>").await;
    alive.rest().await;

    // One that never answers is dropped with connection-timeout and the domain is free.
    let mut dead = Raw::connect(port, "bot.localhost", SECRET).await;
    let rest = dead.rest().await;
    assert!(rest.contains("urn:xmpp:ping"), "{rest}");
    assert!(rest.contains("<connection-timeout"), "{rest}");
    Raw::connect(port, "bot.localhost", SECRET).await;
}
