//! What connects the crates to each other and to the store, and belongs to none of them.
//!
//! The library crates know only traits for what they are injected with; this is where the
//! server binary decides which implementation answers:
//! - [`accounts`]: the core's [`rookery_core::Accounts`] directory over the SQL store;
//! - [`cluster`]: `[cluster]`, this node's place in a cluster over NATS (`rookery-cluster`),
//!   with the refusal to run clustered on SQLite;
//! - [`adhoc`]: who may run the XEP-0133 commands of `rookery-adhoc` (`admins`);
//! - [`fast`]: the XEP-0484 FAST token store of `rookery-c2s` over the SQL store;
//! - [`pubsub`]: [`pubsub::Pubsub`], the `[pubsub]` service and PEP;
//! - [`muc`]: the `[muc]` service over the SQL store's rooms;
//! - [`mam`]: the `[mam]` archive module over the SQL store;
//! - [`upload`]: the `[upload]` service (XEP-0363) and the base of its URLs;
//! - [`pubsub_im`]: the IM layer's answers to pubsub's questions (roster access models, PEP
//!   interest, block lists). It lives here rather than in `rookery-pubsub` so that pubsub
//!   does not depend on `rookery-im`: a pubsub engine is useful without an IM layer (a
//!   component, a test), and the IM layer's shape is not pubsub's business.

pub mod accounts;
pub mod adhoc;
pub mod cluster;
pub mod fast;
pub mod mam;
pub mod muc;
pub mod pubsub;
pub mod pubsub_im;
pub mod upload;
