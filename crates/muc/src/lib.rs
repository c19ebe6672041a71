//! Multi-user chat (XEP-0045) on its own domain (`conference.<domain>`), with XEP-0421
//! occupant ids and the XEP-0410 self-ping answer.
//!
//! Layout:
//! - [`room`]: a room as a value — a stanza in, the stanzas out, and what to store; all of
//!   XEP-0045's rules live there and are unit-tested without I/O;
//! - [`service`]: [`MucService`], the thin driver: a [`rookery_core::DomainRoute`] that finds
//!   (or creates) the room a stanza is for, runs it under the room's lock, stores what it
//!   says, delivers what it returns (broadcasts serialized once through
//!   [`rookery_core::Core::deliver_rendered`]), and answers the service's own disco;
//! - [`store`]: [`RoomStore`], where persistent rooms live ([`SqlRooms`] over
//!   `rookery-store`);
//! - [`roomconfig`]: the configuration and its `muc#roomconfig` form; [`role`]: affiliations,
//!   roles and the privilege tables; [`nick`]: the PRECIS nickname profile; [`error`]: the
//!   refusals and their wire errors; [`config`]: `[muc]`; [`ns`]: namespaces.

pub mod config;
pub mod error;
pub mod nick;
pub mod ns;
pub mod role;
pub mod room;
pub mod roomconfig;
pub mod service;
pub mod store;

pub use config::MucConfig;
pub use error::MucError;
pub use room::Room;
pub use service::MucService;
pub use store::{RoomStore, SqlRooms};
