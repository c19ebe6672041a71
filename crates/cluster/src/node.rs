//! The running node: the NATS connection and the tasks around it (docs/clustering.md).
//!
//! - **control** task: reads `rookery.<domain>.control` (heartbeats, hello, registry changes
//!   and snapshots of the other nodes) and keeps the core's registry current with remote
//!   [`SessionHandle`]s;
//! - **inbox** task: reads `rookery.<domain>.node.<id>`, the stanza batches for this node's
//!   sessions, writes each into its session's queue (or routes it again when the session is
//!   gone) and acknowledges the batches, several with one reply (see [`ACK_DELAY`]);
//! - a **forwarder** per other node: takes what the core wrote into that node's remote
//!   handles and sends it as one batch per wake-up (so a fan-out costs one bus message per
//!   node, not per recipient; with `batch_delay_ms`, at most one batch per delay), keeping
//!   each batch until an acknowledgement covers it; a node without subscribers (killed) is
//!   taken for dead at once, a bus that is down bounces the stanzas with
//!   `recipient-unavailable`;
//! - **acks** task: reads `rookery.<domain>.ack.<id>.>`, the other nodes' acknowledgements
//!   (and the bus's "no responders" for a batch nobody took), and hands each to its forwarder;
//! - **notes** task: hands the other nodes' modules' notes (`Core::tell_peers`) to this
//!   node's modules, in order, without holding up the control task (a note may make a module
//!   read the store);
//! - **handover** task: reads `rookery.<domain>.handover.<id>`, the other nodes' requests to
//!   hand over a hibernated XEP-0198 session of this node (their client resumed it there),
//!   each answered from a task of its own by the session's task (`Core::hand_over`);
//! - **heartbeat** task: says this node is alive and expires the silent ones (the lease).

use std::collections::VecDeque;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::{Client, Event as BusEvent, StatusCode, Subject};
use bytes::Bytes;
use futures_util::StreamExt;
use rookery_core::cluster::{Handover, HANDOVER_TIMEOUT};
use rookery_core::deadline::after;
use rookery_core::{
    ClusterLink, Core, Event, HandoverAsk, HandoverRefusal, LostSession, SessionHandle, SessionId,
    Template,
};
use rookery_jid::{BareJid, Jid};
use rookery_proto::{
    PresenceType, Stanza, StanzaError, StanzaErrorCondition, StanzaKind, StreamError,
    StreamErrorCondition,
};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::config::ClusterConfig;
use crate::membership::{Heard, Membership};
use crate::remote::{Proxy, Remote};
use crate::wire::{
    decode_batch, encode_batch, Control, HandoverReply, HandoverRequest, RefusalReason, SessionInfo,
};

/// Bytes of stanzas gathered into one bus message at most (NATS' default payload limit is
/// 1 MiB).
const MAX_BATCH_BYTES: usize = 512 * 1024;

/// Sessions per part of a registry snapshot.
const SNAPSHOT_PART: usize = 1_000;

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Locks, recovering from poisoning (a panic elsewhere must not wedge routing).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The subjects of one domain's cluster.
#[derive(Debug, Clone)]
struct Subjects {
    control: String,
    prefix: String,
    /// `rookery.<domain>.handover.`, then the node.
    handovers: String,
    /// `rookery.<domain>.ack.<this node>.`: a batch this node sends names
    /// `<acks><forwarder>.<sequence>` as its reply subject.
    acks: String,
}

impl Subjects {
    fn new(domain: &str, node: &str) -> Self {
        Subjects {
            control: format!("rookery.{domain}.control"),
            prefix: format!("rookery.{domain}.node."),
            handovers: format!("rookery.{domain}.handover."),
            acks: format!("rookery.{domain}.ack.{node}."),
        }
    }

    fn node(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }

    /// Where node `id` takes requests to hand a hibernated session over.
    fn handover(&self, id: &str) -> String {
        format!("{}{id}", self.handovers)
    }

    /// What this node subscribes to for the acknowledgements of its batches.
    fn acks_wildcard(&self) -> String {
        format!("{}>", self.acks)
    }

    /// The reply subject of batch `seq` of forwarder `forwarder`.
    fn ack(&self, forwarder: u64, seq: u64) -> String {
        format!("{}{forwarder}.{seq}", self.acks)
    }

    /// (forwarder, sequence) of an acknowledgement's subject.
    fn parse_ack(&self, subject: &str) -> Option<(u64, u64)> {
        let (forwarder, seq) = subject.strip_prefix(&self.acks)?.split_once('.')?;
        Some((forwarder.parse().ok()?, seq.parse().ok()?))
    }
}

/// One of this node's sessions, as the others are told.
#[derive(Debug, Clone, Copy)]
struct Local {
    at: u64,
    priority: Option<i8>,
    carbons: bool,
}

/// Shared state of the running node.
pub(crate) struct Inner {
    core: Arc<Core>,
    client: Client,
    node: String,
    epoch: u64,
    subjects: Subjects,
    config: ClusterConfig,
    connected: AtomicBool,
    local: Mutex<HashMap<Jid, Local>>,
    remote: Mutex<Remote>,
    /// A forwarder's queue per other node.
    forwarders: Mutex<HashMap<String, mpsc::UnboundedSender<(Jid, Bytes)>>>,
    /// Each running forwarder's acknowledgements, by the forwarder's number (a forwarder
    /// still settling its batches for a node taken for dead runs beside its successor).
    acks: Mutex<HashMap<u64, mpsc::UnboundedSender<Ack>>>,
    /// The next forwarder's number.
    next_forwarder: AtomicU64,
    members: Mutex<Membership>,
    /// Which local sessions were shown a remote resource available (from the presence
    /// bytes this node delivered), so that they can be told when its node dies.
    seen: Mutex<HashMap<Jid, HashSet<Jid>>>,
    /// The component domains with a connection on this node.
    components: Mutex<HashSet<String>>,
    /// The component connections of the other nodes: (node, domain) → the remote handle
    /// given to the domain's route.
    remote_components: Mutex<HashMap<(String, String), SessionHandle>>,
    /// Snapshots being received, per node.
    incoming: Mutex<HashMap<String, HashSet<Jid>>>,
    outbox: mpsc::UnboundedSender<Control>,
    /// The other nodes' notes for this node's modules (topic, body).
    notes: mpsc::UnboundedSender<(String, String)>,
}

/// A node of a cluster (see the crate documentation).
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

/// Why the cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `[cluster]` is inconsistent.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The NATS URL is not one.
    #[error("connecting to NATS at {url}: {error}")]
    Connect {
        /// The URL.
        url: String,
        /// What the client said.
        error: String,
    },
    /// Subscribing failed.
    #[error("subscribing on the cluster bus: {0}")]
    Subscribe(String),
}

/// What the admin view shows of the cluster.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterStatus {
    /// This node.
    pub node: String,
    /// Whether the bus is connected.
    pub connected: bool,
    /// The other nodes alive.
    pub peers: Vec<String>,
    /// Sessions bound here.
    pub local_sessions: usize,
    /// Sessions per other node, as known here.
    pub remote_sessions: Vec<(String, usize)>,
}

impl Cluster {
    /// Connects to NATS and starts the node's tasks; the core hears of nothing until this
    /// returns, so call it before any listener opens. A bus that is down at start is retried
    /// in the background: the node serves its own sessions meanwhile.
    pub async fn start(
        core: Arc<Core>,
        config: ClusterConfig,
        node: String,
    ) -> Result<Cluster, StartError> {
        config.validate()?;
        let url = config.nats_url.clone().unwrap_or_default();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let client = async_nats::ConnectOptions::new()
            .name(format!("rookery {node}"))
            .retry_on_initial_connect()
            .event_callback(move |e| {
                let tx = events_tx.clone();
                async move {
                    let _ = tx.send(e);
                }
            })
            .connect(url.as_str())
            .await
            .map_err(|e| StartError::Connect {
                url: url.clone(),
                error: e.to_string(),
            })?;
        let subjects = Subjects::new(core.domain(), &node);
        let control = client
            .subscribe(subjects.control.clone())
            .await
            .map_err(|e| StartError::Subscribe(e.to_string()))?;
        let inbox = client
            .subscribe(subjects.node(&node))
            .await
            .map_err(|e| StartError::Subscribe(e.to_string()))?;
        let acks = client
            .subscribe(subjects.acks_wildcard())
            .await
            .map_err(|e| StartError::Subscribe(e.to_string()))?;
        let handovers = client
            .subscribe(subjects.handover(&node))
            .await
            .map_err(|e| StartError::Subscribe(e.to_string()))?;
        let (outbox, outbox_rx) = mpsc::unbounded_channel();
        let (notes, notes_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            core: core.clone(),
            connected: AtomicBool::new(matches!(
                client.connection_state(),
                async_nats::connection::State::Connected
            )),
            client,
            node,
            epoch: now_ms(),
            subjects,
            members: Mutex::new(Membership::new(config.lease())),
            config,
            local: Mutex::default(),
            remote: Mutex::default(),
            forwarders: Mutex::default(),
            acks: Mutex::default(),
            next_forwarder: AtomicU64::new(0),
            seen: Mutex::default(),
            components: Mutex::default(),
            remote_components: Mutex::default(),
            incoming: Mutex::default(),
            outbox,
            notes,
        });
        core.set_cluster(Arc::new(Link(inner.clone())));
        tokio::spawn(publish(inner.clone(), outbox_rx));
        tokio::spawn(control_loop(inner.clone(), control));
        tokio::spawn(notes_loop(core.clone(), notes_rx));
        tokio::spawn(inbox_loop(inner.clone(), inbox));
        tokio::spawn(acks_loop(inner.clone(), acks));
        tokio::spawn(handover_loop(inner.clone(), handovers));
        tokio::spawn(heartbeat_loop(inner.clone()));
        tokio::spawn(events_loop(inner.clone(), events_rx));
        inner.send(Control::Hello {
            node: inner.node.clone(),
            epoch: inner.epoch,
        });
        // The others answer the hello at once: give them a heartbeat's time (the connection
        // may still be coming up), so that this node knows them before its listeners open —
        // and does not take itself for the oldest node, the rooms' home
        // (`Membership::home`), for want of having heard them.
        tokio::time::sleep(inner.config.heartbeat()).await;
        tracing::info!(node = %inner.node, peers = lock(&inner.members).alive().len(), "cluster node started");
        Ok(Cluster { inner })
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// The view for operators.
    pub fn status(&self) -> ClusterStatus {
        let i = &self.inner;
        ClusterStatus {
            node: i.node.clone(),
            connected: i.connected.load(Ordering::Acquire),
            peers: lock(&i.members).alive(),
            local_sessions: lock(&i.local).len(),
            remote_sessions: lock(&i.remote).counts(),
        }
    }
}

/// What the services riding on the bus beside the session registry use (`crate::bosh`).
impl Cluster {
    /// The bus connection.
    pub(crate) fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The domain whose cluster this is (the subjects' second token).
    pub(crate) fn domain(&self) -> &str {
        self.inner.core.domain()
    }

    /// Whether the bus is connected now.
    pub(crate) fn is_connected(&self) -> bool {
        self.inner.is_connected()
    }

    /// Whether `node` is another node alive, as the lease says.
    pub(crate) fn is_alive(&self, node: &str) -> bool {
        lock(&self.inner.members).is_alive(node)
    }
}

/// The core's news about local sessions, turned into control messages.
struct Link(Arc<Inner>);

impl ClusterLink for Link {
    fn node(&self) -> &str {
        &self.0.node
    }

    fn answer_elsewhere(&self, node: &str, answer: &Stanza) {
        let i = &self.0;
        // Only to a node alive: the id came from a client, and must not start a forwarder
        // for a node that does not exist.
        if !lock(&i.members).is_alive(node) {
            return;
        }
        let to: Jid = i.core.domain_jid().clone().into();
        let _ = i.forwarder(node).send((to, Bytes::from(answer.to_bytes())));
    }

    fn bound(&self, jid: &Jid, _id: SessionId) {
        let i = &self.0;
        let at = now_ms();
        lock(&i.local).insert(
            jid.clone(),
            Local {
                at,
                priority: None,
                carbons: false,
            },
        );
        // A session of this full JID on another node is older: the core replaces its handle
        // (and closes it: it takes nothing more); the other node hears of this bind and
        // closes it.
        lock(&i.remote).remove_anywhere(jid);
        i.send(Control::Bound {
            node: i.node.clone(),
            epoch: i.epoch,
            session: SessionInfo {
                jid: jid.to_string(),
                at,
                priority: None,
                carbons: false,
            },
        });
    }

    fn unbound(&self, jid: &Jid) {
        let i = &self.0;
        lock(&i.local).remove(jid);
        i.send(Control::Unbound {
            node: i.node.clone(),
            epoch: i.epoch,
            jid: jid.to_string(),
        });
    }

    fn availability(&self, jid: &Jid, priority: Option<i8>) {
        self.0.replicate(
            jid,
            |l| l.priority = priority,
            |node, epoch, jid| Control::Available {
                node,
                epoch,
                jid,
                priority,
            },
        );
    }

    fn carbons(&self, jid: &Jid, on: bool) {
        self.0.replicate(
            jid,
            |l| l.carbons = on,
            |node, epoch, jid| Control::Carbons {
                node,
                epoch,
                jid,
                on,
            },
        );
    }

    fn account_changed(&self, account: &BareJid) {
        let i = &self.0;
        i.send(Control::Changed {
            node: i.node.clone(),
            epoch: i.epoch,
            account: account.to_string(),
        });
    }

    fn domain_connection(&self, domain: &str, up: bool) {
        let i = &self.0;
        let mut local = lock(&i.components);
        if up {
            local.insert(domain.to_string());
        } else {
            local.remove(domain);
        }
        i.send(Control::Route {
            node: i.node.clone(),
            epoch: i.epoch,
            domain: domain.to_string(),
            up,
        });
    }

    fn note(&self, topic: &str, body: String) {
        let i = &self.0;
        i.send(Control::Note {
            node: i.node.clone(),
            epoch: i.epoch,
            topic: topic.to_string(),
            body,
        });
    }

    fn close_elsewhere(&self, jid: &Jid, reason: &StreamError) {
        let i = &self.0;
        i.send(Control::Close {
            node: i.node.clone(),
            epoch: i.epoch,
            jid: jid.to_string(),
            condition: reason.condition.as_str().to_string(),
            text: reason.text.clone(),
        });
    }

    fn home(&self) -> Option<String> {
        self.0.home()
    }

    fn to_domain_on(&self, node: &str, domain: &Jid, stanza: Bytes) -> bool {
        let i = &self.0;
        // As for answers: a forwarder only for a node alive.
        if !lock(&i.members).is_alive(node) {
            return false;
        }
        i.forwarder(node).send((domain.clone(), stanza)).is_ok()
    }

    fn take_over(&self, ask: HandoverAsk) -> Handover {
        let i = self.0.clone();
        Box::pin(async move { i.take_over(ask).await })
    }
}

impl Inner {
    fn send(&self, c: Control) {
        let _ = self.outbox.send(c);
    }

    /// Changes what this node keeps of its session `jid` for the others (`change`), then
    /// tells them (`message`, given this node, its epoch and the JID); nothing for a session
    /// this node does not hold.
    fn replicate(
        &self,
        jid: &Jid,
        change: impl FnOnce(&mut Local),
        message: impl FnOnce(String, u64, String) -> Control,
    ) {
        match lock(&self.local).get_mut(jid) {
            Some(l) => change(l),
            None => return,
        }
        self.send(message(self.node.clone(), self.epoch, jid.to_string()));
    }

    fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Sends this node's sessions in parts (the answer to a hello).
    fn send_snapshot(&self) {
        let all: Vec<SessionInfo> = lock(&self.local)
            .iter()
            .map(|(j, l)| SessionInfo {
                jid: j.to_string(),
                at: l.at,
                priority: l.priority,
                carbons: l.carbons,
            })
            .collect();
        let parts: Vec<&[SessionInfo]> = if all.is_empty() {
            vec![&[]]
        } else {
            all.chunks(SNAPSHOT_PART).collect()
        };
        let components: Vec<String> = lock(&self.components).iter().cloned().collect();
        for domain in components {
            self.send(Control::Route {
                node: self.node.clone(),
                epoch: self.epoch,
                domain,
                up: true,
            });
        }
        let n = parts.len();
        for (k, part) in parts.into_iter().enumerate() {
            self.send(Control::Sessions {
                node: self.node.clone(),
                epoch: self.epoch,
                first: k == 0,
                last: k + 1 == n,
                sessions: part.to_vec(),
            });
        }
    }

    /// A control message from another node.
    async fn control(self: &Arc<Self>, c: Control) {
        let (node, epoch) = c.sender();
        let node = node.to_string();
        if node == self.node {
            return;
        }
        let heard = lock(&self.members).heard(&node, epoch, Instant::now());
        match heard {
            Heard::Known => {}
            Heard::New => {
                // A node we did not know (or took for dead): exchange sessions.
                tracing::info!(%node, "cluster node joined");
                if !matches!(c, Control::Hello { .. }) {
                    self.send(Control::Hello {
                        node: self.node.clone(),
                        epoch: self.epoch,
                    });
                }
            }
            Heard::Restarted => {
                tracing::warn!(%node, "cluster node restarted: its old sessions are gone");
                self.node_gone(&node).await;
                lock(&self.members).heard(&node, epoch, Instant::now());
            }
        }
        match c {
            Control::Heartbeat { .. } => {}
            Control::Hello { .. } => self.send_snapshot(),
            Control::Bound { session, .. } => self.remote_bound(&node, &session).await,
            Control::Unbound { jid, .. } => {
                if let Ok(jid) = Jid::parse(&jid) {
                    self.remote_unbound(&node, &jid).await;
                }
            }
            Control::Available { jid, priority, .. } => {
                if let Ok(jid) = Jid::parse(&jid) {
                    if lock(&self.remote).get(&node, &jid).is_some() {
                        self.core.set_remote_available(&jid, priority);
                    }
                }
            }
            Control::Changed { account, .. } => {
                if let Ok(account) = BareJid::parse(&account) {
                    self.core.emit(&Event::AccountChanged(account)).await;
                }
            }
            Control::Route { domain, up, .. } => self.remote_component(&node, &domain, up),
            Control::Close {
                jid,
                condition,
                text,
                ..
            } => self.close_local(&jid, &condition, text),
            Control::Carbons { jid, on, .. } => {
                if let Ok(jid) = Jid::parse(&jid) {
                    if lock(&self.remote).get(&node, &jid).is_some() {
                        self.core.set_remote_carbons(&jid, on);
                    }
                }
            }
            Control::Note { topic, body, .. } => {
                let _ = self.notes.send((topic, body));
            }
            Control::Sessions {
                first,
                last,
                sessions,
                ..
            } => self.snapshot_part(&node, first, last, sessions).await,
        }
    }

    /// Another node asked to end the session `jid`: closed if it is bound here.
    fn close_local(&self, jid: &str, condition: &str, text: Option<String>) {
        let (Ok(jid), Some(condition)) =
            (Jid::parse(jid), StreamErrorCondition::from_name(condition))
        else {
            return;
        };
        if let Some(h) = self.core.session(&jid).filter(|h| !h.is_remote()) {
            let mut reason = StreamError::new(condition);
            reason.text = text;
            h.close(reason);
        }
    }

    /// A session bound on `node`: a remote handle for it, unless a session of that full JID
    /// bound later exists (here or on a third node), which wins (RFC 6120 §7.7.2.2).
    async fn remote_bound(self: &Arc<Self>, node: &str, s: &SessionInfo) {
        let Ok(jid) = Jid::parse(&s.jid) else { return };
        let newer = |at: u64, other: &str| (at, other) > (s.at, node);
        if lock(&self.local)
            .get(&jid)
            .is_some_and(|l| newer(l.at, &self.node))
        {
            return;
        }
        if let Some((other, p)) = lock(&self.remote).find(&jid) {
            if other == node && p.at == s.at {
                // Already known (a snapshot repeating it): only availability and carbons
                // may change.
                self.core.set_remote_available(&jid, s.priority);
                self.core.set_remote_carbons(&jid, s.carbons);
                return;
            }
            if newer(p.at, other) {
                return;
            }
        }
        let handle = SessionHandle::forwarded(
            self.core.next_session_id(),
            jid.clone(),
            self.forwarder(node),
        );
        let old = lock(&self.remote).insert(
            node,
            jid.clone(),
            Proxy {
                handle: handle.clone(),
                at: s.at,
            },
        );
        if let Some(old) = old {
            old.handle
                .close(StreamError::new(StreamErrorCondition::Conflict));
        }
        // A local session this replaces is closed with `conflict` by the core (and its
        // entry leaves `local` through `Link::unbound`).
        if let Some(replaced) = self.core.bind_remote(handle).await {
            if replaced.is_remote() {
                replaced.close(StreamError::new(StreamErrorCondition::Conflict));
            } else if replaced.is_moving() {
                // Handed over to that node (XEP-0198 resumption there): it did not end, so
                // no `unbound` is told, but it is no longer this node's.
                lock(&self.local).remove(&jid);
            }
        }
        if s.priority.is_some() {
            self.core.set_remote_available(&jid, s.priority);
        }
        if s.carbons {
            self.core.set_remote_carbons(&jid, true);
        }
    }

    /// A session of `node` ended there (its own node told its contacts).
    async fn remote_unbound(&self, node: &str, jid: &Jid) {
        let Some(p) = lock(&self.remote).remove(node, jid) else {
            return;
        };
        self.core.unbind_remote(jid, p.handle.id());
        p.handle
            .close(StreamError::new(StreamErrorCondition::Reset));
        lock(&self.seen).remove(jid);
        self.offline_if_gone(jid.to_bare()).await;
    }

    /// Tells the modules that `bare` has no session left anywhere, if so: what they kept for
    /// it while it had sessions on other nodes goes (see `Event::AccountOffline`).
    async fn offline_if_gone(&self, bare: BareJid) {
        if !self.core.has_sessions(&bare) {
            self.core.emit(&Event::AccountOffline(bare)).await;
        }
    }

    /// `node`'s connection for the component `domain` came or went: a remote handle for it
    /// (writing into that node's forwarder, like a session's) is given to the domain's route, or taken
    /// back. A domain not declared here is ignored.
    fn remote_component(self: &Arc<Self>, node: &str, domain: &str, up: bool) {
        let key = (node.to_string(), domain.to_string());
        let old = lock(&self.remote_components).remove(&key);
        if let Some(old) = old {
            self.core.set_domain_peer(domain, node, None);
            old.close(StreamError::new(StreamErrorCondition::Reset));
        }
        if !up {
            return;
        }
        let Ok(jid) = Jid::parse(domain) else { return };
        let handle =
            SessionHandle::forwarded(self.core.next_session_id(), jid, self.forwarder(node));
        if !self
            .core
            .set_domain_peer(domain, node, Some(handle.clone()))
        {
            return;
        }
        lock(&self.remote_components).insert(key, handle);
    }

    /// A part of `node`'s complete session list.
    async fn snapshot_part(
        self: &Arc<Self>,
        node: &str,
        first: bool,
        last: bool,
        sessions: Vec<SessionInfo>,
    ) {
        if first {
            lock(&self.incoming).insert(node.to_string(), HashSet::new());
        }
        for s in &sessions {
            self.remote_bound(node, s).await;
            if let Ok(j) = Jid::parse(&s.jid) {
                if let Some(set) = lock(&self.incoming).get_mut(node) {
                    set.insert(j);
                }
            }
        }
        if last {
            let Some(named) = lock(&self.incoming).remove(node) else {
                return;
            };
            let stale: Vec<Jid> = lock(&self.remote)
                .jids_of(node)
                .into_iter()
                .filter(|j| !named.contains(j))
                .collect();
            for j in stale {
                self.remote_unbound(node, &j).await;
            }
        }
    }

    /// The forwarder queue of `node`, started on first use.
    fn forwarder(self: &Arc<Self>, node: &str) -> mpsc::UnboundedSender<(Jid, Bytes)> {
        let mut f = lock(&self.forwarders);
        if let Some(tx) = f.get(node).filter(|tx| !tx.is_closed()) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        f.insert(node.to_string(), tx.clone());
        let id = self.next_forwarder.fetch_add(1, Ordering::Relaxed);
        let (acks_tx, acks) = mpsc::unbounded_channel();
        lock(&self.acks).insert(id, acks_tx);
        tokio::spawn(forward(
            self.clone(),
            Forwarder {
                node: node.to_string(),
                id,
                rx,
                acks,
            },
        ));
        tx
    }

    /// `node` is dead (lease expired, restarted, or nobody listens on its subject): its
    /// sessions leave the registry, what was queued for them is routed again (messages go to
    /// offline storage), and the local sessions that saw them available get unavailable
    /// presence from them (their own node can no longer send it).
    async fn node_gone(self: &Arc<Self>, node: &str) {
        lock(&self.members).forget(node);
        lock(&self.forwarders).remove(node);
        let components: Vec<((String, String), SessionHandle)> = {
            let mut all = lock(&self.remote_components);
            let theirs: Vec<(String, String)> =
                all.keys().filter(|(n, _)| n == node).cloned().collect();
            theirs
                .into_iter()
                .filter_map(|k| all.remove(&k).map(|h| (k, h)))
                .collect()
        };
        for ((_, domain), h) in components {
            self.core.set_domain_peer(&domain, node, None);
            h.close(StreamError::new(
                StreamErrorCondition::RemoteConnectionFailed,
            ));
        }
        let sessions = lock(&self.remote).take_node(node);
        if sessions.is_empty() {
            return;
        }
        tracing::warn!(%node, sessions = sessions.len(), "cluster node gone: dropping its sessions");
        let accounts: HashSet<BareJid> = sessions.iter().map(|(j, _)| j.to_bare()).collect();
        let available: HashSet<Jid> = accounts
            .iter()
            .flat_map(|bare| self.core.sessions_of(bare))
            .filter_map(|(h, priority)| priority.map(|_| h.jid().clone()))
            .collect();
        for (jid, p) in &sessions {
            self.core.unbind_remote(jid, p.handle.id());
            p.handle.close(StreamError::new(
                StreamErrorCondition::RemoteConnectionFailed,
            ));
        }
        let mut lost = Vec::with_capacity(sessions.len());
        for (jid, _) in sessions {
            let watchers = lock(&self.seen).remove(&jid);
            if let Some(watchers) = watchers {
                let t = Template::new(Stanza::presence(
                    PresenceType::Unavailable,
                    Some(jid.clone()),
                    None,
                ));
                self.core.deliver_rendered(&t, &watchers).await;
            }
            lost.push(LostSession {
                available: available.contains(&jid),
                jid,
            });
        }
        // What reaches beyond this node's own sessions is done once, by the rooms' home —
        // before the modules hear that the accounts went offline, as they would forget what
        // they kept for their sessions (`rookery_im::directed`).
        if self.home().is_none() {
            self.core.sessions_lost(lost).await;
        }
        for bare in accounts {
            self.offline_if_gone(bare).await;
        }
    }

    /// Asks the nodes where `ask.user` has sessions, all at once, to hand over the
    /// hibernated session `ask` names (only the node holding that SM-ID can): see
    /// [`first_handover`]. The whole ask has [`HANDOVER_TIMEOUT`]: a node that answers
    /// later hears nothing of it, and ends the session as it would have (its own grace, c2s).
    async fn take_over(&self, ask: HandoverAsk) -> Result<String, HandoverRefusal> {
        if !self.is_connected() {
            return Err(HandoverRefusal::NotHandedOver);
        }
        let sessions = self.core.sessions_of(&ask.user);
        let mut nodes: Vec<String> = {
            let remote = lock(&self.remote);
            sessions
                .iter()
                .filter(|(h, _)| h.is_remote())
                .filter_map(|(h, _)| remote.find(h.jid()).map(|(n, _)| n.to_string()))
                .collect()
        };
        nodes.sort();
        nodes.dedup();
        let request = HandoverRequest {
            user: ask.user.to_string(),
            previd: ask.previd,
            h: ask.h,
        }
        .encode();
        let mut asked = JoinSet::new();
        for node in nodes {
            let client = self.client.clone();
            let subject = self.subjects.handover(&node);
            let request = request.clone();
            asked.spawn(async move {
                let answer = match client.request(subject, request).await {
                    Ok(msg) => HandoverReply::decode(&msg.payload)
                        .map_err(|e| format!("unreadable answer: {e}")),
                    Err(e) => Err(e.to_string()),
                };
                (node, answer)
            });
        }
        first_handover(asked, HANDOVER_TIMEOUT).await
    }

    /// Another node's request to hand over a hibernated session of this node.
    async fn hand_over(&self, msg: async_nats::Message) {
        let Some(reply) = msg.reply else { return };
        let answer = match HandoverRequest::decode(&msg.payload) {
            Ok(r) => self.answer_handover(r).await,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a session handover request");
                HandoverReply::refused(HandoverRefusal::NotHandedOver)
            }
        };
        if let Err(e) = self.client.publish(reply, answer.encode()).await {
            tracing::warn!(error = %e, "session handover answer not sent");
        }
    }

    /// The session a [`HandoverRequest`] names, handed over by its task, or why not.
    async fn answer_handover(&self, r: HandoverRequest) -> HandoverReply {
        let Ok(user) = BareJid::parse(&r.user) else {
            return HandoverReply::refused(HandoverRefusal::NotHandedOver);
        };
        let ask = HandoverAsk {
            user,
            previd: r.previd,
            h: r.h,
        };
        // The session's JSON goes into the reply as it is: the bus's payload limit, less
        // the reply's own few bytes, is its budget.
        let max = self.client.server_info().max_payload;
        match self
            .core
            .hand_over(&ask, max.saturating_sub(HANDOVER_ENVELOPE))
            .await
        {
            Ok(session) => HandoverReply::taken(session).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "session handed over is not JSON: not sent");
                HandoverReply::refused(HandoverRefusal::NotHandedOver)
            }),
            Err(why) => HandoverReply::refused(why),
        }
    }

    /// The rooms' home (`Membership::home`) when it is another node; `None` when this node
    /// is it — the one that speaks for the cluster where only one may.
    fn home(&self) -> Option<String> {
        lock(&self.members).home(&self.node, self.epoch)
    }

    /// A stanza batch for this node's sessions.
    async fn deliver_here(&self, frames: Vec<(Jid, Bytes)>) {
        for (jid, bytes) in frames {
            if jid.local().is_none() {
                if self.core.is_local_domain(jid.domain()) {
                    // Addressed to the server: an answer to a request this node sent
                    // (`ClusterLink::answer_elsewhere` on the addressee's node).
                    if let Some(answer) = Stanza::from_serialized(&bytes) {
                        self.core.answer_from_cluster(answer);
                    }
                } else {
                    // For the component connected here.
                    self.core.deliver_to_domain_here(jid.domain(), &bytes).await;
                }
                continue;
            }
            if bytes.starts_with(b"<presence") {
                if let Some(probe) = self.note_presence(&jid, &bytes) {
                    // A probe for a session here (`Core::probe_remote` on another node):
                    // this node's modules answer it, the client never sees it.
                    self.core.route(probe).await;
                    continue;
                }
            }
            match self.core.session(&jid) {
                Some(h) if !h.is_remote() && h.send(bytes.clone()) => {}
                // The session ended meanwhile (or moved): the route table decides again.
                _ => {
                    self.core.route_again(&jid, &bytes).await;
                }
            }
        }
    }

    /// Remembers that local session `to` was shown the presence in `bytes` (see `seen`);
    /// returns the stanza when it is a probe, which is for this node's modules.
    fn note_presence(&self, to: &Jid, bytes: &Bytes) -> Option<Stanza> {
        let s = Stanza::from_serialized(bytes)?;
        if s.kind() == StanzaKind::Presence(PresenceType::Probe) {
            return Some(s);
        }
        let from = s.from().filter(|f| f.is_full()).cloned()?;
        let mut seen = lock(&self.seen);
        match s.kind() {
            StanzaKind::Presence(PresenceType::Available) => {
                seen.entry(from).or_default().insert(to.clone());
            }
            StanzaKind::Presence(PresenceType::Unavailable) => {
                if let Some(set) = seen.get_mut(&from) {
                    set.remove(to);
                    if set.is_empty() {
                        seen.remove(&from);
                    }
                }
            }
            _ => {}
        }
        None
    }

    /// Stanzas that cannot cross now: their senders get `recipient-unavailable` (a wait
    /// error: the recipient is there, the way to it is not), other stanzas are dropped.
    async fn bounce(&self, batch: Vec<(Jid, Bytes)>, why: &str) {
        tracing::warn!(stanzas = batch.len(), why, "cross-node stanzas bounced");
        for (_, bytes) in batch {
            let Some(s) = Stanza::from_serialized(&bytes) else {
                continue;
            };
            let error = StanzaError::new(StanzaErrorCondition::RecipientUnavailable).with_text(why);
            self.core.reply_error(&s, error).await;
        }
    }
}

/// Batches one forwarder has on the bus at once, awaiting an acknowledgement. The bus keeps
/// their order (one connection here, one subscriber on the other node), so one reply can
/// acknowledge every batch up to the one it names; the cap bounds what a stalled peer holds.
const MAX_UNACKED: usize = 256;

/// How long a receiving node may hold back its acknowledgement: the stanzas are delivered at
/// once, only the reply waits, so that one reply covers all the batches of a sender taken
/// meanwhile (at 2,000 messages/s over six node pairs a batch is mostly one stanza, and a
/// reply per batch was half of the bus traffic). The sender keeps the batches until then.
const ACK_DELAY: Duration = Duration::from_millis(20);

/// Batches of one sender after which the receiver acknowledges without waiting for
/// [`ACK_DELAY`], well below [`MAX_UNACKED`] so that a busy sender never stops for it.
const ACK_EVERY: u32 = 32;

/// What the bus says about a forwarder's batch.
#[derive(Debug, Clone, Copy)]
enum Ack {
    /// The other node took every batch up to this one.
    Taken(u64),
    /// Nobody listened on the other node's subject when this batch reached the bus.
    Nobody(u64),
}

/// One forwarder's channels.
struct Forwarder {
    node: String,
    id: u64,
    rx: mpsc::UnboundedReceiver<(Jid, Bytes)>,
    acks: mpsc::UnboundedReceiver<Ack>,
}

/// A batch on the bus, kept until acknowledged.
struct Sent {
    seq: u64,
    at: tokio::time::Instant,
    batch: Vec<(Jid, Bytes)>,
}

/// Sends what is queued for a node, one bus message per wake-up, up to [`MAX_UNACKED`] of
/// them awaiting acknowledgement, and settles them: acknowledged, they are the other node's;
/// when nobody listened, that node is dead and they are routed again here (offline storage);
/// unacknowledged after the lease (or sent before the one nobody took, so perhaps delivered),
/// their senders get an error.
async fn forward(inner: Arc<Inner>, f: Forwarder) {
    let Forwarder {
        node,
        id,
        mut rx,
        mut acks,
    } = f;
    // A `Subject` clones without copying: one per batch.
    let subject = Subject::from(inner.subjects.node(&node));
    let lease = inner.config.lease();
    let mut unacked: VecDeque<Sent> = VecDeque::new();
    let mut next_seq: u64 = 0;
    let expiry = tokio::time::sleep(lease);
    tokio::pin!(expiry);
    // With a batch delay, the queue is not read for that long after a batch: what the
    // sessions write meanwhile waits in it without waking this task, and goes as one batch.
    let delay = inner.config.batch_delay();
    let pause = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(pause);
    let mut pausing = false;
    // The batch `expiry` is set for: reset only when the oldest batch changes.
    let mut armed: Option<u64> = None;
    let mut open = true;
    while open || !unacked.is_empty() {
        if let Some(front) = unacked.front() {
            if armed != Some(front.seq) {
                expiry.as_mut().reset(after(front.at, lease));
                armed = Some(front.seq);
            }
        }
        tokio::select! {
            biased;
            Some(ack) = acks.recv() => match ack {
                Ack::Taken(seq) => {
                    while unacked.front().is_some_and(|s| s.seq <= seq) {
                        unacked.pop_front();
                    }
                }
                Ack::Nobody(seq) => {
                    if unacked.back().is_none_or(|s| s.seq < seq) {
                        continue; // settled already
                    }
                    // Its bus connection closed with the process: its sessions go now,
                    // without waiting for the lease.
                    inner.node_gone(&node).await;
                    let why = format!("cross-node delivery to {node} failed: it died");
                    for s in std::mem::take(&mut unacked) {
                        if s.seq < seq {
                            inner.bounce(s.batch, &why).await;
                        } else {
                            for (to, b) in s.batch {
                                inner.core.route_again(&to, &b).await;
                            }
                        }
                    }
                }
            },
            () = &mut expiry, if !unacked.is_empty() => {
                let now = tokio::time::Instant::now();
                let why = format!("cross-node delivery to {node} failed: no acknowledgement");
                while unacked.front().is_some_and(|s| after(s.at, lease) <= now) {
                    if let Some(s) = unacked.pop_front() {
                        inner.bounce(s.batch, &why).await;
                    }
                }
            }
            () = &mut pause, if pausing => pausing = false,
            first = rx.recv(), if open && !pausing && unacked.len() < MAX_UNACKED => {
                let Some(first) = first else {
                    open = false;
                    continue;
                };
                let batch = gather(first, &mut rx);
                if !inner.is_connected() {
                    inner.bounce(batch, "the cluster bus is unavailable").await;
                    continue;
                }
                let seq = next_seq;
                next_seq += 1;
                let reply = inner.subjects.ack(id, seq);
                match inner
                    .client
                    .publish_with_reply(subject.clone(), reply, encode_batch(&batch))
                    .await
                {
                    Ok(()) => {
                        let now = tokio::time::Instant::now();
                        unacked.push_back(Sent { seq, at: now, batch });
                        if !delay.is_zero() {
                            pause.as_mut().reset(now + delay);
                            pausing = true;
                        }
                    }
                    Err(e) => {
                        let why = format!("cross-node delivery to {node} failed: {e}");
                        inner.bounce(batch, &why).await;
                    }
                }
            }
        }
    }
    lock(&inner.acks).remove(&id);
}

/// `first` and what else is queued behind it, up to [`MAX_BATCH_BYTES`].
fn gather(
    first: (Jid, Bytes),
    rx: &mut mpsc::UnboundedReceiver<(Jid, Bytes)>,
) -> Vec<(Jid, Bytes)> {
    let mut size = first.1.len();
    let mut batch = vec![first];
    while size < MAX_BATCH_BYTES {
        match rx.try_recv() {
            Ok(f) => {
                size += f.1.len();
                batch.push(f);
            }
            Err(_) => break,
        }
    }
    batch
}

/// Publishes control messages in order.
async fn publish(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Control>) {
    while let Some(c) = rx.recv().await {
        if let Err(e) = inner
            .client
            .publish(inner.subjects.control.clone(), c.encode())
            .await
        {
            // Repaired by the snapshots exchanged when the bus is back.
            tracing::debug!(error = %e, "control message not published");
        }
    }
}

async fn control_loop(inner: Arc<Inner>, mut sub: async_nats::Subscriber) {
    while let Some(msg) = sub.next().await {
        match Control::decode(&msg.payload) {
            Ok(c) => inner.control(c).await,
            Err(e) => tracing::warn!(error = %e, "ignoring a control message"),
        }
    }
}

async fn inbox_loop(inner: Arc<Inner>, mut sub: async_nats::Subscriber) {
    // Per sender (a reply subject less its last token, the sequence number): the reply
    // subject of the last batch taken, and how many are not acknowledged yet.
    let mut pending: Vec<(Subject, u32)> = Vec::new();
    let due = tokio::time::sleep(ACK_DELAY);
    tokio::pin!(due);
    loop {
        tokio::select! {
            biased;
            msg = sub.next() => {
                let Some(msg) = msg else { break };
                match decode_batch(msg.payload) {
                    Ok(frames) => inner.deliver_here(frames).await,
                    Err(e) => tracing::warn!(error = %e, "ignoring a stanza batch"),
                }
                let Some(reply) = msg.reply else { continue };
                if pending.is_empty() {
                    due.as_mut().reset(tokio::time::Instant::now() + ACK_DELAY);
                }
                let from = sender_of(&reply);
                let held = match pending.iter().position(|(r, _)| sender_of(r) == from) {
                    Some(k) => pending.swap_remove(k).1,
                    None => 0,
                };
                if held + 1 >= ACK_EVERY {
                    let _ = inner.client.publish(reply, Bytes::new()).await;
                } else {
                    pending.push((reply, held + 1));
                }
                // An inbox that always has a batch ready would never let the timer's
                // branch run: a quiet sender among busy ones must still hear in time.
                if due.is_elapsed() {
                    acknowledge(&inner.client, &mut pending).await;
                }
            }
            () = &mut due, if !pending.is_empty() => {
                acknowledge(&inner.client, &mut pending).await;
            }
        }
    }
    acknowledge(&inner.client, &mut pending).await;
}

/// Acknowledges, for each sender, every batch up to the last one taken.
async fn acknowledge(client: &Client, pending: &mut Vec<(Subject, u32)>) {
    for (reply, _) in pending.drain(..) {
        let _ = client.publish(reply, Bytes::new()).await;
    }
}

/// The sender a batch's reply subject stands for: all of it but the sequence number.
fn sender_of(reply: &str) -> &str {
    reply.rsplit_once('.').map_or(reply, |(sender, _)| sender)
}

/// The other nodes' answers to this node's batches, each to its forwarder.
async fn acks_loop(inner: Arc<Inner>, mut sub: async_nats::Subscriber) {
    while let Some(msg) = sub.next().await {
        let Some((forwarder, seq)) = inner.subjects.parse_ack(&msg.subject) else {
            continue;
        };
        let ack = match msg.status {
            Some(StatusCode::NO_RESPONDERS) => Ack::Nobody(seq),
            Some(_) => continue,
            None => Ack::Taken(seq),
        };
        if let Some(tx) = lock(&inner.acks).get(&forwarder) {
            let _ = tx.send(ack);
        }
    }
}

/// What a handover's answer takes of the bus's payload besides the session
/// (`{"t":"taken","session":` and `}`), with room to spare.
const HANDOVER_ENVELOPE: usize = 1024;

/// The outcome of asking several nodes at once for a hibernated session (`asked`, each
/// task a node's answer): the first session handed over; the refusal of the node holding
/// it for an `h` too high — only the holder of an SM-ID can say so, so nobody else will hand
/// it over, and the client is answered as there; else, once every node refused or failed or
/// `within` passed, not handed over. What is still asked then is dropped.
async fn first_handover(
    mut asked: JoinSet<(String, Result<HandoverReply, String>)>,
    within: Duration,
) -> Result<String, HandoverRefusal> {
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Some(done)) = tokio::time::timeout_at(deadline, asked.join_next()).await {
        let Ok((node, answer)) = done else {
            continue;
        };
        match answer {
            Ok(HandoverReply::Taken { session }) => {
                return Ok(String::from(Box::<str>::from(session)))
            }
            Ok(HandoverReply::Refused {
                reason: RefusalReason::NotHandedOver,
            }) => {}
            Ok(HandoverReply::Refused { reason }) => return Err(reason.into()),
            Err(e) => tracing::info!(%node, error = %e, "session handover request failed"),
        }
    }
    if !asked.is_empty() {
        tracing::warn!(
            nodes = asked.len(),
            "no answer to a session handover request in time"
        );
    }
    Err(HandoverRefusal::NotHandedOver)
}

/// Other nodes' requests to hand over a hibernated session of this node, each in a task of
/// its own (the session's task answers it).
async fn handover_loop(inner: Arc<Inner>, mut sub: async_nats::Subscriber) {
    while let Some(msg) = sub.next().await {
        let inner = inner.clone();
        tokio::spawn(async move { inner.hand_over(msg).await });
    }
}

async fn notes_loop(core: Arc<Core>, mut rx: mpsc::UnboundedReceiver<(String, String)>) {
    while let Some((topic, body)) = rx.recv().await {
        core.emit(&Event::ClusterNote { topic, body }).await;
    }
}

async fn heartbeat_loop(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(inner.config.heartbeat());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !inner.is_connected() {
            continue;
        }
        inner.send(Control::Heartbeat {
            node: inner.node.clone(),
            epoch: inner.epoch,
        });
        let dead = lock(&inner.members).expired(Instant::now());
        for node in dead {
            tracing::warn!(%node, "cluster node silent for longer than the lease");
            inner.node_gone(&node).await;
        }
    }
}

/// The bus connection's ups and downs.
async fn events_loop(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<BusEvent>) {
    while let Some(e) = rx.recv().await {
        match e {
            BusEvent::Connected => {
                tracing::info!("cluster bus connected");
                // The silence was ours: nobody expires for it. Then everybody resends
                // their sessions, which repairs what was missed meanwhile.
                lock(&inner.members).touch_all(Instant::now());
                inner.connected.store(true, Ordering::Release);
                inner.send(Control::Hello {
                    node: inner.node.clone(),
                    epoch: inner.epoch,
                });
            }
            BusEvent::Disconnected => {
                tracing::warn!("cluster bus disconnected: serving local sessions only");
                inner.connected.store(false, Ordering::Release);
            }
            other => tracing::debug!(event = %other, "cluster bus event"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_acknowledgement_names_its_forwarder_and_batch() {
        let s = Subjects::new("example.org", "n1");
        let reply = s.ack(3, 41);
        assert_eq!(reply, "rookery.example.org.ack.n1.3.41");
        assert_eq!(s.parse_ack(&reply), Some((3, 41)));
        assert_eq!(s.acks_wildcard(), "rookery.example.org.ack.n1.>");
        assert_eq!(s.parse_ack("rookery.example.org.ack.n2.3.41"), None);
        assert_eq!(s.parse_ack("rookery.example.org.ack.n1.3"), None);
        assert_eq!(s.parse_ack("rookery.example.org.ack.n1.x.1"), None);
    }

    type Answer = (String, Result<HandoverReply, String>);

    /// Nodes asked at once, each answering `answer` after its delay (never, with `None`).
    fn asked(nodes: Vec<(Option<u64>, Result<HandoverReply, String>)>) -> JoinSet<Answer> {
        let mut set = JoinSet::new();
        for (k, (delay, answer)) in nodes.into_iter().enumerate() {
            set.spawn(async move {
                match delay {
                    Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                    None => std::future::pending().await,
                }
                (format!("n{k}"), answer)
            });
        }
        set
    }

    fn not_here() -> Result<HandoverReply, String> {
        Ok(HandoverReply::refused(HandoverRefusal::NotHandedOver))
    }

    const TOO_HIGH: HandoverRefusal = HandoverRefusal::HandledCountTooHigh {
        h: 7,
        sent: 3,
        inbound: 1,
    };

    /// Asks as `take_over` does; the outcome and how long it took.
    async fn ask(
        nodes: Vec<(Option<u64>, Result<HandoverReply, String>)>,
    ) -> (Result<String, HandoverRefusal>, Duration) {
        let started = tokio::time::Instant::now();
        let outcome = first_handover(asked(nodes), HANDOVER_TIMEOUT).await;
        (outcome, started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn the_session_handed_over_is_taken_without_waiting_for_silent_nodes() {
        let taken =
            HandoverReply::taken("{\"jid\":\"a@localhost/r\"}".into()).map_err(|e| e.to_string());
        let (outcome, took) = ask(vec![
            (None, not_here()),
            (Some(10), not_here()),
            (None, not_here()),
            (Some(200), taken),
            (Some(5), Err("no responders".into())),
        ])
        .await;
        assert_eq!(outcome.unwrap(), "{\"jid\":\"a@localhost/r\"}");
        assert_eq!(took, Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn silent_nodes_cost_one_timeout_for_all_of_them() {
        let (outcome, took) = ask(vec![
            (None, not_here()),
            (None, not_here()),
            (None, not_here()),
        ])
        .await;
        assert_eq!(outcome, Err(HandoverRefusal::NotHandedOver));
        assert_eq!(took, HANDOVER_TIMEOUT);
        // Everybody refused: no need to wait.
        let (outcome, took) = ask(vec![(Some(1), not_here()), (Some(2), not_here())]).await;
        assert_eq!(outcome, Err(HandoverRefusal::NotHandedOver));
        assert_eq!(took, Duration::from_millis(2));
        let (outcome, _) = ask(Vec::new()).await;
        assert_eq!(outcome, Err(HandoverRefusal::NotHandedOver));
    }

    #[tokio::test(start_paused = true)]
    async fn the_holders_refusal_for_an_h_too_high_is_the_answer() {
        let (outcome, took) = ask(vec![
            (Some(1), not_here()),
            (Some(50), Ok(HandoverReply::refused(TOO_HIGH))),
            (None, not_here()),
        ])
        .await;
        assert_eq!(outcome, Err(TOO_HIGH));
        assert_eq!(took, Duration::from_millis(50));
    }

    #[test]
    fn batches_of_one_forwarder_are_acknowledged_together() {
        let s = Subjects::new("example.org", "n1");
        assert_eq!(sender_of(&s.ack(3, 1)), sender_of(&s.ack(3, 2)));
        assert_ne!(sender_of(&s.ack(3, 1)), sender_of(&s.ack(4, 1)));
    }
}
