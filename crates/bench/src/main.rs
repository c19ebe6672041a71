//! `rookery-bench`: an XMPP load generator in the spirit of Tsung, amoc and ProcessOne's
//! RTB, for Rookery or any other server on this machine.
//!
//! ```text
//! rookery-bench --port 25222 --domain localhost --insecure --clients 2000 \
//!     --login-rate 500 --duration 20 --server-pid $PID messages --rate 2000
//! ```
//!
//! Layout:
//! - [`client`]: one simulated client (TCP/TLS, SASL, bind, roster, presence, XEP-0198);
//! - [`scenario`]: the run machinery and one module per scenario (`connect`, `messages`,
//!   `presence`, `pubsub`, `muc`, `mam`, `churn`, `sse` for Server-Sent Events streams, and
//!   `register` to create accounts in band);
//! - [`stats`]: counters, the latency histogram and the progress line;
//! - [`procinfo`]: the server's RSS and CPU time from `/proc/PID`;
//! - [`target`]: the loopback-only rule, source addresses, the file-descriptor limit.
//!
//! Safety: targets outside 127.0.0.0/8 and ::1 are refused unless `--allow-remote` is
//! given; every run is bounded in clients and in time (`--max-time`) and stops by itself.

mod bosh;
mod client;
mod procinfo;
mod scenario;
mod stats;
mod target;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::{json, Value};

use crate::client::{ClientConfig, MechChoice, TlsMode, Transport};
use crate::scenario::{Common, Outcome, Run};
use crate::stats::Stats;

/// XMPP load generator: logs in simulated clients and measures a scenario.
///
/// Accounts `<user-prefix><first>` … must exist with one shared password (for Rookery:
/// `rookery user add-bulk --count N --password P`). Only loopback targets are allowed
/// unless --allow-remote is given.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Server address (an IP address or `localhost`; names only with --allow-remote).
    #[arg(long, default_value = "127.0.0.1", global = true)]
    host: String,
    /// Server port (5222 for STARTTLS, 5223 for direct TLS by convention).
    #[arg(long, default_value_t = 5222, global = true)]
    port: u16,
    /// Several ports of --host instead of --port (the nodes of a cluster on one machine):
    /// client i connects to the (i mod n)-th, so message partners (i, i ± 1) are on
    /// different nodes.
    #[arg(long, value_delimiter = ',', global = true)]
    ports: Vec<u16>,
    /// XMPP domain of the accounts.
    #[arg(long, default_value = "localhost", global = true)]
    domain: String,
    /// How the stream is secured.
    #[arg(long, value_enum, default_value_t = TlsMode::Starttls, global = true)]
    tls: TlsMode,
    /// How the XML travels: a TCP stream, WebSocket (RFC 7395; `ws://`) or BOSH (XEP-0206;
    /// `http://`); both web transports need --tls none and take the server's HTTP port as
    /// --port, e.g. 5280.
    #[arg(long, value_enum, default_value_t = Transport::Tcp, global = true)]
    transport: Transport,
    /// The WebSocket endpoint's path (--transport websocket).
    #[arg(long, default_value = "/xmpp-websocket", global = true)]
    ws_path: String,
    /// The BOSH endpoint's path (--transport bosh).
    #[arg(long, default_value = "/http-bind", global = true)]
    bosh_path: String,
    /// Accept any server certificate (test servers with self-signed certificates).
    #[arg(long, global = true)]
    insecure: bool,
    /// PEM file of the CA certificates to trust (without --insecure).
    #[arg(long, global = true)]
    ca_file: Option<PathBuf>,
    /// SASL mechanism.
    #[arg(long, value_enum, default_value_t = MechChoice::Auto, global = true)]
    mechanism: MechChoice,
    /// Accounts are `<user-prefix><n>`.
    #[arg(long, default_value = "user", global = true)]
    user_prefix: String,
    /// Number of the first account.
    #[arg(long, default_value_t = 1, global = true)]
    first: usize,
    /// Password of every account.
    #[arg(long, default_value = "password", global = true)]
    password: String,
    /// Resources are `<resource-prefix><n>`.
    #[arg(long, default_value = "bench", global = true)]
    resource_prefix: String,
    /// Simulated clients.
    #[arg(long, short = 'n', default_value_t = 100, global = true)]
    clients: usize,
    /// Logins started per second.
    #[arg(long, default_value_t = 200.0, global = true)]
    login_rate: f64,
    /// Logins in flight at once (the rest wait).
    #[arg(long, default_value_t = 256, global = true)]
    max_inflight: usize,
    /// Seconds of the measured phase (after every client has logged in).
    #[arg(long, default_value_t = 10.0, global = true)]
    duration: f64,
    /// Hard limit on the whole run, in seconds.
    #[arg(long, default_value_t = 600.0, global = true)]
    max_time: f64,
    /// Seconds one login may take.
    #[arg(long, default_value_t = 30.0, global = true)]
    login_timeout: f64,
    /// Random seed (send phases, fillers, churn order).
    #[arg(long, default_value_t = 1, global = true)]
    seed: u64,
    /// Fetch the roster after binding (always on in the `presence` scenario).
    #[arg(long, global = true)]
    roster: bool,
    /// Do not send initial presence.
    #[arg(long, global = true)]
    no_presence: bool,
    /// Run the client's PBKDF2 for every SCRAM login instead of reusing the result for
    /// accounts that share password, salt and iteration count.
    #[arg(long, global = true)]
    no_scram_cache: bool,
    /// How many SCRAM results the generator keeps: a few serve accounts that share one salt
    /// (`rookery user add-bulk`); with one salt per account (other servers' accounts), at
    /// least as many as clients let every login after an account's first reuse its result, as
    /// a real client that stores its SCRAM keys does (`churn` logs each account in again).
    #[arg(long, global = true, default_value_t = 64)]
    scram_cache_size: usize,
    /// Enable stream management (XEP-0198) when the server offers it.
    #[arg(long, global = true)]
    sm: bool,
    /// Log in with SASL2 + Bind2 + FAST (XEP-0388/0386/0484); with `churn --resume`,
    /// reconnections authenticate with the token and resume inline.
    #[arg(long, global = true)]
    fast: bool,
    /// Loopback source addresses to spread connections over (0: one per 20,000 clients).
    #[arg(long, default_value_t = 0, global = true)]
    source_addrs: u32,
    /// PID of the server, to report its RSS and CPU time from /proc; several
    /// comma-separated (the nodes of a cluster) are summed.
    #[arg(long, value_delimiter = ',', global = true)]
    server_pid: Vec<u32>,
    /// Write the JSON summary to this file (`-` for stdout, the default when absent).
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// No progress line.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Allow targets outside 127.0.0.0/8 and ::1. Only ever point this at servers you run.
    #[arg(long, global = true)]
    allow_remote: bool,
    /// A label copied into the JSON summary (e.g. the server's name).
    #[arg(long, default_value = "", global = true)]
    label: String,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// N sessions log in at the login rate, then stay idle (memory per idle session).
    Connect,
    /// Pairs exchange chat messages at a fixed total rate (throughput, latency).
    Messages(scenario::messages::Args),
    /// Contacts with rosters of size R broadcast presence (fan-out latency).
    Presence(scenario::presence::Args),
    /// One pubsub node, N−1 subscribers, one publisher (notification fan-out).
    Pubsub(scenario::pubsub::Args),
    /// Each client asks its archive for the last page with one partner (XEP-0313 queries).
    Mam(scenario::mam::Args),
    /// One MUC room, N occupants, one of them sending groupchat (room fan-out).
    Muc(scenario::muc::Args),
    /// Sessions disconnect and reconnect (or resume) at a fixed rate.
    Churn(scenario::churn::Args),
    /// Creates the accounts by in-band registration (XEP-0077), at the login rate.
    Register,
    /// N Server-Sent Events streams on one node, one XMPP publisher (docs/http.md).
    Sse(scenario::sse::Args),
}

impl Scenario {
    fn name(&self) -> &'static str {
        match self {
            Scenario::Connect => "connect",
            Scenario::Messages(_) => "messages",
            Scenario::Presence(_) => "presence",
            Scenario::Pubsub(_) => "pubsub",
            Scenario::Muc(_) => "muc",
            Scenario::Mam(_) => "mam",
            Scenario::Churn(_) => "churn",
            Scenario::Register => "register",
            Scenario::Sse(_) => "sse",
        }
    }

    fn params(&self) -> Value {
        match self {
            Scenario::Connect | Scenario::Register => json!({}),
            Scenario::Messages(a) => json!({"rate": a.rate, "size": a.size, "to_bare": a.to_bare}),
            Scenario::Presence(a) => {
                json!({"roster_size": a.roster_size, "rate": a.rate, "setup": !a.no_setup})
            }
            Scenario::Pubsub(a) => json!({"service": a.service, "node": a.node, "rate": a.rate}),
            Scenario::Muc(a) => json!({"service": a.service, "room": a.room, "rate": a.rate}),
            Scenario::Mam(a) => {
                json!({"rate": a.rate, "page": a.page, "accounts": a.accounts, "partners": a.partners})
            }
            Scenario::Churn(a) => json!({"rate": a.rate, "resume": a.resume}),
            Scenario::Sse(a) => json!({"node": a.node, "rate": a.rate, "http_port": a.http_port}),
        }
    }
}

fn main() {
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
        .and_then(|rt| rt.block_on(run(cli)));
    if let Err(e) = result {
        eprintln!("rookery-bench: {e:#}");
        std::process::exit(2);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let ports = if cli.ports.is_empty() {
        vec![cli.port]
    } else {
        cli.ports.clone()
    };
    let mut targets = Vec::with_capacity(ports.len());
    for port in ports {
        targets.push(target::resolve(&cli.host, port, cli.allow_remote).await?);
    }
    let target = targets
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if cli.transport != Transport::Tcp && cli.tls != TlsMode::None {
        anyhow::bail!("--transport websocket|bosh speak ws:// and http:// only: add --tls none");
    }
    let nofile = target::raise_nofile(cli.clients as u64 + 256);
    if nofile < cli.clients as u64 + 64 {
        eprintln!(
            "warning: the file-descriptor limit is {nofile}, below {} clients; raise it \
             (ulimit -n) or run as root",
            cli.clients
        );
    }
    let sources = if cli.source_addrs == 0 {
        target::sources_needed(cli.clients)
    } else {
        cli.source_addrs
    };
    // Without TLS no certificate is ever checked, so neither --insecure nor --ca-file is
    // needed; the configurations are built anyway and stay unused.
    let no_tls = cli.tls == TlsMode::None;
    let (tls_starttls, tls_direct) =
        client::tls_configs(cli.insecure || no_tls, cli.ca_file.as_deref())?;
    let resume = matches!(&cli.scenario, Scenario::Churn(a) if a.resume);
    let cfg = ClientConfig {
        targets,
        sources,
        domain: cli.domain.clone(),
        tls: cli.tls,
        transport: cli.transport,
        ws_path: cli.ws_path.clone(),
        bosh_path: cli.bosh_path.clone(),
        tls_starttls,
        tls_direct,
        mechanism: cli.mechanism,
        user_prefix: cli.user_prefix.clone(),
        first: cli.first,
        password: cli.password.clone(),
        resource_prefix: cli.resource_prefix.clone(),
        // The presence scenario needs interested resources (RFC 6121 §2.1.6): servers deliver
        // subscription approvals only to resources that requested the roster (§3.1.6), and
        // Rookery its requests too (§3.1.3); fetched before initial presence, so the requests
        // stored while a client was offline come with it.
        roster: cli.roster || matches!(&cli.scenario, Scenario::Presence(_)),
        presence: !cli.no_presence,
        sm: cli.sm || resume,
        fast: cli.fast,
        login_timeout: Duration::from_secs_f64(cli.login_timeout.max(0.1)),
        // A few entries are enough for shared salts; with one salt per account (servers
        // that salt each account) every login misses unless the cache holds every account,
        // and the bound keeps memory flat.
        scram_cache: (!cli.no_scram_cache)
            .then(|| Arc::new(rookery_sasl::SaltedPasswordCache::new(cli.scram_cache_size))),
    };
    let common = Common {
        clients: cli.clients,
        login_rate: cli.login_rate,
        max_inflight: cli.max_inflight,
        duration: Duration::from_secs_f64(cli.duration.max(0.0)),
        seed: cli.seed,
        server_pids: cli.server_pid.clone(),
    };
    let stats = Arc::new(Stats::default());
    let run = Run::new(cfg, common, stats.clone());
    let progress = (!cli.quiet).then(|| stats::progress(stats.clone(), cli.server_pid.clone()));
    let server0 = run.sample_server("start");
    eprintln!(
        "rookery-bench: {} against {target} ({:?}), {} clients at {}/s, {} s, seed {}",
        cli.scenario.name(),
        cli.tls,
        cli.clients,
        cli.login_rate,
        cli.duration,
        cli.seed
    );
    let work = async {
        match &cli.scenario {
            Scenario::Connect => scenario::connect::run(&run).await,
            Scenario::Messages(a) => scenario::messages::run(&run, a).await,
            Scenario::Presence(a) => scenario::presence::run(&run, a).await,
            Scenario::Pubsub(a) => scenario::pubsub::run(&run, a).await,
            Scenario::Muc(a) => scenario::muc::run(&run, a).await,
            Scenario::Mam(a) => scenario::mam::run(&run, a).await,
            Scenario::Churn(a) => scenario::churn::run(&run, a).await,
            Scenario::Register => scenario::register::run(&run).await,
            Scenario::Sse(a) => scenario::sse::run(&run, a).await,
        }
    };
    let max_time = Duration::from_secs_f64(cli.max_time.max(1.0));
    let outcome = match tokio::time::timeout(max_time, work).await {
        Ok(o) => o,
        Err(_) => {
            run.set_phase(scenario::Phase::Stop);
            stats.error("run:max-time-reached");
            // Give clients a moment to close their streams.
            tokio::time::sleep(Duration::from_secs(2)).await;
            Outcome::default()
        }
    };
    let server1 = run.sample_server("final");
    if let Some(p) = progress {
        p.abort();
    }
    let report = report(&cli, &run, &outcome, server0, server1);
    print_human(&cli, &run, &outcome, &report);
    let text = serde_json::to_string_pretty(&report)?;
    match cli.json.as_deref() {
        Some(p) if p.as_os_str() != "-" => {
            std::fs::write(p, text + "\n").with_context(|| format!("writing {}", p.display()))?
        }
        _ => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{text}")?;
        }
    }
    Ok(())
}

fn report(
    cli: &Cli,
    run: &Run,
    outcome: &Outcome,
    server0: Option<procinfo::Sample>,
    server1: Option<procinfo::Sample>,
) -> Value {
    let samples: serde_json::Map<String, Value> = run
        .server_samples()
        .into_iter()
        .map(|(k, s)| (k, s.json()))
        .collect();
    let server = (!cli.server_pid.is_empty()).then(|| {
        json!({
            "pid": cli.server_pid,
            "samples": samples,
            "cpu_s_used": match (server0, server1) {
                (Some(a), Some(b)) => Some(scenario::round2(b.cpu_s - a.cpu_s)),
                _ => None,
            },
        })
    });
    json!({
        "tool": "rookery-bench",
        "version": env!("CARGO_PKG_VERSION"),
        "label": cli.label,
        "scenario": cli.scenario.name(),
        "params": cli.scenario.params(),
        "target": run.cfg.targets.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        "domain": cli.domain,
        "tls": format!("{:?}", cli.tls).to_lowercase(),
        "mechanism": format!("{:?}", cli.mechanism),
        "clients": cli.clients,
        "login_rate": cli.login_rate,
        "duration_s": cli.duration,
        "seed": cli.seed,
        "elapsed_s": scenario::round2(run.started.elapsed().as_secs_f64()),
        "results": Value::Object(outcome.json.clone()),
        "errors": run.stats.errors(),
        "server": server,
    })
}

fn print_human(cli: &Cli, run: &Run, outcome: &Outcome, report: &Value) {
    let mut out = String::new();
    out.push_str(&format!(
        "== rookery-bench {} {}({} clients, {:.1} s)\n",
        cli.scenario.name(),
        if cli.label.is_empty() {
            String::new()
        } else {
            format!("[{}] ", cli.label)
        },
        cli.clients,
        run.started.elapsed().as_secs_f64()
    ));
    for l in &outcome.lines {
        out.push_str(&format!("  {l}\n"));
    }
    let errors = run.stats.errors();
    if errors.is_empty() {
        out.push_str("  errors: none\n");
    } else {
        out.push_str("  errors:\n");
        for (k, v) in errors {
            out.push_str(&format!("    {k}: {v}\n"));
        }
    }
    if let Some(s) = report.get("server").filter(|s| !s.is_null()) {
        let samples = s.get("samples").and_then(Value::as_object);
        if let Some(samples) = samples {
            let line: Vec<String> = samples
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{k} {} KiB",
                        v.get("rss_kb").and_then(Value::as_u64).unwrap_or(0)
                    )
                })
                .collect();
            out.push_str(&format!("  server RSS: {}\n", line.join(", ")));
        }
        if let Some(cpu) = s.get("cpu_s_used").and_then(Value::as_f64) {
            out.push_str(&format!("  server CPU time during the run: {cpu:.2} s\n"));
        }
    }
    // The human summary goes to stderr when the JSON goes to stdout, so stdout stays JSON.
    if cli.json.as_deref().is_some_and(|p| p.as_os_str() != "-") {
        print!("{out}");
    } else {
        eprint!("{out}");
    }
}
