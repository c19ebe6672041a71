//! Message archive management (XEP-0313, `urn:xmpp:mam:2` with `#extended`) for accounts,
//! with XEP-0359 stanza ids and XEP-0059 paging.
//!
//! Layout:
//! - [`module`]: [`Mam`], the module: it hooks the message path (a local account's outgoing
//!   messages, and messages delivered to a local account, where it also puts the archive's
//!   `<stanza-id/>` on them), answers queries and preferences, and purges by age and cap;
//! - [`serve`]: answering a query on any archive (an account's here, a room's in
//!   `rookery-muc`);
//! - [`archiver`]: the task that writes the rows of many messages in one transaction (group
//!   commit) off the message path, settled before an acknowledgement or a query;
//! - [`archive`]: which messages are archived, archive ids, stamping;
//! - [`query`]: the query form and RSM read into a [`query::Query`], result messages and
//!   `<fin/>`; [`prefs`]: archiving preferences; [`error`]: refusals and their wire errors;
//!   [`config`]: `[mam]`.
//!
//! The rows live in `rookery-store` (`Store::mam`): one table for every account, removed with
//! the account by the database (`ON DELETE CASCADE`), one for every room.

pub mod archive;
pub mod archiver;
pub mod config;
pub mod error;
pub mod module;
pub mod prefs;
pub mod query;
pub mod serve;

pub use config::MamConfig;
pub use module::Mam;

/// The namespaces the archive speaks.
pub mod ns {
    /// XEP-0313 extended queries (`before-id`, `after-id`, `ids`).
    pub const MAM_EXTENDED: &str = "urn:xmpp:mam:2#extended";
    /// XEP-0359 unique and stable stanza ids.
    pub const SID: &str = "urn:xmpp:sid:0";
    pub use rookery_proto::ns::{DELAY, FORWARD, HINTS, MAM, RSM};
}
