//! Several Rookery nodes serving one domain (design.md, "Several nodes"; docs/clustering.md).
//!
//! Durable state is in the one PostgreSQL database all nodes share. What is live — which
//! session is bound where, and the stanzas between nodes — crosses NATS:
//!
//! - [`config`]: `[cluster]` (bus URL, node id, lease);
//! - [`wire`]: the control messages and the stanza batch encoding;
//! - [`membership`]: the lease table (who is alive), sans-IO;
//! - [`remote`]: the sessions of the other nodes as this node knows them;
//! - `node`: the running node, [`Cluster`];
//! - [`bosh`]: BOSH requests passed to the node holding their session ([`bosh::BoshRelay`]).
//!
//! The cluster hooks into the core's one delivery path rather than beside it: a session
//! bound on another node is a remote [`rookery_core::SessionHandle`] in the core's registry,
//! so the route table, RFC 6121 §8.5 bare-JID delivery and the fan-out reach it like a local
//! one; what is sent to it goes straight into the forwarder of its node, which sends it in a
//! batch.

pub mod bosh;
pub mod config;
pub mod membership;
mod node;
pub mod remote;
pub mod wire;

pub use config::ClusterConfig;
pub use node::{Cluster, ClusterStatus, StartError};
