//! The room's rules, stanza in, stanzas out (XEP-0045's own examples where they fit).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use rookery_proto::form::{Field, Form};
use rookery_xml::CONTENT_NS;

use super::*;

const ROOM: &str = "coven@chat.shakespeare.lit";
const NOW: i64 = 1_700_000_000;
const LIMITS: Limits = Limits {
    max_occupants: 1000,
    history: 5,
    history_bytes: 64 * 1024,
    max_affiliations: 50,
    archive: true,
};

fn jid(s: &str) -> Jid {
    Jid::parse(s).unwrap()
}

fn new_room() -> Room {
    Room::new(
        BareJid::parse(ROOM).unwrap(),
        BareJid::parse("crone1@shakespeare.lit").unwrap(),
        RoomConfig::default(),
        LIMITS,
        "salt".into(),
    )
}

fn parse(xml: &str) -> Stanza {
    let el = rookery_xml::first_element(xml.as_bytes(), rookery_xml::Limits::S2S).unwrap();
    Stanza::from_element(el).unwrap()
}

/// Every stanza out, one per recipient: (to, stanza).
fn flat(o: &Outcome) -> Vec<(String, Stanza)> {
    let mut v = Vec::new();
    for out in &o.out {
        match out {
            Output::Send(s) => v.push((s.to().unwrap().to_string(), s.clone())),
            Output::Broadcast(s, to) => {
                for t in to {
                    let mut s = s.clone();
                    s.set_to(t.clone());
                    v.push((t.to_string(), s));
                }
            }
        }
    }
    v
}

fn join_xml(from: &str, nick: &str, x: &str) -> Stanza {
    parse(&format!(
        "<presence xmlns='jabber:client' from='{from}' to='{ROOM}/{nick}'>{x}</presence>"
    ))
}

fn join(room: &mut Room, from: &str, nick: &str) -> Outcome {
    room.handle(
        join_xml(from, nick, "<x xmlns='http://jabber.org/protocol/muc'/>"),
        NOW,
        "sid",
    )
}

fn codes(s: &Stanza) -> Vec<u16> {
    s.element()
        .get_child("x", ns::USER)
        .map(|x| {
            x.children()
                .filter(|c| c.name() == "status")
                .filter_map(|c| c.attr("code")?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn item(s: &Stanza) -> Element {
    s.element()
        .get_child("x", ns::USER)
        .and_then(|x| x.get_child("item", ns::USER))
        .cloned()
        .unwrap()
}

fn error_condition(o: &Outcome) -> String {
    let (_, s) = flat(o).pop().unwrap();
    assert_eq!(s.element().attr("type"), Some("error"));
    let e = StanzaError::from_element(s.element().get_child("error", CONTENT_NS).unwrap()).unwrap();
    format!("{}/{}", e.error_type.as_str(), e.condition.as_str())
}

fn iq(from: &str, to: &str, t: &str, payload: &str) -> Stanza {
    parse(&format!(
        "<iq xmlns='jabber:client' id='q1' type='{t}' from='{from}' to='{to}'>{payload}</iq>"
    ))
}

fn instant(room: &mut Room) {
    let o = room.handle(iq(
        "crone1@shakespeare.lit/desktop",
        ROOM,
        "set",
        "<query xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'/></query>",
    ), NOW, "sid");
    assert_eq!(flat(&o)[0].1.element().attr("type"), Some("result"));
}

fn configure(room: &mut Room, fields: &[(&str, &str)]) -> Outcome {
    let mut f = Form::new("submit", ns::ROOMCONFIG);
    for (k, v) in fields {
        f.push(Field::new(k, "text-single", *v));
    }
    let q = Element::new("query", ns::OWNER).with_child(f.to_element());
    let s = Stanza::iq(
        IqType::Set,
        "c1",
        Some(jid("crone1@shakespeare.lit/desktop")),
        Some(jid(ROOM)),
        q,
    );
    room.handle(s, NOW, "sid")
}

/// The crone creates the room (instant) and the witches enter.
fn coven() -> Room {
    let mut room = new_room();
    join(&mut room, "crone1@shakespeare.lit/desktop", "firstwitch");
    instant(&mut room);
    join(
        &mut room,
        "wiccarocks@shakespeare.lit/laptop",
        "secondwitch",
    );
    join(&mut room, "hag66@shakespeare.lit/pda", "thirdwitch");
    room
}

#[test]
fn creating_a_reserved_room_locks_it_until_configured() {
    let mut room = new_room();
    let o = join(&mut room, "crone1@shakespeare.lit/desktop", "firstwitch");
    let out = flat(&o);
    // Self-presence (110, 201, owner/moderator), then the empty subject.
    let (to, p) = &out[0];
    assert_eq!(to, "crone1@shakespeare.lit/desktop");
    assert_eq!(codes(p), [201, 110]);
    let it = item(p);
    assert_eq!(it.attr("affiliation"), Some("owner"));
    assert_eq!(it.attr("role"), Some("moderator"));
    assert!(p.element().has_child("occupant-id", ns::OCCUPANT_ID));
    assert_eq!(
        out[1]
            .1
            .element()
            .child_text("subject", CONTENT_NS)
            .as_deref(),
        Some("")
    );
    assert!(room.is_locked());
    // Nobody else enters a locked room.
    let o = join(&mut room, "hag66@shakespeare.lit/pda", "thirdwitch");
    assert_eq!(error_condition(&o), "cancel/item-not-found");
    // The owner gets the form, submits it: unlocked.
    let o = room.handle(
        iq(
            "crone1@shakespeare.lit/desktop",
            ROOM,
            "get",
            "<query xmlns='http://jabber.org/protocol/muc#owner'/>",
        ),
        NOW,
        "sid",
    );
    let form = Form::child_of(flat(&o)[0].1.payload().unwrap()).unwrap();
    assert_eq!(form.form_type(), Some(ns::ROOMCONFIG));
    let o = configure(&mut room, &[("muc#roomconfig_roomname", "A Dark Cave")]);
    assert_eq!(flat(&o)[0].1.element().attr("type"), Some("result"));
    assert!(!room.is_locked());
    assert_eq!(room.config().name, "A Dark Cave");
    // Only owners configure.
    let o = room.handle(
        iq(
            "hag66@shakespeare.lit/pda",
            ROOM,
            "get",
            "<query xmlns='http://jabber.org/protocol/muc#owner'/>",
        ),
        NOW,
        "sid",
    );
    assert_eq!(error_condition(&o), "auth/forbidden");
}

#[test]
fn a_room_entered_without_the_muc_extension_is_instant() {
    let mut room = new_room();
    room.handle(
        join_xml("crone1@shakespeare.lit/desktop", "firstwitch", ""),
        NOW,
        "sid",
    );
    assert!(!room.is_locked());
}

#[test]
fn entering_exchanges_presence_in_order() {
    let mut room = coven();
    let o = join(&mut room, "cauldron@shakespeare.lit/x", "fourthwitch");
    let out = flat(&o);
    let to_new: Vec<&Stanza> = out
        .iter()
        .filter(|(t, _)| t == "cauldron@shakespeare.lit/x")
        .map(|(_, s)| s)
        .collect();
    // Three occupants' presence, then its own (110), then the subject.
    assert_eq!(to_new.len(), 5);
    assert_eq!(to_new[0].from().unwrap().resource(), Some("firstwitch"));
    assert_eq!(codes(to_new[3]), [110]);
    assert_eq!(item(to_new[3]).attr("role"), Some("participant"));
    assert!(to_new[4].element().has_child("subject", CONTENT_NS));
    // Semi-anonymous: the participant does not see real JIDs, the moderator does.
    assert_eq!(item(to_new[0]).attr("jid"), None);
    let to_crone = out
        .iter()
        .find(|(t, _)| t == "crone1@shakespeare.lit/desktop")
        .unwrap();
    assert_eq!(
        item(&to_crone.1).attr("jid"),
        Some("cauldron@shakespeare.lit/x")
    );
    let to_second = out
        .iter()
        .find(|(t, _)| t == "wiccarocks@shakespeare.lit/laptop")
        .unwrap();
    assert_eq!(item(&to_second.1).attr("jid"), None);
    assert!(codes(&to_second.1).is_empty());
}

#[test]
fn non_anonymous_rooms_say_so_and_show_jids() {
    let mut room = coven();
    let o = configure(&mut room, &[("muc#roomconfig_whois", "anyone")]);
    let notice = &flat(&o)[1].1;
    assert_eq!(codes(notice), [104, 172]);
    let o = join(&mut room, "cauldron@shakespeare.lit/x", "fourthwitch");
    let out = flat(&o);
    let own = out
        .iter()
        .find(|(t, s)| t == "cauldron@shakespeare.lit/x" && codes(s).contains(&110))
        .unwrap();
    assert_eq!(codes(&own.1), [100, 110]);
    let seen = out
        .iter()
        .find(|(t, _)| t == "wiccarocks@shakespeare.lit/laptop")
        .unwrap();
    assert_eq!(
        item(&seen.1).attr("jid"),
        Some("cauldron@shakespeare.lit/x")
    );
}

#[test]
fn bad_nicknames_and_conflicts_are_refused() {
    let mut room = coven();
    let o = join(&mut room, "other@shakespeare.lit/x", "SecondWitch");
    assert_eq!(error_condition(&o), "cancel/conflict");
    let o = room.handle(
        parse(&format!(
            "<presence xmlns='jabber:client' from='other@shakespeare.lit/x' to='{ROOM}'/>"
        )),
        NOW,
        "sid",
    );
    assert_eq!(error_condition(&o), "modify/jid-malformed");
    let o = join(&mut room, "other@shakespeare.lit/x", "\u{2003}");
    assert_eq!(error_condition(&o), "modify/jid-malformed");
    // The service changes a nickname to its enforced form, and says so.
    let o = join(&mut room, "other@shakespeare.lit/x", "Fifth\u{FF37}itch");
    let own = flat(&o)
        .into_iter()
        .find(|(t, s)| t == "other@shakespeare.lit/x" && codes(s).contains(&110))
        .unwrap();
    assert_eq!(codes(&own.1), [210, 110]);
    assert_eq!(own.1.from().unwrap().resource(), Some("FifthWitch"));
}

#[test]
fn nickname_change_is_unavailable_303_then_available() {
    let mut room = coven();
    let o = join(&mut room, "hag66@shakespeare.lit/pda", "oldhag");
    let to_second: Vec<Stanza> = flat(&o)
        .into_iter()
        .filter(|(t, _)| t == "wiccarocks@shakespeare.lit/laptop")
        .map(|(_, s)| s)
        .collect();
    assert_eq!(to_second.len(), 2);
    assert_eq!(
        to_second[0].kind(),
        StanzaKind::Presence(PresenceType::Unavailable)
    );
    assert_eq!(codes(&to_second[0]), [303]);
    assert_eq!(item(&to_second[0]).attr("nick"), Some("oldhag"));
    assert_eq!(to_second[1].from().unwrap().resource(), Some("oldhag"));
    let o = join(&mut room, "hag66@shakespeare.lit/pda", "firstwitch");
    assert_eq!(error_condition(&o), "cancel/conflict");
}

#[test]
fn groupchat_is_broadcast_once_with_occupant_ids() {
    let mut room = coven();
    let o = room.handle(parse(&format!(
        "<message xmlns='jabber:client' type='groupchat' from='hag66@shakespeare.lit/pda' to='{ROOM}'>\
         <body>Harpier cries</body><occupant-id xmlns='urn:xmpp:occupant-id:0' id='forged'/></message>"
    )), NOW, "sid");
    assert_eq!(o.out.len(), 1);
    let Output::Broadcast(s, to) = &o.out[0] else {
        panic!("not a broadcast")
    };
    assert_eq!(to.len(), 3);
    assert_eq!(s.from().unwrap().as_str(), format!("{ROOM}/thirdwitch"));
    let ids: Vec<&Element> = s
        .element()
        .children()
        .filter(|c| c.is("occupant-id", ns::OCCUPANT_ID))
        .collect();
    assert_eq!(ids.len(), 1);
    assert_ne!(ids[0].attr("id"), Some("forged"));
    // Archived under the room's stanza-id, which everyone gets.
    let archived = o.archive.as_ref().unwrap();
    assert_eq!(archived.id, "sid");
    assert_eq!(archived.with.as_str(), format!("{ROOM}/thirdwitch"));
    let sid = s
        .element()
        .get_child("stanza-id", rookery_mam::ns::SID)
        .unwrap();
    assert_eq!((sid.attr("by"), sid.attr("id")), (Some(ROOM), Some("sid")));
    let stranger = jid("x@y.lit/z");
    assert!(room.may_read_archive(&stranger));
    // Outsiders may not speak.
    let o = room.handle(parse(&format!(
        "<message xmlns='jabber:client' type='groupchat' from='x@y.lit/z' to='{ROOM}'><body>hi</body></message>"
    )), NOW, "sid");
    assert_eq!(error_condition(&o), "modify/not-acceptable");
}

#[test]
fn subject_changes_need_a_moderator_unless_configured() {
    let mut room = coven();
    let subject = |from: &str| {
        parse(&format!(
            "<message xmlns='jabber:client' type='groupchat' from='{from}' to='{ROOM}'><subject>Fire Burn</subject></message>"
        ))
    };
    let o = room.handle(subject("hag66@shakespeare.lit/pda"), NOW, "sid");
    assert_eq!(error_condition(&o), "auth/forbidden");
    let o = room.handle(subject("crone1@shakespeare.lit/desktop"), NOW, "sid");
    assert_eq!(flat(&o).len(), 3);
    assert_eq!(room.subject().text, "Fire Burn");
    assert_eq!(room.subject().by.as_deref(), Some("firstwitch"));
}

#[test]
fn private_messages_reach_one_occupant() {
    let mut room = coven();
    let o = room.handle(parse(&format!(
        "<message xmlns='jabber:client' type='chat' from='hag66@shakespeare.lit/pda' to='{ROOM}/secondwitch'><body>psst</body></message>"
    )), NOW, "sid");
    let out = flat(&o);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, "wiccarocks@shakespeare.lit/laptop");
    assert_eq!(
        out[0].1.from().unwrap().as_str(),
        format!("{ROOM}/thirdwitch")
    );
    assert!(out[0].1.element().has_child("x", ns::USER));
    let o = room.handle(parse(&format!(
        "<message xmlns='jabber:client' type='chat' from='hag66@shakespeare.lit/pda' to='{ROOM}/nobody'><body>psst</body></message>"
    )), NOW, "sid");
    assert_eq!(error_condition(&o), "cancel/item-not-found");
}

#[test]
fn only_the_room_speaks_muc_user() {
    let mut room = coven();
    let forged =
        "<x xmlns='http://jabber.org/protocol/muc#user'><item jid='victim@shakespeare.lit'/></x>";
    let o = room.handle(parse(&format!(
        "<message xmlns='jabber:client' type='groupchat' from='hag66@shakespeare.lit/pda' to='{ROOM}'><body>not me</body>{forged}</message>"
    )), NOW, "sid");
    let archived = &o.archive.as_ref().unwrap().stanza;
    assert!(!archived.element().has_child("x", ns::USER));
    assert!(flat(&o)
        .iter()
        .all(|(_, s)| !s.element().has_child("x", ns::USER)));
    let o = room.handle(parse(&format!(
        "<message xmlns='jabber:client' type='chat' from='hag66@shakespeare.lit/pda' to='{ROOM}/secondwitch'><body>psst</body>{forged}</message>"
    )), NOW, "sid");
    let (_, pm) = flat(&o).pop().unwrap();
    let xs: Vec<&Element> = pm
        .element()
        .children()
        .filter(|c| c.ns() == ns::USER)
        .collect();
    assert_eq!(xs.len(), 1);
    assert_eq!(xs[0].children().count(), 0);
}

#[test]
fn a_join_from_a_session_in_the_room_is_a_full_join() {
    let mut room = coven();
    // Unchanged: only the session hears of it, as on entering.
    let o = join(&mut room, "hag66@shakespeare.lit/pda", "thirdwitch");
    let out = flat(&o);
    assert!(out.iter().all(|(t, _)| t == "hag66@shakespeare.lit/pda"));
    assert_eq!(out.len(), 4);
    assert_eq!(codes(&out[2].1), [110]);
    assert!(out[3].1.element().has_child("subject", CONTENT_NS));
    // Changed: the others hear of it too, the session gets its own presence once.
    let o = room.handle(
        join_xml(
            "hag66@shakespeare.lit/pda",
            "thirdwitch",
            "<show>away</show><x xmlns='http://jabber.org/protocol/muc'/>",
        ),
        NOW,
        "sid",
    );
    let out = flat(&o);
    assert_eq!(out.len(), 6);
    let mine: Vec<&Stanza> = out
        .iter()
        .filter(|(t, _)| t == "hag66@shakespeare.lit/pda")
        .map(|(_, s)| s)
        .collect();
    assert_eq!(mine.len(), 4);
    assert_eq!(codes(mine[2]), [110]);
}

#[test]
fn a_nickname_spelled_anew_is_changed_and_its_sessions_told_210() {
    let mut room = coven();
    let o = join(&mut room, "hag66@shakespeare.lit/pda", "ThirdWitch");
    let out = flat(&o);
    let (_, gone) = out
        .iter()
        .find(|(t, _)| t == "wiccarocks@shakespeare.lit/laptop")
        .unwrap();
    assert_eq!(codes(gone), [303]);
    assert_eq!(item(gone).attr("nick"), Some("ThirdWitch"));
    let o = join(&mut room, "hag66@shakespeare.lit/phone", "thirdwitch");
    let out = flat(&o);
    assert_eq!(out[2].1.from().unwrap().resource(), Some("ThirdWitch"));
    assert_eq!(codes(&out[2].1), [210, 110]);
}

fn admin(room: &mut Room, from: &str, items: &str) -> Outcome {
    room.handle(
        iq(
            from,
            ROOM,
            "set",
            &format!("<query xmlns='http://jabber.org/protocol/muc#admin'>{items}</query>"),
        ),
        NOW,
        "sid",
    )
}

#[test]
fn kick_and_ban_carry_their_status_codes() {
    let mut room = coven();
    let o = admin(
        &mut room,
        "crone1@shakespeare.lit/desktop",
        "<item nick='thirdwitch' role='none'><reason>Avaunt</reason></item>",
    );
    let out = flat(&o);
    assert_eq!(out[0].1.element().attr("type"), Some("result"));
    let kicked = out
        .iter()
        .find(|(t, _)| t == "hag66@shakespeare.lit/pda")
        .unwrap();
    assert_eq!(codes(&kicked.1), [307, 110]);
    let it = item(&kicked.1);
    assert_eq!(it.attr("role"), Some("none"));
    assert_eq!(it.child_text("reason", ns::USER).as_deref(), Some("Avaunt"));
    assert_eq!(
        it.get_child("actor", ns::USER).and_then(|a| a.attr("nick")),
        Some("firstwitch")
    );
    assert!(!room.is_occupant(&jid("hag66@shakespeare.lit/pda")));
    // A participant kicks nobody.
    let o = admin(
        &mut room,
        "wiccarocks@shakespeare.lit/laptop",
        "<item nick='firstwitch' role='none'/>",
    );
    assert_eq!(error_condition(&o), "auth/forbidden");
    // Ban: 301, and the outcast cannot come back.
    let o = admin(
        &mut room,
        "crone1@shakespeare.lit/desktop",
        "<item jid='wiccarocks@shakespeare.lit' affiliation='outcast'/>",
    );
    let banned = flat(&o)
        .into_iter()
        .find(|(t, _)| t == "wiccarocks@shakespeare.lit/laptop")
        .unwrap();
    assert_eq!(codes(&banned.1), [301, 110]);
    assert_eq!(item(&banned.1).attr("affiliation"), Some("outcast"));
    let o = join(
        &mut room,
        "wiccarocks@shakespeare.lit/laptop",
        "secondwitch",
    );
    assert_eq!(error_condition(&o), "auth/forbidden");
    // The lists.
    let o = room.handle(iq(
        "crone1@shakespeare.lit/desktop",
        ROOM,
        "get",
        "<query xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='outcast'/></query>",
    ), NOW, "sid");
    let list = flat(&o)[0].1.payload().unwrap().clone();
    let jids: Vec<&str> = list.children().filter_map(|i| i.attr("jid")).collect();
    assert_eq!(jids, ["wiccarocks@shakespeare.lit"]);
}

#[test]
fn moderated_rooms_give_voice_on_request_of_a_moderator() {
    let mut room = new_room();
    join(&mut room, "crone1@shakespeare.lit/desktop", "firstwitch");
    configure(&mut room, &[("muc#roomconfig_moderatedroom", "1")]);
    let o = join(&mut room, "hag66@shakespeare.lit/pda", "thirdwitch");
    let own = flat(&o)
        .into_iter()
        .find(|(t, s)| t == "hag66@shakespeare.lit/pda" && codes(s).contains(&110))
        .unwrap();
    assert_eq!(item(&own.1).attr("role"), Some("visitor"));
    let speak = || {
        parse(&format!(
            "<message xmlns='jabber:client' type='groupchat' from='hag66@shakespeare.lit/pda' to='{ROOM}'><body>hi</body></message>"
        ))
    };
    assert_eq!(
        error_condition(&room.handle(speak(), NOW, "sid")),
        "auth/forbidden"
    );
    let o = admin(
        &mut room,
        "crone1@shakespeare.lit/desktop",
        "<item nick='thirdwitch' role='participant'/>",
    );
    let to_crone = flat(&o)
        .into_iter()
        .find(|(t, s)| t == "crone1@shakespeare.lit/desktop" && s.element().name() == "presence")
        .unwrap();
    assert_eq!(item(&to_crone.1).attr("role"), Some("participant"));
    assert!(matches!(
        room.handle(speak(), NOW, "sid").out[0],
        Output::Broadcast(..)
    ));
}

#[test]
fn members_only_and_password_rooms_keep_strangers_out() {
    let mut room = coven();
    let o = configure(&mut room, &[("muc#roomconfig_membersonly", "1")]);
    // Those present without affiliation are removed with 322.
    let removed = flat(&o)
        .into_iter()
        .find(|(t, s)| t == "hag66@shakespeare.lit/pda" && codes(s).contains(&322))
        .unwrap();
    assert_eq!(
        removed.1.kind(),
        StanzaKind::Presence(PresenceType::Unavailable)
    );
    let o = join(&mut room, "hag66@shakespeare.lit/pda", "thirdwitch");
    assert_eq!(error_condition(&o), "auth/registration-required");
    admin(
        &mut room,
        "crone1@shakespeare.lit/desktop",
        "<item jid='hag66@shakespeare.lit' affiliation='member'/>",
    );
    let o = join(&mut room, "hag66@shakespeare.lit/pda", "thirdwitch");
    assert!(flat(&o).iter().any(|(_, s)| codes(s).contains(&110)));

    let mut room = coven();
    configure(
        &mut room,
        &[
            ("muc#roomconfig_passwordprotectedroom", "1"),
            ("muc#roomconfig_roomsecret", "cauldronburn"),
        ],
    );
    let o = join(&mut room, "x@shakespeare.lit/a", "x");
    assert_eq!(error_condition(&o), "auth/not-authorized");
    let o = room.handle(
        join_xml(
            "x@shakespeare.lit/a",
            "x",
            "<x xmlns='http://jabber.org/protocol/muc'><password>cauldronburn</password></x>",
        ),
        NOW,
        "sid",
    );
    assert!(flat(&o).iter().any(|(_, s)| codes(s).contains(&110)));
}

#[test]
fn full_rooms_refuse_all_but_admins() {
    let mut room = coven();
    configure(&mut room, &[("muc#roomconfig_maxusers", "3")]);
    let o = join(&mut room, "x@shakespeare.lit/a", "x");
    assert_eq!(error_condition(&o), "wait/service-unavailable");
}

#[test]
fn the_last_owner_stays() {
    let mut room = coven();
    let o = admin(
        &mut room,
        "crone1@shakespeare.lit/desktop",
        "<item jid='crone1@shakespeare.lit' affiliation='admin'/>",
    );
    assert_eq!(error_condition(&o), "cancel/conflict");
    // Admins cannot touch owners; a new admin moderates at once.
    let o = admin(
        &mut room,
        "crone1@shakespeare.lit/desktop",
        "<item jid='hag66@shakespeare.lit' affiliation='admin'/>",
    );
    let to_hag = flat(&o)
        .into_iter()
        .find(|(t, _)| t == "hag66@shakespeare.lit/pda")
        .unwrap();
    assert_eq!(item(&to_hag.1).attr("role"), Some("moderator"));
    let o = admin(
        &mut room,
        "hag66@shakespeare.lit/pda",
        "<item jid='crone1@shakespeare.lit' affiliation='none'/>",
    );
    assert_eq!(error_condition(&o), "cancel/not-allowed");
}

#[test]
fn leaving_the_last_occupant_ends_a_temporary_room() {
    let mut room = new_room();
    join(&mut room, "crone1@shakespeare.lit/desktop", "firstwitch");
    instant(&mut room);
    let o = room.handle(parse(&format!(
        "<presence xmlns='jabber:client' type='unavailable' from='crone1@shakespeare.lit/desktop' to='{ROOM}/firstwitch'/>"
    )), NOW, "sid");
    let out = flat(&o);
    assert_eq!(codes(&out[0].1), [110]);
    assert!(o.gone);
}

#[test]
fn destroying_sends_the_alternate_venue() {
    let mut room = coven();
    let o = room.handle(iq(
        "crone1@shakespeare.lit/desktop",
        ROOM,
        "set",
        "<query xmlns='http://jabber.org/protocol/muc#owner'><destroy jid='heath@chat.shakespeare.lit'><reason>Macbeth doth come.</reason></destroy></query>",
    ), NOW, "sid");
    assert!(o.gone);
    let out = flat(&o);
    assert_eq!(out.len(), 4);
    let d = out[1]
        .1
        .element()
        .get_child("x", ns::USER)
        .and_then(|x| x.get_child("destroy", ns::USER))
        .unwrap();
    assert_eq!(d.attr("jid"), Some("heath@chat.shakespeare.lit"));
    assert_eq!(
        d.child_text("reason", ns::USER).as_deref(),
        Some("Macbeth doth come.")
    );
}

#[test]
fn mediated_invitations_make_members_of_members_only_rooms() {
    let mut room = coven();
    configure(&mut room, &[("muc#roomconfig_membersonly", "1")]);
    let o = room.handle(parse(&format!(
        "<message xmlns='jabber:client' from='crone1@shakespeare.lit/desktop' to='{ROOM}'>\
         <x xmlns='http://jabber.org/protocol/muc#user'><invite to='hecate@shakespeare.lit'><reason>Hey</reason></invite></x></message>"
    )), NOW, "sid");
    let out = flat(&o);
    assert_eq!(out[0].0, "hecate@shakespeare.lit");
    let inv = out[0]
        .1
        .element()
        .get_child("x", ns::USER)
        .and_then(|x| x.get_child("invite", ns::USER))
        .unwrap();
    assert_eq!(inv.attr("from"), Some("crone1@shakespeare.lit/desktop"));
    assert_eq!(
        room.affiliation(&jid("hecate@shakespeare.lit")),
        Affiliation::Member
    );
}

#[test]
fn self_ping_answers_occupants_only() {
    let mut room = coven();
    let ping = "<ping xmlns='urn:xmpp:ping'/>";
    let o = room.handle(
        iq(
            "hag66@shakespeare.lit/pda",
            &format!("{ROOM}/thirdwitch"),
            "get",
            ping,
        ),
        NOW,
        "sid",
    );
    assert_eq!(flat(&o)[0].1.element().attr("type"), Some("result"));
    let o = room.handle(
        iq("x@y.lit/z", &format!("{ROOM}/thirdwitch"), "get", ping),
        NOW,
        "sid",
    );
    assert_eq!(error_condition(&o), "cancel/not-acceptable");
}

#[test]
fn disco_info_follows_the_configuration() {
    let mut room = coven();
    configure(&mut room, &[("muc#roomconfig_persistentroom", "1")]);
    let info = room.disco_info();
    let features: Vec<&str> = info
        .children()
        .filter(|c| c.name() == "feature")
        .filter_map(|c| c.attr("var"))
        .collect();
    assert!(features.contains(&"muc_persistent"));
    assert!(features.contains(&ns::OCCUPANT_ID));
    assert!(!features.contains(&"muc_temporary"));
}

#[test]
fn history_on_entering_follows_the_request() {
    let mut room = coven();
    let say = |room: &mut Room, n: i64| {
        room.handle(
            parse(&format!(
                "<message xmlns='jabber:client' type='groupchat' from='hag66@shakespeare.lit/pda' to='{ROOM}'><body>m{n}</body></message>"
            )),
            NOW + n * 60,
            &format!("s{n}"),
        );
    };
    for n in 1..=7 {
        say(&mut room, n);
    }
    let enter = |room: &mut Room, nick: &str, history: &str| -> Vec<String> {
        let o = room.handle(
            join_xml(
                &format!("{nick}@x.lit/r"),
                nick,
                &format!("<x xmlns='http://jabber.org/protocol/muc'>{history}</x>"),
            ),
            NOW + 8 * 60,
            "x",
        );
        let out = flat(&o);
        let bodies: Vec<String> = out
            .iter()
            .filter_map(|(_, s)| s.element().child_text("body", CONTENT_NS))
            .collect();
        // Each history message is stamped by the room, and the subject comes after them.
        for (_, s) in out
            .iter()
            .filter(|(_, s)| s.element().has_child("body", CONTENT_NS))
        {
            let d = s
                .element()
                .get_child("delay", rookery_proto::ns::DELAY)
                .unwrap();
            assert_eq!(d.attr("from"), Some(ROOM));
        }
        assert!(out
            .last()
            .unwrap()
            .1
            .element()
            .has_child("subject", CONTENT_NS));
        room.handle(
            parse(&format!(
                "<presence xmlns='jabber:client' type='unavailable' from='{nick}@x.lit/r' to='{ROOM}/{nick}'/>"
            )),
            NOW,
            "x",
        );
        bodies
    };
    // The room keeps its last 5 (LIMITS.history); without <history/>, all of them.
    assert_eq!(enter(&mut room, "a", ""), ["m3", "m4", "m5", "m6", "m7"]);
    assert_eq!(
        enter(&mut room, "b", "<history maxstanzas='2'/>"),
        ["m6", "m7"]
    );
    assert!(enter(&mut room, "c", "<history maxchars='0'/>").is_empty());
    assert_eq!(
        enter(&mut room, "d", "<history seconds='150'/>"),
        ["m6", "m7"]
    );
    let since = rookery_proto::time::format_utc(NOW + 5 * 60);
    assert_eq!(
        enter(&mut room, "e", &format!("<history since='{since}'/>")),
        ["m5", "m6", "m7"]
    );
    assert_eq!(
        enter(
            &mut room,
            "f",
            &format!("<history since='{since}' maxstanzas='1'/>")
        ),
        ["m7"]
    );
}

#[test]
fn several_resources_of_one_account_share_a_nickname() {
    let mut room = coven();
    let o = join(&mut room, "hag66@shakespeare.lit/phone", "thirdwitch");
    let out = flat(&o);
    // Only the new session hears of it: the others' presence, its own (110), the subject.
    assert!(out.iter().all(|(t, _)| t == "hag66@shakespeare.lit/phone"));
    assert_eq!(out.len(), 4);
    assert_eq!(codes(&out[2].1), [110]);
    // A different account cannot take the nickname.
    let o = join(&mut room, "other@shakespeare.lit/x", "thirdwitch");
    assert_eq!(error_condition(&o), "cancel/conflict");
    // Messages reach both sessions; a private message too.
    let o = room.handle(
        parse(&format!(
            "<message xmlns='jabber:client' type='groupchat' from='crone1@shakespeare.lit/desktop' to='{ROOM}'><body>hi</body></message>"
        )),
        NOW,
        "sid",
    );
    let to: Vec<String> = flat(&o).into_iter().map(|(t, _)| t).collect();
    assert!(to.contains(&"hag66@shakespeare.lit/pda".to_string()));
    assert!(to.contains(&"hag66@shakespeare.lit/phone".to_string()));
    assert_eq!(to.len(), 4);
    let o = room.handle(
        parse(&format!(
            "<message xmlns='jabber:client' type='chat' from='crone1@shakespeare.lit/desktop' to='{ROOM}/thirdwitch'><body>psst</body></message>"
        )),
        NOW,
        "sid",
    );
    assert_eq!(flat(&o).len(), 2);
    // One session leaves: only it is told, the occupant stays.
    let o = room.handle(
        parse(&format!(
            "<presence xmlns='jabber:client' type='unavailable' from='hag66@shakespeare.lit/pda' to='{ROOM}/thirdwitch'/>"
        )),
        NOW,
        "sid",
    );
    let out = flat(&o);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, "hag66@shakespeare.lit/pda");
    assert_eq!(codes(&out[0].1), [110]);
    assert!(room.is_occupant(&jid("hag66@shakespeare.lit/phone")));
    // A kick removes every session.
    join(&mut room, "hag66@shakespeare.lit/pda", "thirdwitch");
    let o = admin(
        &mut room,
        "crone1@shakespeare.lit/desktop",
        "<item nick='thirdwitch' role='none'/>",
    );
    let kicked: Vec<String> = flat(&o)
        .into_iter()
        .filter(|(_, s)| codes(s).contains(&110))
        .map(|(t, _)| t)
        .collect();
    assert_eq!(kicked.len(), 2);
    assert!(!room.is_occupant(&jid("hag66@shakespeare.lit/phone")));
    assert!(!room.is_occupant(&jid("hag66@shakespeare.lit/pda")));
}

#[test]
fn iqs_between_occupants_are_forwarded_under_room_jids() {
    let mut room = coven();
    let o = room.handle(
        iq(
            "hag66@shakespeare.lit/pda",
            &format!("{ROOM}/secondwitch"),
            "get",
            "<query xmlns='jabber:iq:version'/>",
        ),
        NOW,
        "fwd1",
    );
    let out = flat(&o);
    assert_eq!(out.len(), 1);
    let (to, fwd) = &out[0];
    assert_eq!(to, "wiccarocks@shakespeare.lit/laptop");
    assert_eq!(fwd.from().unwrap().as_str(), format!("{ROOM}/thirdwitch"));
    assert_eq!(fwd.id(), Some("fwd1"));
    // An answer from someone else is not taken; the target's goes back with the first id.
    let answer = |from: &str| {
        parse(&format!(
            "<iq xmlns='jabber:client' type='result' id='fwd1' from='{from}' to='{ROOM}/thirdwitch'>\
             <query xmlns='jabber:iq:version'><name>x</name></query></iq>"
        ))
    };
    assert!(room
        .handle(answer("crone1@shakespeare.lit/desktop"), NOW, "x")
        .out
        .is_empty());
    let o = room.handle(answer("wiccarocks@shakespeare.lit/laptop"), NOW, "x");
    let out = flat(&o);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, "hag66@shakespeare.lit/pda");
    assert_eq!(
        out[0].1.from().unwrap().as_str(),
        format!("{ROOM}/secondwitch")
    );
    assert_eq!(out[0].1.id(), Some("q1"));
    assert!(room
        .handle(answer("wiccarocks@shakespeare.lit/laptop"), NOW, "x")
        .out
        .is_empty());
    // To a nickname nobody has: item-not-found.
    let o = room.handle(
        iq(
            "hag66@shakespeare.lit/pda",
            &format!("{ROOM}/nobody"),
            "get",
            "<ping xmlns='urn:xmpp:ping'/>",
        ),
        NOW,
        "x",
    );
    assert_eq!(error_condition(&o), "cancel/item-not-found");
}

#[test]
fn voice_requests_reach_moderators_who_may_grant_them() {
    let mut room = new_room();
    join(&mut room, "crone1@shakespeare.lit/desktop", "firstwitch");
    configure(&mut room, &[("muc#roomconfig_moderatedroom", "1")]);
    join(&mut room, "hag66@shakespeare.lit/pda", "thirdwitch");
    let request = |from: &str, fields: &str| {
        parse(&format!(
            "<message xmlns='jabber:client' from='{from}' to='{ROOM}'><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#request</value></field>{fields}</x></message>"
        ))
    };
    let o = room.handle(
        request(
            "hag66@shakespeare.lit/pda",
            "<field var='muc#role'><value>participant</value></field>",
        ),
        NOW,
        "x",
    );
    let out = flat(&o);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, "crone1@shakespeare.lit/desktop");
    let form = Form::child_of(out[0].1.element()).unwrap();
    assert_eq!(form.value("muc#roomnick"), Some("thirdwitch"));
    // Denied: nothing; allowed: voice, told to everyone.
    let answer = |allow: &str| {
        request(
            "crone1@shakespeare.lit/desktop",
            &format!("<field var='muc#roomnick'><value>thirdwitch</value></field><field var='muc#request_allow'><value>{allow}</value></field>"),
        )
    };
    assert!(room.handle(answer("false"), NOW, "x").out.is_empty());
    let o = room.handle(answer("true"), NOW, "x");
    let to_hag = flat(&o)
        .into_iter()
        .find(|(t, _)| t == "hag66@shakespeare.lit/pda")
        .unwrap();
    assert_eq!(item(&to_hag.1).attr("role"), Some("participant"));
    // A participant's request (or a visitor's approval) does nothing.
    let o = room.handle(answer("true"), NOW, "x");
    assert!(o.out.is_empty());
}

/// Audit 37 L5: an invitation that would make a member past `max_affiliations` is refused
/// with `resource-constraint`, and nobody becomes a member.
#[test]
fn invitations_do_not_make_members_past_the_affiliation_limit() {
    let mut room = coven();
    configure(&mut room, &[("muc#roomconfig_membersonly", "1")]);
    for n in room.affiliations.len()..LIMITS.max_affiliations {
        room.affiliations.insert(
            BareJid::parse(&format!("m{n}@example.net")).unwrap(),
            Affiliated {
                affiliation: Affiliation::Member,
                nick: None,
                reason: None,
            },
        );
    }
    let o = room.handle(parse(&format!(
        "<message xmlns='jabber:client' from='crone1@shakespeare.lit/desktop' to='{ROOM}'>\
         <x xmlns='http://jabber.org/protocol/muc#user'><invite to='hecate@shakespeare.lit'/></x></message>"
    )), NOW, "sid");
    let out = flat(&o);
    assert_eq!(out.len(), 1);
    let error = out[0].1.element().get_child("error", CONTENT_NS).unwrap();
    assert!(error.has_child("resource-constraint", rookery_proto::ns::STANZAS));
    assert_eq!(
        room.affiliation(&jid("hecate@shakespeare.lit")),
        Affiliation::None
    );
}
