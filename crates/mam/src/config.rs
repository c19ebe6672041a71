//! The `[mam]` section of `rookery.toml` (every key in docs/configuration.md).

use rookery_store::page::PageLimit;
use serde::Deserialize;

/// Archive settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MamConfig {
    /// Archive accounts' messages and answer their queries.
    pub enabled: bool,
    /// The archiving default of an account that set no preferences: `always`, `roster` or
    /// `never`.
    pub default: String,
    /// Messages older than this many days are purged (0: kept until the cap).
    pub max_age_days: u64,
    /// The most messages one account's archive keeps; the oldest beyond it are purged
    /// (0: no cap).
    pub max_messages_per_user: u64,
    /// How often the purge runs, in seconds.
    pub purge_interval_secs: u64,
    /// The most messages one query page returns (a larger RSM `max` is lowered to it).
    pub max_page: u64,
    /// The stanza bytes after which a query page ends (the message that reaches them is its
    /// last; a page holds at least one): with `max_page` alone, a page of messages of up to
    /// `[c2s] max_stanza_bytes` each was 25 MiB read into memory and sent per query.
    pub max_page_bytes: usize,
    /// The longest an archived message waits for its commit when nothing waits for it, in
    /// milliseconds: what arrives meanwhile is committed with it. Longer batches write each
    /// index page once for more rows; a `kill -9` may take the copies of this long's
    /// messages that no acknowledgement promised (see `archiver.rs`).
    pub batch_delay_ms: u64,
}

impl Default for MamConfig {
    fn default() -> Self {
        MamConfig {
            enabled: true,
            default: "always".into(),
            max_age_days: 0,
            max_messages_per_user: 100_000,
            purge_interval_secs: 3600,
            max_page: 100,
            max_page_bytes: PAGE_BYTES,
            batch_delay_ms: 1000,
        }
    }
}

/// The default page byte budget (`max_page_bytes`, `[muc] archive_max_page_bytes`): the
/// default largest stanza, so a page is at most about 512 KiB of messages, which its results
/// bring to the requester's session queue at once: well within it (`[c2s]
/// session_queue_bytes`, 1 MiB).
pub const PAGE_BYTES: usize = 256 * 1024;

/// The longest purge interval (a year).
const MAX_PURGE_INTERVAL_SECS: u64 = 365 * 86_400;

impl MamConfig {
    /// How large a query page may be.
    pub fn page_limit(&self) -> PageLimit {
        PageLimit {
            max: self.max_page,
            max_bytes: self.max_page_bytes,
        }
    }

    /// Checks the settings; the message names the bad key.
    pub fn validate(&self) -> Result<(), String> {
        if crate::prefs::Default::parse(&self.default).is_none() {
            return Err(format!(
                "[mam] default must be \"always\", \"roster\" or \"never\", not {:?}",
                self.default
            ));
        }
        if self.max_page == 0 {
            return Err("[mam] max_page must be at least 1".into());
        }
        if self.max_page_bytes == 0 {
            return Err("[mam] max_page_bytes must be at least 1".into());
        }
        if !(1..=60_000).contains(&self.batch_delay_ms) {
            return Err("[mam] batch_delay_ms must be between 1 and 60000".into());
        }
        // A year at most: the purge's timer adds the interval to the clock, which a value
        // meant as "never" would overflow.
        if !(1..=MAX_PURGE_INTERVAL_SECS).contains(&self.purge_interval_secs) {
            return Err(format!(
                "[mam] purge_interval_secs must be between 1 and {MAX_PURGE_INTERVAL_SECS} (a year)"
            ));
        }
        Ok(())
    }
}
