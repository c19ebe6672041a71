//! XEP-0160: Best Practices for Handling Offline Messages.
//!
//! A `normal` or `chat` message for a local account with no available resource of
//! non-negative priority (RFC 6121 §8.5.2.2.1) is stored, stamped with an XEP-0203 `<delay/>`
//! from the server, unless it carries nothing worth keeping (only chat states, or the XEP-0334
//! `<no-store/>` hint). It is committed before the router moves on, so it survives a
//! restart. Each account holds at most `im.offline.max_per_user` messages and
//! `im.offline.max_bytes_per_user` bytes of them; beyond that the sender gets
//! `service-unavailable`, as XEP-0160 §2 has a server that cannot store a message answer, with
//! a text saying the storage is full.
//!
//! Stored messages are delivered, oldest first, when a resource of the account sends initial
//! presence with a non-negative priority (or raises its priority from below zero), paced
//! into that session's queue, and deleted once the session is done with them: a receipt
//! queued behind each batch ([`rookery_core::Receipt`]) is let go when the client has
//! acknowledged the batch (XEP-0198), at once without stream management (the connection
//! has it), or when the session ended and routed again what it had not delivered — for a
//! message addressed to the account that means offline storage again, where it keeps its
//! first `<delay/>`. So a crash before the client's acknowledgement leaves the rows: they
//! are delivered again at the next login (at least once, which XEP-0160 allows; a copy routed
//! again keeps the archive's `<stanza-id/>` it had, `Core::reroute`). What remains is inherent in the
//! protocol: without XEP-0198, bytes written to a connection that dies before the client
//! reads them are lost and nobody can know. The server advertises the `msgoffline` disco
//! feature.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use dashmap::mapref::entry::Entry;
use rookery_core::{priority, Core, Declaration, Event, EventKind, Module, SessionHandle};
use rookery_jid::BareJid;
use rookery_proto::stanza::is_stanza_id_by;
use rookery_proto::{
    ns, MessageType, Stanza, StanzaError, StanzaErrorCondition as Cond, StanzaKind,
};
use rookery_store::offline::OfflineMessage;
use rookery_xml::CONTENT_NS;

use crate::blocking::blocks_sender;
use crate::presence::PACE_TIMEOUT;
use crate::roster::internal;
use crate::state::{BlockList, Im};
use rookery_proto::time::{delay, now_unix};

use crate::util::{err, parse_stanza};

/// Messages fetched from the store per delivery round.
const BATCH: u64 = 100;
/// The cluster note of a node that stored a message for an account (its bare JID): the
/// other nodes deliver it to the account's resources they hold ([`stored`]).
const STORED_TOPIC: &str = "offline-stored";

/// The offline-storage module (its disco feature; storing and delivery are called by the
/// delivery and presence modules).
pub struct Offline {
    im: Arc<Im>,
}

impl Offline {
    /// An offline module on the shared state.
    pub fn new(im: Arc<Im>) -> Self {
        Offline { im }
    }
}

/// Whether `message` is worth storing (XEP-0160 §3, XEP-0334 §4): `normal`/`chat` with
/// something other than chat states and processing hints, and no `<no-store/>` hint. A
/// `<store/>` hint stores a message that would otherwise be skipped.
pub fn qualifies(message: &Stanza) -> bool {
    if !matches!(
        message.kind(),
        StanzaKind::Message(MessageType::Normal | MessageType::Chat)
    ) {
        return false;
    }
    let el = message.element();
    if el.has_child("no-store", ns::HINTS) {
        return false;
    }
    if el.has_child("store", ns::HINTS) {
        return true;
    }
    el.children().any(|c| {
        c.ns() != ns::CHATSTATES
            && c.ns() != ns::HINTS
            && !(c.ns() == CONTENT_NS && c.name() == "thread")
    })
}

/// Whether `message` already carries a `<delay/>` from `domain`: it was stored here before
/// and comes back from a session that could not deliver it; its first stamp is the true one
/// (XEP-0203 §3: the time the message was first delayed).
fn stamped_by(message: &Stanza, domain: &str) -> bool {
    message
        .element()
        .children()
        .any(|c| c.is("delay", ns::DELAY) && c.attr("from") == Some(domain))
}

/// Stores `message` for `owner`. `Err` is the error for the sender: full, or a store failure.
pub async fn store(im: &Im, owner: &BareJid, message: &Stanza) -> Result<(), StanzaError> {
    let Some(user) = owner.local() else {
        return Err(StanzaError::new(Cond::ServiceUnavailable));
    };
    let mut m = message.clone();
    // XEP-0203: stamped by the owner's host (the server, as that virtual host).
    let host = owner.domain();
    if !stamped_by(&m, host) {
        m.push_payload(delay(host, now_unix(), Some("Offline Storage")));
    }
    let xml = String::from_utf8_lossy(&m.to_bytes()).into_owned();
    let _g = im.lock(owner).await;
    let stored = im
        .store()
        .offline()
        .push(owner.domain(), user, &xml, im.config().offline.cap())
        .await
        .map_err(internal)?;
    if stored {
        rookery_metrics::get().offline_stored();
        Ok(())
    } else {
        Err(err(
            Cond::ServiceUnavailable,
            "the recipient's offline message storage is full; the message was not stored",
        ))
    }
}

/// Delivers the stored messages of the session's account to `session` (paced) and deletes
/// them once the session has them for good: behind each batch goes a receipt
/// ([`SessionHandle::receipt`]), and the batch's rows are deleted when the session lets it
/// go — the client acknowledged them (XEP-0198), or without stream management they were
/// handed to its connection, or the session ended and routed again what it had not
/// delivered (into offline storage again: new rows). A crash before that leaves the rows,
/// delivered again at the next login. Runs outside the session's own task.
///
/// One delivery per account at a time, until its rows are deleted. A request that comes
/// meanwhile — another resource coming up, or a message committed to storage after this
/// delivery's last read ([`stored`]) — is remembered, and once the current delivery is done
/// the store is read again for the session that asked last: a row is never left behind by a
/// delivery that read the store a moment too early.
///
/// A message whose sender the account has blocked since it was stored is deleted without
/// being delivered: XEP-0191 §3.3 says the server MUST NOT deliver any stanza from a blocked
/// JID, and had the block existed when it arrived the message would have been refused, not
/// stored. Keeping it for a later unblock would make the block list decide what an unblock
/// brings back, which the spec does not ask for. `blocked` is the account's live list, so a
/// block made during the delivery applies to the rest of it.
pub async fn deliver(im: &Im, session: &SessionHandle, blocked: &BlockList) {
    let owner = session.jid().to_bare();
    match im.offline_delivering.entry(owner.clone()) {
        Entry::Occupied(mut asked) => {
            asked.insert(Some(session.clone()));
            return;
        }
        Entry::Vacant(free) => {
            free.insert(None);
        }
    }
    let mut session = session.clone();
    loop {
        deliver_once(im, &owner, &session, blocked).await;
        let Entry::Occupied(mut asked) = im.offline_delivering.entry(owner.clone()) else {
            return;
        };
        match asked.get_mut().take() {
            Some(next) => session = next,
            None => {
                asked.remove();
                return;
            }
        }
    }
}

/// One delivery of what `owner` has stored to `session`, waiting until its rows are deleted
/// (see [`deliver`]).
async fn deliver_once(im: &Im, owner: &BareJid, session: &SessionHandle, blocked: &BlockList) {
    let Some(user) = owner.local() else { return };
    let store = im.store().offline();
    // Each batch's row ids, with the receipt its deletion waits for (`None`: at once).
    let mut delivered = Vec::new();
    let mut after = 0;
    while let Some(batch) = next_batch(im, owner, &mut after).await {
        let mut done = Vec::with_capacity(batch.len());
        let mut ok = true;
        for m in &batch {
            match parse_stanza(&m.stanza) {
                Some(s) if blocks_sender(blocked, &s) => {
                    tracing::debug!(id = m.id, "dropping an offline message from a blocked JID");
                }
                Some(s) => {
                    if !session
                        .send_paced(Bytes::from(s.to_bytes()), PACE_TIMEOUT)
                        .await
                    {
                        ok = false;
                        break;
                    }
                    rookery_metrics::get().offline_delivered(1);
                }
                None => tracing::warn!(id = m.id, "dropping unparsable offline message"),
            }
            done.push(m.id);
        }
        delivered.push((done, session.receipt()));
        if !ok {
            break;
        }
    }
    for (ids, receipt) in delivered {
        if let Some(receipt) = receipt {
            // Let go (never sent): whichever way the session is done with them.
            let _ = receipt.await;
        }
        if let Err(e) = store.delete(owner.domain(), user, &ids).await {
            tracing::error!(error = %e, "deleting delivered offline messages failed");
        }
    }
}

/// Delivers `session`'s stored messages from a task of its own (the session sent initial
/// presence, raised its priority, or a message was stored while it was coming up).
pub(crate) fn deliver_soon(im: &Arc<Im>, core: &Arc<Core>, session: SessionHandle) {
    if !im.config().offline.enabled {
        return;
    }
    let (im, core) = (im.clone(), core.clone());
    tokio::spawn(async move {
        if let Ok(blocked) = im.blocklist(&core, &session.jid().to_bare()).await {
            deliver(&im, &session, &blocked).await;
        }
    });
}

/// After a message for `owner` was committed to storage because no resource could take it:
/// one may have become available meanwhile — after the router looked, before the commit —
/// and read the store too early, so the message would wait for its next login. A resource
/// of this node that can take messages now gets a delivery (or the one running reads the
/// store again, [`deliver`]); in a cluster the other nodes are told (`OFFLINE_TOPIC`),
/// whose resources this node's registry may not show yet, and do the same for theirs.
pub(crate) fn stored(im: &Arc<Im>, core: &Arc<Core>, owner: &BareJid) {
    deliver_to_local(im, core, owner);
    core.tell_peers(STORED_TOPIC, || owner.to_string());
}

/// Starts a delivery of `owner`'s stored messages to its highest-priority resource of this
/// node that can take messages (priority ≥ 0), if it has one.
fn deliver_to_local(im: &Arc<Im>, core: &Arc<Core>, owner: &BareJid) {
    let top = core
        .sessions_of(owner)
        .into_iter()
        .filter(|(h, _)| !h.is_remote())
        .filter_map(|(h, p)| p.filter(|p| *p >= 0).map(|p| (h, p)))
        .max_by_key(|(_, p)| *p);
    if let Some((session, _)) = top {
        deliver_soon(im, core, session);
    }
}

/// The next batch of `owner`'s stored messages after the row `after`, which moves past it;
/// `None` when there are no more (or they cannot be read: logged).
async fn next_batch(im: &Im, owner: &BareJid, after: &mut i64) -> Option<Vec<OfflineMessage>> {
    let user = owner.local()?;
    match im
        .store()
        .offline()
        .list(owner.domain(), user, *after, BATCH)
        .await
    {
        Ok(batch) => {
            *after = batch.last()?.id;
            Some(batch)
        }
        Err(e) => {
            tracing::error!(error = %e, "loading offline messages failed");
            None
        }
    }
}

/// Deletes the stored messages of `owner` that its archive holds, for a session bound with
/// XEP-0386 Bind2, whose client reads what it missed from the archive (§4.2: the server
/// clears the offline messages "as they will be provided by MAM"; delivered too, they would
/// come twice). A message is in the archive when it carries a `<stanza-id/>` in the account's
/// name: the archive stamped it before it was stored. The others — archiving off, or the
/// account's preferences keep that contact out — stay and are delivered at initial presence
/// as before: clearing them would lose them. The archive's queued rows are committed first
/// ([`Core::settle`]), so no message is left only in a batch in memory.
async fn clear_archived(im: &Im, core: &Core, owner: &BareJid) {
    let Some(user) = owner.local() else { return };
    core.settle().await;
    let store = im.store().offline();
    let account = owner.to_string();
    let mut after = 0;
    while let Some(batch) = next_batch(im, owner, &mut after).await {
        let archived: Vec<i64> = batch
            .iter()
            .filter(|m| {
                parse_stanza(&m.stanza)
                    .is_some_and(|s| s.element().children().any(|c| is_stanza_id_by(c, &account)))
            })
            .map(|m| m.id)
            .collect();
        if archived.is_empty() {
            continue;
        }
        match store.delete(owner.domain(), user, &archived).await {
            Ok(()) => tracing::debug!(
                count = archived.len(),
                "offline messages the archive holds cleared for a Bind2 session"
            ),
            Err(e) => {
                tracing::error!(error = %e, "clearing archived offline messages failed");
                return;
            }
        }
    }
}

#[async_trait]
impl Module for Offline {
    fn name(&self) -> &'static str {
        "offline"
    }

    fn declare(&self) -> Declaration {
        Declaration {
            server_features: vec![ns::MSGOFFLINE],
            events: vec![
                (EventKind::BoundFromArchive, priority::DEFAULT),
                (EventKind::ClusterNote, priority::DEFAULT),
            ],
            ..Declaration::default()
        }
    }

    async fn event(&self, core: &Arc<Core>, event: &Event) {
        match event {
            Event::BoundFromArchive(jid) => clear_archived(&self.im, core, &jid.to_bare()).await,
            Event::ClusterNote { topic, body } if topic == STORED_TOPIC => {
                if let Ok(owner) = BareJid::parse(body) {
                    deliver_to_local(&self.im, core, &owner);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn msg(xml: &str) -> Stanza {
        parse_stanza(xml).unwrap()
    }

    /// A store in memory with the account bob@localhost.
    async fn store_with_bob() -> rookery_store::Store {
        use rookery_store::{Credentials, Store};

        let db = Store::open("sqlite::memory:").await.unwrap();
        let creds = Credentials::derive("pencil", 64).unwrap();
        db.accounts()
            .create("localhost", "bob", &creds)
            .await
            .unwrap();
        db
    }

    #[tokio::test]
    async fn a_message_stored_again_keeps_its_first_stamp() {
        let im = Im::new(crate::ImConfig::default(), store_with_bob().await);
        let bob = BareJid::parse("bob@localhost").unwrap();
        let first = msg(
            "<message from='a@localhost/r' to='bob@localhost' type='chat'>\
                         <body>hi</body></message>",
        );
        store(&im, &bob, &first).await.unwrap();
        let listed = im.store().offline().list("localhost", "bob", 0, 10).await;
        let once = parse_stanza(&listed.unwrap()[0].stanza).unwrap();
        // Delivered, not acknowledged, routed back into storage.
        store(&im, &bob, &once).await.unwrap();
        let all = im
            .store()
            .offline()
            .list("localhost", "bob", 0, 10)
            .await
            .unwrap();
        let again = parse_stanza(&all[1].stanza).unwrap();
        let delays: Vec<_> = again
            .element()
            .children()
            .filter(|c| c.is("delay", ns::DELAY))
            .collect();
        assert_eq!(delays.len(), 1, "{}", all[1].stanza);
        assert_eq!(again.element().to_string(), once.element().to_string());
    }

    /// An account with one stored message, an `Im` and a `Core` around it, and bob's session
    /// `bob@localhost/r` bound (not yet available).
    async fn bob_with_a_message() -> (
        Arc<Im>,
        Arc<Core>,
        SessionHandle,
        rookery_core::session::SessionEnd,
    ) {
        use rookery_core::{CoreBuilder, CoreConfig, MemoryAccounts};

        let db = store_with_bob().await;
        let core = CoreBuilder::new(CoreConfig::default(), Arc::new(MemoryAccounts::new()))
            .build()
            .unwrap();
        let im = Arc::new(Im::new(crate::ImConfig::default(), db));
        let bob = BareJid::parse("bob@localhost").unwrap();
        store(
            &im,
            &bob,
            &msg("<message to='bob@localhost' type='chat'><body>one</body></message>"),
        )
        .await
        .unwrap();
        let full = rookery_jid::Jid::parse("bob@localhost/r").unwrap();
        let (h, end) = SessionHandle::new(core.next_session_id(), full, 64);
        core.bind(h.clone()).await;
        (im, core, h, end)
    }

    /// The next stanza written to the session, releasing the receipts before it; `None` when
    /// nothing comes within a second.
    async fn next_body(end: &mut rookery_core::session::SessionEnd) -> Option<String> {
        use rookery_core::Outbound;
        loop {
            let item = tokio::time::timeout(std::time::Duration::from_secs(1), end.rx.recv())
                .await
                .ok()??;
            if let Outbound::Bytes(b) = item {
                let s = parse_stanza(std::str::from_utf8(&b).unwrap()).unwrap();
                return s.element().child_text("body", CONTENT_NS);
            }
        }
    }

    #[tokio::test]
    async fn a_message_stored_during_a_delivery_is_delivered_by_it() {
        let (im, _core, h, mut end) = bob_with_a_message().await;
        let bob = h.jid().to_bare();
        let blocked = BlockList::default();
        let first = {
            let (im, h) = (im.clone(), h.clone());
            tokio::spawn(async move { deliver(&im, &h, &BlockList::default()).await })
        };
        assert_eq!(next_body(&mut end).await.as_deref(), Some("one"));
        // The delivery has read the store and waits for its receipt: a message committed now
        // is past its last read, and the request that follows joins it.
        let two = msg("<message to='bob@localhost' type='chat'><body>two</body></message>");
        store(&im, &bob, &two).await.unwrap();
        deliver(&im, &h, &blocked).await;
        assert_eq!(next_body(&mut end).await.as_deref(), Some("two"));
        assert_eq!(next_body(&mut end).await, None);
        first.await.unwrap();
        let left = im.store().offline().list("localhost", "bob", 0, 10).await;
        assert!(left.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_message_stored_as_its_recipient_comes_online_reaches_it() {
        let (im, core, h, mut end) = bob_with_a_message().await;
        // Available after the router found no resource, before the message was committed.
        core.set_available(h.jid(), Some(0));
        stored(&im, &core, &h.jid().to_bare());
        assert_eq!(next_body(&mut end).await.as_deref(), Some("one"));
    }

    #[test]
    fn what_is_stored() {
        let cases = [
            ("<message type='chat'><body>hi</body></message>", true),
            ("<message><body>hi</body></message>", true),
            ("<message type='chat'><x xmlns='jabber:x:conference'/></message>", true),
            ("<message type='headline'><body>hi</body></message>", false),
            ("<message type='groupchat'><body>hi</body></message>", false),
            ("<message type='error'><body>hi</body></message>", false),
            ("<message type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>", false),
            ("<message type='chat'><body>x</body><no-store xmlns='urn:xmpp:hints'/></message>", false),
            ("<message type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/><store xmlns='urn:xmpp:hints'/></message>", true),
            ("<message type='chat'><thread>t</thread></message>", false),
        ];
        for (xml, want) in cases {
            assert_eq!(qualifies(&msg(xml)), want, "{xml}");
        }
    }
}
