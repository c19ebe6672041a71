"""Presence for machines (docs/iot.md): one account for a fleet of meters, one resource per
meter, and a watcher subscribed to the account who sees every meter come and go — by a clean
close, and by a dead socket the server's pings detect."""
import asyncio

from xmpp_raw import local

FLEET = {"meters": "meterspass", "ops": "opspass"}


class Live:
    """A live client: a background reader answers the server's pings and keeps everything
    else for `wait`."""

    def __init__(self, c):
        self.c = c
        self.items = []
        self.error = None
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self):
        try:
            while True:
                el = await self.c.recv(3600)
                if (local(el) == "iq" and el.get("type") == "get"
                        and el.find("{urn:xmpp:ping}ping") is not None):
                    self.c.send(f"<iq type='result' id='{el.get('id')}' to='{el.get('from')}'/>")
                    continue
                self.items.append(el)
                self.changed.set()
        except Exception as e:  # closed, stream error, cancelled
            self.error = e
            self.changed.set()

    async def wait(self, pred, timeout=10.0, what="element"):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for i, el in enumerate(self.items):
                if pred(el):
                    del self.items[:i + 1]
                    return el
            if self.error is not None:
                raise AssertionError(f"{what}: connection ended ({self.error!r})")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise asyncio.TimeoutError(f"timeout waiting for {what}")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def close(self):
        # The reader task must have ended before close() reads the server's answer: a
        # cancelled task still waits in read() until the loop runs it once more, and
        # asyncio.wait_for may swallow a cancellation that races with arriving data, so
        # cancel until it is done.
        while not self.task.done():
            self.task.cancel()
            await asyncio.wait({self.task}, timeout=0.5)
        await self.c.close()


def presence_of(jid, type_=None):
    return lambda e: (local(e) == "presence" and e.get("from") == jid
                      and e.get("type") == type_)


async def test_watcher_sees_each_meter_come_and_go(server_factory):
    srv = server_factory(users=FLEET, c2s={"ping_interval_secs": 1, "ping_timeout_secs": 1})
    ops_c = await srv.login("ops", "console")
    roster = await ops_c.iq("get", None, "<query xmlns='jabber:iq:roster'/>")
    assert roster.get("type") == "result"
    ops_c.send("<presence/>")
    ops = Live(ops_c)
    # Provisioning: the watcher subscribes to the fleet account once; a meter approves.
    first_c = await srv.login("meters", "meter-0")
    await first_c.iq("get", None, "<query xmlns='jabber:iq:roster'/>")
    first_c.send("<presence><priority>-1</priority></presence>")
    first = Live(first_c)
    ops_c.send(f"<presence to='{srv.jid('meters')}' type='subscribe'/>")
    await first.wait(lambda e: local(e) == "presence" and e.get("type") == "subscribe",
                     what="the subscription request")
    first_c.send(f"<presence to='{srv.jid('ops')}' type='subscribed'/>")
    await ops.wait(presence_of(srv.jid("meters", "meter-0")), what="meter-0 online")

    # More meters come online: each is seen, by its resource.
    meters = {}
    for i in range(1, 4):
        m = await srv.login("meters", f"meter-{i}")
        m.send("<presence><priority>-1</priority><status>fw 1.2</status></presence>")
        await m.flush()
        meters[i] = m if i == 2 else Live(m)  # meter-2 will never read again
        p = await ops.wait(presence_of(srv.jid("meters", f"meter-{i}")),
                           what=f"meter-{i} online")
        assert p.findtext("{jabber:client}status") == "fw 1.2"

    # meter-1 signs off cleanly; meter-2's socket goes dead (no reads, no answers).
    await meters[1].close()
    await ops.wait(presence_of(srv.jid("meters", "meter-1"), "unavailable"), what="meter-1 gone")
    await ops.wait(presence_of(srv.jid("meters", "meter-2"), "unavailable"), timeout=15,
                   what="meter-2 detected dead")

    # A watcher logging in later learns who is online from its presence probe.
    ops2_c = await srv.login("ops", "laptop")
    ops2_c.send("<presence/>")
    ops2 = Live(ops2_c)
    online = set()
    try:
        while True:
            p = await ops2.wait(lambda e: local(e) == "presence" and e.get("type") is None
                                and (e.get("from") or "").startswith(srv.jid("meters") + "/"),
                                timeout=3, what="probe answers")
            online.add(p.get("from"))
    except asyncio.TimeoutError:
        pass
    assert online == {srv.jid("meters", "meter-0"), srv.jid("meters", "meter-3")}
    for c in (ops, ops2, first, meters[3]):
        await c.close()
