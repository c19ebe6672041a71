//! Answering an archive query (XEP-0313 §4) on any archive: an account's (the [`crate::Mam`]
//! module) or a room's (the MUC service), so both page, filter and fail the same way.

use std::sync::Arc;

use rookery_core::Core;
use rookery_jid::BareJid;
use rookery_proto::{IqType, Stanza, StanzaKind};
use rookery_store::mam::{Archived, Filter, Owner};
use rookery_store::page::PageLimit;
use rookery_store::Store;
use rookery_xml::Element;

use crate::error::MamError;
use crate::query::{self, Anchor};

/// Answers the query IQ `iq` on `owner`'s archive, whose JID is `archive`: the search form for
/// a `get`; for a `set`, routes the result messages to the requester (before the IQ result,
/// as §4.2 orders) and returns the `<fin/>` for the result. Pages are at most `page` (a
/// smaller RSM `max` makes them smaller); one its bytes end early is an ordinary page whose
/// `<fin/>` is not `complete`, so the client asks for the next.
/// A `<metadata/>` get (§7, part of `#extended`) is answered with the archive's first and
/// last message.
pub async fn answer(
    core: &Arc<Core>,
    store: &Store,
    owner: &Owner,
    archive: &BareJid,
    iq: &Stanza,
    page: PageLimit,
) -> Result<Element, MamError> {
    answer_with(core, store, owner, archive, iq, page, |r| {
        Stanza::from_serialized(r.stanza.as_bytes()).map(Stanza::into_element)
    })
    .await
}

/// [`answer`] for an archive whose rows are not stored messages: `render` makes the message
/// each result forwards (a pubsub node's history holds item payloads, which its service turns
/// into event notifications); a row it cannot render is logged and skipped.
pub async fn answer_with(
    core: &Arc<Core>,
    store: &Store,
    owner: &Owner,
    archive: &BareJid,
    iq: &Stanza,
    page: PageLimit,
    render: impl Fn(&Archived) -> Option<Element>,
) -> Result<Element, MamError> {
    let from = iq.from().ok_or(MamError::Forbidden)?;
    let payload = iq
        .payload()
        .ok_or_else(|| MamError::BadRequest("no query".into()))?;
    if payload.is("metadata", crate::ns::MAM) {
        if iq.kind() != StanzaKind::Iq(IqType::Get) {
            return Err(MamError::BadRequest("metadata is read with a get".into()));
        }
        return metadata(store, owner).await;
    }
    if iq.kind() == StanzaKind::Iq(IqType::Get) {
        return Ok(query::fields());
    }
    let q = query::parse(payload, page.max)?;
    let mam = store.mam();
    let position =
        |id: String| async move { mam.position(owner, &id).await?.ok_or(MamError::NotFound) };
    let mut filter = Filter {
        // An account's archive keeps the other party's bare JID, a room's the occupant JID, a
        // node's history the publisher's bare JID.
        with: q.with.as_ref().map(|j| match owner {
            Owner::Account { .. } | Owner::Node { .. } => j.bare_str().to_string(),
            Owner::Room { .. } => j.as_str().to_string(),
        }),
        start: q.start,
        end: q.end,
        ids: q.ids.clone(),
        stanza_contains: match (owner, &q.with) {
            (Owner::Account { .. }, Some(with)) if with.resource().is_some() => from_or_to(with),
            _ => Vec::new(),
        },
        ..Filter::default()
    };
    if !q.ids.is_empty() {
        // §4.1.3: every id asked for must be in the archive, whatever else filters the page.
        let asked: std::collections::BTreeSet<&str> = q.ids.iter().map(String::as_str).collect();
        let only = Filter {
            ids: q.ids.clone(),
            ..Filter::default()
        };
        if mam.count(owner, &only).await? < asked.len() as u64 {
            return Err(MamError::NotFound);
        }
    }
    if let Some(id) = q.after_id.clone() {
        filter.after = Some(position(id).await?);
    }
    if let Some(id) = q.before_id.clone() {
        filter.before = Some(position(id).await?);
    }
    match q.anchor.clone() {
        Anchor::After(id) => {
            let p = position(id).await?;
            filter.after = Some(filter.after.map_or(p, |a| a.max(p)));
        }
        Anchor::Before(id) => {
            let p = position(id).await?;
            filter.before = Some(filter.before.map_or(p, |b| b.min(p)));
        }
        Anchor::First | Anchor::Last => {}
    }
    let limit = PageLimit { max: q.max, ..page };
    let read = mam.page(owner, &filter, limit, q.anchor.from_end()).await?;
    let (mut rows, complete) = (read.rows, !read.more);
    // `<fin/>` names the page's bounds in archive order; the results go in the order asked.
    let fin = query::fin(
        rows.first().map(|r| r.stanza_id.as_str()),
        rows.last().map(|r| r.stanza_id.as_str()),
        complete,
    );
    if q.flip {
        rows.reverse();
    }
    for r in &rows {
        let Some(m) = render(r) else {
            tracing::error!(archive = %archive, id = %r.stanza_id, "unreadable archived message");
            continue;
        };
        let el = query::result(archive, from, q.queryid.as_deref(), &r.stanza_id, r.ts, m);
        if let Ok(s) = Stanza::from_element(el) {
            core.route(s).await;
        }
    }
    Ok(fin)
}

/// A full JID `with` in an account's archive (§4.1.1: "MUST only return messages if they
/// match the supplied JID"; only a bare one matches all its resources): the message came
/// from it or went to it — its `from` or `to` attribute, as the archive serialized it.
fn from_or_to(with: &rookery_jid::Jid) -> Vec<String> {
    let mut value = Vec::new();
    rookery_xml::escape_into(&mut value, with.as_str(), true);
    let value = String::from_utf8_lossy(&value);
    vec![format!(" from=\"{value}\""), format!(" to=\"{value}\"")]
}

/// §7: the archive's first and last message (`<start/>`, `<end/>`), or nothing for an empty
/// archive.
async fn metadata(store: &Store, owner: &Owner) -> Result<Element, MamError> {
    let mam = store.mam();
    let mut out = Element::new("metadata", crate::ns::MAM);
    for (name, last) in [("start", false), ("end", true)] {
        if let Some((id, ts)) = mam.edge(owner, last).await? {
            out.push_child(
                Element::new(name, crate::ns::MAM)
                    .with_attr("id", id)
                    .with_attr("timestamp", rookery_proto::time::format_utc(ts)),
            );
        }
    }
    Ok(out)
}
