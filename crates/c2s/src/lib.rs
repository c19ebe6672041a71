//! The client listener (RFC 6120): STARTTLS (§5) and direct TLS (XEP-0368), SASL (§6),
//! resource binding (§7), then the session loop that hands stanzas to the core.
//!
//! Layout:
//! - [`config`]: listener settings and their defaults;
//! - [`limiter`]: auth-failure rate limits per IP and per account;
//! - [`machine`]: the sans-IO negotiation machine (TLS → SASL → bind or XEP-0198 resume);
//! - [`negotiate`]: drives it over a connection (credential lookups, registration, binding
//!   with the core, resumption), under the negotiation deadline;
//! - [`session`]: the bound session (the `from` trust rule for clients lives here), with
//!   stream management, keepalive checks and client state indication;
//! - [`sm`]: XEP-0198 counters, the registry of resumable sessions, wire elements;
//! - [`csi`]: XEP-0352 holding back of unimportant stanzas;
//! - [`bind2`]: XEP-0386 Bind2 inline in SASL2 (the resource from the device id);
//! - [`fast`]: XEP-0484 FAST tokens (wire, checks, the store interface).
//!
//! The transport, framing and the bound-stream loop are shared with the other listeners in
//! `rookery-stream`. One task serves one connection: it reads, routes, and drains the
//! session's bounded outbound queue, so an idle connection costs one task, its buffers and
//! its TLS state.

pub mod bind2;
pub mod config;
pub mod csi;
pub mod elsewhere;
pub mod fast;
pub mod limiter;
pub mod machine;
pub mod negotiate;
pub mod session;
pub mod sm;

use std::sync::Arc;

use rookery_core::modules::register::Register;
use rookery_core::Core;
use tokio::net::TcpListener;

pub use config::C2sConfig;
pub use rookery_stream::ConnectionCap;

/// Everything a client connection needs, shared by all connections of a listener.
pub struct C2sContext {
    /// The core.
    pub core: Arc<Core>,
    /// TLS settings for STARTTLS.
    pub tls: Arc<rustls::ServerConfig>,
    /// TLS settings for direct TLS (ALPN `xmpp-client`).
    pub direct_tls: Arc<rustls::ServerConfig>,
    /// Listener settings.
    pub config: C2sConfig,
    /// In-band registration (pre-auth).
    pub register: Arc<Register>,
    /// Auth failure limits.
    pub limiter: Arc<limiter::AuthLimiter>,
    /// XEP-0198 sessions that can be resumed, by SM-ID (shared with the
    /// [`elsewhere::ResumedElsewhere`] module of the core).
    pub sm: Arc<sm::Registry>,
    /// The cap on client connections, shared by both c2s ports.
    pub connections: ConnectionCap,
    /// Where XEP-0484 FAST tokens are kept; `None`: FAST is not offered.
    pub fast: Option<Arc<dyn fast::TokenStore>>,
    /// The certificates `tls` and `direct_tls` serve, for the RFC 5929
    /// `tls-server-end-point` channel binding (XEP-0440); `None`: only `tls-exporter`.
    pub cert: Option<Arc<rookery_stream::LiveCert>>,
}

/// How a listener starts its streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plain TCP, STARTTLS required before authentication (RFC 6120 §5) unless
    /// `[c2s] require_encryption = false`.
    StartTls,
    /// TLS from the first byte (XEP-0368).
    DirectTls,
}

/// Accepts connections on `listener` until the task is dropped; one task per connection.
///
/// Dropping the task (server shutdown) also ends the streams of this listener that are still
/// negotiating, with `system-shutdown`; bound sessions are closed through the core.
pub async fn run(listener: TcpListener, mode: Mode, ctx: Arc<C2sContext>) {
    if mode == Mode::StartTls && !ctx.config.require_encryption {
        // Said once per listener at start, so nobody runs a server like this unawares.
        let addr = listener.local_addr().ok();
        tracing::warn!(
            ?addr,
            allow_unencrypted_plain = ctx.config.allow_unencrypted_plain,
            "[c2s] require_encryption = false: clients may authenticate without TLS on this \
             listener; use this for local measurement only"
        );
    } else if ctx.config.allow_unencrypted_plain && mode == Mode::StartTls {
        tracing::warn!(
            "[c2s] allow_unencrypted_plain has no effect while require_encryption = true"
        );
    }
    // Never sent on: connections see `changed()` fail once this task, and the sender, is gone.
    let (_listening, stopped) = tokio::sync::watch::channel(());
    let cap = ctx.connections.clone();
    rookery_stream::accept_loop(listener, cap, |tcp, peer| {
        negotiate::serve(ctx.clone(), tcp, peer, mode, stopped.clone())
    })
    .await;
}
