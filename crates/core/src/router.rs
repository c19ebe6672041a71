//! The route table (design.md, "A typed route table and one unhandled-stanza policy").
//!
//! Stanzas a local client sent enter through [`Core::route_from_session`], which first runs
//! [`HookPoint::MessageFromLocal`], [`HookPoint::PresenceFromLocal`] (presence with a `to`) or
//! [`HookPoint::IqFromLocal`], then [`Core::route`]. Every stanza `route` takes for a local
//! account (bare or full JID) first passes the [`HookPoint::ToLocalAccount`] hooks (blocking).
//!
//! | stanza   | `to` shape                  | handled by                                            |
//! |----------|-----------------------------|-------------------------------------------------------|
//! | iq get/set | none                      | account IQ handler, then server IQ handler            |
//! | iq get/set | server domain             | server IQ handler (by payload namespace + name)       |
//! | iq get/set | local bare JID            | account IQ handler, on the account's behalf           |
//! | message  | local full JID, online      | [`HookPoint::MessageToFull`] hooks, then that session |
//! | iq get/set | local full JID, online    | [`HookPoint::IqToFull`] hooks, then that session      |
//! | presence subscribe/subscribed/unsubscribe/unsubscribed/probe | local full JID | [`HookPoint::PresenceToAccount`] hooks |
//! | other    | local full JID, online      | that session                                          |
//! | message  | local bare JID              | [`HookPoint::MessageToBare`] hooks, then RFC 6121 §8.5.2 |
//! | message  | local full JID, offline     | [`HookPoint::MessageToMissingResource`], then §8.5.3.2 |
//! | presence | none                        | [`HookPoint::PresenceBroadcast`] hooks                |
//! | presence | local account               | [`HookPoint::PresenceToAccount`] hooks                |
//! | any      | a registered domain         | its [`DomainRoute`] (components, services)            |
//! | any      | any other domain            | the remote route (s2s), else `remote-server-not-found` |
//!
//! Unhandled IQ get/set get `service-unavailable` from [`Core::reply_error`]; IQ result/error
//! and error stanzas are never answered with an error. IQ results and errors addressed to the
//! server answer the requests modules sent with [`Core::request`]. Each stanza is serialized
//! once and the bytes shared.
//!
//! `Core` is the facade over the parts the table consults, each with one job and its own
//! tests: [`crate::registry`] (bound sessions, a sharded map: no global lock on the routing
//! path), [`crate::domains`], [`crate::requests`], [`crate::tables`] and the
//! [`crate::accounts`] directory. The table itself is tested row by row in `router_tests.rs`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use rookery_jid::{BareJid, Jid};
use rookery_proto::{
    IqType, MessageType, PresenceType, Stanza, StanzaError, StanzaErrorCondition, StanzaKind,
};
use rookery_xml::Element;

use crate::accounts::Accounts;
use crate::cluster::{ClusterLink, HandoverAsk, HandoverRefusal, SessionSource};
use crate::config::CoreConfig;
use crate::domains::{DomainRoute, Domains, Undelivered};
use crate::event::{Event, SessionEvent};
use crate::hosts::{Hosts, HostsError};
use crate::module::{iq_result_for, Flow, HookPoint, Identity, IqResultBody, IqTarget, Module};
use crate::registry::Registry;
use crate::requests::Requests;
use crate::session::{SessionHandle, SessionId};
use crate::tables::Tables;

/// XEP-0091 legacy delayed delivery (still read by clients).
const LEGACY_DELAY: &str = "jabber:x:delay";

/// Builds a [`Core`] from config, account directory and modules.
pub struct CoreBuilder {
    config: CoreConfig,
    accounts: Arc<dyn Accounts>,
    modules: Vec<Arc<dyn Module>>,
}

impl CoreBuilder {
    /// Starts a builder.
    pub fn new(config: CoreConfig, accounts: Arc<dyn Accounts>) -> Self {
        CoreBuilder {
            config,
            accounts,
            modules: Vec::new(),
        }
    }

    /// Adds a module. At a hook point (or for an event kind), modules run by the priority
    /// they declared; equal priorities in the order they were added.
    #[must_use]
    pub fn module(mut self, m: Arc<dyn Module>) -> Self {
        self.modules.push(m);
        self
    }

    /// Builds the core and its tables from the modules' declarations; fails when a
    /// configured domain is not a valid domainpart or is hosted twice.
    pub fn build(self) -> Result<Arc<Core>, HostsError> {
        let hosts = Hosts::new(&self.config.domain, &self.config.host)?;
        Ok(Arc::new(Core {
            hosts,
            config: self.config,
            accounts: self.accounts,
            tables: Tables::new(self.modules),
            sessions: Registry::default(),
            requests: Requests::default(),
            domains: Domains::default(),
            next_id: AtomicU64::new(1),
            cluster: OnceLock::new(),
            session_source: OnceLock::new(),
        }))
    }
}

/// The shared server state every connection and module works through.
pub struct Core {
    config: CoreConfig,
    hosts: Hosts,
    accounts: Arc<dyn Accounts>,
    tables: Tables,
    sessions: Registry,
    requests: Requests,
    domains: Domains,
    next_id: AtomicU64,
    /// The cluster told about local sessions, when this node is one of several.
    cluster: OnceLock<Arc<dyn ClusterLink>>,
    /// Where another node's request to hand a hibernated session over goes.
    session_source: OnceLock<Arc<dyn SessionSource>>,
}

impl Core {
    /// Settings.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// The primary hosted domain (the config's `domain`): what the server speaks as where
    /// no host was named. See [`Core::hosts`] for all of them.
    pub fn domain(&self) -> &str {
        self.hosts.primary().domain()
    }

    /// The primary hosted domain as a JID.
    pub fn domain_jid(&self) -> &BareJid {
        self.hosts.primary().jid()
    }

    /// Every hosted domain, primary first.
    pub fn hosts(&self) -> &Hosts {
        &self.hosts
    }

    /// The account directory (the store, wired in by the server).
    pub fn accounts(&self) -> &Arc<dyn Accounts> {
        &self.accounts
    }

    /// Server disco identities (from all modules).
    pub fn identities(&self) -> &[Identity] {
        self.tables.identities()
    }

    /// Server disco features (from all modules).
    pub fn server_features(&self) -> &[&'static str] {
        self.tables.server_features()
    }

    /// Server disco#info extension forms (XEP-0128, from all modules).
    pub fn server_info(&self) -> &[Element] {
        self.tables.server_info()
    }

    /// Account disco features (from all modules).
    pub fn account_features(&self) -> &[&'static str] {
        self.tables.account_features()
    }

    /// Account disco identities other than `account/registered` (from all modules).
    pub fn account_identities(&self) -> &[Identity] {
        self.tables.account_identities()
    }

    /// The tables built from the modules' declarations.
    pub(crate) fn tables(&self) -> &Tables {
        &self.tables
    }

    /// The modules, in the order they were added (for disco nodes and items they answer).
    pub fn modules(&self) -> &[Arc<dyn Module>] {
        self.tables.modules()
    }

    /// Stream features modules offer to clients after authentication.
    pub fn stream_features(&self) -> &[Element] {
        self.tables.stream_features()
    }

    /// Domains with a registered route (components, services), for disco#items.
    pub fn routed_domains(&self) -> Vec<String> {
        self.domains.names()
    }

    /// Whether `domain` has a registered route (a component or service domain we serve);
    /// the federation trust rule asks this for every incoming stanza, without allocating.
    pub fn has_domain_route(&self, domain: &str) -> bool {
        self.domains.has(domain)
    }

    /// The routed domains disco#items of the hosted domain `host` lists now (see
    /// [`DomainRoute::listed`] and [`DomainRoute::host`]), with their names, sorted by domain.
    pub fn routed_items(&self, host: &str) -> Vec<(String, Option<String>)> {
        self.domains.listed(host)
    }

    /// A fresh session id.
    pub fn next_session_id(&self) -> SessionId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The JID of the host `jid` belongs to, the primary one when its domain is not hosted
    /// here (the server answers a remote sender as its primary domain).
    pub fn host_of(&self, jid: &BareJid) -> BareJid {
        self.hosts
            .get(jid.domain())
            .unwrap_or(self.hosts.primary())
            .jid()
            .clone()
    }

    /// Whether `domain` is hosted here (any host, see [`Hosts`]): the one locality test
    /// routing, trust rules and modules ask.
    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.hosts.contains(domain)
    }

    /// Routes every stanza for `domain` to `route` (replacing any previous one).
    pub fn register_domain(&self, domain: &str, route: Arc<dyn DomainRoute>) {
        self.domains.register(domain, route);
    }

    /// Removes the route for `domain`.
    pub fn unregister_domain(&self, domain: &str) {
        self.domains.unregister(domain);
    }

    /// Sets the route for remote domains (s2s). Only the first call takes effect.
    pub fn set_remote_route(&self, route: Arc<dyn DomainRoute>) {
        self.domains.set_remote(route);
    }

    /// Joins a cluster: from now on `link` hears of every local bind, unbind and availability
    /// change. Only the first call takes effect.
    pub fn set_cluster(&self, link: Arc<dyn ClusterLink>) {
        self.requests.set_node(link.node());
        let _ = self.cluster.set(link);
    }

    /// Sets where other nodes' requests to hand a hibernated session over go (the client
    /// listener's resumable sessions). Only the first call takes effect.
    pub fn set_session_source(&self, source: Arc<dyn SessionSource>) {
        let _ = self.session_source.set(source);
    }

    /// Another node asks for the hibernated session `ask` names, to be told in at most
    /// `max_bytes` (see [`SessionSource::hand_over`]); refused without a source.
    pub async fn hand_over(
        &self,
        ask: &HandoverAsk,
        max_bytes: usize,
    ) -> Result<String, HandoverRefusal> {
        let source = self
            .session_source
            .get()
            .ok_or(HandoverRefusal::NotHandedOver)?;
        source.hand_over(ask, max_bytes).await
    }

    /// In a cluster, asks the other nodes to hand over the hibernated session `ask` names
    /// ([`ClusterLink::take_over`]): what the node that held it serialized, or why not
    /// (without a cluster: not handed over).
    pub async fn take_over(&self, ask: HandoverAsk) -> Result<String, HandoverRefusal> {
        let c = self.cluster.get().ok_or(HandoverRefusal::NotHandedOver)?;
        c.take_over(ask).await
    }

    /// What the modules keep for the local session `jid` that must follow it to another node
    /// ([`Module::session_state`]), by module name.
    pub fn session_states(&self, jid: &Jid) -> Vec<(String, String)> {
        self.tables
            .modules()
            .iter()
            .filter_map(|m| Some((m.name().to_string(), m.session_state(jid)?)))
            .collect()
    }

    /// Hands each module what [`Core::session_states`] took from it on another node, for
    /// the session `jid` bound here to go on (a module not named, or not running here, gets
    /// nothing).
    pub fn adopt_session_states(self: &Arc<Self>, jid: &Jid, states: &[(String, String)]) {
        for m in self.tables.modules() {
            if let Some((_, state)) = states.iter().find(|(name, _)| name == m.name()) {
                m.adopt_session_state(self, jid, state);
            }
        }
    }

    /// An IQ result or error addressed to the server: the answer to a request of this node,
    /// or, in a cluster, of the node its id names (the addressee was bound there).
    fn answer_request(&self, stanza: Stanza) {
        if let (Some(c), Some(id)) = (self.cluster.get(), stanza.id()) {
            if let Some(node) = self.requests.origin(id) {
                return c.answer_elsewhere(node, &stanza);
            }
        }
        self.requests.answer(stanza);
    }

    /// An answer another node of the cluster handed over ([`ClusterLink::answer_elsewhere`]);
    /// whether a request of this node took it.
    pub fn answer_from_cluster(&self, stanza: Stanza) -> bool {
        self.requests.answer(stanza)
    }

    // ---- session registry ----------------------------------------------------------------

    /// Registers a bound session. Returns the session it replaces (same full JID), which the
    /// caller closes with `conflict` (RFC 6120 §7.7.2.2).
    pub async fn bind(self: &Arc<Self>, handle: SessionHandle) -> Option<SessionHandle> {
        let jid = handle.jid().clone();
        if let Some(c) = self.cluster.get() {
            c.bound(&jid, handle.id());
        }
        let replaced = self.sessions.bind(handle);
        tracing::debug!(%jid, "bound");
        if replaced.is_some() {
            // The replaced session's own unbind will find nothing: report its end here.
            self.emit(&Event::Session(SessionEvent::Closed(jid.clone())))
                .await;
        }
        self.emit(&Event::Session(SessionEvent::Bound(jid))).await;
        replaced
    }

    /// Removes a session if it is still the one registered under its JID, and tells the
    /// modules (so unavailable presence goes out for dead sockets too).
    pub async fn unbind(self: &Arc<Self>, jid: &Jid, id: SessionId) {
        if self.sessions.unbind(jid, id) {
            tracing::debug!(%jid, "unbound");
            if let Some(c) = self.cluster.get() {
                c.unbound(jid);
            }
            self.emit(&Event::Session(SessionEvent::Closed(jid.clone())))
                .await;
        }
    }

    /// Tells the modules subscribed to `event`'s kind, in priority order, awaiting each (see
    /// [`crate::event`]). Emit once the fact is committed: subscribers read that state.
    pub async fn emit(self: &Arc<Self>, event: &Event) {
        for m in self.tables.subscribers(event.kind()) {
            m.event(self, event).await;
        }
    }

    /// Returns once what the modules took on from the stanzas routed before the call is
    /// committed (the archive's rows, written in batches off the message path). An
    /// acknowledgement that promises a stanza is kept (XEP-0198 `<a/>` and `<resumed/>`)
    /// waits for this; so does the shutdown, before the store closes.
    pub async fn settle(&self) {
        for m in self.tables.settlers() {
            m.settle().await;
        }
    }

    /// Records a session's availability: `Some(priority)` after available presence, `None`
    /// after unavailable.
    pub fn set_available(&self, jid: &Jid, priority: Option<i8>) {
        self.sessions.set_available(jid, priority);
        if let Some(c) = self.cluster.get() {
            c.availability(jid, priority);
        }
    }

    /// Tells the other nodes of a cluster that `account`'s data in the store changed (roster,
    /// pending requests, block list), so that they drop what they cached of it
    /// ([`Event::AccountChanged`] there). Call after the store committed. Nothing without a
    /// cluster.
    pub fn account_changed(&self, account: &BareJid) {
        if let Some(c) = self.cluster.get() {
            c.account_changed(account);
        }
    }

    /// Whether this node is one of a cluster (a module keeping state in memory that other
    /// nodes change in the store then tells them through [`Core::tell_peers`]).
    pub fn is_clustered(&self) -> bool {
        self.cluster.get().is_some()
    }

    /// In a cluster, the node that serves what a service keeps in memory for everyone and
    /// cannot share (the MUC rooms: their occupants and history): the oldest node alive, so
    /// that a node joining takes nothing over and only the home's death moves it. `None`
    /// when it is this node, or without a cluster. Such a service hands its stanzas to the
    /// home with [`Core::to_domain_on`] and serves them itself when they arrive there
    /// ([`DomainRoute::deliver_here`]).
    pub fn home_node(&self) -> Option<String> {
        self.cluster.get().and_then(|c| c.home())
    }

    /// In a cluster, hands `stanza` to the route of `domain` on `node` (see
    /// [`Core::home_node`]). False when it cannot be sent: no cluster, or `node` is not
    /// known alive.
    pub fn to_domain_on(&self, node: &str, domain: &Jid, stanza: &Stanza) -> bool {
        self.cluster
            .get()
            .is_some_and(|c| c.to_domain_on(node, domain, Bytes::from(stanza.to_bytes())))
    }

    /// In a cluster, sends a module's note to the same module on every other node
    /// ([`Event::ClusterNote`] there, in the order sent), e.g. "this pubsub node changed in
    /// the store: read it again". `body` is built only in a cluster, so a single node pays
    /// nothing for it. Call after the store committed what the note speaks of.
    pub fn tell_peers(&self, topic: &str, body: impl FnOnce() -> String) {
        if let Some(c) = self.cluster.get() {
            c.note(topic, body());
        }
    }

    /// Tells the other nodes of a cluster that a connection serving `domain` (an XEP-0114
    /// component) attached here (`up`) or left, so that they share its traffic
    /// ([`DomainRoute::peer`] there). Nothing without a cluster.
    pub fn domain_connection(&self, domain: &str, up: bool) {
        if let Some(c) = self.cluster.get() {
            c.domain_connection(domain, up);
        }
    }

    /// In a cluster: `node`'s connection serving `domain` came (`Some`, a remote handle
    /// queueing for it) or went (`None`); handed to the domain's route. False when no route
    /// is registered for `domain` here.
    pub fn set_domain_peer(&self, domain: &str, node: &str, handle: Option<SessionHandle>) -> bool {
        match self.domains.registered(domain) {
            Some(r) => {
                r.peer(node, handle);
                true
            }
            None => false,
        }
    }

    /// A stanza another node of a cluster forwarded to the connection serving `domain` on
    /// this node ([`DomainRoute::deliver_here`]); its sender gets the error if it cannot be
    /// taken.
    pub async fn deliver_to_domain_here(self: &Arc<Self>, domain: &str, bytes: &Bytes) {
        let Some(stanza) = Stanza::from_serialized(bytes) else {
            return;
        };
        let result = match self.domains.registered(domain) {
            Some(r) => r.deliver_here(stanza).await,
            None => Err(Undelivered::new(
                stanza,
                StanzaError::new(StanzaErrorCondition::ServiceUnavailable),
            )),
        };
        if let Err(u) = result {
            self.reply_error(&u.stanza, u.error).await;
        }
    }

    /// In a cluster, asks the nodes where `contact` has available sessions for their presence
    /// on behalf of `prober` (a local session, or an entity of another server whose probe
    /// reached this node; RFC 6121 §4.3): each gets a probe over the bus, which that node's
    /// modules answer (authorization included), since only they know those sessions'
    /// presence. Nothing without a cluster.
    pub fn probe_remote(&self, prober: &Jid, contact: &BareJid) {
        if self.cluster.get().is_none() {
            return;
        }
        for (h, priority) in self.sessions.sessions_of(contact) {
            if h.is_remote() && priority.is_some() {
                let probe = Stanza::presence(
                    PresenceType::Probe,
                    Some(prober.clone()),
                    Some(h.jid().clone()),
                );
                h.send(Bytes::from(probe.to_bytes()));
            }
        }
    }

    /// Registers a session bound on another node (a handle made by
    /// [`SessionHandle::forwarded`], kept by the cluster). A local session of the same full
    /// JID is older (the cluster decided) and is closed with `conflict`, and the modules hear
    /// that it ended — or, if it was handing itself over to that node
    /// ([`SessionHandle::is_moving`]), that it moved; the modules hear nothing of the remote
    /// session itself: its own node's modules serve it. Returns the handle it replaced.
    pub async fn bind_remote(self: &Arc<Self>, handle: SessionHandle) -> Option<SessionHandle> {
        let jid = handle.jid().clone();
        let replaced = self.sessions.bind(handle);
        if let Some(old) = replaced.as_ref().filter(|h| !h.is_remote()) {
            old.close(rookery_proto::StreamError::new(
                rookery_proto::StreamErrorCondition::Conflict,
            ));
            if old.is_moving() {
                // It handed itself over to that node: it goes on there, nobody is told of
                // an end (its task routes what it holds to the new handle).
                self.emit(&Event::Session(SessionEvent::Moved(jid))).await;
                return replaced;
            }
            if let Some(c) = self.cluster.get() {
                c.unbound(&jid);
            }
            self.emit(&Event::Session(SessionEvent::Closed(jid))).await;
        }
        replaced
    }

    /// Removes a session of another node if `id` is still the handle registered for it;
    /// whether it was. The modules hear nothing (see [`Core::bind_remote`]).
    pub fn unbind_remote(&self, jid: &Jid, id: SessionId) -> bool {
        self.sessions.unbind(jid, id)
    }

    /// A local session enabled or disabled XEP-0280 carbons: recorded, and told to the
    /// other nodes of a cluster, which decide carbons for the messages they route.
    pub fn set_carbons(&self, jid: &Jid, on: bool) {
        self.sessions.set_carbons(jid, on);
        if let Some(c) = self.cluster.get() {
            c.carbons(jid, on);
        }
    }

    /// Records that a session of another node enabled or disabled carbons.
    pub fn set_remote_carbons(&self, jid: &Jid, on: bool) {
        self.sessions.set_carbons(jid, on);
    }

    /// Whether the session `jid` enabled XEP-0280 carbons, as this node knows (for a session
    /// of another node: as its node told).
    pub fn carbons_enabled(&self, jid: &Jid) -> bool {
        self.sessions.carbons(jid)
    }

    /// Records the availability of a session of another node (routing only; see
    /// [`Core::set_available`] for local sessions).
    pub fn set_remote_available(&self, jid: &Jid, priority: Option<i8>) {
        self.sessions.set_available(jid, priority)
    }

    /// Routes again a stanza that was handed to `to` but not delivered (its bytes, our own
    /// serialization). For a session (a JID with a localpart) that ended, a message or an
    /// IQ request goes through the route table once more (another resource, offline
    /// storage, or an error for its sender, RFC 6121 §8.5.3.2, RFC 6120 §10.5) and anything
    /// else is dropped. For a domain's route on another node (a service, a component
    /// connection) every stanza does: the route table finds where that domain is served
    /// now (a room's join presence must reach the rooms' new home). Whether it was routed.
    pub async fn route_again(self: &Arc<Self>, to: &Jid, bytes: &Bytes) -> bool {
        let Some(stanza) = Stanza::from_serialized(bytes) else {
            return false;
        };
        if to.local().is_some()
            && !matches!(
                stanza.kind(),
                StanzaKind::Message(_) | StanzaKind::Iq(IqType::Get | IqType::Set)
            )
        {
            return false;
        }
        self.reroute(stanza).await;
        true
    }

    /// Routes again a stanza that was handed to a session which ended before its client
    /// took it (unacknowledged, held, or queued; see [`Core::route_again`] for another
    /// node's): marked so ([`Stanza::mark_routed_again`]), it keeps what the first routing
    /// put on it and is not archived a second time.
    pub async fn reroute(self: &Arc<Self>, mut stanza: Stanza) {
        stanza.mark_routed_again();
        self.route(stanza).await
    }

    /// The session bound to a full JID, if it is a target (see [`Registry::session`]).
    pub fn session(&self, jid: &Jid) -> Option<SessionHandle> {
        self.sessions.session(jid)
    }

    /// All sessions of an account that are targets (see [`Core::session`]), with their
    /// priority if available.
    pub fn sessions_of(&self, bare: &BareJid) -> Vec<(SessionHandle, Option<i8>)> {
        self.sessions.sessions_of(bare)
    }

    /// Whether `bare` has a bound session (no allocation: for fan-out loops over many
    /// accounts, most of them offline).
    pub fn has_sessions(&self, bare: &BareJid) -> bool {
        self.sessions.has_sessions(bare)
    }

    /// Every bound session that is a target, as a snapshot (see [`Registry::all`]).
    pub fn sessions(&self) -> Vec<SessionHandle> {
        self.sessions.all()
    }

    /// Number of bound sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.count()
    }

    /// Bound sessions by transport (see [`Registry::count_by_transport`]).
    pub fn session_count_by_transport(&self) -> [(crate::Transport, usize); 3] {
        self.sessions.count_by_transport()
    }

    /// Ends the session `h` with `reason`: a local one at once; one bound on another node of
    /// a cluster there, by its node (closing the remote handle here would only make this
    /// node take a live session for gone). For what an operator or the account asks
    /// (kick, account removal).
    pub fn end_session(&self, h: &SessionHandle, reason: rookery_proto::StreamError) {
        match self.cluster.get() {
            Some(c) if h.is_remote() => c.close_elsewhere(h.jid(), &reason),
            _ => h.close(reason),
        }
    }

    /// Tells every registered domain route that the server is shutting down
    /// ([`DomainRoute::shutdown`]); before [`Core::close_all`], so that what they send still
    /// reaches the sessions and the federation streams.
    pub async fn shutdown_domains(&self) {
        for route in self.domains.all() {
            route.shutdown().await;
        }
    }

    /// In a cluster, the sessions of a dead node (see [`Event::SessionsLost`]): every
    /// domain route is told, then the modules.
    pub async fn sessions_lost(self: &Arc<Self>, lost: Vec<crate::LostSession>) {
        let jids: Vec<Jid> = lost.iter().map(|s| s.jid.clone()).collect();
        for route in self.domains.all() {
            route.sessions_lost(&jids).await;
        }
        self.emit(&Event::SessionsLost(lost)).await;
    }

    /// Closes every session (server shutdown).
    pub fn close_all(&self, reason: &rookery_proto::StreamError) {
        self.sessions.close_all(reason)
    }

    /// Whether an account exists (online sessions answer without asking the directory).
    pub async fn account_exists(&self, bare: &BareJid) -> bool {
        if self.sessions.has_sessions(bare) {
            return true;
        }
        let Some(local) = bare.local() else {
            return false;
        };
        match self.accounts.exists(bare.domain(), local).await {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "account lookup failed");
                false
            }
        }
    }

    // ---- routing -------------------------------------------------------------------------

    /// Routes a stanza a local client session sent (its `from` already stamped with the
    /// session's full JID): runs [`HookPoint::MessageFromLocal`], [`HookPoint::PresenceFromLocal`]
    /// (presence with a `to`; broadcasts go to [`HookPoint::PresenceBroadcast`] in `route`) or
    /// [`HookPoint::IqFromLocal`], then [`Core::route`].
    pub async fn route_from_session(self: &Arc<Self>, stanza: Stanza) {
        let stanza = self.without_our_delays(stanza);
        let point = match stanza.kind() {
            StanzaKind::Message(_) => Some(HookPoint::MessageFromLocal),
            StanzaKind::Presence(_) if stanza.to().is_some() => Some(HookPoint::PresenceFromLocal),
            StanzaKind::Presence(_) => None,
            StanzaKind::Iq(_) => Some(HookPoint::IqFromLocal),
        };
        let stanza = match point {
            Some(p) => match self.run_hooks(p, stanza).await {
                Some(s) => s,
                None => return,
            },
            None => stanza,
        };
        self.route(stanza).await
    }

    /// Routes a stanza a peer sent — another server, or an external component (XEP-0114) —
    /// its addresses checked: a `<delay/>` in the name of a domain hosted here is dropped
    /// first, as for a client's ([`Core::route`] after). A component speaks for its own
    /// domain, not for the server's.
    pub async fn route_from_peer(self: &Arc<Self>, stanza: Stanza) {
        let stanza = self.without_our_delays(stanza);
        self.route(stanza).await
    }

    /// `stanza` without a delayed-delivery notation (XEP-0203, or the XEP-0091 one clients
    /// still read) whose `from` is a domain hosted here: only this server stamps those (its
    /// offline storage, a session's undelivered stanzas routed again), so one that came
    /// from a client or a peer (server or component) is forged, and would pass for the server's word on when the
    /// message was stored (XEP-0203 §6: the server SHOULD discard it).
    fn without_our_delays(&self, mut stanza: Stanza) -> Stanza {
        let ours = |c: &Element| {
            (c.is("delay", rookery_proto::ns::DELAY) || c.is("x", LEGACY_DELAY))
                && c.attr("from")
                    .and_then(|f| Jid::parse(f).ok())
                    .is_some_and(|f| f.local().is_none() && self.is_local_domain(f.domain()))
        };
        if stanza.element().children().any(ours) {
            stanza.remove_payload_where(ours);
        }
        stanza
    }

    /// Sends an IQ `get` or `set` from the hosted domain `host` (the one the request is on
    /// behalf of: an account's host, [`Core::host_of`]) to `to` and waits up to `timeout`
    /// for its answer (a `result` or `error` stanza); `None` on timeout.
    pub async fn request(
        self: &Arc<Self>,
        t: IqType,
        host: BareJid,
        to: Jid,
        payload: Element,
        timeout: Duration,
    ) -> Option<Stanza> {
        let (id, rx) = self.requests.open(to.clone());
        let iq = Stanza::iq(t, &id, Some(host.into()), Some(to), payload);
        self.route(iq).await;
        let answer = tokio::time::timeout(timeout, rx).await;
        self.requests.close(&id);
        answer.ok().and_then(Result::ok)
    }

    /// Serves an IQ of type `t` with `payload` from the session `from` to its own account,
    /// as an inline feature of a bind stands for it (XEP-0386 Bind2: carbons `<enable/>`,
    /// the archive's `<metadata/>`): the module that serves it runs as for the IQ, but no
    /// result goes to the session; the result's payload is returned for the bind's answer.
    /// `Err` when no module serves it or it failed.
    pub async fn serve_inline_iq(
        self: &Arc<Self>,
        t: IqType,
        from: &Jid,
        payload: Element,
    ) -> Result<Option<Element>, StanzaError> {
        let account = from.to_bare();
        let iq = Stanza::iq(
            t,
            "inline",
            Some(from.clone()),
            Some(account.clone().into()),
            payload,
        );
        let Some(module) = self.iq_handler(IqTarget::Account, &iq).cloned() else {
            return Err(StanzaError::new(StanzaErrorCondition::ServiceUnavailable));
        };
        let reply = module.reply_iq(self, &account, &iq).await?;
        for s in reply.then {
            Box::pin(self.route(s)).await;
        }
        Ok(match reply.result {
            IqResultBody::Payload(payload) => payload,
            // Only the big list gets (roster, block list) answer this way, and no inline
            // feature is one.
            IqResultBody::Serialized(_) => None,
        })
    }

    /// Routes a stanza whose `from` the caller has already stamped or checked.
    pub async fn route(self: &Arc<Self>, stanza: Stanza) {
        let _timer = rookery_metrics::get().route(stanza.kind());
        let to = stanza.to().cloned();
        match to {
            None => self.route_no_to(stanza).await,
            Some(to) if self.is_local_domain(to.domain()) => {
                if to.local().is_none() {
                    return self.route_to_server(stanza, to.to_bare()).await;
                }
                let Some(stanza) = self.run_hooks(HookPoint::ToLocalAccount, stanza).await else {
                    return;
                };
                if to.is_bare() {
                    self.route_to_bare(stanza, to.to_bare()).await;
                } else {
                    self.route_to_full(stanza, &to).await;
                }
            }
            Some(to) => match self.domains.route_for(to.domain()) {
                Some(r) => {
                    if let Err(u) = r.deliver(stanza).await {
                        self.reply_error(&u.stanza, u.error).await;
                    }
                }
                None => {
                    self.reply_error(
                        &stanza,
                        StanzaError::new(StanzaErrorCondition::RemoteServerNotFound),
                    )
                    .await
                }
            },
        }
    }

    /// Sends the error reply to `stanza` (never for error stanzas). A message its
    /// recipient's archive took in this routing ([`Stanza::is_archived`]) bounces: the
    /// archive is told first ([`Event::MessageBounced`]).
    pub async fn reply_error(self: &Arc<Self>, stanza: &Stanza, error: StanzaError) {
        if stanza.is_archived() {
            self.emit(&Event::MessageBounced(stanza.clone())).await;
        }
        if let Some(reply) = stanza.error_reply(&error) {
            Box::pin(self.route(reply)).await;
        }
    }

    /// Answers `stanza` with `service-unavailable`: the one reply for what nothing here
    /// handles (RFC 6120 §8.3.3.19, RFC 6121 §8.5).
    async fn reply_unavailable(self: &Arc<Self>, stanza: &Stanza) {
        self.reply_error(
            stanza,
            StanzaError::new(StanzaErrorCondition::ServiceUnavailable),
        )
        .await
    }

    /// Runs the hooks of `point`; returns the stanza if none handled it.
    pub async fn run_hooks(self: &Arc<Self>, point: HookPoint, stanza: Stanza) -> Option<Stanza> {
        let mut stanza = stanza;
        for m in self.tables.hooked(point) {
            match m.hook(self, point, stanza).await {
                Flow::Continue(s) => stanza = s,
                Flow::Handled => return None,
            }
        }
        Some(stanza)
    }

    async fn route_no_to(self: &Arc<Self>, stanza: Stanza) {
        match stanza.kind() {
            StanzaKind::Presence(_) => {
                if let Some(s) = self.run_hooks(HookPoint::PresenceBroadcast, stanza).await {
                    self.default_presence_broadcast(&s);
                }
            }
            StanzaKind::Iq(IqType::Get | IqType::Set) => {
                let Some(account) = stanza.from().map(Jid::to_bare) else {
                    let primary = self.domain_jid().clone();
                    return self.route_to_server(stanza, primary).await;
                };
                if self.iq_handler(IqTarget::Account, &stanza).is_some() {
                    self.handle_iq(IqTarget::Account, &account, stanza).await;
                } else {
                    let host = self.host_of(&account);
                    self.handle_iq(IqTarget::Server, &host, stanza).await;
                }
            }
            StanzaKind::Iq(_) => self.answer_request(stanza),
            StanzaKind::Message(_) => {
                // RFC 6120 §10.3.1: as if addressed to the sender's bare JID.
                if let Some(account) = stanza.from().map(Jid::to_bare) {
                    self.route_to_bare(stanza, account).await;
                }
            }
        }
    }

    /// A stanza to `host` itself (a hosted domain's JID): its server IQ handlers answer
    /// as that host.
    async fn route_to_server(self: &Arc<Self>, stanza: Stanza, host: BareJid) {
        match stanza.kind() {
            StanzaKind::Iq(IqType::Get | IqType::Set) => {
                self.handle_iq(IqTarget::Server, &host, stanza).await
            }
            StanzaKind::Iq(_) => self.answer_request(stanza),
            StanzaKind::Message(MessageType::Chat | MessageType::Normal) => {
                self.reply_unavailable(&stanza).await
            }
            _ => {}
        }
    }

    fn iq_handler(&self, target: IqTarget, iq: &Stanza) -> Option<&Arc<dyn Module>> {
        let p = iq.payload()?;
        self.tables.iq_handler(target, p.ns(), p.name())
    }

    async fn handle_iq(self: &Arc<Self>, target: IqTarget, to: &BareJid, iq: Stanza) {
        let Some(module) = self.iq_handler(target, &iq) else {
            return self.reply_unavailable(&iq).await;
        };
        let module = module.clone();
        match module.reply_iq(self, to, &iq).await {
            Ok(reply) => {
                match reply.result {
                    IqResultBody::Payload(payload) => {
                        Box::pin(self.route(iq_result_for(&iq, to, payload))).await;
                    }
                    IqResultBody::Serialized(bytes) => self.deliver_serialized(&iq, bytes),
                }
                for s in reply.then {
                    Box::pin(self.route(s)).await;
                }
            }
            Err(e) => self.reply_error(&iq, e).await,
        }
    }

    /// Hands a result a module serialized itself ([`IqResultBody::Serialized`]) to the
    /// session that sent `iq`, as routing a result to it would (no hook stops a result
    /// between a session and its own account); dropped if that session is gone, as a
    /// result to it would be.
    fn deliver_serialized(&self, iq: &Stanza, bytes: Bytes) {
        if let Some(session) = iq.from().and_then(|from| self.session(from)) {
            session.send(bytes);
        }
    }

    async fn route_to_bare(self: &Arc<Self>, stanza: Stanza, to: BareJid) {
        match stanza.kind() {
            StanzaKind::Iq(IqType::Get | IqType::Set) => {
                if self.account_exists(&to).await {
                    self.handle_iq(IqTarget::Account, &to, stanza).await
                } else if let Some(empty) = crate::modules::disco::items_of_nobody(&stanza) {
                    Box::pin(self.route(stanza.iq_result(Some(empty)))).await
                } else {
                    self.reply_unavailable(&stanza).await
                }
            }
            StanzaKind::Iq(_) => {}
            StanzaKind::Presence(_) => {
                let _ = self.run_hooks(HookPoint::PresenceToAccount, stanza).await;
            }
            StanzaKind::Message(t) => {
                if !self.account_exists(&to).await {
                    // RFC 6121 §8.5.2.2.3 / §8.5.2.1.3: no such user.
                    if !matches!(t, MessageType::Headline | MessageType::Groupchat) {
                        self.reply_unavailable(&stanza).await;
                    }
                    return;
                }
                if let Some(s) = self.run_hooks(HookPoint::MessageToBare, stanza).await {
                    self.default_message_to_bare(s, &to).await;
                }
            }
        }
    }

    async fn route_to_full(self: &Arc<Self>, stanza: Stanza, to: &Jid) {
        if let Some(session) = self.session(to) {
            if let StanzaKind::Presence(
                PresenceType::Subscribe
                | PresenceType::Subscribed
                | PresenceType::Unsubscribe
                | PresenceType::Unsubscribed
                | PresenceType::Probe,
            ) = stanza.kind()
            {
                // RFC 6121 §3.1.3 et al.: subscription presence is handled for the account.
                let _ = self.run_hooks(HookPoint::PresenceToAccount, stanza).await;
                return;
            }
            let hooked = match stanza.kind() {
                StanzaKind::Message(_) => Some(HookPoint::MessageToFull),
                StanzaKind::Iq(IqType::Get | IqType::Set) => Some(HookPoint::IqToFull),
                _ => None,
            };
            let stanza = match hooked {
                Some(point) => match self.run_hooks(point, stanza).await {
                    Some(s) => s,
                    None => return,
                },
                None => stanza,
            };
            session.send(Bytes::from(stanza.to_bytes()));
            return;
        }
        match stanza.kind() {
            StanzaKind::Iq(IqType::Get | IqType::Set) => self.reply_unavailable(&stanza).await,
            StanzaKind::Iq(_) => {}
            StanzaKind::Presence(_) => {
                let _ = self.run_hooks(HookPoint::PresenceToAccount, stanza).await;
            }
            StanzaKind::Message(t) => {
                let Some(s) = self
                    .run_hooks(HookPoint::MessageToMissingResource, stanza)
                    .await
                else {
                    return;
                };
                // RFC 6121 §8.5.3.2.1: only a chat message is handled as if sent to the
                // bare JID; normal and groupchat get an error (option b, so the sender
                // learns the resource is gone), headline and error are ignored.
                match t {
                    MessageType::Chat => self.route_to_bare(s, to.to_bare()).await,
                    MessageType::Normal | MessageType::Groupchat => {
                        self.reply_unavailable(&s).await
                    }
                    MessageType::Headline | MessageType::Error => {}
                }
            }
        }
    }

    /// RFC 6121 §8.5.2.1: deliver to the available resources with the highest non-negative
    /// priority (headline: all non-negative); with none, bounce chat/normal (§8.5.2.2) unless a
    /// module (offline storage) took it first.
    async fn default_message_to_bare(self: &Arc<Self>, stanza: Stanza, to: &BareJid) {
        let sessions = self.sessions_of(to);
        let eligible: Vec<(SessionHandle, i8)> = sessions
            .into_iter()
            .filter_map(|(h, p)| p.filter(|p| *p >= 0).map(|p| (h, p)))
            .collect();
        let t = match stanza.kind() {
            StanzaKind::Message(t) => t,
            _ => return,
        };
        if eligible.is_empty() {
            if matches!(t, MessageType::Normal | MessageType::Chat) {
                self.reply_unavailable(&stanza).await;
            }
            return;
        }
        let top = eligible.iter().map(|(_, p)| *p).max().unwrap_or(0);
        let bytes = Bytes::from(stanza.to_bytes());
        for (h, p) in eligible {
            if t == MessageType::Headline || p == top {
                h.send(bytes.clone());
            }
        }
    }

    /// Without a presence module: record availability and show it to the other resources.
    fn default_presence_broadcast(&self, stanza: &Stanza) {
        let Some(from) = stanza.from() else { return };
        let priority = presence_priority(stanza);
        match stanza.kind() {
            StanzaKind::Presence(PresenceType::Available) => {
                self.set_available(from, Some(priority))
            }
            StanzaKind::Presence(PresenceType::Unavailable) => self.set_available(from, None),
            _ => {}
        }
    }

    /// Sends serialized bytes to every session in `targets` (fan-out shares one buffer).
    pub fn fan_out(&self, targets: &[SessionHandle], bytes: &Bytes) {
        for t in targets {
            t.send(bytes.clone());
        }
    }
}

/// The `<priority/>` of a presence stanza (RFC 6121 §4.7.2.3), 0 when absent or invalid.
pub fn presence_priority(stanza: &Stanza) -> i8 {
    stanza
        .element()
        .child_text("priority", rookery_xml::CONTENT_NS)
        .and_then(|t| t.trim().parse::<i8>().ok())
        .unwrap_or(0)
}

#[cfg(test)]
#[path = "router_tests.rs"]
pub(crate) mod tests;
