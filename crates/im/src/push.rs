//! XEP-0357: Push Notifications — waking a device whose client is not connected.
//!
//! - `<enable jid node>` (§5, with an optional publish-options form) and `<disable jid
//!   [node]>` (§6) are IQ sets on one's own account; registrations are stored per account
//!   with the resource of the session that enabled them — the device (`rookery_store::push`;
//!   clients enable again after every login, which keeps the resource current) — and
//!   advertised with the account feature `urn:xmpp:push:0`.
//! - A device is woken (§7: a pubsub publish from the server to the app server) for a
//!   message with a body that reaches its account while the device has no live connection:
//!   - stored offline, or parked by a session hibernating for XEP-0198 resumption
//!     ([`Event::MessageHeld`]): every registration of the account, or of the hibernating
//!     session's device;
//!   - delivered to the account's other devices (hooks [`HookPoint::MessageToBare`] and
//!     [`HookPoint::MessageToFull`]): the registrations whose resource has no session at
//!     all — the phone that is off while the desktop is on, which then fetches the message
//!     from its archive (XEP-0313) or gets it as offline storage would not.
//!
//!   The two never both fire for one device and message: the hooks skip devices with a
//!   session (a hibernating one parks what is routed to it), and a message stored offline
//!   reached no session, so the hooks left it alone.
//! - The notification carries the `urn:xmpp:push:summary` form: `message-count` (messages
//!   held or pushed since a resource of the account was last bound — kept in the store, so
//!   that in a cluster it is the account's whichever node holds a message or binds a
//!   resource, and survives any node's death), `last-message-sender`,
//!   and `last-message-body` only when `[im.push] include_body` allows it and the client
//!   asked for it with the field `include-body` = `true` in its publish-options form (a
//!   Rookery convention: the XEP names no way to ask). The publish-options form goes along as
//!   given (§7). A message carbon-copied to a hibernating session (XEP-0280) counts by the
//!   message it carries.
//! - An error answer from the app server disables that registration (§8); no answer
//!   within [`PUBLISH_TIMEOUT`] leaves it.
//!
//! Only messages with a body wake a device: chat states and receipts are not worth a
//! notification.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dashmap::DashMap;
use rookery_core::module::IqResult;
use rookery_core::{
    priority, Core, Declaration, Event, EventKind, Flow, HookPoint, IqTarget, Module, SessionEvent,
};
use rookery_jid::{BareJid, Jid};
use rookery_proto::{
    ns, IqType, MessageType, Stanza, StanzaError, StanzaErrorCondition as Cond, StanzaKind,
};
use rookery_store::push::Registration;
use rookery_store::StoreError;
use rookery_xml::{Element, CONTENT_NS};
use tokio::sync::OnceCell;

use crate::roster::internal;
use crate::state::Im;
use crate::util::{err, own_account, parse_element};

/// The XEP-0357 namespace.
pub const NS: &str = "urn:xmpp:push:0";

/// The form type of a notification's summary (§7).
pub const SUMMARY: &str = "urn:xmpp:push:summary";

/// How long an app server has to answer a notification.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// Notifications waiting for their app server's answer, server-wide: beyond this, new ones
/// are skipped, so a flood of messages for accounts with registrations (or an app server
/// that never answers) cannot pile up tasks.
pub const MAX_IN_FLIGHT: usize = 1024;

/// Registrations one account may hold (one per device and app server in practice): an
/// account cannot grow the store and every message's fan-out without bound.
pub const MAX_REGISTRATIONS: usize = 16;

/// Notifications of one account waiting for their app servers' answers: one account whose
/// app server never answers (or a flood of messages to it) cannot take the whole
/// [`MAX_IN_FLIGHT`] budget from everyone else's devices.
pub const MAX_IN_FLIGHT_PER_ACCOUNT: usize = 32;

/// The registrations of every account that has one.
type Registered = DashMap<BareJid, Arc<[Registration]>>;

/// The push module.
pub struct Push {
    registry: Arc<Registry>,
    /// Notifications sent and not answered yet.
    in_flight: Arc<AtomicUsize>,
    /// The same, per account (entries leave at zero).
    in_flight_of: Arc<DashMap<BareJid, usize>>,
}

/// The registrations, in the store and in memory.
struct Registry {
    im: Arc<Im>,
    /// Read from the store once, on the first message that asks, then kept current by this
    /// module's own writes and by [`Event::AccountChanged`] (another cluster node's writes):
    /// every message to an account passes the hooks, and accounts without a registration —
    /// most — must cost no store question there.
    registered: OnceCell<Registered>,
}

impl Push {
    /// A push module on the shared state.
    pub fn new(im: Arc<Im>) -> Self {
        Push {
            registry: Arc::new(Registry {
                im,
                registered: OnceCell::new(),
            }),
            in_flight: Arc::default(),
            in_flight_of: Arc::default(),
        }
    }

    async fn enable(
        &self,
        core: &Arc<Core>,
        iq: &Stanza,
        account: &BareJid,
        payload: &Element,
    ) -> IqResult {
        let (service, node) = target(payload)?;
        let node = node.ok_or_else(|| err(Cond::BadRequest, "enable needs a node"))?;
        let options = payload
            .get_child("x", ns::DATA_FORMS)
            .map(|x| x.to_string())
            .unwrap_or_default();
        let resource = iq.from().and_then(|f| f.resource()).unwrap_or_default();
        let r = Registration {
            service: service.as_str().to_string(),
            node: node.to_string(),
            options,
            resource: resource.to_string(),
        };
        let (domain, user) = (account.domain(), account.local().unwrap_or_default());
        let store = self.registry.im.store().push();
        let held = store.list(domain, user).await.map_err(internal)?;
        let new = !held
            .iter()
            .any(|h| h.service == r.service && h.node == r.node);
        if new && held.len() >= MAX_REGISTRATIONS {
            return Err(err(
                Cond::PolicyViolation,
                "too many push registrations for this account; disable one first",
            ));
        }
        store.enable(domain, user, &r).await.map_err(internal)?;
        self.registry.changed(core, account).await;
        tracing::info!(%account, service = %r.service, resource, "push notifications enabled");
        Ok(None)
    }

    async fn disable(&self, core: &Arc<Core>, account: &BareJid, payload: &Element) -> IqResult {
        let (service, node) = target(payload)?;
        let (domain, user) = (account.domain(), account.local().unwrap_or_default());
        let store = self.registry.im.store().push();
        store
            .disable(domain, user, service.as_str(), node)
            .await
            .map_err(internal)?;
        self.registry.changed(core, account).await;
        Ok(None)
    }

    /// A message was held for `account` — stored offline (`session` is `None`), or parked
    /// by the hibernating `session`: the devices it concerns are woken.
    async fn held(
        &self,
        core: &Arc<Core>,
        account: &BareJid,
        session: Option<&Jid>,
        message: &Stanza,
    ) {
        let Some(regs) = self.registry.get(account).await else {
            return;
        };
        let device = session.and_then(|s| s.resource());
        let woken = regs
            .iter()
            .filter(|r| device.is_none_or(|d| r.resource.is_empty() || r.resource == d));
        self.notify(core, account, message, woken).await;
    }

    /// A message reaches some of `account`'s sessions: the devices with no session at all
    /// are woken.
    async fn delivered(&self, core: &Arc<Core>, account: &BareJid, message: &Stanza) {
        let Some(regs) = self.registry.get(account).await else {
            return;
        };
        let woken = regs.iter().filter(|r| {
            // A registration of unknown device is woken only when a message is held (as
            // before devices were known).
            !r.resource.is_empty()
                && account
                    .with_resource(&r.resource)
                    .is_ok_and(|device| core.session(&device).is_none())
        });
        self.notify(core, account, message, woken).await;
    }

    /// Counts `message` for `account` (once, however many devices it wakes) and sends one
    /// notification of it to each of `woken`, each in a task of its own (the app server
    /// may be slow or away).
    async fn notify<'a>(
        &self,
        core: &Arc<Core>,
        account: &BareJid,
        message: &Stanza,
        woken: impl Iterator<Item = &'a Registration>,
    ) {
        let Some(content) = wakes(message) else {
            return;
        };
        let woken: Vec<_> = woken
            .filter_map(|r| Some((Jid::parse(&r.service).ok()?, r)))
            .collect();
        if woken.is_empty() {
            return;
        }
        let count = self.registry.count_one(account).await;
        for (service, r) in woken {
            let Some(flight) = self.take_off(account) else {
                tracing::warn!(%account, "too many push notifications in flight; one skipped");
                continue;
            };
            let body = self.registry.im.config().push.include_body && asks_for_body(&r.options);
            let payload = notification(r, count, content, body);
            let (core, registry) = (core.clone(), self.registry.clone());
            let (account, r) = (account.clone(), r.clone());
            tokio::spawn(async move {
                // From the account's own host: an app server may accept publishes only
                // from the registering user's server (§4).
                let host = core.host_of(&account);
                let answer = core
                    .request(IqType::Set, host, service, payload, PUBLISH_TIMEOUT)
                    .await;
                drop(flight);
                if answer.is_some_and(|a| a.kind() == StanzaKind::Iq(IqType::Error)) {
                    // §8: the app server refused; this registration is of no more use.
                    tracing::info!(%account, service = %r.service, "push registration disabled by an error");
                    let (domain, user) = (account.domain(), account.local().unwrap_or_default());
                    let store = registry.im.store().push();
                    if let Err(e) = store.disable(domain, user, &r.service, Some(&r.node)).await {
                        return tracing::warn!(error = %e, "push registration not disabled");
                    }
                    registry.changed(&core, &account).await;
                }
            });
        }
    }
}

impl Push {
    /// A slot for one notification of `account`, within both budgets; `None` when either is
    /// spent. The slot is given back when dropped.
    fn take_off(&self, account: &BareJid) -> Option<Flight> {
        {
            let mut mine = self.in_flight_of.entry(account.clone()).or_insert(0);
            if *mine >= MAX_IN_FLIGHT_PER_ACCOUNT {
                return None;
            }
            if self.in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_IN_FLIGHT {
                self.in_flight.fetch_sub(1, Ordering::Relaxed);
                return None;
            }
            *mine += 1;
        }
        Some(Flight {
            total: self.in_flight.clone(),
            of: self.in_flight_of.clone(),
            account: account.clone(),
        })
    }
}

/// One notification in flight, counted in both budgets until dropped.
struct Flight {
    total: Arc<AtomicUsize>,
    of: Arc<DashMap<BareJid, usize>>,
    account: BareJid,
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.total.fetch_sub(1, Ordering::Relaxed);
        self.of.remove_if_mut(&self.account, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }
}

impl Registry {
    /// The registrations of `account`, from memory (read whole from the store the first
    /// time).
    async fn get(&self, account: &BareJid) -> Option<Arc<[Registration]>> {
        let registered = match self.registered.get_or_try_init(|| self.load()).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "push registrations not read");
                return None;
            }
        };
        registered.get(account).map(|r| r.clone())
    }

    async fn load(&self) -> Result<Registered, StoreError> {
        let registered = Registered::new();
        let mut all = self.im.store().push().all().await?.into_iter().peekable();
        while let Some((domain, user, first)) = all.next() {
            let mut regs = vec![first];
            while let Some((_, _, r)) = all.next_if(|(d, u, _)| *d == domain && *u == user) {
                regs.push(r);
            }
            if let Ok(account) = BareJid::parse(&format!("{user}@{domain}")) {
                registered.insert(account, regs.into());
            }
        }
        Ok(registered)
    }

    /// `account`'s registrations changed in the store: memory follows (and, in a cluster,
    /// the other nodes are told to follow). Without registrations left, its count starts
    /// again: binds restart only the counts of accounts with registrations.
    async fn changed(&self, core: &Arc<Core>, account: &BareJid) {
        self.reread(account).await;
        core.account_changed(account);
        if self.get(account).await.is_none() {
            self.reset_count(account).await;
        }
    }

    /// One more message held or pushed for `account`: its `message-count` with it, from the
    /// store (the cluster's count); `None` when the store failed — the device is still
    /// woken, with no count.
    async fn count_one(&self, account: &BareJid) -> Option<u64> {
        let (domain, user) = (account.domain(), account.local().unwrap_or_default());
        match self.im.store().push().count_one(domain, user).await {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(%account, error = %e, "push message count not kept");
                None
            }
        }
    }

    /// `account`'s `message-count` starts again.
    async fn reset_count(&self, account: &BareJid) {
        let (domain, user) = (account.domain(), account.local().unwrap_or_default());
        if let Err(e) = self.im.store().push().reset_count(domain, user).await {
            tracing::warn!(%account, error = %e, "push message count not started again");
        }
    }

    /// A resource of `account` was bound, on whichever node: the count of what waited starts
    /// again — a store write only for accounts with registrations, so that other binds
    /// cost none.
    async fn bound(&self, account: &BareJid) {
        if self.get(account).await.is_some() {
            self.reset_count(account).await;
        }
    }

    /// Reads `account`'s registrations again, if they are kept in memory yet.
    async fn reread(&self, account: &BareJid) {
        let Some(registered) = self.registered.get() else {
            return;
        };
        let (domain, user) = (account.domain(), account.local().unwrap_or_default());
        match self.im.store().push().list(domain, user).await {
            Ok(regs) if regs.is_empty() => {
                registered.remove(account);
            }
            Ok(regs) => {
                registered.insert(account.clone(), regs.into());
            }
            Err(e) => {
                // Stale is safer than empty: a removed registration costs one notification
                // the app server refuses, a forgotten one a device never woken.
                tracing::warn!(%account, error = %e, "push registrations not read again");
            }
        }
    }
}

/// The message whose body wakes a device: `message` itself when it has a body, or the one
/// a XEP-0280 carbon copy carries; `None` for content-free messages and for errors. Every
/// other type wakes, `groupchat` included: a room's message parked in a hibernated session
/// is one the user is waiting for. An `error` is not something to read on a phone, and
/// anyone can address one to any resource, so it would only drain the battery.
fn wakes(message: &Stanza) -> Option<&Element> {
    if message.kind() == StanzaKind::Message(MessageType::Error) {
        return None;
    }
    let e = message.element();
    if e.has_child("body", CONTENT_NS) {
        return Some(e);
    }
    ["received", "sent"]
        .iter()
        .find_map(|name| e.get_child(name, ns::CARBONS))
        .and_then(|c| c.get_child("forwarded", ns::FORWARD))
        .and_then(|f| f.get_child("message", CONTENT_NS))
        .filter(|m| m.has_child("body", CONTENT_NS))
}

/// The `jid` and `node` of an `<enable/>` or `<disable/>`.
fn target(payload: &Element) -> Result<(Jid, Option<&str>), StanzaError> {
    let service = payload
        .attr("jid")
        .and_then(|j| Jid::parse(j).ok())
        .ok_or_else(|| err(Cond::BadRequest, "a valid 'jid' is required"))?;
    let node = payload.attr("node").filter(|n| !n.is_empty());
    Ok((service, node))
}

/// Whether a publish-options form (serialized) asks for message bodies.
fn asks_for_body(options: &str) -> bool {
    if options.is_empty() {
        return false;
    }
    parse_element(options).is_some_and(|form| {
        form.children().any(|f| {
            f.attr("var") == Some("include-body")
                && matches!(
                    f.child_text("value", ns::DATA_FORMS).as_deref(),
                    Some("true" | "1")
                )
        })
    })
}

fn field(var: &str, value: &str) -> Element {
    Element::new("field", ns::DATA_FORMS)
        .with_attr("var", var)
        .with_child(Element::new("value", ns::DATA_FORMS).with_text(value))
}

/// The pubsub publish of a notification (§7).
fn notification(r: &Registration, count: Option<u64>, message: &Element, body: bool) -> Element {
    let mut form = Element::new("x", ns::DATA_FORMS)
        .with_attr("type", "submit")
        .with_child(field("FORM_TYPE", SUMMARY));
    if let Some(count) = count {
        form.push_child(field("message-count", &count.to_string()));
    }
    if let Some(from) = message.attr("from") {
        form.push_child(field("last-message-sender", from));
    }
    if body {
        if let Some(text) = message.child_text("body", CONTENT_NS) {
            form.push_child(field("last-message-body", &text));
        }
    }
    let item = Element::new("item", ns::pubsub::PUBSUB)
        .with_child(Element::new("notification", NS).with_child(form));
    let mut pubsub = Element::new("pubsub", ns::pubsub::PUBSUB).with_child(
        Element::new("publish", ns::pubsub::PUBSUB)
            .with_attr("node", r.node.as_str())
            .with_child(item),
    );
    if let Some(options) = parse_element(&r.options) {
        pubsub.push_child(Element::new("publish-options", ns::pubsub::PUBSUB).with_child(options));
    }
    pubsub
}

#[async_trait]
impl Module for Push {
    fn name(&self) -> &'static str {
        "push"
    }

    fn declare(&self) -> Declaration {
        Declaration {
            iqs: vec![
                (IqTarget::Account, NS, "enable"),
                (IqTarget::Account, NS, "disable"),
            ],
            events: vec![
                (EventKind::MessageHeld, priority::DEFAULT),
                (EventKind::Session, priority::DEFAULT),
                (EventKind::AccountChanged, priority::DEFAULT),
                (EventKind::AccountDeleted, priority::DEFAULT),
            ],
            hooks: vec![
                (HookPoint::MessageToBare, priority::OBSERVE),
                (HookPoint::MessageToFull, priority::OBSERVE),
            ],
            account_features: vec![NS],
            ..Declaration::default()
        }
    }

    async fn handle_iq(&self, core: &Arc<Core>, to: &BareJid, iq: &Stanza) -> IqResult {
        let account = own_account(iq, to)?;
        let Some(p) = iq
            .payload()
            .filter(|_| iq.kind() == StanzaKind::Iq(IqType::Set))
        else {
            return Err(StanzaError::new(Cond::BadRequest));
        };
        match p.name() {
            "enable" => self.enable(core, iq, &account, p).await,
            _ => self.disable(core, &account, p).await,
        }
    }

    async fn hook(&self, core: &Arc<Core>, point: HookPoint, stanza: Stanza) -> Flow {
        let chat_or_normal = matches!(
            stanza.kind(),
            StanzaKind::Message(MessageType::Chat | MessageType::Normal)
        );
        let Some(account) = stanza.to().map(Jid::to_bare).filter(|_| chat_or_normal) else {
            return Flow::Continue(stanza);
        };
        // To the bare JID with no session to take it, it will be stored offline (and held
        // there, which wakes every device) or refused: nothing to do here.
        let reaches_a_session = point == HookPoint::MessageToFull
            || core
                .sessions_of(&account)
                .iter()
                .any(|(_, priority)| priority.is_some_and(|p| p >= 0));
        if reaches_a_session {
            self.delivered(core, &account, &stanza).await;
        }
        Flow::Continue(stanza)
    }

    async fn event(&self, core: &Arc<Core>, event: &Event) {
        match event {
            Event::MessageHeld {
                account,
                session,
                message,
            } => self.held(core, account, session.as_ref(), message).await,
            Event::AccountChanged(account) => self.registry.reread(account).await,
            Event::AccountDeleted(account) => {
                if let Some(registered) = self.registry.registered.get() {
                    registered.remove(account);
                }
            }
            Event::Session(SessionEvent::Bound(jid)) => self.registry.bound(&jid.to_bare()).await,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::util::parse_stanza;

    fn reg(options: &str) -> Registration {
        Registration {
            service: "push.example".into(),
            node: "n1".into(),
            options: options.into(),
            resource: "phone".into(),
        }
    }

    fn fields(p: &Element) -> Vec<(String, String)> {
        let form = p
            .get_child("publish", ns::pubsub::PUBSUB)
            .and_then(|x| x.get_child("item", ns::pubsub::PUBSUB))
            .and_then(|x| x.get_child("notification", NS))
            .and_then(|x| x.get_child("x", ns::DATA_FORMS))
            .unwrap();
        form.children()
            .map(|f| {
                let v = f.child_text("value", ns::DATA_FORMS).unwrap_or_default();
                (f.attr("var").unwrap().to_string(), v)
            })
            .collect()
    }

    #[test]
    fn summary_with_and_without_body() {
        let m =
            parse_stanza("<message from='r@x/y' type='chat'><body>hi</body></message>").unwrap();
        let p = notification(&reg(""), Some(2), m.element(), false);
        assert_eq!(
            fields(&p),
            [
                ("FORM_TYPE".into(), SUMMARY.into()),
                ("message-count".into(), "2".into()),
                ("last-message-sender".into(), "r@x/y".into()),
            ]
        );
        assert!(!p.has_child("publish-options", ns::pubsub::PUBSUB));
        let options =
            "<x xmlns='jabber:x:data' type='submit'><field var='secret'><value>s</value></field>\
                       <field var='include-body'><value>true</value></field></x>";
        assert!(asks_for_body(options));
        assert!(!asks_for_body(""));
        let p = notification(&reg(options), None, m.element(), true);
        assert!(fields(&p).contains(&("last-message-body".into(), "hi".into())));
        assert!(!fields(&p).iter().any(|(var, _)| var == "message-count"));
        assert!(p.has_child("publish-options", ns::pubsub::PUBSUB));
    }

    #[test]
    fn a_carbon_copy_wakes_by_the_message_it_carries() {
        let carbon = parse_stanza(
            "<message to='a@x/phone' from='a@x'><received xmlns='urn:xmpp:carbons:2'>\
             <forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' \
             from='r@x/y' to='a@x/desk' type='chat'><body>hi</body></message></forwarded>\
             </received></message>",
        )
        .unwrap();
        let inner = wakes(&carbon).unwrap();
        let p = notification(&reg(""), Some(1), inner, false);
        assert!(fields(&p).contains(&("last-message-sender".into(), "r@x/y".into())));
        let state = parse_stanza(
            "<message to='a@x/phone'><active xmlns='http://jabber.org/protocol/chatstates'/>\
             </message>",
        )
        .unwrap();
        assert!(wakes(&state).is_none());
        let bounce = parse_stanza(
            "<message to='a@x/phone' from='r@x' type='error'><body>hi</body>\
             <error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             </error></message>",
        )
        .unwrap();
        assert!(wakes(&bounce).is_none());
    }

    #[test]
    fn enable_needs_a_jid() {
        let e = Element::new("enable", NS).with_attr("node", "n");
        assert!(target(&e).is_err());
        let e = Element::new("disable", NS).with_attr("jid", "push.example");
        assert_eq!(target(&e).unwrap().1, None);
    }
}
