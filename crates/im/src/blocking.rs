//! XEP-0191: Blocking Command — a block list per account and its enforcement.
//!
//! - `<blocklist/>` get (§3.2), `<block/>` and `<unblock/>` set (§3.3, §3.4; an empty
//!   `<unblock/>` empties the list), pushed to every resource that requested the list.
//! - Blocking sends `unavailable` to every subscriber and directed-presence recipient an item
//!   reaches (a bare JID, every contact at a blocked domain, a blocked resource), from each
//!   resource it had presence from; unblocking sends them the current presence again (§3.3,
//!   §3.4).
//! - What was stored before a block and is delivered later (offline messages, pending
//!   subscription requests) is held back too ([`blocks_sender`]).
//! - Enforcement (§3.5, §3.6), on every stanza between the user and a blocked JID: inbound
//!   messages and IQ requests get `service-unavailable`, other inbound stanzas are dropped;
//!   outbound messages and IQ requests get `not-acceptable` with `<blocked/>`
//!   (`urn:xmpp:blocking:errors`), outbound presence is dropped except `unsubscribe` and
//!   `unsubscribed` (the user may still end a subscription).
//! - The same check ([`blocks`]) serves the route table's `ToLocalAccount` hook and, through
//!   [`Module::blocks`], the core's pre-rendered fan-out (pubsub and PEP notifications,
//!   presence broadcasts), which drops silently in both directions.
//!
//! Matching follows XEP-0016 §2.1 as XEP-0191 requires: an item matches a sender by full JID,
//! bare JID, `domain/resource` or domain.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use rookery_core::module::{iq_result_for, IqAnswer, IqReply, IqResult};
use rookery_core::{priority, Core, Declaration, Flow, HookPoint, IqTarget, Module};
use rookery_jid::{BareJid, Jid};
use rookery_proto::{
    ns, IqType, MessageType, Stanza, StanzaError, StanzaErrorCondition as Cond, StanzaKind,
};
use rookery_xml::{Element, CONTENT_NS};

use crate::presence::{addressed, send_presence_to, send_unavailable_to, unavailable};
use crate::roster::internal;
use crate::state::{read, write, BlockList, Im};
use crate::util::{err, own_account};

/// The blocking module.
pub struct Blocking {
    im: Arc<Im>,
}

impl Blocking {
    /// A blocking module on the shared state.
    pub fn new(im: Arc<Im>) -> Self {
        Blocking { im }
    }
}

/// The forms of `j` a block-list item can match (XEP-0016 §2.1): full JID, bare JID,
/// `domain/resource`, domain.
pub fn candidates(j: &Jid) -> Vec<String> {
    let mut v = vec![j.as_str().to_owned()];
    if j.resource().is_some() {
        v.push(j.bare_str().to_owned());
    }
    if j.local().is_some() {
        if let Some(r) = j.resource() {
            v.push(format!("{}/{r}", j.domain()));
        }
        v.push(j.domain().to_owned());
    }
    v
}

/// Whether the block list `list` matches `j`.
pub fn blocks_in(list: &BlockList, j: &Jid) -> bool {
    let list = read(list);
    !list.is_empty() && candidates(j).iter().any(|c| list.contains(c))
}

/// Where presence sent to `to` meets what `item` blocks, as an address: `to` itself when
/// the item matches it (XEP-0016 §2.1: the same JID, its bare JID, its domain, ...); when
/// `to` is a bare JID and the item names one of its resources (a full JID, or
/// `domain/resource` at its domain), that resource; otherwise `None`.
fn reached(item: &Jid, to: &Jid) -> Option<Jid> {
    if candidates(to).iter().any(|c| c == item.as_str()) {
        return Some(to.clone());
    }
    let resource = item.resource()?;
    if !to.is_bare() || to.local().is_none() || item.domain() != to.domain() {
        return None;
    }
    match item.local() {
        Some(_) => item.bare_eq(to).then(|| item.clone()),
        None => to.with_resource(resource).ok(),
    }
}

/// Whether the block list `list` matches the sender of `stanza`: for stanzas stored before
/// a block and delivered later (offline messages, pending subscription requests), which
/// XEP-0191 §3.3 says the server MUST NOT deliver once the sender is blocked.
pub fn blocks_sender(list: &BlockList, stanza: &Stanza) -> bool {
    stanza.from().is_some_and(|f| blocks_in(list, f))
}

/// Whether `owner` blocks `j`. An account never blocks itself. The block list of an account
/// with sessions is cached (loaded here on first use); for one without, a single indexed
/// query answers, and nothing is kept, so the cache is bounded by the online accounts.
///
/// Asked for every stanza to or from a local account, so the cached answer is synchronous and
/// the store look-up (whose future is large) is boxed: the hook futures that await this stay
/// small.
pub async fn blocks(im: &Im, core: &Core, owner: &BareJid, j: &Jid) -> bool {
    match blocks_cached(im, owner, j) {
        Some(known) => known,
        None => Box::pin(blocks_uncached(im, core, owner, j)).await,
    }
}

/// [`blocks`] when it can answer without the store: `j` is `owner`, or `owner`'s block
/// list is cached.
fn blocks_cached(im: &Im, owner: &BareJid, j: &Jid) -> Option<bool> {
    if j.bare_str() == owner.as_str() {
        return Some(false);
    }
    im.cached_blocklist(owner).map(|list| blocks_in(&list, j))
}

/// [`blocks`] when `owner`'s block list is not cached.
async fn blocks_uncached(im: &Im, core: &Core, owner: &BareJid, j: &Jid) -> bool {
    let Some(user) = owner.local() else {
        return false;
    };
    if core.has_sessions(owner) {
        return match im.blocklist(core, owner).await {
            Ok(list) => blocks_in(&list, j),
            Err(e) => {
                tracing::error!(error = %e, "block list lookup failed");
                false
            }
        };
    }
    let c = candidates(j);
    let refs: Vec<&str> = c.iter().map(String::as_str).collect();
    match im
        .store()
        .blocking()
        .any_blocked(owner.domain(), user, &refs)
        .await
    {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "block list lookup failed");
            false
        }
    }
}

fn items(el: &Element) -> Result<Vec<Jid>, StanzaError> {
    el.children()
        .filter(|c| c.is("item", ns::BLOCKING))
        .map(|c| {
            c.attr("jid")
                .and_then(|j| Jid::parse(j).ok())
                .ok_or_else(|| err(Cond::JidMalformed, "invalid or missing jid"))
        })
        .collect()
}

/// The result of a block-list get (§3.2), serialized straight from the cached list (sorted,
/// so the answer is stable) without an element tree of it in between: a full list built as
/// a tree and then serialized cost many times its size at each get.
fn blocklist_result(iq: &Stanza, owner: &BareJid, list: &HashSet<String>) -> Bytes {
    let mut jids: Vec<&String> = list.iter().collect();
    jids.sort_unstable();
    const ITEM_MARKUP: usize = 16;
    let size = 512 + jids.iter().map(|j| j.len() + ITEM_MARKUP).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    iq_result_for(iq, owner, None)
        .element()
        .write_around(&mut out, CONTENT_NS, |out, ns| {
            Element::new("blocklist", ns::BLOCKING).write_around(out, ns, |out, ns| {
                for j in jids {
                    item(j).write_to(out, ns);
                }
            });
        });
    Bytes::from(out)
}

/// A block-list `<item jid/>`.
fn item(jid: &str) -> Element {
    Element::new("item", ns::BLOCKING).with_attr("jid", jid)
}

fn list_element(name: &str, jids: &[String]) -> Element {
    let mut el = Element::new(name, ns::BLOCKING);
    for j in jids {
        el.push_child(item(j));
    }
    el
}

impl Blocking {
    fn push(&self, core: &Core, owner: &BareJid, payload: Element) {
        // A session on another node of a cluster has its state there: it gets the push (as
        // for roster pushes, `Im::interested`).
        let targets = core
            .sessions_of(owner)
            .into_iter()
            .map(|(h, _)| h)
            .filter(|h| {
                self.im
                    .session(h.jid(), |s| s.blocklist_requested)
                    .unwrap_or(h.is_remote())
            });
        for h in targets {
            let iq = Stanza::iq(
                IqType::Set,
                &self.im.next_id("block"),
                Some(owner.clone().into()),
                Some(h.jid().clone()),
                payload.clone(),
            );
            h.send(Bytes::from(iq.to_bytes()));
        }
    }

    async fn set(&self, core: &Arc<Core>, owner: &BareJid, payload: &Element) -> IqResult {
        let block = payload.is("block", ns::BLOCKING);
        let jids = items(payload)?;
        if block && jids.is_empty() {
            return Err(err(Cond::BadRequest, "nothing to block"));
        }
        let user = owner
            .local()
            .ok_or_else(|| StanzaError::new(Cond::Forbidden))?;
        let strings: Vec<String> = jids.iter().map(|j| j.as_str().to_owned()).collect();
        let changed: Vec<String> = {
            // The store and the cached list change under the account's lock, store first: a
            // reader sees the old list or the new one, and never a list the store lacks.
            let _g = self.im.lock(owner).await;
            let list = self
                .im
                .blocklist_locked(core, owner)
                .await
                .map_err(internal)?;
            let store = self.im.store().blocking();
            if block {
                let new = self.new_items(&list, &strings)?;
                store
                    .add(owner.domain(), user, &new)
                    .await
                    .map_err(internal)?;
                write(&list).extend(new.iter().cloned());
                new
            } else if strings.is_empty() {
                store.clear(owner.domain(), user).await.map_err(internal)?;
                let mut all: Vec<String> = std::mem::take(&mut *write(&list)).into_iter().collect();
                all.sort();
                all
            } else {
                store
                    .remove(owner.domain(), user, &strings)
                    .await
                    .map_err(internal)?;
                let mut b = write(&list);
                strings.iter().filter(|s| b.remove(*s)).cloned().collect()
            }
        };
        core.account_changed(owner);
        self.push(
            core,
            owner,
            list_element(
                if block { "block" } else { "unblock" },
                if block || !strings.is_empty() {
                    &strings
                } else {
                    &[]
                },
            ),
        );
        self.presence_follows(core, owner, &changed, block).await;
        Ok(None)
    }

    /// The items of `strings` that `list` lacks, each once — or `resource-constraint` if they
    /// would take it past `[im.blocking] max_items` (RFC 6120 §8.3.3.18, as for a full
    /// roster: the account's storage is spent; XEP-0191 names no condition for it). A block
    /// that adds nothing always works, also on a list over a limit lowered since. Checked
    /// against the list in place, not a copy of it.
    fn new_items(&self, list: &BlockList, strings: &[String]) -> Result<Vec<String>, StanzaError> {
        let current = read(list);
        let mut seen = HashSet::new();
        let new: Vec<String> = strings
            .iter()
            .filter(|s| !current.contains(*s) && seen.insert(s.as_str()))
            .cloned()
            .collect();
        if !new.is_empty() && current.len() + new.len() > self.im.config().blocking.max_items {
            return Err(err(Cond::ResourceConstraint, "block list is full"));
        }
        Ok(new)
    }

    /// XEP-0191 §3.3/§3.4: whoever may receive the user's presence (a subscriber, or an
    /// entity a session sent directed presence to) and is reached by a `changed` item gets
    /// `unavailable` from each of the user's resources it had presence from when blocked, and
    /// their current presence again when unblocked, unless another item still blocks it. A
    /// domain or `domain/resource` item reaches every such contact at that domain; a full-JID
    /// item only that resource (see [`reached`]).
    async fn presence_follows(
        &self,
        core: &Arc<Core>,
        owner: &BareJid,
        changed: &[String],
        block: bool,
    ) {
        let items: Vec<Jid> = changed.iter().filter_map(|j| Jid::parse(j).ok()).collect();
        if items.is_empty() || !core.has_sessions(owner) {
            return;
        }
        let list = match self.im.blocklist(core, owner).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "block list lookup failed");
                return;
            }
        };
        // An unblocked JID another item still blocks gets nothing.
        let owed = |to: &Jid| block || !blocks_in(&list, to);
        let reach = |to: &Jid| -> Vec<Jid> {
            items
                .iter()
                .filter_map(|i| reached(i, to))
                .filter(|t| owed(t))
                .collect()
        };
        let subscribers: Vec<Jid> = match self.im.account(core, owner).await {
            Ok(a) => read(&a.roster)
                .items
                .iter()
                .filter(|(_, i)| i.subscription.has_from())
                .map(|(c, _)| c.clone().into())
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, "roster lookup failed");
                Vec::new()
            }
        };
        let targets: HashSet<Jid> = subscribers.iter().flat_map(&reach).collect();
        for t in &targets {
            if block {
                send_unavailable_to(&self.im, core, owner, t).await;
            } else {
                send_presence_to(&self.im, core, owner, t).await;
            }
        }
        // Directed presence is per session: only that session's presence is owed.
        for (h, _) in core.sessions_of(owner) {
            let Some((presence, directed)) = self
                .im
                .session(h.jid(), |s| (s.presence.clone(), s.directed.clone()))
            else {
                continue;
            };
            for t in directed.iter().flat_map(&reach) {
                let p = match (&presence, block) {
                    (_, true) => unavailable(h.jid(), &t),
                    (Some(p), false) => addressed(p, &t),
                    // Unavailable, its directed presence not kept: nothing to send again.
                    (None, false) => continue,
                };
                core.route(p).await;
            }
        }
    }

    /// A stanza between a local user and someone: the error to bounce, or `None` to drop.
    /// Every outbound stanza is refused with `<blocked/>` (§3.3: the user learns why), also
    /// presence — a subscription change towards a blocked JID too: removing the roster item
    /// is how a user ends one; inbound, messages and IQ requests get `service-unavailable`
    /// and the rest (presence of every kind) nothing (§3.3).
    fn enforcement_error(stanza: &Stanza, outbound: bool) -> Option<StanzaError> {
        if outbound {
            return Some(
                StanzaError::new(Cond::NotAcceptable)
                    .with_app(Element::new("blocked", ns::BLOCKING_ERRORS)),
            );
        }
        matches!(
            stanza.kind(),
            StanzaKind::Message(
                MessageType::Normal
                    | MessageType::Chat
                    | MessageType::Groupchat
                    | MessageType::Headline
            ) | StanzaKind::Iq(IqType::Get | IqType::Set)
        )
        .then(|| StanzaError::new(Cond::ServiceUnavailable))
    }
}

#[async_trait]
impl Module for Blocking {
    fn name(&self) -> &'static str {
        "blocking"
    }

    fn declare(&self) -> Declaration {
        Declaration {
            iqs: vec![
                (IqTarget::Account, ns::BLOCKING, "blocklist"),
                (IqTarget::Account, ns::BLOCKING, "block"),
                (IqTarget::Account, ns::BLOCKING, "unblock"),
            ],
            // Before anything else sees a stanza a block list stops.
            hooks: vec![
                (HookPoint::ToLocalAccount, priority::POLICY),
                (HookPoint::MessageFromLocal, priority::POLICY),
                (HookPoint::PresenceFromLocal, priority::POLICY),
                (HookPoint::IqFromLocal, priority::POLICY),
            ],
            server_features: vec![ns::BLOCKING],
            ..Declaration::default()
        }
    }

    async fn reply_iq(&self, core: &Arc<Core>, to: &BareJid, iq: &Stanza) -> IqAnswer {
        let owner = own_account(iq, to)?;
        let payload = iq
            .payload()
            .ok_or_else(|| StanzaError::new(Cond::BadRequest))?;
        match (iq.kind(), payload.name()) {
            (StanzaKind::Iq(IqType::Get), "blocklist") => {
                if let Some(from) = iq.from() {
                    self.im.session_mut(from, |s| s.blocklist_requested = true);
                }
                let blocked = self.im.blocklist(core, &owner).await.map_err(internal)?;
                let result = blocklist_result(iq, &owner, &read(&blocked));
                Ok(IqReply::serialized(result, Vec::new()))
            }
            (StanzaKind::Iq(IqType::Set), "block" | "unblock") => {
                self.set(core, &owner, payload).await.map(IqReply::from)
            }
            _ => Err(StanzaError::new(Cond::BadRequest)),
        }
    }

    async fn blocks(&self, core: &Arc<Core>, owner: &BareJid, other: &Jid) -> bool {
        blocks(&self.im, core, owner, other).await
    }

    fn blocks_now(&self, owner: &BareJid, other: &Jid) -> Option<bool> {
        blocks_cached(&self.im, owner, other)
    }

    async fn hook(&self, core: &Arc<Core>, point: HookPoint, stanza: Stanza) -> Flow {
        // Borrowed, not cloned: this runs twice for every stanza between local accounts.
        let (Some(from), Some(to)) = (stanza.from(), stanza.to()) else {
            return Flow::Continue(stanza);
        };
        let blocked = match point {
            HookPoint::ToLocalAccount => blocks(&self.im, core, &to.to_bare(), from).await,
            HookPoint::MessageFromLocal | HookPoint::IqFromLocal | HookPoint::PresenceFromLocal => {
                blocks(&self.im, core, &from.to_bare(), to).await
            }
            _ => false,
        };
        if !blocked {
            return Flow::Continue(stanza);
        }
        let outbound = point != HookPoint::ToLocalAccount;
        if let Some(e) = Self::enforcement_error(&stanza, outbound) {
            if outbound {
                // Straight to the sending session: routed, the error would come "from" the
                // blocked JID and be dropped by the inbound rule.
                let session = stanza.from().and_then(|f| core.session(f));
                if let (Some(reply), Some(session)) = (stanza.error_reply(&e), session) {
                    session.send(Bytes::from(reply.to_bytes()));
                }
            } else {
                core.reply_error(&stanza, e).await;
            }
        }
        Flow::Handled
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The serialized get result is the tree the router would have built and serialized:
    /// the items sorted, escaped.
    #[test]
    fn blocklist_result_is_the_tree_serialized() {
        let (owner, iq) = crate::util::own_get(Element::new("blocklist", ns::BLOCKING));
        let list: HashSet<String> = ["romeo@example.net", "example.org/a&b", "b@c"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        let mut sorted: Vec<String> = list.iter().cloned().collect();
        sorted.sort();
        let tree = iq_result_for(&iq, &owner, Some(list_element("blocklist", &sorted)));
        assert_eq!(
            blocklist_result(&iq, &owner, &list).as_ref(),
            tree.to_bytes().as_slice()
        );
    }

    /// The block list of an account with a session is read once and then answered from
    /// memory (the store is closed here to prove it), and dropped with the last session.
    #[tokio::test]
    async fn block_list_of_an_online_account_is_cached_and_evicted() {
        use rookery_core::{CoreBuilder, CoreConfig, MemoryAccounts, SessionHandle};
        use rookery_store::{Credentials, Store};

        let store = Store::open("sqlite::memory:").await.unwrap();
        let creds = Credentials::derive("pencil", 64).unwrap();
        store
            .accounts()
            .create("localhost", "alice", &creds)
            .await
            .unwrap();
        store
            .blocking()
            .add("localhost", "alice", &["mallory@evil.lit".to_owned()])
            .await
            .unwrap();
        let core = CoreBuilder::new(CoreConfig::default(), Arc::new(MemoryAccounts::new()))
            .build()
            .unwrap();
        let im = Im::new(crate::ImConfig::default(), store.clone());
        let alice = BareJid::parse("alice@localhost").unwrap();
        let full = Jid::parse("alice@localhost/r").unwrap();
        let (h, _end) = SessionHandle::new(core.next_session_id(), full.clone(), 8);
        core.bind(h.clone()).await;
        let mallory = Jid::parse("mallory@evil.lit/x").unwrap();
        let friend = Jid::parse("friend@good.lit").unwrap();
        assert!(im.cached_blocklist(&alice).is_none());
        assert!(blocks(&im, &core, &alice, &mallory).await);
        assert!(im.cached_blocklist(&alice).is_some());
        // No store from here on: a lookup that still went to SQL would fail (and say "not
        // blocked").
        store.close().await;
        for _ in 0..3 {
            assert!(blocks(&im, &core, &alice, &mallory).await);
            assert!(!blocks(&im, &core, &alice, &friend).await);
        }
        core.unbind(&full, h.id()).await;
        im.evict_if_offline(&core, &alice).await;
        assert!(im.cached_blocklist(&alice).is_none());
    }

    #[test]
    fn what_an_item_reaches() {
        let j = |s: &str| Jid::parse(s).unwrap();
        let cases = [
            ("bob@b.lit", "bob@b.lit", Some("bob@b.lit")),
            ("b.lit", "bob@b.lit", Some("bob@b.lit")),
            ("b.lit", "bob@b.lit/phone", Some("bob@b.lit/phone")),
            ("bob@b.lit/phone", "bob@b.lit", Some("bob@b.lit/phone")),
            ("b.lit/phone", "bob@b.lit", Some("bob@b.lit/phone")),
            ("bob@b.lit/phone", "bob@b.lit/desk", None),
            ("bob@b.lit", "carol@b.lit", None),
            ("c.lit", "bob@b.lit", None),
            ("b.lit/phone", "c.lit", None),
        ];
        for (item, to, want) in cases {
            assert_eq!(reached(&j(item), &j(to)), want.map(j), "{item} {to}");
        }
    }

    #[test]
    fn matching_forms() {
        let j = Jid::parse("romeo@montague.lit/orchard").unwrap();
        assert_eq!(
            candidates(&j),
            vec![
                "romeo@montague.lit/orchard",
                "romeo@montague.lit",
                "montague.lit/orchard",
                "montague.lit"
            ]
        );
        let a = BlockList::default();
        assert!(!blocks_in(&a, &j));
        write(&a).insert("montague.lit".into());
        assert!(blocks_in(&a, &j));
        assert!(blocks_in(&a, &Jid::parse("tybalt@montague.lit").unwrap()));
        assert!(!blocks_in(&a, &Jid::parse("juliet@capulet.lit").unwrap()));
        let b = BlockList::default();
        write(&b).insert("romeo@montague.lit".into());
        assert!(blocks_in(&b, &j));
        assert!(!blocks_in(&b, &Jid::parse("montague.lit").unwrap()));
    }
}
