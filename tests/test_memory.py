"""Memory bounded in bytes (issue 19 part 2): clients that stop reading while large stanzas
are sent to them cost the server at most their queues' byte bound each, and the memory comes
back when they are gone. Counted from /proc (the kernel's peak and current RSS), not timed."""

import asyncio

from xmpp_raw import Closed, StreamError

MIB = 1024 * 1024


def rss(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of `pid`, in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


async def drain_until_closed(client) -> str | None:
    """Reads until the server ends the stream; the stream error's condition, if any."""
    try:
        while True:
            await client.recv(timeout=30)
    except StreamError as e:
        return e.condition
    except (Closed, asyncio.TimeoutError):
        return None


async def read_all(client, seen: list):
    """Reads and keeps whatever arrives (the sender gets bounces of what could not be
    stored; a sender that stops reading is a stuck client too)."""
    try:
        while True:
            seen.append(await client.recv(timeout=None))
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


async def test_large_stanzas_to_clients_that_do_not_read_stay_within_the_byte_bound(server_factory):
    """Four resources stop reading; 40 stanzas of 200 KiB are sent to each (32 MiB in all).
    With a queue bounded only in stanzas (1,024 here) the server held all of it; bounded in
    bytes (`session_queue_bytes`, 1 MiB by default) each resource is cut off after about
    1 MiB, so the server's peak RSS grows by far less than what was sent, round after round,
    and its RSS is back near where it started once those sessions are gone."""
    srv = server_factory(session_queue=1024, im={"offline": {"max_per_user": 10}})
    alice = await srv.login("alice", "a")
    seen: list = []
    reader = asyncio.create_task(read_all(alice, seen))
    body = "x" * (200 * 1024)
    start = rss(srv.proc.pid)
    for _round in range(3):
        stuck = []
        for i in range(4):
            c = srv.client(rcvbuf=4096)
            await c.login("bob", "bobpass", f"stuck{i}")
            c.pause_reading()
            stuck.append(c)
        for n in range(40):
            for i in range(4):
                alice.message(f"bob@localhost/stuck{i}", f"{n} {body}")
            await alice.flush()
        await synced(alice, seen, f"round{_round}")
        for c in stuck:
            c.writer.transport.resume_reading()
        conditions = await asyncio.gather(*(drain_until_closed(c) for c in stuck))
        assert all(c in ("policy-violation", "connection-timeout") for c in conditions), conditions
        for c in stuck:
            c.abort()
    peak = rss(srv.proc.pid)["VmHWM"] - start["VmHWM"]
    # 32 MiB were sent per round; four queues of 1 MiB (+ one stanza each, + socket and TLS
    # buffers) is what may be held at once.
    assert peak < 24 * MIB, f"peak RSS grew by {peak / MIB:.1f} MiB"
    # Sessions gone, offline storage capped: the memory is given back (issue 19: +50 MiB).
    await synced(alice, seen, "end")
    now = rss(srv.proc.pid)["VmRSS"] - start["VmRSS"]
    print(f"peak RSS +{peak / MIB:.1f} MiB, after +{now / MIB:.1f} MiB (96 MiB sent)")
    assert now < 50 * MIB, f"RSS stayed {now / MIB:.1f} MiB above the start"
    reader.cancel()
    alice.abort()
