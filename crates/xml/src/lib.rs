//! Restricted streaming XML for XMPP (RFC 6120 §11).
//!
//! Layout:
//! - [`element`]: the namespace-resolved element tree and its writer;
//! - [`parser`]: a sans-IO stream parser: bytes in, in arbitrary chunks; out the stream header,
//!   each top-level element as a tree, and the stream close. Limits bound its memory.
//!   [`first_element`] reads back one element we serialized (stored or queued XML).
//!
//! The crate knows nothing of sockets or async runtimes, so it is cheap to test and fuzz.

pub mod element;
pub mod parser;

pub use element::{escape_into, Element, Node, CONTENT_NS};
pub use parser::{first_element, Event, Limits, StreamHeader, StreamParser, XmlError};
