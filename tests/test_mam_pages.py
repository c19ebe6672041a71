"""Archive query pages bounded in bytes (XEP-0313 with XEP-0059 RSM): a page ends with the
message whose stanza brings it to `[mam] max_page_bytes` (256 KiB by default; a room's
archive `[muc] archive_max_page_bytes`, a pubsub node's history `[pubsub] max_page_bytes`),
whatever `max` asks — an ordinary page, its `<fin/>` without `complete` and its `<set/>` with
`first`/`last`, so clients page on (slixmpp's RSM iterator, forwards and backwards). Before,
a page was up to 100 messages of up to 256 KiB: 25 MiB read and sent per query.

Messages here are 60 KB: the default page ends with the 5th (5 × 60 KB reaches 256 KiB).
"""
from __future__ import annotations

import asyncio

from hostile_rounds import MIB, rss
from test_mam import NS_RSM, T, chat, complete, login, query
from test_muc import create, room, room_archive
from test_muc import login as muc_login
from test_pubsub import clients  # noqa: F401  (fixture)
from test_pubsub import node_config, node_history, svc
from test_pubsub_pages import fill

BIG = 60_000


def text(n: int, size: int = BIG) -> str:
    return f"m{n} " + "y" * size


def names(bodies) -> list[str]:
    """The `mN` each (large) body starts with."""
    return [b.split(" ", 1)[0] for b in bodies]


def bounds(fin) -> tuple[str, str]:
    return (fin.findtext(f"{{{NS_RSM}}}set/{{{NS_RSM}}}first"),
            fin.findtext(f"{{{NS_RSM}}}set/{{{NS_RSM}}}last"))


async def test_account_archive_pages_end_at_their_byte_budget(server_factory, backend):
    """On each store: the page is read in chunks by SQL of each backend."""
    server = server_factory(backend=backend)
    a, b = await login(server, "alice"), await login(server, "bob")
    for n in range(1, 13):
        await chat(a, b, text(n))

    # No <max/>: the default 100 would be all 12 (720 KB); the bytes end the page at 5.
    bodies, ids, fin = await query(b)
    assert names(bodies) == ["m1", "m2", "m3", "m4", "m5"] and not complete(fin)
    assert bounds(fin) == (ids[0], ids[-1])
    bodies, ids, fin = await query(b, rsm=f"<max>100</max><after>{ids[-1]}</after>")
    assert names(bodies) == ["m6", "m7", "m8", "m9", "m10"] and not complete(fin)
    bodies, _, fin = await query(b, rsm=f"<after>{ids[-1]}</after>")
    assert names(bodies) == ["m11", "m12"] and complete(fin)
    # A smaller <max/> still rules.
    bodies, _, fin = await query(b, rsm="<max>3</max>")
    assert names(bodies) == ["m1", "m2", "m3"] and not complete(fin)
    # Backwards, the page keeps the newest and is cut at its old end.
    bodies, ids, fin = await query(b, rsm="<before/>")
    assert names(bodies) == ["m8", "m9", "m10", "m11", "m12"] and not complete(fin)
    assert bounds(fin) == (ids[0], ids[-1])
    bodies, ids, fin = await query(b, rsm=f"<before>{ids[0]}</before>")
    assert names(bodies) == ["m3", "m4", "m5", "m6", "m7"] and not complete(fin)
    bodies, _, fin = await query(b, rsm=f"<before>{ids[0]}</before>")
    assert names(bodies) == ["m1", "m2"] and complete(fin)
    # <flip-page/>: the same page, newest first; the <fin/> in archive order.
    bodies, ids, fin = await query(b, rsm="<before/>", flip=True)
    assert names(bodies) == ["m12", "m11", "m10", "m9", "m8"] and not complete(fin)
    assert bounds(fin) == (ids[-1], ids[0])

    # slixmpp's RSM iterator asking for 100 a page: every message once, in order, in 3 pages.
    mam = b.plugin["xep_0313"]
    for reverse, sizes in ((False, [5, 5, 2]), (True, [5, 5, 2])):
        pages = []
        async for page in mam.retrieve(iterator=True, reverse=reverse, rsm={"max": 100}):
            pages.append([m["mam_result"]["forwarded"]["stanza"]["body"]
                          for m in page["mam"]["results"]])
        assert [len(p) for p in pages] == sizes, (reverse, [names(p) for p in pages])
        seen = [name for p in (reversed(pages) if reverse else pages) for name in names(p)]
        assert seen == [f"m{n}" for n in range(1, 13)], reverse
    seen = [m["mam_result"]["forwarded"]["stanza"]["body"]
            async for m in mam.iterate(rsm={"max": 100})]
    assert names(seen) == [f"m{n}" for n in range(1, 13)]
    for c in (a, b):
        await c.close()


async def test_room_archive_pages_end_at_their_byte_budget(server):
    """A room's archive goes through the same query code with `[muc]`'s page limits."""
    a = await muc_login(server, "alice")
    r = room(server)
    await create(a, r, "firstwitch")
    for n in range(1, 8):
        a.send_message(mto=r, mbody=text(n), mtype="groupchat")
        await a.inbox.wait(lambda el, n=n: (el.findtext("{jabber:client}body") or "")
                           .startswith(f"m{n} "), T, f"m{n}")
    bodies, ids, done = await room_archive(a, r)
    assert names(bodies) == ["m1", "m2", "m3", "m4", "m5"] and not done
    bodies, _, done = await room_archive(a, r, f"<max>50</max><after>{ids[-1]}</after>")
    assert names(bodies) == ["m6", "m7"] and done
    bodies, _, done = await room_archive(a, r, "<max>50</max><before/>")
    assert names(bodies) == ["m3", "m4", "m5", "m6", "m7"] and not done
    await a.close()


async def test_node_history_pages_end_at_their_byte_budget(server, clients):  # noqa: F811
    """A pubsub node's history (XEP-0442), within `[pubsub] max_page_bytes`."""
    a = await clients("alice")
    s, ps = svc(server), a.plugin["xep_0060"]
    await ps.create_node(s, "big", config=node_config(max_items="max"), timeout=T)
    await fill(ps, s, "big", 7)
    got, fin = await node_history(a, s, "big")
    assert [i for i, _ in got] == ["i0", "i1", "i2", "i3", "i4"] and not complete(fin)
    got, fin = await node_history(a, s, "big", rsm=f"<after>{bounds(fin)[1]}</after>")
    assert [i for i, _ in got] == ["i5", "i6"] and complete(fin)


async def test_concurrent_queries_of_large_messages_stay_bounded(server):
    """40 messages of 200 KB in bob's archive; 4 of his sessions query it at once, three
    times. Each answer was the whole 8 MB (the default page of 100 holds them all), read
    into memory and queued for the session; a page is now two messages."""
    a, b = await login(server, "alice"), await login(server, "bob")
    for n in range(1, 41):
        await chat(a, b, text(n, 200_000))
    await a.close()
    readers = [await login(server, "bob", f"r{i}") for i in range(4)]
    start = rss(server.pid)["VmHWM"]
    sizes = []
    for _ in range(3):
        got = await asyncio.gather(*(query(r, rsm="<max>100</max>") for r in readers))
        sizes += [len(bodies) for bodies, _ids, _fin in got]
        for r in readers:
            r.inbox.items.clear()
    peak = rss(server.pid)["VmHWM"] - start
    print(f"peak RSS +{peak / MIB:.1f} MiB")
    assert sizes == [2] * 12
    assert peak < 24 * MIB, f"peak RSS grew by {peak / MIB:.1f} MiB"
    for c in (b, *readers):
        await c.close()
