//! Server-to-server federation (RFC 6120 §4–§6, §13; XEP-0220 Server Dialback with XEP-0185
//! keys; XEP-0178 SASL EXTERNAL; XEP-0368 direct TLS; DNS SRV per RFC 6120 §3.2).
//!
//! Layout:
//! - [`config`]: `[s2s]` settings and their defaults;
//! - [`backoff`]: domains we could not reach bounce their stanzas at once for a while;
//! - [`dialback`]: `db:result`/`db:verify` elements and keys (sans-IO);
//! - [`external`]: SASL EXTERNAL decisions (sans-IO);
//! - `accepting`: the receiving side's negotiation machine (sans-IO): header, STARTTLS,
//!   SASL EXTERNAL, on the shared steps of `rookery_stream::negotiation`;
//! - `initiating`: the initiating side's negotiation machine (sans-IO): header, STARTTLS,
//!   SASL EXTERNAL or the dialback request;
//! - `sending`: the bound phase of an outgoing stream, a policy on the shared loop;
//! - [`trust`]: the `from`/`to` rule of incoming streams (sans-IO);
//! - [`srv`]: static routes, SRV ordering (sans-IO) and DNS lookups;
//! - [`tls`]: TLS configurations and certificate validation for a domain;
//! - `incoming`: the listener — STARTTLS/direct TLS, SASL EXTERNAL, then the shared bound-stream
//!   loop (`rookery_stream::pump`) with the s2s trust rule; dialback requests are answered
//!   asynchronously through the stream's outbound queue;
//! - `outgoing`: one connection task per (local domain, remote domain) pair with a queue
//!   bounded in stanzas and in bytes (`queue`; the bytes over all pairs too): resolve,
//!   connect, STARTTLS, SASL EXTERNAL or dialback, then write stanzas until idle; on failure
//!   every queued stanza bounces (`remote-server-not-found` / `remote-server-timeout`), and so
//!   do new ones for that domain during a back-off period.
//!
//! [`S2s`] ties them together and is the core's remote route ([`DomainRoute`]): every stanza
//! for a domain that is neither ours nor a component's comes to [`S2s::deliver`].
//!
//! At shutdown ([`S2s::close_all`]) every stream, incoming (negotiating or bound) and
//! outgoing, ends with the `system-shutdown` stream error and `</stream:stream>`. An
//! authenticated outgoing stream first writes what is queued for it (briefly bounded);
//! stanzas it could not send, and any routed to other servers afterwards, bounce with
//! `service-unavailable`.
//!
//! Verification requests of the receiving role (`db:verify` to the authoritative server) are
//! sent on the outgoing stream of the same domain pair as soon as that stream is open, before
//! it is authenticated itself, so two servers dialing back each other cannot deadlock.

mod accepting;
pub mod backoff;
pub mod config;
pub mod dialback;
pub mod external;
mod incoming;
mod initiating;
mod outgoing;
mod queue;
mod sending;
pub mod srv;
pub mod tls;
pub mod trust;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use dashmap::DashMap;
use rookery_core::{Core, DomainRoute, SessionHandle, SessionId, Undelivered};
use rookery_proto::{Stanza, StanzaError, StreamError, StreamErrorCondition};
use tokio::net::TcpListener;

pub use config::S2sConfig;
pub use outgoing::OutAuth;
pub use tls::S2sTls;

/// How a listener starts its streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plain TCP, then STARTTLS (RFC 6120 §5), port 5269.
    StartTls,
    /// TLS from the first byte with ALPN `xmpp-server` (XEP-0368), port 5270.
    DirectTls,
}

/// Why federation could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum S2sError {
    /// A static route is malformed.
    #[error("s2s route for {domain:?}: {reason}")]
    Route {
        /// The domain.
        domain: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// `dns_server` is not `ip:port`.
    #[error("s2s.dns_server {0:?} is not ip:port")]
    DnsServer(String),
    /// TLS settings.
    #[error(transparent)]
    Tls(#[from] tls::TlsSetupError),
    /// The dialback secret could not be read or written.
    #[error("dialback secret: {0}")]
    Secret(#[from] std::io::Error),
}

/// Federation state shared by the listener, the outgoing connections and the router.
pub struct S2s {
    me: Weak<S2s>,
    core: Arc<Core>,
    config: S2sConfig,
    tls: S2sTls,
    secret: dialback::Secret,
    resolver: srv::Resolver,
    pool: DashMap<(String, String), outgoing::Entry>,
    /// The bytes of the stanzas queued for every outgoing stream (`queue_total_bytes`).
    queued: Arc<queue::Budget>,
    backoff: backoff::Backoff,
    /// New incoming connections per IP address (IPv6 by /64) and minute.
    connection_rate: rookery_stream::RateLimit<rookery_stream::IpKey>,
    /// The cap on incoming connections, shared by both s2s ports.
    connections: rookery_stream::ConnectionCap,
    next_id: AtomicU64,
    /// Set once by [`S2s::close_all`]; every stream task watches it.
    closing: tokio::sync::watch::Sender<bool>,
    /// Bound incoming streams, to close at shutdown or by an administrator, with what each
    /// authenticated.
    incoming: DashMap<SessionId, (SessionHandle, Arc<std::sync::Mutex<trust::Authenticated>>)>,
    /// Incoming connection tasks alive (negotiating or bound).
    incoming_live: AtomicUsize,
}

impl S2s {
    /// Builds the federation state. Static routes and `dns_server` are checked here.
    pub fn new(
        core: Arc<Core>,
        config: S2sConfig,
        tls: S2sTls,
        secret: dialback::Secret,
    ) -> Result<Arc<S2s>, S2sError> {
        let mut routes = std::collections::HashMap::new();
        for (domain, target) in &config.routes {
            let d = rookery_jid::normalize_domain(domain).map_err(|_| S2sError::Route {
                domain: domain.clone(),
                reason: "not a domain",
            })?;
            let t = srv::Target::parse_route(target).ok_or_else(|| S2sError::Route {
                domain: domain.clone(),
                reason: "expected host:port or tls://host:port",
            })?;
            routes.insert(d, t);
        }
        let dns_server = match &config.dns_server {
            Some(s) => Some(
                s.parse::<SocketAddr>()
                    .map_err(|_| S2sError::DnsServer(s.clone()))?,
            ),
            None => None,
        };
        let resolver = srv::Resolver::new(routes, config.dns, dns_server);
        let connection_rate = rookery_stream::RateLimit::new(config.connections_per_ip_per_minute);
        let backoff = backoff::Backoff::new(
            std::time::Duration::from_secs(config.backoff_initial_secs),
            std::time::Duration::from_secs(config.backoff_max_secs),
        );
        let connections = rookery_stream::ConnectionCap::with_limits(config.connection_limits());
        let queued = queue::Budget::new(config.queue_total_bytes);
        Ok(Arc::new_cyclic(|me| S2s {
            me: me.clone(),
            core,
            config,
            tls,
            secret,
            resolver,
            pool: DashMap::new(),
            queued,
            backoff,
            connection_rate,
            connections,
            next_id: AtomicU64::new(1),
            closing: tokio::sync::watch::Sender::new(false),
            incoming: DashMap::new(),
            incoming_live: AtomicUsize::new(0),
        }))
    }

    /// Everything the server binary needs: trust anchors from the config, TLS from our
    /// certificate, the dialback secret from the config or `<data_dir>/dialback.secret`.
    pub fn setup(
        core: Arc<Core>,
        config: S2sConfig,
        cert: Arc<rookery_stream::LiveCert>,
        data_dir: &Path,
    ) -> Result<Arc<S2s>, S2sError> {
        let roots = tls::roots(config.use_webpki_roots, config.ca_file.as_deref())?;
        let tls = S2sTls::with_cert(cert, roots)?;
        let secret = match &config.dialback_secret {
            Some(s) => dialback::Secret::new(s.as_bytes()),
            None => dialback::Secret::load_or_create(&data_dir.join("dialback.secret"))?,
        };
        S2s::new(core, config, tls, secret)
    }

    /// The core.
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// The settings.
    pub fn config(&self) -> &S2sConfig {
        &self.config
    }

    /// Declares dialback's namespace on the stream headers `conn` writes, when dialback is
    /// on: the declaration is how a peer learns we support it (XEP-0220 §2.3.1).
    pub(crate) fn declare_dialback(&self, conn: &mut rookery_stream::Conn) {
        if self.config.dialback {
            conn.set_header_extra(dialback::HEADER_EXTRA);
        }
    }

    /// Whether we serve `domain` (our own, or a component's / service's).
    pub fn is_hosted(&self, domain: &str) -> bool {
        self.core.is_local_domain(domain) || self.core.has_domain_route(domain)
    }

    /// How long stanzas for `domain` still bounce without a connection attempt, if it is in
    /// back-off (an outgoing stream to it failed recently).
    pub fn backoff_remaining(&self, domain: &str) -> Option<std::time::Duration> {
        self.backoff
            .check(domain, tokio::time::Instant::now())
            .map(|r| r.retry_in)
    }

    /// Applies reloaded connection limits (`max_connections*`, `max_negotiating`,
    /// `connections_per_ip_per_minute`) to the listeners from now on; the other settings
    /// change at restart.
    pub fn set_limits(&self, config: &S2sConfig) {
        self.connections.set_limits(config.connection_limits());
        self.connection_rate
            .set_max(config.connections_per_ip_per_minute);
    }

    /// Number of outgoing streams (connected or connecting).
    pub fn outgoing_count(&self) -> usize {
        self.pool.len()
    }

    /// Bytes of the stanzas waiting in outgoing queues (`queue_total_bytes` bounds them).
    pub fn queued_bytes(&self) -> usize {
        self.queued.used()
    }

    /// Number of incoming connections (negotiating or bound).
    pub fn incoming_count(&self) -> usize {
        self.incoming_live.load(Ordering::Relaxed)
    }

    /// Ends every server-to-server stream for a shutdown: each gets the `system-shutdown`
    /// stream error and `</stream:stream>`; authenticated outgoing streams write what
    /// is queued first, and what cannot be sent bounces; from now on stanzas for other
    /// servers bounce and no connection is made or accepted. The streams end in their own tasks: wait for [`S2s::outgoing_count`] and
    /// [`S2s::incoming_count`] to reach zero.
    pub fn close_all(&self) {
        let _ = self.closing.send_replace(true);
        for e in self.incoming.iter() {
            e.value().0.close(shutdown_error());
        }
    }

    /// The remote domains each bound incoming stream authenticated (an empty list: one that
    /// has not authenticated any yet), sorted.
    pub fn incoming(&self) -> Vec<Vec<String>> {
        let mut v: Vec<Vec<String>> = self
            .incoming
            .iter()
            .map(|e| e.value().1.lock().map(|a| a.remotes()).unwrap_or_default())
            .collect();
        v.sort();
        v
    }

    /// Closes every stream with `remote`, outgoing and incoming, with a `policy-violation`
    /// stream error saying `reason` (an administrator's decision); outgoing ones write what
    /// they have queued first. Returns how many were closed. A stanza for the domain later
    /// opens a new stream, and the remote server may connect again.
    pub fn close_remote(&self, remote: &str, reason: &str) -> usize {
        let error = StreamError::with_text(StreamErrorCondition::PolicyViolation, reason);
        let mut closed = 0;
        for e in self.incoming.iter() {
            let (handle, auth) = e.value();
            if auth.lock().is_ok_and(|a| a.knows(remote)) {
                handle.close(error.clone());
                closed += 1;
            }
        }
        closed + self.close_outgoing(remote, &error)
    }

    /// Whether [`S2s::close_all`] was called.
    pub fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// Resolves once [`S2s::close_all`] is called (at once if it was).
    pub(crate) fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.closing.subscribe();
        async move {
            let _ = rx.wait_for(|c| *c).await;
        }
    }

    /// Counts a new incoming connection from `ip`; false when it is over
    /// `connections_per_ip_per_minute` (0: no limit).
    fn admit(&self, ip: std::net::IpAddr) -> bool {
        self.config.connections_per_ip_per_minute == 0
            || self.connection_rate.hit(rookery_stream::IpKey::from(ip))
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn arc(&self) -> Option<Arc<S2s>> {
        self.me.upgrade()
    }
}

#[async_trait]
impl DomainRoute for S2s {
    async fn deliver(&self, stanza: Stanza) -> Result<(), Box<Undelivered>> {
        match self.arc() {
            Some(me) => me.send_stanza(stanza),
            None => Err(Undelivered::new(
                stanza,
                StanzaError::new(rookery_proto::StanzaErrorCondition::RemoteServerNotFound),
            )),
        }
    }
}

/// The stream error every s2s stream ends with at shutdown.
pub(crate) fn shutdown_error() -> StreamError {
    StreamError::with_text(
        StreamErrorCondition::SystemShutdown,
        "the server is shutting down",
    )
}

/// Accepts server connections on `listener` until the task is dropped, within
/// `[s2s] max_connections` (shared by both s2s ports).
pub async fn run(listener: TcpListener, mode: Mode, s2s: Arc<S2s>) {
    let cap = s2s.connections.clone();
    rookery_stream::accept_loop(listener, cap, |tcp, peer| {
        incoming::serve(s2s.clone(), tcp, peer, mode)
    })
    .await;
}
