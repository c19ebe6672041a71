"""XEP-0357 push notifications in a cluster (docs/clustering.md, "Push notifications"):
the `message-count` is the account's, whichever node holds a message or binds a resource.

The cluster is test_cluster.py's (nats-server, PostgreSQL, three nodes); each node declares
the app server of test_push.py (a slixmpp XEP-0114 component), and one such app server is
connected to each node, so that a node's notifications go out on its own connection.
"""
from __future__ import annotations

import asyncio
import time

import pytest

from conftest import free_port
from test_cluster import _start
from test_component import wait_port
from test_push import APP, SECRET, AppServer, message_to, push_iq, summary


@pytest.fixture
def push_cluster(server_factory, tmp_path):
    ports = [free_port() for _ in range(3)]
    yield from _start(server_factory, tmp_path, lambda i: {"component": {
        "listen": f"127.0.0.1:{ports[i]}", "service": [{"domain": APP, "secret": SECRET}]}})


async def _app_servers(nodes) -> list[AppServer]:
    apps = []
    for n in nodes:
        port = int(n.config["component"]["listen"].rsplit(":", 1)[1])
        wait_port(port)
        app = AppServer(port)
        app.connect()
        await asyncio.wait_for(app.session, 20)
        apps.append(app)
    return apps


async def _gone(srv, full_jid: str, timeout: float = 20.0):
    """Waits until `srv` knows `full_jid` has no session (a ping to it fails)."""
    c = await srv.login("carol", "watch")
    deadline = time.monotonic() + timeout
    while (await c.iq("get", full_jid, "<ping xmlns='urn:xmpp:ping'/>")).get("type") != "error":
        assert time.monotonic() < deadline, f"{full_jid} still has a session"
        await asyncio.sleep(0.1)
    await c.close()


async def _next_count(apps: list[AppServer], seen: list, timeout: float = 15.0) -> str:
    """The `message-count` of the one notification (to any app server) not in `seen`, which
    it joins."""
    deadline = time.monotonic() + timeout
    while True:
        new = [iq for a in apps for iq in a.publishes.items if all(iq is not s for s in seen)]
        if new:
            break
        assert time.monotonic() < deadline, "no notification"
        await asyncio.sleep(0.05)
    assert len(new) == 1, [summary(iq) for iq in new]
    seen.append(new[0])
    return summary(new[0])["message-count"]


async def test_the_message_count_is_the_accounts_on_every_node(push_cluster):
    """alice's phone registers through node 3 and goes offline; messages to her sent
    through nodes 1, 2 and 1 (each held by its sender's node) count 1, 2, 3; a resource of
    hers bound on node 3 starts the count again, seen by node 2's next notification."""
    n1, n2, n3 = push_cluster.nodes
    apps = await _app_servers(push_cluster.nodes)
    try:
        phone = await n3.login("alice", "phone")
        assert await push_iq(phone, "enable", "n1") == "result"
        await phone.close()
        for n in (n1, n2):
            await _gone(n, n3.jid("alice", "phone"))
        seen: list = []
        counts = []
        for n, body in ((n1, "one"), (n2, "two"), (n1, "three")):
            await message_to(n, n.jid("alice"), body)
            counts.append(await _next_count(apps, seen))
        assert counts == ["1", "2", "3"]
        back = await n3.login("alice", "desk")
        await back.close()
        await _gone(n2, n3.jid("alice", "desk"))
        await message_to(n2, n2.jid("alice"), "after the bind")
        assert await _next_count(apps, seen) == "1"
    finally:
        for app in apps:
            await app.close()
