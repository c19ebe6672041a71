//! The `[webhooks]` settings (WebSub subscriptions and deliveries); documented in
//! `docs/configuration.md` with their defaults.

use std::time::Duration;

use serde::Deserialize;

/// The `[webhooks]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Allow callbacks on loopback, private, link-local and unspecified addresses. Off by
    /// default: a callback URL would otherwise let anyone make the server send requests
    /// into its own network (SSRF).
    pub allow_private: bool,
    /// Longest wait for a callback's TCP (and TLS) connection, in seconds.
    pub connect_timeout_secs: u64,
    /// Longest wait for a whole callback request (verification or delivery), in seconds.
    pub request_timeout_secs: u64,
    /// Failed attempts of one delivery after which its subscription is marked `failing`
    /// (deliveries go on at the longest back-off; nothing is dropped).
    pub max_attempts: u32,
    /// Wait after the first failed attempt, in milliseconds; doubled after each failure.
    pub retry_initial_ms: u64,
    /// Longest wait between two attempts, in seconds.
    pub retry_max_secs: u64,
    /// Requests in flight at once to one callback host (`host:port`): a slow or hanging
    /// receiver holds only its own host's slots.
    pub per_host_concurrency: usize,
    /// Lease granted when the subscriber asks for none, in seconds.
    pub lease_default_secs: u64,
    /// Longest lease granted, in seconds (a longer `hub.lease_seconds` is cut to it).
    pub lease_max_secs: u64,
    /// Live subscriptions one topic (node) holds; a new one beyond is refused (renewals
    /// pass). Each publication writes an outbox row and makes a POST per subscription, and
    /// anyone who can echo a challenge subscribes an `open` node anonymously: this bounds
    /// that fan-out and the rows behind it.
    pub max_subscriptions_per_topic: usize,
    /// Live subscriptions, on all topics, whose callback is on one host (lowercased, port,
    /// user info and path ignored); a new one beyond is refused. One receiving host can
    /// echo challenges for any path, so without it a single host could hold any number.
    pub max_subscriptions_per_callback_host: usize,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            allow_private: false,
            connect_timeout_secs: 5,
            request_timeout_secs: 10,
            max_attempts: 8,
            retry_initial_ms: 1000,
            retry_max_secs: 600,
            per_host_concurrency: 8,
            lease_default_secs: 10 * 86_400,
            lease_max_secs: 30 * 86_400,
            max_subscriptions_per_topic: 1_000,
            max_subscriptions_per_callback_host: 100,
        }
    }
}

impl WebhooksConfig {
    /// The lease to grant for a requested one.
    pub fn lease(&self, requested: Option<u64>) -> u64 {
        requested
            .unwrap_or(self.lease_default_secs)
            .clamp(1, self.lease_max_secs.max(1))
    }

    /// The wait before attempt `failures + 1` of a delivery that failed `failures` (≥ 1)
    /// times: exponential from `retry_initial_ms`, capped at `retry_max_secs`.
    pub fn backoff(&self, failures: u32) -> Duration {
        let cap = Duration::from_secs(self.retry_max_secs);
        let shift = failures.saturating_sub(1).min(32);
        let ms = self.retry_initial_ms.saturating_mul(1u64 << shift);
        Duration::from_millis(ms).min(cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let c = WebhooksConfig {
            retry_initial_ms: 100,
            retry_max_secs: 1,
            ..WebhooksConfig::default()
        };
        assert_eq!(c.backoff(1), Duration::from_millis(100));
        assert_eq!(c.backoff(2), Duration::from_millis(200));
        assert_eq!(c.backoff(4), Duration::from_millis(800));
        assert_eq!(c.backoff(5), Duration::from_secs(1));
        assert_eq!(c.backoff(500), Duration::from_secs(1));
    }

    #[test]
    fn lease_defaults_and_is_capped() {
        let c = WebhooksConfig::default();
        assert_eq!(c.lease(None), 10 * 86_400);
        assert_eq!(c.lease(Some(60)), 60);
        assert_eq!(c.lease(Some(u64::MAX)), 30 * 86_400);
        assert_eq!(c.lease(Some(0)), 1);
    }
}
