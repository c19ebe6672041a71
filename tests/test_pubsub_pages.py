"""Pubsub item retrieval in pages (audit 36 F1): however many items a node keeps, one answer
holds at most a page — `[pubsub] max_page_items` items, ending with the one whose payload
brings the page to `max_page_bytes` (256 KiB by default) — over XMPP (XEP-0060 §6.5.4, with an
XEP-0059 `<set/>` and RSM paging, driven by slixmpp's RSM iterator), over HTTP (`Link:
rel="next"`, anonymous readers of open nodes included) and in an SSE replay; and readers of a
16 MB node no longer cost the server the node's size each.

Items here are 60 KB: the default page ends with the 5th (5 × 60 KB reaches 256 KiB).
"""
from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import httpx
from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0059.stanza import Set
from slixmpp.plugins.xep_0060.stanza.pubsub import Pubsub
from slixmpp.xmlstream import register_stanza_plugin

from hostile_rounds import MIB, rss
from test_http_pubsub import ev, node_url, open_sse
from test_pubsub import (Clients, NS, expect_error, node_config, raw_iq, svc,  # noqa: F401
                         clients)

T = 20
RSM = "http://jabber.org/protocol/rsm"
# slixmpp reads an RSM <set/> of disco#items only; pubsub answers carry one too.
register_stanza_plugin(Pubsub, Set)


def big(i: int, size: int = 60_000) -> ET.Element:
    el = ET.Element("{urn:test:big}e", n=str(i))
    el.text = "y" * size
    return el


async def fill(ps, s: str, node: str, n: int, size: int = 60_000):
    for i in range(n):
        await ps.publish(s, node, id=f"i{i}", payload=big(i, size), timeout=T)


def ids_of(items_el) -> list[str]:
    return [i.get("id") for i in items_el.findall(f"{{{NS}}}item")]


async def items_iq(c, to: str, inner: str):
    """An items request in raw XML: (item ids as listed, the <set/> or None)."""
    r = await raw_iq(c, "get", to, f"<pubsub xmlns='{NS}'>{inner}</pubsub>")
    ps = r.xml.find(f"{{{NS}}}pubsub")
    return ids_of(ps.find(f"{{{NS}}}items")), ps.find(f"{{{RSM}}}set")


def rsm_of(set_el) -> tuple:
    first = set_el.find(f"{{{RSM}}}first")
    return (first.text if first is not None else None,
            first.get("index") if first is not None else None,
            set_el.findtext(f"{{{RSM}}}last"), set_el.findtext(f"{{{RSM}}}count"))


async def test_items_come_in_pages_with_rsm(server_factory, backend):
    """On each store: the page queries are SQL of their own."""
    server = server_factory(backend=backend)
    clients = Clients(server)
    try:
        await rsm_pages(server, await clients("alice", plugins=("xep_0004", "xep_0059",
                                                                "xep_0060")))
    finally:
        await clients.close()


async def rsm_pages(server, a):
    s, ps = svc(server), a.plugin["xep_0060"]
    await ps.create_node(s, "big", config=node_config(max_items="max"), timeout=T)
    await fill(ps, s, "big", 12)
    info = await a.plugin["xep_0030"].get_info(jid=s, timeout=T)
    assert f"{NS}#rsm" in info["disco_info"]["features"]

    # No max_items: the newest page (listed oldest first), marked as part of 12.
    ids, st = await items_iq(a, s, "<items node='big'/>")
    assert ids == ["i7", "i8", "i9", "i10", "i11"]
    assert rsm_of(st) == ("i11", "0", "i7", "12")
    # max_items within a page: exactly that, and nothing says more was left out.
    ids, st = await items_iq(a, s, "<items node='big' max_items='3'/>")
    assert (ids, st) == (["i9", "i10", "i11"], None)
    # RSM: after the page's <last/> come older items; an empty <before/> is the oldest page.
    ids, st = await items_iq(a, s, f"<items node='big'/><set xmlns='{RSM}'><max>3</max>"
                                   "<after>i7</after></set>")
    assert ids == ["i4", "i5", "i6"] and rsm_of(st) == ("i6", "5", "i4", "12")
    ids, st = await items_iq(a, s, f"<items node='big'/><set xmlns='{RSM}'><before/></set>")
    assert ids == ["i0", "i1", "i2", "i3", "i4"] and rsm_of(st) == ("i4", "7", "i0", "12")
    ids, st = await items_iq(a, s, f"<items node='big'/><set xmlns='{RSM}'><max>2</max>"
                                   "<before>i4</before></set>")
    assert ids == ["i5", "i6"] and rsm_of(st) == ("i6", "5", "i5", "12")
    # <max>0</max>: the count only.
    ids, st = await items_iq(a, s, f"<items node='big'/><set xmlns='{RSM}'><max>0</max></set>")
    assert ids == [] and rsm_of(st) == (None, None, None, "12")
    # XEP-0059 §2.6 and §2.5.
    await expect_error(items_iq(a, s, f"<items node='big'/><set xmlns='{RSM}'>"
                                      "<after>nope</after></set>"), "item-not-found")
    await expect_error(items_iq(a, s, f"<items node='big'/><set xmlns='{RSM}'>"
                                      "<index>3</index></set>"), "feature-not-implemented")
    await expect_error(items_iq(a, s, f"<items node='big'/><set xmlns='{RSM}'>"
                                      "<max>x</max></set>"), "bad-request")

    # slixmpp's RSM iterator walks every page: all 12, newest first, each once.
    seen: list[str] = []
    async for page in ps.get_items(s, "big", iterator=True):
        page_ids = [i["id"] for i in page["pubsub"]["items"]]
        assert 0 < len(page_ids) <= 5
        seen.extend(reversed(page_ids))
    assert seen == [f"i{i}" for i in range(11, -1, -1)]
    # And slixmpp's plain get_items: a page.
    r = await ps.get_items(s, "big", timeout=T)
    assert len(r["pubsub"]["items"]) == 5 and r["pubsub"]["rsm"]["count"] == "12"


async def test_pep_items_come_in_pages(server, clients):
    a = await clients("alice", plugins=("xep_0004", "xep_0060", "xep_0163"))
    me, ps = a.boundjid.bare, a.plugin["xep_0060"]
    await ps.create_node(me, "urn:test:big", config=node_config(max_items="20"), timeout=T)
    await fill(ps, me, "urn:test:big", 7)
    ids, st = await items_iq(a, me, "<items node='urn:test:big'/>")
    assert ids == ["i2", "i3", "i4", "i5", "i6"]
    assert rsm_of(st) == ("i6", "0", "i2", "7")
    ids, st = await items_iq(a, me, f"<items node='urn:test:big'/><set xmlns='{RSM}'>"
                                    "<after>i2</after></set>")
    assert ids == ["i0", "i1"] and rsm_of(st) == ("i1", "5", "i0", "7")


async def test_http_items_and_sse_replay_are_pages(server, clients):
    a = await clients("alice")
    s, ps = svc(server), a.plugin["xep_0060"]
    await ps.create_node(s, "big", config=node_config(max_items="max", access_model="open"),
                         timeout=T)
    await fill(ps, s, "big", 12)
    url = node_url(server, "big")
    async with httpx.AsyncClient(base_url=url.split("/pubsub/")[0]) as http:
        # Anonymous: a page, newest first, and a Link to the next.
        r = await http.get(url + "/items")
        assert r.status_code == 200
        assert [i["id"] for i in r.json()["items"]] == ["i11", "i10", "i9", "i8", "i7"]
        assert r.json()["count"] == 12
        seen = [i["id"] for i in r.json()["items"]]
        pages = 1
        while "next" in r.links:
            r = await http.get(r.links["next"]["url"])
            assert r.status_code == 200, r.text
            seen += [i["id"] for i in r.json()["items"]]
            pages += 1
        assert seen == [f"i{i}" for i in range(11, -1, -1)] and pages == 3
        # max is kept in the next page's link.
        r = await http.get(url + "/items?max=4")
        assert [i["id"] for i in r.json()["items"]] == ["i11", "i10", "i9", "i8"]
        r = await http.get(r.links["next"]["url"])
        assert [i["id"] for i in r.json()["items"]] == ["i7", "i6", "i5", "i4"]
        # The topic URL too (its hub and self links stay).
        r = await http.get(url)
        assert len(r.json()["items"]) == 5 and {"hub", "self", "next"} <= set(r.links)
        assert (await http.get(url + "/items?after=nope")).status_code == 404
        # SSE replay: after i9, the two newer items; after i0 (more than a page behind),
        # a reset and the newest page.
        replay = await open_sse(http, url, {"Last-Event-ID": "i9"})
        assert [e["id"] for e in await replay.take(2)] == ["i10", "i11"]
        await replay.close()
        behind = await open_sse(http, url, {"Last-Event-ID": "i0"})
        assert await behind.next() == ev("reset", data="big")
        assert [e["id"] for e in await behind.take(5)] == ["i7", "i8", "i9", "i10", "i11"]
        await behind.close()
    assert server.alive()


async def test_concurrent_readers_of_a_16_mb_node_stay_bounded(server, clients):
    """The auditor's case: 80 items of 200 KB; 4 XMPP readers and 8 anonymous HTTP readers
    at once. Each answer was the whole 16 MB (+124 MiB peak RSS for the 4 XMPP readers, +59
    MiB for the HTTP ones); a page is now two items."""
    a = await clients("alice")
    s, ps = svc(server), a.plugin["xep_0060"]
    await ps.create_node(s, "huge", config=node_config(max_items="max", access_model="open"),
                         timeout=T)
    await fill(ps, s, "huge", 80, size=200_000)
    readers = [await clients("bob", f"r{i}") for i in range(4)]
    start = rss(server.pid)["VmHWM"]
    url = node_url(server, "huge") + "/items"
    sizes = []
    async with httpx.AsyncClient(timeout=60) as http:
        for _ in range(3):
            got = await asyncio.gather(
                *(r.plugin["xep_0060"].get_items(s, "huge", timeout=60) for r in readers),
                *(http.get(url) for _ in range(8)))
            sizes += [len(g["pubsub"]["items"]) for g in got[:4]]
            sizes += [len(g.json()["items"]) for g in got[4:]]
    peak = rss(server.pid)["VmHWM"] - start
    print(f"peak RSS +{peak / MIB:.1f} MiB")
    # Twelve answers of 400 KB at once, each parsed, serialized and buffered: +25 MiB
    # measured; whole answers of 16 MB took +176 MiB.
    assert peak < 64 * MIB, f"peak RSS grew by {peak / MIB:.1f} MiB"
    assert sizes == [2] * 36
