//! External components (XEP-0114, `jabber:component:accept`): bots, gateways and services that
//! own a domain and handle everything addressed to it, without rosters.
//!
//! Layout:
//! - [`config`]: the `[component]` settings and the `[[component.service]]` declarations
//!   (domain, secret inline / from an environment variable / from a file, disco name);
//! - [`handshake`]: the SHA-1 handshake digest and its constant-time check (XEP-0114 §3);
//! - [`trust`]: the `from` trust rule (own domain only; `invalid-from` otherwise);
//! - [`route`]: [`ComponentRoute`], the router's side of a component: a
//!   [`rookery_core::DomainRoute`] registered for its domain for the whole life of the server,
//!   so a disconnected component's stanzas get `service-unavailable` (IQ, message) or are
//!   dropped (presence) instead of growing a queue;
//! - [`listener`]: one connection: header, handshake, then the shared loop of
//!   `rookery_stream::pump` with the component policy.
//!
//! Routing both ways goes through the core: every stanza whose `to` domain is a component's
//! reaches its [`ComponentRoute`] (presence included, so clients subscribe to a bot and the bot
//! answers probes itself; disco to the component is the component's to answer), and what the
//! component sends is routed like any trusted stanza once the trust rule passed.

pub mod config;
pub mod handshake;
pub mod listener;
pub mod route;
pub mod trust;

use std::collections::HashMap;
use std::sync::Arc;

use rookery_core::Core;
use rookery_jid::Jid;
use rookery_proto::StreamError;
use rookery_stream::{ConnectionCap, IpKey, RateLimit};
use tokio::net::TcpListener;

pub use config::{ComponentConfig, ConfigError, OnConflict, ServiceConfig};
pub use route::ComponentRoute;

/// The configured components and the listener settings, shared by all connections.
pub struct Components {
    core: Arc<Core>,
    config: ComponentConfig,
    routes: HashMap<String, Arc<ComponentRoute>>,
    /// Failed handshakes per IP address (IPv6 by /64) and minute, so guessing a secret over
    /// the network costs time (the listener is on loopback by default).
    limiter: RateLimit<IpKey>,
}

impl Components {
    /// Checks the declared services (valid, distinct domains other than the server's; exactly
    /// one secret source each, readable), then registers a route for each domain with the
    /// core. Fails on the first invalid declaration, so a bad config stops the server at start.
    pub fn new(core: Arc<Core>, config: ComponentConfig) -> Result<Arc<Components>, ConfigError> {
        let mut routes = HashMap::new();
        let taken = core.routed_domains();
        for s in &config.service {
            let jid = rookery_jid::BareJid::new(None, s.domain.trim())
                .map_err(|_| ConfigError::InvalidDomain(s.domain.clone()))?;
            let domain = jid.domain().to_string();
            if domain == core.domain() {
                return Err(ConfigError::ServerDomain(domain));
            }
            if routes.contains_key(&domain) || taken.contains(&domain) {
                return Err(ConfigError::Duplicate(domain));
            }
            let secret = s.resolve_secret()?;
            let route = ComponentRoute::new(Jid::from(jid), s.name.clone(), secret);
            routes.insert(domain, Arc::new(route));
        }
        for (domain, route) in &routes {
            core.register_domain(domain, route.clone());
        }
        let limiter = RateLimit::new(config.handshake_failures_per_ip_per_minute);
        Ok(Arc::new(Components {
            core,
            config,
            routes,
            limiter,
        }))
    }

    /// Binds the listener, unless it is disabled (empty `listen`) or no service is declared.
    pub async fn bind(&self) -> std::io::Result<Option<TcpListener>> {
        if self.config.listen.is_empty() || self.routes.is_empty() {
            return Ok(None);
        }
        TcpListener::bind(&self.config.listen).await.map(Some)
    }

    /// The route of a configured component domain.
    pub fn route(&self, domain: &str) -> Option<&Arc<ComponentRoute>> {
        self.routes.get(domain)
    }

    /// The configured component domains, sorted.
    pub fn domains(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.routes.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// Closes every connected component with `reason` (server shutdown).
    pub fn close_all(&self, reason: &StreamError) {
        for r in self.routes.values() {
            r.close(reason);
        }
    }
}

/// Accepts component connections on `listener` until the task is dropped; one task each,
/// at most `[component] max_connections` at once.
pub async fn run(listener: TcpListener, comps: Arc<Components>) {
    let cap = ConnectionCap::new(comps.config.max_connections);
    rookery_stream::accept_loop(listener, cap, |tcp, peer| {
        listener::serve(comps.clone(), tcp, peer)
    })
    .await;
}
