//! Session tests: a real session task on a loopback TCP pair, the peer written by hand, and a
//! paused clock (`tokio::time::pause`) for every timeout, so nothing here sleeps for real.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;
use std::time::Duration;

use rookery_core::config::RegistrationConfig;
use rookery_core::modules::register::Register;
use rookery_core::session::SessionEnd;
use rookery_core::{
    CoreBuilder, CoreConfig, HandoverRefusal, MemoryAccounts, Outbound, SessionHandle,
};
use rookery_jid::{BareJid, Jid};
use rookery_proto::{ns, Stanza};
use rookery_stream::{Conn, Transport};
use rookery_xml::{Element, Event, Limits, StreamParser};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::bind2;
use crate::limiter::AuthLimiter;
use crate::machine::Inline;
use crate::machine::Sasl2Resumed;
use crate::negotiate::Bound;
use crate::sm::{self, Takeover, Verdict};
use crate::{C2sConfig, C2sContext};

const HEADER: &str = "<stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

async fn context(config: C2sConfig) -> Arc<C2sContext> {
    let core = CoreBuilder::new(CoreConfig::default(), Arc::new(MemoryAccounts::new()))
        .build()
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(rustls::server::ResolvesServerCertUsingSni::new())),
    );
    Arc::new(C2sContext {
        core,
        tls: tls.clone(),
        direct_tls: tls,
        config,
        register: Arc::new(Register::new(RegistrationConfig::default())),
        limiter: Arc::new(AuthLimiter::new(10, 10)),
        sm: Default::default(),
        connections: crate::ConnectionCap::new(0),
        fast: None,
        cert: None,
    })
}

fn config() -> C2sConfig {
    C2sConfig {
        ping_interval_secs: 0,
        ping_timeout_secs: 10,
        sm_resume_timeout_secs: 60,
        ..C2sConfig::default()
    }
}

/// The client end of a connection, written by hand.
struct Peer {
    tcp: TcpStream,
    parser: StreamParser,
}

impl Peer {
    async fn send(&mut self, s: &str) {
        self.tcp.write_all(s.as_bytes()).await.unwrap();
    }

    /// The next top-level element from the server; `None` once the connection is closed.
    async fn next(&mut self) -> Option<Element> {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match self.parser.next_event() {
                Ok(Some(Event::Element(e))) => return Some(e),
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(_) => return None,
            }
            let n = self.tcp.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            self.parser.feed(&buf[..n]);
        }
    }

    /// The next element that is not one of the server's ack requests.
    async fn next_stanza(&mut self) -> Option<Element> {
        loop {
            let el = self.next().await?;
            if !el.is("r", sm::NS) {
                return Some(el);
            }
        }
    }

    /// Nothing arrives within `wait` (of paused time).
    async fn quiet(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.next()).await.is_err()
    }

    /// Round trip of a ping to the server: everything sent before has been handled.
    async fn sync(&mut self, id: &str) {
        self.send(&format!(
            "<iq type='get' id='{id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await;
        loop {
            let el = self.next().await.expect("ping result");
            if el.is("iq", ns::CLIENT) && el.attr("id") == Some(id) {
                return;
            }
        }
    }
}

/// A connected TCP pair: the server's [`Conn`] (client stream header already read) and the
/// peer.
async fn pipe(ctx: &C2sContext) -> (Conn, Peer) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (server, addr) = l.accept().await.unwrap();
    let mut conn = Conn::new(
        Transport::Plain(server),
        addr,
        Limits::C2S,
        ctx.core.domain(),
        ns::CLIENT,
    );
    let mut peer = Peer {
        tcp: client,
        parser: StreamParser::new(Limits::S2S),
    };
    peer.send(HEADER).await;
    assert!(matches!(
        conn.next_event().await.unwrap(),
        Event::StreamOpen(_)
    ));
    // The server's header: from here on both sides are in an open stream, as after bind.
    conn.send_header(None, "test").await.unwrap();
    (conn, peer)
}

fn jid(s: &str) -> Jid {
    Jid::parse(s).unwrap()
}

/// Binds `full` and runs its session in a task.
async fn start(ctx: &Arc<C2sContext>, full: &str, queue: usize) -> (Peer, JoinHandle<()>) {
    start_inline(ctx, full, queue, None).await
}

/// Binds `full` (through Bind2 when `inline` is set) and runs its session in a task.
async fn start_inline(
    ctx: &Arc<C2sContext>,
    full: &str,
    queue: usize,
    inline: Option<Box<Inline>>,
) -> (Peer, JoinHandle<()>) {
    let (conn, peer) = pipe(ctx).await;
    let jid = jid(full);
    let (handle, end) = SessionHandle::new(ctx.core.next_session_id(), jid.clone(), queue);
    ctx.core.bind(handle.clone()).await;
    let ctx = ctx.clone();
    let bound = Bound {
        jid,
        handle,
        end,
        inline,
        moved: None,
    };
    let task = tokio::spawn(async move { super::run(&ctx, conn, bound).await });
    (peer, task)
}

/// A bound session nobody runs: its queue is read by the test.
async fn fake(ctx: &C2sContext, full: &str) -> SessionEnd {
    let (handle, end) = SessionHandle::new(ctx.core.next_session_id(), jid(full), 64);
    ctx.core.bind(handle).await;
    end
}

async fn message(ctx: &Arc<C2sContext>, from: &str, to: &str, body: &str) {
    let el = Element::new("message", ns::CLIENT)
        .with_attr("from", from)
        .with_attr("to", to)
        .with_attr("type", "chat")
        .with_child(Element::new("body", ns::CLIENT).with_text(body));
    route(ctx, el).await;
}

async fn route(ctx: &Arc<C2sContext>, el: Element) {
    ctx.core.route(Stanza::from_element(el).unwrap()).await;
}

fn body(el: &Element) -> Option<String> {
    el.child_text("body", ns::CLIENT)
}

/// Alice's hibernated session `task` ends within `within`, leaving nothing behind, and
/// `expected` bounce back to `bob`, in order (no offline storage in these tests).
async fn ends_bouncing(
    ctx: &C2sContext,
    task: tokio::task::JoinHandle<()>,
    within: Duration,
    bob: &mut SessionEnd,
    expected: &[&str],
) {
    tokio::time::timeout(within, task)
        .await
        .expect("the session ends")
        .unwrap();
    assert!(ctx.core.session(&jid("alice@localhost/r")).is_none());
    assert!(ctx.sm.is_empty());
    for expected in expected {
        let st = received(bob).await;
        assert_eq!(st.element().attr("type"), Some("error"));
        assert_eq!(body(st.element()).as_deref(), Some(*expected));
    }
}

async fn received(end: &mut SessionEnd) -> Stanza {
    let item = tokio::time::timeout(Duration::from_secs(5), end.rx.recv())
        .await
        .expect("a stanza")
        .expect("queue open");
    let Outbound::Bytes(b) = item else {
        panic!("a stanza, not a receipt");
    };
    Stanza::from_serialized(&b).expect("a stanza")
}

/// Enables stream management; returns the `<enabled/>`.
async fn enable(peer: &mut Peer, resume: bool) -> Element {
    let attr = if resume { " resume='true'" } else { "" };
    peer.send(&format!("<enable xmlns='urn:xmpp:sm:3'{attr}/>"))
        .await;
    let el = peer.next().await.unwrap();
    assert!(el.is("enabled", sm::NS), "{el}");
    el
}

fn stream_error(el: &Element) -> Option<String> {
    if !el.is("error", ns::STREAM) {
        return None;
    }
    el.children()
        .find(|c| c.ns() == ns::STREAM_ERRORS && c.name() != "text")
        .map(|c| c.name().to_string())
}

// ---- dead-peer detection ---------------------------------------------------------------------

/// A running session of alice@localhost/r that the server pings after 30 s of silence, on a
/// paused clock.
async fn pinged_session() -> (Arc<C2sContext>, Peer, JoinHandle<()>) {
    let ctx = context(C2sConfig {
        ping_interval_secs: 30,
        ..config()
    })
    .await;
    let (peer, task) = start(&ctx, "alice@localhost/r", 64).await;
    tokio::time::pause();
    (ctx, peer, task)
}

#[tokio::test]
async fn a_silent_peer_is_pinged_then_closed_and_unbound() {
    let (ctx, mut peer, task) = pinged_session().await;
    let t0 = Instant::now();
    let ping = peer.next().await.unwrap();
    assert!(
        ping.is("iq", ns::CLIENT) && ping.has_child("ping", ns::PING),
        "{ping}"
    );
    assert_eq!(ping.attr("to"), Some("alice@localhost/r"));
    assert!(t0.elapsed() >= Duration::from_secs(30));
    // No answer: closed after the timeout.
    let err = peer.next().await.unwrap();
    assert_eq!(stream_error(&err).as_deref(), Some("connection-timeout"));
    assert!(t0.elapsed() >= Duration::from_secs(40));
    assert!(peer.next().await.is_none());
    task.await.unwrap();
    assert!(ctx.core.session(&jid("alice@localhost/r")).is_none());
}

#[tokio::test]
async fn an_answered_ping_keeps_the_session() {
    let (ctx, mut peer, task) = pinged_session().await;
    for _ in 0..3 {
        let ping = peer.next().await.unwrap();
        assert!(ping.has_child("ping", ns::PING), "{ping}");
        let id = ping.attr("id").unwrap().to_string();
        peer.send(&format!("<iq type='result' id='{id}' to='localhost'/>"))
            .await;
    }
    assert!(!task.is_finished());
    assert!(ctx.core.session(&jid("alice@localhost/r")).is_some());
}

#[tokio::test]
async fn whitespace_counts_as_a_sign_of_life() {
    let (ctx, mut peer, task) = pinged_session().await;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(10)).await;
        peer.send(" ").await;
    }
    // 100 s went by with a keepalive every 10 s: nothing was closed. (With a paused clock
    // over real sockets a read can be seen late, so a ping may have gone out; no error did.)
    while let Ok(Some(el)) = tokio::time::timeout(Duration::from_secs(1), peer.next()).await {
        assert!(stream_error(&el).is_none(), "{el}");
    }
    assert!(!task.is_finished());
    assert!(ctx.core.session(&jid("alice@localhost/r")).is_some());
}

#[tokio::test]
async fn a_peer_that_stops_reading_is_closed() {
    let ctx = context(config()).await;
    let _other = fake(&ctx, "alice@localhost/other").await;
    let (peer, task) = start(&ctx, "alice@localhost/r", 4096).await;
    tokio::time::pause();
    // Far more than the socket buffers hold; the peer never reads.
    let big = "x".repeat(32 * 1024);
    for i in 0..600 {
        message(
            &ctx,
            "bob@localhost/b",
            "alice@localhost/r",
            &format!("{i}{big}"),
        )
        .await;
        tokio::task::yield_now().await;
    }
    let t0 = Instant::now();
    tokio::time::timeout(Duration::from_secs(120), task)
        .await
        .expect("the session ends")
        .unwrap();
    assert!(t0.elapsed() >= Duration::from_secs(10) - Duration::from_millis(1));
    assert!(ctx.core.session(&jid("alice@localhost/r")).is_none());
    drop(peer);
}

// ---- queue overflow ----------------------------------------------------------------------------

/// Routes `n` messages to `to` without yielding, so a session task that has not run yet
/// cannot drain its queue meanwhile (the test runtime has one thread).
async fn burst(ctx: &Arc<C2sContext>, to: &str, names: &[&str]) {
    for name in names {
        message(ctx, "carol@localhost/c", to, name).await;
    }
}

/// Reads the peer's messages up to the stream error; returns their bodies and the condition.
async fn bodies_until_error(peer: &mut Peer) -> (Vec<String>, Option<String>) {
    let mut got = Vec::new();
    while let Some(el) = peer.next_stanza().await {
        if let Some(c) = stream_error(&el) {
            return (got, Some(c));
        }
        got.extend(body(&el));
    }
    (got, None)
}

/// bob@localhost/stuck, a running session with a queue of two, and bob's other resource,
/// available, whose queue the test reads.
async fn stuck_bob() -> (Arc<C2sContext>, SessionEnd, Peer, JoinHandle<()>) {
    let ctx = context(config()).await;
    let other = fake(&ctx, "bob@localhost/other").await;
    ctx.core.set_available(&jid("bob@localhost/other"), Some(0));
    let (peer, task) = start(&ctx, "bob@localhost/stuck", 2).await;
    (ctx, other, peer, task)
}

/// The peer got `bodies`, then the `policy-violation` of an overflowed queue, and the session
/// ended.
async fn overflowed(mut peer: Peer, task: JoinHandle<()>, bodies: &[&str]) {
    let (got, cond) = bodies_until_error(&mut peer).await;
    assert_eq!(got, bodies);
    assert_eq!(cond.as_deref(), Some("policy-violation"));
    task.await.unwrap();
}

#[tokio::test]
async fn the_stanza_that_overflows_the_queue_is_not_lost() {
    let (ctx, mut other, peer, task) = stuck_bob().await;
    // A queue of two: the third message closes the session, and is kept.
    burst(&ctx, "bob@localhost/stuck", &["m0", "m1", "m2"]).await;
    // From now on the closing session is no target: its resource counts as not online
    // (RFC 6121 §8.5.3.2.1), so the next message goes to the other resource.
    burst(&ctx, "bob@localhost/stuck", &["m3"]).await;
    assert_eq!(
        body(received(&mut other).await.element()).as_deref(),
        Some("m3")
    );
    overflowed(peer, task, &["m0", "m1", "m2"]).await;
    assert!(other.rx.try_recv().is_err(), "nothing twice");
}

#[tokio::test]
async fn an_overflowed_managed_session_routes_its_unacked_stanzas_again() {
    let (ctx, mut other, mut peer, task) = stuck_bob().await;
    enable(&mut peer, false).await;
    burst(&ctx, "bob@localhost/stuck", &["m0", "m1", "m2"]).await;
    overflowed(peer, task, &["m0", "m1", "m2"]).await;
    // Never acknowledged, so handled as undelivered (XEP-0198 §5, RFC 6121 §8.5.3.2.1):
    // the other resource gets all three, the one that overflowed included.
    for expected in ["m0", "m1", "m2"] {
        let st = received(&mut other).await;
        assert_eq!(body(st.element()).as_deref(), Some(expected));
    }
}

#[tokio::test]
async fn an_iq_request_that_overflows_an_unacking_session_gets_an_error() {
    let ctx = context(config()).await;
    let mut carol = fake(&ctx, "carol@localhost/c").await;
    let (mut peer, task) = start(&ctx, "bob@localhost/stuck", 2).await;
    enable(&mut peer, false).await;
    burst(&ctx, "bob@localhost/stuck", &["m0", "m1"]).await;
    // The third stanza, an IQ request, overflows the queue of two.
    route(
        &ctx,
        Element::new("iq", ns::CLIENT)
            .with_attr("from", "carol@localhost/c")
            .with_attr("to", "bob@localhost/stuck")
            .with_attr("type", "get")
            .with_attr("id", "q1")
            .with_child(Element::new("query", "jabber:iq:version")),
    )
    .await;
    let (_, cond) = bodies_until_error(&mut peer).await;
    assert_eq!(cond.as_deref(), Some("policy-violation"));
    task.await.unwrap();
    // Never acknowledged: the request is answered for the resource that is gone (RFC 6121
    // §8.5.3.2.3), after the two bounced messages (no other resource, no offline storage).
    let mut iq_error = None;
    for _ in 0..3 {
        let st = received(&mut carol).await;
        if st.element().is("iq", ns::CLIENT) {
            iq_error = Some(st);
        }
    }
    let st = iq_error.expect("an answer to the request");
    assert_eq!(st.element().attr("type"), Some("error"));
    assert_eq!(st.element().attr("id"), Some("q1"));
    assert!(
        st.element().to_string().contains("service-unavailable"),
        "{}",
        st.element()
    );
}

// ---- stream management: counting and acks ----------------------------------------------------

#[tokio::test]
async fn acks_both_ways() {
    let ctx = context(config()).await;
    let (mut peer, _task) = start(&ctx, "alice@localhost/r", 64).await;
    let en = enable(&mut peer, false).await;
    assert_eq!(en.attr("id"), None);
    assert_eq!(en.attr("resume"), None);
    peer.sync("p1").await;
    peer.sync("p2").await;
    peer.send("<r xmlns='urn:xmpp:sm:3'/>").await;
    let a = peer.next_stanza().await.unwrap();
    assert!(a.is("a", sm::NS), "{a}");
    assert_eq!(a.attr("h"), Some("2"));
    // The server asks for an ack once 5 stanzas are unacknowledged (2 ping results so far).
    for i in 0..3 {
        message(&ctx, "bob@localhost/b", "alice@localhost/r", &i.to_string()).await;
    }
    let mut got = 0;
    loop {
        let el = peer.next().await.unwrap();
        if el.is("r", sm::NS) {
            break;
        }
        got += 1;
    }
    assert_eq!(got, 3);
    peer.send("<a xmlns='urn:xmpp:sm:3' h='5'/>").await;
    peer.sync("p3").await;
    // Enabling twice ends the stream (XEP-0198 §3 SHOULD).
    peer.send("<enable xmlns='urn:xmpp:sm:3'/>").await;
    let f = peer.next_stanza().await.unwrap();
    assert!(f.to_string().contains("policy-violation"), "{f}");
}

#[tokio::test]
async fn an_unacked_stanza_gets_an_ack_request_after_a_delay() {
    let ctx = context(config()).await;
    let (mut peer, _task) = start(&ctx, "alice@localhost/r", 64).await;
    enable(&mut peer, false).await;
    tokio::time::pause();
    let t0 = Instant::now();
    message(&ctx, "bob@localhost/b", "alice@localhost/r", "one").await;
    assert_eq!(body(&peer.next().await.unwrap()).as_deref(), Some("one"));
    let r = peer.next().await.unwrap();
    assert!(r.is("r", sm::NS), "{r}");
    assert!(t0.elapsed() >= super::ACK_DELAY);
}

#[tokio::test]
async fn acking_more_than_sent_ends_the_stream() {
    let ctx = context(config()).await;
    let (mut peer, task) = start(&ctx, "alice@localhost/r", 64).await;
    enable(&mut peer, true).await;
    peer.send("<a xmlns='urn:xmpp:sm:3' h='3'/>").await;
    let err = peer.next().await.unwrap();
    assert_eq!(stream_error(&err).as_deref(), Some("undefined-condition"));
    let detail = err.get_child("handled-count-too-high", sm::NS).unwrap();
    assert_eq!(detail.attr("h"), Some("3"));
    assert_eq!(detail.attr("send-count"), Some("0"));
    assert!(peer.next().await.is_none());
    // A protocol violation ends the session even though it was resumable.
    task.await.unwrap();
    assert!(ctx.core.session(&jid("alice@localhost/r")).is_none());
    assert!(ctx.sm.is_empty());
}

// ---- stream management: hibernation and resumption -------------------------------------------

#[tokio::test]
async fn a_hibernated_session_times_out_and_its_messages_bounce() {
    let ctx = context(config()).await;
    let _other = fake(&ctx, "alice@localhost/other").await;
    let mut bob = fake(&ctx, "bob@localhost/b").await;
    let (mut peer, task) = start(&ctx, "alice@localhost/r", 64).await;
    let en = enable(&mut peer, true).await;
    assert_eq!(en.attr("resume"), Some("true"));
    assert_eq!(en.attr("max"), Some("60"));
    message(&ctx, "bob@localhost/b", "alice@localhost/r", "one").await;
    assert_eq!(body(&peer.next().await.unwrap()).as_deref(), Some("one"));
    // The connection dies without a close; "one" was never acknowledged.
    drop(peer);
    tokio::time::pause();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(ctx.core.session(&jid("alice@localhost/r")).is_some());
    message(&ctx, "bob@localhost/b", "alice@localhost/r", "two").await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(!task.is_finished(), "still hibernating within the timeout");
    // No offline storage here: both messages bounce back to bob, in order.
    ends_bouncing(
        &ctx,
        task,
        Duration::from_secs(60),
        &mut bob,
        &["one", "two"],
    )
    .await;
}

#[tokio::test]
async fn resumption_takes_over_a_silent_connection() {
    let ctx = context(config()).await;
    let (mut old, _task) = start(&ctx, "alice@localhost/r", 64).await;
    let en = enable(&mut old, true).await;
    let id = en.attr("id").unwrap().to_string();
    old.sync("p1").await; // one stanza each way
    message(&ctx, "bob@localhost/b", "alice@localhost/r", "m1").await;
    assert_eq!(body(&old.next().await.unwrap()).as_deref(), Some("m1"));
    // The old socket stays open but silent; a new connection resumes, acking the ping result.
    let (conn, mut new) = pipe(&ctx).await;
    let (reply, verdict) = oneshot::channel();
    let alice = BareJid::parse("alice@localhost").unwrap();
    let takeover = Takeover {
        conn: Box::new(conn),
        h: 1,
        reply,
        sasl2: None,
    };
    assert!(ctx.sm.offer(&id, &alice, takeover).is_ok());
    assert!(matches!(verdict.await.unwrap(), Verdict::Accepted));
    let resumed = new.next().await.unwrap();
    assert!(resumed.is("resumed", sm::NS), "{resumed}");
    assert_eq!(resumed.attr("previd"), Some(id.as_str()));
    assert_eq!(resumed.attr("h"), Some("1"));
    assert_eq!(
        body(&new.next_stanza().await.unwrap()).as_deref(),
        Some("m1")
    );
    // The old connection is told and closed.
    let err = old.next().await.unwrap();
    assert_eq!(stream_error(&err).as_deref(), Some("conflict"));
    // The session goes on: new stanzas both ways, counters continued.
    message(&ctx, "bob@localhost/b", "alice@localhost/r", "m2").await;
    assert_eq!(
        body(&new.next_stanza().await.unwrap()).as_deref(),
        Some("m2")
    );
    new.sync("p2").await;
    new.send("<r xmlns='urn:xmpp:sm:3'/>").await;
    let a = new.next_stanza().await.unwrap();
    assert!(a.is("a", sm::NS), "{a}");
    assert_eq!(a.attr("h"), Some("2"));
}

#[tokio::test]
async fn resumption_after_hibernation_delivers_what_waited() {
    let ctx = context(config()).await;
    let (mut old, task) = start(&ctx, "alice@localhost/r", 64).await;
    let en = enable(&mut old, true).await;
    let id = en.attr("id").unwrap().to_string();
    message(&ctx, "bob@localhost/b", "alice@localhost/r", "m1").await;
    assert_eq!(body(&old.next().await.unwrap()).as_deref(), Some("m1"));
    drop(old);
    tokio::time::pause();
    tokio::time::sleep(Duration::from_secs(10)).await;
    message(&ctx, "bob@localhost/b", "alice@localhost/r", "m2").await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (conn, mut new) = pipe(&ctx).await;
    let (reply, verdict) = oneshot::channel();
    let alice = BareJid::parse("alice@localhost").unwrap();
    let takeover = Takeover {
        conn: Box::new(conn),
        h: 0,
        reply,
        sasl2: None,
    };
    assert!(ctx.sm.offer(&id, &alice, takeover).is_ok());
    assert!(matches!(verdict.await.unwrap(), Verdict::Accepted));
    assert!(new.next().await.unwrap().is("resumed", sm::NS));
    assert_eq!(
        body(&new.next_stanza().await.unwrap()).as_deref(),
        Some("m1")
    );
    assert_eq!(
        body(&new.next_stanza().await.unwrap()).as_deref(),
        Some("m2")
    );
    // Well past the resumption timeout: the session lives on with its new connection.
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(!task.is_finished());
    new.sync("p").await;
}

#[tokio::test]
async fn resumption_is_refused_for_bad_h_and_for_other_users() {
    let ctx = context(config()).await;
    let (mut old, _task) = start(&ctx, "alice@localhost/r", 64).await;
    let id = enable(&mut old, true).await.attr("id").unwrap().to_string();
    message(&ctx, "bob@localhost/b", "alice@localhost/r", "m1").await;
    assert_eq!(body(&old.next().await.unwrap()).as_deref(), Some("m1"));

    let (conn, _new) = pipe(&ctx).await;
    let (reply, verdict) = oneshot::channel();
    let alice = BareJid::parse("alice@localhost").unwrap();
    let t = Takeover {
        conn: Box::new(conn),
        h: 7,
        reply,
        sasl2: None,
    };
    assert!(ctx.sm.offer(&id, &alice, t).is_ok());
    let Verdict::Rejected { failed, .. } = verdict.await.unwrap() else {
        panic!("accepted a resume acking more than was sent");
    };
    assert!(
        failed.has_child("handled-count-too-high", sm::NS),
        "{failed}"
    );

    let (conn, _new) = pipe(&ctx).await;
    let (reply, _verdict) = oneshot::channel();
    let bob = BareJid::parse("bob@localhost").unwrap();
    let t = Takeover {
        conn: Box::new(conn),
        h: 0,
        reply,
        sasl2: None,
    };
    let Err((_, condition)) = ctx.sm.offer(&id, &bob, t) else {
        panic!("bob resumed alice's session");
    };
    assert_eq!(condition, "item-not-found");

    // The old connection is unaffected.
    old.send("<r xmlns='urn:xmpp:sm:3'/>").await;
    let a = old.next_stanza().await.unwrap();
    assert_eq!(a.attr("h"), Some("0"));
}

#[tokio::test]
async fn a_clean_close_ends_a_resumable_session() {
    let ctx = context(config()).await;
    let (mut peer, task) = start(&ctx, "alice@localhost/r", 64).await;
    enable(&mut peer, true).await;
    assert_eq!(ctx.sm.len(), 1);
    peer.send("</stream:stream>").await;
    assert!(peer.next().await.is_none());
    task.await.unwrap();
    assert!(ctx.core.session(&jid("alice@localhost/r")).is_none());
    assert!(ctx.sm.is_empty());
}

// ---- client state indication -----------------------------------------------------------------

#[tokio::test]
async fn inactive_clients_get_presence_later_and_messages_at_once() {
    let ctx = context(config()).await;
    let (mut peer, _task) = start(&ctx, "alice@localhost/r", 64).await;
    peer.send("<inactive xmlns='urn:xmpp:csi:0'/>").await;
    peer.sync("p1").await;
    tokio::time::pause();
    let presence = |from: &str| {
        Element::new("presence", ns::CLIENT)
            .with_attr("from", from)
            .with_attr("to", "alice@localhost/r")
    };
    route(&ctx, presence("bob@localhost/1")).await;
    route(&ctx, presence("carol@localhost/1")).await;
    let chat_state = Element::new("message", ns::CLIENT)
        .with_attr("from", "bob@localhost/1")
        .with_attr("to", "alice@localhost/r")
        .with_attr("type", "chat")
        .with_child(Element::new(
            "composing",
            "http://jabber.org/protocol/chatstates",
        ));
    route(&ctx, chat_state).await;
    assert!(peer.quiet(Duration::from_secs(60)).await, "held back");
    // A message with a body goes out at once, after what was held (in order).
    message(&ctx, "bob@localhost/1", "alice@localhost/r", "hello").await;
    let mut got = Vec::new();
    for _ in 0..4 {
        let el = peer.next().await.unwrap();
        got.push(format!("{}:{}", el.name(), el.attr("from").unwrap_or("")));
    }
    assert_eq!(
        got,
        [
            "presence:bob@localhost/1",
            "presence:carol@localhost/1",
            "message:bob@localhost/1",
            "message:bob@localhost/1",
        ]
    );
    // Held again, then flushed by <active/>; a newer presence replaces the held one.
    route(&ctx, presence("bob@localhost/1")).await;
    route(
        &ctx,
        presence("bob@localhost/1").with_child(Element::new("show", ns::CLIENT).with_text("away")),
    )
    .await;
    assert!(peer.quiet(Duration::from_secs(60)).await, "held back");
    peer.send("<active xmlns='urn:xmpp:csi:0'/>").await;
    let p = peer.next().await.unwrap();
    assert_eq!(p.child_text("show", ns::CLIENT).as_deref(), Some("away"));
    assert!(
        peer.quiet(Duration::from_secs(60)).await,
        "only the newest presence"
    );
    // Active again: presence goes out at once.
    route(&ctx, presence("carol@localhost/1")).await;
    assert!(peer.next().await.unwrap().is("presence", ns::CLIENT));
}

/// The features a SASL2 success is followed by, as the machine makes them once bound.
fn features() -> Element {
    rookery_proto::stream::features()
        .with_child(Element::new("sm", sm::NS))
        .with_child(Element::new("csi", "urn:xmpp:csi:0"))
}

/// XEP-0388 §2.6.1: the features follow the success, without stream management (on
/// already, inline or resumed).
fn features_follow(f: Element) {
    assert!(f.is("features", "http://etherx.jabber.org/streams"), "{f}");
    assert!(
        !f.has_child("sm", sm::NS) && f.has_child("csi", "urn:xmpp:csi:0"),
        "{f}"
    );
}

/// Bind2 (XEP-0386 §4.2): the session enables stream management and the client state
/// inline and sends the SASL2 success with `<bound/>` first; a resumption asked inline in
/// SASL2 gets `<resumed/>` inside a SASL2 success naming the session's full JID.
#[tokio::test]
async fn inline_bind_then_inline_resumption() {
    let ctx = context(config()).await;
    let success = rookery_stream::negotiation::sasl2::success(None, "alice@localhost/r", vec![]);
    let bind = bind2::Request {
        tag: None,
        carbons: true,
        inactive: Some(true),
        sm_enable: Some(Element::new("enable", sm::NS).with_attr("resume", "true")),
    };
    let inline = Some(Box::new(Inline {
        success,
        bind,
        features: features(),
    }));
    let (mut old, _task) = start_inline(&ctx, "alice@localhost/r", 64, inline).await;
    let s = old.next().await.unwrap();
    assert!(s.is("success", "urn:xmpp:sasl:2"), "{s}");
    let enabled = s
        .get_child("bound", bind2::NS)
        .and_then(|b| b.get_child("enabled", sm::NS))
        .expect("sm enabled inline");
    assert_eq!(enabled.attr("resume"), Some("true"));
    let id = enabled.attr("id").unwrap().to_string();
    features_follow(old.next().await.unwrap());
    // Inactive inline: a message is still delivered (only unimportant stanzas wait).
    message(&ctx, "bob@localhost/b", "alice@localhost/r", "m1").await;
    assert_eq!(
        body(&old.next_stanza().await.unwrap()).as_deref(),
        Some("m1")
    );
    drop(old);

    let (conn, mut new) = pipe(&ctx).await;
    let (reply, verdict) = oneshot::channel();
    let alice = BareJid::parse("alice@localhost").unwrap();
    let takeover = Takeover {
        conn: Box::new(conn),
        h: 0,
        reply,
        sasl2: Some(Box::new(Sasl2Resumed {
            additional_data: Some(b"v=x".to_vec()),
            answers: vec![Element::new("token", "urn:xmpp:fast:0")],
        })),
    };
    assert!(ctx.sm.offer(&id, &alice, takeover).is_ok());
    assert!(matches!(verdict.await.unwrap(), Verdict::Accepted));
    let s = new.next().await.unwrap();
    assert!(s.is("success", "urn:xmpp:sasl:2"), "{s}");
    assert_eq!(
        s.child_text("authorization-identifier", "urn:xmpp:sasl:2")
            .as_deref(),
        Some("alice@localhost/r")
    );
    let names: Vec<&str> = s.children().map(Element::name).collect();
    assert_eq!(
        names,
        [
            "additional-data",
            "authorization-identifier",
            "token",
            "resumed"
        ]
    );
    let resumed = s.get_child("resumed", sm::NS).expect("resumed inline");
    assert_eq!(resumed.attr("previd"), Some(id.as_str()));
    // XEP-0198 "SASL2 and BIND2 interaction": no features after a resumption; the stream
    // goes on with what was not acknowledged.
    let next = new.next().await.unwrap();
    assert_eq!(body(&next).as_deref(), Some("m1"), "{next}");
}

/// Copies are not routed again when a session ends; what it was sent is, and so are IQ
/// requests.
#[test]
fn copies_are_not_reroutable() {
    let jid = Jid::parse("alice@localhost/phone").unwrap();
    let cases = [
        (
            "<message from='bob@localhost/b' type='chat'><body>x</body></message>",
            true,
        ),
        (
            "<iq from='bob@localhost/b' type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>",
            true,
        ),
        ("<iq from='bob@localhost/b' type='result' id='1'/>", false),
        ("<presence from='bob@localhost/b'/>", false),
        (
            "<message from='alice@localhost' type='chat'>\
             <received xmlns='urn:xmpp:carbons:2'/></message>",
            false,
        ),
        (
            "<message from='alice@localhost'><sent xmlns='urn:xmpp:carbons:2'/></message>",
            false,
        ),
        // Not from the account: not a carbon of its own, whatever it says.
        (
            "<message from='bob@localhost'><sent xmlns='urn:xmpp:carbons:2'/></message>",
            true,
        ),
        (
            "<message from='alice@localhost'><result xmlns='urn:xmpp:mam:2' id='1'/></message>",
            false,
        ),
    ];
    for (xml, want) in cases {
        let s = Stanza::from_serialized(xml.as_bytes()).unwrap();
        assert_eq!(super::reroutable(&s, &jid), want, "{xml}");
    }
}

/// Asks the session `id` of alice to hand itself over to another node, as that node's
/// request does (`elsewhere::ResumedElsewhere`); what it answered.
async fn move_out(
    ctx: &C2sContext,
    id: &str,
    h: u32,
) -> Result<crate::elsewhere::Moved, HandoverRefusal> {
    let (reply, answer) = oneshot::channel();
    let alice = BareJid::parse("alice@localhost").unwrap();
    let claim = sm::MoveOut {
        h,
        max_bytes: 1 << 20,
        reply,
    };
    assert!(ctx.sm.offer(id, &alice, claim).is_ok());
    let text = answer.await.unwrap()?;
    Ok(serde_json::from_str(&text).unwrap())
}

/// The bodies of serialized stanzas.
fn bodies<'a>(stanzas: impl Iterator<Item = &'a String>) -> Vec<String> {
    stanzas
        .filter_map(|s| body(Stanza::from_serialized(s.as_bytes())?.element()))
        .collect()
}

/// alice's resumable session, "one" written to it unacknowledged, then its connection
/// dropped and "two" parked; with bob's session to receive bounces. The clock is paused.
async fn hibernated_alice() -> (Arc<C2sContext>, String, SessionEnd, JoinHandle<()>) {
    let ctx = context(config()).await;
    let bob = fake(&ctx, "bob@localhost/b").await;
    let (mut peer, task) = start(&ctx, "alice@localhost/r", 64).await;
    let id = enable(&mut peer, true)
        .await
        .attr("id")
        .unwrap()
        .to_string();
    message(&ctx, "bob@localhost/b", "alice@localhost/r", "one").await;
    assert_eq!(body(&peer.next().await.unwrap()).as_deref(), Some("one"));
    // Attached, it stays where it is.
    assert_eq!(
        move_out(&ctx, &id, 0).await.err(),
        Some(HandoverRefusal::NotHandedOver)
    );
    drop(peer);
    tokio::time::pause();
    tokio::time::sleep(Duration::from_secs(1)).await;
    message(&ctx, "bob@localhost/b", "alice@localhost/r", "two").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    (ctx, id, bob, task)
}

#[tokio::test]
async fn a_hibernated_session_hands_itself_over_and_ends_as_before_if_not_taken() {
    let (ctx, id, mut bob, task) = hibernated_alice().await;
    let moved = move_out(&ctx, &id, 0).await.expect("handed over");
    assert_eq!(moved.jid, "alice@localhost/r");
    assert_eq!(moved.previd, id);
    assert_eq!(bodies(moved.unacked.iter().map(|(s, _)| s)), ["one"]);
    assert_eq!(bodies(moved.pending.iter()), ["two"]);
    // Meanwhile nobody else gets it.
    let (conn, _new) = pipe(&ctx).await;
    let (reply, verdict) = oneshot::channel();
    let alice = BareJid::parse("alice@localhost").unwrap();
    let t = Takeover {
        conn: Box::new(conn),
        h: 0,
        reply,
        sasl2: None,
    };
    assert!(ctx.sm.offer(&id, &alice, t).is_ok());
    assert!(matches!(verdict.await.unwrap(), Verdict::Rejected { .. }));
    // The other node never binds it: it ends as an unresumed session, losing nothing.
    let grace = crate::elsewhere::MOVE_GRACE * 2;
    ends_bouncing(&ctx, task, grace, &mut bob, &["one", "two"]).await;
}

/// An `h` above what the session sent: the other node is told so, with what its client's
/// `<failed/>` says (as a refusal here), and the session stays where it is.
#[tokio::test]
async fn a_hibernated_session_refuses_a_move_whose_h_is_too_high_and_says_so() {
    let (ctx, id, _bob, _task) = hibernated_alice().await;
    assert_eq!(
        move_out(&ctx, &id, 5).await.err(),
        Some(HandoverRefusal::HandledCountTooHigh {
            h: 5,
            sent: 1,
            inbound: 0
        })
    );
    assert!(move_out(&ctx, &id, 1).await.is_ok());
}

#[tokio::test]
async fn a_session_handed_over_sends_what_came_late_to_its_new_node() {
    let (ctx, id, mut bob, task) = hibernated_alice().await;
    assert!(move_out(&ctx, &id, 1).await.is_ok());
    message(&ctx, "bob@localhost/b", "alice@localhost/r", "late").await;
    // The other node bound it: its handle replaces this one.
    let (tx, mut forwarded) = tokio::sync::mpsc::unbounded_channel();
    let remote = SessionHandle::forwarded(ctx.core.next_session_id(), jid("alice@localhost/r"), tx);
    let replaced = ctx
        .core
        .bind_remote(remote)
        .await
        .expect("the local session");
    assert!(replaced.is_moving());
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("ends at once")
        .unwrap();
    let (to, late) = forwarded.recv().await.unwrap();
    assert_eq!(to, jid("alice@localhost/r"));
    let late = Stanza::from_serialized(&late).unwrap();
    assert_eq!(body(late.element()).as_deref(), Some("late"));
    // What was handed over is the other node's: nothing bounced, nothing else forwarded.
    assert!(forwarded.try_recv().is_err());
    assert!(bob.rx.try_recv().is_err());
    assert!(ctx.sm.is_empty());
    assert!(ctx
        .core
        .session(&jid("alice@localhost/r"))
        .unwrap()
        .is_remote());
}
