//! The pubsub service on its own domain (`pubsub.<domain>`, XEP-0060): a [`DomainRoute`] that
//! answers disco (§5.1–§5.5) and the pubsub IQs through the engine, takes the owners'
//! answers to subscription approval requests (§8.6), and serves each persistent node's items
//! as a message archive (XEP-0313 queries with a `node`, XEP-0442).

use std::sync::Arc;

use async_trait::async_trait;
use rookery_core::modules::disco::{feature, identity};
use rookery_core::{Core, DomainRoute, Undelivered};
use rookery_jid::{BareJid, Jid};
use rookery_proto::time::format_utc;
use rookery_proto::{
    ns as pns, IqType, MessageType, Stanza, StanzaError, StanzaErrorCondition, StanzaKind,
};
use rookery_store::mam::{Archived, Owner};
use rookery_store::page::PageLimit;
use rookery_store::Store;
use rookery_xml::Element;

use crate::broadcast::{message, CoreBroadcaster};
use crate::config::ServiceKind;
use crate::engine::{items_event, Engine, NodeMeta};
use crate::form::{Field, Form};
use crate::model::Item;
use crate::ns;

/// The `pubsub#` features a service of `kind` implements (XEP-0060 §10 registry), advertised
/// in disco#info and listed in docs/compliance.md (a test keeps them in step).
pub fn features(kind: ServiceKind) -> Vec<&'static str> {
    let mut v = vec![
        "access-authorize",
        "access-open",
        "access-presence",
        "access-roster",
        "access-whitelist",
        "config-node",
        "config-node-max",
        "create-and-configure",
        "create-nodes",
        "delete-items",
        "delete-nodes",
        "item-ids",
        "manage-subscriptions",
        "member-affiliation",
        "meta-data",
        "modify-affiliations",
        "multi-subscribe",
        "outcast-affiliation",
        "persistent-items",
        "publish",
        "publish-only-affiliation",
        "publish-options",
        "publisher-affiliation",
        "purge-nodes",
        "retract-items",
        "retrieve-affiliations",
        "retrieve-default",
        "retrieve-default-sub",
        "retrieve-items",
        "retrieve-subscriptions",
        // §6.5.4: items are paged with RSM (XEP-0059).
        "rsm",
        "subscribe",
        "subscription-notifications",
        "subscription-options",
    ];
    match kind {
        ServiceKind::Service => v.push("instant-nodes"),
        // `last-published` obliges its default to be `on_sub_and_presence` (§4.3), which only
        // PEP does: the service tracks nobody's presence. §9: the account's disco#info
        // names `pubsub-on-a-jid`.
        ServiceKind::Pep => v.extend([
            "auto-create",
            "auto-subscribe",
            "filtered-notifications",
            "last-published",
            "pubsub-on-a-jid",
        ]),
    }
    v.sort_unstable();
    v
}

/// The full feature URIs (`http://jabber.org/protocol/pubsub#…`), leaked once: disco
/// declarations take `&'static str`.
pub fn feature_uris(kind: ServiceKind) -> Vec<&'static str> {
    static SERVICE: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    static PEP: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    let cell = match kind {
        ServiceKind::Service => &SERVICE,
        ServiceKind::Pep => &PEP,
    };
    cell.get_or_init(|| {
        features(kind)
            .into_iter()
            .map(|f| &*Box::leak(format!("{}{f}", ns::FEATURE_PREFIX).into_boxed_str()))
            .collect()
    })
    .clone()
}

/// The meta-data form of a node (§5.4).
pub fn meta_form(meta: &NodeMeta) -> Form {
    let c = &meta.config;
    let mut f = Form::new("result", ns::META_DATA)
        .with(Field::new("pubsub#title", "text-single", c.title.clone()))
        .with(Field::new(
            "pubsub#description",
            "text-single",
            c.description.clone(),
        ))
        .with(Field::new(
            "pubsub#type",
            "text-single",
            c.payload_type.clone(),
        ))
        .with(Field::new(
            "pubsub#access_model",
            "list-single",
            c.access_model.as_str(),
        ))
        .with(Field::new(
            "pubsub#publish_model",
            "list-single",
            c.publish_model.as_str(),
        ))
        .with(Field::new(
            "pubsub#creation_date",
            "text-single",
            format_utc(meta.created_at),
        ))
        .with(Field::new(
            "pubsub#num_subscribers",
            "text-single",
            meta.num_subscribers.to_string(),
        ));
    f.push(Field {
        var: "pubsub#owner".into(),
        kind: Some("jid-multi"),
        values: meta.owners.iter().map(|j| j.as_str().to_string()).collect(),
        ..Field::default()
    });
    f.push(Field {
        var: "pubsub#publisher".into(),
        kind: Some("jid-multi"),
        values: meta
            .publishers
            .iter()
            .map(|j| j.as_str().to_string())
            .collect(),
        ..Field::default()
    });
    f
}

/// disco#info of a node (§5.3, §5.4): identity `pubsub/leaf`, the pubsub feature and the
/// meta-data form.
pub fn node_info(node: &str, meta: &NodeMeta) -> Element {
    Element::new("query", pns::DISCO_INFO)
        .with_attr("node", node)
        .with_child(identity("pubsub", "leaf", None))
        .with_child(feature(ns::PUBSUB))
        .with_child(meta_form(meta).to_element())
}

/// The pubsub service.
pub struct PubsubService {
    jid: BareJid,
    engine: Arc<Engine>,
    broadcaster: Arc<CoreBroadcaster>,
    /// The SQL store the nodes' histories are read from (XEP-0442), and the largest page.
    history: Option<(Store, PageLimit)>,
    /// The hosted domain whose service this is, if one host's (see [`DomainRoute::host`]).
    host: Option<String>,
}

impl std::fmt::Debug for PubsubService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubsubService")
            .field("jid", &self.jid)
            .finish_non_exhaustive()
    }
}

impl PubsubService {
    /// The service at `jid`, over `engine`, which must deliver through `broadcaster`.
    pub fn new(jid: BareJid, engine: Arc<Engine>, broadcaster: Arc<CoreBroadcaster>) -> Self {
        PubsubService {
            jid,
            engine,
            broadcaster,
            history: None,
            host: None,
        }
    }

    /// Makes it the service of the hosted domain `host` (virtual hosting: disco#items of
    /// that host alone lists it).
    #[must_use]
    pub fn for_host(mut self, host: &str) -> Self {
        self.host = Some(host.to_string());
        self
    }

    /// Serves each persistent node's items as a message archive (XEP-0313 queries with a
    /// `node`, XEP-0442) from `store`, in pages of at most `page`.
    #[must_use]
    pub fn with_history(mut self, store: Store, page: PageLimit) -> Self {
        self.history = Some((store, page));
        self
    }

    /// XEP-0442: a node's history, each item forwarded as the notification it was.
    async fn history(
        &self,
        core: &Arc<Core>,
        from: &Jid,
        iq: &Stanza,
    ) -> Result<Element, StanzaError> {
        let Some((store, page)) = &self.history else {
            return Err(StanzaError::new(StanzaErrorCondition::ServiceUnavailable));
        };
        let node = iq
            .payload()
            .and_then(|q| q.attr("node"))
            .filter(|n| !n.is_empty())
            .ok_or_else(|| StanzaError::new(StanzaErrorCondition::ServiceUnavailable))?
            .to_string();
        self.engine
            .check_reader(&self.jid, &node, Some(&from.to_bare()))
            .await?;
        let owner = Owner::Node {
            service: self.jid.to_string(),
            node: node.clone(),
        };
        let service = self.jid.as_str();
        let render = |r: &Archived| {
            let item = Item {
                id: r.stanza_id.clone(),
                publisher: r.with_jid.clone(),
                payload: crate::xml::parse(&r.stanza),
                seq: r.id,
                updated_at: r.ts,
            };
            let event = items_event(&node, std::slice::from_ref(&item), true);
            Some(message(service, "headline", &r.stanza_id, &event, &[]))
        };
        rookery_mam::serve::answer_with(core, store, &owner, &self.jid, iq, *page, render)
            .await
            .map_err(StanzaError::from)
    }

    /// Registers the service's domain with the core and connects its broadcaster.
    pub fn attach(self: &Arc<Self>, core: &Arc<Core>) {
        self.broadcaster.attach(core);
        core.register_domain(self.jid.domain(), self.clone());
    }

    /// The service's JID.
    pub fn jid(&self) -> &BareJid {
        &self.jid
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    async fn disco(&self, from: &Jid, query: &Element) -> Result<Element, StanzaError> {
        let node = query.attr("node").filter(|n| !n.is_empty());
        if query.ns() == pns::DISCO_INFO {
            match node {
                None => {
                    let mut q = Element::new("query", pns::DISCO_INFO)
                        .with_child(identity("pubsub", "service", Some("Publish-Subscribe")))
                        .with_child(feature(pns::DISCO_INFO))
                        .with_child(feature(pns::DISCO_ITEMS))
                        .with_child(feature(ns::PUBSUB));
                    for f in feature_uris(ServiceKind::Service) {
                        q.push_child(feature(f));
                    }
                    Ok(q)
                }
                Some(n) => {
                    let meta = self.engine.node_meta(&self.jid, from, n).await?;
                    let mut info = node_info(n, &meta);
                    if self.history.is_some() {
                        info.push_child(feature(rookery_mam::ns::MAM));
                    }
                    Ok(info)
                }
            }
        } else {
            let mut q = Element::new("query", pns::DISCO_ITEMS);
            match node {
                None => {
                    for (n, title) in self.engine.list_nodes(&self.jid, from).await? {
                        let mut item = Element::new("item", pns::DISCO_ITEMS)
                            .with_attr("jid", self.jid.as_str())
                            .with_attr("node", n);
                        if !title.is_empty() {
                            item.set_attr("name", title);
                        }
                        q.push_child(item);
                    }
                }
                Some(n) => {
                    q.set_attr("node", n);
                    for id in self.engine.item_ids(&self.jid, from, n).await? {
                        q.push_child(
                            Element::new("item", pns::DISCO_ITEMS)
                                .with_attr("jid", self.jid.as_str())
                                .with_attr("name", id),
                        );
                    }
                }
            }
            Ok(q)
        }
    }

    async fn iq(&self, core: &Arc<Core>, iq: Stanza) {
        let Some(from) = iq.from().cloned() else {
            return;
        };
        let Some(payload) = iq.payload() else { return };
        let is_get = iq.kind() == StanzaKind::Iq(IqType::Get);
        let result = if (payload.is("query", pns::DISCO_INFO)
            || payload.is("query", pns::DISCO_ITEMS))
            && is_get
        {
            self.disco(&from, payload)
                .await
                .map(|q| crate::wire::Reply {
                    payload: Some(q),
                    after: Vec::new(),
                })
        } else if payload.is("pubsub", ns::PUBSUB) || payload.is("pubsub", ns::OWNER) {
            crate::wire::handle(&self.engine, &self.jid, &from, &iq).await
        } else if payload.ns() == rookery_mam::ns::MAM
            && matches!(payload.name(), "query" | "metadata")
            && payload.attr("node").is_some()
        {
            self.history(core, &from, &iq)
                .await
                .map(|q| crate::wire::Reply {
                    payload: Some(q),
                    after: Vec::new(),
                })
        } else if payload.is("ping", pns::PING) {
            Ok(crate::wire::Reply::default())
        } else {
            Err(StanzaError::new(StanzaErrorCondition::ServiceUnavailable))
        };
        match result {
            Ok(reply) => {
                core.route(iq.iq_result(reply.payload)).await;
                for s in reply.after {
                    core.route(s).await;
                }
            }
            Err(e) => core.reply_error(&iq, e).await,
        }
    }
}

/// `stanza` bounced with `service-unavailable`.
fn unavailable(stanza: Stanza) -> Box<Undelivered> {
    Undelivered::new(
        stanza,
        StanzaError::new(StanzaErrorCondition::ServiceUnavailable),
    )
}

#[async_trait]
impl DomainRoute for PubsubService {
    async fn deliver(&self, stanza: Stanza) -> Result<(), Box<Undelivered>> {
        let Some(core) = self.broadcaster.core() else {
            return Err(unavailable(stanza));
        };
        if stanza
            .to()
            .is_some_and(|t| t.local().is_some() || t.is_full())
        {
            // Nodes are not addressed as JIDs here (§4.6.1 allows it; we do not).
            return match stanza.kind() {
                StanzaKind::Iq(IqType::Get | IqType::Set)
                | StanzaKind::Message(MessageType::Normal | MessageType::Chat) => {
                    Err(unavailable(stanza))
                }
                _ => Ok(()),
            };
        }
        match stanza.kind() {
            StanzaKind::Iq(IqType::Get | IqType::Set) => {
                self.iq(&core, stanza).await;
                Ok(())
            }
            StanzaKind::Message(MessageType::Normal) => {
                let Some(from) = stanza.from().cloned() else {
                    return Ok(());
                };
                match crate::wire::approval(&self.engine, &self.jid, &from, &stanza).await {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(unavailable(stanza)),
                    Err(e) => Err(Undelivered::new(stanza, e.into())),
                }
            }
            StanzaKind::Message(MessageType::Chat) => Err(unavailable(stanza)),
            _ => Ok(()),
        }
    }

    fn name(&self) -> Option<String> {
        Some("Publish-Subscribe".into())
    }

    fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    /// docs/compliance.md lists every XEP-0060 feature; what is marked `yes` is exactly what
    /// the service and PEP advertise.
    #[test]
    fn compliance_table_matches_advertised_features() {
        let doc = include_str!("../../../docs/compliance.md");
        let start = doc.find("### XEP-0060 features").unwrap();
        let mut service = Vec::new();
        let mut pep = Vec::new();
        for line in doc[start..]
            .lines()
            .skip_while(|l| !l.starts_with("|---"))
            .skip(1)
        {
            if !line.starts_with('|') {
                break;
            }
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            if cells[1] == "yes" {
                service.push(cells[0]);
            }
            if cells[2] == "yes" {
                pep.push(cells[0]);
            }
        }
        service.sort_unstable();
        pep.sort_unstable();
        assert_eq!(service, features(ServiceKind::Service));
        assert_eq!(pep, features(ServiceKind::Pep));
    }
}
