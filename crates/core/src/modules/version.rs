//! XEP-0092: Software Version — name and version of the server, OS only if configured.

use std::sync::Arc;

use async_trait::async_trait;
use rookery_jid::BareJid;
use rookery_proto::{ns, IqType, Stanza, StanzaError, StanzaErrorCondition, StanzaKind};
use rookery_xml::Element;

use crate::module::{Declaration, IqResult, IqTarget, Module};
use crate::router::Core;

/// Answers `jabber:iq:version` gets for the server.
pub struct Version {
    /// Whether to disclose the operating system.
    pub show_os: bool,
}

#[async_trait]
impl Module for Version {
    fn name(&self) -> &'static str {
        "version"
    }

    fn declare(&self) -> Declaration {
        Declaration {
            iqs: vec![(IqTarget::Server, ns::VERSION, "query")],
            server_features: vec![ns::VERSION],
            ..Declaration::default()
        }
    }

    async fn handle_iq(&self, _core: &Arc<Core>, _to: &BareJid, iq: &Stanza) -> IqResult {
        if iq.kind() != StanzaKind::Iq(IqType::Get) {
            return Err(StanzaError::new(StanzaErrorCondition::BadRequest));
        }
        let mut q = Element::new("query", ns::VERSION)
            .with_child(Element::new("name", ns::VERSION).with_text("Rookery"))
            .with_child(Element::new("version", ns::VERSION).with_text(env!("CARGO_PKG_VERSION")));
        if self.show_os {
            q.push_child(Element::new("os", ns::VERSION).with_text(std::env::consts::OS));
        }
        Ok(Some(q))
    }
}
