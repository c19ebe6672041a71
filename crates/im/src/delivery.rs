//! RFC 6121 §8.5.2: delivery of messages addressed to a local account's bare JID (and, by
//! §8.5.3.2.1, to a full JID whose resource is not online), on top of the core's defaults.
//!
//! | type      | available resources with priority ≥ 0            | none                          |
//! |-----------|--------------------------------------------------|-------------------------------|
//! | normal    | the highest-priority ones (§8.5.2.1.1)           | offline storage, else `service-unavailable` (§8.5.2.2.1) |
//! | chat      | the highest-priority ones (§8.5.2.1.2)           | same                          |
//! | groupchat | `service-unavailable` (§8.5.2.1.3)               | `service-unavailable` (§8.5.2.2.2) |
//! | headline  | all of them (§8.5.2.1.4)                         | dropped (§8.5.2.2.3)          |
//! | error     | dropped (§8.5.2.1.5)                             | dropped (§8.5.2.2.4)          |
//!
//! With no resource to take it, a normal/chat message is stored offline when it qualifies
//! (see [`crate::offline::qualifies`]); one with a body that may not be stored (XEP-0334
//! `<no-store/>`, or offline storage disabled or full) is bounced; one without content (only
//! chat states) is dropped. Carbons-enabled resources that did not get a `chat` message get a
//! received carbon (XEP-0280) — also those of negative priority when it was stored or dropped,
//! not when it bounced. Unknown accounts are answered by the core
//! (`service-unavailable`, §8.5.2.2.3 / §8.5.3.2.3).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use rookery_core::{priority, Core, Declaration, Event, Flow, HookPoint, Module, SessionHandle};
use rookery_jid::{BareJid, Jid};
use rookery_proto::{MessageType, Stanza, StanzaError, StanzaErrorCondition as Cond, StanzaKind};

use crate::state::Im;
use crate::{carbons, offline};

/// What became of a message no resource could take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Stored offline.
    Kept,
    /// Content-free: dropped without a word.
    Dropped,
    /// The sender got an error: it went nowhere.
    Bounced,
}

/// The message delivery module.
pub struct Delivery {
    im: Arc<Im>,
}

impl Delivery {
    /// A delivery module on the shared state.
    pub fn new(im: Arc<Im>) -> Self {
        Delivery { im }
    }

    async fn to_bare(&self, core: &Arc<Core>, stanza: Stanza) {
        let owner = match (stanza.to(), stanza.from()) {
            (Some(t), _) => t.to_bare(),
            (None, Some(f)) => f.to_bare(),
            (None, None) => return,
        };
        let StanzaKind::Message(t) = stanza.kind() else {
            return;
        };
        let eligible: Vec<(SessionHandle, i8)> = core
            .sessions_of(&owner)
            .into_iter()
            .filter_map(|(h, p)| p.filter(|p| *p >= 0).map(|p| (h, p)))
            .collect();
        match t {
            MessageType::Error => {}
            MessageType::Groupchat => {
                core.reply_error(&stanza, StanzaError::new(Cond::ServiceUnavailable))
                    .await
            }
            MessageType::Headline => {
                let bytes = Bytes::from(stanza.to_bytes());
                for (h, _) in eligible {
                    h.send(bytes.clone());
                }
            }
            MessageType::Normal | MessageType::Chat => {
                let got = if eligible.is_empty() {
                    if self.undeliverable(core, &owner, &stanza).await == Fate::Bounced {
                        return;
                    }
                    // Stored or dropped: a Carbons-enabled resource of negative priority
                    // did not get it either, and gets its copy (XEP-0280 §6).
                    Vec::new()
                } else {
                    Self::to_top(eligible, &stanza)
                };
                let exclude: Vec<&Jid> = got.iter().collect();
                let received = carbons::Direction::Received;
                carbons::copies(&self.im, core, received, &owner, &stanza, &exclude).await;
            }
        }
    }

    /// §8.5.2.1.1/§8.5.2.1.2: the message to the `eligible` resources of the highest
    /// priority; the JIDs of those that got it.
    fn to_top(eligible: Vec<(SessionHandle, i8)>, stanza: &Stanza) -> Vec<Jid> {
        let top = eligible.iter().map(|(_, p)| *p).max().unwrap_or(0);
        let bytes = Bytes::from(stanza.to_bytes());
        let mut got: Vec<Jid> = Vec::new();
        for (h, p) in eligible {
            if p == top {
                h.send(bytes.clone());
                got.push(h.jid().clone());
            }
        }
        got
    }

    /// §8.5.2.2.1: no resource can take it — offline storage, or an error for the sender.
    async fn undeliverable(&self, core: &Arc<Core>, owner: &BareJid, stanza: &Stanza) -> Fate {
        if self.im.config().offline.enabled && offline::qualifies(stanza) {
            return match offline::store(&self.im, owner, stanza).await {
                Ok(()) => {
                    let event = Event::MessageHeld {
                        account: owner.clone(),
                        session: None,
                        message: stanza.clone(),
                    };
                    core.emit(&event).await;
                    offline::stored(&self.im, core, owner);
                    Fate::Kept
                }
                Err(e) => {
                    core.reply_error(stanza, e).await;
                    Fate::Bounced
                }
            };
        }
        let has_body = stanza.element().has_child("body", rookery_xml::CONTENT_NS);
        if has_body || !self.im.config().offline.enabled {
            core.reply_error(stanza, StanzaError::new(Cond::ServiceUnavailable))
                .await;
            return Fate::Bounced;
        }
        // Chat states and other content-free messages are dropped silently (they are not
        // worth storing, and an error for each would be noise).
        Fate::Dropped
    }
}

#[async_trait]
impl Module for Delivery {
    fn name(&self) -> &'static str {
        "delivery"
    }

    fn declare(&self) -> Declaration {
        Declaration {
            hooks: vec![(HookPoint::MessageToBare, priority::DEFAULT)],
            ..Declaration::default()
        }
    }

    async fn hook(&self, core: &Arc<Core>, point: HookPoint, stanza: Stanza) -> Flow {
        if point == HookPoint::MessageToBare {
            self.to_bare(core, stanza).await;
            return Flow::Handled;
        }
        Flow::Continue(stanza)
    }
}
