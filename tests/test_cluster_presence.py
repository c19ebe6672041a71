"""The HTTP presence stream follows every node of a cluster (docs/clustering.md, "The HTTP
presence stream"; docs/http.md, "Presence as a stream").

The cluster is test_cluster.py's (nats-server, PostgreSQL, three nodes). A watcher reads
``/presence/alice@localhost`` from node 1's HTTP listener with httpx (an independent HTTP
client, test_http_pubsub.py's SSE reader) while alice's resources live on the other nodes:
one on node 2 comes, changes its show and status and goes; one on node 3 dies with its node
(``kill -9``) and shows ``unavailable`` once the node is taken for dead (the lease).
"""
from __future__ import annotations

import asyncio
import json

import httpx

from test_cluster import LEASE_MS, cluster  # noqa: F401 (a fixture)
from test_http_pubsub import Sse, base, bearer, issue
from test_im import peer


async def _event(watch: Sse, timeout: float = 10.0) -> tuple[str, dict]:
    ev = await watch.next(timeout)
    return ev["event"], json.loads(ev["data"])


async def test_a_watcher_on_one_node_follows_the_resources_of_every_node(cluster):
    n1, n2, n3 = cluster.nodes
    url = f"{base(n1)}/presence/{n1.jid('alice')}"
    async with httpx.AsyncClient() as http:
        watch = Sse(http, url, bearer(issue(n1, "alice", scopes="read")))
        await watch.opened.wait()
        assert watch.status == 200
        # Node 1 tells its peers that it watches alice (a module note on the bus): give it
        # the moment it takes to cross, as nothing outside shows that it arrived.
        await asyncio.sleep(1)
        meter = await peer(n2, "alice", "meter", presence=False)
        three = None
        try:
            meter.presence()
            assert await _event(watch) == ("available", {"jid": meter.jid})
            meter.presence(extra="<show>away</show><status>low battery</status>")
            assert await _event(watch) == (
                "available", {"jid": meter.jid, "show": "away", "status": "low battery"})
            meter.presence(type_="unavailable")
            assert await _event(watch) == ("unavailable", {"jid": meter.jid})

            three = await peer(n3, "alice", "three")
            assert await _event(watch) == ("available", {"jid": three.jid})
            n3.kill()  # SIGKILL: node 3 says nothing more; the home node speaks for it
            assert await _event(watch, LEASE_MS / 1000 + 10) == (
                "unavailable", {"jid": three.jid})
        finally:
            await meter.c.close()
            watch.task.cancel()
