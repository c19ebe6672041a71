"""Message archives (XEP-0313 `urn:xmpp:mam:2`) of accounts, driven by slixmpp's xep_0313
plugin (an independent implementation) and raw queries where exact paging matters.

Both directions archived, the XEP-0359 stanza-id on delivered messages equal to the archive
id; RSM paging forwards and backwards with `<fin complete/>` right; `with`, `start`/`end`,
`#extended` ids; preferences; bad queries (unknown field, huge `max`, unknown ids, another
account's archive); persistence across a restart on each store; removal with the account.
"""
from __future__ import annotations

import asyncio
import uuid
import xml.etree.ElementTree as ET

import pytest
from slixmpp import JID
from slixmpp.exceptions import IqError

from conftest import SqliteLock
from slix import SlixClient, slix_login
from xmpp_raw import NS_STANZA_ERR

NS_MAM = "urn:xmpp:mam:2"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_SID = "urn:xmpp:sid:0"
NS_FWD = "urn:xmpp:forward:0"
NS_SM = "urn:xmpp:sm:3"
T = 10


async def login(srv, user: str, resource: str = "test") -> SlixClient:
    return await slix_login(srv, user, resource=resource, presence=True,
                            plugins=("xep_0004", "xep_0059", "xep_0313"))


async def chat(a: SlixClient, b: SlixClient, body: str) -> ET.Element:
    """`a` sends `body` to `b`'s bare JID; returns the message as `b` got it."""
    a.send_message(mto=b.boundjid.bare, mbody=body, mtype="chat")
    return await b.inbox.wait(lambda el: el.findtext("{jabber:client}body") == body, T, body)


def form(**fields) -> str:
    out = [f"<field var='FORM_TYPE' type='hidden'><value>{NS_MAM}</value></field>"]
    for k, v in fields.items():
        values = v if isinstance(v, list) else [v]
        out.append(f"<field var='{k.rstrip('_').replace('_', '-')}'>" +
                   "".join(f"<value>{x}</value>" for x in values) + "</field>")
    return "<x xmlns='jabber:x:data' type='submit'>" + "".join(out) + "</x>"


async def query(c: SlixClient, *, rsm: str = "", to: str | None = None, flip: bool = False,
                **fields):
    """A raw query (with `<flip-page/>` when `flip`); returns (bodies in the order received,
    archive ids, the fin element)."""
    qid = uuid.uuid4().hex[:8]
    iq = c.make_iq_set(ito=to)
    iq.append(ET.fromstring(f"<query xmlns='{NS_MAM}' queryid='{qid}'>{form(**fields)}"
                            f"<set xmlns='{NS_RSM}'>{rsm}</set>"
                            f"{'<flip-page/>' if flip else ''}</query>"))
    res = await iq.send(timeout=T)
    fin = res.xml.find(f"{{{NS_MAM}}}fin")
    results = [el.find(f"{{{NS_MAM}}}result") for el in c.inbox.items
               if el.find(f"{{{NS_MAM}}}result") is not None
               and el.find(f"{{{NS_MAM}}}result").get("queryid") == qid]
    bodies = [r.findtext(f"{{{NS_FWD}}}forwarded/{{jabber:client}}message/{{jabber:client}}body")
              for r in results]
    return bodies, [r.get("id") for r in results], fin


def complete(fin) -> bool:
    return fin.get("complete") in ("true", "1")


async def close(*cs):
    for c in cs:
        await c.close()


async def test_both_directions_with_stanza_ids(server):
    a, b = await login(server, "alice"), await login(server, "bob")
    info = await a.plugin["xep_0030"].get_info(jid=a.boundjid.bare, timeout=T)
    assert NS_MAM in info["disco_info"]["features"]
    got = await chat(a, b, "hello bob")
    sid = got.find(f"{{{NS_SID}}}stanza-id")
    assert sid is not None and sid.get("by") == b.boundjid.bare
    # The sender's archive, through slixmpp's plugin.
    res = await a.plugin["xep_0313"].retrieve(with_jid=JID(b.boundjid.bare), timeout=T)
    bodies = [m["mam_result"]["forwarded"]["stanza"]["body"] for m in res["mam"]["results"]]
    assert bodies == ["hello bob"]
    # The recipient's archive: the id it was told is the archive id.
    bodies, ids, fin = await query(b, with_=a.boundjid.bare)
    assert bodies == ["hello bob"] and ids == [sid.get("id")]
    assert complete(fin)
    await close(a, b)


async def test_paging_forwards_and_backwards(server):
    a, b = await login(server, "alice"), await login(server, "bob")
    for n in range(1, 8):
        await chat(a, b, f"m{n}")
    bodies, ids, fin = await query(b, rsm="<max>3</max>")
    assert bodies == ["m1", "m2", "m3"] and not complete(fin)
    assert fin.findtext(f"{{{NS_RSM}}}set/{{{NS_RSM}}}first") == ids[0]
    assert fin.findtext(f"{{{NS_RSM}}}set/{{{NS_RSM}}}last") == ids[-1]
    bodies, ids2, fin = await query(b, rsm=f"<max>3</max><after>{ids[-1]}</after>")
    assert bodies == ["m4", "m5", "m6"] and not complete(fin)
    bodies, _, fin = await query(b, rsm=f"<max>3</max><after>{ids2[-1]}</after>")
    assert bodies == ["m7"] and complete(fin)
    # Backwards from the end.
    bodies, ids, fin = await query(b, rsm="<max>3</max><before/>")
    assert bodies == ["m5", "m6", "m7"] and not complete(fin)
    bodies, ids, fin = await query(b, rsm=f"<max>3</max><before>{ids[0]}</before>")
    assert bodies == ["m2", "m3", "m4"] and not complete(fin)
    bodies, _, fin = await query(b, rsm=f"<max>3</max><before>{ids[0]}</before>")
    assert bodies == ["m1"] and complete(fin)
    # Flipped pages (`#extended`, §4.3.4): the same results, newest first; the fin's bounds
    # stay in archive order.
    bodies, ids, fin = await query(b, rsm="<max>3</max><before/>", flip=True)
    assert bodies == ["m7", "m6", "m5"] and not complete(fin)
    assert fin.findtext(f"{{{NS_RSM}}}set/{{{NS_RSM}}}first") == ids[-1]
    assert fin.findtext(f"{{{NS_RSM}}}set/{{{NS_RSM}}}last") == ids[0]
    bodies, _, fin = await query(b, rsm=f"<max>3</max><before>{ids[-1]}</before>", flip=True)
    assert bodies == ["m4", "m3", "m2"] and not complete(fin)
    bodies, _, fin = await query(b, rsm="<max>10</max>", flip=True)
    assert bodies == [f"m{n}" for n in range(7, 0, -1)] and complete(fin)
    # slixmpp's own RSM iteration walks the whole archive.
    seen = [m["mam_result"]["forwarded"]["stanza"]["body"]
            async for m in b.plugin["xep_0313"].iterate(rsm={"max": 2})]
    assert seen == [f"m{n}" for n in range(1, 8)]
    await close(a, b)


async def test_filters_by_jid_time_and_ids(server):
    a, b, c = await login(server, "alice"), await login(server, "bob"), await login(server, "carol")
    await chat(a, b, "from alice")
    await chat(c, b, "from carol")
    await chat(a, b, "alice again")
    bodies, ids, _ = await query(b, with_=c.boundjid.full)
    assert bodies == ["from carol"]
    bodies, _, fin = await query(b, start="2999-01-01T00:00:00Z")
    assert bodies == [] and complete(fin)
    bodies, _, _ = await query(b, start="2000-01-01T00:00:00Z", end="2999-01-01T00:00:00+02:00")
    assert len(bodies) == 3
    _, all_ids, _ = await query(b)
    bodies, _, _ = await query(b, ids=[all_ids[2], all_ids[0]])
    assert bodies == ["from alice", "alice again"]
    bodies, _, _ = await query(b, after_id=all_ids[0])
    assert bodies == ["from carol", "alice again"]
    bodies, _, _ = await query(b, before_id=all_ids[2])
    assert bodies == ["from alice", "from carol"]
    # §4.1.5: the search form offers these fields; `ids` is a list open to any value.
    form = await b.plugin["xep_0313"].get_fields(timeout=T)
    fields = {f.get("var"): f for f in form.xml.findall("{jabber:x:data}field")}
    assert {"with", "start", "end", "before-id", "after-id", "ids"} <= set(fields)
    assert fields["ids"].get("type") == "list-multi"
    assert fields["ids"].find("{http://jabber.org/protocol/xdata-validate}validate/"
                              "{http://jabber.org/protocol/xdata-validate}open") is not None
    await close(a, b, c)


def follows_closely(a: str, b: str) -> bool:
    """Whether id `b` is `a` plus a small count (read as hex): the next id can be guessed."""
    try:
        return 0 < int(b, 16) - int(a, 16) < 1 << 24
    except ValueError:
        return False


async def test_archive_ids_are_unpredictable_and_last(server_factory, backend):
    """XEP-0313 §3 (a UID that MUST be unpredictable), XEP-0359 §8 (nothing to infer from
    it): consecutive archive ids are not a count anyone can follow; they stay valid for
    `ids`, `after-id` and RSM after a restart (the key is the database's)."""
    srv = server_factory(backend=backend)
    a, b = await login(srv, "alice"), await login(srv, "bob")
    got = [await chat(a, b, f"guess {i}") for i in range(4)]
    sids = [g.find(f"{{{NS_SID}}}stanza-id").get("id") for g in got]
    assert len(set(sids)) == 4
    assert not any(follows_closely(x, y) for x, y in zip(sids, sids[1:])), sids
    # A query settles the archive: what it shows survives `kill -9`.
    assert (await query(b))[1] == sids
    await close(a, b)
    srv.crash_restart()
    b = await login(srv, "bob")
    bodies, ids, _ = await query(b, ids=[sids[3], sids[0]])
    assert bodies == ["guess 0", "guess 3"] and ids == [sids[0], sids[3]]
    bodies, _, _ = await query(b, after_id=sids[1])
    assert bodies == ["guess 2", "guess 3"]
    bodies, _, _ = await query(b, rsm=f"<after>{sids[2]}</after>")
    assert bodies == ["guess 3"]
    await close(b)


async def test_a_message_to_oneself_is_archived_once(server):
    """§6.1.1: a stanza goes into a given archive only once — a note to one's own account is
    both sent and received by it; the copy delivered carries that one row's id."""
    a1, a2 = await login(server, "alice", "one"), await login(server, "alice", "two")
    a1.send_message(mto=a2.boundjid.full, mbody="note to self", mtype="chat")
    got = await a2.inbox.wait(lambda el: el.findtext("{jabber:client}body") == "note to self",
                              T, "the note")
    sid = got.find(f"{{{NS_SID}}}stanza-id")
    bodies, ids, _ = await query(a1, with_=a1.boundjid.bare)
    assert bodies == ["note to self"] and ids == [sid.get("id")]
    await close(a1, a2)


async def test_a_sent_carbon_carries_the_senders_archive_id(server):
    """XEP-0313 §5.1.1: no `<stanza-id/>` of the sender's archive on what the recipient gets,
    but the sender's other clients SHOULD find it in their sent carbon (XEP-0280), where a
    client takes it as its place in the archive. One the sending client forged in its own
    name is replaced by the archive's."""
    a = await login(server, "alice", "desk")
    a2 = await login(server, "alice", "phone")
    b = await login(server, "bob")
    for c in (a, a2):
        iq = c.make_iq_set()
        iq.append(ET.fromstring("<enable xmlns='urn:xmpp:carbons:2'/>"))
        await iq.send(timeout=T)
    m = a.make_message(mto=b.boundjid.bare, mbody="carbon me", mtype="chat")
    m.append(ET.fromstring(f"<stanza-id xmlns='{NS_SID}' by='{a.boundjid.bare}' id='mine'/>"))
    m.send()
    got = await b.inbox.wait(lambda el: el.findtext("{jabber:client}body") == "carbon me", T,
                             "the message")
    assert stanza_ids(got, b.boundjid.bare) and stanza_ids(got, a.boundjid.bare) == ["mine"]
    sent = await a2.inbox.wait(
        lambda el: el.find("{urn:xmpp:carbons:2}sent") is not None, T, "the sent carbon")
    copy = sent.find(f"{{urn:xmpp:carbons:2}}sent/{{{NS_FWD}}}forwarded/{{jabber:client}}message")
    ids = stanza_ids(copy, a.boundjid.bare)
    _, archived, _ = await query(a, with_=b.boundjid.bare)
    assert ids == archived and len(ids) == 1, (ids, archived)
    await close(a, a2, b)


async def test_a_forged_stanza_id_never_reaches_the_account(server):
    """XEP-0359 §5: a `<stanza-id/>` in the recipient's name comes from its archive or from
    no one; the server removes one the sender wrote, also on a message it does not archive."""
    a, b = await login(server, "alice"), await login(server, "bob")
    forged = (f"<stanza-id xmlns='{NS_SID}' by='{b.boundjid.bare}' id='forged'/>"
              f"<stanza-id xmlns='{NS_SID}' by='room@elsewhere.example' id='other'/>")
    for body, hint in [("archived", ""), ("not archived", "<no-store xmlns='urn:xmpp:hints'/>")]:
        m = a.make_message(mto=b.boundjid.bare, mbody=body, mtype="chat")
        for el in ET.fromstring(f"<x>{forged}{hint}</x>"):
            m.append(el)
        m.send()
        got = await b.inbox.wait(lambda el: el.findtext("{jabber:client}body") == body, T, body)
        ids = {(s.get("by"), s.get("id")) for s in got.findall(f"{{{NS_SID}}}stanza-id")}
        assert (b.boundjid.bare, "forged") not in ids, ids
        assert ("room@elsewhere.example", "other") in ids
        assert any(by == b.boundjid.bare for by, _ in ids) == (hint == ""), ids
    await close(a, b)


async def test_a_full_jid_with_matches_that_resource_only(server):
    """§4.1.1: a bare `with` matches every resource of the contact, a full one only messages
    from or to that resource."""
    b = await login(server, "bob")
    c1, c2 = await login(server, "carol", "one"), await login(server, "carol", "two")
    await chat(c1, b, "from carol one")
    await chat(c2, b, "from carol two")
    b.send_message(mto=c2.boundjid.full, mbody="to carol two", mtype="chat")
    await c2.inbox.wait(lambda el: el.findtext("{jabber:client}body") == "to carol two", T,
                        "bob's answer")
    bodies, _, _ = await query(b, with_=c1.boundjid.bare)
    assert bodies == ["from carol one", "from carol two", "to carol two"]
    bodies, _, fin = await query(b, with_=c2.boundjid.full)
    assert bodies == ["from carol two", "to carol two"] and complete(fin)
    bodies, _, _ = await query(b, with_=c1.boundjid.full)
    assert bodies == ["from carol one"]
    await close(b, c1, c2)


async def test_preferences(server):
    a, b = await login(server, "alice"), await login(server, "bob")
    iq = b.make_iq_get()
    iq.append(ET.fromstring(f"<prefs xmlns='{NS_MAM}'/>"))
    res = await iq.send(timeout=T)
    assert res.xml.find(f"{{{NS_MAM}}}prefs").get("default") == "always"
    iq = b.make_iq_set()
    iq.append(ET.fromstring(
        f"<prefs xmlns='{NS_MAM}' default='never'><always><jid>{a.boundjid.bare}</jid></always>"
        f"<never/></prefs>"))
    res = await iq.send(timeout=T)
    p = res.xml.find(f"{{{NS_MAM}}}prefs")
    assert p.get("default") == "never"
    assert p.findtext(f"{{{NS_MAM}}}always/{{{NS_MAM}}}jid") == a.boundjid.bare
    c = await login(server, "carol")
    await chat(c, b, "not kept")
    await chat(a, b, "kept")
    bodies, _, _ = await query(b)
    assert bodies == ["kept"]
    await close(a, b, c)


async def test_preferences_with_full_jids(server):
    """XEP-0441 §4.3.1: a listed full JID is compared with the message's address as it is,
    a listed bare one with the address stripped of its resource."""
    b = await login(server, "bob")
    c1, c2 = await login(server, "carol", "one"), await login(server, "carol", "two")
    iq = b.make_iq_set()
    iq.append(ET.fromstring(
        f"<prefs xmlns='{NS_MAM}' default='always'><always/>"
        f"<never><jid>{c2.boundjid.full}</jid></never></prefs>"))
    res = await iq.send(timeout=T)
    assert res.xml.findtext(f"{{{NS_MAM}}}prefs/{{{NS_MAM}}}never/{{{NS_MAM}}}jid") == \
        c2.boundjid.full
    await chat(c1, b, "from carol one")
    await chat(c2, b, "from carol two")
    bodies, _, _ = await query(b)
    assert bodies == ["from carol one"]
    await close(b, c1, c2)


async def test_bad_queries(server_factory):
    srv = server_factory(mam={"max_page": 5})
    a, b = await login(srv, "alice"), await login(srv, "bob")
    for n in range(8):
        await chat(a, b, f"x{n}")
    # A huge max is lowered to the page limit, not refused.
    bodies, ids, fin = await query(b, rsm="<max>1000000000</max>")
    assert len(bodies) == 5 and not complete(fin)
    known = ids[0]
    for kwargs, condition in [
        # §4.1.5: a field the server does not know is feature-not-implemented.
        ({"color": "red"}, "feature-not-implemented"),
        ({"start": "yesterday"}, "bad-request"),
        ({"rsm": "<after>no-such-id</after>"}, "item-not-found"),
        # Spelled as the row numbers of SQLite's archive are, but nobody's.
        ({"rsm": "<after>0000000000000007</after>"}, "item-not-found"),
        ({"rsm": "<before>7FFFFFFFFFFFFFFF</before>"}, "item-not-found"),
        ({"rsm": "<max>lots</max>"}, "bad-request"),
        # §4.1.5 again, for a field sent without a value; XEP-0059 §2.5: an index is answered.
        ({"color": ""}, "feature-not-implemented"),
        ({"rsm": "<index>3</index>"}, "feature-not-implemented"),
        # §4.1.3: any id asked for that the archive does not hold is item-not-found.
        ({"ids": ["no-such-id"]}, "item-not-found"),
        ({"ids": [known, "no-such-id"]}, "item-not-found"),
        ({"to": srv.jid("alice")}, "forbidden"),
    ]:
        with pytest.raises(IqError) as e:
            await query(b, **kwargs)
        assert e.value.iq["error"]["condition"] == condition, kwargs
    await close(a, b)


async def test_archive_survives_restart_and_goes_with_the_account(server_factory, backend):
    srv = server_factory(backend=backend)
    a, c = await login(srv, "alice"), await login(srv, "carol")
    await chat(a, c, "remember me")
    # A query reads what was archived before it (rows still in the archiver's batch
    # included), so what it showed is committed: it survives `kill -9`.
    bodies, _, _ = await query(c)
    assert bodies == ["remember me"]
    await close(a, c)
    srv.crash_restart()
    c = await login(srv, "carol")
    bodies, _, _ = await query(c)
    assert bodies == ["remember me"]
    await close(c)
    assert srv.user("delete", "carol").returncode == 0
    assert srv.user("add", "carol", password="carolpass").returncode == 0
    c = await login(srv, "carol")
    bodies, _, fin = await query(c)
    assert bodies == [] and complete(fin)
    await close(c)


async def archived_bodies(c: SlixClient) -> list[str]:
    """Every body in `c`'s archive, oldest first, page by page."""
    bodies, after = [], ""
    while True:
        page, ids, fin = await query(c, rsm=f"<max>100</max>{after}")
        bodies += page
        if complete(fin) or not ids:
            return bodies
        after = f"<after>{ids[-1]}</after>"


async def test_acknowledged_burst_survives_kill(server_factory, backend):
    """A burst sent without waiting, acknowledged by XEP-0198 `<a h/>`, then `kill -9`: every
    message is in both archives after the restart (the archiver commits batches of many
    messages; the acknowledgement must not overtake the commit)."""
    srv = server_factory(backend=backend)
    burst = 300
    a = await srv.login("alice", "burst")
    a.send(f"<enable xmlns='{NS_SM}'/>")
    await a.expect(lambda e: e.tag == f"{{{NS_SM}}}enabled", what="<enabled/>")
    for i in range(burst):
        a.message(srv.jid("bob"), f"burst {i}")
    a.send(f"<r xmlns='{NS_SM}'/>")
    ack = await a.expect(lambda e: e.tag == f"{{{NS_SM}}}a", what="<a/>")
    assert int(ack.get("h")) == burst
    srv.crash_restart()
    expected = [f"burst {i}" for i in range(burst)]
    for user in ("alice", "bob"):
        c = await login(srv, user)
        assert await archived_bodies(c) == expected, user
        await close(c)


async def test_the_archive_waits_for_a_database_lock_held_elsewhere(server_factory):
    """Another process (a backup, an `sqlite3` shell) holds SQLite's write lock for longer
    than the busy timeout (5 s) several times over: the archiver tries the batch again until
    the lock is gone, and `<a/>` waits for the commit; before, each message was tried once
    more on its own and dropped (logged) although it had been acknowledged."""
    srv = server_factory()
    b = await login(srv, "bob")  # online: the messages need no offline storage
    a = await srv.login("alice", "lock")
    a.send(f"<enable xmlns='{NS_SM}'/>")
    await a.expect(lambda e: e.tag == f"{{{NS_SM}}}enabled", what="<enabled/>")
    with SqliteLock(srv) as lock:
        for i in range(3):
            a.message(srv.jid("bob"), f"locked {i}")
        a.send(f"<r xmlns='{NS_SM}'/>")
        await asyncio.sleep(16)
        lock.release()
        ack = await a.expect(lambda e: e.tag == f"{{{NS_SM}}}a", timeout=30, what="<a/>")
    assert int(ack.get("h")) == 3
    await a.close()
    assert await archived_bodies(b) == [f"locked {i}" for i in range(3)]
    await close(b)


@pytest.mark.parametrize("old_connection", ["dropped", "silent"])
async def test_a_refused_resumption_acknowledges_only_what_is_archived(server_factory,
                                                                       old_connection):
    """A resumption whose `h` is above what the server sent is refused with `<failed h/>`
    (XEP-0198 §5), and that `h` acknowledges what the client sent: like `<a/>`, it goes out
    only once the archive holds those messages, so `kill -9` right after it loses none —
    whether the session hibernated (its connection dropped) or still ran on a connection
    gone silent."""
    # A batch that would wait a minute: only the acknowledgement's settle commits it.
    srv = server_factory(mam={"batch_delay_ms": 60000})
    a = await srv.login("alice", "phone")
    a.send(f"<enable xmlns='{NS_SM}' resume='true'/>")
    en = await a.expect(lambda e: e.tag == f"{{{NS_SM}}}enabled", what="<enabled/>")
    for i in range(10):
        a.message(srv.jid("bob"), f"held {i}")
    # Handled in order: once the ping is answered, the ten messages were routed (no <r/>,
    # which would settle the archive itself).
    r = await a.iq("get", None, "<ping xmlns='urn:xmpp:ping'/>")
    assert r.get("type") == "result"
    if old_connection == "dropped":
        a.abort()
        await asyncio.sleep(0.3)
    from test_sm import resume
    _, failed = await resume(srv, "alice", en.get("id"), 1000)
    assert failed.tag == f"{{{NS_SM}}}failed" and failed.get("h") == "11"
    srv.crash_restart()
    alice = await login(srv, "alice")
    assert await archived_bodies(alice) == [f"held {i}" for i in range(10)]
    await close(alice)


async def metadata(c: SlixClient, to: str | None = None) -> ET.Element:
    iq = c.make_iq_get(ito=to)
    iq.append(ET.fromstring(f"<metadata xmlns='{NS_MAM}'/>"))
    res = await iq.send(timeout=T)
    return res.xml.find(f"{{{NS_MAM}}}metadata")


async def test_archive_metadata(server):
    """§7 (part of #extended): the first and last message of the archive, nothing when it is
    empty; a set is refused."""
    a, b = await login(server, "alice"), await login(server, "bob")
    try:
        empty = await metadata(a)
        assert empty is not None and len(empty) == 0
        for i in range(3):
            await chat(a, b, f"meta {i}")
        _, ids, _ = await query(a)
        m = await metadata(a)
        start, end = m.find(f"{{{NS_MAM}}}start"), m.find(f"{{{NS_MAM}}}end")
        assert (start.get("id"), end.get("id")) == (ids[0], ids[-1])
        assert start.get("timestamp").endswith("Z") and end.get("timestamp") >= start.get("timestamp")
        iq = a.make_iq_set()
        iq.append(ET.fromstring(f"<metadata xmlns='{NS_MAM}'/>"))
        with pytest.raises(IqError) as e:
            await iq.send(timeout=T)
        assert e.value.iq["error"]["condition"] == "bad-request"
    finally:
        await close(a, b)


# ---- messages routed again, bounced, relayed (audit 36) ------------------------------------

NS_DELAY = "urn:xmpp:delay"
BODY = "{jabber:client}body"


def has_body(body):
    return lambda e: e.tag == "{jabber:client}message" and e.findtext(BODY) == body


def stanza_ids(el, by: str) -> list[str]:
    return [s.get("id") for s in el.findall(f"{{{NS_SID}}}stanza-id") if s.get("by") == by]


async def raw_archive(c) -> list[tuple[str, str]]:
    """(archive id, body) of every message in a raw client's archive (one page)."""
    qid = uuid.uuid4().hex[:8]
    c.send(f"<iq type='set' id='{qid}'><query xmlns='{NS_MAM}' queryid='{qid}'>"
           f"<set xmlns='{NS_RSM}'><max>50</max></set></query></iq>")
    out = []
    while True:
        el = await c.expect(lambda e: e.get("id") == qid or
                            e.find(f"{{{NS_MAM}}}result") is not None, what="archive")
        if el.tag == "{jabber:client}iq":
            assert el.get("type") == "result", ET.tostring(el, encoding="unicode")
            return out
        r = el.find(f"{{{NS_MAM}}}result")
        if r.get("queryid") == qid:
            out.append((r.get("id"), r.findtext(
                f"{{{NS_FWD}}}forwarded/{{jabber:client}}message/{BODY}")))


async def test_a_message_routed_again_keeps_its_one_archive_row(server_factory, backend):
    """XEP-0313 §5.1.1 (stored in an archive only once) and XEP-0359 §3 (the id never
    changes): a message the session wrote but the client never acknowledged (XEP-0198) is
    routed again when the session ends — into offline storage here — and comes back with the
    stanza-id it had; the archive holds it once."""
    srv = server_factory(backend=backend)
    carol = await srv.login("carol", "phone")
    await carol.presence()
    carol.send(f"<enable xmlns='{NS_SM}'/>")
    await carol.expect(lambda e: e.tag == f"{{{NS_SM}}}enabled", what="<enabled/>")
    alice = await srv.login("alice", "a")
    alice.message(srv.jid("carol"), "routed again")
    first = await carol.expect(has_body("routed again"), what="the message")
    [sid] = stanza_ids(first, srv.jid("carol"))
    carol.abort()  # never acknowledged: routed again, to offline storage
    await asyncio.sleep(0.5)
    carol = await srv.login("carol", "phone2")
    await carol.presence()
    again = await carol.expect(has_body("routed again"), what="the offline copy")
    assert stanza_ids(again, srv.jid("carol")) == [sid]
    assert await raw_archive(carol) == [(sid, "routed again")]
    await carol.close()
    await alice.close()


async def test_a_bounced_message_is_not_archived_nor_names_the_archive(server_factory, backend):
    """XEP-0313 §5: the recipient's `<stanza-id/>` never goes to someone without access to
    its archive — not in the error bounced to the sender either; and a message the server
    refused (offline storage full: XEP-0160 §2 `service-unavailable`) is not in the
    recipient's archive."""
    srv = server_factory(backend=backend, im={"offline": {"max_per_user": 1}})
    alice = await srv.login("alice", "a")
    for i in range(3):
        alice.send(f"<message to='{srv.jid('carol')}' type='chat' id='full{i}'>"
                   f"<body>full {i}</body></message>")
    for i in (1, 2):
        err = await alice.expect(lambda e: e.get("id") == f"full{i}", what=f"bounce {i}")
        assert err.get("type") == "error"
        assert err.find(f"{{jabber:client}}error/{{{NS_STANZA_ERR}}}service-unavailable") \
            is not None, ET.tostring(err, encoding="unicode")
        assert err.findall(f"{{{NS_SID}}}stanza-id") == [], ET.tostring(err, encoding="unicode")
    carol = await srv.login("carol", "c")
    assert [b for _, b in await raw_archive(carol)] == ["full 0"]
    await carol.close()
    await alice.close()


async def test_a_delay_in_the_servers_name_from_a_client_is_discarded(server):
    """XEP-0203 §6: a `<delay from='our domain'/>` a client wrote is not the server's word;
    it is removed, and offline storage adds its own stamp."""
    alice = await server.login("alice", "a")
    alice.send(f"<message to='{server.jid('bob')}' type='chat'><body>old news</body>"
               f"<delay xmlns='{NS_DELAY}' from='{server.domain}' stamp='2001-01-01T00:00:00Z'>"
               "Offline Storage</delay></message>")
    await alice.iq("get", None, "<ping xmlns='urn:xmpp:ping'/>")
    bob = await server.login("bob", "b")
    await bob.presence()
    got = await bob.expect(has_body("old news"), what="the stored message")
    stamps = [d.get("stamp") for d in got.findall(f"{{{NS_DELAY}}}delay")]
    assert len(stamps) == 1 and not stamps[0].startswith("2001"), stamps
    await bob.close()
    await alice.close()


async def raw_room(srv, owner, name: str) -> str:
    """Creates an instant room with `owner` (a raw client) as nick "owner"; its JID."""
    r = f"{name}@conference.{srv.domain}"
    owner.send(f"<presence to='{r}/owner'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
    await owner.expect(lambda e: e.tag == "{jabber:client}presence"
                       and e.get("from") == f"{r}/owner", what="self-presence")
    res = await owner.iq("set", r, "<query xmlns='http://jabber.org/protocol/muc#owner'>"
                         "<x xmlns='jabber:x:data' type='submit'/></query>")
    assert res.get("type") == "result"
    return r


async def raw_join(c, r: str, nick: str):
    c.send(f"<presence to='{r}/{nick}'><x xmlns='http://jabber.org/protocol/muc'/></presence>")
    await c.expect(lambda e: e.tag == "{jabber:client}presence"
                   and e.get("from") == f"{r}/{nick}", what="self-presence")


async def forged_ids_through_a_room(server, cases) -> list[set]:
    """Alice sends each (type, payload, to, id) of `cases` with `<stanza-id/>`s forged in the
    room's name and in bob's account's; the (by, id) pairs of each message as bob got it."""
    alice, bob = await server.login("alice", "a"), await server.login("bob", "b")
    r = await raw_room(server, alice, "forge")
    await raw_join(bob, r, "bob")
    out = []
    for type_, payload, to, mid in cases(r):
        alice.send(f"<message to='{to}' type='{type_}' id='{mid}'>{payload}"
                   f"<stanza-id xmlns='{NS_SID}' by='{r}' id='FORGED-ROOM'/>"
                   f"<stanza-id xmlns='{NS_SID}' by='{server.jid('bob')}' id='FORGED-ACCOUNT'/>"
                   "</message>")
        got = await bob.expect(lambda e: e.tag == "{jabber:client}message"
                               and e.get("id") == mid, what=mid)
        out.append({(s.get("by"), s.get("id")) for s in got.findall(f"{{{NS_SID}}}stanza-id")})
    await bob.close()
    await alice.close()
    return out


async def test_a_room_removes_stanza_ids_forged_in_its_name(server):
    """XEP-0359 §4 rule 2: the room deletes a `<stanza-id by='room'/>` an occupant wrote,
    whether or not it archives the message (chat states, `<no-store/>`, private messages)."""
    def cases(r):
        return [
            ("groupchat", "<active xmlns='http://jabber.org/protocol/chatstates'/>", r, "state"),
            ("groupchat", "<body>no store</body><no-store xmlns='urn:xmpp:hints'/>", r, "ns"),
            ("groupchat", "<body>archived</body>", r, "archived"),
            ("chat", "<body>private</body>", f"{r}/bob", "pm"),
        ]
    for ids in await forged_ids_through_a_room(server, cases):
        assert not any(i == "FORGED-ROOM" for _, i in ids), ids


async def test_groupchat_never_brings_a_stanza_id_in_the_recipients_name(server):
    """XEP-0359 §4 rule 2: a local occupant never gets a `<stanza-id/>` in its own account's
    name that its archive did not give — also on a room's groupchat fan-out."""
    def cases(r):
        return [("groupchat", "<body>archived</body>", r, "archived"),
                ("groupchat", "<active xmlns='http://jabber.org/protocol/chatstates'/>", r, "st")]
    for ids in await forged_ids_through_a_room(server, cases):
        assert not any(i == "FORGED-ACCOUNT" for _, i in ids), ids
