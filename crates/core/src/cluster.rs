//! The seam between the core and a cluster of nodes serving one domain (design.md, "Several
//! nodes"; crates/cluster implements it over NATS, docs/clustering.md).
//!
//! The core stays the one delivery path: a session bound on another node is a
//! [`SessionHandle`](crate::SessionHandle) marked remote in the same registry
//! ([`crate::Core::bind_remote`]), so the route table and the fan-out reach it like any other
//! resource. What the core owes the cluster is the news about its own sessions, told through
//! this trait the moment the registry changes. Without a cluster nothing is set, and the
//! local path pays one `OnceLock` read per bind, unbind and availability change — no
//! allocation, no await.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rookery_jid::{BareJid, Jid};

use rookery_proto::{Stanza, StreamError};

use crate::session::SessionId;

/// How long a node waits for another's answer when it asks that node to hand a hibernated
/// session over ([`ClusterLink::take_over`]): past it, the client is answered `<failed/>`.
pub const HANDOVER_TIMEOUT: Duration = Duration::from_secs(3);

/// A client asked this node to resume (XEP-0198 §5) a session it does not hold: the request
/// to the node holding it to hand it over (docs/clustering.md, "Resumption on another
/// node").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoverAsk {
    /// The authenticated user: only a session of this account is handed over.
    pub user: BareJid,
    /// The SM-ID the client named.
    pub previd: String,
    /// The client's `h`.
    pub h: u32,
}

/// Why a hibernated session was not handed over to another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandoverRefusal {
    /// Nobody handed it over: not held there, another user's, attached to a connection,
    /// claimed meanwhile, too large for the bus, or no node answered (the client is
    /// answered `item-not-found`).
    NotHandedOver,
    /// The client's `h` acknowledges more stanzas than the session sent (XEP-0198 §4): the
    /// node holding it refused, and the client is answered as a resumption there would be.
    HandledCountTooHigh {
        /// The client's `h`.
        h: u32,
        /// The stanzas the session sent (mod 2^32).
        sent: u32,
        /// The stanzas it received from the client (the `h` of its `<failed/>`).
        inbound: u32,
    },
}

/// What comes back from a [`ClusterLink::take_over`]: the session, serialized by the node
/// that held it (its listener reads it), or why no node handed it over.
pub type Handover = Pin<Box<dyn Future<Output = Result<String, HandoverRefusal>> + Send>>;

/// Where this node's hibernated sessions are handed over to another node
/// ([`crate::Core::set_session_source`]; the client listener).
#[async_trait]
pub trait SessionSource: Send + Sync + 'static {
    /// Stops the hibernated session `ask` names, if `ask.user` owns it, and returns what it
    /// needs to go on elsewhere, in at most `max_bytes` (what the bus carries); else why
    /// not (unknown, another user's, attached, too large; an `h` that does not fit).
    async fn hand_over(
        &self,
        ask: &HandoverAsk,
        max_bytes: usize,
    ) -> Result<String, HandoverRefusal>;
}

/// What the core tells the cluster about the sessions bound on this node.
pub trait ClusterLink: Send + Sync + 'static {
    /// This node's id in the cluster (it names the node in the ids of the IQs it sends).
    fn node(&self) -> &str;

    /// `answer` (an IQ result or error addressed to the server) answers a request `node`
    /// sent: hand it over.
    fn answer_elsewhere(&self, node: &str, answer: &Stanza);

    /// A local session bound `jid` (it replaced any older session of that full JID here).
    fn bound(&self, jid: &Jid, id: SessionId);

    /// The local session `jid` ended.
    fn unbound(&self, jid: &Jid);

    /// A local session's availability changed: `Some(priority)` after available presence,
    /// `None` after unavailable.
    fn availability(&self, jid: &Jid, priority: Option<i8>);

    /// A local session enabled (`on`) or disabled XEP-0280 carbons: the other nodes decide
    /// carbons for the messages they route.
    fn carbons(&self, jid: &Jid, on: bool);

    /// A module committed a change to `account`'s data that other nodes may hold in memory
    /// (see [`crate::Core::account_changed`]).
    fn account_changed(&self, account: &BareJid);

    /// A connection serving `domain` (an XEP-0114 component) attached here (`up`) or left.
    fn domain_connection(&self, domain: &str, up: bool);

    /// A module's note for its peers on the other nodes (see [`crate::Core::tell_peers`]).
    fn note(&self, topic: &str, body: String);

    /// Ends the session `jid`, bound on another node, with `reason` there (see
    /// [`crate::Core::end_session`]).
    fn close_elsewhere(&self, jid: &Jid, reason: &StreamError);

    /// The node that serves what lives on one node of the cluster (see
    /// [`crate::Core::home_node`]); `None` when it is this one.
    fn home(&self) -> Option<String>;

    /// Sends `stanza` (serialized) to the route of `domain` on `node`, which delivers it
    /// there without sending it on ([`crate::DomainRoute::deliver_here`]). False when `node`
    /// is not known alive.
    fn to_domain_on(&self, node: &str, domain: &Jid, stanza: Bytes) -> bool;

    /// Asks the other nodes where `ask.user` has sessions to hand over the hibernated one
    /// `ask` names ([`SessionSource::hand_over`] there), within [`HANDOVER_TIMEOUT`].
    fn take_over(&self, ask: HandoverAsk) -> Handover;
}
