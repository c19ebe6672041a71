//! `rookery`: the server binary — CLI, configuration, wiring of store, core and listeners.
//!
//! `rookery serve` with no arguments serves `localhost` on 127.0.0.1 (5222 STARTTLS, 5223
//! direct TLS) with SQLite in `./rookery-data/`. `rookery user add|passwd|delete|list`
//! manages accounts in the same store; `rookery ctl …` talks to a running server through
//! its admin API (`ctl.rs`).

mod admin;
mod check;
mod config;
mod ctl;
mod reload;
mod signals;
mod tls;
mod token;
mod validate;
mod web;
mod wiring;

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Parser, Subcommand};
use rookery_c2s::{limiter::AuthLimiter, C2sContext, Mode};
use rookery_core::modules::{self, register::Register};
use rookery_core::CoreBuilder;
use rookery_proto::{StreamError, StreamErrorCondition};
use rookery_sasl::{Credentials, DEFAULT_ITERATIONS};
use rookery_store::{Migrations, Store, StoreError};
use tokio::net::TcpListener;

use crate::config::Config;

/// jemalloc, with its background threads purging freed pages (after `dirty_decay_ms`, 10 s by
/// default): glibc's malloc kept what bursts of large stanzas had freed, so RSS only grew
/// round after round of hostile clients (issue 19; the figures and the choice against
/// mimalloc are in docs/performance.md, "The allocator").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The Rookery XMPP server.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML); without it the zero-config defaults apply.
    #[arg(long, short, global = true, env = "ROOKERY_CONFIG")]
    config: Option<PathBuf>,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve,
    /// Check the configuration, the certificate (chain, names, expiry) and, with `--dns`,
    /// the SRV records; one line per problem, non-zero exit status if there is any.
    Check {
        /// Also look up the domain's SRV records.
        #[arg(long)]
        dns: bool,
    },
    /// Bring the database's schema up to this version (after a backup). `serve` does it at
    /// start; `user` refuses a database of another version instead.
    Migrate,
    /// Manage accounts.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Manage the bearer tokens of the public HTTP API (docs/http.md).
    Token {
        #[command(subcommand)]
        action: token::TokenAction,
    },
    /// Talk to the running server through its admin API (`[listen] admin`).
    Ctl {
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        command: ctl::CtlCommand,
    },
}

#[derive(Subcommand)]
enum UserAction {
    /// Create an account; the password is read from stdin (or prompted for, not echoed).
    Add {
        /// A bare JID (`alice@example.org`, on any hosted domain) or a username of the
        /// primary domain.
        name: String,
    },
    /// Change an account's password, read like `add`.
    Passwd {
        /// A bare JID (`alice@example.org`, on any hosted domain) or a username of the
        /// primary domain.
        name: String,
    },
    /// Delete an account.
    Delete {
        /// A bare JID (`alice@example.org`, on any hosted domain) or a username of the
        /// primary domain.
        name: String,
    },
    /// List accounts.
    List {
        /// The hosted domain (default: the primary one).
        #[arg(long)]
        host: Option<String>,
    },
    /// Create many accounts `<prefix>1` … `<prefix><count>` sharing one password, for load
    /// tests (`rookery-bench`): the credentials are derived once (same salts for all), so
    /// never use it for real users. Existing accounts are skipped.
    AddBulk {
        /// Username prefix.
        #[arg(long, default_value = "user")]
        prefix: String,
        /// Number of accounts.
        #[arg(long)]
        count: u32,
        /// First number.
        #[arg(long, default_value_t = 1)]
        start: u32,
        /// The shared password.
        #[arg(long)]
        password: String,
        /// The hosted domain (default: the primary one).
        #[arg(long)]
        host: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Check { dns } = cli.command {
        // Its own report, for a broken configuration file too.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the runtime")?;
        let ok = rt.block_on(check::run(cli.config.as_deref(), dns)).print();
        std::process::exit(if ok { 0 } else { 1 });
    }
    let cfg = Config::load(cli.config.as_deref())?;
    let log = init_logging(&cfg, cli.log_json);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        match cli.command {
            Command::Serve => serve(cfg, cli.config, log).await,
            Command::Check { .. } => Ok(()),
            Command::Migrate => migrate(cfg).await,
            Command::User { action } => user(cfg, action).await,
            Command::Token { action } => token::run(cfg, action).await,
            Command::Ctl { json, command } => ctl::run(&cfg, command, json).await,
        }
    })
}

/// Sets up logging; the handle replaces the filter on reload, unless `RUST_LOG` set it
/// (the environment wins over the file, then and on reload).
fn init_logging(cfg: &Config, json: bool) -> Option<reload::LogReload> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let from_env = tracing_subscriber::EnvFilter::try_from_default_env().ok();
    let reloadable = from_env.is_none();
    // A level `serve` refuses (validate.rs) logs at `info` until the refusal is printed.
    let filter = from_env.unwrap_or_else(|| {
        cfg.log
            .filter()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    });
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    // Colours only for a terminal: in files and the journal escape codes are noise.
    let text = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    if json || cfg.log.format == config::LogFormat::Json {
        registry.with(text.json().with_ansi(false)).init();
    } else {
        registry.with(text).init();
    }
    reloadable.then_some(handle)
}

async fn open_store(cfg: &Config, migrations: Migrations) -> anyhow::Result<Store> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let url = cfg.store_url();
    Store::open_with(&url, migrations)
        .await
        .with_context(|| format!("opening the store at {}", redacted(&url)))
}

/// `url` without the password of its user part, for messages and logs.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or_default();
            format!("{scheme}://{name}:***@{host}")
        }
        _ => url.to_string(),
    }
}

async fn migrate(cfg: Config) -> anyhow::Result<()> {
    let store = open_store(&cfg, Migrations::Apply).await?;
    store.close().await;
    println!("the database schema is current");
    Ok(())
}

async fn serve(
    cfg: Config,
    path: Option<PathBuf>,
    log: Option<reload::LogReload>,
) -> anyhow::Result<()> {
    // Refused before the database or the data directory is touched (a clustered node on
    // SQLite would serve a database of its own), by what `check` and a reload run too.
    validate::ensure(&cfg)?;
    let store = open_store(&cfg, Migrations::Apply).await?;
    let tls = tls::load(&cfg)?;
    let core_cfg = cfg.core();
    let register = Arc::new(Register::new(core_cfg.registration.clone()));
    let accounts = Arc::new(wiring::accounts::StoreAccounts(store.clone()));
    let mut builder = CoreBuilder::new(core_cfg.clone(), accounts);
    for m in modules::defaults(&core_cfg, register.clone()) {
        builder = builder.module(m);
    }
    // XEP-0050/0133: administration from an XMPP client, for `admins`.
    let admins = rookery_adhoc::Admins::new(wiring::adhoc::admins(&cfg)?);
    builder = builder.module(Arc::new(rookery_adhoc::AdHoc::new(admins.clone())));
    // RFC 6121 and the IM extensions (crates/im). The handle answers questions such as
    // "does this resource want node+notify" (XEP-0115) for PEP.
    let (im, im_modules) = rookery_im::modules(cfg.im.clone(), store.clone());
    // Publish-subscribe (crates/pubsub): each host's service at pubsub.<host>, and PEP. Hook
    // order comes from the priorities the modules declare (docs/architecture.md), not here.
    let pubsub = wiring::pubsub::Pubsub::new(
        &cfg.pubsub,
        &cfg.pubsub_services()?,
        &cfg.hosts()?,
        &store,
        im.clone(),
    )
    .map_err(|e| anyhow!("{e}"))?;
    for m in pubsub.modules() {
        builder = builder.module(m);
    }
    // Presence as Server-Sent Events (docs/http.md): observes presence broadcasts, asks the
    // roster the same question as the `presence` access model.
    let presence_streams = Arc::new(rookery_web::presence::PresenceStreams::new(pubsub.policy()));
    builder = builder.module(presence_streams.clone());
    for m in im_modules {
        builder = builder.module(m);
    }
    // Message archives (crates/mam); its hooks declare their priorities like the others.
    let mam = wiring::mam::module(&cfg.mam, &store)?;
    if let Some(m) = &mam {
        builder = builder.module(m.clone());
    }
    // HTTP file upload (crates/upload): the service at upload.<domain>, files on the web
    // listener; its module deletes an account's files with the account.
    let upload = wiring::upload::service(&cfg)?;
    if let Some(u) = &upload {
        builder = builder.module(u.module());
    }
    // Resumable client sessions; in a cluster a node ends one its client gave up elsewhere...
    let sm = Arc::new(rookery_c2s::sm::Registry::default());
    let elsewhere = Arc::new(rookery_c2s::elsewhere::ResumedElsewhere::new(sm.clone()));
    builder = builder.module(elsewhere.clone());
    // Auth failures counted here, and in a cluster those the other nodes counted.
    let limiter = Arc::new(AuthLimiter::new(
        cfg.c2s.auth_failures_per_ip_per_minute,
        cfg.c2s.auth_failures_per_account_per_minute,
    ));
    builder = builder.module(limiter.clone());
    let core = builder.build()?;
    // ... and hands one over to a node where its client resumed it.
    core.set_session_source(elsewhere);
    pubsub.attach(&core);
    if let Some(u) = &upload {
        u.attach(&core);
    }
    if let Some(m) = &mam {
        m.spawn_purge();
    }
    // Multi-user chat (crates/muc): each host's service at conference.<host>.
    for muc in wiring::muc::services(&cfg.muc, &cfg.muc_services()?, &store).await? {
        muc.attach(&core);
    }
    // A node of a cluster knows the other nodes' sessions before its first client binds.
    let cluster = wiring::cluster::start(&cfg, &core).await?;
    // Component domains are routed (to the component, or bounced) before any client connects.
    let components = rookery_component::Components::new(core.clone(), cfg.component.clone())
        .context("component configuration")?;
    let ctx = Arc::new(C2sContext {
        core: core.clone(),
        tls: tls.starttls,
        direct_tls: tls.direct,
        config: cfg.c2s.clone(),
        register,
        limiter,
        sm,
        connections: rookery_c2s::ConnectionCap::with_limits(cfg.c2s.connection_limits()),
        fast: Some(Arc::new(wiring::fast::StoreTokens(store.clone()))),
        cert: Some(tls.cert.clone()),
    });
    let mut tasks = Vec::new();
    let mut federation = None;
    // The admin listener first, so that `/health` answers while the others start; `/ready`
    // says 200 once they are all bound.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let s2s_slot: Arc<OnceLock<Arc<rookery_s2s::S2s>>> = Arc::default();
    // Set once every listener is up; a reload asked for before then is refused.
    let reloader: Arc<OnceLock<reload::Reloader>> = Arc::default();
    let status = rookery_http::Status::new({
        let (core, components, s2s) = (core.clone(), components.clone(), s2s_slot.clone());
        move || connections(&core, &components, s2s.get())
    })
    // The client software as its XEP-0115 capabilities name it (the `node` of `node#ver`).
    .with_client_names(move |jid| {
        let key = im.caps_key(jid)?;
        Some(rookery_im::caps::client_of(&key).to_string())
    });
    // A node of a cluster serves BOSH sessions held by the others (docs/clustering.md).
    let bosh_relay = cluster.as_ref().map(rookery_cluster::Cluster::bosh_relay);
    // A node of a cluster shows the nodes and where sessions live (`ctl status`).
    let status = Arc::new(match cluster {
        Some(c) => {
            status.with_cluster(move || serde_json::to_value(c.status()).unwrap_or_default())
        }
        None => status,
    });
    let admin_task = if cfg.listen.admin.is_empty() {
        None
    } else {
        let l = TcpListener::bind(&cfg.listen.admin)
            .await
            .with_context(|| format!("binding {}", cfg.listen.admin))?;
        tracing::info!(addr = %l.local_addr()?, "listening for the admin API (health, metrics)");
        let router = rookery_http::admin::router(rookery_http::AdminContext {
            core: core.clone(),
            store: store.clone(),
            token: admin::token(&cfg, true)?.into(),
            status: status.clone(),
            services: Arc::new(admin::ServerServices {
                s2s: s2s_slot.clone(),
                components: components.clone(),
                pubsub: pubsub.services().to_vec(),
            }),
            reload: Some({
                let reloader = reloader.clone();
                Arc::new(move || {
                    let r = reloader.get().ok_or("the server is still starting")?;
                    r.reload_logged()
                        .map_err(|e| format!("{e:#}"))
                        .and_then(|o| serde_json::to_value(o).map_err(|e| e.to_string()))
                })
            }),
        });
        let mut stop = stop_rx.clone();
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        Some(tokio::spawn(rookery_http::listener::run(
            l,
            router,
            rookery_http::Limits::ADMIN,
            stopped,
        )))
    };
    for (addr, mode) in [
        (&cfg.listen.c2s, Mode::StartTls),
        (&cfg.listen.c2s_direct_tls, Mode::DirectTls),
    ] {
        if addr.is_empty() {
            continue;
        }
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        tracing::info!(addr = %l.local_addr()?, ?mode, domain = %cfg.domain, "listening for clients");
        tasks.push(tokio::spawn(rookery_c2s::run(l, mode, ctx.clone())));
    }
    // The WebSub hub (crates/websub) and its delivery worker, which resumes the outbox left
    // by an earlier run.
    let websub = rookery_websub::Hub::new(store.clone(), pubsub.engines(), cfg.webhooks.clone())
        .context("[webhooks] HTTP client")?;
    let websub_worker = tokio::spawn(rookery_websub::worker::run(
        websub.clone(),
        stop_rx.clone(),
        {
            let core = core.clone();
            move || core.home_node().is_none()
        },
    ));
    let web = web::start(
        &cfg,
        ctx.clone(),
        web::Backends {
            store: store.clone(),
            nodes: pubsub.engines(),
            presence: presence_streams,
            upload,
            websub,
        },
        tls.https.clone(),
        bosh_relay,
        &stop_rx,
    )
    .await?;
    if cfg.s2s.enabled {
        let s2s = rookery_s2s::S2s::setup(
            core.clone(),
            cfg.s2s.clone(),
            tls.cert.clone(),
            &cfg.data_dir,
        )
        .context("federation ([s2s]) settings")?;
        core.set_remote_route(s2s.clone());
        for (addr, mode) in [
            (&cfg.listen.s2s, rookery_s2s::Mode::StartTls),
            (&cfg.listen.s2s_direct_tls, rookery_s2s::Mode::DirectTls),
        ] {
            if addr.is_empty() {
                continue;
            }
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            tracing::info!(addr = %l.local_addr()?, ?mode, "listening for servers");
            tasks.push(tokio::spawn(rookery_s2s::run(l, mode, s2s.clone())));
        }
        let _ = s2s_slot.set(s2s.clone());
        federation = Some(s2s);
    }
    let component_listener = components
        .bind()
        .await
        .with_context(|| format!("binding {}", cfg.component.listen))?;
    if let Some(l) = component_listener {
        tracing::info!(addr = %l.local_addr()?, domains = ?components.domains(), "listening for components");
        tasks.push(tokio::spawn(rookery_component::run(l, components.clone())));
    }
    if tasks.is_empty() && web.tasks.is_empty() {
        bail!("no listener configured");
    }
    let _ = reloader.set(reload::Reloader::new(
        path,
        cfg.clone(),
        reload::Targets {
            cert: tls.cert.clone(),
            log,
            admins,
            c2s: Arc::downgrade(&ctx),
            s2s: federation.clone(),
            components: components.clone(),
        },
    ));
    status.set_listening();
    signals::ready();
    if let Some(r) = reloader.get() {
        signals::run_until_shutdown(r).await;
    }
    signals::stopping();
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    for t in &tasks {
        t.abort();
    }
    drop(web.listening);
    let shutdown = StreamError::with_text(
        StreamErrorCondition::SystemShutdown,
        "the server is shutting down",
    );
    // The services first (rooms tell their occupants, XEP-0045 §17.1.4), while sessions
    // and federation streams can still carry it.
    core.shutdown_domains().await;
    core.close_all(&shutdown);
    components.close_all(&shutdown);
    // Wait (bounded) for the client streams to end: bound sessions leave the registry, and
    // every connection task, negotiating ones included, drops its clone of `ctx` once its
    // stream error is written.
    wait_until(Duration::from_secs(5), || {
        core.session_count() == 0 && Arc::strong_count(&ctx) == 1
    })
    .await;
    ending_sessions(&ctx).await;
    // Then the server-to-server streams, both ways, so that what the ending sessions sent to
    // other servers (their unavailable presence, first of all) is written before the outgoing
    // streams close; what cannot be sent bounces.
    if let Some(s2s) = &federation {
        s2s.close_all();
        wait_until(Duration::from_secs(5), || {
            s2s.outgoing_count() == 0 && s2s.incoming_count() == 0
        })
        .await;
    }
    for t in web.tasks {
        let _ = t.await;
    }
    if let Some(t) = admin_task {
        let _ = t.await;
    }
    // The worker stops at the stop signal; deliveries not made stay in the outbox.
    let _ = websub_worker.await;
    // What the modules hold uncommitted (archive rows in a batch) goes in before the store
    // closes.
    core.settle().await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Open connections by kind, for the admin listener.
fn connections(
    core: &rookery_core::Core,
    components: &rookery_component::Components,
    s2s: Option<&Arc<rookery_s2s::S2s>>,
) -> rookery_http::Connections {
    rookery_http::Connections {
        c2s: core.session_count(),
        c2s_by_transport: core
            .session_count_by_transport()
            .map(|(t, n)| (t.as_str(), n)),
        s2s_incoming: s2s.map_or(0, |s| s.incoming_count()),
        s2s_outgoing: s2s.map_or(0, |s| s.outgoing_count()),
        components: components
            .domains()
            .into_iter()
            .filter(|d| components.route(d).is_some_and(|r| r.is_connected()))
            .count(),
    }
}

/// How long the shutdown waits for an ending session to hand on what it held, beyond the
/// time its last writes may take: one commit per stanza into offline storage, for up to
/// `sm_max_unacked` stanzas per session, all sessions at once.
const HAND_ON_GRACE: Duration = Duration::from_secs(60);

/// Waits for the client connections still running after their streams were told to close.
/// Each session, once unbound, hands on what it held — unacknowledged, parked while it
/// hibernated, held back by CSI — to another resource or offline storage, and those stanzas
/// were acknowledged to their senders: the store must stay open until that is done. Bounded:
/// a client that stopped reading holds its connection for the write timeout
/// (`ping_timeout_secs`), then [`HAND_ON_GRACE`].
async fn ending_sessions(ctx: &Arc<C2sContext>) {
    // Every connection task holds a clone; this function's caller holds the first.
    let ending = || Arc::strong_count(ctx).saturating_sub(1);
    if ending() == 0 {
        return;
    }
    let write = Duration::from_secs(ctx.config.ping_timeout_secs.max(1));
    let limit = write.saturating_add(HAND_ON_GRACE);
    tracing::info!(
        connections = ending(),
        limit_secs = limit.as_secs(),
        "waiting for ending sessions to hand on what they held"
    );
    wait_until(limit, || ending() == 0).await;
    match ending() {
        0 => tracing::info!("ending sessions done"),
        n => tracing::error!(
            connections = n,
            "gave up waiting for ending sessions: what they still held is lost"
        ),
    }
}

/// Polls `done` until it holds or `limit` has passed.
async fn wait_until(limit: Duration, done: impl Fn() -> bool) {
    let deadline = rookery_core::deadline::after(tokio::time::Instant::now(), limit);
    while !done() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn read_password() -> anyhow::Result<String> {
    let pw = if std::io::stdin().is_terminal() {
        let a = rpassword::prompt_password("Password: ")?;
        let b = rpassword::prompt_password("Again: ")?;
        if a != b {
            bail!("passwords differ");
        }
        a
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    if pw.is_empty() {
        bail!("empty password");
    }
    Ok(pw)
}

/// The account a `rookery user` argument names: a bare JID on a hosted domain, or a
/// username of the primary domain (as `prosodyctl adduser` and the old form take).
fn account_of(hosts: &rookery_core::Hosts, name: &str) -> anyhow::Result<(String, String)> {
    let (local, domain) = match name.rsplit_once('@') {
        Some((local, domain)) => {
            let domain = rookery_jid::normalize_domain(domain)
                .map_err(|e| anyhow!("invalid domain in {name:?}: {e}"))?;
            (local, domain)
        }
        None => (name, hosts.primary().domain().to_string()),
    };
    let host = host_of(hosts, Some(&domain))?;
    let local = rookery_jid::normalize_local(local)
        .map_err(|e| anyhow!("invalid username {local:?}: {e}"))?;
    Ok((host, local))
}

/// The hosted domain `--host` names (the primary without it); an unknown one is an error.
fn host_of(hosts: &rookery_core::Hosts, host: Option<&str>) -> anyhow::Result<String> {
    let Some(host) = host else {
        return Ok(hosts.primary().domain().to_string());
    };
    let domain = rookery_jid::normalize_domain(host).unwrap_or_else(|_| host.to_string());
    match hosts.get(&domain) {
        Some(h) => Ok(h.domain().to_string()),
        None => {
            let served: Vec<&str> = hosts.iter().map(rookery_core::Host::domain).collect();
            bail!(
                "{host:?} is not a hosted domain (this server hosts {})",
                served.join(", ")
            )
        }
    }
}

async fn user(cfg: Config, action: UserAction) -> anyhow::Result<()> {
    let hosts = cfg.hosts()?;
    // Never a silent upgrade (or a write into a newer schema) from an admin command: that
    // is `rookery migrate`'s job, after the operator's backup.
    let store = open_store(&cfg, Migrations::RequireCurrent).await?;
    let accounts = store.accounts();
    match action {
        UserAction::Add { name } => {
            let (domain, local) = account_of(&hosts, &name)?;
            let creds = Credentials::derive(&read_password()?, DEFAULT_ITERATIONS)
                .map_err(|e| anyhow!("{e}"))?;
            match accounts.create(&domain, &local, &creds).await {
                Ok(()) => println!("created {local}@{domain}"),
                Err(StoreError::Conflict) => bail!("{local}@{domain} already exists"),
                Err(e) => return Err(e.into()),
            }
        }
        UserAction::Passwd { name } => {
            let (domain, local) = account_of(&hosts, &name)?;
            let creds = Credentials::derive(&read_password()?, DEFAULT_ITERATIONS)
                .map_err(|e| anyhow!("{e}"))?;
            if !accounts.set_credentials(&domain, &local, &creds).await? {
                bail!("no such user {local}@{domain}");
            }
            println!("password changed for {local}@{domain}");
        }
        UserAction::Delete { name } => {
            let (domain, local) = account_of(&hosts, &name)?;
            // The same store deletion as in-band removal (roster, offline messages, PEP
            // nodes …). Contacts are not told: that needs the running server.
            if !store.delete_account(&domain, &local).await? {
                bail!("no such user {local}@{domain}");
            }
            println!("deleted {local}@{domain}");
        }
        UserAction::AddBulk {
            prefix,
            count,
            start,
            password,
            host,
        } => {
            let domain = host_of(&hosts, host.as_deref())?;
            let creds =
                Credentials::derive(&password, DEFAULT_ITERATIONS).map_err(|e| anyhow!("{e}"))?;
            let (mut created, mut existing) = (0u64, 0u64);
            for i in start..start.saturating_add(count) {
                let name = format!("{prefix}{i}");
                let local = rookery_jid::normalize_local(&name)
                    .map_err(|e| anyhow!("invalid username {name:?}: {e}"))?;
                match accounts.create(&domain, &local, &creds).await {
                    Ok(()) => created += 1,
                    Err(StoreError::Conflict) => existing += 1,
                    Err(e) => return Err(e.into()),
                }
            }
            println!("created {created} accounts ({existing} existed) on {domain}");
        }
        UserAction::List { host } => {
            let domain = host_of(&hosts, host.as_deref())?;
            for u in accounts.list(&domain).await? {
                println!("{u}@{domain}");
            }
        }
    }
    store.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn store_urls_are_shown_without_the_password() {
        assert_eq!(
            super::redacted("postgres://rookery:s3cret@db:5432/rookery"),
            "postgres://rookery:***@db:5432/rookery"
        );
        assert_eq!(super::redacted("sqlite://data/r.db"), "sqlite://data/r.db");
    }

    #[test]
    fn user_arguments_name_an_account_of_a_hosted_domain() {
        let hosts = rookery_core::Hosts::new(
            "a.test",
            &[rookery_core::HostConfig {
                domain: "b.test".into(),
                allow_registration: None,
            }],
        )
        .unwrap();
        let of = |n| super::account_of(&hosts, n).map_err(|e| e.to_string());
        assert_eq!(of("Alice"), Ok(("a.test".into(), "alice".into())));
        assert_eq!(of("bob@B.test"), Ok(("b.test".into(), "bob".into())));
        assert_eq!(of("carol@a.test"), Ok(("a.test".into(), "carol".into())));
        let e = of("dave@c.test").unwrap_err();
        assert!(e.contains("\"c.test\" is not a hosted domain"), "{e}");
        assert!(e.contains("a.test, b.test"), "{e}");
        assert!(of("@b.test").is_err());
        assert_eq!(super::host_of(&hosts, None).unwrap(), "a.test");
        assert_eq!(super::host_of(&hosts, Some("b.test")).unwrap(), "b.test");
    }
}
