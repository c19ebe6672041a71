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
use std::sync::{Arc, PoisonError, RwLock};

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
    /// By domain; replaced as a whole when a reload adds or removes declarations.
    routes: RwLock<Routes>,
    /// Failed handshakes per IP address (IPv6 by /64) and minute, so guessing a secret over
    /// the network costs time (the listener is on loopback by default).
    limiter: RateLimit<IpKey>,
    /// The connection limits of the listener.
    connections: ConnectionCap,
}

type Routes = Arc<HashMap<String, Arc<ComponentRoute>>>;

/// What a reload changed among the declared components.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Domains declared now and not before.
    pub added: Vec<String>,
    /// Domains no longer declared (a connected component was disconnected).
    pub removed: Vec<String>,
}

impl Components {
    /// Checks the declared services (valid, distinct domains other than the server's; exactly
    /// one secret source each, readable), then registers a route for each domain with the
    /// core. Fails on the first invalid declaration, so a bad config stops the server at start.
    pub fn new(core: Arc<Core>, config: ComponentConfig) -> Result<Arc<Components>, ConfigError> {
        let routes = declare(&core, &config.service, &HashMap::new())?;
        for (domain, route) in &routes {
            core.register_domain(domain, route.clone());
        }
        let limiter = RateLimit::new(config.handshake_failures_per_ip_per_minute);
        let connections = ConnectionCap::with_limits(config.connection_limits());
        Ok(Arc::new(Components {
            core,
            config,
            routes: RwLock::new(Arc::new(routes)),
            limiter,
            connections,
        }))
    }

    /// Applies a reloaded `[component]` section: the limits, and declarations added (routed
    /// from now on) or removed (unrouted; a connected component is closed with
    /// `policy-violation`). A declaration whose secret or name changed counts as removed and
    /// added. Checked like [`Components::new`] first; on error nothing changes. The listener
    /// itself (address, opened only when a service is declared at start) changes at restart.
    pub fn reload(&self, config: &ComponentConfig) -> Result<Changes, ConfigError> {
        let old = self.routes();
        let new = declare(&self.core, &config.service, &old)?;
        let mut changes = Changes::default();
        for (domain, route) in old.iter() {
            if new.get(domain).is_some_and(|r| Arc::ptr_eq(r, route)) {
                continue;
            }
            self.core.unregister_domain(domain);
            route.close(&StreamError::with_text(
                rookery_proto::StreamErrorCondition::PolicyViolation,
                "this component is no longer configured",
            ));
            changes.removed.push(domain.clone());
        }
        for (domain, route) in &new {
            if old.get(domain).is_some_and(|r| Arc::ptr_eq(r, route)) {
                continue;
            }
            self.core.register_domain(domain, route.clone());
            changes.added.push(domain.clone());
        }
        changes.added.sort_unstable();
        changes.removed.sort_unstable();
        *self.routes.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(new);
        self.limiter
            .set_max(config.handshake_failures_per_ip_per_minute);
        self.connections.set_limits(config.connection_limits());
        Ok(changes)
    }

    fn routes(&self) -> Routes {
        self.routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Binds the listener, unless it is disabled (empty `listen`) or no service is declared.
    pub async fn bind(&self) -> std::io::Result<Option<TcpListener>> {
        if self.config.listen.is_empty() || self.routes().is_empty() {
            return Ok(None);
        }
        TcpListener::bind(&self.config.listen).await.map(Some)
    }

    /// The route of a configured component domain.
    pub fn route(&self, domain: &str) -> Option<Arc<ComponentRoute>> {
        self.routes().get(domain).cloned()
    }

    /// The configured component domains, sorted.
    pub fn domains(&self) -> Vec<String> {
        let mut v: Vec<String> = self.routes().keys().cloned().collect();
        v.sort_unstable();
        v
    }

    /// Closes every connected component with `reason` (server shutdown).
    pub fn close_all(&self, reason: &StreamError) {
        for r in self.routes().values() {
            r.close(reason);
        }
    }
}

/// The routes for `services`, checked; a declaration identical to one in `current` keeps its
/// route (and so its connection).
fn declare(
    core: &Core,
    services: &[ServiceConfig],
    current: &HashMap<String, Arc<ComponentRoute>>,
) -> Result<HashMap<String, Arc<ComponentRoute>>, ConfigError> {
    let mut routes = HashMap::new();
    let taken: Vec<String> = core
        .routed_domains()
        .into_iter()
        .filter(|d| !current.contains_key(d))
        .collect();
    for s in services {
        let jid = rookery_jid::BareJid::new(None, s.domain.trim())
            .map_err(|_| ConfigError::InvalidDomain(s.domain.clone()))?;
        let domain = jid.domain().to_string();
        if core.is_local_domain(&domain) {
            return Err(ConfigError::ServerDomain(domain));
        }
        if routes.contains_key(&domain) || taken.contains(&domain) {
            return Err(ConfigError::Duplicate(domain));
        }
        let secret = s.resolve_secret()?;
        let route = match current.get(&domain) {
            Some(r)
                if r.secret() == secret
                    && rookery_core::DomainRoute::name(r.as_ref()) == s.name =>
            {
                r.clone()
            }
            _ => Arc::new(ComponentRoute::new(Jid::from(jid), s.name.clone(), secret)),
        };
        routes.insert(domain, route);
    }
    Ok(routes)
}

/// Accepts component connections on `listener` until the task is dropped; one task each,
/// at most `[component] max_connections` at once.
pub async fn run(listener: TcpListener, comps: Arc<Components>) {
    let cap = comps.connections.clone();
    rookery_stream::accept_loop(listener, cap, |tcp, peer| {
        listener::serve(comps.clone(), tcp, peer)
    })
    .await;
}
