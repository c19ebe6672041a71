//! Instant messaging for Rookery: what a Jabber client sees after login (RFC 6121 and the
//! extensions every mainstream client expects).
//!
//! Layout, one file per spec part, each a [`rookery_core::Module`] registered with the core:
//! - [`roster`]: RFC 6121 §2 roster get/set/remove, pushes to interested resources, XEP-0237
//!   versioning;
//! - [`subscription`]: the subscription state machine of RFC 6121 Appendix A, as a table
//!   (pure, no I/O);
//! - [`presence`]: RFC 6121 §3–4 — subscription stanzas in and out (with pre-approval and
//!   stored pending requests), initial presence, probes, broadcasts, directed presence and the
//!   unavailable owed when a session ends; [`directed`]: in a cluster, the directed presence
//!   to other servers that a dead node's sessions are owed;
//! - [`delivery`]: RFC 6121 §8.5 message delivery rules for local bare and full JIDs;
//! - [`offline`]: XEP-0160 offline storage with XEP-0203 delay stamps and a per-user cap;
//! - [`blocking`]: XEP-0191 block list and its enforcement;
//! - [`carbons`]: XEP-0280 message carbons;
//! - [`push`]: XEP-0357 push notifications for messages held while no client is connected;
//! - [`vcard`]: XEP-0054 vcard-temp; [`last`]: XEP-0012 last activity; [`private`]: XEP-0049
//!   private XML storage; [`caps`]: XEP-0115 entity capabilities per resource.
//!
//! Shared state lives in [`Im`]: per-session flags (interested resource, last presence,
//! directed-presence set, carbons, caps) and a cache of the roster and block list of accounts
//! that have sessions. Changes to one account's roster or block list are serialized by a
//! striped lock and written through to the store before anyone is told they happened.

pub mod blocking;
pub mod caps;
pub mod carbons;
pub mod config;
pub mod delivery;
pub mod directed;
pub mod last;
pub mod offline;
pub mod presence;
pub mod private;
pub mod push;
pub mod roster;
pub mod state;
pub mod subscription;
pub mod util;
pub mod vcard;

use std::sync::Arc;

use rookery_core::Module;
use rookery_store::Store;

pub use config::ImConfig;
pub use state::Im;

/// The IM modules, sharing one [`Im`] state. Their hooks run by declared priority (blocking at
/// `priority::POLICY`, so that nothing else sees a blocked stanza); equal priorities in
/// this order. The returned [`Im`] answers questions other crates ask
/// (e.g. PEP: does this resource want `node+notify`? see [`Im::wants_notify`]).
pub fn modules(config: ImConfig, store: Store) -> (Arc<Im>, Vec<Arc<dyn Module>>) {
    let im = Arc::new(Im::new(config, store));
    let mut v: Vec<Arc<dyn Module>> = Vec::new();
    if im.config().blocking.enabled {
        v.push(Arc::new(blocking::Blocking::new(im.clone())));
    }
    v.push(Arc::new(roster::RosterModule::new(im.clone())));
    v.push(Arc::new(presence::PresenceModule::new(im.clone())));
    if im.config().carbons.enabled {
        v.push(Arc::new(carbons::Carbons::new(im.clone())));
    }
    v.push(Arc::new(delivery::Delivery::new(im.clone())));
    if im.config().offline.enabled {
        v.push(Arc::new(offline::Offline::new(im.clone())));
    }
    if im.config().vcard.enabled {
        v.push(Arc::new(vcard::VCard::new(im.clone())));
    }
    v.push(Arc::new(last::Last::new(im.clone())));
    if im.config().private.enabled {
        v.push(Arc::new(private::Private::new(im.clone())));
    }
    v.push(Arc::new(caps::CapsModule::new(im.clone())));
    if im.config().push.enabled {
        v.push(Arc::new(push::Push::new(im.clone())));
    }
    (im, v)
}
