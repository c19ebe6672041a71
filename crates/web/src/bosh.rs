//! BOSH (XEP-0124) carrying XMPP (XEP-0206) at [`PATH`].
//!
//! A BOSH session is a c2s stream on a message-framed `Conn` ([`rookery_stream::message`])
//! whose transport is the session's request window itself ([`Link`]): each child of a
//! request's `<body/>` is one message to the connection, `xmpp:restart`
//! (XEP-0206 §5) is a new `<open/>`, `type='terminate'` a `<close/>`; what the connection
//! sends is gathered and returned in the bodies of the requests the client holds open. So
//! negotiation, limits and the session are the TCP client's; this module keeps only what is
//! BOSH's own:
//! - the request window (XEP-0124 §14): requests are handled in `rid` order, at most
//!   `requests` ahead, each one's payload passed to the stream whole before the next one's
//!   (§14.1); a `rid` answered before gets the same response again (§14.3, so a lost HTTP
//!   response is recovered by resending; a resend's payload is not passed again, so a
//!   request taken is passed whole even if its HTTP connection drops midway; one resent
//!   while still held takes the answer over, the earlier copy gets `type='error'` at once),
//!   one outside the window ends the session with `item-not-found`;
//! - holding (§8, §10): up to `hold` requests wait (at most `wait` seconds) for something to
//!   send; a further request sends the oldest back empty;
//! - inactivity (§7.1): with no request held for `inactivity` seconds (`[http]
//!   bosh_inactivity_secs`) the session ends (the stream sees its transport gone, so a
//!   resumable XEP-0198 session hibernates); a lost HTTP connection within that time costs
//!   nothing;
//! - `ack` (§9.1) of the creation request (then acknowledging rids in responses) and the
//!   advertised limits;
//! - overactivity (§11) and too frequent polling (§12): an empty new request less than
//!   `polling` seconds after the previous new one, while every request the session may have
//!   open is open (or, in a polling session — `hold` or `wait` 0 — after an empty request
//!   answered empty), ends the session with `policy-violation` — a client that polls in a
//!   loop costs a request per round trip;
//! - the request body's size: several stanzas ([`max_body_bytes`]), a larger one answered
//!   `policy-violation` as a BOSH answer (§17.1), not an HTTP error;
//! - a bound on sessions per client address, and CORS (with preflight) for web pages of the
//!   allowed origins;
//! - in a cluster, a request for a session another node holds (its sid names the node) is
//!   passed to that node, which serves it as its own ([`Peers`], [`serve_relayed`];
//!   docs/clustering.md, "BOSH on any node").
//!
//! When the session ends, what its window still holds for a client that stopped asking
//! goes back to the stream ([`MessageTransport::take_unsent`]), which routes it again as a
//! TCP session does its undelivered stanzas.
//!
//! The stream reads its messages from the window and writes its frames into it within its
//! own polls: no channels and no relay task between them, so an idle session is its
//! stream's task, the window and the held request (channels allocated a block of 32 slots
//! each, whatever their bound, and the relay's future sat in the session's task beside the
//! stream's).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use rookery_http::Peer;
use rookery_proto::ns;
use rookery_stream::message::NS_FRAMING;
use rookery_stream::{Conn, Frame, MessageTransport, Messages};
use rookery_xml::{escape_into, Element, Limits};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use tracing::Instrument;

use crate::{origin, WebContext};

/// Where the BOSH endpoint is served.
pub const PATH: &str = "/http-bind";

/// XEP-0124's namespace.
pub const NS_HTTPBIND: &str = "http://jabber.org/protocol/httpbind";

/// XEP-0206's namespace (`xmpp:version`, `xmpp:restart`).
const NS_XBOSH: &str = "urn:xmpp:xbosh";
/// `xmpp:restart` as the parser keeps it: by its expanded name, whatever the prefix.
const XMPP_RESTART: &str = "{urn:xmpp:xbosh}restart";

/// The longest `wait` we grant (seconds): below common proxy timeouts.
const MAX_WAIT: u64 = 60;

/// Requests held at once: 1, as XEP-0124 §10 recommends (so `requests` is 2).
const MAX_HOLD: usize = 1;

/// The BOSH version implemented (XEP-0124 1.11).
const VERSION: (u32, u32) = (1, 11);

/// Shortest interval between two empty new requests while every request the session may
/// have open is open, or, in a polling session (`hold` or `wait` 0), after an empty request
/// answered empty (`polling`, §11, §12).
const POLLING: Duration = Duration::from_secs(2);

/// How long an ended session waits for its client's next request once the server shuts
/// down: a client between two requests picks up the `system-shutdown` with the next one, a
/// round trip away.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// The least a request that came before the rids preceding it waits for them (`wait` may
/// be 0).
const OUT_OF_ORDER_WAIT: Duration = Duration::from_secs(1);

/// Messages to the connection waiting for it in the window (the rest waits in the request:
/// a stream slower than its client holds the client's requests back).
const INCOMING_DEPTH: usize = 4;

/// Elements from the connection waiting in the window for a request to carry them, and
/// their bytes: beyond either the stream's writes wait, so a client that stops asking fills
/// its session's queue and is disconnected as any slow client (the queue's limits), instead
/// of the window growing until `inactivity`.
const OUTGOING_DEPTH: usize = 256;
const OUTGOING_BYTES: usize = 1 << 20;

/// What one response carries at most of the gathered elements (always at least one): the
/// rest goes with the next request. The window may gather more ([`OUTGOING_BYTES`] and the
/// frames of one write past it); in a cluster a response relayed by another node must cross
/// the bus, whose payload limit (NATS `max_payload`) is 1 MiB by default — over it the
/// answer could not cross and its stanzas would be lost with the session.
const RESPONSE_BYTES: usize = OUTGOING_BYTES - (16 << 10);

/// The BOSH sessions of the listener, by `sid`.
#[derive(Default)]
pub struct Sessions {
    by_sid: Mutex<HashMap<String, Arc<Session>>>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl Sessions {
    fn get(&self, sid: &str) -> Option<Arc<Session>> {
        lock(&self.by_sid).get(sid).cloned()
    }

    /// Counts a new session of `ip` unless it has `max` already.
    fn admit(&self, ip: IpAddr, max: usize) -> bool {
        let mut per_ip = lock(&self.per_ip);
        let n = per_ip.entry(ip).or_default();
        if *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    /// Forgets session `sid` of `ip`.
    fn remove(&self, sid: &str, ip: IpAddr) {
        lock(&self.by_sid).remove(sid);
        self.release(ip);
    }

    /// Uncounts a session of `ip` ([`Sessions::admit`]).
    fn release(&self, ip: IpAddr) {
        let mut per_ip = lock(&self.per_ip);
        if let Some(n) = per_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_ip.remove(&ip);
            }
        }
    }

    /// Sessions open now.
    pub fn len(&self) -> usize {
        lock(&self.by_sid).len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A poisoned lock only means another request panicked mid-update; the maps stay usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One BOSH session: the request window its requests and its stream share.
struct Session {
    sid: String,
    wait: Duration,
    hold: usize,
    /// How long the session lives without a held request (XEP-0124 §7.1 `inactivity`).
    inactivity: Duration,
    /// The `Content-Type` of every response: the creation request's `content` (§7.1).
    content: HeaderValue,
    /// The protocol version spoken: the lower of the client's `ver` and ours (§7.1).
    ver: String,
    /// Our domain, the creation response's `from` (§7.1).
    from: String,
    state: Mutex<Window>,
    /// Wakes held and queued requests: new frames, a new request, room for input, the end.
    changed: Notify,
}

/// What the requests of a session and its stream share.
struct Window {
    /// Messages to the stream, at most [`INCOMING_DEPTH`]; what is left when the stream's
    /// input ends is still read (as a channel's buffered messages were).
    incoming: VecDeque<Bytes>,
    /// The stream waiting for input or for inactivity to be judged again: woken by a
    /// message, and by a request leaving or joining the window.
    stream: Option<Waker>,
    /// Ended for inactivity or a terminal error: the stream's input ends and its output
    /// fails at once; what is left in `out` is the stream's to route again, no request's.
    expired: bool,
    /// The `rid` the next new request must carry.
    next_rid: u64,
    /// Held requests by `rid`, oldest first.
    held: VecDeque<u64>,
    /// The copy holding each held `rid` that was resent (§14.3: the latest one; a `rid` not
    /// here is held by its first copy, number 0), and the last copy number given.
    holders: Vec<(u64, u64)>,
    copies: u64,
    /// Admitted requests whose payload is not passed on yet, by `rid`, oldest first: only
    /// the first one passes (§14.1: payloads reach the stream in `rid` order, also when a
    /// request waits for room mid-payload and the next one is admitted meanwhile).
    passing: VecDeque<u64>,
    /// Elements from the connection not sent yet.
    out: Vec<Bytes>,
    /// The stream id from the connection's header (`authid`, XEP-0206 §4).
    stream_id: Option<String>,
    /// `authid` went out: on the first response after the stream id is known (the creation
    /// response, unless the stream was not that far yet).
    authid_sent: bool,
    /// The connection closed its stream: the next response terminates the session.
    closed: bool,
    /// The last responses by `rid`, for resent requests (as many as `requests`).
    answered: VecDeque<(u64, Bytes)>,
    /// When the last request ended (for inactivity).
    idle_since: Instant,
    /// The creation response is not sent yet.
    creating: bool,
    /// `ack` of the creation request (XEP-0124 §9.1): the client wants acknowledgements.
    ack: bool,
    /// When the last new request (not a resend) arrived.
    last_new: Instant,
    /// Whether the last new request carried nothing (§12: two empty ones in a row, the
    /// first answered empty, are one too many).
    last_new_empty: bool,
}

impl Window {
    /// Whether the session is over for its stream (what the end of its input and a failing
    /// output tell it): expired, or closed with no request left to answer and nothing left
    /// to send.
    fn over(&self) -> bool {
        self.expired || (self.closed && self.held.is_empty() && self.out.is_empty())
    }

    /// The answer kept for `rid` ([`Window::answered`]), if it is among the last ones.
    fn answer_to(&self, rid: u64) -> Option<&Bytes> {
        self.answered
            .iter()
            .find(|(r, _)| *r == rid)
            .map(|(_, a)| a)
    }

    /// The copy of request `rid` that holds it ([`Window::holders`]).
    fn holder(&self, rid: u64) -> u64 {
        self.holders
            .iter()
            .find(|(r, _)| *r == rid)
            .map_or(0, |(_, c)| *c)
    }

    /// Keeps the stream's waker, for [`Window::wake_stream`] (its input or its room).
    fn park_stream(&mut self, cx: &Context<'_>) {
        if !self
            .stream
            .as_ref()
            .is_some_and(|s| s.will_wake(cx.waker()))
        {
            self.stream = Some(cx.waker().clone());
        }
    }

    /// Wakes the stream to look at the window again.
    fn wake_stream(&mut self) {
        if let Some(waker) = self.stream.take() {
            waker.wake();
        }
    }
}

/// How many stanzas of the largest size a client may send (`max_stanza_bytes`) one request
/// body may carry: a client sends what it queued in one body (Strophe: all of one idle
/// tick), and each stanza is held to the stanza limit by the stream, as on TCP.
const BODY_STANZAS: usize = 4;

/// Room for the `<body/>` around the stanzas.
const BODY_ENVELOPE: usize = 4096;

/// The largest request body: `BODY_STANZAS` stanzas of `max_stanza_bytes` (the default
/// 256 KiB makes 1 MiB).
pub fn max_body_bytes(max_stanza_bytes: usize) -> usize {
    max_stanza_bytes
        .saturating_mul(BODY_STANZAS)
        .saturating_add(BODY_ENVELOPE)
}

/// Why a request body was not read.
enum BodyRefused {
    /// Over [`max_body_bytes`].
    TooLarge,
    /// The client's upload broke off.
    Unreadable,
}

impl BodyRefused {
    /// The terminal binding condition it is answered with (XEP-0124 §17.2: a request over
    /// the session rules' bounds is `policy-violation`).
    fn condition(&self) -> &'static str {
        match self {
            BodyRefused::TooLarge => "policy-violation",
            BodyRefused::Unreadable => "bad-request",
        }
    }
}

/// The request's body, at most `limit` bytes. A larger one is read to its end and dropped,
/// not kept: a client sends its whole body before it reads the answer, so cut off midway it
/// would see a broken connection instead of that answer (the listener's request timeout
/// bounds how long this takes).
async fn read_body(body: axum::body::Body, limit: usize) -> Result<Bytes, BodyRefused> {
    use futures_util::StreamExt;
    let mut data = body.into_data_stream();
    let mut kept = Vec::new();
    let mut too_large = false;
    while let Some(chunk) = data.next().await {
        let chunk = chunk.map_err(|_| BodyRefused::Unreadable)?;
        too_large = too_large || kept.len().saturating_add(chunk.len()) > limit;
        if too_large {
            kept = Vec::new();
        } else {
            kept.extend_from_slice(&chunk);
        }
    }
    if too_large {
        return Err(BodyRefused::TooLarge);
    }
    Ok(Bytes::from(kept))
}

/// `POST /http-bind`.
pub async fn request(
    State(ctx): State<Arc<WebContext>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let Some(cors) = origin::cors_origin(&headers, &ctx.config.allowed_origins) else {
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    };
    let limit = max_body_bytes(ctx.c2s.config.max_stanza_bytes);
    let body = match read_body(body, limit).await {
        Ok(body) => body,
        Err(refused) => {
            // Which session it names is unknown without reading it: none is ended.
            tracing::info!(condition = refused.condition(), "BOSH request refused");
            return respond(terminate(refused.condition()), cors);
        }
    };
    let Some(parsed) = parse(&body, limit) else {
        return respond(terminate("bad-request"), cors);
    };
    if let Some((peers, node)) = held_elsewhere(&ctx, &parsed) {
        // Only the bytes go on: the tree is not kept while the holder holds the request.
        drop(parsed);
        return relay(peers, &node, body, cors).await;
    }
    let body = parsed;
    let Some(rid) = rid_of(&body) else {
        return respond(without_rid(&ctx, &body), cors);
    };
    let session = match body.attr("sid") {
        None => create(&ctx, peer, &headers, &body, rid),
        Some(sid) => ctx.bosh.get(sid).ok_or_else(|| terminate("item-not-found")),
    };
    let session = match session {
        Ok(session) => session,
        Err(refused) => return respond(refused, cors),
    };
    // A request may be held for up to `wait` seconds: its answer leaves hyper once the head
    // is out, so a held request costs no HTTP connection buffers, and the connection serves
    // the client's next request afterwards (waiting for it outside hyper,
    // `rookery_http::listener`). The creation's answer too, so no connection of a session
    // stays in hyper after its last request.
    let mut head = HeaderMap::new();
    head.insert(header::CONTENT_TYPE, session.content.clone());
    origin::add_cors(&mut head, cors);
    // Its head waits for it too, to state its length: XEP-0124 §5, no chunked coding.
    rookery_http::handoff::held(head, move |mut out| async move {
        // The client may leave: the request is then dropped unanswered (the session records
        // it), once its payload is passed on.
        if let Some(answer) = session.request(body, rid, out.closed()).await {
            let _ = out.send(&answer).await;
        }
    })
}

/// The request's `<body/>`, read within the body limit, or `None` when it is not one.
fn parse(body: &[u8], limit: usize) -> Option<Element> {
    rookery_xml::first_element(
        body,
        Limits {
            max_stanza_bytes: limit,
            max_elements: Limits::C2S.max_elements.saturating_mul(BODY_STANZAS),
            ..Limits::C2S
        },
    )
    .filter(|el| el.is("body", NS_HTTPBIND))
}

fn rid_of(body: &Element) -> Option<u64> {
    body.attr("rid").and_then(|r| r.parse::<u64>().ok())
}

/// The answer to a request without a valid `rid`: a terminal condition ends the session it
/// names (XEP-0124 §17.2), or the client would drop a session that lives on, bound, for
/// `inactivity`.
fn without_rid(ctx: &WebContext, body: &Element) -> Bytes {
    match body.attr("sid").and_then(|sid| ctx.bosh.get(sid)) {
        Some(session) => session.end("bad-request"),
        None => terminate("bad-request"),
    }
}

/// The other nodes of a cluster, where the BOSH sessions this node does not hold live
/// (docs/clustering.md, "BOSH on any node"). A node alone has none, and its requests take
/// the local path only.
#[async_trait::async_trait]
pub trait Peers: Send + Sync {
    /// This node's id, which the sids it makes carry ([`sid_node`]).
    fn node(&self) -> &str;

    /// Whether `node` is another node of the cluster, alive.
    fn is_alive(&self, node: &str) -> bool;

    /// Passes the request `body` to `node`, which holds its session, and returns its answer
    /// (its `Content-Type` and body), waiting at most `timeout`.
    async fn pass(&self, node: &str, body: Bytes, timeout: Duration) -> Result<Relayed, Unreached>;
}

/// A response from the node holding the session.
pub struct Relayed {
    /// The session's `Content-Type` (§7.1 `content`).
    pub content: HeaderValue,
    /// The `<body/>`.
    pub body: Bytes,
}

/// Why a request passed to another node came back without its answer.
#[derive(Debug, thiserror::Error)]
pub enum Unreached {
    /// Over what the bus carries: refused as an oversized body is (§17.2).
    #[error("request over the cluster bus's payload limit")]
    TooLarge,
    /// The bus is down, or the holder dead or silent: the session is lost to this client.
    #[error("{0}")]
    Failed(String),
}

impl Unreached {
    /// The terminal binding condition it is answered with: `remote-connection-failed` when
    /// the node holding the session (the client's XMPP server, as XEP-0124 sees it) cannot
    /// be reached — a client ends the session on it, instead of waiting.
    fn condition(&self) -> &'static str {
        match self {
            Unreached::TooLarge => "policy-violation",
            Unreached::Failed(_) => "remote-connection-failed",
        }
    }
}

/// How long a request passed to another node may take there ([`serve_relayed`]): the
/// longest `wait` and some (a request may wait for the rid before it, then be held).
const RELAYED_HOLD: Duration = Duration::from_secs(MAX_WAIT + 5);

/// How long the node that took a request waits for the holder's answer: a bit longer than
/// the holder may take, so that a live holder always answers first.
const RELAY_TIMEOUT: Duration = Duration::from_secs(MAX_WAIT + 10);

/// The node whose id a sid made in a cluster carries (`<random>.<node>`; a node id has no
/// `.`), if any.
fn sid_node(sid: &str) -> Option<&str> {
    sid.split_once('.').map(|(_, node)| node)
}

/// A new sid: 128 random bits, and in a cluster this node's id, so that any node finds the
/// holder of a session from its sid alone.
fn new_sid(peers: Option<&dyn Peers>) -> String {
    let random = rookery_stream::new_stream_id();
    match peers {
        Some(p) => format!("{random}.{}", p.node()),
        None => random,
    }
}

/// The node to pass `body` to: its sid names another node alive (the sids this node makes
/// name this node; a sid naming no node alive is unknown here as anywhere:
/// `item-not-found`).
fn held_elsewhere<'a>(ctx: &'a WebContext, body: &Element) -> Option<(&'a dyn Peers, String)> {
    let peers = ctx.peers.as_deref()?;
    let node = sid_node(body.attr("sid")?)?;
    (node != peers.node() && peers.is_alive(node)).then(|| (peers, node.to_string()))
}

/// Answers a request with the answer of the node holding its session; a holder that cannot
/// be reached ends the session for the client (a log line says why).
async fn relay(peers: &dyn Peers, node: &str, body: Bytes, cors: Option<HeaderValue>) -> Response {
    match peers.pass(node, body, RELAY_TIMEOUT).await {
        Ok(r) => respond_as(r.body, r.content, cors),
        Err(e) => {
            tracing::warn!(%node, error = %e, "BOSH request not served by the node holding its session");
            respond(terminate(e.condition()), cors)
        }
    }
}

/// Serves a request another node of the cluster took for a session of this one, as this
/// node's listener would have (but a session's creation, which is never passed on): the
/// response's `Content-Type` and body.
pub async fn serve_relayed(ctx: Arc<WebContext>, body: Bytes) -> Relayed {
    let limit = max_body_bytes(ctx.c2s.config.max_stanza_bytes);
    let answer = |body| Relayed {
        content: xml_content_type(),
        body,
    };
    let Some(body) = parse(&body, limit) else {
        return answer(terminate("bad-request"));
    };
    let Some(rid) = rid_of(&body) else {
        return answer(without_rid(&ctx, &body));
    };
    let Some(session) = body.attr("sid").and_then(|sid| ctx.bosh.get(sid)) else {
        return answer(terminate("item-not-found"));
    };
    let held = session.request(body, rid, tokio::time::sleep(RELAYED_HOLD));
    let body = match held.await {
        Some(body) => body,
        // Given up as a client that left is: what it recorded, or a recoverable error (the
        // request never entered the window) — the client resends the rid either way.
        None => session.recorded(rid).unwrap_or_else(recoverable),
    };
    Relayed {
        content: session.content.clone(),
        body,
    }
}

/// `OPTIONS /http-bind`: the CORS preflight.
pub async fn preflight(State(ctx): State<Arc<WebContext>>, headers: HeaderMap) -> Response {
    let Some(cors) = origin::cors_origin(&headers, &ctx.config.allowed_origins) else {
        return StatusCode::FORBIDDEN.into_response();
    };
    let mut r = rookery_http::cors::preflight("POST, OPTIONS");
    origin::add_cors(r.headers_mut(), cors);
    r
}

/// `GET /http-bind`: a hint for people who open it in a browser.
pub async fn info() -> &'static str {
    "XMPP over BOSH (XEP-0124, XEP-0206): POST <body/> elements here.\n"
}

/// How many of the first `elements` one response carries: as many as fit in `max` bytes,
/// and at least one.
fn fitting(elements: &[Bytes], max: usize) -> usize {
    let mut total = 0;
    let n = elements
        .iter()
        .take_while(|e| {
            total += e.len();
            total <= max
        })
        .count();
    n.max(1).min(elements.len())
}

fn respond(body: Bytes, cors: Option<HeaderValue>) -> Response {
    respond_as(body, xml_content_type(), cors)
}

fn respond_as(body: Bytes, content: HeaderValue, cors: Option<HeaderValue>) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, content);
    origin::add_cors(h, cors);
    r
}

fn xml_content_type() -> HeaderValue {
    HeaderValue::from_static("text/xml; charset=utf-8")
}

/// A session creation request (XEP-0124 §7.1, XEP-0206 §3): the new session, its stream
/// started (the request is then handled as any of the session's), or the refusal.
fn create(
    ctx: &Arc<WebContext>,
    peer: Peer,
    headers: &HeaderMap,
    body: &Element,
    rid: u64,
) -> Result<Arc<Session>, Bytes> {
    // Any hosted domain (virtual hosting); the c2s machine takes it from the `<open/>`.
    // §17.2: no `to` at all is `improper-addressing`, one we do not serve `host-unknown`.
    let Some(to) = body.attr("to") else {
        return Err(terminate("improper-addressing"));
    };
    let Some(domain) = Some(to).filter(|to| ctx.c2s.core.is_local_domain(to)) else {
        return Err(terminate("host-unknown"));
    };
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let client = origin::client_addr(
        peer.addr,
        text("x-forwarded-for"),
        text("forwarded"),
        &ctx.config.trusted_proxies,
    );
    if !ctx
        .bosh
        .admit(client.ip(), ctx.config.bosh_max_sessions_per_ip)
    {
        tracing::info!(%client, "BOSH session refused: too many from this address");
        return Err(terminate("policy-violation"));
    }
    let Some(permit) = ctx.c2s.connections.try_acquire(client.ip()) else {
        ctx.bosh.release(client.ip());
        tracing::warn!(%client, "BOSH session refused: client connection cap reached");
        return Err(terminate("policy-violation"));
    };
    let sid = new_sid(ctx.peers.as_deref());
    // The stream starts with the header XEP-0206 §3 implies.
    let open = Element::new("open", NS_FRAMING)
        .with_attr("to", domain)
        .with_attr("version", "1.0");
    let inactivity = Duration::from_secs(ctx.config.bosh_inactivity_secs);
    let session = Arc::new(Session::new(
        sid.clone(),
        Terms::of(body, inactivity),
        rid,
        Bytes::from(open.to_bytes()),
    ));
    let secure = peer.tls || peer.addr.ip().is_loopback() || ctx.config.behind_tls_proxy;
    let messages = Messages {
        transport: Box::new(Link::new(session.clone())),
        tls: peer.tls,
        secure,
        // No SCRAM -PLUS over BOSH: a session spans many HTTP requests, on whatever
        // connections the client opens (two at once, new ones after a drop, any of them
        // possibly through another proxy), so no one TLS connection's exporter belongs to
        // the session. Binding to the connection of the session's first request would let a
        // later request on another connection continue it unbound — not a binding at all.
        channel_binding: Default::default(),
        kind: rookery_core::Transport::Bosh,
    };
    let conn = Conn::framed(messages, client, Limits::PRE_AUTH, domain, ns::CLIENT);
    lock(&ctx.bosh.by_sid).insert(sid.clone(), session.clone());
    let span = tracing::info_span!("bosh", peer = %client, jid = tracing::field::Empty);
    // Boxed: a future the task's block captured and then awaited would be in the task twice
    // (in its captured place and as the future awaited), for the session's life.
    let stream = Box::pin(rookery_c2s::negotiate::serve_framed(
        ctx.c2s.clone(),
        conn,
        ctx.stopped.clone(),
    ));
    let (ctx2, session2, stopped) = (ctx.clone(), session.clone(), ctx.stopped.clone());
    // One after the other, not joined: the task's future is as large as the larger of the
    // two, and the second is small.
    tokio::spawn(
        async move {
            stream.await;
            session2.until_answered(stopped).await;
            ctx2.bosh.remove(&sid, client.ip());
            drop(permit);
        }
        .instrument(span),
    );
    Ok(session)
}

/// What a session's creation request settled (XEP-0124 §7.1).
struct Terms {
    /// The longest a request is held.
    wait: Duration,
    /// How many requests are held at once.
    hold: usize,
    /// How long the session lives without a held request: ours, `[http]
    /// bosh_inactivity_secs`.
    inactivity: Duration,
    /// `ack='1'`: the client wants acknowledgements (§9.1).
    ack: bool,
    /// The responses' `Content-Type`.
    content: HeaderValue,
    /// The version spoken.
    ver: String,
    /// Our domain: the one the client asked for (`to`, checked as served before).
    from: String,
}

impl Terms {
    /// The terms a creation request asks for, within ours; `inactivity` is ours alone.
    fn of(body: &Element, inactivity: Duration) -> Terms {
        let number = |name: &str| body.attr(name).and_then(|v| v.parse::<u64>().ok());
        Terms {
            // 0 too: the client wants every request answered at once (§7.1: ours is at most
            // the client's).
            wait: Duration::from_secs(number("wait").unwrap_or(MAX_WAIT).min(MAX_WAIT)),
            hold: usize::try_from(number("hold").unwrap_or(1))
                .unwrap_or(MAX_HOLD)
                .min(MAX_HOLD),
            inactivity,
            ack: body.attr("ack") == Some("1"),
            content: body
                .attr("content")
                .and_then(|c| HeaderValue::from_str(c).ok())
                .unwrap_or_else(xml_content_type),
            ver: spoken_version(body.attr("ver")),
            from: body.attr("to").unwrap_or_default().to_string(),
        }
    }
}

/// The version a session speaks (§7.1: "the highest version … that is lower than or equal
/// to" the client's): the client's when it is lower than ours, else ours.
fn spoken_version(client: Option<&str>) -> String {
    let parse = |v: &str| {
        let (major, minor) = v.split_once('.')?;
        Some((major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?))
    };
    match client.and_then(|c| parse(c).map(|v| (c, v))) {
        Some((c, v)) if v < VERSION => c.to_string(),
        _ => format!("{}.{}", VERSION.0, VERSION.1),
    }
}

impl Session {
    /// A session whose creation request is `rid`, and whose stream starts with `open`.
    fn new(sid: String, terms: Terms, rid: u64, open: Bytes) -> Self {
        let Terms {
            wait,
            hold,
            inactivity,
            ack,
            content,
            ver,
            from,
        } = terms;
        Session {
            sid,
            wait,
            hold,
            inactivity,
            content,
            ver,
            from,
            state: Mutex::new(Window {
                incoming: VecDeque::from([open]),
                stream: None,
                expired: false,
                next_rid: rid,
                held: VecDeque::new(),
                holders: Vec::new(),
                copies: 0,
                passing: VecDeque::new(),
                out: Vec::new(),
                stream_id: None,
                authid_sent: false,
                closed: false,
                answered: VecDeque::new(),
                idle_since: Instant::now(),
                creating: true,
                ack,
                last_new: Instant::now(),
                last_new_empty: false,
            }),
            changed: Notify::new(),
        }
    }

    /// Handles one request of the session: its place in the window, its payload, then the
    /// response (at once, or when there is something to send, or after `wait`).
    /// `body` is dropped once its payload is passed on: a held request keeps none of it.
    /// `None` when `left` (the client's HTTP connection closed) resolves before there is a
    /// response — but never while the payload is passed on: a request the session took is
    /// delivered whole, since its resend (§14.3) will not carry it again.
    async fn request(
        &self,
        body: Element,
        rid: u64,
        left: impl std::future::Future<Output = ()>,
    ) -> Option<Bytes> {
        tokio::pin!(left);
        // Resent, or out of the window? (`turn`: none for a copy of a request still held,
        // whose payload went to the stream with the first copy.)
        let (turn, copy) = loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut w = lock(&self.state);
                if let Some(r) = w.answer_to(rid) {
                    return Some(r.clone());
                }
                if w.expired || (w.closed && w.out.is_empty()) {
                    // Ended, and nothing left to tell: the sid is no longer valid (§17.2),
                    // even in the moment before the session leaves the map.
                    return Some(terminate("item-not-found"));
                }
                if rid < w.next_rid && !w.held.contains(&rid) {
                    return Some(self.terminate_now(&mut w, "item-not-found"));
                }
                let window = u64::try_from(self.hold + 1).unwrap_or(2);
                if rid >= w.next_rid.saturating_add(window) {
                    return Some(self.terminate_now(&mut w, "item-not-found"));
                }
                if rid < w.next_rid {
                    // Below the next rid and held (checked above): the client gave up waiting
                    // and sent it again (§14.3). This copy holds it from now on; the one
                    // before answers at once (`Window::holders`).
                    w.copies += 1;
                    let copy = w.copies;
                    w.holders.retain(|(r, _)| *r != rid);
                    w.holders.push((rid, copy));
                    break (None, copy);
                }
                if rid == w.next_rid {
                    if self.overactive(&mut w, &body, rid) {
                        return Some(self.terminate_now(&mut w, "policy-violation"));
                    }
                    w.next_rid = rid + 1;
                    w.held.push_back(rid);
                    if w.held.len() == 1 {
                        // The stream drops its inactivity timer.
                        w.wake_stream();
                    }
                    self.release_beyond_hold(&mut w);
                    w.passing.push_back(rid);
                    break (Some(Turn { session: self, rid }), 0);
                }
            }
            // A later rid than expected: wait for the ones before it (§14.2), a second at
            // least — with `wait` = 0 too: requests sent at once on two connections arrive in
            // either order, and an earlier rid a moment late is no reason to end the session.
            tokio::select! {
                r = tokio::time::timeout(self.wait.max(OUT_OF_ORDER_WAIT), changed) => {
                    if r.is_err() {
                        let mut w = lock(&self.state);
                        return Some(self.terminate_now(&mut w, "item-not-found"));
                    }
                }
                // Nothing of it was taken yet.
                () = &mut left => return None,
            }
        };
        self.changed.notify_waiters();
        let resent = turn.is_none();
        let guard = Held {
            session: self,
            rid,
            copy,
        };
        // An xs:boolean (XEP-0206 §5): "true" or "1".
        let restart = !resent && matches!(body.attr(XMPP_RESTART), Some("true" | "1"));
        if restart && body.children().next().is_some() {
            // XEP-0206 §5: the restart body SHOULD be empty, and stanzas in it SHOULD be
            // ignored — passed before the new header they would end the stream, which
            // expects that header after SASL.
            tracing::debug!("stanzas in a restart request ignored");
        }
        // The payload, in order; a full window waits here (backpressure to the client). A
        // resent copy's is not passed on again: its stanzas would arrive twice.
        let mut payload: Vec<Bytes> = body
            .children()
            .filter(|_| !resent && !restart)
            .map(|c| Bytes::from(rookery_proto::stream::to_bytes(c)))
            .collect();
        if restart {
            let mut open = Element::new("open", NS_FRAMING).with_attr("version", "1.0");
            if let Some(to) = body.attr("to") {
                open.set_attr("to", to);
            }
            payload.push(Bytes::from(open.to_bytes()));
        }
        let terminating = !resent && body.attr("type") == Some("terminate");
        if terminating {
            payload.push(Bytes::from(Element::new("close", NS_FRAMING).to_bytes()));
        }
        drop(body);
        for message in payload {
            if !self.pass_on(rid, message).await {
                break;
            }
        }
        // The next rid's turn.
        drop(turn);
        if terminating {
            let mut w = lock(&self.state);
            w.closed = true;
            let r = Bytes::from_static(
                b"<body xmlns='http://jabber.org/protocol/httpbind' type='terminate'/>",
            );
            guard.answer(&mut w, r.clone());
            return Some(r);
        }
        let deadline = Instant::now() + self.wait;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut w = lock(&self.state);
                if let Some(r) = w.answer_to(rid) {
                    // Answered to an earlier copy of this request.
                    return Some(r.clone());
                }
                if w.holder(rid) != copy {
                    // §14.3: resent meanwhile; the answer goes to the latest copy, this one
                    // gets a recoverable binding condition at once.
                    return Some(recoverable());
                }
                if !w.held.contains(&rid) {
                    // Taken over by the same rid resent on another connection.
                    return Some(self.empty(&w, rid));
                }
                let first = w.held.front() == Some(&rid);
                if first && (!w.out.is_empty() || w.closed) {
                    let r = self.response(&mut w, rid);
                    guard.answer(&mut w, r.clone());
                    return Some(r);
                }
            }
            let timed_out = tokio::select! {
                r = tokio::time::timeout_at(deadline, changed) => r.is_err(),
                // Unanswered: `guard` records that (see `Held`'s drop).
                () = &mut left => return None,
            };
            if timed_out {
                let mut w = lock(&self.state);
                let r = if w.creating {
                    // Nothing from the stream in time: still answer the creation.
                    self.response(&mut w, rid)
                } else {
                    self.empty(&w, rid)
                };
                guard.answer(&mut w, r.clone());
                return Some(r);
            }
        }
    }

    /// Hands `message`, of request `rid`'s payload, to the stream once it is that request's
    /// turn (the first in [`Window::passing`]) and there is room for it; `false` if the
    /// session is over for the stream (the message is dropped, as the rest of the payload
    /// must be).
    async fn pass_on(&self, rid: u64, message: Bytes) -> bool {
        loop {
            let room = self.changed.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut w = lock(&self.state);
                if w.over() {
                    return false;
                }
                if w.passing.front() == Some(&rid) && w.incoming.len() < INCOMING_DEPTH {
                    w.incoming.push_back(message);
                    w.wake_stream();
                    return true;
                }
            }
            room.await;
        }
    }

    /// Whether `body`, new request `rid`, is one too many: empty, less than [`POLLING`]
    /// after the previous new request, and
    /// - in a polling session (`hold` or `wait` 0, XEP-0124 §12), the previous new request
    ///   was empty too and so was its answer — a client sending something, or one that just
    ///   got something, may ask again at once;
    /// - otherwise (§11 overactivity), every request the session may have open is open.
    fn overactive(&self, w: &mut Window, body: &Element, rid: u64) -> bool {
        let now = Instant::now();
        let soon = now.duration_since(w.last_new) < POLLING;
        w.last_new = now;
        let empty = body.children().next().is_none()
            && ["type", "pause", XMPP_RESTART]
                .iter()
                .all(|a| body.attr(a).is_none());
        let previous_empty = std::mem::replace(&mut w.last_new_empty, empty);
        let too_many = if self.hold == 0 || self.wait.is_zero() {
            // Its answer is among the last ones kept (§14.3) unless it is still held.
            let answered_empty = w
                .answered
                .iter()
                .any(|(r, a)| r.checked_add(1) == Some(rid) && !a.ends_with(b"</body>"));
            previous_empty && answered_empty
        } else {
            w.held.len() >= self.hold
        };
        empty && soon && too_many
    }

    /// Answers the oldest held requests while more than `hold` are held (XEP-0124 §11), with
    /// what is gathered (usually nothing). Called as a new request joins, before its payload
    /// reaches the stream: what the payload causes (the stream features after a restart) then
    /// goes out with the new request, not with an older one that happened to wake first.
    fn release_beyond_hold(&self, w: &mut Window) {
        while w.held.len() > self.hold {
            let Some(oldest) = w.held.pop_front() else {
                return;
            };
            let r = if w.out.is_empty() && !w.closed && !w.creating {
                self.empty(w, oldest)
            } else {
                self.response(w, oldest)
            };
            self.record(w, oldest, r);
        }
    }

    /// Keeps `response` as the answer to `rid` (its held request returns it; a resend gets
    /// it again) — the last `hold + 1` answers are kept.
    fn record(&self, w: &mut Window, rid: u64, response: Bytes) {
        w.answered.push_back((rid, response));
        while w.answered.len() > self.hold + 1 {
            w.answered.pop_front();
        }
    }

    /// The start of a response to `rid`: `<body` with `ack` (§9.1) when the client asked for
    /// acknowledgements — the highest rid received with all before it, on the creation
    /// response and wherever it is not `rid` (which the response acknowledges by itself):
    /// a held request answered after a later one arrived tells the client the later one
    /// is in.
    fn start(&self, w: &Window, rid: u64) -> Vec<u8> {
        let mut out = b"<body xmlns='http://jabber.org/protocol/httpbind'".to_vec();
        let highest = w.next_rid.saturating_sub(1);
        if w.ack && (w.creating || highest != rid) {
            attr(&mut out, "ack", &highest.to_string());
        }
        out
    }

    /// An empty response to `rid`.
    fn empty(&self, w: &Window, rid: u64) -> Bytes {
        let mut out = self.start(w, rid);
        out.extend_from_slice(b"/>");
        Bytes::from(out)
    }

    /// The response to `rid` with everything gathered (the session attributes on the first
    /// one).
    fn response(&self, w: &mut Window, rid: u64) -> Bytes {
        let mut out = self.start(w, rid);
        out.reserve(256 + w.out.iter().map(Bytes::len).sum::<usize>());
        if w.creating {
            w.creating = false;
            let attrs = [
                ("sid", self.sid.clone()),
                ("wait", self.wait.as_secs().to_string()),
                ("hold", self.hold.to_string()),
                ("requests", (self.hold + 1).to_string()),
                ("inactivity", self.inactivity.as_secs().to_string()),
                ("polling", POLLING.as_secs().to_string()),
                ("ver", self.ver.clone()),
                ("secure", "true".to_string()),
                // XEP-0124 §7.1 (SHOULD): the domain the client asked for, which we serve.
                ("from", self.from.clone()),
                ("xmpp:version", "1.0".to_string()),
                // XEP-0206 §5 (MUST when supported): `xmpp:restart` is understood.
                ("xmpp:restartlogic", "true".to_string()),
            ];
            for (k, v) in attrs {
                attr(&mut out, k, &v);
            }
            attr(&mut out, "xmlns:xmpp", NS_XBOSH);
        }
        // XEP-0206 §4: "as soon as it is available".
        if let (false, Some(id)) = (w.authid_sent, &w.stream_id) {
            attr(&mut out, "authid", id);
            w.authid_sent = true;
        }
        let elements: Vec<Bytes> = w.out.drain(..fitting(&w.out, RESPONSE_BYTES)).collect();
        // A stream waiting for room in the window has it now.
        w.wake_stream();
        // The end goes with the last of what the stream left.
        if w.closed && w.out.is_empty() {
            attr(&mut out, "type", "terminate");
            if elements.iter().any(|e| e.starts_with(b"<stream:error")) {
                attr(&mut out, "condition", "remote-stream-error");
            }
        }
        attr(&mut out, "xmlns:stream", ns::STREAM);
        out.push(b'>');
        for e in &elements {
            out.extend_from_slice(e);
        }
        out.extend_from_slice(b"</body>");
        Bytes::from(out)
    }

    /// The answer recorded for `rid`, if it is among the last ones kept.
    fn recorded(&self, rid: u64) -> Option<Bytes> {
        lock(&self.state).answer_to(rid).cloned()
    }

    /// [`Session::terminate_now`] for a request that never entered the window.
    fn end(&self, condition: &str) -> Bytes {
        self.terminate_now(&mut lock(&self.state), condition)
    }

    /// Ends the session for a protocol error (XEP-0124 §17.2: a terminal condition ends the
    /// session): its stream sees the transport gone, and takes back what the window still
    /// holds to route it again ([`MessageTransport::take_unsent`]).
    fn terminate_now(&self, w: &mut Window, condition: &str) -> Bytes {
        tracing::info!(condition, "BOSH session terminated");
        w.closed = true;
        w.expired = true;
        w.held.clear();
        w.wake_stream();
        self.changed.notify_waiters();
        terminate(condition)
    }

    /// Once the stream ended: keeps the session (its `sid` valid) until what the stream
    /// left is answered — the requests held, or the next one within `inactivity`, or
    /// within [`SHUTDOWN_GRACE`] once `stopped` reports the server shutting down: its HTTP
    /// listener drains, so a client not asking by then never will, and the shutdown waits
    /// for this task (its c2s context).
    async fn until_answered(&self, mut stopped: tokio::sync::watch::Receiver<()>) {
        let mut shutdown: Option<Instant> = None;
        loop {
            // Registered before looking, so a change between the look and the wait counts.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let idle_deadline = {
                let w = lock(&self.state);
                if w.over() {
                    return;
                }
                w.held.is_empty().then(|| {
                    let idle = w.idle_since + self.inactivity;
                    shutdown.map_or(idle, |s| idle.min(s))
                })
            };
            tokio::select! {
                () = sleep_until(idle_deadline) => {
                    lock(&self.state).expired = true;
                    return;
                }
                // Re-evaluate the deadline when a request comes or goes.
                () = changed => {}
                // The sender is dropped at shutdown (it never sends).
                _ = stopped.changed(), if shutdown.is_none() => {
                    shutdown = Some(Instant::now() + SHUTDOWN_GRACE);
                }
            }
        }
    }
}

/// The stream's end of its session: its messages are taken from the window, its frames
/// gathered into it for the held requests, within the stream's own polls.
struct Link {
    session: Arc<Session>,
    /// The inactivity timer, while no request is held (an idle session holds one, so it
    /// costs nothing then).
    inactivity: Option<Pin<Box<Sleep>>>,
}

impl Link {
    fn new(session: Arc<Session>) -> Self {
        Link {
            session,
            inactivity: None,
        }
    }
}

/// The session is over: nothing can be sent.
fn gone() -> io::Error {
    io::ErrorKind::BrokenPipe.into()
}

impl MessageTransport for Link {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let mut w = lock(&self.session.state);
        if let Some(message) = w.incoming.pop_front() {
            if w.incoming.len() + 1 == INCOMING_DEPTH {
                // Room for a request waiting to pass its payload on.
                self.session.changed.notify_waiters();
            }
            return Poll::Ready(Some(message));
        }
        if w.over() {
            return Poll::Ready(None);
        }
        if w.held.is_empty() {
            // Looked at again whenever a request joins or leaves (the stream is woken).
            let deadline = w.idle_since + self.session.inactivity;
            let timer = self
                .inactivity
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            if timer.as_mut().poll(cx).is_ready() {
                tracing::info!("BOSH session inactive: ending it");
                w.expired = true;
                w.closed = true;
                drop(w);
                self.session.changed.notify_waiters();
                return Poll::Ready(None);
            }
        } else {
            self.inactivity = None;
        }
        w.park_stream(cx);
        Poll::Pending
    }

    fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        frames: &mut VecDeque<Frame>,
    ) -> Poll<io::Result<()>> {
        let mut w = lock(&self.session.state);
        if w.over() {
            return Poll::Ready(Err(gone()));
        }
        if w.out.len() >= OUTGOING_DEPTH
            || w.out.iter().map(Bytes::len).sum::<usize>() >= OUTGOING_BYTES
        {
            // Woken when a response takes them (`Session::response`).
            w.park_stream(cx);
            return Poll::Pending;
        }
        // The window takes these frames whole: a response carries what gathered.
        for frame in frames.drain(..) {
            match frame {
                Frame::Open(h) => w.stream_id = Some(h.id),
                Frame::Element(e) => w.out.push(e),
                Frame::Close => w.closed = true,
            }
        }
        drop(w);
        self.session.changed.notify_waiters();
        Poll::Ready(Ok(()))
    }

    fn poll_close(&mut self, _cx: &mut Context<'_>) -> Poll<()> {
        lock(&self.session.state).closed = true;
        self.session.changed.notify_waiters();
        Poll::Ready(())
    }

    /// What no request carried yet: once the session ends, the client that stopped asking
    /// (or was cut off) will not get it, so the stream routes it again (XEP-0206 §7).
    fn take_unsent(&mut self) -> Vec<Bytes> {
        let mut w = lock(&self.session.state);
        let unsent = std::mem::take(&mut w.out);
        // A stream waiting for room in the window has it now.
        w.wake_stream();
        unsent
    }
}

impl Drop for Link {
    /// The stream ended: its held requests answer with what it left, and `terminate`.
    fn drop(&mut self) {
        let mut w = lock(&self.session.state);
        w.closed = true;
        w.stream = None;
        drop(w);
        self.session.changed.notify_waiters();
    }
}

/// A held request: leaves the window when answered or dropped (a lost HTTP connection),
/// so the session counts it as gone and inactivity starts.
struct Held<'a> {
    session: &'a Session,
    rid: u64,
    /// Which copy of the request (0 the first, [`Window::holders`]): one replaced by a
    /// later copy leaves the window to that one.
    copy: u64,
}

impl Held<'_> {
    /// Records `response` for `rid` (kept for a resend) and leaves the window.
    fn answer(&self, w: &mut Window, response: Bytes) {
        self.session.record(w, self.rid, response);
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut w = lock(&self.session.state);
        if w.holder(self.rid) != self.copy {
            return;
        }
        w.holders.retain(|(r, _)| *r != self.rid);
        // Dropped unanswered (its HTTP connection was lost): the client never got a response
        // and will send this rid again (XEP-0124 §14.3). Nothing was taken from the
        // session's output for it, so the resend gets an empty body and the output goes
        // out with the next request; without this, the resend fell below the window and
        // ended the session.
        if w.answer_to(self.rid).is_none() {
            let r = self.session.empty(&w, self.rid);
            self.answer(&mut w, r);
        }
        w.held.retain(|r| *r != self.rid);
        w.idle_since = Instant::now();
        if w.held.is_empty() {
            // Inactivity starts (or, closed, the session is over for the stream).
            w.wake_stream();
        }
        drop(w);
        self.session.changed.notify_waiters();
    }
}

/// An admitted request's place in [`Window::passing`]: leaves it when the payload is passed
/// on, or when the request is dropped mid-way (a lost HTTP connection) — so the turn never
/// sticks with a request that is gone, and the next rid passes only after this one stopped.
struct Turn<'a> {
    session: &'a Session,
    rid: u64,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        lock(&self.session.state).passing.retain(|r| *r != self.rid);
        self.session.changed.notify_waiters();
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn attr(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(b' ');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"='");
    escape_into(out, value, true);
    out.push(b'\'');
}

/// A recoverable binding error (XEP-0124 §17.3): the client sends the request again.
fn recoverable() -> Bytes {
    Bytes::from_static(b"<body xmlns='http://jabber.org/protocol/httpbind' type='error'/>")
}

/// A terminal binding error (XEP-0124 §17.2).
fn terminate(condition: &str) -> Bytes {
    let mut out = b"<body xmlns='http://jabber.org/protocol/httpbind' type='terminate'".to_vec();
    attr(&mut out, "condition", condition);
    out.extend_from_slice(b"/>");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::future::poll_fn;

    use super::*;

    /// The sessions' `inactivity`: not the default 60 s, so a test of it sees the
    /// session's own.
    const INACTIVITY: Duration = Duration::from_secs(7);

    fn session() -> (Arc<Session>, Link) {
        session_acking(false)
    }

    /// A session whose client asked for acknowledgements (`ack`) or not.
    fn session_acking(ack: bool) -> (Arc<Session>, Link) {
        let open = Bytes::from_static(b"<open/>");
        let terms = Terms {
            wait: Duration::from_secs(MAX_WAIT),
            hold: 1,
            inactivity: INACTIVITY,
            ack,
            content: xml_content_type(),
            ver: spoken_version(None),
            from: "localhost".into(),
        };
        let s = Arc::new(Session::new("s".into(), terms, 10, open));
        (s.clone(), Link::new(s))
    }

    /// A sid names its node after its random part in a cluster; alone, it is the random
    /// part only, as ever.
    #[test]
    fn a_sid_names_its_node_only_in_a_cluster() {
        assert_eq!(sid_node("0a1b2c.xmpp1:5222"), Some("xmpp1:5222"));
        let alone = new_sid(None);
        assert_eq!(sid_node(&alone), None);
        assert_eq!(alone.len(), 32);
    }

    #[test]
    fn the_version_spoken_is_the_lower_one() {
        assert_eq!(spoken_version(Some("1.6")), "1.6");
        assert_eq!(spoken_version(Some("1.11")), "1.11");
        assert_eq!(spoken_version(Some("2.0")), "1.11");
        assert_eq!(spoken_version(Some("1.x")), "1.11");
        assert_eq!(spoken_version(None), "1.11");
    }

    /// `wait` is at most the client's, 0 included (§7.1), and at most ours.
    #[test]
    fn the_wait_granted_is_at_most_the_one_asked() {
        let wait = |w: &str| {
            let xml = format!("<body xmlns='http://jabber.org/protocol/httpbind' wait='{w}'/>");
            Terms::of(&body(&xml), INACTIVITY).wait.as_secs()
        };
        assert_eq!(wait("0"), 0);
        assert_eq!(wait("10"), 10);
        assert_eq!(wait("3600"), MAX_WAIT);
    }

    async fn recv(link: &mut Link) -> Option<Bytes> {
        poll_fn(|cx| link.poll_recv(cx)).await
    }

    fn body(xml: &str) -> Element {
        rookery_xml::first_element(xml.as_bytes(), Limits::C2S).unwrap()
    }

    /// The stream reads the payload of a request from the window, and what it sends is the
    /// held request's answer, at once.
    #[tokio::test(start_paused = true)]
    async fn the_stream_reads_requests_and_answers_the_held_one() {
        let (s, mut link) = session();
        assert_eq!(recv(&mut link).await.unwrap(), "<open/>");
        let req =
            body("<body xmlns='http://jabber.org/protocol/httpbind' rid='10'><a/><b/></body>");
        let held = tokio::spawn({
            let s = s.clone();
            async move { s.request(req, 10, std::future::pending()).await.unwrap() }
        });
        assert!(recv(&mut link).await.unwrap().starts_with(b"<a "));
        assert!(recv(&mut link).await.unwrap().starts_with(b"<b "));
        let mut frames = VecDeque::from([Frame::Element(Bytes::from_static(b"<c/>"))]);
        let sent = poll_fn(|cx| link.poll_send(cx, &mut frames)).await;
        assert!(sent.is_ok() && frames.is_empty());
        let answer = held.await.unwrap();
        assert!(answer.starts_with(b"<body") && answer.ends_with(b"<c/></body>"));
    }

    /// The client's HTTP connection closes while its request's payload waits for room in
    /// the window: the payload still reaches the stream whole (its resend will not carry it
    /// again, §14.3), and only then is the request given up, unanswered.
    #[tokio::test(start_paused = true)]
    async fn a_payload_is_passed_on_whole_when_the_client_leaves_midway() {
        let (s, mut link) = session();
        assert_eq!(recv(&mut link).await.unwrap(), "<open/>");
        let req = body(&format!(
            "<body xmlns='http://jabber.org/protocol/httpbind' rid='10'>{}</body>",
            elements("a")
        ));
        let gone = tokio::spawn({
            let s = s.clone();
            async move { s.request(req, 10, std::future::ready(())).await }
        });
        let names = read_names(&mut link, INCOMING_DEPTH * 2).await;
        assert_eq!(names, numbered("a", 0..INCOMING_DEPTH * 2));
        assert!(gone.await.unwrap().is_none());
    }

    /// Spawns request `rid` of `s` carrying `children` (XML).
    fn spawn_request(s: &Arc<Session>, rid: u64, children: &str) -> tokio::task::JoinHandle<Bytes> {
        let req = body(&format!(
            "<body xmlns='http://jabber.org/protocol/httpbind' rid='{rid}'>{children}</body>"
        ));
        let s = s.clone();
        tokio::spawn(async move { s.request(req, rid, std::future::pending()).await.unwrap() })
    }

    /// `a0`, `a1`…: the names of a payload's elements.
    fn numbered(name: &str, range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("{name}{i}")).collect()
    }

    /// `<a0/>`…: more elements than the window takes at once.
    fn elements(name: &str) -> String {
        numbered(name, 0..INCOMING_DEPTH * 2)
            .iter()
            .map(|n| format!("<{n}/>"))
            .collect()
    }

    /// The names of the next `n` messages the stream reads.
    async fn read_names(link: &mut Link, n: usize) -> Vec<String> {
        let mut names = Vec::new();
        for _ in 0..n {
            let m = recv(link).await.unwrap();
            names.push(body(std::str::from_utf8(&m).unwrap()).name().to_string());
        }
        names
    }

    /// A request admitted while the one before it waits for room mid-payload passes its
    /// payload only after all of the earlier one's (§14.1).
    #[tokio::test(start_paused = true)]
    async fn payloads_pass_whole_in_rid_order() {
        let (s, mut link) = session();
        assert!(recv(&mut link).await.is_some());
        let first = spawn_request(&s, 10, &elements("a"));
        tokio::task::yield_now().await;
        let second = spawn_request(&s, 11, &elements("b"));
        tokio::task::yield_now().await;
        let got = read_names(&mut link, INCOMING_DEPTH * 4).await;
        let mut want = numbered("a", 0..INCOMING_DEPTH * 2);
        want.extend(numbered("b", 0..INCOMING_DEPTH * 2));
        assert_eq!(got, want);
        first.abort();
        second.abort();
    }

    /// A request dropped mid-payload (its HTTP connection lost) hands the turn on: the next
    /// one passes its payload, after what the dropped one had passed.
    #[tokio::test(start_paused = true)]
    async fn a_request_dropped_mid_payload_hands_the_turn_on() {
        let (s, mut link) = session();
        assert!(recv(&mut link).await.is_some());
        let first = spawn_request(&s, 10, &elements("a"));
        tokio::task::yield_now().await;
        let second = spawn_request(&s, 11, &elements("b"));
        tokio::task::yield_now().await;
        assert_eq!(lock(&s.state).incoming.len(), INCOMING_DEPTH);
        first.abort();
        let _ = first.await;
        let got = read_names(&mut link, INCOMING_DEPTH * 3).await;
        let mut want = numbered("a", 0..INCOMING_DEPTH);
        want.extend(numbered("b", 0..INCOMING_DEPTH * 2));
        assert_eq!(got, want);
        second.abort();
    }

    /// With `ack='1'` (§9.1): the creation response acknowledges its rid, a held request
    /// answered because a later one arrived acknowledges the later one, and a response
    /// whose own rid is the highest received says nothing.
    #[tokio::test(start_paused = true)]
    async fn responses_acknowledge_the_highest_rid_received() {
        let (s, mut link) = session_acking(true);
        assert!(recv(&mut link).await.is_some());
        let creation = spawn_request(&s, 10, "");
        send_element(&mut link).await;
        assert!(contains(&creation.await.unwrap(), "ack='10'"));
        let held = spawn_request(&s, 11, "");
        tokio::task::yield_now().await;
        let later = spawn_request(&s, 12, "<a/>");
        assert!(contains(&held.await.unwrap(), "ack='12'"));
        assert!(recv(&mut link).await.is_some());
        send_element(&mut link).await;
        assert!(!contains(&later.await.unwrap(), "ack="));
    }

    /// The stream sends an element.
    async fn send_element(link: &mut Link) {
        let mut frames = VecDeque::from([Frame::Element(Bytes::from_static(b"<c/>"))]);
        poll_fn(|cx| link.poll_send(cx, &mut frames)).await.unwrap();
    }

    fn contains(response: &[u8], text: &str) -> bool {
        std::str::from_utf8(response).unwrap().contains(text)
    }

    /// With no request held for `inactivity`, the stream's input ends and its output fails;
    /// while one is held, it does not.
    #[tokio::test(start_paused = true)]
    async fn inactivity_ends_the_stream_only_without_a_held_request() {
        let (s, mut link) = session();
        assert!(recv(&mut link).await.is_some());
        let req = body("<body xmlns='http://jabber.org/protocol/httpbind' rid='10'/>");
        let held = tokio::spawn({
            let s = s.clone();
            async move { s.request(req, 10, std::future::pending()).await.unwrap() }
        });
        // Held for `wait`, then answered (the creation response): idle from then on.
        let ended = tokio::time::timeout(
            Duration::from_secs(MAX_WAIT) + INACTIVITY * 2,
            recv(&mut link),
        )
        .await;
        assert!(ended.unwrap().is_none());
        assert!(held.is_finished());
        assert_eq!(
            Instant::now().duration_since(lock(&s.state).idle_since),
            INACTIVITY
        );
        let mut frames = VecDeque::from([Frame::Close]);
        assert!(poll_fn(|cx| link.poll_send(cx, &mut frames)).await.is_err());
    }

    /// A terminal condition ends the stream's input and leaves what the window held for
    /// the stream to take back and route again (XEP-0206 §7), instead of dropping it.
    #[tokio::test(start_paused = true)]
    async fn a_terminated_session_hands_its_output_back() {
        let (s, mut link) = session();
        assert!(recv(&mut link).await.is_some());
        send_element(&mut link).await;
        assert!(contains(&s.end("bad-request"), "condition='bad-request'"));
        assert!(recv(&mut link).await.is_none());
        assert_eq!(link.take_unsent(), vec![Bytes::from_static(b"<c/>")]);
        assert!(link.take_unsent().is_empty());
    }

    /// A client that stops asking: the window takes [`OUTGOING_DEPTH`] elements, then the
    /// stream's writes wait until a request carries them.
    #[tokio::test(start_paused = true)]
    async fn the_window_holds_a_bounded_output() {
        let (s, mut link) = session();
        assert!(recv(&mut link).await.is_some());
        let mut frames: VecDeque<Frame> = (0..OUTGOING_DEPTH + 1)
            .map(|_| Frame::Element(Bytes::from_static(b"<m/>")))
            .collect();
        // The window takes the frames it is given whole, then no more.
        let sent = poll_fn(|cx| link.poll_send(cx, &mut frames)).await;
        assert!(sent.is_ok() && frames.is_empty());
        frames.push_back(Frame::Element(Bytes::from_static(b"<n/>")));
        let mut blocked = tokio::spawn(async move {
            let r = poll_fn(|cx| link.poll_send(cx, &mut frames)).await;
            (r.is_ok(), frames.len())
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!blocked.is_finished());
        let req = body("<body xmlns='http://jabber.org/protocol/httpbind' rid='10'/>");
        let answer = s.request(req, 10, std::future::pending()).await.unwrap();
        assert!(answer.ends_with(b"<m/></body>"));
        let (ok, left) = (&mut blocked).await.unwrap();
        assert!(ok && left == 0);
    }

    /// More than one response carries waits for the next requests, the session's end with
    /// the last of it — every response within what the cluster bus carries.
    #[tokio::test(start_paused = true)]
    async fn a_response_carries_at_most_its_bound_and_the_rest_follows() {
        let (s, mut link) = session();
        assert!(recv(&mut link).await.is_some());
        let big = Bytes::from(format!("<m>{}</m>", "x".repeat(300 << 10)));
        let mut frames: VecDeque<Frame> = (0..4)
            .map(|_| Frame::Element(big.clone()))
            .chain([Frame::Close])
            .collect();
        poll_fn(|cx| link.poll_send(cx, &mut frames)).await.unwrap();
        let mut carried = 0;
        for rid in 10.. {
            let answer = spawn_request(&s, rid, "").await.unwrap();
            assert!(
                answer.len() <= RESPONSE_BYTES + 512,
                "{} bytes",
                answer.len()
            );
            carried += answer.windows(4).filter(|w| w == b"<m>x").count();
            if contains(answer.get(..200).unwrap_or(&answer), "type='terminate'") {
                break;
            }
        }
        assert_eq!(carried, 4);
    }

    #[test]
    fn a_response_takes_what_fits_and_at_least_one() {
        let e = |n| Bytes::from(vec![b'a'; n]);
        assert_eq!(fitting(&[e(10), e(10), e(10)], 25), 2);
        assert_eq!(fitting(&[e(30), e(10)], 25), 1);
        assert_eq!(fitting(&[e(10)], 25), 1);
        assert_eq!(fitting(&[], 25), 0);
    }
}
