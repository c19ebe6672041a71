//! Rookery's W3C WebSub hub (<https://www.w3.org/TR/websub/>): web backends subscribe a
//! callback URL to a pubsub node's URL and receive every item published to it — by XMPP or
//! HTTP — as a signed POST, at least once.
//!
//! The hub is a client of the pubsub engine (design.md point 9): access decisions are the
//! engine's ([`rookery_pubsub::Engine::check_reader`]); items reach the hub through the
//! outbox rows the store writes in the publication's own transaction, not through a second
//! notification path. Its own crate because the delivery worker is a long-running part with
//! an HTTP client of its own, testable without the public listener; `rookery-web` only maps
//! `/websub` requests onto [`Hub`].
//!
//! Layout:
//! - [`config`]: `[webhooks]` (SSRF switch, timeouts, retries, per-host limit, leases);
//! - [`topic`]: node URLs, built and read in one place;
//! - [`hub`]: subscription requests (§5.1), denial (§5.2), verification of intent (§5.3);
//! - [`worker`]: content distribution (§7) with signatures (§8), retries, ordering, leases;
//! - [`outbound`]: the HTTP client, its timeouts and per-host limits;
//! - [`ssrf`]: the address checks every callback request goes through.

pub mod config;
pub mod hub;
pub mod outbound;
pub mod ssrf;
pub mod topic;
pub mod worker;

pub use config::WebhooksConfig;
pub use hub::{Hub, HubError, HubRequest};
pub use rookery_pubsub::Engines;
