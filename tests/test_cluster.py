"""Three Rookery nodes serving one domain (crates/cluster, docs/clustering.md).

The `cluster` fixture starts a `nats-server` (Debian's) on an ephemeral loopback port, one
fresh PostgreSQL database (``ROOKERY_TEST_POSTGRES_URL``, as ``scripts/pg-start.sh`` exports)
and three nodes on loopback with their own ports, the same domain and the same database. The
lease is shortened to 4 s so that the failure tests stay short; the default is 6 s.

Without nats-server or PostgreSQL the module is skipped locally, and fails in CI (``CI`` set),
where both are installed by scripts/test.sh.

Waiting is on facts, not time: `reachable` pings a full JID across nodes until the answer
comes back (the registry of the asking node knows the session, and the IQ reply found its way
back), and clients wait for the stanzas they expect.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
import xml.etree.ElementTree as ET
from xml.sax.saxutils import quoteattr

import pytest
from slixmpp.exceptions import IqError

from conftest import PG_URL, PgDatabase, free_port
from test_websub import receiver  # noqa: F401 (a fixture)
from slix import SlixClient, slix_login
from test_im import BODY, NS_ROSTER, Peer, is_msg, is_presence, is_push, make_mutual, peer
from test_sasl2 import bind2, tls_client
from test_sm import NS_STANZAS, resume
from xmpp_raw import NS_SASL2, NS_SM, NS_BIND2, SaslFailure, local, stanza_error, tag

USERS = {"alice": "alicepass", "bob": "bobpass", "carol": "carolpass", "dave": "davepass"}
LEASE_MS = 4000


def _nats_server() -> str | None:
    found = shutil.which("nats-server")
    if found:
        return found
    return "/usr/sbin/nats-server" if os.access("/usr/sbin/nats-server", os.X_OK) else None


NATS_BIN = _nats_server()


class Nats:
    """A nats-server on 127.0.0.1 that can be stopped and started again on the same port."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.log_path = workdir / "nats.log"
        self.proc: subprocess.Popen | None = None

    def start(self, fixed_port: bool = False):
        """Starts nats-server; on a port taken meanwhile by someone else (other tests run at
        the same time) it picks another, unless the port must stay (a restart)."""
        for _ in range(3):
            log = open(self.log_path, "a")
            self.proc = subprocess.Popen([NATS_BIN, "-a", "127.0.0.1", "-p", str(self.port)],
                                         stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
            deadline = time.monotonic() + 15
            while self.proc.poll() is None and time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                    return
                except OSError:
                    time.sleep(0.05)
            self.stop()
            if fixed_port:
                break
            self.port = free_port()
            self.url = f"nats://127.0.0.1:{self.port}"
        raise RuntimeError("nats-server did not start: " + self.log_path.read_text())

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Cluster:
    def __init__(self, nats: Nats, nodes: list, pg: PgDatabase):
        self.nats = nats
        self.nodes = nodes
        self.pg = pg


def _require(what: str, present: bool):
    if present:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing in CI (scripts/test.sh installs it)")
    pytest.skip(f"{what} is missing")


def _start(server_factory, tmp_path, node_config=lambda i: {}):
    """Yields a cluster of three nodes; `node_config(i)` adds to node i's configuration."""
    _require("nats-server", NATS_BIN is not None)
    _require("PostgreSQL (ROOKERY_TEST_POSTGRES_URL, scripts/pg-start.sh)", bool(PG_URL))
    nats = Nats(tmp_path)
    nats.start()
    pg = PgDatabase(PG_URL)
    nodes = []
    try:
        for i in range(3):
            # One database: the accounts are created once, through the first node's config.
            # The third node holds its batches a little (batch_delay_ms), so that every test
            # also crosses a forwarder that pauses between batches.
            srv = server_factory(users=USERS if i == 0 else {}, store={"url": pg.url},
                                 cluster={"nats_url": nats.url, "lease_ms": LEASE_MS,
                                          "heartbeat_ms": 500,
                                          "batch_delay_ms": 2 if i == 2 else 0},
                                 **node_config(i))
            srv.users = dict(USERS)
            nodes.append(srv)
        yield Cluster(nats, nodes, pg)
    finally:
        for n in nodes:
            n.kill()
        nats.stop()
        pg.drop()


@pytest.fixture
def cluster(server_factory, tmp_path):
    yield from _start(server_factory, tmp_path)


BOT, BOT_SECRET = "bot.localhost", "botsecret"


@pytest.fixture
def component_cluster(server_factory, tmp_path):
    """Three nodes, each declaring the component bot.localhost on a port of its own."""
    ports = [free_port() for _ in range(3)]
    yield from _start(server_factory, tmp_path, lambda i: {"component": {
        "listen": f"127.0.0.1:{ports[i]}",
        "service": [{"domain": BOT, "secret": BOT_SECRET}]}})


async def reachable(p: Peer, full_jid: str, timeout: float = 20.0):
    """Pings `full_jid` (a client that answers pings: slixmpp) from `p` until the answer
    comes: the asking node knows the session, and the reply found its way back."""
    deadline = time.monotonic() + timeout
    while True:
        r = await p.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to=full_jid)
        if r.get("type") == "result":
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{full_jid} not reachable from {p.jid}: {stanza_error(r)}")
        await asyncio.sleep(0.1)


async def meet(p: Peer, q: Peer, timeout: float = 20.0):
    """`reachable` between two raw clients: `q` answers `p`'s ping itself."""
    deadline = time.monotonic() + timeout
    while True:
        rid = p.c.next_id("meet")
        p.send(f"<iq type='get' id='{rid}' to={quoteattr(q.jid)}>"
               "<ping xmlns='urn:xmpp:ping'/></iq>")
        r = await wait_for(p, lambda e: local(e) == "iq" and e.get("id") == rid
                           and e.get("type") in ("result", "error"), what="a ping answer",
                           answer=(q, rid))
        if r.get("type") == "result":
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{q.jid} not reachable from {p.jid}: {stanza_error(r)}")
        await asyncio.sleep(0.1)


async def wait_for(p: Peer, pred, timeout: float = 15.0, what: str = "a stanza",
                   answer: tuple[Peer, str] | None = None):
    """The first stanza `p` received (or receives within `timeout`) that matches `pred`.
    With `answer=(q, id)`, `q` meanwhile answers the ping `id` when it arrives."""
    got = p.take(pred)
    if got:
        return got[0]
    waiter = asyncio.create_task(_answer_ping(*answer)) if answer else None
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                el = await p.c.recv(max(0.1, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                break
            if pred(el):
                return el
            p.seen.append(el)
        raise AssertionError(f"{p.jid}: timeout waiting for {what}")
    finally:
        if waiter is not None:
            if not waiter.done():
                waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)


async def _answer_ping(q: Peer, rid: str):
    """`q` answers the ping `rid` once it arrives (cancelled if it never does)."""
    while True:
        got = q.take(lambda e: local(e) == "iq" and e.get("id") == rid)
        if got:
            el = got[0]
            break
        el = await q.c.recv(30)
        if local(el) == "iq" and el.get("id") == rid:
            break
        q.seen.append(el)
    q.send(f"<iq type='result' id='{rid}' to={quoteattr(el.get('from'))}/>")


async def test_messages_cross_nodes_to_full_and_bare_jids(cluster):
    n1, n2, n3 = cluster.nodes
    a = await slix_login(n1, "alice", resource="one", presence=True)
    b2 = await slix_login(n2, "bob", resource="two", presence=True)
    b3 = await slix_login(n3, "bob", resource="three", presence=True)
    probe = await peer(n1, "carol", "probe", roster=False, presence=False)
    await reachable(probe, "bob@localhost/two")
    await reachable(probe, "bob@localhost/three")
    await reachable(await peer(n2, "dave", "probe", roster=False, presence=False),
                    "alice@localhost/one")
    # Full JID: only that resource, on its node.
    a.send_message(mto="bob@localhost/three", mbody="to three", mtype="chat")
    await b3.inbox.wait(lambda e: e.findtext(BODY) == "to three", what="full-JID message")
    # Bare JID (RFC 6121 §8.5.2.1.1): both resources of equal priority, on two other nodes.
    a.send_message(mto="bob@localhost", mbody="to both", mtype="chat")
    for b in (b2, b3):
        await b.inbox.wait(lambda e: e.findtext(BODY) == "to both", what="bare-JID message")
    # And back across nodes.
    b2.send_message(mto="alice@localhost/one", mbody="reply", mtype="chat")
    m = await a.inbox.wait(lambda e: e.findtext(BODY) == "reply", what="reply")
    assert m.get("from") == "bob@localhost/two"
    assert not [e for e in b2.inbox.items if e.findtext(BODY) == "to three"]
    # The admin view names the nodes and where sessions live.
    st = n1.ctl("status")
    assert st.returncode == 0, st.stderr
    assert "cluster bus connected" in st.stdout and "true" in st.stdout
    for other in (n2, n3):
        assert f":{other.port}" in st.stdout, st.stdout
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{n1.admin_port}/metrics", timeout=10) as r:
        metrics = r.read().decode()
    for node in (n1, n2, n3):
        assert f':{node.port}"}}' in metrics and "rookery_cluster_sessions" in metrics, metrics
    for c in (a, b2, b3):
        await c.close()
    await probe.close()


async def test_presence_and_unavailable_between_nodes(cluster):
    n1, n2, _ = cluster.nodes
    await make_mutual(n1, "alice", "bob")
    a = await peer(n1, "alice", "desk")
    b = await peer(n2, "bob", "phone", presence=False)
    await meet(b, a)
    b.presence()
    await wait_for(a, is_presence(frm="bob@localhost/phone"), what="bob's presence on node 2")
    # Bob's initial presence brought him alice's, though she is on another node (her node
    # answered the probe).
    await wait_for(b, is_presence(frm="alice@localhost/desk"), what="alice's presence for bob")
    await b.close()
    await wait_for(a, is_presence("unavailable", "bob@localhost/phone"),
                   what="bob's unavailable presence")
    await a.close()


async def test_roster_push_reaches_the_same_account_on_another_node(cluster):
    n1, n2, _ = cluster.nodes
    a1 = await peer(n1, "alice", "one")
    a2 = await peer(n2, "alice", "two")
    await meet(a1, a2)
    r = await a1.iq("set", f"<query xmlns='{NS_ROSTER}'><item jid='carol@localhost' "
                           "name='Carol'/></query>")
    assert r.get("type") == "result"
    push = await wait_for(a2, is_push("carol@localhost"), what="the roster push on node 2")
    assert push.get("type") == "set"
    await a1.close()
    await a2.close()


async def test_a_block_made_through_one_node_applies_on_another(cluster):
    """Node 2 holds alice's block list in memory (she has a session there); blocking carol
    through node 1 makes node 2 drop it (XEP-0191 across nodes: the cached list must not let
    carol's messages through)."""
    n1, n2, _ = cluster.nodes
    a1 = await peer(n1, "alice", "one")
    a2 = await peer(n2, "alice", "two")
    c = await peer(n2, "carol", "desk", roster=False)
    c.message("alice@localhost/two", "before the block")
    await wait_for(a2, is_msg("before the block"), what="carol's message before the block")
    r = await a1.iq("set", "<block xmlns='urn:xmpp:blocking'><item jid='carol@localhost'/>"
                           "</block>")
    assert r.get("type") == "result"
    # The block push (XEP-0191 §3.3) reaches alice's resource on node 2 as well.
    await wait_for(a2, lambda e: local(e) == "iq" and e.get("type") == "set"
                   and e.find("{urn:xmpp:blocking}block") is not None, what="the block push")
    # Node 2 hears of the change on the bus; until then carol's message may still pass.
    deadline = time.monotonic() + 15
    blocked = False
    while not blocked and time.monotonic() < deadline:
        c.message("alice@localhost/two", "after the block")
        new = await c.sync()
        blocked = any(local(e) == "message" and e.get("type") == "error" for e in new)
        if not blocked:
            await asyncio.sleep(0.1)
    assert blocked, "node 2 kept delivering to alice from a blocked contact"
    # What node 2 delivers from now on: nothing from carol.
    c.message("alice@localhost/two", "still blocked")
    await c.sync()
    await a2.sync()
    assert not a2.take(is_msg("still blocked"))
    for p in (a1, a2, c):
        await p.close()


async def test_a_block_list_cached_for_another_nodes_session_follows_its_changes(cluster):
    """Node 1 checks carol's messages against the block list of alice, whose only session is
    on node 2, and keeps that list in memory while alice is online somewhere; blocking and
    unblocking carol through node 2 must reach that copy."""
    n1, n2, _ = cluster.nodes
    a2 = await peer(n2, "alice", "two")
    c = await peer(n1, "carol", "desk", roster=False)

    async def until(what: str, done) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            c.message("alice@localhost/two", what)
            new = await c.sync()
            await a2.sync()
            if done(new):
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"not seen in time: {what}")

    c.message("alice@localhost/two", "before the block")
    await wait_for(a2, is_msg("before the block"), what="carol's message before the block")
    r = await a2.iq("set", "<block xmlns='urn:xmpp:blocking'><item jid='carol@localhost'/>"
                           "</block>")
    assert r.get("type") == "result"
    await until("after the block", lambda new: any(
        local(e) == "message" and e.get("type") == "error" for e in new))
    a2.take(lambda e: True)
    r = await a2.iq("set", "<unblock xmlns='urn:xmpp:blocking'><item jid='carol@localhost'/>"
                           "</unblock>")
    assert r.get("type") == "result"
    await until("after the unblock", lambda new: bool(a2.take(is_msg("after the unblock"))))
    for p in (a2, c):
        await p.close()


async def test_a_resource_bound_on_another_node_replaces_the_older_session(cluster):
    n1, n2, _ = cluster.nodes
    old = await peer(n1, "carol", "same", presence=False)
    probe = await peer(n2, "dave", "probe", roster=False, presence=False)
    await meet(probe, old)
    new = await peer(n2, "carol", "same", presence=False)
    assert await old.c.stream_error(15) == "conflict"
    await meet(probe, new)
    await new.close()
    await probe.close()


def _sm_client(node, resource: str) -> tuple[SlixClient, dict]:
    """slixmpp with XEP-0198 for alice on `node`; `events` gets a future per outcome of a
    resumption (`resumed`, `failed`), renewed by `_resume_on`."""
    c = SlixClient(node.jid("alice", resource), node.users["alice"])
    c.register_plugin("xep_0198")
    events: dict = {}

    def settle(name):
        return lambda _: events[name].done() or events[name].set_result(True)

    c.add_event_handler("session_resumed", settle("resumed"))
    c.add_event_handler("sm_failed", settle("failed"))
    return c, events


async def _sm_login(c: SlixClient, node):
    """Logs `c` in on `node`, with resumption enabled."""
    c.connect(node.host, node.port)
    await asyncio.wait_for(c.session, 20)
    for _ in range(50):
        if c.plugin["xep_0198"].sm_id:
            break
        await asyncio.sleep(0.1)
    assert c.plugin["xep_0198"].sm_id, "stream management was not enabled with resumption"


def _resume_on(c: SlixClient, events: dict, node):
    """Reconnects `c` to `node`; slixmpp asks to resume its session there."""
    loop = asyncio.get_running_loop()
    events["resumed"] = loop.create_future()
    events["failed"] = loop.create_future()
    c.session = loop.create_future()
    c.connect(node.host, node.port)


async def _cut_and_resume(c: SlixClient, events: dict, bob, jid: str, text: str, node):
    """Kills `c`'s connection (its session hibernates), has `bob` send `text` to `jid`
    meanwhile, then resumes on `node`: <resumed/> (not <failed/>), the same full JID, and
    the message that waited."""
    c.transport.abort()
    await asyncio.sleep(0.5)
    bob.message(jid, text)
    await bob.sync()
    await asyncio.sleep(0.5)
    _resume_on(c, events, node)
    await asyncio.wait_for(events["resumed"], 20)
    assert not events["failed"].done()
    assert c.boundjid.full == jid
    await c.inbox.wait(is_msg(text), timeout=15, what=f"the message that waited: {text}")


async def test_a_session_hibernated_on_one_node_is_resumed_on_another(cluster):
    """XEP-0198 resumption on another node (docs/clustering.md, "Resumption on another
    node"): slixmpp, its TCP connection killed on node 1, reconnects to node 2 and resumes —
    <resumed/>, the same full JID, the message that waited in node 1's hibernated session
    delivered once, and its contact never sees it unavailable. Then again from node 2 to node
    3: the SM-ID moves with the session."""
    n1, n2, n3 = cluster.nodes
    await make_mutual(n1, "alice", "bob")
    c, events = _sm_client(n1, "before")
    bob = await peer(n2, "bob", "phone")
    before = n1.jid("alice", "before")
    try:
        await _sm_login(c, n1)
        c.send_presence()
        await wait_for(bob, is_presence(frm=before), what="alice available")
        await _cut_and_resume(c, events, bob, before, "waited", n2)
        # Node 2 serves it now: a message to the full JID, and one to the bare JID (its
        # presence moved with it: available, so the bare JID reaches it).
        bob.message(before, "on node 2")
        bob.message("alice@localhost", "to the bare JID")
        await c.inbox.wait(is_msg("on node 2"), timeout=15, what="a message after the move")
        await c.inbox.wait(is_msg("to the bare JID"), timeout=15, what="a message to the bare JID")

        # And once more, from node 2 to node 3, under the same SM-ID.
        await _cut_and_resume(c, events, bob, before, "waited again", n3)
        bob.message(before, "on node 3")
        await c.inbox.wait(is_msg("on node 3"), timeout=15, what="a message after the second move")
        bodies = [e.findtext(BODY) for e in c.inbox.items if local(e) == "message"]
        for body in ("waited", "on node 2", "to the bare JID", "waited again", "on node 3"):
            assert bodies.count(body) == 1, bodies
        await bob.sync()
        assert not bob.take(is_presence("unavailable", before)), "bob saw alice go"
    finally:
        await c.close()
        await bob.close()


async def test_an_inline_sasl2_resumption_on_another_node_moves_the_session(cluster):
    """XEP-0198 inline in SASL2 (XEP-0388) on another node: <resumed/> inside the
    <success/>, with the session's full JID, then what waited on node 1."""
    n1, n2, _ = cluster.nodes
    c = await tls_client(n1)
    s = await c.sasl2("alice", "alicepass", inline=bind2(f"<enable xmlns='{NS_SM}' resume='true'/>"))
    jid = s.findtext(tag(NS_SASL2, "authorization-identifier"))
    previd = s.find(f"{tag(NS_BIND2, 'bound')}/{tag(NS_SM, 'enabled')}").get("id")
    bob = await peer(n2, "bob", "b", roster=False, presence=False)
    # Node 2 knows the session once a message from there reaches it.
    bob.message(jid, "first")
    el = await c.recv()
    assert local(el) == "message" and el.findtext(BODY) == "first"
    c.abort()
    await asyncio.sleep(0.5)
    bob.message(jid, "while away")
    await bob.sync()
    await asyncio.sleep(0.5)
    c2 = await tls_client(n2)
    s2 = await c2.sasl2("alice", "alicepass", inline=(
        f"<resume xmlns='{NS_SM}' previd='{previd}' h='1'/>" + bind2()))
    resumed = s2.find(tag(NS_SM, "resumed"))
    assert resumed is not None and resumed.get("previd") == previd, ET.tostring(s2)
    assert s2.findtext(tag(NS_SASL2, "authorization-identifier")) == jid
    el = await c2.recv()
    assert local(el) == "message" and el.findtext(BODY) == "while away", ET.tostring(el)
    await c2.close()
    await bob.close()


async def test_a_resumption_with_h_too_high_fails_on_another_node_as_on_its_own(cluster):
    """XEP-0198 §4/§5: an `h` above what the session sent is refused with
    `undefined-condition` and `<handled-count-too-high/>` (and the session's own `h`) — the
    same <failed/>, element for element, whether the client asks the node that holds the
    hibernated session or another node (whose holder says why it refused over the bus). The
    client then binds anew."""
    n1, n2, _ = cluster.nodes
    alice = await peer(n1, "alice", "r", roster=False, presence=False)
    alice.send(f"<enable xmlns='{NS_SM}' resume='true'/>")
    enabled = await wait_for(alice, lambda e: e.tag == tag(NS_SM, "enabled"), what="<enabled/>")
    previd = enabled.get("id")
    bob = await peer(n2, "bob", "b", roster=False, presence=False)
    # A ping from node 2, answered: the session sent one stanza and received one, and node 2
    # knows it.
    await meet(bob, alice)
    alice.c.abort()
    await asyncio.sleep(0.5)
    here, failed_here = await resume(n1, "alice", previd, 100)
    there, failed_there = await resume(n2, "alice", previd, 100)
    too_high = failed_there.find(tag(NS_SM, "handled-count-too-high"))
    assert too_high is not None, ET.tostring(failed_there)
    assert too_high.get("h") == "100" and too_high.get("send-count") == "1", ET.tostring(too_high)
    assert failed_there.find(tag(NS_STANZAS, "undefined-condition")) is not None
    assert failed_there.get("h") == "1"
    assert ET.tostring(failed_there) == ET.tostring(failed_here)
    assert await there.bind("after") == n2.jid("alice", "after")
    for c in (here, there):
        await c.close()
    await bob.close()


async def test_a_resumption_fails_cleanly_when_the_node_that_held_the_session_is_gone(cluster):
    """Node 1, holding the hibernated session, is killed (-9): node 2 has nobody to hand it
    over, so the client is answered <failed/> at once and binds anew; what was sent to it
    meanwhile went to offline storage and reaches the new session — nothing is lost."""
    n1, n2, _ = cluster.nodes
    c, events = _sm_client(n1, "before")
    bob = await peer(n2, "bob", "phone", roster=False, presence=False)
    before = n1.jid("alice", "before")
    try:
        await _sm_login(c, n1)
        c.send_presence()
        await reachable(bob, before)
        c.transport.abort()
        await asyncio.sleep(0.5)
        n1.kill()  # SIGKILL
        bob.message(before, "sent after the kill")
        await bob.sync()
        c.requested_jid.resource = "after"
        started = time.monotonic()
        _resume_on(c, events, n2)
        await asyncio.wait_for(events["failed"], 20)
        assert time.monotonic() - started < 10, "the failure took the handover's timeout"
        await asyncio.wait_for(c.session, 20)
        assert c.boundjid.resource == "after"
        c.send_presence()
        await c.inbox.wait(is_msg("sent after the kill"), timeout=15, what="the offline message")
    finally:
        await c.close()
        await bob.close()


async def _alice_sees_bob(cluster, alice_on: int = 0) -> tuple[Peer, Peer]:
    """alice on node 1 (or node `alice_on` + 1) and bob on node 2, mutual contacts, both
    available."""
    n1, n2, _ = cluster.nodes
    await make_mutual(n1, "alice", "bob")
    a = await peer(cluster.nodes[alice_on], "alice", "desk")
    b = await peer(n2, "bob", "phone", presence=False)
    await meet(a, b)
    b.presence()
    await wait_for(a, is_presence(frm="bob@localhost/phone"), what="bob available")
    return a, b


@pytest.mark.parametrize("alice_on", [0, 2], ids=["from-node-1", "from-a-batching-node-3"])
async def test_kill_9_of_a_node_during_traffic(cluster, alice_on):
    """A node dies during traffic: what was acknowledged reached bob, or offline storage
    (delivered at his next login on another node), or came back to alice as an error; alice
    sees him unavailable. Also with alice on the node whose forwarder holds its batches
    (`batch_delay_ms`): what it holds for the dead node bounces or goes offline too."""
    n1, n2, n3 = cluster.nodes
    a, b = await _alice_sees_bob(cluster, alice_on)
    for i in range(20):
        a.message("bob@localhost", f"before {i}")
    for i in range(20):
        await wait_for(b, is_msg(f"before {i}"), what=f"message {i} before the kill")
    n2.kill()  # SIGKILL
    # Right after the kill, before anyone noticed: node 1 still routes to bob's node; nobody
    # answers on its subject any more, so node 1 takes it for dead at once.
    for i in range(10):
        a.message("bob@localhost", f"during {i}")
    await wait_for(a, is_presence("unavailable", "bob@localhost/phone"),
                   what="bob unavailable after his node died")
    for i in range(5):
        a.message("bob@localhost", f"after {i}")
    await a.sync()
    errors = {e.findtext(BODY) for e in a.seen
              if local(e) == "message" and e.get("type") == "error"}
    b = await peer(n1 if alice_on == 2 else n3, "bob", "again", roster=False, presence=True)
    for body in [f"during {i}" for i in range(10)] + [f"after {i}" for i in range(5)]:
        if body not in errors:
            await _delivered_or_bounced(a, b, body)
    await a.close()
    await b.close()


async def _delivered_or_bounced(a: Peer, b: Peer, body: str, timeout: float = 20.0):
    """`body` reaches bob (offline storage, at his next login) or comes back to alice as an
    error — which, for a stanza her node had sent and the dead node never acknowledged, may
    come after her first sync on a busy box."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await wait_for(b, is_msg(body), timeout=1, what=f"offline message '{body}'")
            return
        except AssertionError:
            pass
        await a.sync()
        if a.take(lambda e: local(e) == "message" and e.get("type") == "error"
                  and e.findtext(BODY) == body):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"'{body}' neither delivered at bob's next login nor bounced")


async def test_a_killed_silent_node_is_noticed_within_the_lease(cluster):
    """No traffic for the dead node: its heartbeats stop, and within the lease the others
    drop its sessions and tell their contacts."""
    n1, n2, _ = cluster.nodes
    a, _ = await _alice_sees_bob(cluster)
    n2.kill()  # SIGKILL
    await wait_for(a, is_presence("unavailable", "bob@localhost/phone"),
                   timeout=LEASE_MS / 1000 + 3, what="bob unavailable within the lease")
    # Bob is gone from the registry: a message now goes to offline storage.
    a.message("bob@localhost", "stored")
    await a.sync()
    assert not [e for e in a.seen if local(e) == "message" and e.get("type") == "error"]
    await a.close()


async def test_nats_outage_bounces_cross_node_stanzas_and_heals(cluster):
    n1, n2, _ = cluster.nodes
    a = await peer(n1, "alice", "desk", roster=False)
    c = await peer(n1, "carol", "desk", roster=False)
    b = await peer(n2, "bob", "phone", roster=False)
    await meet(a, b)
    cluster.nats.stop()
    # Local delivery goes on.
    a.message("carol@localhost/desk", "local during the outage")
    await wait_for(c, is_msg("local during the outage"), what="a local message")
    # Cross-node: a clear error, not a hang.
    r = await a.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to="bob@localhost/phone")
    assert r.get("type") == "error"
    assert stanza_error(r) == "recipient-unavailable"
    cluster.nats.start(fixed_port=True)
    await meet(a, b, timeout=40)
    a.message("bob@localhost/phone", "after the outage")
    await wait_for(b, is_msg("after the outage"), what="a cross-node message after healing")
    for p in (a, b, c):
        await p.close()


async def _until(what: str, attempt, timeout: float = 20.0):
    """Runs `attempt()` until it returns true: for facts another node learns over the bus
    (a note, a client's capabilities), which no reply tells the test about."""
    deadline = time.monotonic() + timeout
    while not await attempt():
        if time.monotonic() > deadline:
            raise AssertionError(f"timeout waiting for {what}")
        await asyncio.sleep(0.1)


async def test_pubsub_notifications_reach_subscribers_on_every_node(cluster):
    """A node of pubsub.localhost created and published through node 1, subscribed to
    through nodes 2 and 3: node 1 learns the subscriptions (the shared store, a note on the
    bus) and its notifications reach the subscribers where they are bound."""
    from test_pubsub import PLUGINS, event, login, payload
    n1, n2, n3 = cluster.nodes
    s = "pubsub.localhost"
    a = await login(n1, "alice", "one", plugins=PLUGINS)
    b = await login(n2, "bob", "two", plugins=PLUGINS)
    c = await login(n3, "carol", "three", plugins=PLUGINS)
    try:
        await a.plugin["xep_0060"].create_node(s, "news", timeout=10)
        await b.plugin["xep_0060"].subscribe(s, "news", timeout=10)
        await c.plugin["xep_0060"].subscribe(s, "news", timeout=10)

        async def node1_knows() -> bool:
            r = await a.plugin["xep_0060"].get_node_subscriptions(s, "news", timeout=10)
            got = {str(x["jid"]) for x in r["pubsub_owner"]["subscriptions"]}
            return got >= {"bob@localhost", "carol@localhost"}

        await _until("node 1 to list the subscriptions made through nodes 2 and 3",
                     node1_knows)
        await a.plugin["xep_0060"].publish(s, "news", id="first", payload=payload("x"),
                                           timeout=10)
        for cl in (b, c):
            await cl.inbox.wait(event("news", "item", s, "first"), 10, "the notification")
        # Published through node 2 (bob made publisher by the owner on node 1): node 2
        # learns the affiliation, and alice on node 1 is no subscriber, carol on node 3 is.
        await a.plugin["xep_0060"].modify_affiliations(s, "news", [("bob@localhost",
                                                                    "publisher")], timeout=10)

        async def bob_publishes() -> bool:
            try:
                await b.plugin["xep_0060"].publish(s, "news", id="by-bob",
                                                   payload=payload("y"), timeout=10)
                return True
            except Exception:
                return False

        await _until("node 2 to learn bob's affiliation", bob_publishes)
        await c.inbox.wait(event("news", "item", s, "by-bob"), 10, "bob's notification")
        items = await c.plugin["xep_0060"].get_items(s, "news", timeout=10)
        assert [i["id"] for i in items["pubsub"]["items"]] == ["first", "by-bob"]
    finally:
        for cl in (a, b, c):
            await cl.close()


async def test_pep_notifications_reach_interested_resources_on_other_nodes(cluster):
    """alice publishes her tune through node 1: her contact bob on node 2 and her own second
    resource on node 3 get it through their +notify capabilities, which only their own nodes
    know (the PEP relay); a later login on node 2 gets the newest item as the last one."""
    from test_pubsub import NS_TUNE, PLUGINS, event, login
    n1, n2, n3 = cluster.nodes
    await make_mutual(n1, "alice", "bob")
    a = await login(n1, "alice", "one", plugins=PLUGINS)
    b = await login(n2, "bob", "two", plugins=PLUGINS)
    a3 = await login(n3, "alice", "three", plugins=PLUGINS)
    later = None

    def live(e) -> bool:
        # A notification, not a last item sent when a node learned the capabilities (that
        # one carries a delay).
        return (event(NS_TUNE, "item", "alice@localhost")(e)
                and e.find("{urn:xmpp:delay}delay") is None)

    try:
        n = 0

        async def both_got_it() -> bool:
            # Their nodes learn their capabilities (disco#info to them) on their own time:
            # publish until a notification arrives.
            nonlocal n
            n += 1
            await a.plugin["xep_0118"].publish_tune(artist="A", title=f"song {n}", timeout=10)
            title = f"song {n}"
            for cl in (b, a3):
                try:
                    await cl.inbox.wait(lambda e: live(e) and e.find(
                        f".//{{{NS_TUNE}}}title").text == title, 1.0, "the tune")
                except AssertionError:
                    return False
            return True

        await _until("the tune at bob (node 2) and alice's resource on node 3", both_got_it)
        # Live exactly once each: node 1's relay is the only way there (a last item sent
        # when a node learned the capabilities carries a delay).
        title = f"song {n}"
        for cl in (b, a3):
            got = [e for e in cl.inbox.items
                   if live(e) and e.find(f".//{{{NS_TUNE}}}title").text == title]
            assert len(got) == 1, [ET.tostring(e) for e in got]
        await a.plugin["xep_0118"].publish_tune(artist="A", title="newest", timeout=10)
        await b.inbox.wait(lambda e: live(e)
                           and e.find(f".//{{{NS_TUNE}}}title").text == "newest", 10,
                           "the newest tune")
        # Node 2 had alice's PEP node in memory; its last item is the newest one.
        later = await login(n2, "bob", "later", plugins=PLUGINS)
        msg = await later.inbox.wait(event(NS_TUNE, "item", "alice@localhost"), 20,
                                     "the last tune at login")
        assert msg.find(f".//{{{NS_TUNE}}}title").text == "newest"
    finally:
        for cl in (a, b, a3, later):
            if cl is not None:
                await cl.close()


async def test_a_component_connected_to_two_nodes_shares_its_traffic(component_cluster):
    """bot.localhost connected to nodes 1 and 2 (XEP-0114, slixmpp's ComponentXMPP, which
    echoes chat messages): each node's traffic for it goes to its own connection, node 3's
    to one of them, the echoes reach clients on every node, and when one connection dies
    the other serves all."""
    from slix import Component
    from test_component import wait_port
    n1, n2, n3 = component_cluster.nodes
    comps = []
    clients = []
    try:
        for n in (n1, n2):
            port = int(n.config["component"]["listen"].rsplit(":", 1)[1])
            wait_port(port)
            c = Component(BOT, BOT_SECRET, port)
            c.connect()
            await asyncio.wait_for(c.session, 20)
            comps.append(c)
        one, two = comps
        a1 = await slix_login(n1, "alice", resource="one")
        b2 = await slix_login(n2, "bob", resource="two")
        c3 = await slix_login(n3, "carol", resource="three")
        clients += [a1, b2, c3]
        k = 0

        async def echoed(cl) -> bool:
            # Until the client's node knows a connection (node 3 hears of both on the bus).
            nonlocal k
            k += 1
            body = f"hello {k}"
            cl.send_message(mto=BOT, mbody=body, mtype="chat")
            try:
                await cl.inbox.wait(lambda e: e.findtext(BODY) == "echo: " + body, 1.0,
                                    "the echo")
                return True
            except AssertionError:
                return False

        for cl in (a1, b2, c3):
            await _until(f"an echo for {cl.boundjid}", lambda: echoed(cl))

        def served(comp, frm: str) -> bool:
            return any(local(e) == "message" and e.get("from", "").startswith(frm)
                       for e in comp.inbox.items)

        assert served(one, "alice@") and not served(two, "alice@"), "node 1's own connection"
        assert served(two, "bob@") and not served(one, "bob@"), "node 2's own connection"
        assert served(one, "carol@") or served(two, "carol@")
        # Stanzas from either connection reach clients on every node.
        one.send_message(mto="bob@localhost/two", mbody="from one", mtype="chat")
        two.send_message(mto="carol@localhost/three", mbody="from two", mtype="chat")
        await b2.inbox.wait(lambda e: e.findtext(BODY) == "from one", 10, "one's message")
        await c3.inbox.wait(lambda e: e.findtext(BODY) == "from two", 10, "two's message")
        # The connection on node 1 dies: node 1's traffic goes to node 2's connection.
        await one.close()
        comps.remove(one)
        await _until("node 1's traffic served by node 2's connection", lambda: echoed(a1))
        assert served(two, "alice@")
        await _until("node 3's traffic served", lambda: echoed(c3))
    finally:
        for x in comps + clients:
            await x.close()


async def test_a_room_has_occupants_on_every_node_and_moves_when_its_node_dies(cluster):
    """Rooms live on one node, the oldest (node 1 here); the others hand it their stanzas
    (docs/clustering.md, "Rooms"). With slixmpp's XEP-0045 plugin: a persistent room created
    from node 2 has occupants on all three nodes, who see each other and each other's
    messages; disco lists it from any node. Node 1 is killed: node 2 becomes the rooms' home,
    reads the room from the store, answers a self-ping with not-acceptable (XEP-0410: the
    client rejoins), and the occupants meet again with the room's configuration and
    affiliations as they were."""
    from test_muc import codes, create, join, login as muc_login, room, service
    n1, n2, n3 = cluster.nodes
    a = await muc_login(n2, "alice", "two")
    b = await muc_login(n3, "bob", "three")
    c = await muc_login(n1, "carol", "one")
    probe = await peer(n1, "dave", "probe", roster=False, presence=False)
    try:
        for full in ("alice@localhost/two", "bob@localhost/three"):
            await reachable(probe, full)
        r = room(n1, "hall")
        muc = {x: x.plugin["xep_0045"] for x in (a, b, c)}
        await create(a, r, "alice", persistentroom="1", roomname="The Hall")
        await muc[a].set_affiliation(r, "member", jid="bob@localhost", timeout=10)
        pres = await join(b, r, "bob")
        assert item_of_affiliation(pres) == "member" and 110 in codes(pres)
        await join(c, r, "carol")
        for x in (a, b, c):
            await _until(f"{x.boundjid} sees all three", lambda x=x: _sees(muc[x], r, 3))
        b.send_message(mto=r, mbody="hello hall", mtype="groupchat")
        for x in (a, b, c):
            m = await x.inbox.wait(lambda e: e.findtext(BODY) == "hello hall", 10,
                                   "the room's message")
            assert m.get("from") == f"{r}/bob"
        items = await b.plugin["xep_0030"].get_items(jid=service(n1), timeout=10)
        assert (r, None, "The Hall") in items["disco_items"]["items"]
        # The rooms' node dies; its lease runs out, node 2 (the oldest left) takes over.
        n1.kill()  # SIGKILL

        async def not_joined() -> bool:
            # XEP-0410: the occupant pings itself; the new home does not know it.
            try:
                await a.plugin["xep_0199"].send_ping(f"{r}/alice", timeout=2)
            except IqError as e:
                return e.iq["error"]["condition"] == "not-acceptable"
            except Exception:
                return False
            return False

        await _until("a self-ping answered by the new home", not_joined,
                     timeout=LEASE_MS / 1000 + 15)
        for x, nick, aff in ((a, "alice", "owner"), (b, "bob", "member")):
            # The plugin's join stanza (its join_muc_wait keeps the state of the first join);
            # what came before the move is put aside. Bob's node may not have noticed the
            # death yet: his join goes to the dead node, and comes back to the new home.
            x.inbox.items.clear()
            muc[x].make_join_stanza(r, nick).send()
            self_pres = await x.inbox.wait(
                lambda e, nick=nick: local(e) == "presence" and e.get("from") == f"{r}/{nick}"
                and e.find(f".//{{{NS_MUC_USER}}}status[@code='110']") is not None, 10,
                f"{nick}'s self-presence after the move")
            item = self_pres.find(f".//{{{NS_MUC_USER}}}item")
            assert item.get("affiliation") == aff, "affiliations read from the store"
        info = await b.plugin["xep_0030"].get_info(jid=r, timeout=10)
        assert "muc_persistent" in info["disco_info"]["features"]
        await _until("alice sees bob again", lambda: _sees(muc[a], r, 2))
        a.send_message(mto=r, mbody="after the move", mtype="groupchat")
        await b.inbox.wait(lambda e: e.findtext(BODY) == "after the move", 10,
                           "a message after the move")
    finally:
        for x in (a, b, c):
            await x.close()
        await probe.close()


async def test_occupants_of_a_dead_node_leave_the_room_with_333(cluster):
    """Bob's node (3) is killed while he sits in a room of node 1: he leaves the room once
    his node is taken for dead — the others see his unavailable presence with 333
    (XEP-0045 §17.1.2, as for an occupant whose presence bounced) — rather than staying a
    ghost until a message to him bounces."""
    from test_muc import create, join, login as muc_login, room
    n1, _, n3 = cluster.nodes
    a = await muc_login(n1, "alice", "one")
    b = await muc_login(n3, "bob", "three")
    try:
        r = room(n1, "ghosts")
        await create(a, r, "alice")
        await join(b, r, "bob")
        await _until("alice sees bob", lambda: _sees(a.plugin["xep_0045"], r, 2))
        a.inbox.items.clear()
        n3.kill()  # SIGKILL
        await a.inbox.wait(
            lambda e: local(e) == "presence" and e.get("from") == f"{r}/bob"
            and e.get("type") == "unavailable"
            and e.find(f".//{{{NS_MUC_USER}}}status[@code='333']") is not None,
            LEASE_MS / 1000 + 5, "bob leaving with 333 within the lease")
    finally:
        await a.close()
        await b.close()


NS_MUC_USER = "http://jabber.org/protocol/muc#user"


def item_of_affiliation(pres) -> str:
    return pres["muc"]["affiliation"]


async def _sees(muc, r: str, n: int) -> bool:
    await asyncio.sleep(0.1)
    return len(muc.get_roster(r)) >= n


def test_a_cluster_on_sqlite_is_refused(tmp_path):
    cfg = tmp_path / "rookery.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "data"}"\n[cluster]\nnats_url = "nats://127.0.0.1:9"\n')
    from conftest import ROOKERY_BIN
    r = subprocess.run([ROOKERY_BIN, "serve", "--config", str(cfg)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode != 0
    assert "[cluster] needs PostgreSQL" in r.stderr + r.stdout


async def _archived_bodies(p: Peer) -> list[str]:
    """The bodies in `p`'s account archive (XEP-0313), oldest first."""
    qid = p.c.next_id("mam")
    r = await p.iq("set", f"<query xmlns='urn:xmpp:mam:2' queryid='{qid}'/>")
    assert r.get("type") == "result", ET.tostring(r)
    return [e.findtext(f".//{BODY}") for e in p.take(
        lambda e: local(e) == "message" and e.find(".//{urn:xmpp:mam:2}result") is not None)]


async def test_archive_preferences_set_through_one_node_apply_on_another(cluster):
    """XEP-0313 §5: alice (node 1) asks that nothing be archived; bob's messages to her are
    routed (and would be archived) by bob's node 2, which had read her preferences before:
    it must follow the change."""
    n1, n2, _ = cluster.nodes
    a = await peer(n1, "alice", "desk", roster=False)
    b = await peer(n2, "bob", "phone", roster=False, presence=False)
    await meet(b, a)
    b.message("alice@localhost", "kept")
    await wait_for(a, is_msg("kept"), what="the first message")
    r = await a.iq("set", "<prefs xmlns='urn:xmpp:mam:2' default='never'/>")
    assert r.get("type") == "result", ET.tostring(r)
    await asyncio.sleep(0.5)  # the note crosses the bus (no reply tells the test)
    b.message("alice@localhost", "not kept")
    await wait_for(a, is_msg("not kept"), what="the second message")
    await asyncio.sleep(1.5)  # longer than node 2's archive batches
    bodies = await _archived_bodies(a)
    assert "kept" in bodies and "not kept" not in bodies, bodies
    await a.close()
    await b.close()


@pytest.fixture
def websub_cluster(server_factory, tmp_path):
    from test_websub import WEBHOOKS
    yield from _start(server_factory, tmp_path, lambda i: {"webhooks": WEBHOOKS})


async def test_webhooks_are_delivered_once_in_order_by_one_node(websub_cluster, receiver):
    """The nodes share one WebSub outbox: one of them (the oldest) delivers, so a callback
    gets every item once, in publication order — subscribed through node 3, published
    through node 2."""
    from test_websub import publish, publisher, subscribe
    _, n2, n3 = websub_cluster.nodes
    c = await publisher(n2, "feed")
    # A slow receiver: deliveries stay queued past the other nodes' outbox ticks.
    receiver.delay = 0.3
    try:
        await subscribe(n3, receiver, "hook", "feed")
        ids = [f"i{n}" for n in range(10)]
        for i in ids:
            await publish(c, n2, "feed", i)
        await _until("ten deliveries", lambda: _at_least(receiver, "hook", 10))
        await asyncio.sleep(1.5)  # a second node's worker would have posted by now
        assert receiver.ids("hook") == ids
    finally:
        await c.close()


async def _at_least(receiver, name: str, n: int) -> bool:
    return len(receiver.ids(name)) >= n


async def test_an_operator_kick_through_one_node_ends_a_session_on_another(cluster):
    """`rookery ctl kick` on node 1 for alice, bound on node 2: node 2 ends her stream with
    the operator's reason; node 1 does not take her for gone while she is still connected
    elsewhere (bob's message to her goes to her live session, not offline storage)."""
    n1, n2, _ = cluster.nodes
    a = await peer(n2, "alice", "desk", roster=False)
    a2 = await peer(n2, "alice", "phone", roster=False)
    b = await peer(n1, "bob", "home", roster=False, presence=False)
    await meet(b, a)
    await meet(b, a2)
    r = n1.ctl("kick", "alice@localhost/desk", "--reason", "maintenance")
    assert r.returncode == 0, r.stderr
    cond, _ = await a.c.wait_closed(15)
    assert cond == "policy-violation"
    # Her other session is still hers, and node 1 still routes to it.
    b.message("alice@localhost/phone", "still here?")
    await wait_for(a2, is_msg("still here?"), what="a message to the session left")
    await a2.close()
    await b.close()


NS_CARBONS = "urn:xmpp:carbons:2"


def carbon(direction: str, body: str):
    def pred(e):
        return (local(e) == "message"
                and e.find(f"{{{NS_CARBONS}}}{direction}") is not None
                and e.find(f".//{BODY}") is not None
                and e.find(f".//{BODY}").text == body)
    return pred


async def test_carbons_reach_resources_on_other_nodes(cluster):
    """XEP-0280: alice's desktop on node 1 and phone on node 2 both enabled carbons. bob on
    node 3 writes to the desktop: the phone gets the received copy (decided on node 3,
    which routes the message); the desktop answers: the phone gets the sent copy (decided
    on node 1)."""
    n1, n2, n3 = cluster.nodes
    desk = await peer(n1, "alice", "desk", roster=False)
    phone = await peer(n2, "alice", "phone", roster=False)
    b = await peer(n3, "bob", "home", roster=False)
    for p in (desk, phone):
        r = await p.iq("set", f"<enable xmlns='{NS_CARBONS}'/>")
        assert r.get("type") == "result"
    await meet(b, desk)
    await meet(b, phone)
    await meet(desk, phone)
    await asyncio.sleep(0.3)  # the carbons flags cross the bus (no reply tells the test)
    b.message("alice@localhost/desk", "to the desk")
    await wait_for(desk, is_msg("to the desk"), what="bob's message")
    await wait_for(phone, carbon("received", "to the desk"), what="the received carbon")
    desk.message("bob@localhost/home", "from the desk")
    await wait_for(b, is_msg("from the desk"), what="alice's answer")
    await wait_for(phone, carbon("sent", "from the desk"), what="the sent carbon")
    for p in (desk, phone, b):
        await p.close()


@pytest.fixture
def limited_cluster(server_factory, tmp_path):
    """Three nodes with two auth failures a minute per address, and open registration of
    one account an hour per address."""
    yield from _start(server_factory, tmp_path, lambda i: {
        "c2s": {"auth_failures_per_ip_per_minute": 2,
                "auth_failures_per_account_per_minute": 100},
        "registration": {"enabled": True, "min_interval_secs": 3600}})


async def test_auth_failure_and_registration_limits_hold_for_the_whole_cluster(limited_cluster):
    """The per-address limits are the cluster's, not each node's: a node tells the others of
    each failure it counted and each address that registered (module notes), so guesses or
    registrations spread over the nodes get no more than through one."""
    from test_login import sasl_failure
    from test_register import pre_auth, reg_set
    n1, n2, n3 = limited_cluster.nodes
    # An account registered through node 1 from 127.0.0.3: the address's one for the hour.
    c = await pre_auth(n1, "127.0.0.3")
    assert (await c.iq("set", None, reg_set("first", "password1"))).get("type") == "result"
    c.abort()
    # One wrong password through node 1, one through node 2: the address's two a minute.
    for node in (n1, n2):
        assert await sasl_failure(node, "127.0.0.2", "wrong", "SCRAM-SHA-1") == "not-authorized"

    async def refused_on_node_3() -> bool:
        c = n3.client(local_addr="127.0.0.2")
        await c.negotiate_tls()
        try:
            await c.authenticate("alice", "alicepass", "SCRAM-SHA-1")
            return False  # not heard yet: the right password still works
        except SaslFailure as e:
            assert e.condition == "temporary-auth-failure"
            return True
        finally:
            c.abort()

    # Node 3 counted none itself, and refuses that address even the right password ...
    await _until("node 3 refusing the address after failures on nodes 1 and 2",
                 refused_on_node_3)
    c = await n3.login("alice", "from another address")
    await c.close()
    # ... and, having heard node 1's failure, it heard node 1's registration before it (one
    # node's notes arrive in order): a second account from 127.0.0.3 is refused there.
    c = await pre_auth(n3, "127.0.0.3")
    r = await c.iq("set", None, reg_set("second", "password2"))
    c.abort()
    assert stanza_error(r) == "resource-constraint"
