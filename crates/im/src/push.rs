//! XEP-0357: Push Notifications — waking a device whose client is not connected.
//!
//! - `<enable jid node>` (§5, with an optional publish-options form) and `<disable jid
//!   [node]>` (§6) are IQ sets on one's own account; registrations are stored per account
//!   (`rookery_store::push`) and advertised with the account feature `urn:xmpp:push:0`.
//! - When a message is held for the account instead of reaching a client — stored offline,
//!   or parked by a session hibernating for XEP-0198 resumption ([`Event::MessageHeld`]) — each
//!   registration gets a pubsub publish (§7) from the server to the app server, with the
//!   `urn:xmpp:push:summary` form: `message-count` (messages held since a resource of the
//!   account was last bound), `last-message-sender`, and `last-message-body` only when
//!   `[im.push] include_body` allows it and the client asked for it with the field
//!   `include-body` = `true` in its publish-options form (a Rookery convention: the XEP
//!   names no way to ask). The publish-options form goes along as given (§7).
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
use rookery_core::{priority, Core, Declaration, Event, EventKind, IqTarget, Module, SessionEvent};
use rookery_jid::{BareJid, Jid};
use rookery_proto::{ns, IqType, Stanza, StanzaError, StanzaErrorCondition as Cond, StanzaKind};
use rookery_store::push::Registration;
use rookery_xml::{Element, CONTENT_NS};

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

/// The push module.
pub struct Push {
    im: Arc<Im>,
    /// Messages held per account since one of its resources was last bound.
    counts: DashMap<BareJid, u64>,
    /// Notifications sent and not answered yet.
    in_flight: Arc<AtomicUsize>,
}

impl Push {
    /// A push module on the shared state.
    pub fn new(im: Arc<Im>) -> Self {
        Push {
            im,
            counts: DashMap::new(),
            in_flight: Arc::default(),
        }
    }

    async fn enable(&self, account: &BareJid, payload: &Element) -> IqResult {
        let (service, node) = target(payload)?;
        let node = node.ok_or_else(|| err(Cond::BadRequest, "enable needs a node"))?;
        let options = payload
            .get_child("x", ns::DATA_FORMS)
            .map(|x| x.to_string())
            .unwrap_or_default();
        let r = Registration {
            service: service.as_str().to_string(),
            node: node.to_string(),
            options,
        };
        let (domain, user) = (account.domain(), account.local().unwrap_or_default());
        self.im
            .store()
            .push()
            .enable(domain, user, &r)
            .await
            .map_err(internal)?;
        tracing::info!(%account, service = %r.service, "push notifications enabled");
        Ok(None)
    }

    async fn disable(&self, account: &BareJid, payload: &Element) -> IqResult {
        let (service, node) = target(payload)?;
        let (domain, user) = (account.domain(), account.local().unwrap_or_default());
        let store = self.im.store().push();
        store
            .disable(domain, user, service.as_str(), node)
            .await
            .map_err(internal)?;
        Ok(None)
    }

    /// A message is held for `account`: every registration gets a notification, each in a
    /// task of its own (the app server may be slow or away).
    async fn held(&self, core: &Arc<Core>, account: &BareJid, message: &Stanza) {
        if !message.element().has_child("body", CONTENT_NS) {
            return;
        }
        let (domain, Some(user)) = (account.domain(), account.local()) else {
            return;
        };
        let regs = match self.im.store().push().list(domain, user).await {
            Ok(r) if !r.is_empty() => r,
            Ok(_) => return,
            Err(e) => return tracing::warn!(error = %e, "push registrations not read"),
        };
        let count = {
            let mut c = self.counts.entry(account.clone()).or_insert(0);
            *c += 1;
            *c
        };
        for r in regs {
            let Ok(service) = Jid::parse(&r.service) else {
                continue;
            };
            if self.in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_IN_FLIGHT {
                self.in_flight.fetch_sub(1, Ordering::Relaxed);
                tracing::warn!(%account, "too many push notifications in flight; one skipped");
                continue;
            }
            let in_flight = self.in_flight.clone();
            let body = self.im.config().push.include_body && asks_for_body(&r.options);
            let payload = notification(&r, count, message, body);
            let (core, im, account) = (core.clone(), self.im.clone(), account.clone());
            tokio::spawn(async move {
                let answer = core
                    .request(IqType::Set, service, payload, PUBLISH_TIMEOUT)
                    .await;
                in_flight.fetch_sub(1, Ordering::Relaxed);
                if answer.is_some_and(|a| a.kind() == StanzaKind::Iq(IqType::Error)) {
                    // §8: the app server refused; this registration is of no more use.
                    tracing::info!(%account, service = %r.service, "push registration disabled by an error");
                    let (domain, user) = (account.domain(), account.local().unwrap_or_default());
                    let store = im.store().push();
                    if let Err(e) = store.disable(domain, user, &r.service, Some(&r.node)).await {
                        tracing::warn!(error = %e, "push registration not disabled");
                    }
                }
            });
        }
    }
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
fn notification(r: &Registration, count: u64, message: &Stanza, body: bool) -> Element {
    let mut form = Element::new("x", ns::DATA_FORMS)
        .with_attr("type", "submit")
        .with_child(field("FORM_TYPE", SUMMARY))
        .with_child(field("message-count", &count.to_string()));
    if let Some(from) = message.from() {
        form.push_child(field("last-message-sender", from.as_str()));
    }
    if body {
        if let Some(text) = message.element().child_text("body", CONTENT_NS) {
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
            ],
            account_features: vec![NS],
            ..Declaration::default()
        }
    }

    async fn handle_iq(&self, _core: &Arc<Core>, to: &BareJid, iq: &Stanza) -> IqResult {
        let account = own_account(iq, to)?;
        let Some(p) = iq
            .payload()
            .filter(|_| iq.kind() == StanzaKind::Iq(IqType::Set))
        else {
            return Err(StanzaError::new(Cond::BadRequest));
        };
        match p.name() {
            "enable" => self.enable(&account, p).await,
            _ => self.disable(&account, p).await,
        }
    }

    async fn event(&self, core: &Arc<Core>, event: &Event) {
        match event {
            Event::MessageHeld { account, message } => self.held(core, account, message).await,
            // A device is back: the count of what waited starts again.
            Event::Session(SessionEvent::Bound(jid)) => {
                self.counts.remove(&jid.to_bare());
            }
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
        let p = notification(&reg(""), 2, &m, false);
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
        let p = notification(&reg(options), 1, &m, true);
        assert!(fields(&p).contains(&("last-message-body".into(), "hi".into())));
        assert!(p.has_child("publish-options", ns::pubsub::PUBSUB));
    }

    #[test]
    fn enable_needs_a_jid() {
        let e = Element::new("enable", NS).with_attr("node", "n");
        assert!(target(&e).is_err());
        let e = Element::new("disable", NS).with_attr("jid", "push.example");
        assert_eq!(target(&e).unwrap().1, None);
    }
}
