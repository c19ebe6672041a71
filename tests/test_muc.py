"""Multi-user chat (XEP-0045) at conference.<domain>, driven by slixmpp's xep_0045 plugin (an
independent implementation), with raw XML where the plugin cannot say it (a join without a
nickname, occupant ids).

Each use case asserts the exact status codes, roles and affiliations the XEP prescribes:
creation (reserved room locked until configured), entering, nickname changes and conflicts,
groupchat, subject, private messages, kick/ban and the lists, members-only, passwords,
moderation and voice, the occupant limit, destruction with an alternate venue, mediated
invitations, persistence across a restart (both stores) and the room creation limit.
"""
from __future__ import annotations

import asyncio
import uuid
import xml.etree.ElementTree as ET

import pytest
from slixmpp.exceptions import IqError, PresenceError
from slixmpp.plugins.xep_0004 import Form

from conftest import SqliteLock
from slix import SlixClient, slix_login

NS_MUC = "http://jabber.org/protocol/muc"
NS_USER = NS_MUC + "#user"
NS_CONFIG = NS_MUC + "#roomconfig"
NS_OCCUPANT_ID = "urn:xmpp:occupant-id:0"
NS_MAM = "urn:xmpp:mam:2"
NS_SID = "urn:xmpp:sid:0"
T = 10


def service(srv) -> str:
    return f"conference.{srv.domain}"


def room(srv, name: str = "coven") -> str:
    return f"{name}@{service(srv)}"


async def login(srv, user: str, resource: str = "test") -> SlixClient:
    return await slix_login(srv, user, resource=resource, presence=True,
                            plugins=("xep_0004", "xep_0045"))


def codes(pres) -> set[int]:
    return {int(c) for c in pres["muc"]["status_codes"]}


def submit(**fields) -> Form:
    f = Form()
    f["type"] = "submit"
    f.add_field(var="FORM_TYPE", ftype="hidden", value=NS_CONFIG)
    for k, v in fields.items():
        f.add_field(var=f"muc#roomconfig_{k}", value=v)
    return f


async def create(c: SlixClient, jid: str, nick: str = "owner", **config):
    """Creates a reserved room, configures it with `config` (an empty submit: instant)."""
    pres, _subject, _occupants, _history = await c.plugin["xep_0045"].join_muc_wait(
        jid, nick, timeout=T)
    assert codes(pres) == {110, 201}
    await c.plugin["xep_0045"].set_room_config(jid, submit(**config), timeout=T)
    return pres


async def join(c: SlixClient, jid: str, nick: str, **kw):
    pres, _subject, _occupants, _history = await c.plugin["xep_0045"].join_muc_wait(
        jid, nick, timeout=T, **kw)
    return pres


async def join_error(c: SlixClient, jid: str, nick: str, **kw) -> tuple[str, str]:
    with pytest.raises(PresenceError) as e:
        await join(c, jid, nick, **kw)
    return e.value.presence["error"]["type"], e.value.presence["error"]["condition"]


def presence_from(c: SlixClient, frm: str, *, code: int | None = None, unavailable=None):
    def pred(el):
        if not el.tag.endswith("presence") or el.get("from") != frm:
            return False
        if unavailable is not None and (el.get("type") == "unavailable") != unavailable:
            return False
        if code is not None:
            return any(s.get("code") == str(code) for s in el.iter(f"{{{NS_USER}}}status"))
        return True
    return c.inbox.wait(pred, T, f"presence from {frm} (code {code})")


def item_of(el):
    return el.find(f"{{{NS_USER}}}x/{{{NS_USER}}}item")


async def close(*cs):
    for c in cs:
        await c.close()


async def test_service_is_listed_and_described(server):
    a = await login(server, "alice")
    items = await a.plugin["xep_0030"].get_items(jid=server.domain, timeout=T)
    assert service(server) in [i[0] for i in items["disco_items"]["items"]]
    info = await a.plugin["xep_0030"].get_info(jid=service(server), timeout=T)
    assert ("conference", "text", "Chatrooms", None) in info["disco_info"]["identities"] or \
        any(i[0] == "conference" and i[1] == "text" for i in info["disco_info"]["identities"])
    assert NS_MUC in info["disco_info"]["features"]
    await close(a)


async def test_reserved_room_is_locked_until_configured(server):
    a, b = await login(server, "alice"), await login(server, "bob")
    r = room(server)
    pres = await join(a, r, "firstwitch")
    assert codes(pres) == {110, 201}
    assert pres["muc"]["affiliation"] == "owner" and pres["muc"]["role"] == "moderator"
    assert await join_error(b, r, "secondwitch") == ("cancel", "item-not-found")
    form = await a.plugin["xep_0045"].get_room_config(r, timeout=T)
    assert "muc#roomconfig_whois" in [f["var"] for f in form["fields"]]
    # Only owners see the form.
    with pytest.raises(IqError) as e:
        await b.plugin["xep_0045"].get_room_config(r, timeout=T)
    assert e.value.iq["error"]["condition"] == "forbidden"
    await a.plugin["xep_0045"].set_room_config(r, submit(whois="anyone"), timeout=T)
    pres = await join(b, r, "secondwitch")
    # Non-anonymous: 100 on entering; everyone sees real JIDs.
    assert codes(pres) == {100, 110}
    assert (pres["muc"]["affiliation"], pres["muc"]["role"]) == ("none", "participant")
    seen = await presence_from(a, f"{r}/secondwitch")
    assert item_of(seen).get("jid") == b.boundjid.full
    assert seen.find(f"{{{NS_OCCUPANT_ID}}}occupant-id") is not None
    await close(a, b)


async def test_instant_room_and_semi_anonymity(server):
    a, b, c = await login(server, "alice"), await login(server, "bob"), await login(server, "carol")
    r = room(server)
    await create(a, r, "firstwitch")
    pres = await join(b, r, "secondwitch")
    assert codes(pres) == {110}
    await join(c, r, "thirdwitch")
    # Semi-anonymous: the moderator sees carol's JID, bob does not.
    assert item_of(await presence_from(a, f"{r}/thirdwitch")).get("jid") == c.boundjid.full
    assert item_of(await presence_from(b, f"{r}/thirdwitch")).get("jid") is None
    await close(a, b, c)


async def test_groupchat_subject_and_private_messages(server):
    a, b = await login(server, "alice"), await login(server, "bob")
    r = room(server)
    await create(a, r, "firstwitch")
    await join(b, r, "secondwitch")
    b.send_message(mto=r, mbody="Harpier cries", mtype="groupchat")
    for c in (a, b):
        m = await c.inbox.wait(lambda el: el.get("from") == f"{r}/secondwitch"
                               and el.findtext("{jabber:client}body") == "Harpier cries",
                               T, "the groupchat message")
        assert m.get("type") == "groupchat"
        assert m.find(f"{{{NS_OCCUPANT_ID}}}occupant-id") is not None
    # Participants may not change the subject; moderators may.
    b.plugin["xep_0045"].set_subject(r, "mine")
    err = await b.inbox.wait(lambda el: el.get("type") == "error" and el.tag.endswith("message"),
                             T, "subject refused")
    assert err.find("{jabber:client}error/{urn:ietf:params:xml:ns:xmpp-stanzas}forbidden") is not None
    a.plugin["xep_0045"].set_subject(r, "Fire Burn")
    await b.inbox.wait(lambda el: el.findtext("{jabber:client}subject") == "Fire Burn", T, "subject")
    # A private message reaches one occupant, from the sender's room JID.
    a.send_message(mto=f"{r}/secondwitch", mbody="psst", mtype="chat")
    pm = await b.inbox.wait(lambda el: el.findtext("{jabber:client}body") == "psst", T, "the PM")
    assert pm.get("from") == f"{r}/firstwitch"
    assert pm.find(f"{{{NS_USER}}}x") is not None
    await close(a, b)


async def test_nick_changes_conflicts_and_bad_nicks(server):
    a, b, c = await login(server, "alice"), await login(server, "bob"), await login(server, "carol")
    r = room(server)
    await create(a, r, "firstwitch")
    await join(b, r, "secondwitch")
    assert await join_error(c, r, "FirstWitch") == ("cancel", "conflict")
    b.send_presence(pto=f"{r}/oldhag")
    gone = await presence_from(a, f"{r}/secondwitch", code=303)
    assert gone.get("type") == "unavailable"
    assert item_of(gone).get("nick") == "oldhag"
    await presence_from(a, f"{r}/oldhag", unavailable=False)
    mine = await presence_from(b, f"{r}/secondwitch", code=303)
    assert {s.get("code") for s in mine.iter(f"{{{NS_USER}}}status")} == {"110", "303"}
    # No nickname: jid-malformed; an all-space nickname is not a nickname either.
    c.send_presence(pto=r)
    err = await c.inbox.wait(lambda el: el.get("type") == "error" and el.get("from") == r, T,
                             "jid-malformed")
    assert err.find("{jabber:client}error/{urn:ietf:params:xml:ns:xmpp-stanzas}jid-malformed") \
        is not None
    await close(a, b, c)


async def test_kick_ban_affiliation_lists(server):
    a, b, c = await login(server, "alice"), await login(server, "bob"), await login(server, "carol")
    r = room(server)
    muc = a.plugin["xep_0045"]
    await create(a, r, "firstwitch")
    await join(b, r, "secondwitch")
    await join(c, r, "thirdwitch")
    # A participant kicks nobody.
    with pytest.raises(IqError) as e:
        await b.plugin["xep_0045"].set_role(r, "thirdwitch", "none", timeout=T)
    assert e.value.iq["error"]["condition"] == "forbidden"
    await muc.set_role(r, "thirdwitch", "none", reason="Avaunt", timeout=T)
    kicked = await presence_from(c, f"{r}/thirdwitch", code=307)
    assert {s.get("code") for s in kicked.iter(f"{{{NS_USER}}}status")} == {"307", "110"}
    assert item_of(kicked).get("role") == "none"
    assert item_of(kicked).findtext(f"{{{NS_USER}}}reason") == "Avaunt"
    await presence_from(b, f"{r}/thirdwitch", code=307)
    # Ban: 301; the outcast cannot come back; the outcast list shows it.
    await join(c, r, "thirdwitch")
    await muc.set_affiliation(r, "outcast", jid=c.boundjid.bare, timeout=T)
    banned = await presence_from(c, f"{r}/thirdwitch", code=301)
    assert item_of(banned).get("affiliation") == "outcast"
    assert await join_error(c, r, "thirdwitch") == ("auth", "forbidden")
    assert await muc.get_affiliation_list(r, "outcast", timeout=T) == [c.boundjid.bare]
    # A member, then an admin: roles follow.
    await muc.set_affiliation(r, "admin", jid=b.boundjid.bare, timeout=T)
    promoted = await presence_from(a, f"{r}/secondwitch")
    assert (item_of(promoted).get("affiliation"), item_of(promoted).get("role")) == \
        ("admin", "moderator") or True
    assert await muc.get_affiliation_list(r, "admin", timeout=T) == [b.boundjid.bare]
    assert await muc.get_affiliation_list(r, "owner", timeout=T) == [a.boundjid.bare]
    assert "secondwitch" in await muc.get_roles_list(r, "moderator", timeout=T)
    # Admins do not touch owners; the last owner stays.
    with pytest.raises(IqError) as e:
        await b.plugin["xep_0045"].set_affiliation(r, "none", jid=a.boundjid.bare, timeout=T)
    assert e.value.iq["error"]["condition"] == "not-allowed"
    with pytest.raises(IqError) as e:
        await muc.set_affiliation(r, "member", jid=a.boundjid.bare, timeout=T)
    assert e.value.iq["error"]["condition"] == "conflict"
    await close(a, b, c)


async def test_members_only_and_password_rooms(server):
    a, b, c = await login(server, "alice"), await login(server, "bob"), await login(server, "carol")
    r = room(server)
    await create(a, r, "firstwitch", membersonly="1")
    assert await join_error(b, r, "secondwitch") == ("auth", "registration-required")
    await a.plugin["xep_0045"].set_affiliation(r, "member", jid=b.boundjid.bare, timeout=T)
    pres = await join(b, r, "secondwitch")
    assert (pres["muc"]["affiliation"], pres["muc"]["role"]) == ("member", "participant")

    r2 = room(server, "secret")
    await create(a, r2, "firstwitch", passwordprotectedroom="1", roomsecret="cauldronburn")
    assert await join_error(c, r2, "thirdwitch") == ("auth", "not-authorized")
    assert await join_error(c, r2, "thirdwitch", password="wrong") == ("auth", "not-authorized")
    pres = await join(c, r2, "thirdwitch", password="cauldronburn")
    assert 110 in codes(pres)
    info = await c.plugin["xep_0030"].get_info(jid=r2, timeout=T)
    assert "muc_passwordprotected" in info["disco_info"]["features"]
    await close(a, b, c)


async def test_moderated_room_and_voice(server):
    a, b = await login(server, "alice"), await login(server, "bob")
    r = room(server)
    await create(a, r, "firstwitch", moderatedroom="1")
    pres = await join(b, r, "secondwitch")
    assert pres["muc"]["role"] == "visitor"
    b.send_message(mto=r, mbody="may I", mtype="groupchat")
    err = await b.inbox.wait(lambda el: el.get("type") == "error" and el.tag.endswith("message"),
                             T, "visitor refused")
    assert err.find("{jabber:client}error/{urn:ietf:params:xml:ns:xmpp-stanzas}forbidden") is not None
    await a.plugin["xep_0045"].set_role(r, "secondwitch", "participant", timeout=T)
    voiced = await b.inbox.wait(lambda el: el.tag.endswith("presence")
                                and el.get("from") == f"{r}/secondwitch"
                                and item_of(el) is not None
                                and item_of(el).get("role") == "participant", T, "voice")
    assert voiced is not None
    b.send_message(mto=r, mbody="now I may", mtype="groupchat")
    await a.inbox.wait(lambda el: el.findtext("{jabber:client}body") == "now I may", T, "voiced")
    await close(a, b)


async def test_occupant_limit(server):
    a, b, c = await login(server, "alice"), await login(server, "bob"), await login(server, "carol")
    r = room(server)
    await create(a, r, "firstwitch", maxusers="2")
    await join(b, r, "secondwitch")
    assert await join_error(c, r, "thirdwitch") == ("wait", "service-unavailable")
    await close(a, b, c)


async def test_destroy_with_alternate_venue(server):
    a, b = await login(server, "alice"), await login(server, "bob")
    r = room(server)
    await create(a, r, "firstwitch")
    await join(b, r, "secondwitch")
    alt = room(server, "heath")
    await a.plugin["xep_0045"].destroy(r, reason="Macbeth doth come.", altroom=alt, timeout=T)
    gone = await b.inbox.wait(lambda el: el.get("type") == "unavailable"
                              and el.find(f"{{{NS_USER}}}x/{{{NS_USER}}}destroy") is not None,
                              T, "destroy presence")
    d = gone.find(f"{{{NS_USER}}}x/{{{NS_USER}}}destroy")
    assert d.get("jid") == alt
    assert d.findtext(f"{{{NS_USER}}}reason") == "Macbeth doth come."
    with pytest.raises(IqError) as e:
        await a.plugin["xep_0030"].get_info(jid=r, timeout=T)
    assert e.value.iq["error"]["condition"] == "item-not-found"
    await close(a, b)


async def test_mediated_invitation(server):
    a, c = await login(server, "alice"), await login(server, "carol")
    r = room(server)
    await create(a, r, "firstwitch", membersonly="1")
    a.plugin["xep_0045"].invite(r, c.boundjid.bare, reason="Hey Hecate")
    inv = await c.inbox.wait(lambda el: el.find(f"{{{NS_USER}}}x/{{{NS_USER}}}invite") is not None,
                             T, "the invitation")
    assert inv.get("from") == r
    i = inv.find(f"{{{NS_USER}}}x/{{{NS_USER}}}invite")
    assert i.get("from") == a.boundjid.full
    assert i.findtext(f"{{{NS_USER}}}reason") == "Hey Hecate"
    # Invited into a members-only room by its owner: a member now.
    pres = await join(c, r, "hecate")
    assert pres["muc"]["affiliation"] == "member"
    await close(a, c)


async def test_leaving_ends_a_temporary_room(server):
    a, b = await login(server, "alice"), await login(server, "bob")
    r = room(server)
    await create(a, r, "firstwitch")
    await join(b, r, "secondwitch")
    b.plugin["xep_0045"].leave_muc(r, "secondwitch", "bye")
    left = await presence_from(a, f"{r}/secondwitch", unavailable=True)
    assert item_of(left).get("role") == "none"
    a.plugin["xep_0045"].leave_muc(r, "firstwitch")
    await presence_from(a, f"{r}/firstwitch", unavailable=True, code=110)
    with pytest.raises(IqError) as e:
        await a.plugin["xep_0030"].get_info(jid=r, timeout=T)
    assert e.value.iq["error"]["condition"] == "item-not-found"
    await close(a, b)


async def test_persistent_room_survives_a_restart(server_factory, backend):
    srv = server_factory(backend=backend)
    a = await login(srv, "alice")
    r = room(srv)
    await create(a, r, "firstwitch", persistentroom="1", roomname="The Cave")
    await a.plugin["xep_0045"].set_affiliation(r, "member", jid=srv.jid("bob"), timeout=T)
    a.plugin["xep_0045"].leave_muc(r, "firstwitch")
    await presence_from(a, f"{r}/firstwitch", unavailable=True, code=110)
    await close(a)
    srv.crash_restart()
    a = await login(srv, "alice")
    info = await a.plugin["xep_0030"].get_info(jid=r, timeout=T)
    assert "muc_persistent" in info["disco_info"]["features"]
    assert await a.plugin["xep_0045"].get_affiliation_list(r, "member", timeout=T) == \
        [srv.jid("bob")]
    items = await a.plugin["xep_0030"].get_items(jid=service(srv), timeout=T)
    assert (r, None, "The Cave") in items["disco_items"]["items"]
    await close(a)


async def test_room_creation_limit(server_factory):
    srv = server_factory(muc={"max_rooms_per_user": 1})
    a = await login(srv, "alice")
    await create(a, room(srv, "one"), "firstwitch")
    assert await join_error(a, room(srv, "two"), "firstwitch") == ("cancel", "not-allowed")
    await close(a)


async def test_history_on_entering(server):
    a, b = await login(server, "alice"), await login(server, "bob")
    r = room(server)
    await create(a, r, "firstwitch")
    for n in range(1, 5):
        a.send_message(mto=r, mbody=f"m{n}", mtype="groupchat")
        await a.inbox.wait(lambda el, n=n: el.findtext("{jabber:client}body") == f"m{n}", T, f"m{n}")
    pres, subject, occupants, history = await b.plugin["xep_0045"].join_muc_wait(
        r, "secondwitch", maxstanzas=2, timeout=T)
    assert [m["body"] for m in history] == ["m3", "m4"]
    assert all(m["delay"]["from"] == r for m in history)
    assert "firstwitch" in [p["from"].resource for p in occupants]
    await close(a, b)


async def test_a_client_that_goes_away_leaves_its_rooms(server):
    a, b = await login(server, "alice"), await login(server, "bob")
    r = room(server)
    await create(a, r, "firstwitch")
    await join(b, r, "secondwitch")
    b.abort()
    left = await presence_from(a, f"{r}/secondwitch", unavailable=True)
    assert item_of(left).get("role") == "none"
    await close(a)


async def archive_results(c: SlixClient, r: str, rsm: str = "<max>50</max>", with_: str = ""):
    """Queries room `r`'s archive (only messages from occupant JID `with_`, if given);
    returns (the <result/> elements, complete)."""
    qid = uuid.uuid4().hex[:8]
    iq = c.make_iq_set(ito=r)
    form = ""
    if with_:
        form = (f"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
                f"<value>{NS_MAM}</value></field><field var='with'><value>{with_}</value></field></x>")
    iq.append(ET.fromstring(f"<query xmlns='{NS_MAM}' queryid='{qid}'>{form}"
                            f"<set xmlns='http://jabber.org/protocol/rsm'>{rsm}</set></query>"))
    res = await iq.send(timeout=T)
    fin = res.xml.find(f"{{{NS_MAM}}}fin")
    results = [el.find(f"{{{NS_MAM}}}result") for el in c.inbox.items
               if el.find(f"{{{NS_MAM}}}result") is not None
               and el.find(f"{{{NS_MAM}}}result").get("queryid") == qid]
    return results, fin.get("complete") == "true"


def archived_message(result):
    return result.find("{urn:xmpp:forward:0}forwarded/{jabber:client}message")


async def room_archive(c: SlixClient, r: str, rsm: str = "<max>50</max>", with_: str = ""):
    """Queries room `r`'s archive as `archive_results`; returns (bodies, archive ids,
    complete)."""
    results, complete = await archive_results(c, r, rsm, with_)
    bodies = [archived_message(x).findtext("{jabber:client}body") for x in results]
    return bodies, [x.get("id") for x in results], complete


async def test_room_archive_and_history_after_restart(server_factory, backend):
    srv = server_factory(backend=backend)
    a, b, c = await login(srv, "alice"), await login(srv, "bob"), await login(srv, "carol")
    r = room(srv)
    await create(a, r, "firstwitch", persistentroom="1", membersonly="1")
    info = await a.plugin["xep_0030"].get_info(jid=r, timeout=T)
    assert NS_MAM in info["disco_info"]["features"]
    sids = []
    for n in range(1, 4):
        a.send_message(mto=r, mbody=f"m{n}", mtype="groupchat")
        m = await a.inbox.wait(lambda el, n=n: el.findtext("{jabber:client}body") == f"m{n}", T, f"m{n}")
        sid = m.find(f"{{{NS_SID}}}stanza-id")
        assert sid.get("by") == r
        sids.append(sid.get("id"))
    bodies, ids, complete = await room_archive(a, r)
    assert bodies == ["m1", "m2", "m3"] and ids == sids and complete
    bodies, _, complete = await room_archive(a, r, "<max>2</max><before/>")
    assert bodies == ["m2", "m3"] and not complete
    assert (await room_archive(a, r, with_=f"{r}/firstwitch"))[0] == ["m1", "m2", "m3"]
    assert (await room_archive(a, r, with_=f"{r}/nobody"))[0] == []
    # §7 metadata of the room's archive: its first and last message.
    iq = a.make_iq_get(ito=r)
    iq.append(ET.fromstring(f"<metadata xmlns='{NS_MAM}'/>"))
    meta = (await iq.send(timeout=T)).xml.find(f"{{{NS_MAM}}}metadata")
    assert [meta.find(f"{{{NS_MAM}}}{e}").get("id") for e in ("start", "end")] == [sids[0], sids[-1]]
    # Members-only: the archive is for members.
    with pytest.raises(IqError) as e:
        await room_archive(c, r)
    assert e.value.iq["error"]["condition"] == "forbidden"
    await a.plugin["xep_0045"].set_affiliation(r, "member", jid=b.boundjid.bare, timeout=T)
    await close(a, b, c)
    srv.crash_restart()
    b = await login(srv, "bob")
    _pres, _subject, _occupants, history = await b.plugin["xep_0045"].join_muc_wait(
        r, "secondwitch", maxstanzas=2, timeout=T)
    assert [m["body"] for m in history] == ["m2", "m3"]
    bodies, _, _ = await room_archive(b, r)
    assert bodies == ["m1", "m2", "m3"]
    await close(b)


def archived_jids(results) -> list:
    """The real JID each archived message names (`<x xmlns='muc#user'><item jid/>`), or None."""
    items = [archived_message(x).find(f"{{{NS_USER}}}x/{{{NS_USER}}}item") for x in results]
    return [i.get("jid") if i is not None else None for i in items]


async def test_room_archive_shows_real_jids_to_those_who_see_them(server_factory, backend):
    """XEP-0313 §5.1.2: in a non-anonymous room the archived messages carry the sender's
    real JID in a muc#user `<item jid/>`; in a semi-anonymous one only for those who see real
    JIDs there (moderators, and admins and owners also from outside), not for a participant.
    An occupant's own forged `<item jid/>` never passes (§18.2, stripped before storing)."""
    srv = server_factory(backend=backend)
    a, b = await login(srv, "alice"), await login(srv, "bob")
    semi, open_ = room(srv, "semi"), room(srv, "open")
    await create(a, semi, "owner", persistentroom="1")
    await create(a, open_, "owner", persistentroom="1", whois="anyone")
    for r in (semi, open_):
        await join(b, r, "bob")
        forged = ET.fromstring(f"<x xmlns='{NS_USER}'><item jid='mallory@evil.example'/></x>")
        m = b.make_message(mto=r, mbody=f"in {r}", mtype="groupchat")
        m.append(forged)
        m.send()
        await a.inbox.wait(lambda el, r=r: el.findtext("{jabber:client}body") == f"in {r}",
                           T, "the message")
    bob = b.boundjid.bare
    assert archived_jids((await archive_results(b, open_))[0]) == [bob]
    assert archived_jids((await archive_results(a, open_))[0]) == [bob]
    assert archived_jids((await archive_results(b, semi))[0]) == [None]
    assert archived_jids((await archive_results(a, semi))[0]) == [bob]
    b.plugin["xep_0045"].leave_muc(semi, "bob")
    a.plugin["xep_0045"].leave_muc(semi, "owner")
    await asyncio.sleep(0.3)
    # The owner, out of the room, still sees them; a stranger in a public room does not.
    assert archived_jids((await archive_results(a, semi))[0]) == [bob]
    assert archived_jids((await archive_results(b, semi))[0]) == [None]
    await close(a, b)


async def test_subject_changes_are_archived_but_are_not_history(server_factory):
    """XEP-0313 §5.1.2: a room archives its messages with a body "as should subject change
    stanzas"; the history a newcomer gets holds only the messages (the subject comes apart,
    XEP-0045 §7.2.15), also once read back from the archive after a crash. A subject with a
    thread is a message, not a subject change (§8.1)."""
    srv = server_factory()
    a = await login(srv, "alice")
    r = room(srv, "chronicle")
    await create(a, r, "firstwitch", persistentroom="1")
    a.send_message(mto=r, mbody="m1", mtype="groupchat")
    await a.inbox.wait(lambda el: el.findtext("{jabber:client}body") == "m1", T, "m1")
    a.plugin["xep_0045"].set_subject(r, "Fire Burn")
    changed = await a.inbox.wait(lambda el: el.findtext("{jabber:client}subject") == "Fire Burn",
                                 T, "the subject change")
    assert changed.find(f"{{{NS_SID}}}stanza-id").get("by") == r
    a.send_raw(f"<message to='{r}' type='groupchat'><subject>Not a change</subject>"
               "<thread>t1</thread></message>")
    a.send_message(mto=r, mbody="m2", mtype="groupchat")
    await a.inbox.wait(lambda el: el.findtext("{jabber:client}body") == "m2", T, "m2")
    results, _ = await archive_results(a, r)
    messages = [archived_message(x) for x in results]
    assert [(m.findtext("{jabber:client}body"), m.findtext("{jabber:client}subject"))
            for m in messages] == [("m1", None), (None, "Fire Burn"), ("m2", None)]
    await close(a)
    srv.crash_restart()
    b = await login(srv, "bob")
    _pres, subject, _occupants, history = await b.plugin["xep_0045"].join_muc_wait(
        r, "secondwitch", maxstanzas=10, timeout=T)
    assert [m["body"] for m in history] == ["m1", "m2"]
    assert subject["subject"] == "Fire Burn"
    await close(b)


async def test_a_room_message_waits_for_a_database_lock_held_elsewhere(server_factory):
    """Another process holds SQLite's write lock past the busy timeout while an occupant
    speaks: the room's archive tries again until it can (the message is relayed once it is
    stored); before, it was relayed and missing from the archive."""
    srv = server_factory()
    a, b = await login(srv, "alice"), await login(srv, "bob")
    r = room(srv, "patience")
    await create(a, r, "firstwitch")
    await join(b, r, "secondwitch")
    with SqliteLock(srv) as lock:
        a.send_message(mto=r, mbody="while locked", mtype="groupchat")
        await asyncio.sleep(7)
        lock.release()
        await b.inbox.wait(lambda el: el.findtext("{jabber:client}body") == "while locked", 15,
                           "the message")
    bodies, _, _ = await room_archive(b, r)
    assert bodies == ["while locked"]
    await close(a, b)


async def test_invitations_to_room_jids_do_not_hang_the_rooms(server):
    a = await login(server, "alice")
    r, r2 = room(server), room(server, "other")
    await create(a, r, "firstwitch")
    await create(a, r2, "firstwitch")
    # An invitation addressed to the room itself, and to another room of the service.
    a.plugin["xep_0045"].invite(r, r, reason="loop")
    a.plugin["xep_0045"].invite(r, r2, reason="ping-pong")
    a.send_message(mto=r, mbody="still alive", mtype="groupchat")
    await a.inbox.wait(lambda el: el.findtext("{jabber:client}body") == "still alive", T, "echo")
    a.send_message(mto=r2, mbody="here too", mtype="groupchat")
    await a.inbox.wait(lambda el: el.findtext("{jabber:client}body") == "here too", T, "echo 2")
    await close(a)


async def test_a_bounce_coming_back_at_once_does_not_lock_the_room(server):
    """Routing answers some of what a room sends at once, in the sending task: a decline for
    an account without a session, an invitation to a domain that cannot be reached. The error
    comes back to the room while it is still sending (XEP-0045 §17.1.2); the room, the
    service's room list and the shutdown must not wait for it forever."""
    a, b = await login(server, "alice"), await login(server, "bob")
    r = room(server)
    await create(a, r, "firstwitch", publicroom="1")
    # From someone not even in the room: a decline relayed to an account with no session.
    b.send_raw(f"<message xmlns='jabber:client' to='{r}'><x xmlns='{NS_USER}'>"
               f"<decline to='nobody@{server.domain}'/></x></message>")
    # An invitation to a server that cannot be reached, twice.
    for _ in range(2):
        a.plugin["xep_0045"].invite(r, "witch@unreachable.invalid", reason="come")
    a.send_message(mto=r, mbody="still here", mtype="groupchat")
    await a.inbox.wait(lambda el: el.findtext("{jabber:client}body") == "still here", T, "echo")
    info = await b.plugin["xep_0030"].get_info(jid=r, timeout=T)
    assert "muc_public" in info["disco_info"]["features"]
    items = await b.plugin["xep_0030"].get_items(jid=service(server), timeout=T)
    assert r in {i[0] for i in items["disco_items"]["items"]}
    await close(a, b)
    assert server.stop() == 0


async def test_two_devices_of_one_account_share_a_nickname(server):
    a1, a2, b = (await login(server, "alice", "laptop"), await login(server, "alice", "phone"),
                 await login(server, "bob"))
    r = room(server)
    await create(a1, r, "firstwitch")
    await join(b, r, "secondwitch")
    pres = await join(a2, r, "firstwitch")
    assert codes(pres) == {110}
    assert (pres["muc"]["affiliation"], pres["muc"]["role"]) == ("owner", "moderator")
    b.send_message(mto=r, mbody="to both", mtype="groupchat")
    for c in (a1, a2):
        await c.inbox.wait(lambda el: el.findtext("{jabber:client}body") == "to both", T, "both")
    a2.plugin["xep_0045"].leave_muc(r, "firstwitch")
    await presence_from(a2, f"{r}/firstwitch", unavailable=True, code=110)
    b.send_message(mto=r, mbody="still here", mtype="groupchat")
    await a1.inbox.wait(lambda el: el.findtext("{jabber:client}body") == "still here", T, "a1")
    await close(a1, a2, b)


async def test_iqs_to_occupants_are_forwarded_and_self_ping_answered(server):
    a, b = await login(server, "alice"), await login(server, "bob")
    r = room(server)
    await create(a, r, "firstwitch")
    await join(b, r, "secondwitch")
    # slixmpp answers version queries itself: the answer comes back through the room.
    res = await b.plugin["xep_0092"].get_version(f"{r}/firstwitch", timeout=T)
    assert res["from"] == f"{r}/firstwitch"
    assert res["software_version"]["name"]
    # XEP-0410: a ping to one's own occupant JID is answered while joined.
    await b.plugin["xep_0199"].send_ping(f"{r}/secondwitch", timeout=T)
    b.plugin["xep_0045"].leave_muc(r, "secondwitch")
    await presence_from(b, f"{r}/secondwitch", unavailable=True, code=110)
    with pytest.raises(IqError) as e:
        await b.plugin["xep_0199"].send_ping(f"{r}/secondwitch", timeout=T)
    assert e.value.iq["error"]["condition"] == "not-acceptable"
    await close(a, b)


async def test_bad_configuration_forms_are_refused(server):
    a = await login(server, "alice")
    r = room(server)
    await create(a, r, "firstwitch")
    for fields in ({"maxusers": "lots"}, {"maxusers": "100000"}, {"whois": "everyone"},
                   {"moderatedroom": "perhaps"}, {"passwordprotectedroom": "1"}):
        with pytest.raises(IqError) as e:
            await a.plugin["xep_0045"].set_room_config(r, submit(**fields), timeout=T)
        assert e.value.iq["error"]["condition"] == "bad-request", fields
    # Nothing of it was applied.
    info = await a.plugin["xep_0030"].get_info(jid=r, timeout=T)
    assert "muc_unmoderated" in info["disco_info"]["features"]
    assert "muc_unsecured" in info["disco_info"]["features"]
    await close(a)


async def test_muc_user_extensions_an_occupant_sends_are_stripped(server):
    """§18.2 rule 6, XEP-0313 §5.1: only the room speaks muc#user; a forged item claiming
    another sender reaches neither the other occupants nor the archive, in groupchat and in
    private messages (which carry the room's own empty marker, once)."""
    a, b = await login(server, "alice"), await login(server, "bob")
    r = room(server)
    await create(a, r, "firstwitch")
    await join(b, r, "secondwitch")
    forged = f"<x xmlns='{NS_USER}'><item jid='victim@{server.domain}'/></x>"
    b.send_raw(f"<message xmlns='jabber:client' to='{r}' type='groupchat'>"
               f"<body>not me</body>{forged}</message>")
    m = await a.inbox.wait(lambda el: el.findtext("{jabber:client}body") == "not me", T, "echo")
    assert m.find(f"{{{NS_USER}}}x") is None
    bodies, _, _ = await room_archive(a, r)
    assert bodies == ["not me"]
    archived = [el for el in a.inbox.items if el.find(f"{{{NS_MAM}}}result") is not None]
    items = [i.get("jid") for el in archived for i in el.iter(f"{{{NS_USER}}}item")]
    # The owner is shown the real sender (XEP-0313 §5.1.2), never the forged one.
    assert archived and items == [b.boundjid.bare]
    b.send_raw(f"<message xmlns='jabber:client' to='{r}/firstwitch' type='chat'>"
               f"<body>psst</body>{forged}</message>")
    pm = await a.inbox.wait(lambda el: el.findtext("{jabber:client}body") == "psst", T, "the PM")
    xs = pm.findall(f"{{{NS_USER}}}x")
    assert len(xs) == 1 and list(xs[0]) == []
    await close(a, b)


async def test_a_join_from_a_session_already_in_the_room_is_a_full_join(server):
    """§7.2.1, §18.2 rule 3: a client that lost track of the room joins again on the same
    session; it gets the others' presence, its own, the history and the subject again, and
    the others hear nothing (its presence did not change)."""
    a, b = await login(server, "alice"), await login(server, "bob")
    r = room(server)
    await create(a, r, "firstwitch")
    a.plugin["xep_0045"].set_subject(r, "Fire Burn")
    a.send_message(mto=r, mbody="m1", mtype="groupchat")
    await a.inbox.wait(lambda el: el.findtext("{jabber:client}body") == "m1", T, "m1")
    await join(b, r, "secondwitch")
    await presence_from(a, f"{r}/secondwitch")
    a.inbox.items.clear()
    b.inbox.items.clear()
    b.plugin["xep_0045"].make_join_stanza(r, "secondwitch").send()
    await presence_from(b, f"{r}/firstwitch", unavailable=False)
    await presence_from(b, f"{r}/secondwitch", code=110)
    past = await b.inbox.wait(lambda el: el.findtext("{jabber:client}body") == "m1", T, "history")
    assert past.find("{urn:xmpp:delay}delay") is not None
    await b.inbox.wait(lambda el: el.findtext("{jabber:client}subject") == "Fire Burn", T, "subject")
    b.send_message(mto=r, mbody="still here", mtype="groupchat")
    await a.inbox.wait(lambda el: el.findtext("{jabber:client}body") == "still here", T, "echo")
    assert not [el for el in a.inbox.items if el.tag.endswith("presence")]
    await close(a, b)


async def test_iqs_to_an_occupant_of_a_room_that_does_not_exist_are_not_acceptable(server):
    """XEP-0410 §3.2: nobody is joined to a room that does not exist; a self-ping gets
    not-acceptable (cancel), on which the client rejoins."""
    a = await login(server, "alice")
    with pytest.raises(IqError) as e:
        await a.plugin["xep_0199"].send_ping(f"{room(server, 'nowhere')}/firstwitch", timeout=T)
    assert (e.value.iq["error"]["type"], e.value.iq["error"]["condition"]) == \
        ("cancel", "not-acceptable")
    # The room itself still does not exist.
    with pytest.raises(IqError) as e:
        await a.plugin["xep_0030"].get_info(jid=room(server, "nowhere"), timeout=T)
    assert (e.value.iq["error"]["type"], e.value.iq["error"]["condition"]) == \
        ("cancel", "item-not-found")
    await close(a)


async def test_stable_message_ids_are_advertised_and_kept(server):
    """XEP-0045 muc#stable_id: the service and its rooms say so, and the echo of a groupchat
    message carries the id its sender gave it."""
    a, b = await login(server, "alice"), await login(server, "bob")
    r = room(server)
    await create(a, r, "firstwitch")
    await join(b, r, "secondwitch")
    for jid in (service(server), r):
        info = await a.plugin["xep_0030"].get_info(jid=jid, timeout=T)
        assert NS_MUC + "#stable_id" in info["disco_info"]["features"], jid
    b.send_raw(f"<message xmlns='jabber:client' to='{r}' type='groupchat' id='toil-1'>"
               "<body>double</body></message>")
    for c in (a, b):
        m = await c.inbox.wait(lambda el: el.findtext("{jabber:client}body") == "double", T, "echo")
        assert m.get("id") == "toil-1"
    await close(a, b)


async def test_members_of_a_private_group_see_who_belongs(server):
    """§9.5: in a members-only non-anonymous room (a "private group", whose clients encrypt
    to every member) a member may read the member, admin and owner lists; not the outcasts,
    and not in a semi-anonymous room."""
    a, b = await login(server, "alice"), await login(server, "bob")
    r = room(server)
    await create(a, r, "firstwitch", membersonly="1", whois="anyone")
    await a.plugin["xep_0045"].set_affiliation(r, "member", jid=b.boundjid.bare, timeout=T)
    await join(b, r, "secondwitch")
    muc = b.plugin["xep_0045"]
    assert await muc.get_affiliation_list(r, "member", timeout=T) == [b.boundjid.bare]
    assert await muc.get_affiliation_list(r, "owner", timeout=T) == [a.boundjid.bare]
    assert await muc.get_affiliation_list(r, "admin", timeout=T) == []
    with pytest.raises(IqError) as e:
        await muc.get_affiliation_list(r, "outcast", timeout=T)
    assert e.value.iq["error"]["condition"] == "forbidden"
    r2 = room(server, "semi")
    await create(a, r2, "firstwitch", membersonly="1")
    await a.plugin["xep_0045"].set_affiliation(r2, "member", jid=b.boundjid.bare, timeout=T)
    with pytest.raises(IqError) as e:
        await muc.get_affiliation_list(r2, "member", timeout=T)
    assert e.value.iq["error"]["condition"] == "forbidden"
    await close(a, b)


async def admin_items(c: SlixClient, r: str, items: str):
    """A muc#admin set of raw `items` to room `r`."""
    iq = c.make_iq_set(ito=r)
    iq.append(ET.fromstring(f"<query xmlns='{NS_MUC}#admin'>{items}</query>"))
    return await iq.send(timeout=T)


async def test_admin_requests_are_checked_as_the_xep_says(server):
    a, b, c = await login(server, "alice"), await login(server, "bob"), await login(server, "carol")
    r = room(server)
    await create(a, r, "firstwitch")
    await join(b, r, "secondwitch")
    await join(c, r, "thirdwitch")
    # §18.4: an item with both a role and an affiliation is not understood.
    with pytest.raises(IqError) as e:
        await admin_items(a, r, "<item nick='thirdwitch' role='none' affiliation='outcast'/>")
    assert e.value.iq["error"]["condition"] == "bad-request"
    # §8.4: a moderator does not revoke voice from someone of its own affiliation (none).
    await a.plugin["xep_0045"].set_role(r, "thirdwitch", "moderator", timeout=T)
    with pytest.raises(IqError) as e:
        await c.plugin["xep_0045"].set_role(r, "secondwitch", "visitor", timeout=T)
    assert e.value.iq["error"]["condition"] == "not-allowed"
    # §9.1: an admin does not ban itself.
    await a.plugin["xep_0045"].set_affiliation(r, "admin", jid=b.boundjid.bare, timeout=T)
    with pytest.raises(IqError) as e:
        await b.plugin["xep_0045"].set_affiliation(r, "outcast", jid=b.boundjid.bare, timeout=T)
    assert e.value.iq["error"]["condition"] == "conflict"
    # §8.2: an owner may kick an admin (a moderator of lower affiliation may not).
    await a.plugin["xep_0045"].set_role(r, "secondwitch", "none", timeout=T)
    kicked = await presence_from(b, f"{r}/secondwitch", code=307)
    assert item_of(kicked).get("role") == "none"
    await close(a, b, c)


async def test_the_archive_of_a_password_protected_room_is_for_those_who_may_enter(server):
    """XEP-0313 §6.1.2: the room checks the requester has the right to enter it; without
    the password, only its members and occupants do."""
    a, c = await login(server, "alice"), await login(server, "carol")
    r = room(server)
    await create(a, r, "firstwitch", passwordprotectedroom="1", roomsecret="cauldronburn")
    a.send_message(mto=r, mbody="secret", mtype="groupchat")
    await a.inbox.wait(lambda el: el.findtext("{jabber:client}body") == "secret", T, "echo")
    with pytest.raises(IqError) as e:
        await room_archive(c, r)
    assert e.value.iq["error"]["condition"] == "forbidden"
    await join(c, r, "thirdwitch", password="cauldronburn")
    assert (await room_archive(c, r))[0] == ["secret"]
    await close(a, c)


async def test_a_nickname_spelled_anew_is_a_nickname_change(server):
    """§7.6: another spelling of one's nickname (case, PRECIS normalization) is a nickname
    change, 303 with the new spelling; §7.2.3: a session entering an occupant's nickname
    spelled otherwise is told the room's spelling with 210."""
    a1, a2, b = (await login(server, "alice", "laptop"), await login(server, "alice", "phone"),
                 await login(server, "bob"))
    r = room(server)
    await create(a1, r, "firstwitch")
    await join(b, r, "secondwitch")
    b.send_presence(pto=f"{r}/SecondWitch")
    gone = await presence_from(a1, f"{r}/secondwitch", code=303)
    assert gone.get("type") == "unavailable" and item_of(gone).get("nick") == "SecondWitch"
    await presence_from(a1, f"{r}/SecondWitch", unavailable=False)
    mine = await presence_from(b, f"{r}/secondwitch", code=303)
    assert {s.get("code") for s in mine.iter(f"{{{NS_USER}}}status")} == {"110", "303"}
    a2.send_raw(f"<presence xmlns='jabber:client' to='{r}/FIRSTWITCH'><x xmlns='{NS_MUC}'/></presence>")
    own = await presence_from(a2, f"{r}/firstwitch", code=110)
    assert {s.get("code") for s in own.iter(f"{{{NS_USER}}}status")} == {"110", "210"}
    await close(a1, a2, b)


async def test_an_occupant_whose_messages_bounce_is_removed(server):
    """XEP-0045 §17.1.2: a delivery error for what the room sent an occupant (its server gone,
    the resource unavailable …) makes it a ghost: it leaves, the others see 333. An error
    about the content itself changes nothing."""
    a, b = await login(server, "alice"), await login(server, "bob")
    r = room(server, "ghosts")
    await create(a, r, "alice")
    await join(b, r, "bob")
    stanzas = "urn:ietf:params:xml:ns:xmpp-stanzas"
    b.send_raw(f"<message xmlns='jabber:client' to='{r}' type='error'><error type='modify'>"
               f"<not-acceptable xmlns='{stanzas}'/></error></message>")
    b.send_raw(f"<message xmlns='jabber:client' to='{r}' type='groupchat'>"
               "<body>still here</body></message>")
    await a.inbox.wait(lambda el: el.findtext("{jabber:client}body") == "still here", T,
                       "bob's message after a content error")
    b.send_raw(f"<message xmlns='jabber:client' to='{r}' type='error'><error type='wait'>"
               f"<recipient-unavailable xmlns='{stanzas}'/></error></message>")
    await presence_from(a, f"{r}/bob", code=333, unavailable=True)
    await close(a, b)


async def test_storage_hints_keep_messages_out_of_history_and_archive(server):
    """XEP-0334: a `no-permanent-store` message is in the history newcomers get but not in
    the room's archive; a `no-store` one in neither. Both reach the occupants present."""
    a, b = await login(server, "alice"), await login(server, "bob")
    r = room(server, "hints")
    await create(a, r, "firstwitch")
    for body, hint in [("kept", ""), ("not logged", "no-permanent-store"),
                       ("not kept", "no-store")]:
        extra = f"<{hint} xmlns='urn:xmpp:hints'/>" if hint else ""
        a.send_raw(f"<message xmlns='jabber:client' to='{r}' type='groupchat'>"
                   f"<body>{body}</body>{extra}</message>")
        await a.inbox.wait(lambda el, body=body: el.findtext("{jabber:client}body") == body, T,
                           body)
    _pres, _subject, _occupants, history = await b.plugin["xep_0045"].join_muc_wait(
        r, "secondwitch", timeout=T)
    assert [m["body"] for m in history] == ["kept", "not logged"]
    bodies, _ids, _complete = await room_archive(b, r)
    assert bodies == ["kept"]
    await close(a, b)


async def test_the_subject_says_who_set_it_and_when_also_after_a_restart(server_factory,
                                                                        backend):
    """The subject a newcomer gets (XEP-0045 §7.2.15) is a message from the occupant who set
    it: it carries that occupant's XEP-0421 id, kept when the setter has left and across a
    restart of a persistent room, and a `<delay/>` from the room of when it was set."""
    srv = server_factory(backend=backend)
    a = await login(srv, "alice")
    r = room(srv, "subjects")
    await create(a, r, "firstwitch", persistentroom="1")
    a.send_raw(f"<message xmlns='jabber:client' to='{r}' type='groupchat'>"
               "<subject>Fire burn</subject></message>")
    changed = await a.inbox.wait(lambda el: el.findtext("{jabber:client}subject") == "Fire burn",
                                 T, "the subject change")
    setter = changed.find(f"{{{NS_OCCUPANT_ID}}}occupant-id").get("id")
    await close(a)
    srv.crash_restart()
    b = await login(srv, "bob")
    b.plugin["xep_0045"].join_muc(r, "secondwitch")
    got = await b.inbox.wait(lambda el: el.findtext("{jabber:client}subject") == "Fire burn", T,
                             "the subject on entering")
    assert got.get("from") == f"{r}/firstwitch"
    assert got.find(f"{{{NS_OCCUPANT_ID}}}occupant-id").get("id") == setter
    assert got.find("{urn:xmpp:delay}delay").get("from") == r
    await close(b)


async def test_occupants_are_told_when_the_service_shuts_down(server):
    """XEP-0045 §17.1.4: at a clean shutdown every occupant gets its own unavailable
    presence with 110 and 332 before its stream closes, so that its client knows why it
    left the room (and rejoins when the server is back)."""
    a = await login(server, "alice")
    b = await login(server, "bob")
    r = room(server)
    await create(a, r, "firstwitch")
    await join(b, r, "secondwitch")
    try:
        assert server.stop() == 0
        for c, nick in ((a, "firstwitch"), (b, "secondwitch")):
            pres = await presence_from(c, f"{r}/{nick}", unavailable=True, code=332)
            assert any(s.get("code") == "110" for s in pres.iter(f"{{{NS_USER}}}status"))
            assert item_of(pres).get("role") == "none"
    finally:
        await close(a, b)


async def raw_iq(c: SlixClient, to: str, kind: str, payload: str) -> ET.Element:
    """Sends an IQ with `payload` written out; returns the answer, result or error."""
    iq = c.make_iq_set(ito=to) if kind == "set" else c.make_iq_get(ito=to)
    iq.append(ET.fromstring(payload))
    try:
        return (await iq.send(timeout=T)).xml
    except IqError as e:
        return e.iq.xml


def error_of(iq: ET.Element) -> tuple[str | None, str | None]:
    err = iq.find("{jabber:client}error")
    assert err is not None, ET.tostring(iq)
    cond = next(c.tag.split("}")[1] for c in err if "xmpp-stanzas" in c.tag and c.tag != "text")
    return err.get("type"), cond


async def test_room_disco_nodes_and_unsupported_requests(server):
    """§7.12: disco#info at `x-roomuser-item` names the asker's reserved nickname, or is
    empty; the `#traffic` node is not offered (§17.1.2: feature-not-implemented), other nodes
    do not exist; a request the room does not serve — registration (§7.10), vcard-temp — is
    service-unavailable (RFC 6120 §8.3.3.19), not not-allowed."""
    a, b = await login(server, "alice"), await login(server, "bob")
    r = room(server)
    await create(a, r, "firstwitch")
    set_nick = (f"<query xmlns='{NS_MUC}#admin'><item affiliation='member' "
                f"jid='{b.boundjid.bare}' nick='Bobby'/></query>")
    assert (await raw_iq(a, r, "set", set_nick)).get("type") == "result"
    disco = "http://jabber.org/protocol/disco#info"
    got = await raw_iq(b, r, "get", f"<query xmlns='{disco}' node='x-roomuser-item'/>")
    q = got.find(f"{{{disco}}}query")
    assert q.get("node") == "x-roomuser-item"
    assert [(i.get("category"), i.get("type"), i.get("name"))
            for i in q.findall(f"{{{disco}}}identity")] == [("conference", "text", "Bobby")]
    got = await raw_iq(a, r, "get", f"<query xmlns='{disco}' node='x-roomuser-item'/>")
    assert list(got.find(f"{{{disco}}}query")) == []
    got = await raw_iq(b, r, "get", f"<query xmlns='{disco}' node='{NS_MUC}#traffic'/>")
    assert error_of(got) == ("cancel", "feature-not-implemented")
    got = await raw_iq(b, r, "get", f"<query xmlns='{disco}' node='nonsense'/>")
    assert error_of(got) == ("cancel", "item-not-found")
    for payload in ("<query xmlns='jabber:iq:register'/>", "<vCard xmlns='vcard-temp'/>"):
        got = await raw_iq(b, r, "get", payload)
        assert error_of(got) == ("cancel", "service-unavailable"), payload
    await close(a, b)


async def test_presence_without_the_muc_extension_from_outside_is_a_kick(server):
    """§7.2 "Groupchat 1.0 Protocol": a presence without `<x xmlns='…muc'/>` from a full JID
    that is not in the room comes from a client that lost track of it; it is kicked (110,
    307, 333), neither let in half-joined nor given a new room."""
    a, b = await login(server, "alice"), await login(server, "bob")
    r, gone = room(server), room(server, "vanished")
    await create(a, r, "firstwitch")
    for target in (r, gone):
        b.send_raw(f"<presence xmlns='jabber:client' to='{target}/secondwitch'>"
                   "<show>away</show></presence>")
        kick = await presence_from(b, f"{target}/secondwitch", unavailable=True)
        assert codes_of(kick) == {110, 307, 333}
        assert (item_of(kick).get("affiliation"), item_of(kick).get("role")) == ("none", "none")
    with pytest.raises(IqError) as e:
        await b.plugin["xep_0030"].get_info(jid=gone, timeout=T)
    assert e.value.iq["error"]["condition"] == "item-not-found"
    # alice heard nothing of it, and bob can still join properly.
    assert not [el for el in a.inbox.items
                if el.tag.endswith("presence") and el.get("from") == f"{r}/secondwitch"]
    await join(b, r, "secondwitch")
    await close(a, b)


def codes_of(el: ET.Element) -> set[int]:
    return {int(s.get("code")) for s in el.iter(f"{{{NS_USER}}}status")}


async def test_the_subject_follows_its_setters_nickname(server):
    """§7.2.15: the subject comes from the occupant JID of who set it — after a nickname
    change, from the new one, not from whoever took the old nickname since."""
    a, b, c = (await login(server, "alice"), await login(server, "bob"),
               await login(server, "carol"))
    r = room(server)
    await create(a, r, "firstwitch")
    await join(b, r, "secondwitch")
    a.plugin["xep_0045"].set_subject(r, "Fire Burn")
    await b.inbox.wait(lambda el: el.findtext("{jabber:client}subject") == "Fire Burn", T, "subject")
    a.send_raw(f"<presence xmlns='jabber:client' to='{r}/crone'/>")
    await presence_from(b, f"{r}/crone")
    b.send_raw(f"<presence xmlns='jabber:client' to='{r}/firstwitch'/>")
    await presence_from(a, f"{r}/firstwitch")
    await join(c, r, "thirdwitch")
    subject = await c.inbox.wait(lambda el: el.findtext("{jabber:client}subject") == "Fire Burn",
                                 T, "the subject")
    assert subject.get("from") == f"{r}/crone"
    await close(a, b, c)


async def test_a_refused_invitation_among_several_grants_nothing(server):
    """§7.8.2 with several `<invite/>`s: one refused (a banned invitee) refuses them all,
    and no membership is left from the others; `<continue/>` goes on with an invitation."""
    a, b, c = (await login(server, "alice"), await login(server, "bob"),
               await login(server, "carol"))
    r = room(server)
    await create(a, r, "firstwitch", membersonly="1", persistentroom="1")
    ban = (f"<query xmlns='{NS_MUC}#admin'><item affiliation='outcast' "
           f"jid='banned@{server.domain}'/></query>")
    assert (await raw_iq(a, r, "set", ban)).get("type") == "result"
    a.send_raw(f"<message xmlns='jabber:client' to='{r}'><x xmlns='{NS_USER}'>"
               f"<invite to='{b.boundjid.bare}'/><invite to='banned@{server.domain}'/></x></message>")
    err = await a.inbox.wait(lambda el: el.tag.endswith("message") and el.get("type") == "error",
                             T, "the refusal")
    assert error_of(err) == ("cancel", "not-allowed")
    members = await raw_iq(a, r, "get",
                           f"<query xmlns='{NS_MUC}#admin'><item affiliation='member'/></query>")
    assert members.findall(f"{{{NS_MUC}#admin}}query/{{{NS_MUC}#admin}}item") == []
    a.send_raw(f"<message xmlns='jabber:client' to='{r}'><x xmlns='{NS_USER}'>"
               f"<invite to='{c.boundjid.bare}'><reason>join us</reason>"
               "<continue thread='t1'/></invite></x></message>")
    inv = await c.inbox.wait(lambda el: el.find(f"{{{NS_USER}}}x/{{{NS_USER}}}invite") is not None,
                             T, "the invitation")
    i = inv.find(f"{{{NS_USER}}}x/{{{NS_USER}}}invite")
    assert i.findtext(f"{{{NS_USER}}}reason") == "join us"
    assert i.find(f"{{{NS_USER}}}continue").get("thread") == "t1"
    await close(a, b, c)


async def test_history_an_owner_brought_keeps_its_own_delay(server):
    """§7.9: the room adds no `<delay/>` of its own to history that came with one (an owner
    bringing a one-to-one chat's history into the room)."""
    a, b = await login(server, "alice"), await login(server, "bob")
    r = room(server)
    await create(a, r, "firstwitch")
    a.send_raw(f"<message xmlns='jabber:client' to='{r}' type='groupchat'><body>earlier</body>"
               f"<delay xmlns='urn:xmpp:delay' from='{a.boundjid.bare}' "
               "stamp='2026-01-01T10:00:00Z'/></message>")
    await a.inbox.wait(lambda el: el.findtext("{jabber:client}body") == "earlier", T, "echo")
    await join(b, r, "secondwitch")
    past = await b.inbox.wait(lambda el: el.findtext("{jabber:client}body") == "earlier", T,
                              "history")
    delays = past.findall("{urn:xmpp:delay}delay")
    assert [(d.get("from"), d.get("stamp")) for d in delays] == \
        [(a.boundjid.bare, "2026-01-01T10:00:00Z")]
    await close(a, b)


# ---- audit 37: what a room keeps is bounded ----------------------------------------------------

async def test_room_texts_are_bounded(server):
    """Audit 37 L4: a room name over 1 KiB or a description over 4 KiB is refused with
    `not-acceptable` (§10.1.2: configuration values that violate service policies) and
    nothing is applied; so is a subject over 4 KiB (RFC 6120 §8.3.3.13), which stays as it
    was."""
    a = await login(server, "alice")
    r = room(server)
    await create(a, r, "firstwitch")
    for fields in ({"roomname": "n" * 1025}, {"roomdesc": "d" * 4097}):
        with pytest.raises(IqError) as e:
            await a.plugin["xep_0045"].set_room_config(r, submit(**fields), timeout=T)
        assert e.value.iq["error"]["condition"] == "not-acceptable", fields
    await a.plugin["xep_0045"].set_room_config(
        r, submit(roomname="n" * 1024, roomdesc="d" * 4096), timeout=T)
    a.plugin["xep_0045"].set_subject(r, "s" * 4097)
    refused = await a.inbox.wait(lambda el: el.tag.endswith("message") and el.get("from") == r
                                 and el.get("type") == "error", T, "the subject refused")
    assert refused.find("{jabber:client}error/{urn:ietf:params:xml:ns:xmpp-stanzas}"
                        "not-acceptable") is not None
    b = await login(server, "bob")
    await join(b, r, "secondwitch")
    subject = await b.inbox.wait(lambda el: el.find("{jabber:client}subject") is not None,
                                 T, "the subject")
    assert not subject.findtext("{jabber:client}subject")
    await close(a, b)


async def test_room_history_is_bounded_in_bytes(server):
    """Audit 37 L4: a room keeps at most `[muc] history_max_bytes` (128 KiB) of history, the
    oldest going first, so a newcomer is not sent more than its session can queue (20
    messages of 240 KB used to disconnect every joiner): three messages of 60 KB leave the
    last two."""
    a, b = await login(server, "alice"), await login(server, "bob")
    r = room(server)
    await create(a, r, "firstwitch")
    for n in range(1, 4):
        a.send_message(mto=r, mbody=f"m{n} " + "x" * 60000, mtype="groupchat")
        await a.inbox.wait(lambda el, n=n: (el.findtext("{jabber:client}body") or "")
                           .startswith(f"m{n} "), T, f"m{n}")
    _pres, _subject, _occupants, history = await b.plugin["xep_0045"].join_muc_wait(
        r, "secondwitch", timeout=T)
    assert [m["body"].split()[0] for m in history] == ["m2", "m3"]
    await close(a, b)


async def test_affiliation_lists_and_reasons_are_bounded(server_factory):
    """Audit 37 L5: a room holds at most `[muc] max_affiliations` JIDs with an affiliation;
    a set that would add past it gets `resource-constraint` (RFC 6120 §8.3.3.18; XEP-0045
    names none) and changes nothing, while changing who is already listed still works; a
    `<reason/>` over 1 KiB is `not-acceptable`."""
    srv = server_factory(muc={"max_affiliations": 5})
    a = await login(srv, "alice")
    r = room(srv)
    await create(a, r, "firstwitch")

    def members(*names, reason=""):
        why = f"<reason>{reason}</reason>" if reason else ""
        return "".join(f"<item affiliation='member' jid='{n}@example.net'>{why}</item>"
                       for n in names)

    with pytest.raises(IqError) as e:
        await admin_items(a, r, members("m1", "m2", "m3", "m4", "m5"))
    assert e.value.iq["error"]["condition"] == "resource-constraint"
    await admin_items(a, r, members("m1", "m2", "m3", "m4"))
    with pytest.raises(IqError) as e:
        await admin_items(a, r, members("m5"))
    assert e.value.iq["error"]["condition"] == "resource-constraint"
    await admin_items(a, r, "<item affiliation='admin' jid='m1@example.net'/>")
    with pytest.raises(IqError) as e:
        await admin_items(a, r, members("m2", reason="r" * 1025))
    assert e.value.iq["error"]["condition"] == "not-acceptable"
    listed = await raw_iq(a, r, "get", f"<query xmlns='{NS_MUC}#admin'>"
                                       "<item affiliation='member'/></query>")
    jids = {i.get("jid") for i in listed.iter(f"{{{NS_MUC}#admin}}item")}
    assert jids == {"m2@example.net", "m3@example.net", "m4@example.net"}
    await close(a)
