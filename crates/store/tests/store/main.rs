//! The store's integration tests, on every backend (see `common/mod.rs`): one test binary
//! for all of them, so the workspace's test build links this crate's tests once instead of
//! once per file (each link pulls in sqlx and both database drivers).

mod common;

mod accounts;
mod concurrent;
mod fast;
mod im_data;
mod mam;
mod pubsub;
mod push;
mod rosters;
mod tokens;
mod websub;
