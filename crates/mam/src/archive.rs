//! Which messages go into an account's archive (XEP-0313 §5.1.1: messages with content, not
//! groupchat — rooms keep their own — nor headlines or errors; XEP-0334 hints respected) and
//! how the archive's XEP-0359 `<stanza-id/>` is put on a message delivered to the account
//! (the ids themselves are `rookery_store::mam::ArchiveId`s, given by the archiver).

use rookery_jid::BareJid;
use rookery_proto::stanza::is_stanza_id_by;
use rookery_proto::{MessageType, Stanza, StanzaKind};
use rookery_xml::{Element, CONTENT_NS};

use crate::ns;

/// OMEMO's payload: encrypted messages have no `<body/>` a server can read but are content.
const OMEMO: &str = "eu.siacs.conversations.axolotl";

/// Whether `m` is a message to archive: chat or normal with a body (or an encrypted
/// payload), or any of those and a headline with a `<store/>` hint (XEP-0334 §4.4: "SHOULD
/// be stored"); never one with a `<no-store/>`/`<no-permanent-store/>` hint.
pub fn archivable(m: &Stanza) -> bool {
    let el = m.element();
    let store = el.has_child("store", ns::HINTS);
    match m.kind() {
        StanzaKind::Message(MessageType::Chat | MessageType::Normal) => {}
        StanzaKind::Message(MessageType::Headline) if store => {}
        _ => return false,
    }
    if el.has_child("no-store", ns::HINTS) || el.has_child("no-permanent-store", ns::HINTS) {
        return false;
    }
    store || el.has_child("body", CONTENT_NS) || el.has_child("encrypted", OMEMO)
}

/// `m` without any `<stanza-id/>` naming `by`, the account it is delivered to: only its
/// archive may name itself, so one the sender put there is forged and must not be trusted
/// (XEP-0359 §5), whether or not the message is archived; others (a room's) stay.
pub fn unforged(mut m: Stanza, by: &BareJid) -> Stanza {
    m.remove_payload_where(|c| is_stanza_id_by(c, by.as_str()));
    m
}

/// `m` with the archive's `<stanza-id by='{by}' id='{id}'/>`, forged ones removed first
/// ([`unforged`]).
pub fn stamp(m: Stanza, by: &BareJid, id: &str) -> Stanza {
    let mut m = unforged(m, by);
    m.push_payload(
        Element::new("stanza-id", ns::SID)
            .with_attr("by", by.as_str())
            .with_attr("id", id),
    );
    m
}

/// The archive id `m` carries in `by`'s name (see [`stamp`]).
pub fn stamped_id<'m>(m: &'m Stanza, by: &BareJid) -> Option<&'m str> {
    m.element()
        .children()
        .find(|c| is_stanza_id_by(c, by.as_str()))
        .and_then(|c| c.attr("id"))
}

/// `m` serialized for an archive row.
pub fn serialized(m: &Stanza) -> String {
    // A stanza's serialization is UTF-8 (it was parsed from, or built of, strings).
    String::from_utf8(m.to_bytes())
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn msg(xml: &str) -> Stanza {
        let el = rookery_xml::first_element(xml.as_bytes(), rookery_xml::Limits::S2S).unwrap();
        Stanza::from_element(el).unwrap()
    }

    #[test]
    fn content_is_archived_chat_states_and_hints_are_not() {
        assert!(archivable(&msg(
            "<message xmlns='jabber:client' type='chat'><body>hi</body></message>"
        )));
        assert!(archivable(&msg(
            "<message xmlns='jabber:client'><body>hi</body></message>"
        )));
        assert!(!archivable(&msg(
            "<message xmlns='jabber:client' type='groupchat'><body>hi</body></message>"
        )));
        assert!(!archivable(&msg(
            "<message xmlns='jabber:client' type='headline'><body>hi</body></message>"
        )));
        assert!(archivable(&msg("<message xmlns='jabber:client' type='headline'><body>hi</body><store xmlns='urn:xmpp:hints'/></message>")));
        assert!(!archivable(&msg("<message xmlns='jabber:client' type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>")));
        assert!(!archivable(&msg("<message xmlns='jabber:client' type='chat'><body>x</body><no-store xmlns='urn:xmpp:hints'/></message>")));
        assert!(archivable(&msg("<message xmlns='jabber:client' type='chat'><encrypted xmlns='eu.siacs.conversations.axolotl'/></message>")));
    }

    #[test]
    fn stamping_replaces_forged_ids_only() {
        let by = BareJid::parse("juliet@capulet.lit").unwrap();
        let m = msg("<message xmlns='jabber:client' type='chat'><body>hi</body>\
                     <stanza-id xmlns='urn:xmpp:sid:0' by='juliet@capulet.lit' id='forged'/>\
                     <stanza-id xmlns='urn:xmpp:sid:0' by='room@muc.lit' id='r1'/></message>");
        let s = stamp(m, &by, "real");
        let ids: Vec<(Option<&str>, Option<&str>)> = s
            .element()
            .children()
            .filter(|c| c.is("stanza-id", ns::SID))
            .map(|c| (c.attr("by"), c.attr("id")))
            .collect();
        assert_eq!(
            ids,
            [
                (Some("room@muc.lit"), Some("r1")),
                (Some("juliet@capulet.lit"), Some("real"))
            ]
        );
        // Without a forged one, the others stay in their place.
        let m = msg("<message xmlns='jabber:client' type='chat'><body>hi</body>\
                     <stanza-id xmlns='urn:xmpp:sid:0' by='room@muc.lit' id='r1'/></message>");
        let s = stamp(m, &by, "real");
        assert_eq!(
            serialized(&s),
            "<message type=\"chat\"><body>hi</body>\
             <stanza-id xmlns=\"urn:xmpp:sid:0\" by=\"room@muc.lit\" id=\"r1\"/>\
             <stanza-id xmlns=\"urn:xmpp:sid:0\" by=\"juliet@capulet.lit\" id=\"real\"/></message>"
        );
    }
}
