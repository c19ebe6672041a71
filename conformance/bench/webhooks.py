"""WebSub webhook benchmark (bounded): one node, N callbacks on a local receiver, K items.

    ROOKERY_BIN=target/release/rookery ~/.cache/rookery-test-venv/bin/python \
        conformance/bench/webhooks.py --callbacks 1000 --items 20 [--hang]

Starts its own server (tests/conftest.py's `Server`, SQLite in a temp dir, ephemeral ports),
subscribes N callbacks (`/cb/<i>` on one asyncio receiver in a child process, which checks
every `X-Hub-Signature`), publishes K items with slixmpp as fast as they are acknowledged,
and reports signed POSTs/s from the first publish until every callback has every item.
`--hang` adds one callback on a second receiver that verifies but never answers a POST: the
others must not slow down (it holds its own host's slots until the request timeout).
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import multiprocessing as mp
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "tests"))

from conftest import Server, _add_users, free_port  # noqa: E402
from test_pubsub import login, payload  # noqa: E402

SECRET = b"bench-secret"


async def _serve(port: int, counter, bad, hang: bool):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if method == "GET":
                    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(target).query))
                    out = q.get("hub.challenge", "").encode()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                                 % (len(out), out))
                    await writer.drain()
                    continue
                if hang:
                    await asyncio.sleep(3600)
                want = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
                if hmac.compare_digest(headers.get("x-hub-signature", ""), want):
                    with counter.get_lock():
                        counter.value += 1
                else:
                    with bad.get_lock():
                        bad.value += 1
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def receiver(port: int, counter, bad, hang: bool):
    asyncio.run(_serve(port, counter, bad, hang))


def hub_post(srv: Server, fields: dict) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{srv.http_port}/websub",
                                 data=urllib.parse.urlencode(fields).encode(),
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status


def stored(srv: Server, topic: str, callback: str) -> bool:
    q = urllib.parse.urlencode({"hub.topic": topic, "hub.callback": callback})
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.http_port}/websub?{q}", timeout=10):
            return True
    except urllib.error.HTTPError:
        return False


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--callbacks", type=int, default=1000)
    ap.add_argument("--items", type=int, default=20)
    ap.add_argument("--per-host", type=int, default=64)
    ap.add_argument("--hang", action="store_true")
    ap.add_argument("--max-time", type=float, default=120.0)
    a = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rookery-webhooks-"))
    config = {
        "domain": "localhost", "data_dir": str(work / "data"),
        "listen": {"c2s": f"127.0.0.1:{free_port()}", "c2s_direct_tls": "", "admin": "",
                   "http": f"127.0.0.1:{free_port()}", "https": ""},
        "log": {"level": "warn"},
        # Every callback is on one loopback host, past the default caps (100 per host).
        "webhooks": {"allow_private": True, "per_host_concurrency": a.per_host,
                     "request_timeout_secs": 5,
                     "max_subscriptions_per_callback_host": a.callbacks + 1,
                     "max_subscriptions_per_topic": a.callbacks + 1},
    }
    users = {"alice": "alicepass"}
    srv = Server(work, config, users, "sqlite", None)
    _add_users(srv.config_path, users, work)
    srv.start()

    counter, bad = mp.Value("q", 0), mp.Value("q", 0)
    port, hang_port = free_port(), free_port()
    procs = [mp.Process(target=receiver, args=(port, counter, bad, False), daemon=True)]
    if a.hang:
        procs.append(mp.Process(target=receiver, args=(hang_port, counter, bad, True),
                                daemon=True))
    for p in procs:
        p.start()
    time.sleep(0.5)
    c = await login(srv, "alice")
    try:
        svc = "pubsub.localhost"
        await c.plugin["xep_0060"].create_node(svc, "bench", timeout=10)
        topic = f"http://127.0.0.1:{srv.http_port}/pubsub/{svc}/bench"
        callbacks = [f"http://127.0.0.1:{port}/cb/{i}" for i in range(a.callbacks)]
        if a.hang:
            callbacks.append(f"http://127.0.0.1:{hang_port}/cb/hang")
        for cb in callbacks:
            await asyncio.to_thread(hub_post, srv, {
                "hub.mode": "subscribe", "hub.topic": topic, "hub.callback": cb,
                "hub.secret": SECRET.decode()})
        for cb in callbacks:
            while not await asyncio.to_thread(stored, srv, topic, cb):
                await asyncio.sleep(0.05)
        want = a.callbacks * a.items
        t0 = time.monotonic()
        for i in range(a.items):
            await c.plugin["xep_0060"].publish(svc, "bench", id=f"i{i}",
                                               payload=payload(f"item {i} " + "x" * 200),
                                               timeout=10)
        t_pub = time.monotonic() - t0
        while counter.value < want and time.monotonic() - t0 < a.max_time:
            await asyncio.sleep(0.02)
        dt = time.monotonic() - t0
        cpu = srv.proc.pid
        stat = Path(f"/proc/{cpu}/stat").read_text().split()
        ticks = int(stat[13]) + int(stat[14])
        print(f"callbacks={a.callbacks} items={a.items} hang={a.hang} per_host={a.per_host}")
        print(f"delivered={counter.value}/{want} bad_signatures={bad.value} "
              f"publish_time={t_pub:.2f}s total={dt:.2f}s rate={counter.value / dt:.0f} POST/s "
              f"server_cpu={ticks / 100:.1f}s rss={srv.rss_kib()} KiB")
    finally:
        await c.close()
        srv.stop()
        for p in procs:
            p.kill()


if __name__ == "__main__":
    asyncio.run(main())
