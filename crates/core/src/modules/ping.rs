//! XEP-0199: XMPP Ping — the server answers pings to itself and to local accounts.

use std::sync::Arc;

use async_trait::async_trait;
use rookery_jid::BareJid;
use rookery_proto::{ns, Stanza};

use crate::module::{Declaration, IqResult, IqTarget, Module};
use crate::router::Core;

/// Answers `<ping xmlns='urn:xmpp:ping'/>` with an empty result (XEP-0199 §4.2, §4.3).
pub struct Ping;

#[async_trait]
impl Module for Ping {
    fn name(&self) -> &'static str {
        "ping"
    }

    fn declare(&self) -> Declaration {
        Declaration {
            iqs: vec![
                (IqTarget::Server, ns::PING, "ping"),
                (IqTarget::Account, ns::PING, "ping"),
            ],
            server_features: vec![ns::PING],
            ..Declaration::default()
        }
    }

    async fn handle_iq(&self, _core: &Arc<Core>, _to: &BareJid, _iq: &Stanza) -> IqResult {
        Ok(None)
    }
}
