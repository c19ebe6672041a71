//! `rookery token issue|list|revoke`: the bearer tokens of the public HTTP API (docs/http.md,
//! "Tokens"), stored hashed by `rookery_store::tokens`. The secret is printed once, at issue.

use anyhow::{anyhow, bail};
use clap::Subcommand;
use rookery_store::tokens::Scope;
use rookery_store::Migrations;

use crate::config::Config;

/// What `rookery token` does.
#[derive(Subcommand)]
pub enum TokenAction {
    /// Issue a token for an account; prints the secret (once) on stdout.
    Issue {
        /// An existing account: a bare JID (on any hosted domain) or a username of the
        /// primary domain.
        name: String,
        /// Comma-separated scopes: `read` (streams, items), `publish` (publish, retract).
        #[arg(long, default_value = "read")]
        scopes: String,
        /// Lifetime: a number with `s`, `m`, `h` or `d` (`90d`, `12h`).
        #[arg(long, default_value = "30d")]
        expires: String,
    },
    /// List tokens (of one account, or of every hosted domain's accounts): id, JID, scopes,
    /// expiry.
    List {
        /// A bare JID or a username of the primary domain; every account without it.
        name: Option<String>,
    },
    /// Revoke a token by its id (as `list` shows it).
    Revoke {
        /// The token's id.
        id: String,
    },
}

/// Seconds in a lifetime like `30d`; `None` if malformed, zero or absurd.
fn lifetime(s: &str) -> Option<i64> {
    let s = s.trim();
    let unit = s.chars().last()?;
    let per = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    let n: i64 = s.get(..s.len() - 1)?.parse().ok()?;
    n.checked_mul(per).filter(|v| *v > 0)
}

/// Runs a `token` command against the configured store.
pub async fn run(cfg: Config, action: TokenAction) -> anyhow::Result<()> {
    let store = crate::open_store(&cfg, Migrations::RequireCurrent).await?;
    let tokens = store.tokens();
    let hosts = cfg.hosts()?;
    let now = rookery_proto::time::now_unix();
    match action {
        TokenAction::Issue {
            name,
            scopes,
            expires,
        } => {
            let (domain, local) = crate::account_of(&hosts, &name)?;
            let scopes = Scope::parse_list(&scopes)
                .ok_or_else(|| anyhow!("scopes: a list of read, publish (got {scopes:?})"))?;
            let secs = lifetime(&expires)
                .ok_or_else(|| anyhow!("expires: like 30d, 12h, 90m or 3600s (got {expires:?})"))?;
            if !store.accounts().exists(&domain, &local).await? {
                bail!("no such user {local}@{domain}");
            }
            let t = tokens
                .issue(&domain, &local, &scopes, now.saturating_add(secs))
                .await?;
            println!("{}", t.secret);
            eprintln!(
                "issued token {} for {local}@{domain} ({}), expires in {expires}",
                t.id,
                scopes
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            );
        }
        TokenAction::List { name } => {
            let (domains, local) = match name {
                Some(name) => {
                    let (domain, local) = crate::account_of(&hosts, &name)?;
                    (vec![domain], Some(local))
                }
                None => (hosts.iter().map(|h| h.domain().to_string()).collect(), None),
            };
            let mut listed = Vec::new();
            for domain in &domains {
                listed.extend(tokens.list(domain, local.as_deref()).await?);
            }
            for t in listed {
                let scopes: Vec<&str> = t.scopes.iter().map(|s| s.as_str()).collect();
                let state = if t.expires_at > now { "" } else { " (expired)" };
                println!(
                    "{}\t{}@{}\t{}\texpires_at={}{state}",
                    t.id,
                    t.username,
                    t.domain,
                    scopes.join(","),
                    t.expires_at
                );
            }
        }
        TokenAction::Revoke { id } => {
            if !tokens.revoke(&id).await? {
                bail!("no token {id}");
            }
            println!("revoked {id}");
        }
    }
    store.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes() {
        assert_eq!(lifetime("30d"), Some(30 * 86_400));
        assert_eq!(lifetime("90s"), Some(90));
        assert_eq!(lifetime("0d"), None);
        assert_eq!(lifetime("-1h"), None);
        assert_eq!(lifetime("d"), None);
        assert_eq!(lifetime("5w"), None);
        assert_eq!(lifetime("é"), None);
    }
}
