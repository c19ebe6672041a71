"""Per-account byte budgets of what any party can make the server store: XEP-0160 offline
messages (`[im.offline] max_bytes_per_user`, 32 MiB) and an account's PEP items
(`[pubsub] pep_max_bytes_per_user`, 16 MiB). Before them only counts bounded these, so one
account held up to 1,000 offline messages of 256 KiB (256 MB) and 1,000 PEP nodes of 1,000
items of 256 KiB. Each test fills a budget at its default with stanzas near the largest a
client may send, checks the spec's error past it, that it holds across a restart (the budget
is counted from the stored rows), and that freeing space lets the account store again.
"""
from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

from xmpp_raw import NS_CLIENT, local, stanza_error, tag

MiB = 1024 * 1024
# Near the largest stanza a client may send ([c2s] max_stanza_bytes, 256 KiB).
BIG = 200_000
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


async def sync(c) -> list[ET.Element]:
    """A ping round trip: what arrived before its answer (the server routes each stanza of a
    session before reading the next)."""
    rid = c.next_id("sync")
    c.send(f"<iq type='get' id='{rid}'><ping xmlns='urn:xmpp:ping'/></iq>")
    got = []
    while True:
        el = await c.recv(30)
        if local(el) == "iq" and el.get("id") == rid:
            return got
        got.append(el)


def bounced(els: list[ET.Element]) -> list[ET.Element]:
    return [e for e in els if local(e) == "message" and e.get("type") == "error"]


def chat(to: str, mid: str, body: str) -> str:
    return f"<message to='{to}' type='chat' id='{mid}'><body>{body}</body></message>"


async def test_offline_storage_is_bounded_in_bytes(server_factory, backend):
    srv = server_factory(backend=backend)
    carol = srv.jid("carol")
    a = await srv.login("alice", "r")
    sent = 180   # 36 MB: past 32 MiB, far below max_per_user (1,000)
    for i in range(sent):
        a.send(chat(carol, f"o{i}", "x" * BIG))
    refused = bounced(await sync(a))
    stored = sent - len(refused)
    assert refused, "nothing refused: the offline storage of one account is not bounded in bytes"
    # The first messages up to the budget are stored, every later one refused (each stored
    # stanza is the body plus its envelope and <delay/>).
    assert [e.get("id") for e in refused] == [f"o{i}" for i in range(stored, sent)]
    assert stored * BIG <= 32 * MiB < (stored + 1) * (BIG + 1000), stored
    # XEP-0160 §2: what the server cannot store is service-unavailable, as for the count cap.
    assert stanza_error(refused[0]) == "service-unavailable"
    assert "full" in (refused[0].findtext(f".//{{{NS_STANZAS}}}text") or "")
    await a.close()

    # Counted from the stored rows: the budget is still spent after a restart.
    srv.restart()
    a = await srv.login("alice", "r")
    a.send(chat(carol, "after-restart", "x" * BIG))
    refused = bounced(await sync(a))
    assert [e.get("id") for e in refused] == ["after-restart"]
    assert stanza_error(refused[0]) == "service-unavailable"

    # Delivered messages free their bytes.
    c = await srv.login("carol", "phone")
    c.send("<presence/>")
    got = 0
    while got < stored:
        el = await c.recv(30)
        if local(el) == "message" and len(el.findtext(tag(NS_CLIENT, "body")) or "") == BIG:
            got += 1
    await sync(c)
    await c.close()
    for _ in range(50):
        a.send(chat(carol, "freed", "x" * BIG))
        if not bounced(await sync(a)):
            break
        await asyncio.sleep(0.1)   # the delivered rows are deleted as the session lets go
    else:
        raise AssertionError("delivered offline messages did not free their bytes")
    await a.close()


def publish(node: str, item: str, text: str) -> str:
    return (f"<pubsub xmlns='{NS_PUBSUB}'><publish node='{node}'><item id='{item}'>"
            f"<entry xmlns='urn:test:quota'>{text}</entry></item></publish></pubsub>")


def refusal(reply: ET.Element) -> tuple[str | None, str | None]:
    err = reply.find(tag(NS_CLIENT, "error"))
    assert reply.get("type") == "error" and err is not None, ET.tostring(reply)
    return err.get("type"), stanza_error(reply)


async def pep_nodes(c, me: str) -> list[str]:
    r = await c.iq("get", me, "<query xmlns='http://jabber.org/protocol/disco#items'/>")
    return [i.get("node") for i in r.iter("{http://jabber.org/protocol/disco#items}item")]


async def test_pep_items_are_bounded_in_bytes_per_account(server_factory, backend):
    srv = server_factory(backend=backend)
    me = srv.jid("alice")
    a = await srv.login("alice", "r")
    # One item per node (the PEP default keeps one), each on a node of its own.
    tried = 90   # 18 MB: past 16 MiB, far below pep_max_nodes (1,000)
    outcomes = []
    for i in range(tried):
        r = await a.iq("set", None, publish(f"urn:test:quota:{i}", "one", "x" * BIG))
        outcomes.append(r.get("type") == "result" or refusal(r))
    stored = outcomes.count(True)
    assert stored < tried, "nothing refused: an account's PEP items are not bounded in bytes"
    assert outcomes == [True] * stored + [("wait", "resource-constraint")] * (tried - stored)
    assert stored * BIG <= 16 * MiB < (stored + 1) * (BIG + 100), stored
    # A refused publication auto-creates no node.
    assert len(await pep_nodes(a, me)) == stored

    # A publication that grows nothing passes at the budget: a new item in place of the one
    # max_items (1) drops (a new avatar), a replacement by id.
    r = await a.iq("set", None, publish("urn:test:quota:0", "two", "y" * BIG))
    assert r.get("type") == "result", ET.tostring(r)
    r = await a.iq("set", None, publish("urn:test:quota:0", "two", "z" * BIG))
    assert r.get("type") == "result", ET.tostring(r)
    await a.close()

    # Counted from the stored items: still spent after a restart.
    srv.restart()
    a = await srv.login("alice", "r")
    r = await a.iq("set", None, publish("urn:test:quota:new", "one", "x" * BIG))
    assert refusal(r) == ("wait", "resource-constraint")
    # Retracting and deleting always work, and free their bytes.
    r = await a.iq("set", None, f"<pubsub xmlns='{NS_PUBSUB}'><retract node='urn:test:quota:1'>"
                   "<item id='one'/></retract></pubsub>")
    assert r.get("type") == "result", ET.tostring(r)
    r = await a.iq("set", None, f"<pubsub xmlns='{NS_PUBSUB}#owner'>"
                   "<delete node='urn:test:quota:2'/></pubsub>")
    assert r.get("type") == "result", ET.tostring(r)
    for node in ("urn:test:quota:new", "urn:test:quota:1"):
        r = await a.iq("set", None, publish(node, "one", "x" * BIG))
        assert r.get("type") == "result", ET.tostring(r)
    r = await a.iq("set", None, publish("urn:test:quota:newer", "one", "x" * BIG))
    assert refusal(r) == ("wait", "resource-constraint")
    # Another account has a budget of its own.
    b = await srv.login("bob", "r")
    r = await b.iq("set", None, publish("urn:test:quota:0", "one", "x" * BIG))
    assert r.get("type") == "result", ET.tostring(r)
    await a.close()
    await b.close()
