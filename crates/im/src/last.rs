//! XEP-0012: Last Activity — for an account, the time since its last logout and the status it
//! left with (§4, answered by the server on the account's behalf; only to the account itself
//! and to contacts subscribed to its presence, `forbidden` otherwise; `0` while it is online);
//! for the server, its uptime (§5).

use std::sync::Arc;

use async_trait::async_trait;
use rookery_core::module::IqResult;
use rookery_core::{Core, Declaration, IqTarget, Module};
use rookery_jid::BareJid;
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
            server_features: vec![ns::LAST],
            ..Declaration::default()
        }
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
        if &requester != to {
            let subscribed = matches!(
                self.im.roster_item(to, &requester).await,
                Ok(Some(i)) if i.subscription.has_from()
            );
            if !subscribed {
                return Err(err(
                    Cond::Forbidden,
                    "not subscribed to this contact's presence",
                ));
            }
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
