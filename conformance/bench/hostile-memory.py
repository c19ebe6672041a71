"""Hostile rounds against a fresh server, RSS sampled per round (issue 19 part 2; bounded).

    ROOKERY_BIN=target/release/rookery ~/.cache/rookery-test-venv/bin/python \\
        conformance/bench/hostile-memory.py [--rounds 5] [--resources 4] [--stanzas 40] \\
        [--size-kib 200] [--queue-bytes N] [--env MALLOC_ARENA_MAX=2]

Starts its own server (tests/conftest.py's `Server`, SQLite in a temp dir, ephemeral ports,
`session_queue = 1024`, 10 offline messages per user). Each round (tests/hostile_rounds.py): R
resources log in and stop reading, S messages of K KiB are sent to each from another client,
then they read again until the server cuts them off, and what went to offline storage is
collected; every tag is accounted for (read, bounced or stored). RSS is sampled before the
round, with the queues full (everything routed), and after the sessions ended and a pause of
`--settle` seconds. `--queue-bytes` sets `session_queue_bytes` (a large value gives the
unbounded-in-bytes server of before issue 19: then the queues hold everything sent). `--env`
sets variables for the server process (allocator tunables, LD_PRELOAD of another malloc):
the same build, the same rounds with another allocator tell a leak (kept with any allocator)
from freed memory that glibc's malloc keeps.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "tests"))

from conftest import Server, _add_users, free_port  # noqa: E402
from hostile_rounds import MIB, hostile_round, read_all, rss  # noqa: E402


def mib(n: int) -> str:
    return f"{n / MIB:.1f}"


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--resources", type=int, default=4)
    ap.add_argument("--stanzas", type=int, default=40, help="messages per resource and round")
    ap.add_argument("--size-kib", type=int, default=200)
    ap.add_argument("--queue-bytes", type=int, help="session_queue_bytes (default: the server's)")
    ap.add_argument("--settle", type=float, default=2.0)
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()

    for kv in a.env:
        name, _, value = kv.partition("=")
        os.environ[name] = value   # the server inherits them (Server.start)
    work = Path(tempfile.mkdtemp(prefix="rookery-hostile-"))
    config = {
        "domain": "localhost", "data_dir": str(work / "data"), "session_queue": 1024,
        "listen": {"c2s": f"127.0.0.1:{free_port()}", "c2s_direct_tls": "", "admin": "",
                   "http": "", "https": ""},
        "log": {"level": "warn"},
        "im": {"offline": {"max_per_user": 10}},
    }
    if a.queue_bytes is not None:
        config["session_queue_bytes"] = a.queue_bytes
    users = {"alice": "alicepass", "bob": "bobpass"}
    srv = Server(work, config, users, "sqlite", None)
    _add_users(srv.config_path, users, work)
    srv.start()
    rows = []
    try:
        alice = await srv.login("alice", "a")
        seen: list = []
        reader = asyncio.create_task(read_all(alice, seen))
        await asyncio.sleep(a.settle)
        start = rss(srv.pid)["VmRSS"]
        sent_mib = a.resources * a.stanzas * a.size_kib / 1024
        print(f"start RSS {mib(start)} MiB; per round {a.resources} resources x {a.stanzas} x "
              f"{a.size_kib} KiB = {sent_mib:.0f} MiB sent; env {a.env or 'none'}")
        print("round  before  full  after  peak (MiB)  read/bounced/stored/lost")
        for n in range(a.rounds):
            before = rss(srv.pid)["VmRSS"]
            r = await hostile_round(srv, alice, seen, f"round{n}", resources=a.resources,
                                    stanzas=a.stanzas, size=a.size_kib * 1024)
            await asyncio.sleep(a.settle)
            after = rss(srv.pid)
            row = {"round": n + 1, "before": before, "full": r.rss_full["VmRSS"],
                   "after": after["VmRSS"], "peak": after["VmHWM"], "sent": len(r.sent),
                   "read": len(r.read), "bounced": len(r.bounced), "stored": len(r.stored),
                   "lost": len(r.lost())}
            rows.append(row)
            print(f"{n + 1:5}  {mib(before):>6}  {mib(row['full']):>4}  {mib(row['after']):>5}"
                  f"  {mib(row['peak']):>4}        {row['read']}/{row['bounced']}/"
                  f"{row['stored']}/{row['lost']}")
        end = rss(srv.pid)["VmRSS"]
        summary = {"start": start, "end": end, "rounds": rows, "env": a.env,
                   "queue_bytes": a.queue_bytes}
        print(f"after {a.rounds} rounds: RSS {mib(end)} MiB, {(end - start) / MIB:+.1f} MiB from "
              f"the start (issue 19: at most +50)")
        if a.json:
            a.json.write_text(json.dumps(summary, indent=1))
        reader.cancel()
        alice.abort()
    finally:
        srv.kill()


if __name__ == "__main__":
    asyncio.run(main())
