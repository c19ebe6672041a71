//! Settings of the IM modules: the `[im]` section of the configuration file. Every key is
//! documented in `docs/configuration.md` with its default.

use rookery_store::offline::OfflineCap;
use serde::Deserialize;

/// The `[im]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImConfig {
    /// `[im.roster]`.
    pub roster: RosterConfig,
    /// `[im.presence]`.
    pub presence: PresenceConfig,
    /// `[im.offline]`.
    pub offline: OfflineConfig,
    /// `[im.blocking]`.
    pub blocking: BlockingConfig,
    /// `[im.carbons]`.
    pub carbons: Toggle,
    /// `[im.vcard]`.
    pub vcard: SizeLimited,
    /// `[im.private]`.
    pub private: SizeLimited,
    /// `[im.push]`.
    pub push: PushConfig,
}

/// XEP-0357 push notifications.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// Whether the module is loaded (and `urn:xmpp:push:0` advertised).
    pub enabled: bool,
    /// Whether a notification may carry the message body (to a client that asked for it):
    /// the app server, and the phone vendor's push service behind it, then read it.
    pub include_body: bool,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            enabled: true,
            include_body: false,
        }
    }
}

/// Roster limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RosterConfig {
    /// Most items in one roster; a roster set adding one more gets `resource-constraint`.
    /// Also the most stored inbound subscription requests. 20,000: several times a big
    /// roster of a few thousand contacts (each item costs a few hundred bytes cached, and is
    /// sent at each roster get).
    pub max_items: usize,
    /// Most bytes the items of one roster hold — contact JIDs, names and group names
    /// ([`crate::state::roster_bytes`]); a change that would add past it gets
    /// `resource-constraint` and changes nothing. 1 MiB: a roster of 5,000 contacts with a
    /// 25-byte JID, a 15-byte name and a 10-byte group holds 250 KB, so four times that;
    /// without it the per-item limits multiplied to gigabytes per account, cached while it
    /// is online and serialized again at each roster get.
    pub max_bytes: usize,
    /// Longest item name and group name, in bytes (RFC 6121 §2.3.3 `not-acceptable`).
    pub max_name_bytes: usize,
    /// Most groups on one item.
    pub max_groups: usize,
}

impl Default for RosterConfig {
    fn default() -> Self {
        RosterConfig {
            max_items: 20_000,
            max_bytes: 1024 * 1024,
            max_name_bytes: 1024,
            max_groups: 64,
        }
    }
}

/// Presence limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceConfig {
    /// Most entities one session's directed presence is kept for (RFC 6121 §4.6: each gets
    /// `unavailable` when the session goes); one more gets `resource-constraint`.
    pub max_directed: usize,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig { max_directed: 1000 }
    }
}

/// XEP-0160 offline storage.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OfflineConfig {
    /// Store messages for offline users (and advertise `msgoffline`).
    pub enabled: bool,
    /// Most messages stored per user; beyond it the sender gets `service-unavailable`.
    pub max_per_user: usize,
    /// Most bytes of stored stanzas per user, likewise. 32 MiB: above a session's XEP-0198
    /// budget of unacknowledged stanzas (16 MiB), so what a session that ends had not
    /// acknowledged fits when it is routed here, and far more than a person's chats while
    /// offline; without it `max_per_user` messages of the largest stanza (256 KiB) let any
    /// sender put 256 MB on disk per account.
    pub max_bytes_per_user: usize,
}

impl OfflineConfig {
    /// Both limits, as the store checks them.
    pub fn cap(&self) -> OfflineCap {
        let max = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        OfflineCap {
            messages: max(self.max_per_user),
            bytes: max(self.max_bytes_per_user),
        }
    }
}

impl Default for OfflineConfig {
    fn default() -> Self {
        OfflineConfig {
            enabled: true,
            max_per_user: 1000,
            max_bytes_per_user: 32 * 1024 * 1024,
        }
    }
}

/// XEP-0191 blocking.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlockingConfig {
    /// Whether the module is loaded.
    pub enabled: bool,
    /// Most items in one block list; a block that would add past it gets
    /// `resource-constraint` and blocks nothing. 5,000: years of one-by-one spam blocking
    /// stay far below it, and the list is cached whole while the account is online and sent
    /// whole at each get (5,000 items of a 40-byte JID are about 300 KB); without a bound one
    /// account could store millions.
    pub max_items: usize,
}

impl Default for BlockingConfig {
    fn default() -> Self {
        BlockingConfig {
            enabled: true,
            max_items: 5000,
        }
    }
}

/// A module that is on or off.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Toggle {
    /// Whether the module is loaded.
    pub enabled: bool,
}

impl Default for Toggle {
    fn default() -> Self {
        Toggle { enabled: true }
    }
}

/// A storage module with a size limit per stored document.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SizeLimited {
    /// Whether the module is loaded.
    pub enabled: bool,
    /// Largest document stored, in bytes of serialized XML (`not-acceptable` beyond).
    pub max_bytes: usize,
}

impl Default for SizeLimited {
    fn default() -> Self {
        SizeLimited {
            enabled: true,
            max_bytes: 128 * 1024,
        }
    }
}
