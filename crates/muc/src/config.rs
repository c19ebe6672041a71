//! The `[muc]` section of `rookery.toml` (every key in docs/configuration.md).

use rookery_store::page::PageLimit;
use serde::Deserialize;

/// Service settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MucConfig {
    /// Serve multi-user chat on its own domain.
    pub enabled: bool,
    /// The service's domain; empty means `conference.<domain>`.
    pub domain: String,
    /// Who may create rooms: `local` (accounts of the service's host) or `anyone`.
    pub create_rooms: String,
    /// The most rooms one account may own at a time (0: no limit).
    pub max_rooms_per_user: usize,
    /// The most occupants a room may be configured for (`muc#roomconfig_maxusers`).
    pub max_occupants: u32,
    /// The occupant limit of a new room.
    pub default_max_occupants: u32,
    /// Whether new rooms are persistent.
    pub default_persistent: bool,
    /// Whether new rooms are listed in disco#items of the service.
    pub default_public: bool,
    /// How many recent groupchat messages a room keeps in memory for newcomers (§7.2.14).
    pub history_length: usize,
    /// The most bytes (serialized) of those messages a room keeps: older ones go first, and
    /// a message larger than this alone is not kept. 128 KiB: twenty messages of several
    /// KiB each, while every persistent room holds its history in memory from startup and
    /// a newcomer gets it all at once — it must stay well below a session's queue
    /// (`[c2s] session_queue_bytes`, 1 MiB), or entering the room ends the session.
    pub history_max_bytes: usize,
    /// The most JIDs with an affiliation (member, admin, owner, outcast) one room holds; a
    /// change that would add past it gets `resource-constraint`. 2,000: member lists are
    /// small in practice, and a persistent room's list is in memory from startup and sent
    /// whole to whoever asks for it.
    pub max_affiliations: usize,
    /// Whether rooms archive their groupchat messages (XEP-0313 on the room JID).
    pub archive: bool,
    /// The most messages one room archive query returns.
    pub archive_max_page: u64,
    /// The stanza bytes after which a page of a room's archive ends (at least one message),
    /// as `[mam] max_page_bytes` for accounts: the same query code reads both.
    pub archive_max_page_bytes: usize,
}

impl Default for MucConfig {
    fn default() -> Self {
        MucConfig {
            enabled: true,
            domain: String::new(),
            create_rooms: "local".into(),
            max_rooms_per_user: 100,
            max_occupants: 1000,
            default_max_occupants: 200,
            default_persistent: false,
            default_public: true,
            history_length: 20,
            history_max_bytes: 128 * 1024,
            max_affiliations: 2000,
            archive: true,
            archive_max_page: 100,
            archive_max_page_bytes: rookery_mam::config::PAGE_BYTES,
        }
    }
}

impl MucConfig {
    /// The service's domain for the server `domain`.
    pub fn service_domain(&self, domain: &str) -> String {
        if self.domain.is_empty() {
            format!("conference.{domain}")
        } else {
            self.domain.clone()
        }
    }

    /// How large a page of a room's archive may be.
    pub fn archive_page_limit(&self) -> PageLimit {
        PageLimit {
            max: self.archive_max_page,
            max_bytes: self.archive_max_page_bytes,
        }
    }

    /// Checks the settings; the message names the bad key.
    pub fn validate(&self) -> Result<(), String> {
        if !matches!(self.create_rooms.as_str(), "local" | "anyone") {
            return Err(format!(
                "[muc] create_rooms must be \"local\" or \"anyone\", not {:?}",
                self.create_rooms
            ));
        }
        if self.default_max_occupants == 0 || self.default_max_occupants > self.max_occupants {
            return Err("[muc] default_max_occupants must be between 1 and max_occupants".into());
        }
        if self.max_affiliations == 0 {
            return Err("[muc] max_affiliations must be at least 1 (a room has an owner)".into());
        }
        if self.archive_max_page == 0 {
            return Err("[muc] archive_max_page must be at least 1".into());
        }
        if self.archive_max_page_bytes == 0 {
            return Err("[muc] archive_max_page_bytes must be at least 1".into());
        }
        Ok(())
    }
}
