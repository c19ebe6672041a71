"""BOSH sessions served by any node of a cluster (docs/clustering.md, "BOSH on any node").

A BOSH session lives in the node that created it; a request for it that reaches another
node is passed over the bus to the holder, whose answer comes back as the HTTP response.
The cluster is test_cluster.py's (nats-server, PostgreSQL, three nodes), with a short BOSH
`inactivity` so that a session's end for inactivity is seen in a test's time.

- a raw BOSH client (HTTP POSTs, as test_web_bosh.py) creates its session on node 1 and
  sends every later request to node 2 and node 3 in turn: login, bind, messages both ways
  with a slixmpp user on node 3, a long poll held on node 2 answered when a message comes,
  terminate; unknown sids; a request over the bus's payload limit; the session's end for
  inactivity; the holder killed; the bus stopped;
- Strophe.js (tests/web/strophe.mjs) behind a round-robin HTTP proxy spreading its requests
  over the three nodes: login, a message round trip, logout.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import itertools
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from slix import slix_login
from test_cluster import LEASE_MS, _start
from test_web import NODE, WEB, echo, run_node
from test_web_bosh import NS, extra_attrs, plain, post

INACTIVITY = 5


@pytest.fixture
def bosh_cluster(server_factory, tmp_path):
    yield from _start(server_factory, tmp_path,
                      lambda i: {"http": {"bosh_inactivity_secs": INACTIVITY}})


def create(srv, rid: int, wait: int = 10) -> str:
    """A new session on `srv`; its sid names its node (`<random>.<node id>`)."""
    status, text, _ = post(srv, f"<body xmlns='{NS}' rid='{rid}' to='{srv.domain}' "
                                f"wait='{wait}' hold='1' ver='1.6' xmpp:version='1.0' "
                                f"xmlns:xmpp='urn:xmpp:xbosh'/>")
    assert status == 200 and "<stream:features" in text, text
    return re.search(r"sid='([^']+)'", text).group(1)


async def req(srv, sid: str, rid: int, payload: str = "", timeout: float = 30.0,
              **attrs) -> str:
    """One request of session `sid` through node `srv` (in a thread: the event loop serves
    the slixmpp user meanwhile)."""
    body = (f"<body xmlns='{NS}' rid='{rid}' sid='{sid}' "
            f"xmlns:xmpp='urn:xmpp:xbosh'{extra_attrs(attrs)}>{payload}</body>")
    status, text, _ = await asyncio.to_thread(post, srv, body, None, timeout)
    assert status == 200, text
    return text


def terminated(text: str, condition: str | None = None) -> bool:
    return "type='terminate'" in text and (condition is None or f"condition='{condition}'" in text)


class Rounds:
    """Session `sid`'s requests, each through the next of `nodes` (never the holder's own
    listener when it is not among them), with the rid counted."""

    def __init__(self, nodes, sid: str, rid: int):
        self.nodes = itertools.cycle(nodes)
        self.sid = sid
        self.rid = rid

    def next(self):
        self.rid += 1
        return next(self.nodes), self.rid

    async def send(self, payload: str = "", **attrs) -> str:
        srv, rid = self.next()
        return await req(srv, self.sid, rid, payload, **attrs)

    async def until(self, what: str, timeout: float = 20.0) -> str:
        """Polls (each poll held up to `wait`) until a response carries `what`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = await self.send()
            assert not terminated(text), text
            if what in text:
                return text
        raise AssertionError(f"no response carried {what!r}")


async def bosh_login(rounds: Rounds, domain: str, resource: str) -> str:
    """SASL PLAIN, restart, bind and initial presence, each through the next node."""
    assert "<success" in await rounds.send(plain("alice", "alicepass"))
    features = await rounds.send(xmpp_restart="true", to=domain)
    assert "urn:ietf:params:xml:ns:xmpp-bind" in features, features
    bound = await rounds.send("<iq xmlns='jabber:client' type='set' id='b'>"
                              "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                              f"<resource>{resource}</resource></bind></iq>")
    assert f"alice@localhost/{resource}" in bound, bound
    await rounds.send("<presence xmlns='jabber:client'/>")
    return f"alice@localhost/{resource}"


def inbox(client) -> asyncio.Queue:
    """The bodies of the chat messages `client` (slixmpp) receives."""
    q: asyncio.Queue = asyncio.Queue()
    client.add_event_handler("message", lambda m: m["body"] and q.put_nowait(m["body"]))
    return q


async def test_a_session_made_on_one_node_is_served_by_the_others(bosh_cluster):
    n1, n2, n3 = bosh_cluster.nodes
    sid = await asyncio.to_thread(create, n1, 100)
    rounds = Rounds([n2, n3], sid, 100)
    alice = await bosh_login(rounds, n1.domain, "web")
    bob = await slix_login(n3, "bob", resource="tcp", presence=True)
    got = inbox(bob)
    try:
        # alice → bob: a stanza in a request taken by another node reaches the stream.
        await rounds.send("<message xmlns='jabber:client' type='chat' to='bob@localhost/tcp'>"
                          "<body>from bosh</body></message>")
        assert await asyncio.wait_for(got.get(), 15) == "from bosh"
        # bob → alice: a poll through another node carries it.
        bob.send_message(mto=alice, mbody="to bosh 1", mtype="chat")
        await rounds.until("to bosh 1")
        # A long poll held on node 2 (the holder is node 1) is answered when a message
        # comes, long before `wait` (10 s).
        srv, rid = n2, rounds.rid + 1
        rounds.rid = rid
        held = asyncio.ensure_future(req(srv, sid, rid))
        await asyncio.sleep(1.5)
        assert not held.done(), "the poll was not held"
        sent = time.monotonic()
        bob.send_message(mto=alice, mbody="to bosh 2", mtype="chat")
        text = await asyncio.wait_for(held, 8)
        assert "to bosh 2" in text and time.monotonic() - sent < 5, text
        # A request held for `wait` with nothing to say comes back empty, not as an error.
        started = time.monotonic()
        text = await req(n3, sid, rounds.rid + 1)
        rounds.rid += 1
        assert not terminated(text) and time.monotonic() - started >= 9, text
        # terminate through node 3 ends the session on node 1: the sid is gone everywhere.
        assert terminated(await rounds.send(type="terminate"))
        for srv in (n2, n1):
            assert terminated(await req(srv, sid, rounds.rid + 1), "item-not-found")
    finally:
        await bob.close()
    for n in (n1, n2, n3):
        assert n.alive() and "panicked" not in n.log()


async def test_unknown_sids_get_item_not_found_on_any_node(bosh_cluster):
    n1, n2, _ = bosh_cluster.nodes
    sid = await asyncio.to_thread(create, n1, 10)
    node1 = sid.split(".", 1)[1]
    started = time.monotonic()
    for bad in ["0123456789abcdef",               # no node at all
                "0123456789abcdef.nowhere:5222",  # a node that is not in the cluster
                f"0123456789abcdef.{node1}"]:     # node 1's, but not one of its sessions
        assert terminated(await req(n2, bad, 11), "item-not-found"), bad
    assert time.monotonic() - started < 5
    # A bad rid through node 2 ends the session where it lives, as on one node.
    assert terminated(await req(n2, sid, 5000), "item-not-found")
    assert terminated(await req(n1, sid, 11), "item-not-found")


async def test_a_request_over_the_bus_payload_limit_is_refused_as_an_oversized_body(bosh_cluster):
    """Four stanzas near the stanza limit fit the BOSH body limit (1 MiB + 4 KiB) but not
    nats-server's default max_payload (1 MiB): through another node, `policy-violation`, as
    a body over the limit on one node, and the session lives on."""
    n1, n2, _ = bosh_cluster.nodes
    sid = await asyncio.to_thread(create, n1, 10, 1)
    stanza = "<message xmlns='jabber:client' to='bob@localhost'><body>{}</body></message>"
    filler = 262_000 - len(stanza.format(""))
    big = stanza.format("x" * filler) * 4
    text = await req(n2, sid, 11, big, pad="p" * 3000)
    assert terminated(text, "policy-violation"), text
    assert "payload limit" in n2.log()
    assert "<success" in await req(n1, sid, 11, plain("alice", "alicepass"))


async def test_inactivity_ends_a_session_served_through_another_node(bosh_cluster):
    n1, n2, _ = bosh_cluster.nodes
    sid = await asyncio.to_thread(create, n1, 10, 1)
    text = await req(n2, sid, 11, plain("alice", "alicepass"))
    assert "<success" in text, text
    await asyncio.sleep(INACTIVITY + 2)
    assert terminated(await req(n2, sid, 12), "item-not-found")


async def test_the_holder_killed_ends_the_session_quickly_for_the_client(bosh_cluster):
    n1, n2, n3 = bosh_cluster.nodes
    sid = await asyncio.to_thread(create, n1, 10)
    rounds = Rounds([n2, n3], sid, 10)
    await bosh_login(rounds, n1.domain, "doomed")
    # A poll held on node 1 through node 3 when node 1 dies.
    held = asyncio.ensure_future(req(n3, sid, rounds.rid + 1))
    await asyncio.sleep(1)
    assert not held.done()
    n1.kill()  # SIGKILL: before its lease expires the others still take it for alive
    killed = time.monotonic()
    # The next request: nobody listens on node 1's subject any more, known at once.
    text = await req(n2, sid, rounds.rid + 2)
    assert terminated(text, "remote-connection-failed") and time.monotonic() - killed < 3, text
    assert "BOSH request not served by the node holding its session" in n2.log()
    # The held one ends once node 3 takes node 1 for dead (the lease), not after `wait`
    # or the bus's timeout.
    text = await asyncio.wait_for(held, LEASE_MS / 1000 + 3)
    assert terminated(text, "remote-connection-failed"), text
    # Once its lease expired, the sid names no node alive: unknown, as any other.
    await asyncio.sleep(1)
    assert terminated(await req(n2, sid, rounds.rid + 3), "item-not-found")


async def test_a_bus_outage_ends_the_session_for_a_client_served_through_another_node(bosh_cluster):
    """NATS stopped: a request through another node than the holder gets the terminal error
    at once (and a log line), a poll held through it meanwhile ends too — never a hang; the
    holder's own listener still serves the session."""
    n1, n2, n3 = bosh_cluster.nodes
    sid = await asyncio.to_thread(create, n1, 10)
    rounds = Rounds([n2], sid, 10)
    await bosh_login(rounds, n1.domain, "cut")
    held = asyncio.ensure_future(req(n3, sid, rounds.rid + 1))
    await asyncio.sleep(1)
    bosh_cluster.nats.stop()
    text = await asyncio.wait_for(held, 5)
    assert terminated(text, "remote-connection-failed"), text
    started = time.monotonic()
    text = await req(n2, sid, rounds.rid + 2)
    assert terminated(text, "remote-connection-failed") and time.monotonic() - started < 3, text
    assert "the cluster bus is not connected" in n2.log()
    assert not terminated(await req(n1, sid, rounds.rid + 2, "<presence xmlns='jabber:client'/>"))
    bosh_cluster.nats.start(fixed_port=True)


class RoundRobin:
    """A tiny HTTP proxy in front of the nodes' /http-bind: each request goes to the next
    node, whatever session it is for (as a load balancer without stickiness)."""

    def __init__(self, nodes):
        targets = itertools.cycle(nodes)
        lock = threading.Lock()
        self.served = {n.http_port: 0 for n in nodes}
        served = self.served

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    node = next(targets)
                    served[node.http_port] += 1
                c = http.client.HTTPConnection("127.0.0.1", node.http_port, timeout=120)
                c.request("POST", self.path, body=body,
                          headers={"Content-Type": self.headers.get("Content-Type", "text/xml")})
                r = c.getresponse()
                data = r.read()
                c.close()
                self.send_response(r.status)
                self.send_header("Content-Type", r.getheader("Content-Type", "text/xml"))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.skipif(NODE is None or not (WEB / "node_modules").is_dir(),
                    reason="node and tests/web/node_modules are needed (cd tests/web && npm ci)")
async def test_strophe_behind_a_round_robin_proxy(bosh_cluster):
    n1, n2, n3 = bosh_cluster.nodes
    bob = await slix_login(n3, "bob", resource="tcp", presence=True)
    echo(bob)
    proxy = RoundRobin([n1, n2, n3])
    try:
        steps = await run_node("strophe.mjs", {
            "SERVICE": f"http://127.0.0.1:{proxy.port}/http-bind",
            "JID": n1.jid("alice", "strophe"), "PASSWORD": "alicepass",
            "PEER": n1.jid("bob")})
    finally:
        proxy.close()
        await bob.close()
    by_name = {s["step"]: s for s in steps}
    assert by_name["online"]["jid"] == "alice@localhost/strophe"
    assert "roster" in by_name and "round-trip" in by_name and "done" in by_name, steps
    # Every node served some of the session's requests.
    assert all(n > 1 for n in proxy.served.values()), proxy.served
