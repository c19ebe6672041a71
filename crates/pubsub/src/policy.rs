//! Access policy, injected into the engine (design.md point 9): the roster facts the
//! `presence` and `roster` access models need (XEP-0060 §4.5), answered by the IM layer.

use async_trait::async_trait;
use rookery_jid::BareJid;

/// What the engine asks about an owner's roster.
#[async_trait]
pub trait AccessPolicy: Send + Sync + 'static {
    /// Whether `who` is subscribed to `owner`'s presence (RFC 6121 subscription `from` or
    /// `both` in `owner`'s roster).
    async fn has_presence_subscription(&self, owner: &BareJid, who: &BareJid) -> bool;

    /// The groups of `who` in `owner`'s roster; `None` if `who` is not in it.
    async fn roster_groups(&self, owner: &BareJid, who: &BareJid) -> Option<Vec<String>>;
}

/// A policy for services without rosters: nobody is a contact (only `open`, `whitelist` and
/// `authorize` nodes admit anyone but their affiliates).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoRosters;

#[async_trait]
impl AccessPolicy for NoRosters {
    async fn has_presence_subscription(&self, _owner: &BareJid, _who: &BareJid) -> bool {
        false
    }

    async fn roster_groups(&self, _owner: &BareJid, _who: &BareJid) -> Option<Vec<String>> {
        None
    }
}
