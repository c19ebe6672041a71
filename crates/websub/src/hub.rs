//! The hub's subscriber side (W3C WebSub §5): subscription requests, verification of intent
//! and denial.
//!
//! A request is checked at once (parameters, callback URL and its addresses, topic syntax:
//! a failure is `400 Bad Request`; a new subscription over the per-topic or per-callback-host
//! cap, `403`); the rest happens after the `202 Accepted`, in a task:
//! the topic's node and the caller's access are checked through the pubsub engine (the
//! same access model and affiliations as over XMPP; design.md point 9) — a refusal is a
//! denial (§5.2, `GET` with `hub.mode=denied`) — then the callback is asked to confirm
//! (§5.3, `GET` with `hub.challenge`) and, if it echoes the challenge with a 2xx, the
//! subscription is stored (or removed). Pending verifications are not stored: after a
//! restart the subscriber, having seen no verification, asks again.

use std::sync::Arc;

use rookery_jid::BareJid;
use rookery_proto::time::now_unix;
use rookery_pubsub::{Engines, PubsubError};
use rookery_store::websub::{NewSubscription, SubscriptionRow};
use rookery_store::Store;
use tokio::sync::Semaphore;

use crate::config::WebhooksConfig;
use crate::outbound::Outbound;
use crate::ssrf::{self, SsrfError};
use crate::topic::{self, Topic, TopicError};

/// Longest `hub.secret` (§5.1: "less than 200 bytes").
pub const MAX_SECRET_BYTES: usize = 199;

/// Verifications (and denials) under way at once; beyond, requests get `503`: each one is an
/// outbound request, which a flood of subscription requests must not multiply unbounded.
const MAX_PENDING_VERIFICATIONS: usize = 1024;

/// Longest callback URL accepted.
const MAX_CALLBACK_BYTES: usize = 2048;

/// `hub.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `subscribe`.
    Subscribe,
    /// `unsubscribe`.
    Unsubscribe,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Subscribe => "subscribe",
            Mode::Unsubscribe => "unsubscribe",
        }
    }
}

/// Why a request is refused at once (`400 Bad Request`, the message as body).
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// A required parameter is missing.
    #[error("missing {0}")]
    Missing(&'static str),
    /// `hub.mode` is not one the hub serves.
    #[error("unsupported hub.mode")]
    Mode,
    /// `hub.callback` is not an http(s) URL.
    #[error("hub.callback is not an http(s) URL")]
    Callback,
    /// `hub.secret` is 200 bytes or longer.
    #[error("hub.secret must be shorter than 200 bytes")]
    Secret,
    /// `hub.lease_seconds` is not a number.
    #[error("hub.lease_seconds is not a number")]
    Lease,
    /// The topic is not a URL.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// The callback's address is refused.
    #[error(transparent)]
    Ssrf(#[from] SsrfError),
    /// The store failed.
    #[error("internal error")]
    Store(#[from] rookery_store::StoreError),
    /// Too many verifications are under way.
    #[error("too many pending verifications, try again later")]
    Busy,
    /// The topic or the callback's host holds as many subscriptions as the hub allows.
    #[error("too many subscriptions {0}")]
    Full(Full),
}

/// Which subscription cap a new subscription would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Full {
    /// `max_subscriptions_per_topic`.
    #[error("to this topic")]
    Topic,
    /// `max_subscriptions_per_callback_host`.
    #[error("for this callback host")]
    CallbackHost,
}

impl HubError {
    /// The HTTP status the request gets: `400` for the request's faults, `403` over a
    /// subscription cap (a refusal by the hub's policy, which §5.1 lets a hub answer with a
    /// 4xx at once), `503` when busy, `500` for the server's.
    pub fn http_status(&self) -> u16 {
        match self {
            HubError::Store(_) => 500,
            HubError::Busy => 503,
            HubError::Full(_) => 403,
            _ => 400,
        }
    }
}

/// A subscription request (§5.1), from the form fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRequest {
    /// `hub.mode`.
    pub mode: Mode,
    /// `hub.topic`.
    pub topic: String,
    /// `hub.callback`, parsed.
    pub callback: url::Url,
    /// `hub.secret`.
    pub secret: Option<String>,
    /// `hub.lease_seconds`.
    pub lease_seconds: Option<u64>,
}

impl HubRequest {
    /// Reads the form fields (sans-IO; the last of repeated fields wins).
    pub fn from_fields<'a>(
        fields: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<HubRequest, HubError> {
        let (mut mode, mut topic, mut callback, mut secret, mut lease) =
            (None, None, None, None, None);
        for (k, v) in fields {
            match k {
                "hub.mode" => mode = Some(v),
                "hub.topic" => topic = Some(v),
                "hub.callback" => callback = Some(v),
                "hub.secret" => secret = Some(v),
                "hub.lease_seconds" => lease = Some(v),
                _ => {}
            }
        }
        let mode = match mode.ok_or(HubError::Missing("hub.mode"))? {
            "subscribe" => Mode::Subscribe,
            "unsubscribe" => Mode::Unsubscribe,
            _ => return Err(HubError::Mode),
        };
        let topic = topic.ok_or(HubError::Missing("hub.topic"))?.to_string();
        let callback = callback.ok_or(HubError::Missing("hub.callback"))?;
        if callback.len() > MAX_CALLBACK_BYTES {
            return Err(HubError::Callback);
        }
        let callback = url::Url::parse(callback).map_err(|_| HubError::Callback)?;
        if !matches!(callback.scheme(), "http" | "https") || !callback.has_host() {
            return Err(HubError::Callback);
        }
        let secret = match secret {
            Some(s) if s.len() > MAX_SECRET_BYTES => return Err(HubError::Secret),
            Some("") | None => None,
            Some(s) => Some(s.to_string()),
        };
        let lease_seconds = match lease {
            Some(l) if !l.is_empty() => Some(l.parse().map_err(|_| HubError::Lease)?),
            _ => None,
        };
        Ok(HubRequest {
            mode,
            topic,
            callback,
            secret,
            lease_seconds,
        })
    }
}

/// The hub.
#[derive(Debug)]
pub struct Hub {
    pub(crate) store: Store,
    engines: Engines,
    pub(crate) config: WebhooksConfig,
    pub(crate) outbound: Outbound,
    verifying: Arc<Semaphore>,
    /// Held from counting a topic's and a host's subscriptions to storing a new one, so that
    /// verifications finishing together cannot all pass the caps.
    storing: tokio::sync::Mutex<()>,
}

impl Hub {
    /// A hub over `store` and `engines`.
    pub fn new(
        store: Store,
        engines: Engines,
        config: WebhooksConfig,
    ) -> Result<Arc<Hub>, reqwest::Error> {
        let outbound = Outbound::new(&config)?;
        Ok(Arc::new(Hub {
            store,
            engines,
            config,
            outbound,
            verifying: Arc::new(Semaphore::new(MAX_PENDING_VERIFICATIONS)),
            storing: tokio::sync::Mutex::new(()),
        }))
    }

    /// Takes a subscription request from `caller` (`None`: anonymous) made to the hub under
    /// `base` (see [`topic::parse`]): checks it now, then verifies it in a task (the caller
    /// answers `202 Accepted`).
    pub async fn request(
        self: &Arc<Self>,
        req: HubRequest,
        caller: Option<BareJid>,
        base: &str,
    ) -> Result<(), HubError> {
        let topic = match topic::parse(base, &req.topic) {
            Err(TopicError::NotAUrl) => return Err(TopicError::NotAUrl.into()),
            t => t,
        };
        ssrf::check_resolved(&req.callback, self.config.allow_private).await?;
        if let (Mode::Subscribe, Ok(t)) = (req.mode, &topic) {
            self.room_for(t, &req.callback).await?;
        }
        let permit = self
            .verifying
            .clone()
            .try_acquire_owned()
            .map_err(|_| HubError::Busy)?;
        let hub = self.clone();
        tokio::spawn(async move {
            hub.verify(req, topic, caller).await;
            drop(permit);
        });
        Ok(())
    }

    /// The subscription of `callback` to `topic` (a node under `base`), for the subscriber
    /// to see its state.
    pub async fn status(
        &self,
        topic: &str,
        callback: &str,
        base: &str,
    ) -> Result<Option<SubscriptionRow>, HubError> {
        let t = topic::parse(base, topic)?;
        // Stored as parsed (normalized) at subscription.
        let callback = url::Url::parse(callback).map_err(|_| HubError::Callback)?;
        Ok(self
            .store
            .websub()
            .get(t.service.as_str(), &t.node, callback.as_str())
            .await?)
    }

    /// §5.2/§5.3: denies, or verifies intent and then applies, the request.
    async fn verify(
        &self,
        req: HubRequest,
        topic: Result<Topic, TopicError>,
        caller: Option<BareJid>,
    ) {
        let topic = match topic {
            Ok(t) => t,
            Err(e) => return self.deny(&req.callback, &req.topic, &e.to_string()).await,
        };
        if req.mode == Mode::Subscribe {
            if let Err(reason) = self
                .check_access(&topic.service, &topic.node, caller.as_ref())
                .await
            {
                return self.deny(&req.callback, &req.topic, &reason).await;
            }
        }
        let lease = self.config.lease(req.lease_seconds);
        let challenge = rookery_pubsub::engine::random_id();
        let mut url = req.callback.clone();
        url.query_pairs_mut()
            .append_pair("hub.mode", req.mode.as_str())
            .append_pair("hub.topic", &req.topic)
            .append_pair("hub.challenge", &challenge);
        if req.mode == Mode::Subscribe {
            url.query_pairs_mut()
                .append_pair("hub.lease_seconds", &lease.to_string());
        }
        let confirmed = match self.outbound.get(url).await {
            Ok((status, body)) => {
                (200..300).contains(&status) && body.as_ref() == challenge.as_bytes()
            }
            Err(e) => {
                tracing::info!(callback = %req.callback, error = %e, "websub verification failed");
                false
            }
        };
        if !confirmed {
            tracing::info!(callback = %req.callback, topic = %req.topic, mode = req.mode.as_str(), "websub request not confirmed by the subscriber");
            return;
        }
        let ws = self.store.websub();
        let svc = topic.service.as_str();
        let result = match req.mode {
            Mode::Subscribe => {
                let lease_i = i64::try_from(lease).unwrap_or(i64::MAX);
                let sub = NewSubscription {
                    service: svc.to_string(),
                    node: topic.node.clone(),
                    topic: req.topic.clone(),
                    callback: req.callback.to_string(),
                    secret: req.secret.clone(),
                    caller: caller.as_ref().map(|c| c.as_str().to_string()),
                    lease_seconds: lease_i,
                    expires_at: now_unix().saturating_add(lease_i),
                };
                let _one_at_a_time = self.storing.lock().await;
                match self.room_for(&topic, &req.callback).await {
                    Err(HubError::Full(full)) => {
                        let reason = HubError::Full(full).to_string();
                        return self.deny(&req.callback, &req.topic, &reason).await;
                    }
                    Err(e) => return tracing::error!(error = %e, "websub subscription not stored"),
                    Ok(()) => {}
                }
                match ws.upsert(&sub).await {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => return self.deny(&req.callback, &req.topic, "unknown topic").await,
                    Err(e) => Err(e),
                }
            }
            Mode::Unsubscribe => ws
                .remove(svc, &topic.node, req.callback.as_str())
                .await
                .map(|_| ()),
        };
        match result {
            Ok(()) => {
                tracing::info!(callback = %req.callback, topic = %req.topic, mode = req.mode.as_str(), lease, "websub subscription verified")
            }
            Err(e) => tracing::error!(error = %e, "websub subscription not stored"),
        }
    }

    /// `Full` unless `callback` may subscribe to `topic`: it renews its subscription, or
    /// neither the topic nor the callback's host holds its cap of live subscriptions. Checked
    /// when the request comes (a `403` at once) and again before storing (a §5.2 denial), as
    /// others may have taken the room during verification.
    async fn room_for(&self, topic: &Topic, callback: &url::Url) -> Result<(), HubError> {
        let ws = self.store.websub();
        let (svc, now) = (topic.service.as_str(), now_unix());
        if ws.get(svc, &topic.node, callback.as_str()).await?.is_some() {
            return Ok(());
        }
        let cap = |max: usize| i64::try_from(max).unwrap_or(i64::MAX);
        let on_topic = ws.count_for_topic(svc, &topic.node, now).await?;
        if on_topic >= cap(self.config.max_subscriptions_per_topic) {
            return Err(HubError::Full(Full::Topic));
        }
        let on_host = ws.count_for_callback_host(callback.as_str(), now).await?;
        if on_host >= cap(self.config.max_subscriptions_per_callback_host) {
            return Err(HubError::Full(Full::CallbackHost));
        }
        Ok(())
    }

    /// The engine's answer for `caller` on a node, as a denial reason.
    pub(crate) async fn check_access(
        &self,
        service: &BareJid,
        node: &str,
        caller: Option<&BareJid>,
    ) -> Result<(), String> {
        let engine = self
            .engines
            .resolve(&self.store, service)
            .await
            .map_err(|e| format!("store: {e}"))?
            .ok_or_else(|| "unknown topic".to_string())?;
        match engine.check_reader(service, node, caller).await {
            Ok(()) => Ok(()),
            Err(PubsubError::NodeNotFound) => Err("unknown topic".into()),
            Err(e) => Err(format!("access refused: {e}")),
        }
    }

    /// §5.2: tells the subscriber its subscription was refused (or, later, cancelled).
    pub(crate) async fn deny(&self, callback: &url::Url, topic: &str, reason: &str) {
        tracing::info!(%callback, topic, reason, "websub subscription denied");
        let mut url = callback.clone();
        url.query_pairs_mut()
            .append_pair("hub.mode", "denied")
            .append_pair("hub.topic", topic)
            .append_pair("hub.reason", reason);
        if let Err(e) = self.outbound.get(url).await {
            tracing::info!(%callback, error = %e, "websub denial not delivered");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn req(fields: &[(&str, &str)]) -> Result<HubRequest, HubError> {
        HubRequest::from_fields(fields.iter().copied())
    }

    #[test]
    fn reads_requests() {
        let r = req(&[
            ("hub.mode", "subscribe"),
            ("hub.topic", "http://h/pubsub/s/n"),
            ("hub.callback", "https://cb.example/x?a=1"),
            ("hub.secret", "s3cret"),
            ("hub.lease_seconds", "60"),
        ])
        .unwrap();
        assert_eq!(r.mode, Mode::Subscribe);
        assert_eq!(r.secret.as_deref(), Some("s3cret"));
        assert_eq!(r.lease_seconds, Some(60));
        assert_eq!(r.callback.as_str(), "https://cb.example/x?a=1");
    }

    #[test]
    fn refuses_bad_requests() {
        let ok = [
            ("hub.mode", "subscribe"),
            ("hub.topic", "http://h/pubsub/s/n"),
            ("hub.callback", "http://cb.example/"),
        ];
        assert!(matches!(req(&ok[1..]), Err(HubError::Missing("hub.mode"))));
        assert!(matches!(
            req(&[ok[0], ok[2]]),
            Err(HubError::Missing("hub.topic"))
        ));
        assert!(matches!(
            req(&ok[..2]),
            Err(HubError::Missing("hub.callback"))
        ));
        let mut bad = ok.to_vec();
        bad[0].1 = "publish";
        assert!(matches!(req(&bad), Err(HubError::Mode)));
        for cb in ["not a url", "ftp://x/", "mailto:a@b"] {
            let mut bad = ok.to_vec();
            bad[2].1 = cb;
            assert!(matches!(req(&bad), Err(HubError::Callback)), "{cb}");
        }
        let long = "x".repeat(200);
        let mut bad = ok.to_vec();
        bad.push(("hub.secret", &long));
        assert!(matches!(req(&bad), Err(HubError::Secret)));
        let mut fine = ok.to_vec();
        let max = "x".repeat(199);
        fine.push(("hub.secret", &max));
        assert!(req(&fine).is_ok());
        let mut bad = ok.to_vec();
        bad.push(("hub.lease_seconds", "soon"));
        assert!(matches!(req(&bad), Err(HubError::Lease)));
    }
}
