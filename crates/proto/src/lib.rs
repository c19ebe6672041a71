//! Typed XMPP at the boundaries: namespaces, stanzas and the error conditions of RFC 6120.
//!
//! Layout:
//! - [`ns`]: namespace constants, one place for every URI the server speaks;
//! - [`stanza`]: [`Stanza`] — a validated `message`/`presence`/`iq` with parsed addresses;
//! - [`error`]: [`StanzaError`] (RFC 6120 §8.3) and [`StreamError`] (RFC 6120 §4.9), each a
//!   closed enum of the conditions the RFC defines, mapped once to the wire;
//! - [`stream`]: stream headers and stream-level elements (`<stream:features/>`, errors);
//! - [`form`]: XEP-0004 data forms (pubsub, MUC and MAM configuration and queries);
//! - [`time`]: XEP-0082 date-times and XEP-0203 delay stamps;
//! - [`rsm`]: XEP-0059 result set management (archives and pubsub items page alike).
//!
//! No I/O here: everything is pure and cheap to test.

pub mod error;
pub mod form;
pub mod ns;
pub mod rsm;
pub mod stanza;
pub mod stream;
pub mod time;

pub use error::{ErrorType, StanzaError, StanzaErrorCondition, StreamError, StreamErrorCondition};
pub use stanza::{IqType, MessageType, PresenceType, Stanza, StanzaKind, StanzaParseError};
