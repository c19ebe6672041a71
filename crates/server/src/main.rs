//! `rookery`: the server binary — CLI, configuration, wiring of store, core and listeners.
//!
//! `rookery serve` with no arguments serves `localhost` on 127.0.0.1 (5222 STARTTLS, 5223
//! direct TLS) with SQLite in `./rookery-data/`. `rookery user add|passwd|delete|list`
//! manages accounts in the same store; `rookery ctl …` talks to a running server through
//! its admin API (`ctl.rs`).

mod admin;
mod config;
mod ctl;
mod tls;
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
use rookery_store::{Store, StoreError};
use tokio::net::TcpListener;

use crate::config::Config;

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
    /// Manage accounts.
    User {
        #[command(subcommand)]
        action: UserAction,
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
        /// Username (localpart).
        name: String,
    },
    /// Change an account's password, read like `add`.
    Passwd {
        /// Username (localpart).
        name: String,
    },
    /// Delete an account.
    Delete {
        /// Username (localpart).
        name: String,
    },
    /// List accounts.
    List,
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
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cfg = Config::load(cli.config.as_deref())?;
    init_logging(&cfg, cli.log_json);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        match cli.command {
            Command::Serve => serve(cfg).await,
            Command::User { action } => user(cfg, action).await,
            Command::Ctl { json, command } => ctl::run(&cfg, command, json).await,
        }
    })
}

fn init_logging(cfg: &Config, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    // Colours only for a terminal: in files and the journal escape codes are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json || cfg.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn open_store(cfg: &Config) -> anyhow::Result<Store> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
    let url = cfg.store_url();
    Store::open(&url)
        .await
        .with_context(|| format!("opening the store at {url}"))
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    let store = open_store(&cfg).await?;
    let tls = tls::load(&cfg)?;
    let core_cfg = cfg.core();
    let register = Arc::new(Register::new(core_cfg.registration.clone()));
    let accounts = Arc::new(wiring::accounts::StoreAccounts(store.clone()));
    let mut builder = CoreBuilder::new(core_cfg.clone(), accounts);
    for m in modules::defaults(&core_cfg, register.clone()) {
        builder = builder.module(m);
    }
    // RFC 6121 and the IM extensions (crates/im). The handle answers questions such as
    // "does this resource want node+notify" (XEP-0115) for PEP.
    let (im, im_modules) = rookery_im::modules(cfg.im.clone(), store.clone());
    // Publish-subscribe (crates/pubsub): the service at pubsub.<domain> and PEP. Hook order
    // comes from the priorities the modules declare (docs/architecture.md), not from here.
    let pubsub = wiring::pubsub::Pubsub::new(&cfg.pubsub, &cfg.domain, &store, im.clone())
        .map_err(|e| anyhow!("{e}"))?;
    for m in pubsub.modules() {
        builder = builder.module(m);
    }
    for m in im_modules {
        builder = builder.module(m);
    }
    let core = builder
        .build()
        .map_err(|e| anyhow!("invalid domain {:?}: {e}", cfg.domain))?;
    pubsub.attach(&core);
    // Component domains are routed (to the component, or bounced) before any client connects.
    let components = rookery_component::Components::new(core.clone(), cfg.component.clone())
        .context("component configuration")?;
    let ctx = Arc::new(C2sContext {
        core: core.clone(),
        tls: tls.starttls,
        direct_tls: tls.direct,
        config: cfg.c2s.clone(),
        register,
        limiter: AuthLimiter::new(
            cfg.c2s.auth_failures_per_ip_per_minute,
            cfg.c2s.auth_failures_per_account_per_minute,
        ),
        sm: Default::default(),
        connections: rookery_c2s::ConnectionCap::new(cfg.c2s.max_connections),
    });
    let mut tasks = Vec::new();
    let mut federation = None;
    // The admin listener first, so that `/health` answers while the others start; `/ready`
    // says 200 once they are all bound.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let s2s_slot: Arc<OnceLock<Arc<rookery_s2s::S2s>>> = Arc::default();
    let status = Arc::new(
        rookery_http::Status::new({
            let (core, components, s2s) = (core.clone(), components.clone(), s2s_slot.clone());
            move || connections(&core, &components, s2s.get())
        })
        // The client software as its XEP-0115 capabilities name it (the `node` of `node#ver`).
        .with_client_names(move |jid| {
            let key = im.caps_key(jid)?;
            Some(key.split('#').next().unwrap_or_default().to_string())
        }),
    );
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
    let web = web::start(&cfg, ctx.clone(), tls.https.clone(), &stop_rx).await?;
    if cfg.s2s.enabled {
        let s2s = rookery_s2s::S2s::setup(
            core.clone(),
            cfg.s2s.clone(),
            tls.certs,
            tls.key,
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
    status.set_listening();
    shutdown_signal().await;
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
    core.close_all(&shutdown);
    components.close_all(&shutdown);
    // Wait (bounded) for the client streams to end: bound sessions leave the registry, and
    // every connection task, negotiating ones included, drops its clone of `ctx` once its
    // stream error is written.
    wait_until(Duration::from_secs(5), || {
        core.session_count() == 0 && Arc::strong_count(&ctx) == 1
    })
    .await;
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
        s2s_incoming: s2s.map_or(0, |s| s.incoming_count()),
        s2s_outgoing: s2s.map_or(0, |s| s.outgoing_count()),
        components: components
            .domains()
            .into_iter()
            .filter(|d| components.route(d).is_some_and(|r| r.is_connected()))
            .count(),
    }
}

/// Polls `done` until it holds or `limit` has passed.
async fn wait_until(limit: Duration, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
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

async fn user(cfg: Config, action: UserAction) -> anyhow::Result<()> {
    let store = open_store(&cfg).await?;
    let accounts = store.accounts();
    let norm = |name: &str| {
        rookery_jid::normalize_local(name).map_err(|e| anyhow!("invalid username {name:?}: {e}"))
    };
    match action {
        UserAction::Add { name } => {
            let local = norm(&name)?;
            let creds = Credentials::derive(&read_password()?, DEFAULT_ITERATIONS)
                .map_err(|e| anyhow!("{e}"))?;
            match accounts.create(&cfg.domain, &local, &creds).await {
                Ok(()) => println!("created {local}@{}", cfg.domain),
                Err(StoreError::Conflict) => bail!("{local}@{} already exists", cfg.domain),
                Err(e) => return Err(e.into()),
            }
        }
        UserAction::Passwd { name } => {
            let local = norm(&name)?;
            let creds = Credentials::derive(&read_password()?, DEFAULT_ITERATIONS)
                .map_err(|e| anyhow!("{e}"))?;
            if !accounts
                .set_credentials(&cfg.domain, &local, &creds)
                .await?
            {
                bail!("no such user {local}@{}", cfg.domain);
            }
            println!("password changed for {local}@{}", cfg.domain);
        }
        UserAction::Delete { name } => {
            let local = norm(&name)?;
            // The same store deletion as in-band removal (roster, offline messages, PEP
            // nodes …). Contacts are not told: that needs the running server.
            if !store.delete_account(&cfg.domain, &local).await? {
                bail!("no such user {local}@{}", cfg.domain);
            }
            println!("deleted {local}@{}", cfg.domain);
        }
        UserAction::AddBulk {
            prefix,
            count,
            start,
            password,
        } => {
            let creds =
                Credentials::derive(&password, DEFAULT_ITERATIONS).map_err(|e| anyhow!("{e}"))?;
            let (mut created, mut existing) = (0u64, 0u64);
            for i in start..start.saturating_add(count) {
                let local = norm(&format!("{prefix}{i}"))?;
                match accounts.create(&cfg.domain, &local, &creds).await {
                    Ok(()) => created += 1,
                    Err(StoreError::Conflict) => existing += 1,
                    Err(e) => return Err(e.into()),
                }
            }
            println!(
                "created {created} accounts ({existing} existed) on {}",
                cfg.domain
            );
        }
        UserAction::List => {
            for u in accounts.list(&cfg.domain).await? {
                println!("{u}@{}", cfg.domain);
            }
        }
    }
    store.close().await;
    Ok(())
}
