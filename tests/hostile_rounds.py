"""Hostile rounds (issue 19 part 2), shared by tests/test_memory.py and
conformance/bench/hostile-memory.py: resources that stop reading while large stanzas are sent
to them, until the server cuts them off. Every stanza carries a tag, so what each round sent
can be accounted for: read by a stuck resource before it was cut off, bounced to the sender,
or kept in offline storage (RFC 6121 §8.5.3.2.1: a message for a resource that is gone is
handled as if sent to the bare JID) — never silently dropped."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from xmpp_raw import NS_CLIENT, Closed, StreamError, local

MIB = 1024 * 1024
BODY = f"{{{NS_CLIENT}}}body"


def rss(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of `pid`, in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def tag_of(el) -> str | None:
    """The tag a hostile round put in front of a message's body."""
    body = el.findtext(BODY) if local(el) == "message" else None
    return body.split(" ", 1)[0] if body else None


async def drain_until_closed(client, read: set, mine: set) -> str | None:
    """Reads until the server ends the stream, or until every tag of `mine` was read (a
    queue that held everything), keeping the tags of the messages read; the stream error's
    condition, if any."""
    try:
        while not mine <= read:
            tag = tag_of(await client.recv(timeout=30))
            if tag:
                read.add(tag)
    except StreamError as e:
        return e.condition
    except (Closed, asyncio.TimeoutError):
        return None
    return None


async def read_all(client, seen: list):
    """Reads and keeps whatever arrives (the sender gets bounces of what could not be
    stored; a sender that stops reading is a stuck client too)."""
    try:
        while True:
            seen.append(await client.recv(timeout=24 * 3600))
    except (StreamError, Closed):
        pass


async def synced(client, seen: list, tag: str):
    """Sends a ping and waits until its answer was read: everything sent before it was
    routed."""
    client.send(f"<iq type='get' id='{tag}'><ping xmlns='urn:xmpp:ping'/></iq>")
    await client.flush()
    for _ in range(1200):
        if any(el.get("id") == tag for el in seen):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no answer to {tag}")


@dataclass
class Round:
    """What one round sent and where it went (tags), and RSS while the queues were full."""
    sent: set = field(default_factory=set)
    read: set = field(default_factory=set)
    bounced: set = field(default_factory=set)
    stored: set = field(default_factory=set)
    conditions: list = field(default_factory=list)
    rss_full: dict = field(default_factory=dict)

    def lost(self) -> set:
        return self.sent - self.read - self.bounced - self.stored


async def hostile_round(srv, sender, seen: list, name: str, *, resources: int, stanzas: int,
                        size: int, user: str = "bob") -> Round:
    """`resources` resources of `user` log in without presence (so they are not available
    and nothing else is routed to them), shrink their receive buffers and stop reading;
    `sender` (whose elements `read_all` keeps in `seen`) sends each of them `stanzas` messages
    of `size` bytes. Once all was routed they read again until the server ends their streams
    (or until they have read everything, when their queues held it all) and are closed;
    then `user` logs in once more to collect what went to offline storage."""
    r = Round()
    stuck = []
    for i in range(resources):
        c = srv.client(rcvbuf=4096)
        await c.login(user, srv.users[user], f"{name}-{i}")
        c.pause_reading()
        stuck.append(c)
    filler = "x" * size
    for n in range(stanzas):
        for i in range(resources):
            tag = f"{name}/{i}/{n}"
            r.sent.add(tag)
            sender.message(srv.jid(user, f"{name}-{i}"), f"{tag} {filler}")
        await sender.flush()
    await synced(sender, seen, f"{name}-sync")
    r.rss_full = rss(srv.pid)
    for c in stuck:
        c.writer.transport.resume_reading()
    r.conditions = await asyncio.gather(*(
        drain_until_closed(c, r.read, {t for t in r.sent if t.split("/")[1] == str(i)})
        for i, c in enumerate(stuck)))
    for c in stuck:
        c.abort()
    # Bounces of what was still queued come when the sessions end, offline messages after
    # initial presence: wait until every tag is accounted for (a lost one shows as a quiet
    # minute).
    again = await srv.login(user, f"{name}-again")
    await again.presence()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while loop.time() < deadline:
        r.bounced = {t for el in seen if el.get("type") == "error" and (t := tag_of(el))}
        r.bounced &= r.sent
        if not r.lost():
            break
        try:
            if tag := tag_of(await again.recv(timeout=0.5)):
                r.stored.add(tag)
        except asyncio.TimeoutError:
            pass
    again.abort()
    return r
