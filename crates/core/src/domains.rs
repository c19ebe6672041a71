//! Routes for whole domains: components and services registered under their own domain
//! (XEP-0114, XEP-0060 services), and the one remote route (RFC 6120 §13.4, s2s) for every
//! other domain.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use dashmap::DashMap;
use rookery_jid::Jid;
use rookery_proto::{Stanza, StanzaError};

use crate::SessionHandle;

/// A stanza a [`DomainRoute`] could not take, handed back with the error its sender gets:
/// the router keeps no copy of every stanza for the rare bounce (boxed: the success path
/// stays one word wide).
#[derive(Debug)]
pub struct Undelivered {
    /// The stanza, as it was given.
    pub stanza: Stanza,
    /// What its sender is told.
    pub error: StanzaError,
}

impl Undelivered {
    /// `stanza` bounced with `error`.
    pub fn new(stanza: Stanza, error: StanzaError) -> Box<Undelivered> {
        Box::new(Undelivered { stanza, error })
    }
}

/// Where stanzas for a whole domain go (a component, a service, a remote server).
#[async_trait]
pub trait DomainRoute: Send + Sync + 'static {
    /// Takes the stanza; one it cannot take comes back with the error bounced to the sender.
    async fn deliver(&self, stanza: Stanza) -> Result<(), Box<Undelivered>>;

    /// Whether disco#items of the server lists this domain now (a component only while it
    /// is connected). Default: always.
    fn listed(&self) -> bool {
        true
    }

    /// The name disco#items shows for this domain, if any.
    fn name(&self) -> Option<String> {
        None
    }

    /// The hosted domain whose service this is (virtual hosting: `pubsub.b.test` is host
    /// `b.test`'s, and disco#items of that host alone lists it). Default: `None`, a domain
    /// of the whole server (a component, upload), listed by every host.
    fn host(&self) -> Option<&str> {
        None
    }

    /// In a cluster: the connection serving this domain on another node `node` came (`Some`:
    /// a remote handle whose queue goes to that node) or went (`None`). A route served by
    /// connections (a component) shares its traffic with them when it has none here; other
    /// routes ignore it (the default).
    fn peer(&self, _node: &str, _handle: Option<SessionHandle>) {}

    /// Delivers a stanza another node of a cluster forwarded to this domain's connection on
    /// this node: it must not cross the bus again. Default: [`DomainRoute::deliver`].
    async fn deliver_here(&self, stanza: Stanza) -> Result<(), Box<Undelivered>> {
        self.deliver(stanza).await
    }

    /// The server is shutting down, before the sessions and the federation streams close:
    /// tell whom it serves what they must learn of it while that can still be sent (a
    /// service's users, XEP-0045 §17.1.4). Default: nothing.
    async fn shutdown(&self) {}

    /// In a cluster: these sessions of another node ended with their node (killed or cut
    /// off), which could not say so; told on one node only, the rooms' home (see
    /// [`crate::Event::SessionsLost`]). A route that keeps them as its users lets them go
    /// (a room's occupants, XEP-0045 §17.1.2's ghosts). Default: nothing.
    async fn sessions_lost(&self, _jids: &[Jid]) {}
}

/// The registered domain routes and the remote route.
#[derive(Default)]
pub struct Domains {
    routes: DashMap<String, Arc<dyn DomainRoute>>,
    remote: OnceLock<Arc<dyn DomainRoute>>,
}

impl Domains {
    /// Routes every stanza for `domain` to `route` (replacing any previous one).
    pub fn register(&self, domain: &str, route: Arc<dyn DomainRoute>) {
        self.routes.insert(domain.to_string(), route);
    }

    /// Removes the route for `domain`.
    pub fn unregister(&self, domain: &str) {
        self.routes.remove(domain);
    }

    /// Sets the route for remote domains. Only the first call takes effect.
    pub fn set_remote(&self, route: Arc<dyn DomainRoute>) {
        let _ = self.remote.set(route);
    }

    /// The route for a non-local `domain`: its registered route, else the remote route.
    pub fn route_for(&self, domain: &str) -> Option<Arc<dyn DomainRoute>> {
        self.routes
            .get(domain)
            .map(|r| r.value().clone())
            .or_else(|| self.remote.get().cloned())
    }

    /// The route registered for `domain` (never the remote route).
    pub fn registered(&self, domain: &str) -> Option<Arc<dyn DomainRoute>> {
        self.routes.get(domain).map(|r| r.value().clone())
    }

    /// Whether `domain` has a registered route (no allocation).
    pub fn has(&self, domain: &str) -> bool {
        self.routes.contains_key(domain)
    }

    /// Every registered route.
    pub fn all(&self) -> Vec<Arc<dyn DomainRoute>> {
        self.routes.iter().map(|e| e.value().clone()).collect()
    }

    /// The registered domains, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.routes.iter().map(|e| e.key().clone()).collect();
        v.sort();
        v
    }

    /// The registered domains [`DomainRoute::listed`] now for the hosted domain `host`
    /// (its own services and those of the whole server, see [`DomainRoute::host`]), with
    /// their names, sorted.
    pub fn listed(&self, host: &str) -> Vec<(String, Option<String>)> {
        let mut v: Vec<(String, Option<String>)> = self
            .routes
            .iter()
            .filter(|e| e.value().listed() && e.value().host().is_none_or(|h| h == host))
            .map(|e| (e.key().clone(), e.value().name()))
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    struct Named(&'static str, bool);

    /// A service of one host.
    struct OfHost(&'static str);

    #[async_trait]
    impl DomainRoute for OfHost {
        async fn deliver(&self, _stanza: Stanza) -> Result<(), Box<Undelivered>> {
            Ok(())
        }
        fn host(&self) -> Option<&str> {
            Some(self.0)
        }
    }

    #[async_trait]
    impl DomainRoute for Named {
        async fn deliver(&self, _stanza: Stanza) -> Result<(), Box<Undelivered>> {
            Ok(())
        }
        fn listed(&self) -> bool {
            self.1
        }
        fn name(&self) -> Option<String> {
            Some(self.0.into())
        }
    }

    #[test]
    fn registered_domains_win_over_the_remote_route() {
        let d = Domains::default();
        assert!(d.route_for("example.org").is_none());
        d.register("bot.localhost", Arc::new(Named("bot", true)));
        d.register("hidden.localhost", Arc::new(Named("hidden", false)));
        d.set_remote(Arc::new(Named("s2s", true)));
        d.set_remote(Arc::new(Named("second", true)));
        let name = |domain| d.route_for(domain).and_then(|r| r.name());
        assert_eq!(name("bot.localhost").as_deref(), Some("bot"));
        assert_eq!(name("example.org").as_deref(), Some("s2s"));
        assert_eq!(d.names(), ["bot.localhost", "hidden.localhost"]);
        assert_eq!(
            d.listed("localhost"),
            [("bot.localhost".into(), Some("bot".into()))]
        );
        d.unregister("bot.localhost");
        assert!(!d.has("bot.localhost"));
        assert_eq!(name("bot.localhost").as_deref(), Some("s2s"));
    }

    #[test]
    fn a_host_lists_its_own_services_and_the_whole_servers() {
        let d = Domains::default();
        d.register("upload.a.test", Arc::new(Named("upload", true)));
        d.register("pubsub.a.test", Arc::new(OfHost("a.test")));
        d.register("pubsub.b.test", Arc::new(OfHost("b.test")));
        let listed = |host| -> Vec<String> { d.listed(host).into_iter().map(|(j, _)| j).collect() };
        assert_eq!(listed("a.test"), ["pubsub.a.test", "upload.a.test"]);
        assert_eq!(listed("b.test"), ["pubsub.b.test", "upload.a.test"]);
    }
}
