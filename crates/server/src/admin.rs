//! The admin listener's wiring: its bearer token (from the config, or generated once into
//! the data directory) and what it reports about the running server.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rand::RngCore;

use crate::config::Config;

/// The token file inside the data directory.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.token")
}

/// The admin token: `[admin] token`, else the content of `<data_dir>/admin.token`; with
/// `create`, a file that does not exist yet is made with a fresh random token, readable by
/// the server's user only (mode 0600), as `rookery serve` does at first start.
pub fn token(cfg: &Config, create: bool) -> anyhow::Result<String> {
    if let Some(t) = cfg.admin.token.as_deref().filter(|t| !t.is_empty()) {
        return Ok(t.to_string());
    }
    let path = token_path(&cfg.data_dir);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => bail!("{} is empty", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {}
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "reading the admin token {} (or set [admin] token)",
                    path.display()
                )
            })
        }
    }
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{token}").with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(path = %path.display(), "generated the admin API token");
    Ok(token)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn generated_once_private_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        assert!(token(&cfg, false).is_err());
        let t = token(&cfg, true).unwrap();
        assert_eq!(t.len(), 64);
        assert_eq!(token(&cfg, true).unwrap(), t);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(token_path(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let configured = Config {
            admin: crate::config::AdminConfig {
                token: Some("set".into()),
            },
            ..cfg
        };
        assert_eq!(token(&configured, true).unwrap(), "set");
    }
}
