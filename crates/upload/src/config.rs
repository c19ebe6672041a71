//! `[upload]` settings; documented in `docs/configuration.md`.

use std::path::PathBuf;

use serde::Deserialize;

/// The `[upload]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadConfig {
    /// Serve XEP-0363 at all.
    pub enabled: bool,
    /// The service's JID; default `upload.<domain>`.
    pub domain: Option<String>,
    /// Largest file accepted, in bytes (advertised as `max-file-size`).
    pub max_file_bytes: u64,
    /// Bytes one account may keep stored at once; a slot beyond it gets
    /// `resource-constraint`.
    pub quota_bytes: u64,
    /// Files are deleted this long after their upload (0 keeps them until the account goes).
    pub expire_after_secs: u64,
    /// How long a slot's PUT URL stays valid.
    pub put_valid_secs: u64,
    /// Where files are kept; default `<data_dir>/upload`.
    pub dir: Option<PathBuf>,
    /// The key that signs slot URLs (created on first start if missing); default
    /// `<data_dir>/upload.key`. In a cluster: the same file on every node, with `dir` on
    /// shared storage, so that a slot handed out by one node is served by any.
    pub key_file: Option<PathBuf>,
    /// The base of the URLs handed out (`https://upload.example.org`), when a proxy publishes
    /// the web listener elsewhere; default `[http] public_url`, else the HTTPS listener at
    /// the server's domain.
    pub url: Option<String>,
}

impl Default for UploadConfig {
    fn default() -> Self {
        UploadConfig {
            enabled: true,
            domain: None,
            max_file_bytes: 50 * 1024 * 1024,
            quota_bytes: 1024 * 1024 * 1024,
            expire_after_secs: 30 * 24 * 3600,
            put_valid_secs: 300,
            dir: None,
            key_file: None,
            url: None,
        }
    }
}
