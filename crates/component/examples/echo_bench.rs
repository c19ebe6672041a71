//! Component round-trip benchmark: an echo component written here in Rust connects to the
//! component port, N clients log in (STARTTLS, SCRAM-SHA-1, bind) and send chat messages to
//! `echo@<component>`; the component sends each body back to the sender's full JID. Every
//! body carries its send time, so the client measures the round-trip latency (client → server
//! → component → server → client) on one clock.
//!
//! Two load modes:
//! - `--rate R`: open loop, R messages/s offered in total, spread evenly over the clients
//!   (latency at a given load);
//! - `--window W` (with `--rate 0`): closed loop, each client keeps W messages in flight
//!   (sustained throughput).
//!
//! ```sh
//! rookery user add-bulk --prefix user --count 1000 --password benchpass   # with the config
//! cargo run --release -p rookery-component --example echo_bench -- \
//!     --port 45222 --component-port 45347 --clients 1000 --rate 0 --window 4 --duration 20
//! ```
//! Not a test: it prints figures (no assertion on speed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use rookery_sasl::{Mechanism, ScramClient};
use rookery_xml::{Element, Event, Limits, StreamParser};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const NS_STREAM: &str = "http://etherx.jabber.org/streams";
const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";

#[derive(Clone)]
struct Args {
    host: String,
    port: u16,
    component_port: u16,
    domain: String,
    component: String,
    secret: String,
    prefix: String,
    password: String,
    clients: usize,
    rate: f64,
    window: usize,
    warmup: f64,
    duration: f64,
    login_concurrency: usize,
    server_pid: Option<u32>,
}

fn args() -> Args {
    let mut a = Args {
        host: "127.0.0.1".into(),
        port: 5222,
        component_port: 5347,
        domain: "localhost".into(),
        component: "bot.localhost".into(),
        secret: "componentsecret".into(),
        prefix: "user".into(),
        password: "benchpass".into(),
        clients: 1000,
        rate: 0.0,
        window: 4,
        warmup: 5.0,
        duration: 20.0,
        login_concurrency: 32,
        server_pid: None,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut it = v.iter();
    while let Some(k) = it.next() {
        let val = it.next().cloned().unwrap_or_default();
        match k.as_str() {
            "--host" => a.host = val,
            "--port" => a.port = val.parse().unwrap(),
            "--component-port" => a.component_port = val.parse().unwrap(),
            "--domain" => a.domain = val,
            "--component" => a.component = val,
            "--secret" => a.secret = val,
            "--prefix" => a.prefix = val,
            "--password" => a.password = val,
            "--clients" => a.clients = val.parse().unwrap(),
            "--rate" => a.rate = val.parse().unwrap(),
            "--window" => a.window = val.parse().unwrap(),
            "--warmup" => a.warmup = val.parse().unwrap(),
            "--duration" => a.duration = val.parse().unwrap(),
            "--login-concurrency" => a.login_concurrency = val.parse().unwrap(),
            "--server-pid" => a.server_pid = Some(val.parse().unwrap()),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// Reads elements from a stream through a sans-IO parser.
struct Reader<R> {
    io: R,
    parser: StreamParser,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    fn new(io: R) -> Self {
        Reader {
            io,
            parser: StreamParser::new(Limits::S2S),
            buf: vec![0; 16 * 1024],
        }
    }

    /// A reader for a stream whose header an earlier reader already consumed (the login
    /// reader hands over a bound stream with nothing pending).
    fn continued(io: R) -> Self {
        let mut r = Reader::new(io);
        r.parser.feed(
            format!("<stream:stream xmlns='jabber:client' xmlns:stream='{NS_STREAM}'>").as_bytes(),
        );
        r
    }

    /// The next event without reading, if the parser has one buffered.
    fn buffered(&mut self) -> Option<Event> {
        self.parser.next_event().expect("parse error")
    }

    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(ev) = self.parser.next_event().expect("parse error") {
                return Some(ev);
            }
            let n = self.io.read(&mut self.buf).await.ok()?;
            if n == 0 {
                return None;
            }
            self.parser.feed(&self.buf[..n]);
        }
    }

    async fn element(&mut self) -> Element {
        loop {
            match self.next().await.expect("connection closed") {
                Event::Element(el) => return el,
                _ => continue,
            }
        }
    }
}

// ---- the echo component ---------------------------------------------------------------------

async fn echo_component(a: Args, echoed: Arc<AtomicU64>) {
    let tcp = TcpStream::connect((a.host.as_str(), a.component_port))
        .await
        .expect("component port");
    tcp.set_nodelay(true).unwrap();
    let (rd, wr) = tcp.into_split();
    let mut r = Reader::new(rd);
    let mut w = BufWriter::with_capacity(64 * 1024, wr);
    w.write_all(
        format!(
            "<stream:stream xmlns='jabber:component:accept' xmlns:stream='{NS_STREAM}' to='{}'>",
            a.component
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    w.flush().await.unwrap();
    let id = match r.next().await.expect("no header") {
        Event::StreamOpen(h) => h.attr("id").unwrap_or_default().to_string(),
        other => panic!("expected a header, got {other:?}"),
    };
    let digest = rookery_component::handshake::digest(&id, &a.secret);
    w.write_all(format!("<handshake>{digest}</handshake>").as_bytes())
        .await
        .unwrap();
    w.flush().await.unwrap();
    let ok = r.element().await;
    assert_eq!(ok.name(), "handshake", "handshake refused: {ok:?}");
    eprintln!("echo component connected as {}", a.component);
    loop {
        let Some(ev) = r.next().await else { break };
        let mut ev = Some(ev);
        // Answer everything already parsed, then flush once.
        while let Some(e) = ev.take() {
            if let Event::Element(el) = e {
                if el.name() == "iq" && matches!(el.attr("type"), Some("get" | "set")) {
                    let mut reply =
                        Element::new("iq", rookery_xml::CONTENT_NS).with_attr("type", "result");
                    for k in ["id"] {
                        if let Some(v) = el.attr(k) {
                            reply.set_attr(k, v);
                        }
                    }
                    if let Some(f) = el.attr("from") {
                        reply.set_attr("to", f);
                    }
                    if let Some(t) = el.attr("to") {
                        reply.set_attr("from", t);
                    }
                    w.write_all(&reply.to_bytes()).await.unwrap();
                } else if el.name() == "message" && el.attr("type") != Some("error") {
                    let mut reply =
                        Element::new("message", rookery_xml::CONTENT_NS).with_attr("type", "chat");
                    if let Some(f) = el.attr("from") {
                        reply.set_attr("to", f);
                    }
                    if let Some(t) = el.attr("to") {
                        reply.set_attr("from", t);
                    }
                    if let Some(b) = el.child_text("body", rookery_xml::CONTENT_NS) {
                        reply
                            .push_child(Element::new("body", rookery_xml::CONTENT_NS).with_text(b));
                    }
                    w.write_all(&reply.to_bytes()).await.unwrap();
                    echoed.fetch_add(1, Ordering::Relaxed);
                }
            }
            ev = r.buffered();
        }
        w.flush().await.unwrap();
    }
    eprintln!("echo component disconnected");
}

// ---- clients -------------------------------------------------------------------------------

#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_connector() -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn send<W: AsyncWrite + Unpin>(w: &mut W, s: &str) {
    w.write_all(s.as_bytes()).await.unwrap();
    w.flush().await.unwrap();
}

fn header(domain: &str) -> String {
    format!(
        "<stream:stream xmlns='jabber:client' xmlns:stream='{NS_STREAM}' to='{domain}' version='1.0'>"
    )
}

/// Logs in; returns the TLS stream and the bound full JID.
async fn login(a: &Args, i: usize, tls: &tokio_rustls::TlsConnector) -> (Tls, String) {
    let tcp = TcpStream::connect((a.host.as_str(), a.port)).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut r = Reader::new(tcp);
    send(&mut r.io, &header(&a.domain)).await;
    let _features = r.element().await;
    send(&mut r.io, &format!("<starttls xmlns='{NS_TLS}'/>")).await;
    let p = r.element().await;
    assert_eq!(p.name(), "proceed");
    let name = rustls::pki_types::ServerName::try_from(a.domain.clone()).unwrap();
    let s = tls.connect(name, r.io).await.unwrap();
    let mut r = Reader::new(s);
    send(&mut r.io, &header(&a.domain)).await;
    let _features = r.element().await;
    let user = format!("{}{}", a.prefix, i);
    let mut scram = ScramClient::new(Mechanism::ScramSha1, &user, &a.password, None);
    let first = B64.encode(scram.client_first());
    send(
        &mut r.io,
        &format!("<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-1'>{first}</auth>"),
    )
    .await;
    let ch = r.element().await;
    assert_eq!(ch.name(), "challenge", "{user}: {ch:?}");
    let resp = scram
        .handle_challenge(&B64.decode(ch.text().trim()).unwrap())
        .unwrap();
    send(
        &mut r.io,
        &format!(
            "<response xmlns='{NS_SASL}'>{}</response>",
            B64.encode(resp)
        ),
    )
    .await;
    let ok = r.element().await;
    assert_eq!(ok.name(), "success", "{user}: {ok:?}");
    scram
        .verify_success(&B64.decode(ok.text().trim()).unwrap())
        .unwrap();
    r.parser.reset();
    send(&mut r.io, &header(&a.domain)).await;
    let _features = r.element().await;
    send(
        &mut r.io,
        &format!(
            "<iq type='set' id='b'><bind xmlns='{NS_BIND}'><resource>bench</resource></bind></iq>"
        ),
    )
    .await;
    let res = r.element().await;
    let jid = res
        .children()
        .next()
        .and_then(|b| b.child_text("jid", NS_BIND))
        .expect("bound jid");
    // Like a real client: initial presence (the server then keeps the account's data cached).
    send(&mut r.io, "<presence/>").await;
    (r.io, jid)
}

struct Stats {
    sent: AtomicU64,
    received: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
}

#[allow(clippy::too_many_arguments)]
async fn client(
    a: Arc<Args>,
    s: Tls,
    t0: Instant,
    measure: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    mut stop_rx: tokio::sync::watch::Receiver<bool>,
    stats: Arc<Stats>,
    offset: Duration,
) {
    let (rd, wr) = tokio::io::split(s);
    let mut w = BufWriter::new(wr);
    let mut r = Reader::continued(rd);
    let to = format!("echo@{}", a.component);
    let inflight = Arc::new(tokio::sync::Semaphore::new(a.window.max(1)));
    let open_loop = a.rate > 0.0;
    let per_client = a.rate / a.clients as f64;
    let stop_w = stop.clone();
    let stats_w = stats.clone();
    let sem = inflight.clone();
    let writer = tokio::spawn(async move {
        let mut seq: u64 = 0;
        let mut tick = open_loop.then(|| {
            let period = Duration::from_secs_f64(1.0 / per_client);
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            t
        });
        while !stop_w.load(Ordering::Relaxed) {
            match &mut tick {
                Some(t) => {
                    t.tick().await;
                }
                None => {
                    let Ok(p) = sem.acquire().await else { break };
                    p.forget();
                }
            }
            let now = t0.elapsed().as_micros() as u64;
            seq += 1;
            let m = format!(
                "<message to='{to}' type='chat' id='{seq}'><body>{now} {seq} payload-of-the-benchmark-message</body></message>"
            );
            if w.write_all(m.as_bytes()).await.is_err() {
                break;
            }
            stats_w.sent.fetch_add(1, Ordering::Relaxed);
            // Batch what the closed loop lets us send now, then flush.
            if (tick.is_some() || sem.available_permits() == 0) && w.flush().await.is_err() {
                break;
            }
        }
        let _ = w.flush().await;
        w
    });
    let mut local: Vec<u32> = Vec::with_capacity(4096);
    loop {
        let ev = tokio::select! {
            ev = r.next() => ev,
            _ = stop_rx.changed() => None,
        };
        let Some(ev) = ev else { break };
        let Event::Element(el) = ev else { continue };
        if el.name() != "message" {
            continue;
        }
        let Some(body) = el.child_text("body", rookery_xml::CONTENT_NS) else {
            continue;
        };
        let sent_us: u64 = body
            .split(' ')
            .next()
            .and_then(|x| x.parse().ok())
            .unwrap_or(0);
        let now = t0.elapsed().as_micros() as u64;
        inflight.add_permits(1);
        if measure.load(Ordering::Relaxed) {
            stats.received.fetch_add(1, Ordering::Relaxed);
            local.push(now.saturating_sub(sent_us).min(u32::MAX as u64) as u32);
        }
    }
    stats.latencies_us.lock().unwrap().extend(local);
    // Wake a writer waiting for a window slot, so it sees `stop`.
    inflight.close();
    if let Ok(mut w) = writer.await {
        let _ = w.write_all(b"</stream:stream>").await;
        let _ = w.flush().await;
    }
}

/// User + system CPU seconds of a process (Linux `/proc`, USER_HZ = 100).
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesized command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn cpu_secs_self() -> Option<f64> {
    cpu_secs(std::process::id())
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let a = Arc::new(args());
    let echoed = Arc::new(AtomicU64::new(0));
    let comp = tokio::spawn(echo_component((*a).clone(), echoed.clone()));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let tls = tls_connector();
    let started = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(a.login_concurrency));
    let mut logins = Vec::new();
    for i in 1..=a.clients {
        let a = a.clone();
        let tls = tls.clone();
        let sem = sem.clone();
        logins.push(tokio::spawn(async move {
            let _p = sem.acquire().await.unwrap();
            login(&a, i, &tls).await
        }));
    }
    let mut streams = Vec::new();
    for l in logins {
        streams.push(l.await.expect("login failed"));
    }
    eprintln!(
        "{} clients logged in in {:.1}s",
        streams.len(),
        started.elapsed().as_secs_f64()
    );

    let t0 = Instant::now();
    let measure = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Stats {
        sent: AtomicU64::new(0),
        received: AtomicU64::new(0),
        latencies_us: Mutex::new(Vec::new()),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    let n = streams.len();
    for (k, (s, _jid)) in streams.into_iter().enumerate() {
        // Spread the open-loop senders over one period.
        let offset = if a.rate > 0.0 {
            Duration::from_secs_f64((k as f64 / n as f64) * (a.clients as f64 / a.rate))
        } else {
            Duration::ZERO
        };
        tasks.push(tokio::spawn(client(
            a.clone(),
            s,
            t0,
            measure.clone(),
            stop.clone(),
            stop_rx.clone(),
            stats.clone(),
            offset,
        )));
    }
    tokio::time::sleep(Duration::from_secs_f64(a.warmup)).await;
    let sent0 = stats.sent.load(Ordering::Relaxed);
    let cpu0 = (a.server_pid.map(cpu_secs), cpu_secs_self());
    measure.store(true, Ordering::Relaxed);
    let m0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(a.duration)).await;
    measure.store(false, Ordering::Relaxed);
    let elapsed = m0.elapsed().as_secs_f64();
    let cpu1 = (a.server_pid.map(cpu_secs), cpu_secs_self());
    let sent = stats.sent.load(Ordering::Relaxed) - sent0;
    let received = stats.received.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for t in tasks {
        let _ = tokio::time::timeout_at(deadline, t).await;
    }
    let mut lat = std::mem::take(&mut *stats.latencies_us.lock().unwrap());
    lat.sort_unstable();
    let mode = if a.rate > 0.0 {
        format!("open loop, {} msg/s offered", a.rate)
    } else {
        format!("closed loop, window {} per client", a.window)
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "clients={} mode=({mode}) measured={elapsed:.1}s",
        a.clients
    )
    .unwrap();
    writeln!(
        out,
        "sent={sent} ({:.0}/s)  echoed back={received} ({:.0} round trips/s, {:.0} stanzas/s routed)",
        sent as f64 / elapsed,
        received as f64 / elapsed,
        2.0 * received as f64 / elapsed
    )
    .unwrap();
    writeln!(
        out,
        "round-trip latency ms: mean={:.2} p50={:.2} p90={:.2} p99={:.2} p99.9={:.2} max={:.2} (n={})",
        lat.iter().map(|&x| x as f64).sum::<f64>() / lat.len().max(1) as f64 / 1000.0,
        pct(&lat, 0.5),
        pct(&lat, 0.9),
        pct(&lat, 0.99),
        pct(&lat, 0.999),
        lat.last().copied().unwrap_or(0) as f64 / 1000.0,
        lat.len()
    )
    .unwrap();
    if let (Some(Some(s0)), Some(Some(s1))) = (cpu0.0, cpu1.0) {
        let cpu = s1 - s0;
        writeln!(
            out,
            "server CPU: {:.0}% of one core, {:.1} µs per round trip (2 stanzas routed)",
            100.0 * cpu / elapsed,
            1e6 * cpu / received.max(1) as f64
        )
        .unwrap();
    }
    if let (Some(c0), Some(c1)) = (cpu0.1, cpu1.1) {
        writeln!(
            out,
            "bench process CPU (clients + echo component): {:.0}% of one core",
            100.0 * (c1 - c0) / elapsed
        )
        .unwrap();
    }
    writeln!(
        out,
        "component echoed {} in total",
        echoed.load(Ordering::Relaxed)
    )
    .unwrap();
    comp.abort();
}
