//! Rookery's HTTP stack: hyper 1.x with axum routers and tower middleware, serving every
//! HTTP listener of the server (design.md, "The HTTP face").
//!
//! Layout:
//! - [`listener`]: the runner every HTTP listener shares — accept (plain or TLS), serve
//!   with hyper under [`listener::Limits`] (connection cap, header and request timeouts,
//!   body size) with upgrades enabled, graceful shutdown on the server's shutdown signal;
//! - [`cors`]: CORS preflight answers for routes browsers call cross-origin;
//! - [`handoff`]: responses whose body leaves hyper once the head is written (long-lived
//!   streams such as Server-Sent Events, without hyper's per-connection buffers);
//! - [`admin`]: the admin listener's router (`[listen] admin`, loopback by default):
//!   `/health`, `/ready`, `/metrics` and the REST admin API under `/api/v1` (bearer token).
//!
//! The public listener (WebSocket, BOSH, host-meta: `rookery-web`) is a second router run
//! by the same runner.

pub mod admin;
pub mod cors;
pub mod handoff;
pub mod listener;

pub use admin::auth::bearer;
pub use admin::services::{Services, SharedServices};
pub use admin::{AdminContext, Connections, Reload, Status};
pub use listener::{Limits, Peer};
