//! RFC 6121 §2: roster management, and XEP-0237 roster versioning.
//!
//! - get (§2.2): the whole roster, or with versioning (XEP-0237 §3) an empty result when the
//!   client's version is current, or an empty result followed by pushes of what changed since
//!   the client's version (items and removals, from the per-item versions and the removal
//!   tombstones the store keeps);
//! - set (§2.3): exactly one item; validation and the errors of §2.3.3; the subscription
//!   state is never taken from the client;
//! - remove (§2.5): `subscription='remove'`, which also cancels the subscriptions both ways
//!   (§2.5.3: `unsubscribe` and/or `unsubscribed` to the contact);
//! - pushes (§2.1.6) to every interested resource (those that requested the roster);
//! - an account removed in-band (XEP-0077 §3.2): every subscription with its contacts is
//!   cancelled the way removing each item would (RFC 6121 §3.3), so their rosters update.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use rookery_core::module::IqResult;
use rookery_core::{
    iq_result_for, priority, Core, Declaration, Event, EventKind, IqAnswer, IqReply, IqTarget,
    Module,
};
use rookery_jid::{BareJid, Jid};
use rookery_proto::{ns, IqType, PresenceType, Stanza, StanzaError, StanzaErrorCondition as Cond};
use rookery_store::rosters::{Request, RosterItem};
use rookery_store::StoreError;
use rookery_xml::{Element, CONTENT_NS};

use crate::presence;
use crate::state::{read, Account, Im, RosterCache};
use crate::util::{err, own_account};

/// The roster module.
pub struct RosterModule {
    im: Arc<Im>,
}

impl RosterModule {
    /// A roster module on the shared state.
    pub fn new(im: Arc<Im>) -> Self {
        RosterModule { im }
    }
}

/// `resource-constraint` for a change past `[im.roster] max_items` or `max_bytes` (a roster
/// set, or a subscription or pre-approval that would add an item). RFC 6121 §2.3.3 names
/// `not-acceptable` for an item over a per-item limit (a name or group too long); a roster
/// that has no room left for an acceptable item is the account's storage spent, which is
/// RFC 6120 §8.3.3.18's `resource-constraint`.
pub(crate) fn roster_full() -> StanzaError {
    err(Cond::ResourceConstraint, "roster is full")
}

/// A store failure as the error the client sees (details go to the log only).
pub fn internal(e: StoreError) -> StanzaError {
    tracing::error!(error = %e, "store error");
    StanzaError::new(Cond::InternalServerError)
}

/// The `<item/>` for `contact`: its state, or `subscription='remove'` for `None`.
pub fn item_element(contact: &str, item: Option<&RosterItem>) -> Element {
    let mut el = Element::new("item", ns::ROSTER).with_attr("jid", contact);
    let Some(item) = item else {
        el.set_attr("subscription", "remove");
        return el;
    };
    if let Some(n) = &item.name {
        el.set_attr("name", n.as_str());
    }
    el.set_attr("subscription", item.subscription.as_str());
    if item.ask {
        el.set_attr("ask", "subscribe");
    }
    if item.approved {
        el.set_attr("approved", "true");
    }
    for g in &item.groups {
        el.push_child(Element::new("group", ns::ROSTER).with_text(g.as_str()));
    }
    el
}

/// Sends a roster push for `contact` (`None`: removed) at roster version `ver` to every
/// interested resource of `owner` (RFC 6121 §2.1.6).
pub fn push(
    im: &Im,
    core: &Core,
    owner: &BareJid,
    contact: &str,
    item: Option<&RosterItem>,
    ver: i64,
) {
    let targets = im.interested(core, owner);
    if targets.is_empty() {
        return;
    }
    let query = Element::new("query", ns::ROSTER)
        .with_attr("ver", ver.to_string())
        .with_child(item_element(contact, item));
    for t in targets {
        let iq = Stanza::iq(
            IqType::Set,
            &im.next_id("push"),
            Some(owner.clone().into()),
            Some(t.jid().clone()),
            query.clone(),
        );
        t.send(Bytes::from(iq.to_bytes()));
    }
}

/// Tells the modules that `owner`'s item for `contact` changed or went (after the store
/// and the push): what they grant by the roster is checked again (e.g. PEP subscriptions,
/// XEP-0163 §8.1). Called outside the account's lock, which they may need to read it.
pub async fn announce(core: &Arc<Core>, owner: &BareJid, contact: &BareJid) {
    core.emit(&Event::RosterItemChanged {
        owner: owner.clone(),
        contact: contact.clone(),
    })
    .await;
}

/// A validated roster set.
struct ItemSet {
    contact: BareJid,
    remove: bool,
    name: Option<String>,
    groups: Vec<String>,
}

fn parse_set(im: &Im, owner: &BareJid, query: &Element) -> Result<ItemSet, StanzaError> {
    let mut items = query.children().filter(|c| c.is("item", ns::ROSTER));
    let (Some(item), None) = (items.next(), items.next()) else {
        return Err(err(
            Cond::BadRequest,
            "a roster set carries exactly one item",
        ));
    };
    let limits = &im.config().roster;
    let jid = item
        .attr("jid")
        .ok_or_else(|| err(Cond::BadRequest, "item without jid"))?;
    let jid = Jid::parse(jid).map_err(|_| err(Cond::BadRequest, "invalid jid"))?;
    if !jid.is_bare() {
        return Err(err(Cond::BadRequest, "roster items are bare JIDs"));
    }
    let contact = jid.to_bare();
    let remove = item.attr("subscription") == Some("remove");
    if !remove && &contact == owner {
        return Err(err(
            Cond::NotAllowed,
            "you cannot add yourself to your roster",
        ));
    }
    let name = item
        .attr("name")
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    if name
        .as_ref()
        .is_some_and(|n| n.len() > limits.max_name_bytes)
    {
        return Err(err(Cond::NotAcceptable, "name too long"));
    }
    let mut groups = Vec::new();
    let mut seen = HashSet::new();
    for g in item.children().filter(|c| c.is("group", ns::ROSTER)) {
        let g = g.text();
        if g.is_empty() {
            return Err(err(Cond::NotAcceptable, "empty group name"));
        }
        if g.len() > limits.max_name_bytes {
            return Err(err(Cond::NotAcceptable, "group name too long"));
        }
        if !seen.insert(g.clone()) {
            return Err(err(Cond::BadRequest, "duplicate group"));
        }
        groups.push(g);
    }
    if groups.len() > limits.max_groups {
        return Err(err(Cond::NotAcceptable, "too many groups"));
    }
    Ok(ItemSet {
        contact,
        remove,
        name,
        groups,
    })
}

/// The `result` to the roster get `iq` of `owner` with the whole roster, with its version
/// when the client asked with one — serialized straight from the cache, one item element at
/// a time: an element tree of the whole roster, then its serialization, held several times
/// the roster at each get (fuzz F2: +50 MB for a 20 MB roster, each of 4 concurrent gets).
fn full(iq: &Stanza, owner: &BareJid, roster: &RosterCache, versioned: bool) -> Bytes {
    let result = iq_result_for(iq, owner, None);
    let mut query = Element::new("query", ns::ROSTER);
    if versioned {
        query.set_attr("ver", roster.ver.to_string());
    }
    let mut items: Vec<(&BareJid, &RosterItem)> = roster.items.iter().collect();
    items.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::with_capacity(wire_estimate(roster));
    result
        .element()
        .write_around(&mut out, CONTENT_NS, |out, ns| {
            query.write_around(out, ns, |out, ns| {
                for (contact, item) in items {
                    item_element(contact.as_str(), Some(item)).write_to(out, ns);
                }
            });
        });
    Bytes::from(out)
}

/// About the serialized size of `roster`'s items (the markup around what they hold, with
/// room for the result's header), so that [`full`] writes into one allocation instead of
/// growing it, and copying it, as it goes.
fn wire_estimate(roster: &RosterCache) -> usize {
    const HEADER: usize = 512;
    const ITEM_MARKUP: usize = 64;
    const GROUP_MARKUP: usize = 16;
    let groups: usize = roster.items.values().map(|i| i.groups.len()).sum();
    HEADER + roster.bytes + ITEM_MARKUP * roster.items.len() + GROUP_MARKUP * groups
}

/// How a roster get is answered (RFC 6121 §2.1.3, XEP-0237 §3).
enum RosterGet {
    /// An empty result: the client's cached copy is current.
    Unchanged,
    /// The whole roster in the result, serialized ([`full`]).
    Full(Bytes),
    /// An empty result, then a push of each item changed since this version.
    ChangesSince(i64),
}

impl RosterModule {
    async fn get(&self, core: &Arc<Core>, owner: &BareJid, iq: &Stanza) -> IqAnswer {
        let Some(from) = iq.from() else {
            return Err(StanzaError::new(Cond::BadRequest));
        };
        let requested_ver = iq.payload().and_then(|q| q.attr("ver")).map(str::to_owned);
        // An available resource asking for the first time gets the stored subscription
        // requests after its roster (§3.1.3; one that asks before its initial presence gets
        // them after that, `presence::initial_delivery`).
        let first_while_available = self
            .im
            .session_mut(from, |s| {
                !std::mem::replace(&mut s.interested, true) && s.presence.is_some()
            })
            .unwrap_or(false);
        let account = self.im.account(core, owner).await.map_err(internal)?;
        let pending = if first_while_available {
            let blocked = self.im.blocklist(core, owner).await.map_err(internal)?;
            presence::pending_requests(&self.im, owner, &account, &blocked).await
        } else {
            Vec::new()
        };
        let answer = {
            let roster = read(&account.roster);
            match requested_ver.as_deref().map(str::parse::<i64>) {
                // XEP-0237 §3: unchanged; the client's cached copy is current.
                Some(Ok(since)) if since == roster.ver => RosterGet::Unchanged,
                Some(Ok(since))
                    if since > 0
                        && since < roster.ver
                        && roster.items.values().filter(|i| i.ver > since).count()
                            <= roster.items.len() / 2 =>
                {
                    RosterGet::ChangesSince(since)
                }
                _ => RosterGet::Full(full(iq, owner, &roster, requested_ver.is_some())),
            }
        };
        Ok(match answer {
            RosterGet::Unchanged => IqReply::new(None, pending),
            RosterGet::Full(result) => IqReply::serialized(result, pending),
            RosterGet::ChangesSince(since) => match self.diff(&account, owner, from, since).await {
                Some(mut pushes) => {
                    pushes.extend(pending);
                    IqReply::new(None, pushes)
                }
                None => IqReply::serialized(full(iq, owner, &read(&account.roster), true), pending),
            },
        })
    }

    /// The pushes to `from` that follow an empty versioned result (XEP-0237 §3): the items
    /// changed and removed since version `since`, oldest change first; `None` if the store
    /// cannot tell (the whole roster is answered instead: an empty result would tell the
    /// client it is up to date).
    async fn diff(
        &self,
        account: &Account,
        owner: &BareJid,
        from: &Jid,
        since: i64,
    ) -> Option<Vec<Stanza>> {
        let mut changes: Vec<(i64, String, Option<RosterItem>)> = {
            let roster = read(&account.roster);
            roster
                .items
                .iter()
                .filter(|(_, i)| i.ver > since)
                .map(|(c, i)| (i.ver, c.as_str().to_owned(), Some(i.clone())))
                .collect()
        };
        let user = owner.local()?;
        match self
            .im
            .store()
            .rosters()
            .removed_since(owner.domain(), user, since)
            .await
        {
            Ok(removed) => {
                let current: HashSet<String> = changes.iter().map(|(_, c, _)| c.clone()).collect();
                // Each removal with its own version: pushed in the order things happened, a
                // client that keeps the version of the last push it got misses nothing
                // older if the stream ends there.
                for (c, ver) in removed {
                    if !current.contains(&c) {
                        changes.push((ver, c, None));
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "roster diff failed");
                return None;
            }
        }
        changes.sort_by_key(|(v, _, _)| *v);
        let pushes = changes
            .into_iter()
            .map(|(ver, contact, item)| {
                let query = Element::new("query", ns::ROSTER)
                    .with_attr("ver", ver.to_string())
                    .with_child(item_element(&contact, item.as_ref()));
                Stanza::iq(
                    IqType::Set,
                    &self.im.next_id("push"),
                    Some(owner.clone().into()),
                    Some(from.clone()),
                    query,
                )
            })
            .collect();
        Some(pushes)
    }

    async fn set(&self, core: &Arc<Core>, owner: &BareJid, iq: &Stanza) -> IqResult {
        let query = iq
            .payload()
            .ok_or_else(|| StanzaError::new(Cond::BadRequest))?;
        let set = parse_set(&self.im, owner, query)?;
        if set.remove {
            return self.remove(core, owner, &set.contact).await;
        }
        let _g = self.im.lock(owner).await;
        let existing = self
            .im
            .roster_item(owner, &set.contact)
            .await
            .map_err(internal)?;
        let item = RosterItem {
            contact: set.contact.as_str().to_owned(),
            name: set.name,
            groups: set.groups,
            ..existing.clone().unwrap_or_default()
        };
        let room = self
            .im
            .roster_room_locked(core, owner)
            .await
            .map_err(internal)?;
        if !room.fits(existing.as_ref(), &item) {
            return Err(roster_full());
        }
        let item = self
            .im
            .roster_put(core, owner, &set.contact, item, Request::Keep)
            .await
            .map_err(internal)?;
        push(
            &self.im,
            core,
            owner,
            set.contact.as_str(),
            Some(&item),
            item.ver,
        );
        drop(_g);
        announce(core, owner, &set.contact).await;
        Ok(None)
    }

    async fn remove(&self, core: &Arc<Core>, owner: &BareJid, contact: &BareJid) -> IqResult {
        let (item, pending_in) = {
            let _g = self.im.lock(owner).await;
            let item = self
                .im
                .roster_item(owner, contact)
                .await
                .map_err(internal)?;
            let pending_in = self
                .im
                .has_pending_in(owner, contact)
                .await
                .map_err(internal)?;
            if item.is_none() && !pending_in {
                return Err(err(Cond::ItemNotFound, "not in the roster"));
            }
            if pending_in {
                self.im
                    .set_pending_in(core, owner, contact, None)
                    .await
                    .map_err(internal)?;
            }
            if item.is_some() {
                if let Some(ver) = self
                    .im
                    .roster_remove(core, owner, contact)
                    .await
                    .map_err(internal)?
                {
                    push(&self.im, core, owner, contact.as_str(), None, ver);
                }
            }
            (item, pending_in)
        };
        cancel_subscriptions(&self.im, core, owner, contact, item.as_ref(), pending_in).await;
        if item.is_some() {
            announce(core, owner, contact).await;
        }
        Ok(None)
    }

    /// XEP-0077 §3.2 / RFC 6121 §3.3: the account is going; each contact in its roster (or
    /// with a pending request) is told as if its item were removed. Then the sessions'
    /// presence is forgotten (see [`presence::forget_sessions`]).
    async fn account_removing(&self, core: &Arc<Core>, owner: &BareJid) {
        let account = match self.im.account(core, owner).await {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, %owner, "loading the roster of a removed account failed");
                presence::forget_sessions(&self.im, core, owner).await;
                return;
            }
        };
        let (items, pending): (Vec<(BareJid, RosterItem)>, HashSet<BareJid>) = {
            let roster = read(&account.roster);
            (
                roster
                    .items
                    .iter()
                    .map(|(c, i)| (c.clone(), i.clone()))
                    .collect(),
                roster.pending_in.clone(),
            )
        };
        for (contact, item) in &items {
            let pending_in = pending.contains(contact);
            cancel_subscriptions(&self.im, core, owner, contact, Some(item), pending_in).await;
        }
        let in_roster: HashSet<&BareJid> = items.iter().map(|(c, _)| c).collect();
        for contact in pending.iter().filter(|c| !in_roster.contains(c)) {
            cancel_subscriptions(&self.im, core, owner, contact, None, true).await;
        }
        presence::forget_sessions(&self.im, core, owner).await;
    }
}

/// RFC 6121 §2.5.3: cancels the subscriptions between `owner` and `contact` both ways, given
/// the roster item `owner` had for it and whether `contact` had a pending request: a
/// subscriber gets `unavailable` from each available resource and `unsubscribed` (so does a
/// pending requester); a contact `owner` subscribed to (or asked to) gets `unsubscribe`.
async fn cancel_subscriptions(
    im: &Im,
    core: &Arc<Core>,
    owner: &BareJid,
    contact: &BareJid,
    item: Option<&RosterItem>,
    pending_in: bool,
) {
    let sub = item.map(|i| i.subscription).unwrap_or_default();
    let ask = item.is_some_and(|i| i.ask);
    if sub.has_from() {
        presence::send_unavailable_to(im, core, owner, &contact.clone().into()).await;
    }
    if sub.has_from() || pending_in {
        presence::route_subscription(core, owner, contact, PresenceType::Unsubscribed).await;
    }
    if sub.has_to() || ask {
        presence::route_subscription(core, owner, contact, PresenceType::Unsubscribe).await;
    }
}

#[async_trait]
impl Module for RosterModule {
    fn name(&self) -> &'static str {
        "roster"
    }

    fn declare(&self) -> Declaration {
        Declaration {
            iqs: vec![(IqTarget::Account, ns::ROSTER, "query")],
            events: vec![
                (EventKind::AccountRemoving, priority::DEFAULT),
                (EventKind::AccountChanged, priority::DEFAULT),
                (EventKind::AccountOffline, priority::DEFAULT),
            ],
            stream_features: vec![
                Element::new("ver", ns::ROSTER_VER),
                Element::new("sub", ns::PRE_APPROVAL),
            ],
            ..Declaration::default()
        }
    }

    async fn shares_presence(
        &self,
        _core: &Arc<Core>,
        owner: &BareJid,
        other: &BareJid,
    ) -> Option<bool> {
        Some(self.im.shares_presence(owner, other).await)
    }

    async fn reply_iq(&self, core: &Arc<Core>, to: &BareJid, iq: &Stanza) -> IqAnswer {
        let owner = own_account(iq, to)?;
        match iq.kind() {
            rookery_proto::StanzaKind::Iq(IqType::Get) => self.get(core, &owner, iq).await,
            rookery_proto::StanzaKind::Iq(IqType::Set) => {
                self.set(core, &owner, iq).await.map(IqReply::from)
            }
            _ => Err(StanzaError::new(Cond::BadRequest)),
        }
    }

    async fn event(&self, core: &Arc<Core>, event: &Event) {
        match event {
            Event::AccountRemoving(account) => {
                RosterModule::account_removing(self, core, account).await
            }
            // Another node of a cluster changed the roster or block list in the store.
            Event::AccountChanged(account) => self.im.evict(account).await,
            // Its last session on another node ended.
            Event::AccountOffline(account) => self.im.evict_if_offline(core, account).await,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::ImConfig;

    fn query(items: &str) -> Element {
        crate::util::parse_element(&format!("<query xmlns='jabber:iq:roster'>{items}</query>"))
            .unwrap()
    }

    #[tokio::test]
    async fn set_validation() {
        let store = rookery_store::Store::open("sqlite::memory:").await.unwrap();
        let im = Im::new(ImConfig::default(), store);
        let owner = BareJid::parse("juliet@example.com").unwrap();
        let cases: &[(&str, Option<Cond>)] = &[
            (
                "<item jid='romeo@example.net' name='R'><group>A</group></item>",
                None,
            ),
            ("<item jid='ROMEO@example.net'/>", None),
            ("", Some(Cond::BadRequest)),
            ("<item jid='a@b'/><item jid='c@d'/>", Some(Cond::BadRequest)),
            ("<item/>", Some(Cond::BadRequest)),
            ("<item jid='@@'/>", Some(Cond::BadRequest)),
            ("<item jid='a@b/res'/>", Some(Cond::BadRequest)),
            ("<item jid='juliet@example.com'/>", Some(Cond::NotAllowed)),
            ("<item jid='a@b'><group/></item>", Some(Cond::NotAcceptable)),
            (
                "<item jid='a@b'><group>x</group><group>x</group></item>",
                Some(Cond::BadRequest),
            ),
            (
                "<item jid='juliet@example.com' subscription='remove'/>",
                None,
            ),
        ];
        for (xml, want) in cases {
            let got = parse_set(&im, &owner, &query(xml))
                .err()
                .map(|e| e.condition);
            assert_eq!(got, *want, "{xml}");
        }
        let long = "x".repeat(2000);
        let xml = format!("<item jid='a@b' name='{long}'/>");
        assert_eq!(
            parse_set(&im, &owner, &query(&xml))
                .err()
                .map(|e| e.condition),
            Some(Cond::NotAcceptable)
        );
        let ok = parse_set(
            &im,
            &owner,
            &query(
                "<item jid='ROMEO@example.net' subscription='both' name=''><group>G</group></item>",
            ),
        )
        .unwrap();
        assert_eq!(ok.contact.as_str(), "romeo@example.net");
        assert_eq!(ok.name, None);
        assert!(!ok.remove);
        assert_eq!(ok.groups, vec!["G"]);
    }

    /// The result written straight from the cache is the one the element tree of the
    /// roster would serialize to: same header (from the account, RFC 6120 §10.3.3), items
    /// sorted, escaping and namespaces alike.
    #[test]
    fn full_result_is_the_tree_serialized() {
        let (owner, iq) = crate::util::own_get(Element::new("query", ns::ROSTER));
        let mut roster = RosterCache {
            ver: 7,
            ..RosterCache::default()
        };
        for (jid, name, groups) in [
            (
                "romeo@example.net",
                Some("R & <o>"),
                vec!["Friends", "A\"A"],
            ),
            ("benvolio@example.net", None, vec![]),
        ] {
            roster.items.insert(
                BareJid::parse(jid).unwrap(),
                RosterItem {
                    contact: jid.into(),
                    name: name.map(str::to_owned),
                    groups: groups.into_iter().map(str::to_owned).collect(),
                    ..RosterItem::default()
                },
            );
        }
        for versioned in [false, true] {
            let mut query = Element::new("query", ns::ROSTER);
            if versioned {
                query.set_attr("ver", "7");
            }
            for jid in ["benvolio@example.net", "romeo@example.net"] {
                let item = roster.items.get(&BareJid::parse(jid).unwrap());
                query.push_child(item_element(jid, item));
            }
            let tree = iq_result_for(&iq, &owner, Some(query)).to_bytes();
            assert_eq!(
                full(&iq, &owner, &roster, versioned).as_ref(),
                tree.as_slice()
            );
        }
    }

    #[test]
    fn item_elements() {
        let item = RosterItem {
            name: Some("R".into()),
            subscription: rookery_store::rosters::Subscription::None,
            ask: true,
            approved: true,
            groups: vec!["G".into()],
            ..RosterItem::default()
        };
        let el = item_element("r@x", Some(&item));
        assert_eq!(el.attr("subscription"), Some("none"));
        assert_eq!(el.attr("ask"), Some("subscribe"));
        assert_eq!(el.attr("approved"), Some("true"));
        assert_eq!(el.child_text("group", ns::ROSTER).as_deref(), Some("G"));
        assert_eq!(
            item_element("r@x", None).attr("subscription"),
            Some("remove")
        );
    }
}
