//! XEP-0030: Service Discovery — computed from what the enabled modules declare, so it never
//! advertises a feature nobody implements.

use std::sync::Arc;

use async_trait::async_trait;
use rookery_jid::{BareJid, Jid};
use rookery_proto::{ns, IqType, Stanza, StanzaError, StanzaErrorCondition, StanzaKind};
use rookery_xml::Element;

use crate::module::{Declaration, IqResult, IqTarget, Module};
use crate::router::Core;

/// Answers disco#info and disco#items for the server and for accounts.
pub struct Disco;

/// A disco#info `<feature var='…'/>` (XEP-0030 §3.1).
pub fn feature(var: &str) -> Element {
    Element::new("feature", ns::DISCO_INFO).with_attr("var", var)
}

/// A disco#info `<identity category='…' type='…' name='…'/>` (XEP-0030 §3.1).
pub fn identity(category: &str, kind: &str, name: Option<&str>) -> Element {
    let mut el = Element::new("identity", ns::DISCO_INFO)
        .with_attr("category", category)
        .with_attr("type", kind);
    if let Some(n) = name {
        el.set_attr("name", n);
    }
    el
}

#[async_trait]
impl Module for Disco {
    fn name(&self) -> &'static str {
        "disco"
    }

    fn declare(&self) -> Declaration {
        Declaration {
            iqs: vec![
                (IqTarget::Server, ns::DISCO_INFO, "query"),
                (IqTarget::Server, ns::DISCO_ITEMS, "query"),
                (IqTarget::Account, ns::DISCO_INFO, "query"),
                (IqTarget::Account, ns::DISCO_ITEMS, "query"),
            ],
            server_features: vec![ns::DISCO_INFO, ns::DISCO_ITEMS],
            account_features: vec![ns::DISCO_INFO, ns::DISCO_ITEMS],
            ..Declaration::default()
        }
    }

    async fn handle_iq(&self, core: &Arc<Core>, to: &BareJid, iq: &Stanza) -> IqResult {
        if iq.kind() != StanzaKind::Iq(IqType::Get) {
            return Err(StanzaError::new(StanzaErrorCondition::BadRequest));
        }
        let Some(query) = iq.payload() else {
            return Err(StanzaError::new(StanzaErrorCondition::BadRequest));
        };
        let from = iq.from().cloned().unwrap_or_else(|| to.clone().into());
        if query.attr("node").is_some() {
            // Nodes belong to modules (e.g. PEP nodes of an account).
            for m in core.modules() {
                if let Some(answer) = m.disco_node(core, to, &from, query).await {
                    return answer;
                }
            }
            return Err(StanzaError::new(StanzaErrorCondition::ItemNotFound));
        }
        let is_server = to.local().is_none();
        if !is_server && query.ns() == ns::DISCO_INFO && !trusted(core, to, &from).await {
            // XEP-0030 §8: an account's identities and features only for whom it shares
            // its presence with (no directory harvesting).
            return Err(StanzaError::new(StanzaErrorCondition::ServiceUnavailable));
        }
        let mut out = Element::new("query", query.ns());
        if query.ns() == ns::DISCO_INFO {
            if is_server {
                for id in core.identities() {
                    out.push_child(identity(id.category, id.kind, id.name.as_deref()));
                }
                for f in core.server_features() {
                    out.push_child(feature(f));
                }
                for form in core.server_info() {
                    out.push_child(form.clone());
                }
            } else {
                out.push_child(identity("account", "registered", None));
                for id in core.account_identities() {
                    out.push_child(identity(id.category, id.kind, id.name.as_deref()));
                }
                for f in core.account_features() {
                    out.push_child(feature(f));
                }
            }
        } else {
            if is_server {
                // Services (this host's and the server's) and connected components
                // (XEP-0114); disco to them is routed to them.
                for (d, name) in core.routed_items(to.domain()) {
                    let mut item = Element::new("item", ns::DISCO_ITEMS).with_attr("jid", d);
                    if let Some(n) = name {
                        item.set_attr("name", n);
                    }
                    out.push_child(item);
                }
            }
            for m in core.modules() {
                for item in m.disco_items(core, to, &from).await {
                    out.push_child(item);
                }
            }
        }
        Ok(Some(out))
    }
}

/// The answer to a disco#items request for an account that does not exist: an empty
/// result, as for one that has nothing to show (XEP-0030 §8 MUST: no directory harvesting);
/// `None` for any other request (answered `service-unavailable`).
pub fn items_of_nobody(iq: &Stanza) -> Option<Element> {
    let q = iq.payload().filter(|q| q.is("query", ns::DISCO_ITEMS))?;
    if iq.kind() != StanzaKind::Iq(IqType::Get) {
        return None;
    }
    let mut out = Element::new("query", ns::DISCO_ITEMS);
    if let Some(node) = q.attr("node") {
        out.set_attr("node", node);
    }
    Some(out)
}

/// Whether `from` may see what the server tells of the account `to` on its behalf: the
/// account itself, this server's own domains and services, and whom the account shares its
/// presence with (XEP-0030 §8).
async fn trusted(core: &Arc<Core>, to: &BareJid, from: &Jid) -> bool {
    let bare = from.to_bare();
    if &bare == to {
        return true;
    }
    if from.local().is_none()
        && (core.is_local_domain(from.domain()) || core.has_domain_route(from.domain()))
    {
        return true;
    }
    core.shares_presence(to, &bare).await
}
