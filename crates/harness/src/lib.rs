//! An in-process load harness: the server's real client path (`rookery-c2s` negotiation and
//! session loop, the core's router and registry, the IM modules over a SQLite store) serving
//! sessions whose transport is an in-memory pipe (`tokio::io::duplex`) instead of a socket.
//!
//! It answers what a million sessions cost a process without needing a million file
//! descriptors (one process on the measurement box may hold 20,000): memory per bound
//! session, routing latency among a million registry entries, the cost of a presence
//! broadcast, and the time to log them all in. The kernel's share of a real TCP session is
//! measured apart (`docs/performance.md`).
//!
//! Layout: [`directory`] (the accounts), [`client`] (the other end of each pipe),
//! [`measure`] (process readings, percentiles), and here the server and the run.

pub mod client;
pub mod directory;
pub mod measure;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use rand::Rng;
use rookery_c2s::limiter::AuthLimiter;
use rookery_c2s::{C2sConfig, C2sContext};
use rookery_core::modules::{self, register::Register};
use rookery_core::{CoreBuilder, CoreConfig};
use rookery_proto::ns;
use rookery_sasl::SaltedPasswordCache;
use rookery_store::rosters::{Request, RosterItem, Subscription};
use rookery_store::Store;
use rookery_stream::{Conn, Transport};
use rookery_xml::Limits;
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::task::JoinSet;

use crate::directory::{user, Directory};
use crate::measure::{percentile, Reading};

/// The domain the harness serves.
pub const DOMAIN: &str = "localhost";

/// Most bytes either direction of a pipe holds unread, as a socket buffer would.
const PIPE_BYTES: usize = 64 * 1024;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Sessions to bind.
    pub sessions: usize,
    /// Logins in flight at once.
    pub concurrency: usize,
    /// One-to-one messages timed, one at a time, between random sessions.
    pub messages: usize,
    /// Users whose presence broadcasts are timed, one after another.
    pub broadcasters: usize,
    /// Contacts in each broadcaster's roster (all of them online).
    pub contacts: usize,
    /// PBKDF2 iterations of the stored SCRAM verifiers.
    pub iterations: u32,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Sessions bound.
    pub sessions: usize,
    /// Before the first login, after the server was built.
    pub before: Reading,
    /// Once every session was bound and idle.
    pub bound: Reading,
    /// Wall time to log in and bind every session.
    pub bind_time: Duration,
    /// Sessions in the core's registry at the end.
    pub registry: usize,
    /// Delivery time of each timed message, sender's write to receiver's read.
    pub message_latencies: Vec<Duration>,
    /// Time from a broadcaster's presence until its last contact read it, per broadcast.
    pub broadcast_times: Vec<Duration>,
    /// Process CPU over all timed broadcasts.
    pub broadcast_cpu: Duration,
    /// Presence stanzas delivered in the timed broadcasts.
    pub broadcast_deliveries: usize,
    /// Resident memory of `sessions` bare pipe pairs carrying the same login traffic
    /// without a server: the transport's share of [`Report::per_session_bytes`].
    pub pipe_bytes: u64,
}

impl Report {
    /// Resident memory added per bound session (pipe pair and client end included).
    pub fn per_session_bytes(&self) -> u64 {
        self.bound.rss_bytes.saturating_sub(self.before.rss_bytes) / self.sessions.max(1) as u64
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.sessions;
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        writeln!(f, "sessions bound: {n} (registry: {})", self.registry)?;
        writeln!(
            f,
            "bind: {:.1} s, {:.0} logins/s (SCRAM-SHA-256, bind, initial presence, ping)",
            self.bind_time.as_secs_f64(),
            n as f64 / self.bind_time.as_secs_f64().max(1e-9)
        )?;
        writeln!(
            f,
            "rss: {:.1} MiB before, {:.1} MiB bound; {} bytes per session, of which pipe pair ~{} bytes",
            mib(self.before.rss_bytes),
            mib(self.bound.rss_bytes),
            self.per_session_bytes(),
            self.pipe_bytes
        )?;
        let lat = &self.message_latencies;
        writeln!(
            f,
            "message A->B ({} samples): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            lat.len(),
            ms(percentile(lat, 50.0)),
            ms(percentile(lat, 99.0)),
            ms(percentile(lat, 100.0))
        )?;
        let b = &self.broadcast_times;
        writeln!(
            f,
            "presence broadcast ({} x {} contacts): p50 {:.2} ms, max {:.2} ms to the last \
             contact; {:.2} us CPU per delivery (server and reading clients)",
            b.len(),
            self.broadcast_deliveries / b.len().max(1),
            ms(percentile(b, 50.0)),
            ms(percentile(b, 100.0)),
            self.broadcast_cpu.as_secs_f64() * 1e6 / self.broadcast_deliveries.max(1) as f64
        )
    }
}

/// A server core with the default modules and the IM layer over an in-memory SQLite store,
/// as `rookery` wires them (without pubsub, MUC, MAM and the listeners), and the client
/// listener's context.
async fn server(opts: &Options) -> anyhow::Result<(Arc<C2sContext>, Store)> {
    let store = Store::open("sqlite::memory:").await?;
    let core_cfg = CoreConfig {
        domain: DOMAIN.into(),
        ..CoreConfig::default()
    };
    let register = Arc::new(Register::new(core_cfg.registration.clone()));
    let accounts = Arc::new(Directory::new(DOMAIN, opts.sessions, opts.iterations)?);
    let mut builder = CoreBuilder::new(core_cfg.clone(), accounts);
    for m in modules::defaults(&core_cfg, register.clone()) {
        builder = builder.module(m);
    }
    let (_im, im_modules) = rookery_im::modules(Default::default(), store.clone());
    for m in im_modules {
        builder = builder.module(m);
    }
    let core = builder.build().map_err(|e| anyhow!("{e}"))?;
    // Never used: a pipe cannot start TLS, and counts as secure already.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(rustls::server::ResolvesServerCertUsingSni::new())),
    );
    let config = C2sConfig {
        // Idle clients here never read: a ping would go unanswered and end the session.
        ping_interval_secs: 0,
        ..C2sConfig::default()
    };
    let ctx = Arc::new(C2sContext {
        core,
        tls: tls.clone(),
        direct_tls: tls,
        limiter: Arc::new(AuthLimiter::new(
            config.auth_failures_per_ip_per_minute,
            config.auth_failures_per_account_per_minute,
        )),
        config,
        register,
        sm: Default::default(),
        connections: rookery_c2s::ConnectionCap::new(0),
        fast: None,
        cert: None,
    });
    Ok((ctx, store))
}

/// Gives each broadcaster (`u0` …) a roster of `contacts` users, subscribed both ways, taken
/// from the users after the broadcasters.
async fn rosters(store: &Store, opts: &Options) -> anyhow::Result<()> {
    let creds = rookery_sasl::Credentials::derive(directory::PASSWORD, 1)?;
    for b in 0..opts.broadcasters {
        store.accounts().create(DOMAIN, &user(b), &creds).await?;
        for c in contacts(opts) {
            let item = RosterItem {
                contact: format!("{}@{DOMAIN}", user(c)),
                subscription: Subscription::Both,
                ..Default::default()
            };
            store
                .rosters()
                .put(DOMAIN, &user(b), &item, Request::Keep)
                .await?;
        }
    }
    Ok(())
}

fn contacts(opts: &Options) -> std::ops::Range<usize> {
    opts.broadcasters..opts.broadcasters + opts.contacts
}

/// Opens a pipe and runs the server's client path on its far end.
fn connect(ctx: &Arc<C2sContext>, stopped: &tokio::sync::watch::Receiver<()>) -> DuplexStream {
    let (client, server) = tokio::io::duplex(PIPE_BYTES);
    let conn = Conn::new(
        Transport::Memory(server),
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        Limits::PRE_AUTH,
        ctx.core.domain(),
        ns::CLIENT,
    );
    tokio::spawn(rookery_c2s::negotiate::serve_framed(
        ctx.clone(),
        conn,
        stopped.clone(),
    ));
    client
}

/// Logs in every session, `concurrency` at a time; the client ends by account number.
async fn bind_all(ctx: &Arc<C2sContext>, opts: &Options) -> anyhow::Result<Vec<DuplexStream>> {
    let (_stop, stopped) = tokio::sync::watch::channel(());
    let cache = Arc::new(SaltedPasswordCache::new(4));
    let mut ends: Vec<Option<DuplexStream>> = Vec::new();
    ends.resize_with(opts.sessions, || None);
    let mut flight = JoinSet::new();
    let mut join = |r: Option<Result<(usize, anyhow::Result<DuplexStream>), _>>| match r {
        Some(Ok((i, Ok(io)))) => {
            if let Some(slot) = ends.get_mut(i) {
                *slot = Some(io);
            }
            Ok(())
        }
        Some(Ok((i, Err(e)))) => Err(e.context(format!("login of {}", user(i)))),
        Some(Err(e)) => Err(anyhow!("login task: {e}")),
        None => Ok(()),
    };
    for i in 0..opts.sessions {
        if flight.len() >= opts.concurrency.max(1) {
            join(flight.join_next().await)?;
        }
        let io = connect(ctx, &stopped);
        let cache = cache.clone();
        flight.spawn(async move { (i, client::login(io, DOMAIN, i, cache).await) });
    }
    while let Some(r) = flight.join_next().await {
        join(Some(r))?;
    }
    ends.into_iter()
        .enumerate()
        .map(|(i, e)| e.ok_or_else(|| anyhow!("{} was never bound", user(i))))
        .collect()
}

/// Times `count` messages, one at a time, each from a random session to another.
async fn messages(ends: &mut [DuplexStream], count: usize) -> anyhow::Result<Vec<Duration>> {
    let mut rng = rand::thread_rng();
    let mut out = Vec::with_capacity(count);
    if ends.len() < 2 {
        return Ok(out);
    }
    for k in 0..count {
        let a = rng.gen_range(0..ends.len());
        let b = (a + rng.gen_range(1..ends.len())) % ends.len();
        let stanza = format!(
            "<message to='{}@{DOMAIN}/h' type='chat'><body>m{k}.</body></message>",
            user(b)
        );
        let marker = format!(">m{k}.<");
        let started = Instant::now();
        ends.get_mut(a)
            .context("sender")?
            .write_all(stanza.as_bytes())
            .await?;
        client::wait_for(ends.get_mut(b).context("receiver")?, marker.as_bytes()).await?;
        out.push(started.elapsed());
    }
    Ok(out)
}

/// Times each broadcaster's presence change until every contact has read it; returns the
/// times, the CPU spent, and the deliveries.
async fn broadcasts(
    ends: &mut [DuplexStream],
    opts: &Options,
) -> anyhow::Result<(Vec<Duration>, Duration, usize)> {
    let mut times = Vec::new();
    let mut deliveries = 0;
    let cpu = measure::cpu()?;
    for b in 0..opts.broadcasters {
        let marker = format!(">p{b}.<");
        let started = Instant::now();
        ends.get_mut(b)
            .context("broadcaster")?
            .write_all(format!("<presence><status>p{b}.</status></presence>").as_bytes())
            .await?;
        for c in contacts(opts) {
            client::wait_for(ends.get_mut(c).context("contact")?, marker.as_bytes()).await?;
            deliveries += 1;
        }
        times.push(started.elapsed());
        // The broadcaster's own resource hears its presence too; read it off the pipe.
        client::wait_for(ends.get_mut(b).context("broadcaster")?, marker.as_bytes()).await?;
    }
    Ok((times, measure::cpu()?.saturating_sub(cpu), deliveries))
}

/// Runs the harness: builds the server, binds `opts.sessions` sessions, measures.
pub async fn run(opts: &Options) -> anyhow::Result<Report> {
    if opts.broadcasters + opts.contacts > opts.sessions {
        bail!("broadcasters + contacts must not exceed the sessions");
    }
    let (ctx, store) = server(opts).await?;
    rosters(&store, opts).await.context("rosters")?;
    let before = measure::settled().await?;
    let started = Instant::now();
    let mut ends = bind_all(&ctx, opts).await?;
    let bind_time = started.elapsed();
    let bound = measure::settled().await?;
    let registry = ctx.core.session_count();
    let message_latencies = messages(&mut ends, opts.messages).await?;
    let (broadcast_times, broadcast_cpu, broadcast_deliveries) =
        broadcasts(&mut ends, opts).await?;
    let pipe_bytes = measure::pipes(opts.sessions.min(100_000)).await?;
    Ok(Report {
        sessions: ends.len(),
        before,
        bound,
        bind_time,
        registry,
        message_latencies,
        broadcast_times,
        broadcast_cpu,
        broadcast_deliveries,
        pipe_bytes,
    })
}
