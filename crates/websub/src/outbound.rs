//! Outbound HTTP to callbacks: one `reqwest` client (rustls, HTTP/1.1, no redirects — a
//! redirect could lead past the SSRF guard), connect and request timeouts, and a
//! concurrency limit per callback host so that a receiver that hangs holds only its own
//! host's slots (each request ends at the timeout at the latest).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use reqwest::header::HeaderMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::WebhooksConfig;
use crate::ssrf::{self, Resolver, SsrfError};

/// Longest verification answer read: the challenge this hub sends is 32 characters.
const MAX_ANSWER_BYTES: usize = 1024;

/// Why a request to a callback failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The address is refused.
    #[error(transparent)]
    Ssrf(#[from] SsrfError),
    /// Connecting, sending or reading failed (or timed out).
    #[error("{0}")]
    Http(String),
}

impl From<reqwest::Error> for SendError {
    fn from(e: reqwest::Error) -> Self {
        let kind = if e.is_timeout() {
            "timeout"
        } else if e.is_connect() {
            "connection failed"
        } else {
            "request failed"
        };
        // The source chain names the cause (refused address, reset …) without the URL.
        let mut msg = kind.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg = format!("{msg}: {s}");
            src = s.source();
        }
        SendError::Http(msg)
    }
}

/// A request slot of one host. Dropping it frees the slot, and forgets the host's semaphore
/// once nobody holds or waits for it (every permit and waiter holds a clone), so the map
/// does not grow with every callback host ever seen.
struct Slot<'a> {
    hosts: &'a DashMap<String, Arc<Semaphore>>,
    key: String,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.permit.take();
        self.hosts
            .remove_if(&self.key, |_, s| Arc::strong_count(s) == 1);
    }
}

/// The client and its per-host limits.
#[derive(Debug)]
pub struct Outbound {
    client: reqwest::Client,
    hosts: DashMap<String, Arc<Semaphore>>,
    per_host: usize,
    allow_private: bool,
}

impl Outbound {
    /// A client for `config`.
    pub fn new(config: &WebhooksConfig) -> Result<Outbound, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(config.connect_timeout_secs))
            .timeout(Duration::from_secs(config.request_timeout_secs))
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(Resolver {
                allow_private: config.allow_private,
            }))
            .user_agent(concat!("Rookery-WebSub/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Outbound {
            client,
            hosts: DashMap::new(),
            per_host: config.per_host_concurrency.max(1),
            allow_private: config.allow_private,
        })
    }

    /// Waits for a slot of `url`'s host (after the literal-address check).
    async fn slot(&self, url: &url::Url) -> Result<Slot<'_>, SendError> {
        ssrf::check_literal(url, self.allow_private)?;
        let key = format!(
            "{}:{}",
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or_default()
        );
        let sem = self
            .hosts
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_host)))
            .clone();
        let permit = sem
            .acquire_owned()
            .await
            .map_err(|_| SendError::Http("closed".into()))?;
        Ok(Slot {
            hosts: &self.hosts,
            key,
            permit: Some(permit),
        })
    }

    /// `GET url`: the status and the start of the body (verification of intent).
    pub async fn get(&self, url: url::Url) -> Result<(u16, Bytes), SendError> {
        let _slot = self.slot(&url).await?;
        let mut resp = self.client.get(url).send().await?;
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_ANSWER_BYTES {
                break;
            }
        }
        Ok((status, Bytes::from(body)))
    }

    /// `POST url` with `headers` and `body`: the status.
    pub async fn post(
        &self,
        url: url::Url,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<u16, SendError> {
        let _slot = self.slot(&url).await?;
        let resp = self
            .client
            .post(url)
            .headers(headers)
            .body(body)
            .send()
            .await?;
        Ok(resp.status().as_u16())
    }
}
