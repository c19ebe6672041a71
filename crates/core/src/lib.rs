//! The heart of the server: the router, the session registry and the module registry.
//!
//! Layout:
//! - [`accounts`]: the [`Accounts`] directory the core is given (it owns no database);
//! - [`config`]: the settings the core acts on (domain, registration, version disclosure);
//! - [`deadline`]: deadlines from configured durations, saturating instead of panicking;
//! - [`hosts`]: the hosted domains (virtual hosting), the one answer to "is it ours";
//! - [`session`]: [`SessionHandle`], how the router reaches a connection: a bounded queue of
//!   already-serialized bytes plus a kill switch;
//! - [`module`]: the [`Module`] trait — what an extension declares (IQ payloads, hooks and
//!   their priorities, events, disco features) and how it is called;
//! - [`event`]: the typed [`Event`]s modules emit and subscribe to;
//! - [`router`]: [`Core`] and its `route` — the one typed route table of design.md — over
//!   its parts, each testable alone: [`registry`] (bound sessions and their priorities),
//!   [`domains`] (component/service domains and the remote route), [`requests`] (IQs the
//!   server sent, waiting for their answer) and [`tables`] (what the modules declared: IQ
//!   handlers, hooks and event subscribers in priority order, disco and stream features);
//! - [`fanout`]: [`Template`] and [`Core::deliver_rendered`], the one delivery path for a
//!   stanza serialized once for many recipients (pubsub, PEP, carbons, presence broadcasts),
//!   applying blocking and the delivery rules in one place;
//! - [`cluster`]: [`ClusterLink`], what the core tells a cluster about its own sessions (the
//!   sessions of other nodes are remote [`SessionHandle`]s in the same registry);
//! - [`modules`]: the core modules every server has (disco, ping, version, register).
//!
//! Listeners (c2s, s2s, component) depend on this crate, never the reverse: they hand the
//! core trusted stanzas and receive bytes through their [`SessionHandle`].

pub mod accounts;
pub mod admin;
pub mod cluster;
pub mod config;
pub mod deadline;
pub mod domains;
pub mod event;
pub mod fanout;
pub mod hosts;
pub mod module;
pub mod modules;
pub mod registry;
pub mod requests;
pub mod router;
pub mod session;
pub mod tables;

pub use accounts::{AccountError, Accounts, MemoryAccounts};
pub use cluster::{ClusterLink, HandoverAsk, HandoverRefusal, SessionSource};
pub use config::CoreConfig;
pub use domains::{DomainRoute, Undelivered};
pub use event::{Event, EventKind, LostSession, SessionEvent};
pub use fanout::Template;
pub use hosts::{Host, HostConfig, Hosts, HostsError};
pub use module::{
    iq_result_for, priority, Declaration, Flow, HookPoint, Identity, IqAnswer, IqReply,
    IqResultBody, IqTarget, Module,
};
pub use router::{Core, CoreBuilder};
pub use session::{Outbound, QueueLimit, Receipt, SessionHandle, SessionId, Transport};
