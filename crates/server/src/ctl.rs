//! `rookery ctl …`: the admin CLI for a running server. Every subcommand is one call to the
//! admin API (`docs/openapi.yaml`) on `[listen] admin`, with the token of `[admin] token` or
//! `<data_dir>/admin.token`, read from the same configuration file as `rookery serve`.
//! Output is a readable table, or the API's JSON with `--json` (for scripts).
//!
//! The client is hyper-util's: the server already builds hyper for its own HTTP listeners,
//! so the CLI adds no dependency, and the admin listener is plain HTTP on loopback, so a
//! client with its own TLS stack and connection pool (`reqwest`) would bring nothing.

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use clap::Subcommand;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use crate::config::Config;

/// The `ctl` subcommands.
#[derive(Subcommand)]
pub enum CtlCommand {
    /// Version, uptime, readiness, accounts and open connections.
    Status,
    /// Online sessions: JID, address, transport, client.
    Sessions,
    /// Disconnects a session (it gets a `policy-violation` stream error with the reason).
    Kick {
        /// The session's full JID (`user@domain/resource`).
        jid: String,
        /// Shown to the user in the stream error.
        #[arg(long, short)]
        reason: Option<String>,
    },
    /// Sends a message to every online session.
    Announce {
        /// The message text.
        body: String,
        /// An optional subject line.
        #[arg(long, short)]
        subject: Option<String>,
    },
    /// Counters of the running server (accounts, connections by kind, uptime).
    Stats,
    /// Server-to-server streams, outgoing and incoming, by remote domain; `close DOMAIN`
    /// ends every stream with one server.
    S2s {
        #[command(subcommand)]
        action: Option<CtlS2s>,
    },
    /// Declared components and whether each is connected; `disconnect DOMAIN` ends one.
    Components {
        #[command(subcommand)]
        action: Option<CtlComponents>,
    },
    /// Nodes of the pubsub service; `delete NODE` removes one (subscribers are told).
    Pubsub {
        /// Another host's service (`pubsub.example.net`); the primary's without it.
        #[arg(long)]
        service: Option<String>,
        #[command(subcommand)]
        action: Option<CtlPubsub>,
    },
    /// Reloads the configuration and certificate (as SIGHUP does); a broken configuration
    /// is refused and the running one kept.
    Reload,
    /// Manages accounts on the running server.
    Users {
        #[command(subcommand)]
        action: CtlUsers,
    },
}

/// `rookery ctl s2s …`.
#[derive(Subcommand)]
pub enum CtlS2s {
    /// Lists them (the default).
    List,
    /// Closes every stream with a remote server, both directions (`policy-violation`); a
    /// stanza for it later opens a new one, and it may connect again.
    Close {
        /// The remote server's domain.
        domain: String,
    },
}

/// `rookery ctl components …`.
#[derive(Subcommand)]
pub enum CtlComponents {
    /// Lists them (the default).
    List,
    /// Disconnects the component serving a domain (`policy-violation`); it may reconnect.
    Disconnect {
        /// The component's domain.
        domain: String,
    },
}

/// `rookery ctl pubsub …`.
#[derive(Subcommand)]
pub enum CtlPubsub {
    /// Lists the service's nodes (the default).
    Nodes,
    /// Deletes a node and its items; subscribers get the delete notification.
    Delete {
        /// The node's name.
        node: String,
    },
}

/// `rookery ctl users …`.
#[derive(Subcommand)]
pub enum CtlUsers {
    /// Lists accounts.
    List,
    /// Creates an account; the password is read from stdin (or prompted for).
    Add {
        /// Username or bare JID.
        name: String,
    },
    /// Deletes an account: its sessions are closed and its contacts told, as in-band removal.
    Delete {
        /// Username or bare JID.
        name: String,
    },
    /// Changes a password, read like `add`.
    Passwd {
        /// Username or bare JID.
        name: String,
    },
}

/// The admin API of one server.
struct Api {
    base: String,
    token: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Api {
    fn new(cfg: &Config) -> anyhow::Result<Api> {
        let addr = cfg.listen.admin.trim();
        if addr.is_empty() {
            bail!("the admin listener is disabled ([listen] admin = \"\")");
        }
        // A wildcard address is reached on loopback.
        let addr = addr
            .replace("0.0.0.0:", "127.0.0.1:")
            .replace("[::]:", "[::1]:");
        Ok(Api {
            base: format!("http://{addr}/api/v1"),
            token: crate::admin::token(cfg, false)?,
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    /// One request; the JSON answer (`null` for an empty one) on success, the API's error
    /// message otherwise.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let uri = format!("{}{path}", self.base);
        let mut req = Request::builder()
            .method(method)
            .uri(&uri)
            .header(AUTHORIZATION, format!("Bearer {}", self.token));
        let payload = match body {
            Some(v) => {
                req = req.header(CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(&v)?)
            }
            None => Bytes::new(),
        };
        let resp = self
            .client
            .request(req.body(Full::new(payload))?)
            .await
            .with_context(|| {
                format!("cannot reach the admin API at {uri} (is the server running?)")
            })?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        if status.is_success() {
            return Ok(value);
        }
        let message = value
            .get("error")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| status.to_string());
        if status == StatusCode::UNAUTHORIZED {
            bail!("{message}: check [admin] token or <data_dir>/admin.token");
        }
        Err(anyhow!("{message}"))
    }
}

/// Percent-encodes a path segment (JIDs may hold `/`, `?`, `#`, `%` and spaces).
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Runs one `ctl` subcommand.
pub async fn run(cfg: &Config, command: CtlCommand, as_json: bool) -> anyhow::Result<()> {
    let api = Api::new(cfg)?;
    let (value, table) = match command {
        CtlCommand::Status => {
            let stats = api.call(Method::GET, "/stats", None).await?;
            let rows = [
                ("domain", "/domain"),
                ("version", "/version"),
                ("uptime (s)", "/uptime_secs"),
                ("accounts", "/users"),
                ("client sessions", "/connections/c2s"),
                ("s2s incoming", "/connections/s2s_incoming"),
                ("s2s outgoing", "/connections/s2s_outgoing"),
                ("components", "/connections/components"),
            ]
            .iter()
            .chain(if stats.get("cluster").is_some() {
                &[
                    ("cluster node", "/cluster/node"),
                    ("cluster bus connected", "/cluster/connected"),
                    ("other nodes", "/cluster/peers"),
                    ("sessions on other nodes", "/cluster/remote_sessions"),
                ][..]
            } else {
                &[]
            })
            .map(|(k, ptr)| vec![k.to_string(), field(&stats, ptr)])
            .collect();
            (stats, Some((vec!["", ""], rows)))
        }
        CtlCommand::Sessions => {
            let v = api.call(Method::GET, "/sessions", None).await?;
            let rows = list(&v, "sessions")
                .map(|s| {
                    ["jid", "ip", "transport", "client"]
                        .map(|k| text(&s[k]))
                        .to_vec()
                })
                .collect();
            (v, Some((vec!["JID", "IP", "TRANSPORT", "CLIENT"], rows)))
        }
        CtlCommand::Kick { jid, reason } => {
            let mut path = format!("/sessions/{}", segment(&jid));
            if let Some(r) = reason {
                path.push_str(&format!("?reason={}", segment(&r)));
            }
            api.call(Method::DELETE, &path, None).await?;
            println_unless(as_json, format!("disconnected {jid}"));
            (json!({ "kicked": jid }), None)
        }
        CtlCommand::Announce { body, subject } => {
            let v = api
                .call(
                    Method::POST,
                    "/announce",
                    Some(json!({ "body": body, "subject": subject })),
                )
                .await?;
            println_unless(as_json, format!("sent to {} sessions", field(&v, "/sent")));
            (v, None)
        }
        CtlCommand::Stats => {
            let v = api.call(Method::GET, "/stats", None).await?;
            let mut rows = Vec::new();
            flatten("", &v, &mut rows);
            (v, Some((vec!["", ""], rows)))
        }
        CtlCommand::S2s { action } => match action.unwrap_or(CtlS2s::List) {
            CtlS2s::List => {
                let v = api.call(Method::GET, "/s2s", None).await?;
                let outgoing = list(&v, "outgoing").map(|s| {
                    let [local, remote, auth] = ["local", "remote", "auth"].map(|k| text(&s[k]));
                    vec!["out".into(), local, remote, auth]
                });
                let incoming = list(&v, "incoming_streams").map(|s| {
                    let remote: Vec<String> = s["remote"]
                        .as_array()
                        .map(|a| a.iter().map(text).collect())
                        .unwrap_or_default();
                    vec!["in".into(), String::new(), remote.join(" "), String::new()]
                });
                let rows = outgoing.chain(incoming).collect();
                println_unless(
                    as_json,
                    format!("incoming connections: {}", field(&v, "/incoming")),
                );
                (
                    v,
                    Some((vec!["DIRECTION", "LOCAL", "REMOTE", "AUTH"], rows)),
                )
            }
            CtlS2s::Close { domain } => {
                let path = format!("/s2s/{}", segment(&domain));
                let v = api.call(Method::DELETE, &path, None).await?;
                println_unless(
                    as_json,
                    format!("closed {} streams with {domain}", field(&v, "/closed")),
                );
                (v, None)
            }
        },
        CtlCommand::Components { action } => match action.unwrap_or(CtlComponents::List) {
            CtlComponents::List => {
                let v = api.call(Method::GET, "/components", None).await?;
                let rows = list(&v, "components")
                    .map(|c| {
                        ["domain", "name", "connected"]
                            .map(|k| text(&c[k]))
                            .to_vec()
                    })
                    .collect();
                (v, Some((vec!["DOMAIN", "NAME", "CONNECTED"], rows)))
            }
            CtlComponents::Disconnect { domain } => {
                let path = format!("/components/{}", segment(&domain));
                api.call(Method::DELETE, &path, None).await?;
                println_unless(as_json, format!("disconnected {domain}"));
                (json!({ "disconnected": domain }), None)
            }
        },
        CtlCommand::Pubsub { service, action } => {
            let query = service
                .map(|s| format!("?service={}", segment(&s)))
                .unwrap_or_default();
            match action.unwrap_or(CtlPubsub::Nodes) {
                CtlPubsub::Nodes => {
                    let v = api
                        .call(Method::GET, &format!("/pubsub/nodes{query}"), None)
                        .await?;
                    let rows = list(&v, "nodes")
                        .map(|n| ["node", "title"].map(|k| text(&n[k])).to_vec())
                        .collect();
                    (v, Some((vec!["NODE", "TITLE"], rows)))
                }
                CtlPubsub::Delete { node } => {
                    let path = format!("/pubsub/nodes/{}{query}", segment(&node));
                    api.call(Method::DELETE, &path, None).await?;
                    println_unless(as_json, format!("deleted node {node}"));
                    (json!({ "deleted": node }), None)
                }
            }
        }
        CtlCommand::Reload => {
            let v = api.call(Method::POST, "/reload", None).await?;
            let rows = [
                ("certificate (sha256)", "/certificate_sha256"),
                ("components added", "/components_added"),
                ("components removed", "/components_removed"),
                ("changed, needs a restart", "/restart_needed"),
            ]
            .iter()
            .map(|(k, ptr)| vec![k.to_string(), field(&v, ptr)])
            .collect();
            (v, Some((vec!["", ""], rows)))
        }
        CtlCommand::Users { action } => users(&api, action, as_json).await?,
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else if let Some((headers, rows)) = table {
        print!("{}", format_table(&headers, &rows));
    }
    Ok(())
}

type Table = (Vec<&'static str>, Vec<Vec<String>>);

async fn users(
    api: &Api,
    action: CtlUsers,
    as_json: bool,
) -> anyhow::Result<(Value, Option<Table>)> {
    Ok(match action {
        CtlUsers::List => {
            let v = api.call(Method::GET, "/users", None).await?;
            let rows = list(&v, "users").map(|u| vec![text(u)]).collect();
            (v, Some((vec!["JID"], rows)))
        }
        CtlUsers::Add { name } => {
            let password = crate::read_password()?;
            let v = api
                .call(
                    Method::POST,
                    "/users",
                    Some(json!({ "username": name, "password": password })),
                )
                .await?;
            println_unless(as_json, format!("created {}", field(&v, "/jid")));
            (v, None)
        }
        CtlUsers::Delete { name } => {
            api.call(Method::DELETE, &format!("/users/{}", segment(&name)), None)
                .await?;
            println_unless(as_json, format!("deleted {name}"));
            (json!({ "deleted": name }), None)
        }
        CtlUsers::Passwd { name } => {
            let password = crate::read_password()?;
            let path = format!("/users/{}/password", segment(&name));
            api.call(Method::PUT, &path, Some(json!({ "password": password })))
                .await?;
            println_unless(as_json, format!("password changed for {name}"));
            (json!({ "changed": name }), None)
        }
    })
}

fn println_unless(as_json: bool, line: String) {
    if !as_json {
        println!("{line}");
    }
}

/// The elements of the array `v[key]`.
fn list<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

/// Every scalar of `v` as a `path value` row (`connections.c2s  3`).
fn flatten(prefix: &str, v: &Value, rows: &mut Vec<Vec<String>>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, child, rows);
            }
        }
        other => rows.push(vec![prefix.to_string(), text(other)]),
    }
}

/// The value at a JSON pointer (RFC 6901) as table text.
fn field(v: &Value, pointer: &str) -> String {
    v.pointer(pointer).map_or_else(|| "-".into(), text)
}

/// A JSON value as table text: strings without quotes, `-` for null.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Left-aligned columns two spaces apart; no header line when every header is empty.
fn format_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (cell, w) in cells.zip(&widths) {
            out.push_str(&format!("{cell:<w$}  "));
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let mut out = String::new();
    if headers.iter().any(|h| !h.is_empty()) {
        out.push_str(&line(&mut headers.iter().copied()));
    }
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let rows = vec![
            vec!["alice@localhost/phone".to_string(), "127.0.0.1".to_string()],
            vec!["bob@localhost/x".to_string(), "-".to_string()],
        ];
        assert_eq!(
            format_table(&["JID", "IP"], &rows),
            "JID                    IP\n\
             alice@localhost/phone  127.0.0.1\n\
             bob@localhost/x        -\n"
        );
        assert_eq!(
            format_table(&["", ""], &[vec!["a".into(), "1".into()]]),
            "a  1\n"
        );
    }

    #[test]
    fn stats_flatten_to_rows() {
        let mut rows = Vec::new();
        flatten(
            "",
            &json!({ "users": 3, "connections": { "c2s": 2 } }),
            &mut rows,
        );
        assert_eq!(
            rows,
            vec![
                vec!["connections.c2s".to_string(), "2".to_string()],
                vec!["users".to_string(), "3".to_string()],
            ]
        );
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(segment("a@b/c d?"), "a@b%2Fc%20d%3F");
    }
}
