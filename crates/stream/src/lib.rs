//! The connection loop every listener shares (design.md "One connection loop, a policy per
//! listener"): c2s, s2s and components differ only in negotiation and in the trust rule for
//! `from`; reading, framing, stream errors and draining the outbound queue live here once.
//!
//! Layout:
//! - [`cert`]: the server's certificate, replaceable at run time (every TLS configuration
//!   asks it at each handshake);
//! - [`header`]: the first negotiation step, checking the peer's stream header (sans-IO);
//! - [`keepalive`]: dead-peer detection (when to send a check, when the peer is dead);
//! - [`limit`]: the rate-limit type of every listener (per IP, IPv6 by /64; per account);
//! - [`listen`]: the accept loop, with the connection limits of each kind of listener (open,
//!   per address, still negotiating);
//! - [`transport`]: plain TCP or TLS (server or client side) behind one type;
//! - [`conn`]: a connection: transport + stream parser + the stream-level framing;
//! - [`negotiation`]: stream negotiation as sans-IO machines and the one driver that runs
//!   them over a [`Conn`];
//! - [`message`]: the message framing of WebSocket (RFC 7395) and BOSH (XEP-0206): one
//!   element per message, `<open/>`/`<close/>` as the stream's header and close, carried by
//!   a [`MessageTransport`] the connection drives itself;
//! - [`pump`]: the loop of a bound stream: inbound elements to a [`pump::Inbound`] policy,
//!   routed bytes out in batches, kill switch, idle timeout.

pub mod cert;
pub mod conn;
pub mod header;
pub mod keepalive;
pub mod limit;
pub mod listen;
pub mod message;
pub mod negotiation;
pub mod pump;
pub mod transport;

#[cfg(test)]
mod channels;

pub use cert::LiveCert;
pub use conn::{new_stream_id, Conn, ConnError};
pub use limit::{IpKey, RateLimit};
pub use listen::{accept_loop, CapLimits, ConnectionCap};
pub use message::{Frame, Header, MessageTransport, Messages};
pub use transport::Transport;
