//! Rookery ↔ Rookery federation on loopback: two cores in one process, each with its own
//! listener, outgoing pool and certificate, routed to each other by static routes.
//!
//! - dialback with self-signed certificates (`require_valid_certificates = false`):
//!   messages both ways, IQ ping round trip, unreachable domain bounces, and is not dialed
//!   again during its back-off;
//! - SASL EXTERNAL with certificates from a private CA (`require_valid_certificates = true`);
//! - policy: self-signed certificates under `require_valid_certificates = true` bounce;
//! - shutdown: every stream (outgoing, incoming bound or negotiating) ends with
//!   `system-shutdown`; what is queued on an authenticated stream is written first, what is
//!   queued on one still negotiating bounces, later stanzas too;
//! - a raw peer: wrong dialback key → `invalid` and the stream closed; a stanza before
//!   authentication → `not-authorized`; a right key, then a stanza from a domain it did not
//!   authenticate → `invalid-from`; a stanza to a domain B does not host → `host-unknown`;
//!   malformed stanzas → `improper-addressing` or a `bad-request` reply; dialback before
//!   the required TLS → a dialback `policy-violation` error, stream kept; an overlong key;
//! - a raw authoritative server: verifications it never answers are dropped and capped;
//!   its dialback errors reach the initiator as `remote-server-not-found`; a dialback
//!   `invalid` / `error` bounces with `internal-server-error` / `remote-server-timeout`;
//! - no dialback advertised in our headers when it is off.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rookery_core::modules::{self, register::Register};
use rookery_core::{Core, CoreBuilder, CoreConfig, Outbound, SessionHandle};
use rookery_jid::Jid;
use rookery_proto::Stanza;
use rookery_s2s::dialback::Secret;
use rookery_s2s::{Mode, OutAuth, S2s, S2sConfig, S2sTls};
use rookery_xml::{Element, Event, Limits, StreamParser, CONTENT_NS};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::RootCertStore;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(15);

type Cert = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn self_signed(domain: &str) -> Cert {
    let ck = rcgen::generate_simple_self_signed(vec![domain.to_string()]).unwrap();
    let key = PrivateKeyDer::try_from(ck.key_pair.serialize_der()).unwrap();
    (vec![ck.cert.der().clone()], key)
}

/// A private CA and certificates it issued for each domain.
fn ca_signed(domains: &[&str]) -> (CertificateDer<'static>, Vec<Cert>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let certs = domains
        .iter()
        .map(|d| {
            let key = KeyPair::generate().unwrap();
            let cert = CertificateParams::new(vec![d.to_string()])
                .unwrap()
                .signed_by(&key, &ca_cert, &ca_key)
                .unwrap();
            let der = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
            (vec![cert.der().clone()], der)
        })
        .collect();
    (ca_cert.der().clone(), certs)
}

struct Node {
    core: Arc<Core>,
    s2s: Arc<S2s>,
}

fn core(domain: &str, hosts: &[String]) -> Arc<Core> {
    let cfg = CoreConfig {
        domain: domain.to_string(),
        host: hosts
            .iter()
            .map(|d| rookery_core::HostConfig {
                domain: d.clone(),
                allow_registration: None,
            })
            .collect(),
        ..CoreConfig::default()
    };
    let register = Arc::new(Register::new(cfg.registration.clone()));
    let mut b = CoreBuilder::new(cfg.clone(), Arc::new(rookery_core::MemoryAccounts::new()));
    for m in modules::defaults(&cfg, register) {
        b = b.module(m);
    }
    b.build().unwrap()
}

/// How a test node is set up; [`start`] fills in the defaults and a test changes what it
/// needs.
struct Setup {
    /// How its listener starts streams.
    mode: Mode,
    /// Its certificate (self-signed by default: peers that do not require valid
    /// certificates authenticate it by dialback).
    cert: Cert,
    /// The roots it trusts (none by default).
    roots: RootCertStore,
    /// Its s2s settings (certificates not required, no DNS, short timeouts by default).
    config: S2sConfig,
    /// Further hosted domains (virtual hosting; none by default).
    hosts: Vec<String>,
}

/// Starts a node serving `domain` on `listener`, with the dialback secret `secret-<domain>`,
/// static routes as written in the config (`host:port` or `tls://host:port`, see [`route`])
/// and `tweak` applied to the default [`Setup`].
async fn start(
    domain: &str,
    listener: TcpListener,
    routes: &[(&str, String)],
    tweak: impl FnOnce(&mut Setup),
) -> Node {
    let mut setup = Setup {
        mode: Mode::StartTls,
        cert: self_signed(domain),
        roots: RootCertStore::empty(),
        config: S2sConfig {
            require_valid_certificates: false,
            use_webpki_roots: false,
            routes: routes
                .iter()
                .map(|(d, target)| (d.to_string(), target.clone()))
                .collect(),
            dns: false,
            negotiation_timeout_secs: 10,
            dialback_timeout_secs: 10,
            ..S2sConfig::default()
        },
        hosts: Vec::new(),
    };
    tweak(&mut setup);
    let Setup {
        mode,
        cert,
        roots,
        config,
        hosts,
    } = setup;
    let core = core(domain, &hosts);
    let tls = S2sTls::new(cert.0, cert.1, roots).unwrap();
    let secret = Secret::new(format!("secret-{domain}").as_bytes());
    let s2s = S2s::new(core.clone(), config, tls, secret).unwrap();
    core.set_remote_route(s2s.clone());
    tokio::spawn(rookery_s2s::run(listener, mode, s2s.clone()));
    Node { core, s2s }
}

/// A static route to `domain` at the loopback `port` (STARTTLS).
fn route(domain: &str, port: u16) -> (&str, String) {
    (domain, format!("127.0.0.1:{port}"))
}

/// A "server" that accepts connections and never says anything: its port, and the task
/// holding the connections (abort it to close them).
async fn silent_server() -> (u16, tokio::task::JoinHandle<()>) {
    let (silent, port) = listener().await;
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    (port, held)
}

async fn bind(core: &Arc<Core>, jid: &str) -> rookery_core::session::SessionEnd {
    let jid = Jid::parse(jid).unwrap();
    let (h, end) = SessionHandle::new(core.next_session_id(), jid, 32);
    core.bind(h).await;
    end
}

async fn recv(end: &mut rookery_core::session::SessionEnd) -> String {
    match tokio::time::timeout(WAIT, end.rx.recv()).await {
        Ok(Some(Outbound::Bytes(b))) => String::from_utf8(b.to_vec()).unwrap(),
        other => panic!("nothing received: {other:?}"),
    }
}

fn message(from: &str, to: &str, body: &str) -> Stanza {
    Stanza::from_element(
        Element::new("message", CONTENT_NS)
            .with_attr("from", from)
            .with_attr("to", to)
            .with_attr("type", "chat")
            .with_attr("id", "m1")
            .with_child(Element::new("body", CONTENT_NS).with_text(body)),
    )
    .unwrap()
}

fn ping(from: &str, to: &str, id: &str) -> Stanza {
    Stanza::from_element(
        Element::new("iq", CONTENT_NS)
            .with_attr("from", from)
            .with_attr("to", to)
            .with_attr("type", "get")
            .with_attr("id", id)
            .with_child(Element::new("ping", "urn:xmpp:ping")),
    )
    .unwrap()
}

/// A loopback listener and its port.
async fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

async fn listeners() -> (TcpListener, u16, TcpListener, u16) {
    let (a, pa) = listener().await;
    let (b, pb) = listener().await;
    (a, pa, b, pb)
}

/// Two nodes with self-signed certificates that federate by dialback.
async fn dialback_pair() -> (Node, Node, u16, u16) {
    let (la, pa, lb, pb) = listeners().await;
    let a = start(
        "a.test",
        la,
        &[route("b.test", pb), route("nowhere.test", 1)],
        |_| {},
    )
    .await;
    let b = start("b.test", lb, &[route("a.test", pa)], |_| {}).await;
    (a, b, pa, pb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialback_messages_and_iq_both_ways() {
    let (a, b, _, _) = dialback_pair().await;
    let mut alice = bind(&a.core, "alice@a.test/r").await;
    let mut bob = bind(&b.core, "bob@b.test/r").await;

    a.core
        .route(message("alice@a.test/r", "bob@b.test/r", "hello bob"))
        .await;
    let got = recv(&mut bob).await;
    assert!(
        got.contains("hello bob") && got.contains("from=\"alice@a.test/r\""),
        "{got}"
    );

    b.core
        .route(message("bob@b.test/r", "alice@a.test/r", "hello alice"))
        .await;
    let got = recv(&mut alice).await;
    assert!(got.contains("hello alice"), "{got}");

    // IQ round trip: the ping goes a → b, the result b → a.
    a.core.route(ping("alice@a.test/r", "b.test", "p1")).await;
    let got = recv(&mut alice).await;
    assert!(
        got.contains("type=\"result\"") && got.contains("id=\"p1\""),
        "{got}"
    );
    assert!(got.contains("from=\"b.test\""), "{got}");

    let out = a.s2s.outgoing();
    assert!(
        out.iter()
            .any(|(l, r, m)| l == "a.test" && r == "b.test" && *m == OutAuth::Dialback),
        "{out:?}"
    );
    // Written: the stanzas' bytes are given back to the queues' budgets.
    assert_eq!((a.s2s.queued_bytes(), b.s2s.queued_bytes()), (0, 0));
}

/// XEP-0203 §6: a `<delay/>` a peer wrote in the receiving server's name is not that
/// server's word (only its offline storage stamps those); it is dropped on the way in, and
/// the peer's own stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_in_the_receiving_servers_name_is_dropped() {
    let (a, b, _, _) = dialback_pair().await;
    let mut bob = bind(&b.core, "bob@b.test/r").await;
    let mut m = message("alice@a.test/r", "bob@b.test/r", "old news");
    for from in ["b.test", "a.test"] {
        m.push_payload(
            Element::new("delay", "urn:xmpp:delay")
                .with_attr("from", from)
                .with_attr("stamp", "2001-01-01T00:00:00Z"),
        );
    }
    a.core.route(m).await;
    let got = recv(&mut bob).await;
    assert!(got.contains("old news"), "{got}");
    assert!(!got.contains("from=\"b.test\""), "{got}");
    assert!(got.contains("from=\"a.test\""), "{got}");
}

/// Virtual hosting: an account of a node's second host federates as that host (its own
/// outgoing stream, authenticated by dialback for the host's domain), and answers come back
/// to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_host_federates_as_itself() {
    let (la, pa, lb, pb) = listeners().await;
    let a = start("a.test", la, &[route("b.test", pb)], |s| {
        s.hosts = vec!["a2.test".into()]
    })
    .await;
    let b = start(
        "b.test",
        lb,
        &[route("a.test", pa), route("a2.test", pa)],
        |_| {},
    )
    .await;
    let mut dave = bind(&a.core, "dave@a2.test/r").await;
    let mut bob = bind(&b.core, "bob@b.test/r").await;
    a.core
        .route(message("dave@a2.test/r", "bob@b.test/r", "hello from a2"))
        .await;
    let got = recv(&mut bob).await;
    assert!(
        got.contains("hello from a2") && got.contains("from=\"dave@a2.test/r\""),
        "{got}"
    );
    b.core
        .route(message("bob@b.test/r", "dave@a2.test/r", "hello dave"))
        .await;
    assert!(recv(&mut dave).await.contains("hello dave"));
    let out = a.s2s.outgoing();
    assert!(
        out.iter()
            .any(|(l, r, m)| l == "a2.test" && r == "b.test" && *m == OutAuth::Dialback),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_domain_bounces() {
    let (a, _b, _, _) = dialback_pair().await;
    let mut alice = bind(&a.core, "alice@a.test/r").await;
    a.core
        .route(message("alice@a.test/r", "x@nowhere.test", "lost"))
        .await;
    let got = recv(&mut alice).await;
    assert!(
        got.contains("type=\"error\"") && got.contains("remote-server-not-found"),
        "{got}"
    );
    // The failed stream is gone; the domain is in back-off, so the next one bounces at once.
    a.core
        .route(ping("alice@a.test/r", "nowhere.test", "p2"))
        .await;
    let got = recv(&mut alice).await;
    assert!(
        got.contains("remote-server-not-found") && got.contains("p2"),
        "{got}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_domain_is_not_dialed_again_during_its_backoff() {
    // A "server" that accepts and hangs up at once: each outgoing attempt is one accept.
    let (dead, dead_port) = listener().await;
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = dead.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(tcp);
        }
    });
    let (la, _) = listener().await;
    let a = start(
        "a.test",
        la,
        &[route("dead.test", dead_port)],
        // Long enough that the period cannot end during the test.
        |s| s.config.backoff_initial_secs = 600,
    )
    .await;
    let mut alice = bind(&a.core, "alice@a.test/r").await;
    assert_eq!(a.s2s.backoff_remaining("dead.test"), None);
    a.core
        .route(message("alice@a.test/r", "x@dead.test", "first"))
        .await;
    let got = recv(&mut alice).await;
    assert!(got.contains("remote-server-not-found"), "{got}");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(a.s2s.backoff_remaining("dead.test").is_some());
    for i in 0..5 {
        a.core
            .route(ping("alice@a.test/r", "dead.test", &format!("b{i}")))
            .await;
        let got = recv(&mut alice).await;
        assert!(
            got.contains("remote-server-not-found")
                && got.contains(&format!("b{i}"))
                && got.contains("next attempt in"),
            "{got}"
        );
    }
    // Bounced without a lookup or a connection.
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(a.s2s.outgoing_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_external_with_a_private_ca() {
    let (ca, mut certs) = ca_signed(&["a.test", "b.test"]);
    let roots = || {
        let mut r = RootCertStore::empty();
        r.add(ca.clone()).unwrap();
        r
    };
    let cert_b = certs.pop().unwrap();
    let cert_a = certs.pop().unwrap();
    let (la, pa, lb, pb) = listeners().await;
    let private_ca = |cert: Cert| {
        move |s: &mut Setup| {
            s.cert = cert;
            s.roots = roots();
            s.config.require_valid_certificates = true;
        }
    };
    let a = start("a.test", la, &[route("b.test", pb)], private_ca(cert_a)).await;
    let b = start("b.test", lb, &[route("a.test", pa)], private_ca(cert_b)).await;
    let mut alice = bind(&a.core, "alice@a.test/r").await;
    let mut bob = bind(&b.core, "bob@b.test/r").await;

    a.core
        .route(message("alice@a.test/r", "bob@b.test/r", "over external"))
        .await;
    assert!(recv(&mut bob).await.contains("over external"));
    b.core.route(ping("bob@b.test/r", "a.test", "p3")).await;
    assert!(recv(&mut bob).await.contains("type=\"result\""));
    assert_eq!(a.s2s.outgoing()[0].2, OutAuth::SaslExternal);
    assert_eq!(b.s2s.outgoing()[0].2, OutAuth::SaslExternal);
    let _ = &mut alice;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_both_ways() {
    // XEP-0368: both listeners speak TLS from the first byte; the routes say `tls://`.
    let (la, pa, lb, pb) = listeners().await;
    let direct = |s: &mut Setup| s.mode = Mode::DirectTls;
    let a = start(
        "a.test",
        la,
        &[("b.test", format!("tls://127.0.0.1:{pb}"))],
        direct,
    )
    .await;
    let b = start(
        "b.test",
        lb,
        &[("a.test", format!("tls://127.0.0.1:{pa}"))],
        direct,
    )
    .await;
    let mut alice = bind(&a.core, "alice@a.test/r").await;
    let mut bob = bind(&b.core, "bob@b.test/r").await;
    a.core
        .route(message("alice@a.test/r", "bob@b.test/r", "direct"))
        .await;
    assert!(recv(&mut bob).await.contains("direct"));
    b.core.route(ping("bob@b.test/r", "a.test", "p9")).await;
    assert!(recv(&mut bob).await.contains("type=\"result\""));
    a.core.route(ping("alice@a.test/r", "b.test", "p10")).await;
    assert!(recv(&mut alice).await.contains("p10"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_streams_close_and_reopen_on_demand() {
    let (la, pa, lb, pb) = listeners().await;
    let idle = |s: &mut Setup| s.config.idle_timeout_secs = 1;
    let a = start("a.test", la, &[route("b.test", pb)], idle).await;
    let b = start("b.test", lb, &[route("a.test", pa)], idle).await;
    let mut bob = bind(&b.core, "bob@b.test/r").await;
    a.core
        .route(message("alice@a.test/r", "bob@b.test/r", "first"))
        .await;
    assert!(recv(&mut bob).await.contains("first"));
    assert_eq!(a.s2s.outgoing_count(), 1);
    // Idle for a second: the stream is closed and forgotten.
    let deadline = tokio::time::Instant::now() + WAIT;
    while a.s2s.outgoing_count() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "idle stream not closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The next stanza opens a new one.
    a.core
        .route(message("alice@a.test/r", "bob@b.test/r", "second"))
        .await;
    assert!(recv(&mut bob).await.contains("second"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_is_bounded_and_a_silent_peer_times_out() {
    // A "server" that accepts connections and never says anything.
    let (ps, held) = silent_server().await;
    let (la, _) = listener().await;
    let a = start("a.test", la, &[route("silent.test", ps)], |s| {
        s.config.queue_len = 2;
        s.config.negotiation_timeout_secs = 2;
    })
    .await;
    let mut alice = bind(&a.core, "alice@a.test/r").await;
    for i in 0..3 {
        a.core
            .route(message("alice@a.test/r", &format!("u{i}@silent.test"), "x"))
            .await;
    }
    // The third did not fit in the queue: bounced at once.
    let first = recv(&mut alice).await;
    assert!(
        first.contains("resource-constraint") && first.contains("u2@silent.test"),
        "{first}"
    );
    // The two queued ones bounce when setting up the stream times out.
    for _ in 0..2 {
        let got = recv(&mut alice).await;
        assert!(got.contains("remote-server-timeout"), "{got}");
    }
    held.abort();
}

/// Each stream's queue is bounded in bytes (`queue_max_bytes`), and all of them together
/// (`queue_total_bytes`): a peer that never answers holds no more while its stream is set
/// up, the stanza past a budget bounces at once saying which, and the bytes come back when
/// the queued ones bounce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_are_bounded_in_bytes_and_give_them_back() {
    let (ps, held) = silent_server().await;
    let (la, _) = listener().await;
    // Names of one length: every message below has the same size.
    let size = message("alice@a.test/r", "u0@silent.test", "x")
        .to_bytes()
        .len();
    let routes = [route("silent.test", ps), route("tarpit.test", ps)];
    let a = start("a.test", la, &routes, |s| {
        s.config.queue_max_bytes = 2 * size;
        s.config.queue_total_bytes = 3 * size;
        s.config.negotiation_timeout_secs = 2;
    })
    .await;
    let mut alice = bind(&a.core, "alice@a.test/r").await;
    for to in ["u0@silent.test", "u1@silent.test", "u2@silent.test"] {
        a.core.route(message("alice@a.test/r", to, "x")).await;
    }
    let got = recv(&mut alice).await;
    assert!(
        got.contains("resource-constraint")
            && got.contains("u2@silent.test")
            && got.contains("too many bytes queued for that server"),
        "{got}"
    );
    assert_eq!(a.s2s.queued_bytes(), 2 * size);
    // Another stream has room of its own, the server one stanza more.
    for to in ["u3@tarpit.test", "u4@tarpit.test"] {
        a.core.route(message("alice@a.test/r", to, "x")).await;
    }
    let got = recv(&mut alice).await;
    assert!(
        got.contains("resource-constraint")
            && got.contains("u4@tarpit.test")
            && got.contains("too many bytes queued for other servers"),
        "{got}"
    );
    assert_eq!(a.s2s.queued_bytes(), 3 * size);
    // The three queued bounce when setting up their streams times out; their bytes with them.
    for _ in 0..3 {
        let got = recv(&mut alice).await;
        assert!(got.contains("remote-server-timeout"), "{got}");
    }
    eventually("the bytes given back", || a.s2s.queued_bytes() == 0).await;
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_certificates_are_refused_when_required() {
    let (la, pa, lb, pb) = listeners().await;
    let required = |s: &mut Setup| s.config.require_valid_certificates = true;
    let a = start("a.test", la, &[route("b.test", pb)], required).await;
    let _b = start("b.test", lb, &[route("a.test", pa)], required).await;
    let mut alice = bind(&a.core, "alice@a.test/r").await;
    a.core
        .route(message("alice@a.test/r", "bob@b.test/r", "x"))
        .await;
    // RFC 6120 §8.3.3.17: a stream could be opened, its negotiation failed.
    let got = recv(&mut alice).await;
    assert!(got.contains("remote-server-timeout"), "{got}");
}

// ---- a raw peer --------------------------------------------------------------------------

async fn next_event<S: AsyncRead + Unpin>(io: &mut S, p: &mut StreamParser) -> Event {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(ev) = p.next_event().unwrap() {
            return ev;
        }
        let n = tokio::time::timeout(WAIT, io.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "connection closed");
        p.feed(&buf[..n]);
    }
}

async fn next_element<S: AsyncRead + Unpin>(io: &mut S, p: &mut StreamParser) -> Element {
    match next_event(io, p).await {
        Event::Element(e) => e,
        other => panic!("expected an element, got {other:?}"),
    }
}

fn header(from: &str, to: &str) -> Vec<u8> {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
         xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
         from='{from}' to='{to}' version='1.0'>"
    )
    .into_bytes()
}

/// A raw peer claiming `from`, connected to `port` without TLS: the stream, the listener's
/// header and its features.
async fn plain_peer(
    port: u16,
    from: &str,
    to: &str,
) -> (TcpStream, StreamParser, rookery_xml::StreamHeader, Element) {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut p = StreamParser::new(Limits::S2S);
    tcp.write_all(&header(from, to)).await.unwrap();
    let Event::StreamOpen(h) = next_event(&mut tcp, &mut p).await else {
        panic!("expected a header")
    };
    let f = next_element(&mut tcp, &mut p).await;
    (tcp, p, h, f)
}

/// A raw peer claiming `from`, connected to `port` with TLS; returns the stream and the id
/// of the stream the listener opened after TLS.
async fn raw_peer(
    port: u16,
    from: &str,
    to: &str,
) -> (
    tokio_rustls::client::TlsStream<TcpStream>,
    StreamParser,
    String,
) {
    let (mut tcp, mut p, _, f) = plain_peer(port, from, to).await;
    assert!(
        f.has_child("starttls", "urn:ietf:params:xml:ns:xmpp-tls"),
        "{f}"
    );
    tcp.write_all(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await
        .unwrap();
    assert_eq!(next_element(&mut tcp, &mut p).await.name(), "proceed");
    let (certs, key) = self_signed(from);
    let tls = S2sTls::new(certs, key, RootCertStore::empty()).unwrap();
    let connector = tokio_rustls::TlsConnector::from(tls.client(from, false));
    let mut io = connector
        .connect(ServerName::try_from(to.to_string()).unwrap(), tcp)
        .await
        .unwrap();
    let mut p = StreamParser::new(Limits::S2S);
    io.write_all(&header(from, to)).await.unwrap();
    let id = match next_event(&mut io, &mut p).await {
        Event::StreamOpen(h) => h.attr("id").unwrap().to_string(),
        other => panic!("{other:?}"),
    };
    let f = next_element(&mut io, &mut p).await;
    assert!(f.has_child("dialback", "urn:xmpp:features:dialback"), "{f}");
    (io, p, id)
}

/// A raw peer that knows a.test's secret, so its dialback key is right (B checks it with
/// A): connected to B at `port` and authenticated for a.test.
async fn dialback_as_a(port: u16) -> (tokio_rustls::client::TlsStream<TcpStream>, StreamParser) {
    let (mut io, mut p, id) = raw_peer(port, "a.test", "b.test").await;
    let key = Secret::new(b"secret-a.test").key("b.test", "a.test", &id);
    io.write_all(format!("<db:result from='a.test' to='b.test'>{key}</db:result>").as_bytes())
        .await
        .unwrap();
    let r = next_element(&mut io, &mut p).await;
    assert_eq!(r.attr("type"), Some("valid"), "{r}");
    (io, p)
}

fn stream_error(el: &Element) -> String {
    assert_eq!(el.name(), "error", "{el}");
    el.children().next().unwrap().name().to_string()
}

/// Asserts that the stream ends now with `not-authorized`, well before the watchdog of
/// streams that authenticated nothing (10 s here) would end it.
async fn closes_at_once<S: AsyncRead + Unpin>(io: &mut S, p: &mut StreamParser) {
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        let err = next_element(io, p).await;
        (stream_error(&err), next_event(io, p).await)
    })
    .await
    .expect("the stream was not closed after invalid");
    assert_eq!(closed.0, "not-authorized");
    assert!(matches!(closed.1, Event::StreamClose));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_dialback_key_is_invalid_and_stanzas_are_refused() {
    let (_a, _b, _, pb) = dialback_pair().await;
    let (mut io, mut p, _id) = raw_peer(pb, "a.test", "b.test").await;
    io.write_all(b"<db:result from='a.test' to='b.test'>0123456789abcdef</db:result>")
        .await
        .unwrap();
    let r = next_element(&mut io, &mut p).await;
    assert_eq!(
        (r.name(), r.attr("type")),
        ("result", Some("invalid")),
        "{r}"
    );
    // XEP-0220 §2.1.2: nothing else is authenticated on the stream, so it is closed.
    closes_at_once(&mut io, &mut p).await;
}

/// RFC 6120 §4.9.3.12: stanzas before anything is authenticated are `not-authorized`
/// (`invalid-from` is for a domain other than the authenticated ones).
/// XEP-0220 §2.1.2 again: a peer claiming a domain B hosts gets `invalid`, and the stream
/// is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claiming_our_own_domain_is_invalid_and_closes_the_stream() {
    let (_a, _b, _, pb) = dialback_pair().await;
    let (mut io, mut p, _id) = raw_peer(pb, "b.test", "b.test").await;
    io.write_all(&db_result_request("b.test", "b.test", "0123456789abcdef"))
        .await
        .unwrap();
    let r = next_element(&mut io, &mut p).await;
    assert_eq!(r.attr("type"), Some("invalid"), "{r}");
    closes_at_once(&mut io, &mut p).await;
}

/// RFC 6120 §4.9.3.12: stanzas before anything is authenticated are `not-authorized`
/// (`invalid-from` is for a domain other than the authenticated ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stanzas_before_authentication_are_not_authorized() {
    let (_a, _b, _, pb) = dialback_pair().await;
    let (mut io, mut p, _id) = raw_peer(pb, "a.test", "b.test").await;
    io.write_all(b"<message from='eve@a.test' to='bob@b.test'><body>x</body></message>")
        .await
        .unwrap();
    assert_eq!(
        stream_error(&next_element(&mut io, &mut p).await),
        "not-authorized"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_peer_cannot_speak_for_other_domains() {
    let (_a, b, _, pb) = dialback_pair().await;
    let mut bob = bind(&b.core, "bob@b.test/r").await;
    let (mut io, mut p) = dialback_as_a(pb).await;
    io.write_all(
        b"<message from='eve@a.test/x' to='bob@b.test/r' type='chat'><body>fine</body></message>",
    )
    .await
    .unwrap();
    assert!(recv(&mut bob).await.contains("fine"));
    io.write_all(b"<message from='mallory@c.test' to='bob@b.test/r'><body>spoof</body></message>")
        .await
        .unwrap();
    assert_eq!(
        stream_error(&next_element(&mut io, &mut p).await),
        "invalid-from"
    );

    // A second stream: a stanza for a domain B does not host.
    let (mut io, mut p) = dialback_as_a(pb).await;
    io.write_all(b"<message from='eve@a.test' to='x@elsewhere.test'><body>relay</body></message>")
        .await
        .unwrap();
    assert_eq!(
        stream_error(&next_element(&mut io, &mut p).await),
        "host-unknown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialback_verification_times_out() {
    // The claimed domain's authoritative server accepts connections and never answers.
    let (ps, held) = silent_server().await;
    let (lb, pb) = listener().await;
    let _b = start("b.test", lb, &[route("silent.test", ps)], |s| {
        s.config.dialback_timeout_secs = 1;
    })
    .await;
    let (mut io, mut p, _) = raw_peer(pb, "silent.test", "b.test").await;
    io.write_all(b"<db:result from='silent.test' to='b.test'>abcd</db:result>")
        .await
        .unwrap();
    let r = next_element(&mut io, &mut p).await;
    assert_eq!(r.attr("type"), Some("error"), "{r}");
    assert!(r.to_string().contains("remote-server-timeout"), "{r}");
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_verify_is_answered_as_authoritative_server() {
    let (_a, _b, pa, _) = dialback_pair().await;
    // Talk to A as if we were b.test verifying a key A gave us.
    let (mut io, mut p, _) = raw_peer(pa, "b.test", "a.test").await;
    let good = Secret::new(b"secret-a.test").key("b.test", "a.test", "stream-1");
    io.write_all(
        format!("<db:verify from='b.test' to='a.test' id='stream-1'>{good}</db:verify>").as_bytes(),
    )
    .await
    .unwrap();
    let r = next_element(&mut io, &mut p).await;
    assert_eq!(
        (r.name(), r.attr("type"), r.attr("id")),
        ("verify", Some("valid"), Some("stream-1"))
    );
    io.write_all(b"<db:verify from='b.test' to='a.test' id='stream-2'>00</db:verify>")
        .await
        .unwrap();
    let r = next_element(&mut io, &mut p).await;
    assert_eq!(r.attr("type"), Some("invalid"));
    io.write_all(b"<db:verify from='b.test' to='other.test' id='s'>00</db:verify>")
        .await
        .unwrap();
    let r = next_element(&mut io, &mut p).await;
    assert_eq!(r.attr("type"), Some("error"), "{r}");
    let _ = io.shutdown().await;
}

// ---- shutdown ----------------------------------------------------------------------------

/// Polls `done` until it holds; fails the test after [`WAIT`].
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_every_stream_with_system_shutdown() {
    let (a, b, pa, _) = dialback_pair().await;
    let mut alice = bind(&a.core, "alice@a.test/r").await;
    let mut bob = bind(&b.core, "bob@b.test/r").await;
    // Streams both ways.
    a.core
        .route(message("alice@a.test/r", "bob@b.test/r", "to b"))
        .await;
    assert!(recv(&mut bob).await.contains("to b"));
    b.core
        .route(message("bob@b.test/r", "alice@a.test/r", "to a"))
        .await;
    assert!(recv(&mut alice).await.contains("to a"));
    // And a raw peer on A's listener that has authenticated nothing.
    let (mut io, mut p, _) = raw_peer(pa, "c.test", "a.test").await;
    assert!(a.s2s.outgoing_count() > 0 && a.s2s.incoming_count() > 0);

    // Queued on an authenticated stream when the shutdown comes: written before it closes.
    a.core
        .route(message("alice@a.test/r", "bob@b.test/r", "last words"))
        .await;
    a.s2s.close_all();
    assert!(recv(&mut bob).await.contains("last words"));
    // The raw peer reads the stream error, then the end of the stream.
    let err = next_element(&mut io, &mut p).await;
    assert_eq!(stream_error(&err), "system-shutdown");
    assert!(matches!(
        next_event(&mut io, &mut p).await,
        Event::StreamClose
    ));
    // Every stream of A ends, and B sees both of its streams with A end.
    eventually("A's streams to end", || {
        a.s2s.outgoing_count() == 0 && a.s2s.incoming_count() == 0
    })
    .await;
    eventually("B's streams with A to end", || {
        b.s2s.outgoing_count() == 0 && b.s2s.incoming_count() == 0
    })
    .await;
    // Nothing more goes out: stanzas for other servers bounce.
    a.core
        .route(message("alice@a.test/r", "bob@b.test/r", "too late"))
        .await;
    let got = recv(&mut alice).await;
    assert!(
        got.contains("service-unavailable") && got.contains("shutting down"),
        "{got}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stanzas_queued_at_shutdown_bounce() {
    // A "server" that accepts connections and never says anything: the stream to it stays
    // in negotiation, with the stanza queued.
    let (ps, held) = silent_server().await;
    let (la, _) = listener().await;
    let a = start(
        "a.test",
        la,
        &[route("silent.test", ps)],
        // Far beyond the test's wait: only the shutdown can bounce it.
        |s| s.config.negotiation_timeout_secs = 600,
    )
    .await;
    let mut alice = bind(&a.core, "alice@a.test/r").await;
    a.core
        .route(message("alice@a.test/r", "u@silent.test", "queued"))
        .await;
    eventually("the outgoing stream to start", || {
        a.s2s.outgoing_count() == 1
    })
    .await;
    a.s2s.close_all();
    let got = recv(&mut alice).await;
    assert!(
        got.contains("service-unavailable") && got.contains("u@silent.test"),
        "{got}"
    );
    eventually("the stream to end", || a.s2s.outgoing_count() == 0).await;
    eventually("the bytes given back", || a.s2s.queued_bytes() == 0).await;
    held.abort();
}

// ---- a raw authoritative server ----------------------------------------------------------

/// A stream header as a server answers one: with an id, declaring dialback.
fn answer_header(from: &str, to: &str, id: &str) -> Vec<u8> {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
         xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
         from='{from}' to='{to}' id='{id}' version='1.0'>"
    )
    .into_bytes()
}

/// What a raw server saw of the stream a node opened to it.
struct RawServer {
    io: tokio_rustls::server::TlsStream<TcpStream>,
    p: StreamParser,
    /// The node's stream header after TLS.
    header: rookery_xml::StreamHeader,
}

/// Accepts the stream a node opens to `domain` on `l`, as a server offering STARTTLS (with
/// a self-signed certificate) and then dialback; returns it after the features.
async fn accept_raw(l: &TcpListener, domain: &str) -> RawServer {
    let (mut tcp, _) = tokio::time::timeout(WAIT, l.accept())
        .await
        .unwrap()
        .unwrap();
    let mut p = StreamParser::new(Limits::S2S);
    let Event::StreamOpen(h) = next_event(&mut tcp, &mut p).await else {
        panic!("expected a header")
    };
    let from = h.attr("from").unwrap().to_string();
    tcp.write_all(&answer_header(domain, &from, "raw-1"))
        .await
        .unwrap();
    tcp.write_all(
        b"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>\
          <required/></starttls></stream:features>",
    )
    .await
    .unwrap();
    assert_eq!(next_element(&mut tcp, &mut p).await.name(), "starttls");
    tcp.write_all(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await
        .unwrap();
    let (certs, key) = self_signed(domain);
    let tls = S2sTls::new(certs, key, RootCertStore::empty()).unwrap();
    let mut io = tokio_rustls::TlsAcceptor::from(tls.server.clone())
        .accept(tcp)
        .await
        .unwrap();
    let mut p = StreamParser::new(Limits::S2S);
    let Event::StreamOpen(header) = next_event(&mut io, &mut p).await else {
        panic!("expected a header after TLS")
    };
    io.write_all(&answer_header(domain, &from, "raw-2"))
        .await
        .unwrap();
    io.write_all(
        b"<stream:features><dialback xmlns='urn:xmpp:features:dialback'><errors/>\
          </dialback></stream:features>",
    )
    .await
    .unwrap();
    RawServer { io, p, header }
}

impl RawServer {
    /// The next dialback element of `kind` (`result` or `verify`), skipping the others.
    async fn next_db(&mut self, kind: &str) -> Element {
        loop {
            let el = next_element(&mut self.io, &mut self.p).await;
            assert_eq!(el.ns(), "jabber:server:dialback", "{el}");
            if el.name() == kind {
                return el;
            }
        }
    }

    /// Reads elements until our `db:result`, answers it with `answer` (the attributes and
    /// content after `from`/`to`), and returns the `db:verify` requests read meanwhile.
    async fn answer_result(&mut self, answer: &str) -> Vec<Element> {
        let mut verifies = Vec::new();
        let result = loop {
            let el = next_element(&mut self.io, &mut self.p).await;
            match el.name() {
                "result" => break el,
                "verify" => verifies.push(el),
                _ => panic!("unexpected {el}"),
            }
        };
        let (from, to) = (result.attr("from").unwrap(), result.attr("to").unwrap());
        self.io
            .write_all(format!("<db:result from='{to}' to='{from}' {answer}").as_bytes())
            .await
            .unwrap();
        verifies
    }
}

/// B, with `evil.test` routed to a raw server, and `tweak` applied to its setup; B's port,
/// the raw server's listener.
async fn b_with_raw_evil(tweak: impl FnOnce(&mut Setup)) -> (Node, u16, TcpListener) {
    let (lb, pb, le, pe) = listeners().await;
    let b = start("b.test", lb, &[route("evil.test", pe)], tweak).await;
    (b, pb, le)
}

fn db_result_request(from: &str, to: &str, key: &str) -> Vec<u8> {
    format!("<db:result from='{from}' to='{to}'>{key}</db:result>").into_bytes()
}

/// XEP-0220 §2.1.1 / XEP-0185: a key is 64 hex characters; a peer that sends a much longer
/// one is refused instead of having it relayed (and kept) as a `db:verify`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlong_dialback_key_is_refused() {
    let (_a, _b, _, pb) = dialback_pair().await;
    let (mut io, mut p, _) = raw_peer(pb, "a.test", "b.test").await;
    let key = "a".repeat(1024);
    io.write_all(&db_result_request("a.test", "b.test", &key))
        .await
        .unwrap();
    assert_eq!(
        stream_error(&next_element(&mut io, &mut p).await),
        "policy-violation"
    );
}

/// A verification the authoritative server never answers is given up when the requester
/// gives up (XEP-0220 §2.4 timeout): it is not kept for the life of the outgoing stream,
/// which then closes when idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_verifications_are_dropped_and_the_stream_idles_out() {
    let (_b, pb, le) = b_with_raw_evil(|s| {
        s.config.dialback_timeout_secs = 1;
        // Longer than the verification, or the incoming stream would idle out first.
        s.config.idle_timeout_secs = 2;
    })
    .await;
    let (mut io, mut p, _) = raw_peer(pb, "evil.test", "b.test").await;
    io.write_all(&db_result_request("evil.test", "b.test", "abcd"))
        .await
        .unwrap();
    let mut evil = accept_raw(&le, "evil.test").await;
    let mut verifies = evil.answer_result("type='valid'/>").await;
    if verifies.is_empty() {
        verifies.push(evil.next_db("verify").await);
    }
    // Never answered: the requester gets a timeout ...
    let r = next_element(&mut io, &mut p).await;
    assert!(r.to_string().contains("remote-server-timeout"), "{r}");
    // ... and B's stream to the authoritative server closes once idle.
    assert!(matches!(
        next_event(&mut evil.io, &mut evil.p).await,
        Event::StreamClose
    ));
}

/// An outgoing stream keeps a bounded number of verifications waiting for their answer;
/// past that the requester gets `resource-constraint` at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_verifications_are_capped() {
    let (_b, pb, le) = b_with_raw_evil(|s| s.config.max_pending_dialback = 200).await;
    let (mut io, mut p, _) = raw_peer(pb, "evil.test", "b.test").await;
    io.write_all(&db_result_request("evil.test", "b.test", "k0"))
        .await
        .unwrap();
    let mut evil = accept_raw(&le, "evil.test").await;
    if evil.answer_result("type='valid'/>").await.is_empty() {
        evil.next_db("verify").await;
    }
    // One at a time, so that B's queue of requests never fills: only the cap can refuse.
    for i in 1..64 {
        io.write_all(&db_result_request("evil.test", "b.test", &format!("k{i}")))
            .await
            .unwrap();
        evil.next_db("verify").await;
    }
    io.write_all(&db_result_request("evil.test", "b.test", "one-too-many"))
        .await
        .unwrap();
    let r = next_element(&mut io, &mut p).await;
    assert_eq!(r.attr("type"), Some("error"), "{r}");
    assert!(r.to_string().contains("resource-constraint"), "{r}");
}

/// XEP-0220 §2.4: an error in Step 3 (the authoritative server's answer) reaches the
/// initiating server as `remote-server-not-found`, whatever the authoritative server said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_verification_is_remote_server_not_found() {
    let (_b, pb, le) = b_with_raw_evil(|_| {}).await;
    let (mut io, mut p, _) = raw_peer(pb, "evil.test", "b.test").await;
    io.write_all(&db_result_request("evil.test", "b.test", "abcd"))
        .await
        .unwrap();
    let mut evil = accept_raw(&le, "evil.test").await;
    let mut verifies = evil.answer_result("type='valid'/>").await;
    if verifies.is_empty() {
        verifies.push(evil.next_db("verify").await);
    }
    let id = verifies[0].attr("id").unwrap().to_string();
    evil.io
        .write_all(
            format!(
                "<db:verify from='evil.test' to='b.test' id='{id}' type='error'>\
                 <error type='cancel'><item-not-found \
                 xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></db:verify>"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let r = next_element(&mut io, &mut p).await;
    assert_eq!((r.name(), r.attr("type")), ("result", Some("error")), "{r}");
    assert!(r.to_string().contains("remote-server-not-found"), "{r}");
}

/// Alice on B messages evil.test, whose server answers B's dialback with `answer`; what
/// the bounce says.
async fn bounce_after_dialback_answer(answer: &str) -> String {
    let (b, _, le) = b_with_raw_evil(|_| {}).await;
    let mut alice = bind(&b.core, "alice@b.test/r").await;
    b.core
        .route(message("alice@b.test/r", "u@evil.test", "x"))
        .await;
    let mut evil = accept_raw(&le, "evil.test").await;
    evil.answer_result(answer).await;
    recv(&mut alice).await
}

/// XEP-0220 §2.1.1: after `type='invalid'` queued stanzas bounce with
/// `internal-server-error`, after `type='error'` with `remote-server-timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialback_refusals_bounce_with_the_xep_0220_conditions() {
    let got = bounce_after_dialback_answer("type='invalid'/>").await;
    assert!(got.contains("internal-server-error"), "{got}");
    let got = bounce_after_dialback_answer(
        "type='error'><error type='cancel'><item-not-found \
         xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></db:result>",
    )
    .await;
    assert!(got.contains("remote-server-timeout"), "{got}");
}

/// RFC 6120 §8.2.3, §4.9.3.7: a malformed IQ from a peer is answered with `bad-request`;
/// a stanza with an address that is no JID ends the stream with `improper-addressing`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_stanzas_from_a_peer_are_answered() {
    let (a, _b, _, pb) = dialback_pair().await;
    let mut u = bind(&a.core, "u@a.test/r").await;
    let (mut io, mut p) = dialback_as_a(pb).await;
    io.write_all(b"<iq type='get' id='q1' from='u@a.test/r' to='bob@b.test'/>")
        .await
        .unwrap();
    let got = recv(&mut u).await;
    assert!(
        got.contains("q1") && got.contains("type=\"error\"") && got.contains("bad-request"),
        "{got}"
    );
    io.write_all(b"<message from='u@a.test/r' to=''><body>x</body></message>")
        .await
        .unwrap();
    assert_eq!(
        stream_error(&next_element(&mut io, &mut p).await),
        "improper-addressing"
    );
}

/// XEP-0220 §2.4: dialback before the TLS we require gets a dialback `policy-violation`
/// error, and the stream stays open for STARTTLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialback_before_required_tls_is_a_dialback_error() {
    let (_a, _b, _, pb) = dialback_pair().await;
    let (mut tcp, mut p, _, _) = plain_peer(pb, "a.test", "b.test").await;
    tcp.write_all(b"<db:verify from='a.test' to='b.test' id='x'>abcd</db:verify>")
        .await
        .unwrap();
    let r = next_element(&mut tcp, &mut p).await;
    assert_eq!((r.name(), r.attr("type")), ("verify", Some("error")), "{r}");
    assert!(r.to_string().contains("policy-violation"), "{r}");
    tcp.write_all(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await
        .unwrap();
    assert_eq!(next_element(&mut tcp, &mut p).await.name(), "proceed");
}

fn declares_dialback(h: &rookery_xml::StreamHeader) -> bool {
    h.prefixes
        .iter()
        .any(|(_, uri)| uri == "jabber:server:dialback")
}

/// XEP-0220 §2.3.1: support is the namespace declaration on the header, so a node with
/// dialback off declares it on neither its incoming nor its outgoing streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_dialback_declared_when_it_is_off() {
    let (b, pb, le) = b_with_raw_evil(|s| s.config.dialback = false).await;
    let (_tcp, _p, h, _) = plain_peer(pb, "a.test", "b.test").await;
    assert!(!declares_dialback(&h), "{h:?}");
    b.core
        .route(message("alice@b.test/r", "u@evil.test", "x"))
        .await;
    let evil = accept_raw(&le, "evil.test").await;
    assert!(!declares_dialback(&evil.header), "{:?}", evil.header);
}
