//! Publish-subscribe for Rookery: one node engine serving both a XEP-0060 service on its own
//! domain (`pubsub.<domain>`) and XEP-0163 Personal Eventing on every account.
//!
//! # Layout
//! - [`engine`]: [`Engine`], every XEP-0060 use case (§5 entity, §6 subscriber, §7 publisher,
//!   §8 owner) as a method, independent of the wire. Store, broadcaster and access policy are
//!   injected (design.md point 9); a [`Profile`] is all that separates the service from PEP.
//! - [`config`]: node configuration (`pubsub#node_config`), publish-options preconditions,
//!   service profiles; [`model`]: affiliations, subscriptions, items; [`form`]: XEP-0004.
//! - [`error`]: [`PubsubError`], engine errors by cause, and the one table mapping each to
//!   (type, condition, pubsub condition).
//! - [`store`]: the [`NodeStore`] trait, [`SqlStore`] over `rookery-store` (SQLite or
//!   PostgreSQL) and [`MemoryStore`].
//! - [`policy`]: the [`AccessPolicy`] trait (roster facts for the `presence`/`roster` models).
//! - [`broadcast`]: the [`Broadcaster`] trait, notifications serialized once
//!   ([`broadcast::Template`]), [`CoreBroadcaster`] delivering through the router.
//! - [`wire`]: `<pubsub/>` IQs to engine calls and back.
//! - [`service`]: [`PubsubService`], the component-like service at `pubsub.<domain>`.
//! - [`pep`]: [`pep::Pep`], the account-side module (XEP-0163), and its broadcaster.
//! - [`engines`]: [`Engines`], the running engines found by service JID (for the HTTP face
//!   and the WebSub hub).
//! - [`peers`]: pubsub and PEP across the nodes of a cluster: the notes an engine sends its
//!   peers after a commit, and [`peers::PeerSync`], the module receiving them.
//!
//! What the engine is injected with from the IM layer (roster access policy, PEP interest,
//! block lists) and the `[pubsub]` wiring live in the server binary (`crates/server/src/wiring`),
//! so this crate does not depend on `rookery-im`.

pub mod broadcast;
pub mod config;
pub mod engine;
pub mod engines;
pub mod error;
/// XEP-0004 data forms moved to `rookery-proto` (MUC and MAM use them too); kept here by name.
pub use rookery_proto::form;
pub mod model;
pub mod peers;
pub mod pep;
pub mod policy;
pub mod service;
pub mod store;
pub mod wire;
pub mod xml;

/// The pubsub namespaces; they live with every other namespace in [`rookery_proto::ns`].
pub use rookery_proto::ns::pubsub as ns;

pub use broadcast::{Broadcaster, CoreBroadcaster};
pub use config::{CreatePolicy, NodeConfig, Profile, PubsubConfig, ServiceKind};
pub use engine::Engine;
pub use engines::Engines;
pub use error::PubsubError;
pub use policy::AccessPolicy;
pub use service::PubsubService;
pub use store::{MemoryStore, NodeStore, SqlStore};
