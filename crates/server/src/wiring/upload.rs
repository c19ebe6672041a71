//! The `[upload]` service (XEP-0363): its URLs point at the public HTTP listener.

use std::sync::Arc;

use rookery_upload::Upload;

use crate::config::Config;

/// The base of upload URLs when `[upload] url` is not set: `[http] public_url`, else the
/// HTTPS listener (or, without one, the plain one) at the server's domain. `None` when no
/// web listener runs, since no URL could be handed out.
fn default_url(cfg: &Config) -> Option<String> {
    if let Some(url) = &cfg.http.public_url {
        return Some(url.clone());
    }
    let port = |addr: &str| addr.rsplit_once(':').map(|(_, p)| p.to_string());
    if !cfg.listen.https.is_empty() {
        return Some(format!(
            "https://{}:{}",
            cfg.domain,
            port(&cfg.listen.https)?
        ));
    }
    if !cfg.listen.http.is_empty() {
        return Some(format!("http://{}:{}", cfg.domain, port(&cfg.listen.http)?));
    }
    None
}

/// The service `cfg` enables, or `None`.
pub fn service(cfg: &Config) -> anyhow::Result<Option<Arc<Upload>>> {
    if !cfg.upload.enabled {
        return Ok(None);
    }
    let Some(url) = cfg.upload.url.clone().or_else(|| default_url(cfg)) else {
        tracing::warn!(
            "HTTP file upload is off: no web listener ([listen] http/https) and no [upload] url"
        );
        return Ok(None);
    };
    std::fs::create_dir_all(&cfg.data_dir)?;
    let up = Upload::new(cfg.upload.clone(), &cfg.domain, &cfg.data_dir, &url)?;
    tracing::info!(domain = up.jid(), url = %url, "HTTP file upload");
    Ok(Some(up))
}
