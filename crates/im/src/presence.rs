//! RFC 6121 §3 (managing subscriptions) and §4 (exchanging presence).
//!
//! - Outbound subscription stanzas from a local user (§3.1.2, §3.2.2, §3.3.2, §3.4) and
//!   inbound ones for a local user (§3.1.3–§3.3.3) go through the Appendix A tables of
//!   [`crate::subscription`]; the roster item changes (stored, then pushed to interested
//!   resources), inbound requests are stored until answered and redelivered at the next
//!   login (§3.1.3), pre-approvals are honoured (§3.4).
//! - Initial presence (§4.2): broadcast to contacts with `from`/`both` and to the user's own
//!   resources; then, in a task of its own so the session keeps reading, probes (§4.3) — local
//!   contacts are answered in place with their resources' presence, paced into the new
//!   session's queue — the stored subscription requests and the offline messages (XEP-0160).
//! - Probes from others (§4.3.2): the last presence of each available resource, or
//!   `unavailable` with the time of the last logout (XEP-0203 delay).
//! - Presence updates (§4.4), directed presence (§4.6) and unavailable presence (§4.5): also
//!   sent when a session ends for any reason (the core's `Closed` event, which also fires for
//!   a dead socket or a replaced session), including to the entities that got directed
//!   presence.
//!
//! Large rosters: broadcasts walk a snapshot of the contacts copied out of the cache (no lock
//! held), skip local contacts without sessions at the cost of one map lookup, and yield to
//! the scheduler every [`YIELD_EVERY`] contacts, so one 100,000-item roster never stalls
//! other sessions.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rookery_core::event::{Event as CoreEvent, EventKind, LostSession, SessionEvent};
use rookery_core::router::presence_priority;
use rookery_core::{priority, Core, Declaration, Flow, HookPoint, Module, SessionHandle, Template};
use rookery_jid::{BareJid, Jid};
use rookery_proto::{PresenceType, Stanza, StanzaError, StanzaErrorCondition, StanzaKind};
use rookery_store::rosters::{Request, RosterItem};
use rookery_store::userdata::LastActivity;
use rookery_xml::{Element, CONTENT_NS};

use crate::state::{read, Account, BlockList, Im};
use crate::subscription::{transition, Action, Event, Outcome, State};
use rookery_proto::time::{delay, now_unix};

use crate::util::parse_stanza;
use crate::{blocking, caps, directed, offline, roster};

/// Contacts handled between two yields to the scheduler in a broadcast.
pub const YIELD_EVERY: usize = 256;

/// How long a paced bulk delivery waits for the client to make room in its queue.
pub const PACE_TIMEOUT: Duration = Duration::from_secs(60);

/// The presence module.
pub struct PresenceModule {
    im: Arc<Im>,
}

impl PresenceModule {
    /// A presence module on the shared state.
    pub fn new(im: Arc<Im>) -> Self {
        PresenceModule { im }
    }
}

/// Unavailable presence from `from` to `to` (RFC 6121 §4.5).
pub(crate) fn unavailable(from: &Jid, to: &Jid) -> Stanza {
    Stanza::presence(
        PresenceType::Unavailable,
        Some(from.clone()),
        Some(to.clone()),
    )
}

/// `stanza` readdressed to `to`.
pub(crate) fn addressed(stanza: &Stanza, to: &Jid) -> Stanza {
    let mut s = stanza.clone();
    s.set_to(to.clone());
    s
}

/// Routes a subscription stanza of type `t` from `owner` to `contact` (bare JIDs).
pub async fn route_subscription(
    core: &Arc<Core>,
    owner: &BareJid,
    contact: &BareJid,
    t: PresenceType,
) {
    core.route(Stanza::presence(
        t,
        Some(owner.clone().into()),
        Some(contact.clone().into()),
    ))
    .await;
}

/// Sends `unavailable` from each available resource of `owner` to `to`.
pub async fn send_unavailable_to(im: &Im, core: &Arc<Core>, owner: &BareJid, to: &Jid) {
    for h in im.available_handles(core, owner) {
        core.route(unavailable(h.jid(), to)).await;
    }
}

/// Sends the current presence of each available resource of `owner` to `to`.
pub async fn send_presence_to(im: &Im, core: &Arc<Core>, owner: &BareJid, to: &Jid) {
    for (_, p) in im.available(core, owner) {
        core.route(addressed(&p, to)).await;
    }
}

/// The sessions of an account being removed (XEP-0077 §3.2) forget their presence: those
/// who got directed presence get `unavailable` now (roster contacts were told by the roster
/// module), and when the sessions end there is nothing left to broadcast and no last activity
/// to record for an account that no longer exists.
pub async fn forget_sessions(im: &Im, core: &Arc<Core>, owner: &BareJid) {
    for (h, _) in core.sessions_of(owner) {
        let Some(directed) = im.session_mut(h.jid(), |s| {
            s.presence = None;
            std::mem::take(&mut s.directed)
        }) else {
            continue;
        };
        core.set_available(h.jid(), None);
        directed::cleared(core, h.jid(), &directed);
        for to in directed {
            core.route(unavailable(h.jid(), &to)).await;
        }
    }
}

/// Delivers `stanza` to every available resource of `owner` (serialized once).
fn deliver_to_available(im: &Im, core: &Core, owner: &BareJid, stanza: &Stanza) {
    let targets = im.available_handles(core, owner);
    if targets.is_empty() {
        return;
    }
    let bytes = Bytes::from(stanza.to_bytes());
    for h in targets {
        h.send(bytes.clone());
    }
}

/// Records the last logout of `owner` (XEP-0012) when it has no available resource left.
async fn record_last(im: &Im, core: &Core, owner: &BareJid, status: String) {
    if im.has_available(core, owner) {
        return;
    }
    let Some(user) = owner.local() else { return };
    let last = LastActivity {
        at: now_unix(),
        status,
    };
    if let Err(e) = im
        .store()
        .userdata()
        .set_last_activity(owner.domain(), user, &last)
        .await
    {
        tracing::warn!(error = %e, "recording last activity failed");
    }
}

impl PresenceModule {
    // ---- broadcasts ----------------------------------------------------------------------

    /// Sends `t` (presence from a resource of `owner`) to each contact with a `from` or
    /// `both` subscription (`which` of them), through the core's fan-out (which drops what
    /// blocking forbids), yielding between batches.
    async fn broadcast_to_contacts(
        &self,
        core: &Arc<Core>,
        owner: &BareJid,
        t: &Template,
        which: Contacts,
    ) {
        let account = match self.im.account(core, owner).await {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %e, "loading roster for broadcast failed");
                return;
            }
        };
        let contacts: Vec<Jid> = read(&account.roster)
            .items
            .iter()
            .filter(|(_, i)| i.subscription.has_from())
            // Nobody to tell at a local contact without sessions (§4.2.2: no offline
            // storage of presence).
            .filter(|(c, _)| {
                !core.is_local_domain(c.domain())
                    || (which == Contacts::All && core.has_sessions(c))
            })
            .map(|(c, _)| c.clone().into())
            .collect();
        for batch in contacts.chunks(YIELD_EVERY) {
            core.deliver_rendered(t, batch).await;
            tokio::task::yield_now().await;
        }
    }

    /// Sends `t` (presence from `from`) to every available resource of its account, `from`
    /// included when `include_self` (RFC 6121 §4.2.2, §4.4.2: implicit self subscription):
    /// serialized once, through the core's fan-out.
    async fn to_own_resources(
        &self,
        core: &Arc<Core>,
        from: &Jid,
        t: &Template,
        include_self: bool,
    ) {
        let targets: Vec<Jid> = self
            .im
            .available_handles(core, &from.to_bare())
            .into_iter()
            .map(|h| h.jid().clone())
            .filter(|j| include_self || j != from)
            .collect();
        core.deliver_rendered(t, &targets).await;
    }

    /// A presence stanza with no `to` from a local session.
    async fn broadcast(&self, core: &Arc<Core>, stanza: Stanza) {
        let Some(from) = stanza.from().cloned() else {
            return;
        };
        let owner = from.to_bare();
        match stanza.kind() {
            StanzaKind::Presence(PresenceType::Available) => {
                let priority = presence_priority(&stanza);
                let Some(before) = self
                    .im
                    .session_mut(&from, |s| s.presence.replace(stanza.clone()))
                else {
                    return;
                };
                core.set_available(&from, Some(priority));
                let t = Template::new(stanza);
                self.broadcast_to_contacts(core, &owner, &t, Contacts::All)
                    .await;
                self.to_own_resources(core, &from, &t, true).await;
                match before {
                    None => self.initial(core, &from, priority),
                    // XEP-0160 §2: stored messages go to the next non-negative presence —
                    // also of a resource that had been available with a negative priority.
                    Some(p) if presence_priority(&p) < 0 && priority >= 0 => {
                        self.offline_now(core, &from);
                    }
                    Some(_) => {}
                }
                // Last: what subscribers of its `ResourceCaps` event send (PEP's last items)
                // follows the presence itself.
                caps::observe(&self.im, core, &from, t.stanza()).await;
            }
            StanzaKind::Presence(PresenceType::Unavailable) => {
                let Some((was, directed)) = self.im.session_mut(&from, |s| {
                    (s.presence.take(), std::mem::take(&mut s.directed))
                }) else {
                    return;
                };
                core.set_available(&from, None);
                directed::cleared(core, &from, &directed);
                let t = Template::new(stanza);
                if was.is_some() {
                    self.to_own_resources(core, &from, &t, true).await;
                }
                self.unavailable(core, &from, &t, was.is_some(), directed)
                    .await;
            }
            _ => {} // Other types need a `to` (RFC 6121 §4.7.1); nothing to do.
        }
    }

    /// The unavailable broadcast of a resource that was available (or had sent directed
    /// presence): contacts, then directed-presence recipients; records last activity.
    async fn unavailable(
        &self,
        core: &Arc<Core>,
        from: &Jid,
        t: &Template,
        was_available: bool,
        directed: std::collections::HashSet<Jid>,
    ) {
        let owner = from.to_bare();
        if was_available {
            self.broadcast_to_contacts(core, &owner, t, Contacts::All)
                .await;
        }
        core.deliver_rendered(t, &directed).await;
        if was_available {
            let status = t
                .stanza()
                .element()
                .child_text("status", CONTENT_NS)
                .unwrap_or_default();
            record_last(&self.im, core, &owner, status).await;
        }
    }

    /// After initial presence: the presence of the user's other resources, then (in a task of
    /// its own, paced into the session's queue) stored subscription requests, probes and
    /// offline messages.
    fn initial(&self, core: &Arc<Core>, from: &Jid, priority: i8) {
        let Some(session) = core.session(from) else {
            return;
        };
        for (h, p) in self.im.available(core, &from.to_bare()) {
            if h.jid() != from {
                session.send(Bytes::from(addressed(&p, from).to_bytes()));
            }
        }
        // Decided now, in the order of the session's stanzas: a roster get after this
        // presence delivers the requests itself (`roster.rs`), one before it here.
        let interested = self.im.session(from, |s| s.interested).unwrap_or(false);
        let im = self.im.clone();
        let core = core.clone();
        tokio::spawn(async move {
            initial_delivery(&im, &core, &session, priority, interested).await;
        });
    }

    /// Delivers the account's stored messages to `from`, in a task of its own (as after
    /// initial presence).
    fn offline_now(&self, core: &Arc<Core>, from: &Jid) {
        if let Some(session) = core.session(from) {
            offline::deliver_soon(&self.im, core, session);
        }
    }

    // ---- outbound ------------------------------------------------------------------------

    /// A presence stanza with a `to` from a local session.
    async fn outbound(&self, core: &Arc<Core>, mut stanza: Stanza) -> Flow {
        let (Some(from), Some(to)) = (stanza.from().cloned(), stanza.to().cloned()) else {
            return Flow::Continue(stanza);
        };
        let owner = from.to_bare();
        let event = match stanza.kind() {
            StanzaKind::Presence(PresenceType::Subscribe) => Event::OutSubscribe,
            StanzaKind::Presence(PresenceType::Subscribed) => Event::OutSubscribed,
            StanzaKind::Presence(PresenceType::Unsubscribe) => Event::OutUnsubscribe,
            StanzaKind::Presence(PresenceType::Unsubscribed) => Event::OutUnsubscribed,
            StanzaKind::Presence(PresenceType::Probe) => return Flow::Handled,
            StanzaKind::Presence(t @ (PresenceType::Available | PresenceType::Unavailable)) => {
                if let Err(e) = self
                    .directed(core, &from, &to, t == PresenceType::Available)
                    .await
                {
                    core.reply_error(&stanza, e).await;
                    return Flow::Handled;
                }
                return Flow::Continue(stanza);
            }
            _ => return Flow::Continue(stanza),
        };
        let contact = to.to_bare();
        if contact == owner {
            return Flow::Handled;
        }
        // §3.1.2 etc.: subscription stanzas go out from the bare JID.
        stanza.set_from(owner.clone().into());
        stanza.set_to(contact.clone().into());
        if core.is_clustered() {
            // Another node may have just stored what this answers (the request a client
            // approves came in there, and its note that the account changed may still be on
            // the bus): decide on the store, not on what this node holds.
            self.im.evict(&owner).await;
        }
        let (before, outcome, changed) = match self.apply(core, &owner, &contact, event, None).await
        {
            Some(Applied::Done(before, outcome, changed)) => (before, outcome, changed),
            Some(Applied::Full) => {
                // Told to the session that sent it (from the bare JID, the error would
                // go to every resource).
                stanza.set_from(from);
                core.reply_error(&stanza, roster::roster_full()).await;
                return Flow::Handled;
            }
            None => return Flow::Handled,
        };
        if outcome.action == Action::Forward {
            let had_from = before.subscription().has_from();
            let has_from = outcome.next.subscription().has_from();
            let contact_jid: Jid = contact.clone().into();
            if had_from && !has_from {
                // §3.2.2: the former subscriber is told the user is gone while it is still
                // subscribed, before the `unsubscribed` (after it, its server may drop it).
                send_unavailable_to(&self.im, core, &owner, &contact_jid).await;
            }
            core.route(stanza).await;
            if !had_from && has_from {
                // §3.1.5: the new subscriber gets the user's current presence.
                send_presence_to(&self.im, core, &owner, &contact_jid).await;
            }
        }
        // §3.1.2, §3.2.2, §3.3.2: the roster push follows the stanza it is about.
        changed.push(&self.im, core, &owner, &contact).await;
        if event == Event::OutSubscribed {
            // Recorded (and routed, unless the state machine stopped it): e.g. PEP sends
            // the contact the owner's last items (XEP-0163 §4.3.2), which its access models
            // admit only if the contact is now subscribed.
            core.emit(&CoreEvent::SubscriptionApproved { owner, contact })
                .await;
        }
        Flow::Handled
    }

    /// Records directed presence (RFC 6121 §4.6) to an entity the session's unavailable
    /// broadcast would not reach, up to `[im.presence] max_directed` entities (past it,
    /// `resource-constraint`: each costs memory now and an `unavailable` at the end).
    async fn directed(
        &self,
        core: &Core,
        from: &Jid,
        to: &Jid,
        available: bool,
    ) -> Result<(), StanzaError> {
        let owner = from.to_bare();
        if to.to_bare() == owner {
            return Ok(());
        }
        if !available {
            if self.im.session_mut(from, |s| s.directed.remove(to)) == Some(true) {
                directed::dropped(core, from, to);
            }
            return Ok(());
        }
        // A subscriber hears of the session's end from the unavailable broadcast, but only
        // once it is available: before its initial presence nobody is told but those kept.
        let broadcast_reaches = to.is_bare()
            && self.im.session(from, |s| s.presence.is_some()) == Some(true)
            && matches!(
                self.im.roster_item(&owner, &to.to_bare()).await,
                Ok(Some(RosterItem { subscription, .. })) if subscription.has_from()
            );
        if broadcast_reaches {
            return Ok(());
        }
        let max = self.im.config().presence.max_directed;
        let kept = self.im.session_mut(from, |s| {
            if s.directed.contains(to) {
                return Some(false);
            }
            if s.directed.len() >= max {
                return None;
            }
            Some(s.directed.insert(to.clone()))
        });
        match kept {
            Some(None) => Err(StanzaError::new(StanzaErrorCondition::ResourceConstraint)
                .with_text("directed presence to too many entities")),
            Some(Some(true)) => {
                directed::added(core, from, to);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    // ---- the state machine applied to a roster -------------------------------------------

    /// Runs `event` on `owner`'s item for `contact` under the account lock: stores the new
    /// item and pending request. Returns the state before, the outcome and the roster
    /// change, which the caller pushes once it has routed or delivered the stanza (RFC 6121
    /// §3.1.2, §3.1.6, §3.2.3, §3.3.3: the push follows); [`Applied::Full`], with nothing
    /// changed, when it would add an item or a request past the roster's limits
    /// ([`crate::state::RosterRoom`]); `None` on a store failure (logged).
    async fn apply(
        &self,
        core: &Arc<Core>,
        owner: &BareJid,
        contact: &BareJid,
        event: Event,
        request: Option<&Stanza>,
    ) -> Option<Applied> {
        let _g = self.im.lock(owner).await;
        let r = async {
            let item = self.im.roster_item(owner, contact).await?;
            let pending_in = self.im.has_pending_in(owner, contact).await?;
            let (sub, ask, approved) = item
                .as_ref()
                .map_or((Default::default(), false, false), |i| {
                    (i.subscription, i.ask, i.approved)
                });
            let before = State::of(sub, ask, pending_in);
            let outcome = transition(before, approved, event);
            let request_changed = outcome.next.pending_in() != before.pending_in()
                || (event == Event::InSubscribe && outcome.action == Action::Forward);
            let item_changed = outcome.next.subscription() != before.subscription()
                || outcome.next.pending_out() != before.pending_out()
                || outcome.approved != approved;
            let needs_item = item.is_some()
                || outcome.next.subscription() != Default::default()
                || outcome.next.pending_out()
                || outcome.approved;
            let new = (item_changed && needs_item).then(|| RosterItem {
                contact: contact.as_str().to_owned(),
                subscription: outcome.next.subscription(),
                ask: outcome.next.pending_out(),
                approved: outcome.approved,
                ..item.clone().unwrap_or_default()
            });
            // A new item (an outbound subscription or pre-approval) adds its contact's JID
            // to the roster; a changed one only flags.
            let new_item = new.as_ref().filter(|_| item.is_none());
            let new_request = outcome.next.pending_in() && !before.pending_in();
            if new_item.is_some() || new_request {
                let room = self.im.roster_room_locked(core, owner).await?;
                if new_item.is_some_and(|n| !room.fits(None, n)) || (new_request && !room.requests)
                {
                    return Ok(Applied::Full);
                }
            }
            // Approving or refusing a request changes the item and forgets the request:
            // one store write for both.
            let answering = request_changed && !outcome.next.pending_in() && new.is_some();
            if request_changed && !answering {
                let store = if outcome.next.pending_in() {
                    request
                } else {
                    None
                };
                self.im.set_pending_in(core, owner, contact, store).await?;
            }
            if let Some(new) = new {
                let pending = if answering {
                    Request::Forget
                } else {
                    Request::Keep
                };
                let new = self
                    .im
                    .roster_put(core, owner, contact, new, pending)
                    .await?;
                return Ok(Applied::Done(before, outcome, Changed(Some(new))));
            }
            Ok::<_, rookery_store::StoreError>(Applied::Done(before, outcome, Changed(None)))
        }
        .await;
        match r {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(error = %e, %owner, %contact, "subscription update failed");
                None
            }
        }
    }

    // ---- inbound -------------------------------------------------------------------------

    /// A presence stanza for a local account (bare JID, or a full JID that is not online, or
    /// a subscription stanza for an online full JID).
    async fn inbound(&self, core: &Arc<Core>, stanza: Stanza) {
        let (Some(from), Some(to)) = (stanza.from().cloned(), stanza.to().cloned()) else {
            return;
        };
        let owner = to.to_bare();
        let event = match stanza.kind() {
            StanzaKind::Presence(PresenceType::Subscribe) => Event::InSubscribe,
            StanzaKind::Presence(PresenceType::Subscribed) => Event::InSubscribed,
            StanzaKind::Presence(PresenceType::Unsubscribe) => Event::InUnsubscribe,
            StanzaKind::Presence(PresenceType::Unsubscribed) => Event::InUnsubscribed,
            StanzaKind::Presence(PresenceType::Probe) => {
                return self.probe(core, &owner, &to, &from).await;
            }
            StanzaKind::Presence(PresenceType::Available | PresenceType::Unavailable) => {
                // §4.? : to a bare JID, every available resource; to a full JID that is
                // not online, nobody.
                if to.is_bare() {
                    if !core.is_local_domain(from.domain()) {
                        caps::observe_remote(&self.im, core, &owner, &stanza).await;
                    }
                    deliver_to_available(&self.im, core, &owner, &stanza);
                }
                return;
            }
            StanzaKind::Presence(PresenceType::Error) => {
                if !core.is_local_domain(from.domain()) {
                    caps::observe_remote(&self.im, core, &owner, &stanza).await;
                }
                // To the bare JID: the answer to a subscription stanza, which went out
                // from it (§3.1.2) — a contact's address that does not exist, a server that
                // cannot be reached. The account's available resources are told.
                if to.is_bare() {
                    deliver_to_available(&self.im, core, &owner, &stanza);
                }
                return;
            }
            _ => return,
        };
        if !core.account_exists(&owner).await {
            return; // §3.1.3: no such user — silently ignored.
        }
        let contact = from.to_bare();
        let mut stanza = stanza;
        stanza.set_from(contact.clone().into());
        stanza.set_to(owner.clone().into());
        // A request past the limit is dropped, as §8.5.1 lets a server drop presence.
        let Some(Applied::Done(before, outcome, changed)) = self
            .apply(core, &owner, &contact, event, Some(&stanza))
            .await
        else {
            return;
        };
        let contact_jid: Jid = contact.clone().into();
        match outcome.action {
            Action::Forward => {
                let targets: Vec<SessionHandle> = if event == Event::InSubscribe {
                    self.im.interested_available(core, &owner)
                } else {
                    self.im.interested(core, &owner)
                };
                let bytes = Bytes::from(stanza.to_bytes());
                for t in targets {
                    t.send(bytes.clone());
                }
            }
            Action::AutoApprove => {
                route_subscription(core, &owner, &contact, PresenceType::Subscribed).await;
                if !before.subscription().has_from() {
                    send_presence_to(&self.im, core, &owner, &contact_jid).await;
                }
            }
            Action::Drop => {}
        }
        // §3.1.6, §3.2.3, §3.3.3: the push follows the delivery of what it is about.
        changed.push(&self.im, core, &owner, &contact).await;
        if event == Event::InUnsubscribe
            && before.subscription().has_from()
            && !outcome.next.subscription().has_from()
        {
            send_unavailable_to(&self.im, core, &owner, &contact_jid).await;
        }
    }

    /// Answers a probe from `prober` about `owner` (`to` is the probed bare or full JID),
    /// RFC 6121 §4.3.2.
    async fn probe(&self, core: &Arc<Core>, owner: &BareJid, to: &Jid, prober: &Jid) {
        let prober_bare = prober.to_bare();
        let self_probe = &prober_bare == owner;
        if !self_probe {
            if blocking::blocks(&self.im, core, owner, prober).await {
                return;
            }
            let subscribed = matches!(
                self.im.roster_item(owner, &prober_bare).await,
                Ok(Some(RosterItem { subscription, .. })) if subscription.has_from()
            );
            let directed = self.im.available_handles(core, owner).iter().any(|h| {
                self.im
                    .session(h.jid(), |s| {
                        s.directed.contains(prober)
                            || s.directed.contains(&prober_bare.clone().into())
                    })
                    .unwrap_or(false)
            });
            if !subscribed && !directed {
                if core.account_exists(owner).await {
                    // §4.3.2: not authorized — tell the prober it has no subscription.
                    route_subscription(core, owner, &prober_bare, PresenceType::Unsubscribed).await;
                }
                return;
            }
        }
        let available: Vec<(SessionHandle, Stanza)> = self
            .im
            .available(core, owner)
            .into_iter()
            .filter(|(h, _)| to.is_bare() || h.jid() == to)
            .collect();
        // Resources on other nodes of a cluster: their nodes hold their presence and
        // answer (a probe to a full JID of another node is routed there, not here).
        let elsewhere = to.is_bare()
            && self
                .im
                .available_handles(core, owner)
                .iter()
                .any(SessionHandle::is_remote);
        if elsewhere {
            core.probe_remote(prober, owner);
        }
        if !available.is_empty() || elsewhere {
            for (_, p) in available {
                core.route(addressed(&p, prober)).await;
            }
            return;
        }
        // No available resource: unavailable, stamped with the last logout if known.
        let mut p = unavailable(&owner.clone().into(), prober);
        if let Some(user) = owner.local() {
            if let Ok(Some(last)) = self
                .im
                .store()
                .userdata()
                .last_activity(owner.domain(), user)
                .await
            {
                if !last.status.is_empty() {
                    p.push_payload(Element::new("status", CONTENT_NS).with_text(last.status));
                }
                p.push_payload(delay(owner.as_str(), last.at, None));
            }
        }
        core.route(p).await;
    }

    // ---- session end ---------------------------------------------------------------------

    async fn closed(&self, core: &Arc<Core>, jid: &Jid) {
        let Some(state) = self.im.session_closed(jid) else {
            return;
        };
        let owner = jid.to_bare();
        let was_available = state.presence.is_some();
        directed::cleared(core, jid, &state.directed);
        if was_available || !state.directed.is_empty() {
            let t = Template::new(Stanza::presence(
                PresenceType::Unavailable,
                Some(jid.clone()),
                None,
            ));
            if was_available {
                self.to_own_resources(core, jid, &t, false).await;
            }
            self.unavailable(core, jid, &t, was_available, state.directed)
                .await;
        }
        self.im.evict_if_offline(core, &owner).await;
    }

    /// Sessions of a dead node of a cluster (told on one node, see `Event::SessionsLost`):
    /// what their node would have done at their end that no node does for its own sessions
    /// — `unavailable` to contacts on other servers (RFC 6121 §4.5.2; each node told its
    /// sessions that had seen them), to the entities on other servers they had sent directed
    /// presence to (a room there, say: RFC 6121 §4.6.3; [`directed`]), and the last activity.
    async fn lost(&self, core: &Arc<Core>, lost: &[LostSession]) {
        for s in lost {
            let owner = s.jid.to_bare();
            let t = Template::new(Stanza::presence(
                PresenceType::Unavailable,
                Some(s.jid.clone()),
                None,
            ));
            if s.available {
                self.broadcast_to_contacts(core, &owner, &t, Contacts::OnOtherServers)
                    .await;
            }
            core.deliver_rendered(&t, &self.im.peers_directed.take(&s.jid))
                .await;
            if s.available {
                record_last(&self.im, core, &owner, String::new()).await;
            }
        }
    }
}

/// What running the subscription state machine on a roster did ([`PresenceModule::apply`]).
enum Applied {
    /// The state before, the outcome, and the roster change to push.
    Done(State, Outcome, Changed),
    /// Nothing: it would have added an item past `[im.roster] max_items` or `max_bytes`, or
    /// a stored request past `max_items`.
    Full,
}

/// Which of an account's contacts a presence broadcast goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contacts {
    /// Every contact subscribed to it (those on this server only while online).
    All,
    /// Only those on other servers.
    OnOtherServers,
}

/// `owner`'s stored inbound subscription requests (RFC 6121 §3.1.3), as an available,
/// interested resource gets them until they are answered. The account state knows which
/// contacts have one: the stored stanzas are read only if any do. A request from a JID
/// blocked since stays pending, undelivered (XEP-0191 §3.3): unblocking shows it again.
pub(crate) async fn pending_requests(
    im: &Im,
    owner: &BareJid,
    account: &Account,
    blocked: &BlockList,
) -> Vec<Stanza> {
    let Some(user) = owner.local() else {
        return Vec::new();
    };
    if read(&account.roster).pending_in.is_empty() {
        return Vec::new();
    }
    match im.store().rosters().pending_in(owner.domain(), user).await {
        Ok(list) => list
            .iter()
            .filter_map(|p| parse_stanza(&p.stanza))
            .filter(|s| !blocking::blocks_sender(blocked, s))
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, "loading pending requests failed");
            Vec::new()
        }
    }
}

/// Everything a session gets after its initial presence, paced into its queue (this runs in
/// a task of its own, never in the session's): stored subscription requests (if it had
/// requested the roster, `interested`), the presence of local contacts it is subscribed to
/// (probes to remote ones), and, with a non-negative priority, offline messages.
async fn initial_delivery(
    im: &Im,
    core: &Arc<Core>,
    session: &SessionHandle,
    priority: i8,
    interested: bool,
) {
    let jid = session.jid().clone();
    let owner = jid.to_bare();
    let (Ok(account), Ok(blocked)) = (
        im.account(core, &owner).await,
        im.blocklist(core, &owner).await,
    ) else {
        return;
    };
    // §3.1.3: pending inbound requests, redelivered to an interested resource.
    if interested {
        for s in pending_requests(im, &owner, &account, &blocked).await {
            if !session
                .send_paced(Bytes::from(s.to_bytes()), PACE_TIMEOUT)
                .await
            {
                return;
            }
        }
    }
    // §4.2.2/§4.3: probes.
    let contacts: Vec<BareJid> = read(&account.roster)
        .items
        .iter()
        .filter(|(_, i)| i.subscription.has_to())
        .map(|(c, _)| c.clone())
        .collect();
    for (i, contact) in contacts.iter().enumerate() {
        if i % YIELD_EVERY == YIELD_EVERY - 1 {
            tokio::task::yield_now().await;
        }
        let contact_jid: Jid = contact.clone().into();
        if blocking::blocks_in(&blocked, &contact_jid) {
            continue;
        }
        if !core.is_local_domain(contact.domain()) {
            core.route(Stanza::presence(
                PresenceType::Probe,
                Some(owner.clone().into()),
                Some(contact_jid),
            ))
            .await;
            continue;
        }
        // Resources of the contact on other nodes of a cluster: their nodes answer.
        core.probe_remote(&jid, contact);
        let available = im.available(core, contact);
        if available.is_empty() {
            continue;
        }
        let authorized = matches!(
            im.roster_item(contact, &owner).await,
            Ok(Some(RosterItem { subscription, .. })) if subscription.has_from()
        );
        if !authorized || blocking::blocks(im, core, contact, &jid).await {
            continue;
        }
        for (_, p) in available {
            if !session
                .send_paced(Bytes::from(addressed(&p, &jid).to_bytes()), PACE_TIMEOUT)
                .await
            {
                return;
            }
        }
    }
    // XEP-0160: offline messages, for a resource that can receive messages.
    if priority >= 0 && im.config().offline.enabled {
        offline::deliver(im, session, &blocked).await;
    }
}

#[async_trait]
impl Module for PresenceModule {
    fn name(&self) -> &'static str {
        "presence"
    }

    fn declare(&self) -> Declaration {
        Declaration {
            hooks: vec![
                (HookPoint::PresenceBroadcast, priority::DEFAULT),
                (HookPoint::PresenceFromLocal, priority::DEFAULT),
                (HookPoint::PresenceToAccount, priority::DEFAULT),
            ],
            events: vec![
                (EventKind::Session, priority::DEFAULT),
                (EventKind::SessionsLost, priority::DEFAULT),
                (EventKind::ClusterNote, priority::DEFAULT),
                (EventKind::AccountOffline, priority::DEFAULT),
            ],
            ..Declaration::default()
        }
    }

    /// The IM state of a session moving to another node: roster interest, presence,
    /// directed presence, carbons, block list interest, capabilities.
    fn session_state(&self, jid: &Jid) -> Option<String> {
        self.im.session(jid, |s| s.carry())
    }

    /// Restores what [`PresenceModule::session_state`] took, and what the core records of
    /// it: availability and carbons (told to the other nodes).
    fn adopt_session_state(&self, core: &Arc<Core>, jid: &Jid, state: &str) {
        let Some(state) = crate::state::SessionState::carried(state) else {
            return tracing::warn!(%jid, "unreadable IM state of a moved session");
        };
        let priority = state.presence.as_ref().map(presence_priority);
        let carbons = state.carbons;
        if self.im.session_mut(jid, |s| *s = state).is_none() {
            return;
        }
        // Its set was a peer's; now this node owns it, and tells nobody: the others heard
        // every change to it already (or its old node keeps it, `moved_away`).
        self.im.peers_directed.take(jid);
        if priority.is_some() {
            core.set_available(jid, priority);
        }
        if carbons {
            core.set_carbons(jid, true);
        }
    }

    async fn hook(&self, core: &Arc<Core>, point: HookPoint, stanza: Stanza) -> Flow {
        match point {
            HookPoint::PresenceBroadcast => {
                self.broadcast(core, stanza).await;
                Flow::Handled
            }
            HookPoint::PresenceFromLocal => self.outbound(core, stanza).await,
            HookPoint::PresenceToAccount => {
                self.inbound(core, stanza).await;
                Flow::Handled
            }
            _ => Flow::Continue(stanza),
        }
    }

    async fn event(&self, core: &Arc<Core>, event: &CoreEvent) {
        match event {
            CoreEvent::Session(SessionEvent::Bound(jid)) => self.im.session_bound(jid),
            CoreEvent::Session(SessionEvent::Closed(jid)) => self.closed(core, jid).await,
            CoreEvent::Session(SessionEvent::Moved(jid)) => {
                // It goes on on another node, which took its state (`session_state`); should
                // that node die, this one may be the one to tell its directed presence.
                if let Some(state) = self.im.session_closed(jid) {
                    self.im
                        .peers_directed
                        .moved_away(core, jid, &state.directed);
                }
                self.im.evict_if_offline(core, &jid.to_bare()).await;
            }
            CoreEvent::SessionsLost(lost) => self.lost(core, lost).await,
            CoreEvent::ClusterNote { topic, body } if topic == directed::TOPIC => {
                let max = self.im.config().presence.max_directed;
                self.im.peers_directed.heard(max, body);
            }
            CoreEvent::AccountOffline(bare) => self.im.peers_directed.forget(bare),
            _ => {}
        }
    }
}

/// The roster item a subscription change wrote, to push once the stanza it is about was
/// routed or delivered (RFC 6121 §3.1.2, §3.1.6, §3.2.3, §3.3.3); `None`: no change.
#[must_use]
struct Changed(Option<RosterItem>);

impl Changed {
    /// The roster push to `owner`'s interested resources, if the item changed, then the
    /// core event (see [`roster::announce`]).
    async fn push(&self, im: &Im, core: &Arc<Core>, owner: &BareJid, contact: &BareJid) {
        if let Some(new) = &self.0 {
            roster::push(im, core, owner, contact.as_str(), Some(new), new.ver);
            roster::announce(core, owner, contact).await;
        }
    }
}
