//! XEP-0054: vcard-temp — one vCard per account, readable by anyone, writable by its owner,
//! limited in size (`im.vcard.max_bytes`, `not-acceptable` beyond).

use std::sync::Arc;

use async_trait::async_trait;
use rookery_core::module::IqResult;
use rookery_core::{Core, Declaration, IqTarget, Module};
use rookery_jid::BareJid;
use rookery_proto::{ns, IqType, Stanza, StanzaError, StanzaErrorCondition as Cond, StanzaKind};
use rookery_xml::Element;

use crate::roster::internal;
use crate::state::Im;
use crate::util::{err, own_account, parse_element};

/// The vcard-temp module.
pub struct VCard {
    im: Arc<Im>,
}

impl VCard {
    /// A vCard module on the shared state.
    pub fn new(im: Arc<Im>) -> Self {
        VCard { im }
    }
}

#[async_trait]
impl Module for VCard {
    fn name(&self) -> &'static str {
        "vcard"
    }

    fn declare(&self) -> Declaration {
        Declaration {
            iqs: vec![(IqTarget::Account, ns::VCARD, "vCard")],
            server_features: vec![ns::VCARD],
            ..Declaration::default()
        }
    }

    async fn handle_iq(&self, _core: &Arc<Core>, to: &BareJid, iq: &Stanza) -> IqResult {
        let user = to
            .local()
            .ok_or_else(|| StanzaError::new(Cond::ItemNotFound))?;
        let store = self.im.store().userdata();
        match iq.kind() {
            StanzaKind::Iq(IqType::Get) => {
                let stored = store.vcard(to.domain(), user).await.map_err(internal)?;
                match stored.as_deref().and_then(parse_element) {
                    Some(card) => Ok(Some(card)),
                    // §3.1: an account asking for its own, not yet set, gets an empty one;
                    // §3.3: anyone else gets the error an account that does not exist gets
                    // (service-unavailable, RFC 6121 §8.5.1), so that no one learns which
                    // accounts exist by asking for their vCards.
                    None if own_account(iq, to).is_ok() => {
                        Ok(Some(Element::new("vCard", ns::VCARD)))
                    }
                    None => Err(StanzaError::new(Cond::ServiceUnavailable)),
                }
            }
            StanzaKind::Iq(IqType::Set) => {
                own_account(iq, to)?;
                let card = iq
                    .payload()
                    .ok_or_else(|| StanzaError::new(Cond::BadRequest))?;
                let xml = String::from_utf8_lossy(&card.to_bytes()).into_owned();
                if xml.len() > self.im.config().vcard.max_bytes {
                    return Err(err(Cond::NotAcceptable, "vCard too large"));
                }
                store
                    .set_vcard(to.domain(), user, &xml)
                    .await
                    .map_err(internal)?;
                Ok(None)
            }
            _ => Err(StanzaError::new(Cond::BadRequest)),
        }
    }
}
