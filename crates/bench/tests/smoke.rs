//! Smoke tests: the real server binary on an ephemeral loopback port, 20 accounts created
//! with `rookery user add-bulk`, then `rookery-bench messages` with 20 clients for two
//! seconds over STARTTLS, `rookery-bench presence` with 20 clients and rosters of 4 (the
//! subscription setup must complete), and `rookery-bench connect` without TLS against a server
//! with `[c2s] require_encryption = false`. They check that the tool works end to end (logins,
//! delivery, JSON summary, server and generator memory sampling), never how fast anything is.
//!
//! The server binary is `$ROOKERY_BIN`, else `rookery` beside this package's binary in the
//! target directory (built by `cargo build --workspace`), else it is built with `$CARGO`.
//! Without any of these the test says so and passes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_rookery-bench");

fn server_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ROOKERY_BIN") {
        return Some(PathBuf::from(p));
    }
    let sibling =
        Path::new(BENCH).with_file_name(format!("rookery{}", std::env::consts::EXE_SUFFIX));
    if sibling.exists() {
        return Some(sibling);
    }
    let cargo = std::env::var_os("CARGO")?;
    let release = BENCH.contains("/release/");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-q", "-p", "rookery"]);
    if release {
        cmd.arg("--release");
    }
    let ok = cmd.status().map(|s| s.success()).unwrap_or(false);
    (ok && sibling.exists()).then_some(sibling)
}

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the server on port 0 and returns it with the port it bound (from its JSON log).
fn start_server(bin: &Path, config: &Path) -> (Server, u16) {
    let mut child = Command::new(bin)
        .args(["--log-json", "-c"])
        .arg(config)
        .arg("serve")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the server");
    let stderr = child.stderr.take().unwrap();
    let server = Server(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let fields = &v["fields"];
            if fields["message"] == "listening for clients" {
                if let Some(port) = fields["addr"]
                    .as_str()
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| p.parse::<u16>().ok())
                {
                    let _ = tx.send(port);
                }
            }
        }
    });
    let port = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the server did not report its port");
    (server, port)
}

/// Writes a config (plus `extra` TOML) into `dir`, creates the 20 accounts and starts the
/// server; `None` when there is no server binary to test against.
fn server_with_accounts(dir: &Path, extra: &str) -> Option<(Server, u16)> {
    server_with_web(dir, "", extra)
}

/// [`server_with_accounts`] with the public web listener on `http` (`""`: off).
fn server_with_web(dir: &Path, http: &str, extra: &str) -> Option<(Server, u16)> {
    let Some(bin) = server_binary() else {
        eprintln!("SKIP: no server binary (set ROOKERY_BIN or run `cargo build -p rookery`)");
        return None;
    };
    let config = dir.join("rookery.toml");
    std::fs::write(
        &config,
        format!(
            "domain = \"localhost\"\ndata_dir = \"{}\"\n[listen]\nc2s = \"127.0.0.1:0\"\nc2s_direct_tls = \"\"\nadmin = \"\"\nhttp = \"{http}\"\nhttps = \"\"\n{extra}",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let out = Command::new(&bin)
        .arg("-c")
        .arg(&config)
        .args([
            "user",
            "add-bulk",
            "--count",
            "20",
            "--password",
            "smoke-pass",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "add-bulk: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(start_server(&bin, &config))
}

/// Runs rookery-bench against `server` with 20 clients for 2 s and the given options and
/// scenario (`args`), asserts it succeeded, and returns its stdout and JSON summary.
fn run_bench(dir: &Path, server: &Server, port: u16, args: &[&str]) -> (String, Value) {
    let json = dir.join("summary.json");
    let out = Command::new(BENCH)
        .args(["--port", &port.to_string(), "--password", "smoke-pass"])
        .args(["-n", "20", "--login-rate", "100", "--duration", "2"])
        .args(["--max-time", "120", "-q"])
        .args(["--server-pid", &server.0.id().to_string(), "--json"])
        .arg(&json)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "rookery-bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (stdout, v)
}

#[test]
fn messages_scenario_against_the_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let Some((server, port)) = server_with_accounts(dir.path(), "") else {
        return;
    };
    let (stdout, v) = run_bench(
        dir.path(),
        &server,
        port,
        &["--insecure", "messages", "--rate", "100"],
    );
    assert!(stdout.contains("== rookery-bench messages"), "{stdout}");
    assert_eq!(v["scenario"], "messages");
    assert_eq!(v["results"]["login"]["ok"], 20, "{v:#}");
    assert!(
        v["results"]["messages"]["sent"].as_u64().unwrap() > 0,
        "{v:#}"
    );
    assert!(
        v["results"]["messages"]["received"].as_u64().unwrap() > 0,
        "{v:#}"
    );
    assert!(
        v["results"]["messages"]["latency_ms"]["count"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(v["errors"], serde_json::json!({}), "{v:#}");
    assert!(v["server"]["samples"]["start"]["rss_kb"].as_u64().unwrap() > 0);
    drop(server);
}

#[test]
fn presence_scenario_sets_up_subscriptions_and_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let Some((server, port)) = server_with_accounts(dir.path(), "") else {
        return;
    };
    // No `--roster`: the scenario must make its clients interested resources by itself.
    let (_, v) = run_bench(
        dir.path(),
        &server,
        port,
        &[
            "--insecure",
            "--mechanism",
            "scram-sha1",
            "presence",
            "--roster-size",
            "4",
            "--rate",
            "20",
        ],
    );
    assert_eq!(v["scenario"], "presence");
    assert_eq!(v["results"]["login"]["ok"], 20, "{v:#}");
    let setup = &v["results"]["setup"];
    assert_eq!(setup["expected"], 80, "{v:#}");
    assert!(
        setup["approvals"].as_u64().unwrap() >= 80,
        "subscription setup incomplete: {v:#}"
    );
    let p = &v["results"]["presence"];
    assert_eq!(p["roster_size"], 4, "{v:#}");
    let updates = p["updates"].as_u64().unwrap();
    assert!(updates > 0, "{v:#}");
    // Every contact gets every update (a few in flight at the end may be missed).
    assert!(
        p["deliveries"].as_u64().unwrap() * 10 >= updates * 4 * 9,
        "{v:#}"
    );
    assert!(p["latency_ms"]["count"].as_u64().unwrap() > 0, "{v:#}");
    assert_eq!(v["errors"], serde_json::json!({}), "{v:#}");
    drop(server);
}

/// `--transport websocket`: the same logins and messages over RFC 7395.
#[test]
fn messages_over_websocket() {
    messages_over("websocket");
}

/// `--transport bosh`: the same logins and messages over XEP-0206.
#[test]
fn messages_over_bosh() {
    messages_over("bosh");
}

/// The messages scenario over a web transport of the public HTTP listener.
fn messages_over(transport: &str) {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let http = format!("127.0.0.1:{port}");
    let Some((server, _)) = server_with_web(dir.path(), &http, "") else {
        return;
    };
    let (_, v) = run_bench(
        dir.path(),
        &server,
        port,
        &[
            "--transport",
            transport,
            "--tls",
            "none",
            "messages",
            "--rate",
            "100",
        ],
    );
    assert_eq!(v["results"]["login"]["ok"], 20, "{v:#}");
    assert!(
        v["results"]["messages"]["received"].as_u64().unwrap() > 0,
        "{v:#}"
    );
    assert_eq!(v["errors"], serde_json::json!({}), "{v:#}");
    drop(server);
}

#[test]
fn connect_without_tls_reports_memory_per_client() {
    let dir = tempfile::tempdir().unwrap();
    let Some((server, port)) =
        server_with_accounts(dir.path(), "[c2s]\nrequire_encryption = false\n")
    else {
        return;
    };
    let (_, v) = run_bench(
        dir.path(),
        &server,
        port,
        &["--tls", "none", "--mechanism", "scram-sha256", "connect"],
    );
    assert_eq!(v["tls"], "none");
    assert_eq!(v["results"]["login"]["ok"], 20, "{v:#}");
    assert_eq!(v["errors"], serde_json::json!({}), "{v:#}");
    assert_eq!(v["results"]["idle_memory"]["sessions"], 20, "{v:#}");
    assert_eq!(v["results"]["generator"]["clients"], 20, "{v:#}");
    assert!(v["results"]["generator"]["rss_kb_idle"].as_u64().unwrap() > 0);
    drop(server);
}

#[test]
fn refuses_targets_off_loopback() {
    let out = Command::new(BENCH)
        .args(["--host", "192.0.2.1", "--insecure", "connect"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-remote"));
}
