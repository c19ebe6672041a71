"""Concurrent writes through the real server, on every store backend: many clients writing at
the same time (offline messages, roster sets, pubsub publications) get no error, and every
write they were told succeeded is there afterwards. Counted, not timed.

Before the SQLite store had one writer with group commit, two clients sending 800 messages
each to two offline users had about 40 % refused with `internal-server-error` ("database is
locked"); see crates/store/src/writer.rs.
"""
from __future__ import annotations

import asyncio

from xmpp_raw import local, stanza_error

SENDERS = 10
RECIPIENTS = 10
MESSAGES = 1000     # per sender, spread over every recipient
PASSWORD = "concurrent-pass"

NS_ROSTER = "jabber:iq:roster"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


def users() -> dict:
    names = [f"s{i}" for i in range(SENDERS)] + [f"r{i}" for i in range(RECIPIENTS)]
    return {n: PASSWORD for n in names}


async def login(srv, user: str, resource: str = "r"):
    c = srv.client(timeout=60)
    await c.login(user, PASSWORD, resource)
    return c


async def sync(c, timeout: float = 120) -> list:
    """Ping round trip; returns what arrived before the answer."""
    rid = c.next_id("sync")
    c.send(f"<iq type='get' id='{rid}'><ping xmlns='urn:xmpp:ping'/></iq>")
    got = []
    while True:
        el = await c.recv(timeout)
        if local(el) == "iq" and el.get("id") == rid:
            return got
        got.append(el)


async def pipelined_iqs(c, payloads: list[str], type_: str = "set", to: str | None = None) -> list[str]:
    """Sends every IQ at once and waits for each answer; returns the errors (condition per
    failed IQ)."""
    to_attr = f" to='{to}'" if to else ""
    ids = []
    for p in payloads:
        rid = c.next_id("w")
        ids.append(rid)
        c.send(f"<iq type='{type_}' id='{rid}'{to_attr}>{p}</iq>")
    await c.flush()
    waiting, errors = set(ids), []
    while waiting:
        el = await c.recv(120)
        if local(el) == "iq" and el.get("id") in waiting:
            waiting.discard(el.get("id"))
            if el.get("type") == "error":
                errors.append(stanza_error(el) or "?")
    return errors


async def test_offline_messages_from_many_senders_at_once(server_factory, backend):
    """10 senders × 1,000 messages to 10 offline users at once: 10,000 stored, 0 errors."""
    srv = server_factory(backend=backend, users=users(),
                         im={"offline": {"max_per_user": MESSAGES * SENDERS // RECIPIENTS}})
    senders = [await login(srv, f"s{i}") for i in range(SENDERS)]

    async def send_all(i: int, c) -> list:
        for n in range(MESSAGES):
            to = f"r{n % RECIPIENTS}@{srv.domain}"
            c.send(f"<message to='{to}' type='chat' id='m{n}'><body>s{i} {n}</body></message>")
            if n % 100 == 99:
                await c.flush()
        await c.flush()
        return [e for e in await sync(c) if local(e) == "message" and e.get("type") == "error"]

    bounced = await asyncio.gather(*(send_all(i, c) for i, c in enumerate(senders)))
    errors = [stanza_error(e) for b in bounced for e in b]
    assert errors == [], f"{len(errors)} messages refused: {sorted(set(errors))}"
    for c in senders:
        await c.close()

    per_recipient = MESSAGES * SENDERS // RECIPIENTS
    total = 0
    for r in range(RECIPIENTS):
        c = await login(srv, f"r{r}")
        c.send("<presence/>")
        bodies = set()
        while len(bodies) < per_recipient:
            el = await c.recv(60)
            if local(el) == "message":
                bodies.add(el.findtext("{jabber:client}body"))
        assert len(bodies) == per_recipient
        total += len(bodies)
        await c.close()
    assert total == SENDERS * MESSAGES


async def test_roster_sets_from_many_clients_at_once(server_factory, backend):
    """10 clients × 100 roster sets each, all at once: every set answered `result`, every
    item in the roster afterwards, and still there after `kill -9` and a restart (each set is
    one store round trip now: the acknowledgement must still mean committed)."""
    per_client = 100
    srv = server_factory(backend=backend, users=users())
    clients = [await login(srv, f"s{i}") for i in range(SENDERS)]

    def item(n: int) -> str:
        return (f"<query xmlns='{NS_ROSTER}'><item jid='contact{n}@example.net' name='C {n}'>"
                f"<group>Friends</group></item></query>")

    errors = await asyncio.gather(*(pipelined_iqs(c, [item(n) for n in range(per_client)])
                                    for c in clients))
    assert [e for errs in errors for e in errs] == []
    for c in clients:
        roster = await c.iq("get", None, f"<query xmlns='{NS_ROSTER}'/>", timeout=60)
        items = roster.findall(f".//{{{NS_ROSTER}}}item")
        assert len(items) == per_client
        await c.close()
    srv.crash_restart()
    for i in range(SENDERS):
        c = await login(srv, f"s{i}")
        roster = await c.iq("get", None, f"<query xmlns='{NS_ROSTER}'/>", timeout=60)
        names = sorted(it.get("name") for it in roster.findall(f".//{{{NS_ROSTER}}}item"))
        assert names == sorted(f"C {n}" for n in range(per_client))
        await c.close()


async def test_pubsub_publishes_from_many_clients_at_once(server_factory, backend):
    """10 clients × 100 publications each to a node of their own, all at once: every
    publication answered `result`, every item retrievable afterwards."""
    per_client = 100
    srv = server_factory(backend=backend, users=users())
    service = f"pubsub.{srv.domain}"
    clients = [await login(srv, f"s{i}") for i in range(SENDERS)]
    config = (f"<configure><x xmlns='jabber:x:data' type='submit'>"
              f"<field var='FORM_TYPE' type='hidden'><value>{NS_PUBSUB}#node_config</value></field>"
              f"<field var='pubsub#max_items'><value>{per_client}</value></field></x></configure>")
    for i, c in enumerate(clients):
        created = await c.iq("set", service,
                             f"<pubsub xmlns='{NS_PUBSUB}'><create node='n{i}'/>{config}</pubsub>",
                             timeout=60)
        assert created.get("type") == "result", stanza_error(created)

    def publish(i: int, n: int) -> str:
        return (f"<pubsub xmlns='{NS_PUBSUB}'><publish node='n{i}'><item id='i{n}'>"
                f"<entry xmlns='urn:example:concurrent'>{n}</entry></item></publish></pubsub>")

    errors = await asyncio.gather(*(
        pipelined_iqs(c, [publish(i, n) for n in range(per_client)], to=service)
        for i, c in enumerate(clients)))
    assert [e for errs in errors for e in errs] == []
    for i, c in enumerate(clients):
        items = await c.iq("get", service,
                           f"<pubsub xmlns='{NS_PUBSUB}'><items node='n{i}'/></pubsub>",
                           timeout=60)
        ids = {it.get("id") for it in items.iter(f"{{{NS_PUBSUB}}}item")}
        assert ids == {f"i{n}" for n in range(per_client)}
        await c.close()
