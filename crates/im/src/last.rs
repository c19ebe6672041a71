//! XEP-0012: Last Activity — for an account, the time since its last logout and the status it
//! left with (§4, answered by the server on the account's behalf; only to the account itself
//! and to contacts subscribed to its presence, `forbidden` otherwise; `0` while it is online);
//! for the server, its uptime (§5). A query to an online resource (§3) goes to the client
//! only from the account itself or a subscribed contact; anyone else gets `forbidden` from the
//! server (a hook on stanzas to local accounts), so that idle time does not leak to strangers.

use std::sync::Arc;

use async_trait::async_trait;
use rookery_core::module::IqResult;
use rookery_core::{priority, Core, Declaration, Flow, HookPoint, IqTarget, Module};
use rookery_jid::{BareJid, Jid};
use rookery_proto::{ns, IqType, Stanza, StanzaError, StanzaErrorCondition as Cond, StanzaKind};
use rookery_xml::Element;

use crate::roster::internal;
use crate::state::Im;
use rookery_proto::time::now_unix;

use crate::util::err;

/// The last activity module.
pub struct Last {
    im: Arc<Im>,
}

impl Last {
    /// A last activity module on the shared state.
    pub fn new(im: Arc<Im>) -> Self {
        Last { im }
    }

    /// Whether `requester` may learn `owner`'s last activity: the account itself, or a
    /// contact with a subscription to its presence (XEP-0012 §3, §4).
    async fn may_ask(&self, owner: &BareJid, requester: &BareJid) -> bool {
        requester == owner || self.im.shares_presence(owner, requester).await
    }
}

/// Whether `stanza` asks a local resource (a full JID) for its last activity.
fn asks_resource(stanza: &Stanza) -> Option<(&Jid, &Jid)> {
    let (from, to) = (stanza.from()?, stanza.to()?);
    (stanza.kind() == StanzaKind::Iq(IqType::Get)
        && to.is_full()
        && stanza.payload().is_some_and(|p| p.is("query", ns::LAST)))
    .then_some((from, to))
}

fn not_subscribed() -> StanzaError {
    err(Cond::Forbidden, "not subscribed to this contact's presence")
}

fn answer(seconds: i64, status: &str) -> Element {
    let mut q = Element::new("query", ns::LAST).with_attr("seconds", seconds.max(0).to_string());
    if !status.is_empty() {
        q.push_text(status);
    }
    q
}

#[async_trait]
impl Module for Last {
    fn name(&self) -> &'static str {
        "last"
    }

    fn declare(&self) -> Declaration {
        Declaration {
            iqs: vec![
                (IqTarget::Server, ns::LAST, "query"),
                (IqTarget::Account, ns::LAST, "query"),
            ],
            hooks: vec![(HookPoint::IqToFull, priority::DEFAULT)],
            server_features: vec![ns::LAST],
            ..Declaration::default()
        }
    }

    async fn hook(&self, core: &Arc<Core>, _point: HookPoint, stanza: Stanza) -> Flow {
        let Some((from, to)) = asks_resource(&stanza) else {
            return Flow::Continue(stanza);
        };
        if self.may_ask(&to.to_bare(), &from.to_bare()).await {
            return Flow::Continue(stanza);
        }
        core.reply_error(&stanza, not_subscribed()).await;
        Flow::Handled
    }

    async fn handle_iq(&self, core: &Arc<Core>, to: &BareJid, iq: &Stanza) -> IqResult {
        if iq.kind() != StanzaKind::Iq(IqType::Get) {
            return Err(StanzaError::new(Cond::BadRequest));
        }
        let Some(user) = to.local() else {
            let up = i64::try_from(self.im.started().elapsed().as_secs()).unwrap_or(i64::MAX);
            return Ok(Some(answer(up, "")));
        };
        let requester = iq
            .from()
            .map(|f| f.to_bare())
            .ok_or_else(|| StanzaError::new(Cond::BadRequest))?;
        if !self.may_ask(to, &requester).await {
            return Err(not_subscribed());
        }
        if self.im.has_available(core, to) {
            return Ok(Some(answer(0, "")));
        }
        match self
            .im
            .store()
            .userdata()
            .last_activity(to.domain(), user)
            .await
            .map_err(internal)?
        {
            Some(last) => Ok(Some(answer(now_unix() - last.at, &last.status))),
            None => Err(err(Cond::ItemNotFound, "no recorded activity")),
        }
    }
}
