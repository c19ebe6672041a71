//! The wire: `<pubsub/>` IQ payloads (XEP-0060 §5–§8, namespaces `pubsub` and `pubsub#owner`)
//! parsed into engine calls, and the engine's answers written back. Shared by the service
//! and PEP; errors leave through [`PubsubError::to_stanza_error`] only.
//!
//! Parse failures follow design.md point 5: a payload that is not ours never gets here (the
//! router dispatches by namespace and name); one that is ours but malformed is `bad-request`.

use rookery_jid::{BareJid, Jid};
use rookery_proto::{IqType, Stanza, StanzaError, StanzaKind};
use rookery_xml::Element;

use crate::engine::{
    items_list, Engine, ItemsQuery, PublishRequest, SubscriptionChange, SubscriptionInfo,
};
use crate::error::PubsubError;
use crate::form::Form;
use crate::model::{Affiliation, SubOptions, SubState};
use crate::ns;

/// The outcome of a pubsub IQ: the result payload and stanzas to send after the result.
#[derive(Debug, Default)]
pub struct Reply {
    /// The `<pubsub/>` child of the result, if any.
    pub payload: Option<Element>,
    /// Messages that must follow the result (the last item on subscription, §6.1.7).
    pub after: Vec<Stanza>,
}

impl Reply {
    fn empty() -> Reply {
        Reply::default()
    }

    fn with(payload: Element) -> Reply {
        Reply {
            payload: Some(payload),
            after: Vec::new(),
        }
    }
}

type Result<T> = std::result::Result<T, PubsubError>;

fn bad(what: &'static str) -> PubsubError {
    PubsubError::BadRequest(what)
}

fn parse_jid(s: Option<&str>) -> Result<Option<Jid>> {
    match s {
        None => Ok(None),
        Some(s) => Jid::parse(s).map(Some).map_err(|_| PubsubError::InvalidJid),
    }
}

fn subscription_el(ns_: &str, s: &SubscriptionInfo, with_node: bool) -> Element {
    let mut el = Element::new("subscription", ns_)
        .with_attr("jid", s.jid.as_str())
        .with_attr("subscription", s.state.as_str())
        .with_attr("subid", s.subid.clone());
    if with_node {
        el.set_attr("node", s.node.clone());
    }
    el
}

/// Handles a pubsub IQ get/set from `from` to service `svc`.
pub async fn handle(
    engine: &Engine,
    svc: &BareJid,
    from: &Jid,
    iq: &Stanza,
) -> std::result::Result<Reply, StanzaError> {
    let Some(pubsub) = iq.payload() else {
        return Err(bad("no payload").into());
    };
    let set = match iq.kind() {
        StanzaKind::Iq(IqType::Set) => true,
        StanzaKind::Iq(IqType::Get) => false,
        _ => return Err(bad("not a request").into()),
    };
    let r = if pubsub.is("pubsub", ns::PUBSUB) {
        entity(engine, svc, from, pubsub, set).await
    } else if pubsub.is("pubsub", ns::OWNER) {
        owner(engine, svc, from, pubsub, set).await
    } else {
        Err(bad("not a pubsub request"))
    };
    r.map_err(StanzaError::from)
}

/// The single action child, with the optional companion (`configure` after `create`,
/// `options` after `subscribe`, `publish-options` after `publish`).
fn action(pubsub: &Element) -> Result<(&Element, Option<&Element>)> {
    let mut it = pubsub.children();
    let first = it.next().ok_or(bad("empty pubsub element"))?;
    let second = it.next();
    if it.next().is_some() {
        return Err(bad("too many pubsub children"));
    }
    Ok((first, second))
}

async fn entity(
    engine: &Engine,
    svc: &BareJid,
    from: &Jid,
    pubsub: &Element,
    set: bool,
) -> Result<Reply> {
    let (act, extra) = action(pubsub)?;
    let node = act.attr("node");
    let out = |child: Element| Element::new("pubsub", ns::PUBSUB).with_child(child);
    match (set, act.name(), extra.map(Element::name)) {
        (false, "items", _) => {
            let rsm = match extra_el(pubsub) {
                None => None,
                Some(set) if set.is("set", rookery_proto::ns::RSM) => {
                    Some(rookery_proto::rsm::parse(set).map_err(PubsubError::Rsm)?)
                }
                Some(_) => return Err(bad("unexpected element with items")),
            };
            let node = node.ok_or(PubsubError::NodeIdRequired)?;
            let max = match act.attr("max_items") {
                Some(m) => Some(m.trim().parse::<u64>().map_err(|_| bad("max_items"))?),
                None => None,
            };
            let ids: Vec<String> = act
                .children()
                .filter(|c| c.is("item", ns::PUBSUB))
                .filter_map(|c| c.attr("id").map(str::to_string))
                .collect();
            let q = ItemsQuery {
                max,
                ids,
                subid: act.attr("subid").map(str::to_string),
                rsm,
            };
            let page = engine.items(svc, from, node, &q).await?;
            // Oldest first, as published.
            let items: Vec<_> = page.items.iter().rev().cloned().collect();
            let mut answer = out(items_list(ns::PUBSUB, node, &items, true));
            // §6.5.4: a page that is not all that was asked says so; an RSM request always
            // gets its <set/>.
            if q.rsm.is_some() || !page.complete {
                answer.push_child(page.result_set());
            }
            Ok(Reply::with(answer))
        }
        (false, "subscriptions", None) => {
            let subs = engine.subscriptions_of(svc, from, node).await?;
            let mut list = Element::new("subscriptions", ns::PUBSUB);
            if let Some(n) = node {
                list.set_attr("node", n);
            }
            for s in &subs {
                list.push_child(subscription_el(ns::PUBSUB, s, true));
            }
            Ok(Reply::with(out(list)))
        }
        (false, "affiliations", None) => {
            let affs = engine.affiliations_of(svc, from, node).await?;
            let mut list = Element::new("affiliations", ns::PUBSUB);
            if let Some(n) = node {
                list.set_attr("node", n);
            }
            for (n, a) in affs {
                list.push_child(
                    Element::new("affiliation", ns::PUBSUB)
                        .with_attr("node", n)
                        .with_attr("affiliation", a.as_str()),
                );
            }
            Ok(Reply::with(out(list)))
        }
        (false, "options", None) => {
            let node = node.ok_or(PubsubError::NodeIdRequired)?;
            let jid = parse_jid(act.attr("jid"))?;
            let (jid, subid, opts) = engine
                .options(svc, from, node, jid.as_ref(), act.attr("subid"))
                .await?;
            let el = Element::new("options", ns::PUBSUB)
                .with_attr("node", node)
                .with_attr("jid", jid.as_str())
                .with_attr("subid", subid)
                .with_child(opts.to_form("form").to_element());
            Ok(Reply::with(out(el)))
        }
        (false, "default", None) => {
            // §6.4: default subscription options.
            let mut el = Element::new("default", ns::PUBSUB);
            if let Some(n) = node {
                el.set_attr("node", n);
            }
            el.push_child(SubOptions::default().to_form("form").to_element());
            Ok(Reply::with(out(el)))
        }
        (true, "create", _) => {
            let config = match extra_el(pubsub) {
                None => None,
                // §8.1.3: the node is named by `<create/>` alone.
                Some(c) if c.is("configure", ns::PUBSUB) && c.attr("node").is_some() => {
                    return Err(bad("configure after create has a node"))
                }
                Some(c) if c.is("configure", ns::PUBSUB) => Form::child_of(c),
                Some(_) => return Err(bad("unexpected element after create")),
            };
            let name = engine.create(svc, from, node, config.as_ref()).await?;
            if node.is_none() || node == Some("") {
                // §8.1.2: the instant node's id.
                return Ok(Reply::with(out(
                    Element::new("create", ns::PUBSUB).with_attr("node", name)
                )));
            }
            Ok(Reply::empty())
        }
        (true, "subscribe", extra) => {
            let node = node.ok_or(PubsubError::NodeIdRequired)?;
            let jid = parse_jid(act.attr("jid"))?.ok_or(PubsubError::InvalidJid)?;
            let options = match extra {
                None => None,
                Some("options") => Some(
                    extra_el(pubsub)
                        .and_then(Form::child_of)
                        .ok_or(PubsubError::InvalidOptions)?,
                ),
                Some(_) => return Err(bad("unexpected element after subscribe")),
            };
            let o = engine
                .subscribe(svc, from, node, &jid, options.as_ref())
                .await?;
            Ok(Reply {
                payload: Some(out(subscription_el(ns::PUBSUB, &o.subscription, true))),
                after: o.last_item.into_iter().collect(),
            })
        }
        (true, "unsubscribe", None) => {
            let node = node.ok_or(PubsubError::NodeIdRequired)?;
            let jid = parse_jid(act.attr("jid"))?.ok_or(PubsubError::InvalidJid)?;
            engine
                .unsubscribe(svc, from, node, &jid, act.attr("subid"))
                .await?;
            Ok(Reply::empty())
        }
        (true, "options", None) => {
            let node = node.ok_or(PubsubError::NodeIdRequired)?;
            let jid = parse_jid(act.attr("jid"))?;
            let form = Form::child_of(act).ok_or(PubsubError::InvalidOptions)?;
            engine
                .set_options(svc, from, node, jid.as_ref(), act.attr("subid"), &form)
                .await?;
            Ok(Reply::empty())
        }
        (true, "publish", extra) => {
            let options = match extra {
                None => None,
                Some("publish-options") => extra_el(pubsub).and_then(Form::child_of),
                Some(_) => return Err(bad("unexpected element after publish")),
            };
            let mut items = act.children().filter(|c| c.is("item", ns::PUBSUB));
            let item = items.next();
            if items.next().is_some() {
                // Batch publishing was removed from XEP-0060.
                return Err(bad("one item per publish"));
            }
            let payload = match item {
                Some(i) => {
                    let mut p = i.children();
                    let first = p.next().cloned();
                    if p.next().is_some() || (first.is_none() && !i.text().trim().is_empty()) {
                        return Err(PubsubError::InvalidPayload);
                    }
                    first
                }
                None => None,
            };
            let id = engine
                .publish(
                    svc,
                    from,
                    PublishRequest {
                        node: node.map(str::to_string),
                        has_item: item.is_some(),
                        item_id: item.and_then(|i| i.attr("id")).map(str::to_string),
                        payload,
                        options,
                    },
                )
                .await?;
            let node = node.unwrap_or_default();
            Ok(Reply::with(out(Element::new("publish", ns::PUBSUB)
                .with_attr("node", node)
                .with_child(
                    Element::new("item", ns::PUBSUB).with_attr("id", id),
                ))))
        }
        (true, "retract", None) => {
            let notify = match act.attr("notify") {
                None => None,
                Some(v) => Some(crate::form::parse_bool(v).ok_or(bad("notify"))?),
            };
            let id = act
                .children()
                .find(|c| c.is("item", ns::PUBSUB))
                .and_then(|i| i.attr("id"));
            engine.retract(svc, from, node, id, notify).await?;
            Ok(Reply::empty())
        }
        (_, name, _) => Err(unsupported(name, set)),
    }
}

fn extra_el(pubsub: &Element) -> Option<&Element> {
    pubsub.children().nth(1)
}

/// A known action with the wrong IQ type is `bad-request`; an unknown one, `unsupported`.
fn unsupported(name: &str, set: bool) -> PubsubError {
    match (name, set) {
        ("items" | "subscriptions" | "affiliations" | "default", true)
        | ("create" | "subscribe" | "unsubscribe" | "publish" | "retract", false) => {
            bad("wrong iq type for this request")
        }
        ("options", _) => bad("unexpected element with options"),
        _ => PubsubError::BadRequest("unknown pubsub request"),
    }
}

async fn owner(
    engine: &Engine,
    svc: &BareJid,
    from: &Jid,
    pubsub: &Element,
    set: bool,
) -> Result<Reply> {
    let (act, extra) = action(pubsub)?;
    if extra.is_some() {
        return Err(bad("one request per pubsub#owner element"));
    }
    let node = act.attr("node");
    let out = |child: Element| Element::new("pubsub", ns::OWNER).with_child(child);
    match (set, act.name()) {
        (false, "configure") => {
            let config = engine.configuration(svc, from, node).await?;
            let mut el = Element::new("configure", ns::OWNER)
                .with_child(config.to_form("form").to_element());
            if let Some(n) = node {
                el.set_attr("node", n);
            }
            Ok(Reply::with(out(el)))
        }
        (true, "configure") => {
            let form = Form::child_of(act).ok_or(bad("configure without a data form"))?;
            engine.configure(svc, from, node, &form).await?;
            Ok(Reply::empty())
        }
        (false, "default") => Ok(Reply::with(out(Element::new("default", ns::OWNER)
            .with_child(engine.default_config().to_form("form").to_element())))),
        (true, "delete") => {
            let redirect = act
                .children()
                .find(|c| c.is("redirect", ns::OWNER))
                .and_then(|r| r.attr("uri"));
            engine.delete(svc, from, node, redirect).await?;
            Ok(Reply::empty())
        }
        (true, "purge") => {
            engine.purge(svc, from, node).await?;
            Ok(Reply::empty())
        }
        (false, "subscriptions") => {
            let subs = engine.node_subscriptions(svc, from, node).await?;
            let mut list = Element::new("subscriptions", ns::OWNER)
                .with_attr("node", node.unwrap_or_default());
            for s in &subs {
                list.push_child(subscription_el(ns::OWNER, s, false));
            }
            Ok(Reply::with(out(list)))
        }
        (true, "subscriptions") => {
            let mut changes = Vec::new();
            for c in act.children().filter(|c| c.is("subscription", ns::OWNER)) {
                let jid = parse_jid(c.attr("jid"))?.ok_or(bad("subscription without jid"))?;
                let state = match c.attr("subscription") {
                    Some("none") => None,
                    Some(s) => Some(SubState::parse(s).ok_or(bad("subscription state"))?),
                    // §8.8.2.1: without the attribute the state "MUST NOT be changed".
                    None => continue,
                };
                changes.push(SubscriptionChange {
                    jid,
                    state,
                    subid: c.attr("subid").map(str::to_string),
                });
            }
            engine
                .set_node_subscriptions(svc, from, node, &changes)
                .await?;
            Ok(Reply::empty())
        }
        (false, "affiliations") => {
            let affs = engine.node_affiliations(svc, from, node).await?;
            let mut list =
                Element::new("affiliations", ns::OWNER).with_attr("node", node.unwrap_or_default());
            for (j, a) in affs {
                list.push_child(
                    Element::new("affiliation", ns::OWNER)
                        .with_attr("jid", j.as_str())
                        .with_attr("affiliation", a.as_str()),
                );
            }
            Ok(Reply::with(out(list)))
        }
        (true, "affiliations") => {
            let mut changes = Vec::new();
            for c in act.children().filter(|c| c.is("affiliation", ns::OWNER)) {
                let jid = parse_jid(c.attr("jid"))?.ok_or(bad("affiliation without jid"))?;
                let a = c
                    .attr("affiliation")
                    .and_then(Affiliation::parse)
                    .ok_or(bad("affiliation value"))?;
                changes.push((jid.to_bare(), a));
            }
            engine
                .set_node_affiliations(svc, from, node, &changes)
                .await?;
            Ok(Reply::empty())
        }
        (false, "delete" | "purge") | (true, "default") => {
            Err(bad("wrong iq type for this request"))
        }
        _ => Err(bad("unknown pubsub#owner request")),
    }
}

/// Reads an owner's answer to a subscription approval request (§8.6.2): a message whose
/// submitted `pubsub#subscribe_authorization` form names node, subscriber and decision.
/// `Ok(false)`: not such an answer. A cancelled form is taken and changes nothing (§8.6:
/// "the subscription request MUST remain in the pending state").
pub async fn approval(
    engine: &Engine,
    svc: &BareJid,
    from: &Jid,
    message: &Stanza,
) -> Result<bool> {
    let Some(form) = message.element().children().find_map(Form::parse) else {
        return Ok(false);
    };
    match (form.kind.as_str(), form.form_type()) {
        ("submit", Some(ns::SUBSCRIBE_AUTHORIZATION)) => {}
        ("cancel", None | Some(ns::SUBSCRIBE_AUTHORIZATION)) => return Ok(true),
        _ => return Ok(false),
    }
    let node = form
        .value("pubsub#node")
        .ok_or(bad("approval without node"))?;
    let subscriber = parse_jid(form.value("pubsub#subscriber_jid"))?
        .ok_or(bad("approval without subscriber"))?;
    let allow = form
        .value("pubsub#allow")
        .and_then(crate::form::parse_bool)
        .ok_or(bad("approval without decision"))?;
    engine
        .authorize(
            svc,
            from,
            node,
            &subscriber,
            form.value("pubsub#subid"),
            allow,
        )
        .await?;
    Ok(true)
}
