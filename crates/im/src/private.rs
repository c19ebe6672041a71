//! XEP-0049: Private XML Storage — elements a user stores on the server for itself, keyed by
//! element name and namespace, limited in size (`im.private.max_bytes` per element).

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use rookery_core::module::IqResult;
use rookery_core::{Core, Declaration, IqTarget, Module};
use rookery_jid::BareJid;
use rookery_proto::{ns, IqType, Stanza, StanzaError, StanzaErrorCondition as Cond, StanzaKind};
use rookery_xml::{Element, CONTENT_NS};

use crate::roster::internal;
use crate::state::Im;
use crate::util::{err, own_account, parse_element};

/// The private storage module.
pub struct Private {
    im: Arc<Im>,
}

impl Private {
    /// A private storage module on the shared state.
    pub fn new(im: Arc<Im>) -> Self {
        Private { im }
    }
}

/// At most this many distinct elements (name and namespace) per account: each one is a row,
/// up to `max_bytes` large, so without a count one account could fill the store. Clients
/// keep a handful (bookmarks, roster notes, preferences).
const MAX_ELEMENTS: usize = 64;

/// §3: namespaces a client may not store under.
fn reserved(ns_uri: &str) -> bool {
    ns_uri == ns::PRIVATE || ns_uri == CONTENT_NS || ns_uri == ns::DATA_FORMS || ns_uri.is_empty()
}

impl Private {
    /// Refuses a set that would leave the account with more than [`MAX_ELEMENTS`] distinct
    /// elements (`not-acceptable`, as for an element too large: XEP-0049 names no quota
    /// error, and RFC 6120 §8.3.3.9's "does not meet criteria defined by the server" fits;
    /// `resource-constraint` would tell the client to retry later, which cannot help).
    /// Replacing an element already held is always allowed.
    async fn room_for(
        &self,
        domain: &str,
        user: &str,
        docs: &[(String, String, String)],
    ) -> Result<(), StanzaError> {
        let store = self.im.store().userdata();
        let held = store.private_keys(domain, user).await.map_err(internal)?;
        let mut keys: HashSet<(&str, &str)> =
            held.iter().map(|(n, s)| (n.as_str(), s.as_str())).collect();
        keys.extend(docs.iter().map(|(n, s, _)| (n.as_str(), s.as_str())));
        if keys.len() > MAX_ELEMENTS {
            return Err(err(Cond::NotAcceptable, "too many private elements"));
        }
        Ok(())
    }
}

#[async_trait]
impl Module for Private {
    fn name(&self) -> &'static str {
        "private"
    }

    fn declare(&self) -> Declaration {
        Declaration {
            iqs: vec![(IqTarget::Account, ns::PRIVATE, "query")],
            account_features: vec![ns::PRIVATE],
            ..Declaration::default()
        }
    }

    async fn handle_iq(&self, _core: &Arc<Core>, to: &BareJid, iq: &Stanza) -> IqResult {
        let owner = own_account(iq, to)?;
        let user = owner
            .local()
            .ok_or_else(|| StanzaError::new(Cond::Forbidden))?;
        let query = iq
            .payload()
            .ok_or_else(|| StanzaError::new(Cond::BadRequest))?;
        let children: Vec<&Element> = query.children().collect();
        if children.is_empty() {
            return Err(err(Cond::NotAcceptable, "nothing to store or retrieve"));
        }
        if children.iter().any(|c| reserved(c.ns())) {
            return Err(err(Cond::NotAcceptable, "reserved namespace"));
        }
        let store = self.im.store().userdata();
        match iq.kind() {
            StanzaKind::Iq(IqType::Get) => {
                let [wanted] = children.as_slice() else {
                    return Err(err(Cond::NotAcceptable, "ask for one element at a time"));
                };
                let stored = store
                    .private(owner.domain(), user, wanted.name(), wanted.ns())
                    .await
                    .map_err(internal)?;
                let el = stored
                    .as_deref()
                    .and_then(parse_element)
                    .unwrap_or_else(|| Element::new(wanted.name(), wanted.ns()));
                Ok(Some(Element::new("query", ns::PRIVATE).with_child(el)))
            }
            StanzaKind::Iq(IqType::Set) => {
                let max = self.im.config().private.max_bytes;
                let mut docs = Vec::with_capacity(children.len());
                for c in children {
                    let xml = String::from_utf8_lossy(&c.to_bytes()).into_owned();
                    if xml.len() > max {
                        return Err(err(Cond::NotAcceptable, "element too large"));
                    }
                    docs.push((c.name().to_owned(), c.ns().to_owned(), xml));
                }
                self.room_for(owner.domain(), user, &docs).await?;
                store
                    .set_private(owner.domain(), user, &docs)
                    .await
                    .map_err(internal)?;
                Ok(None)
            }
            _ => Err(StanzaError::new(Cond::BadRequest)),
        }
    }
}
