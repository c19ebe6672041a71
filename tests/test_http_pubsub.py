"""Pubsub nodes on the web (issue 15, docs/http.md): Server-Sent Events, the HTTP items API
and bearer tokens, driven by Python ``httpx`` (streaming; an independent HTTP client) against
nodes that slixmpp creates and publishes to over XMPP.

- the SSE event format (item/retract/purge/delete, ``id:``, multi-line ``data:``, XEP-0335
  JSON containers as JSON), ``Last-Event-ID`` replay (header and query) and ``reset``;
- POST (XML and JSON, publish-options, ``201`` + ``Location``), GET ``items?max=N``, DELETE;
- tokens issued by the real ``rookery token`` CLI: scopes, expired, revoked, unknown;
- access exactly as over XMPP: open (anonymous), presence, whitelist, PEP;
- 400/401/403/404/413 and no panic;
- presence as a stream: ``/presence/{jid}`` for a holder with a presence subscription;
- a reader that never reads: the others still get everything, the server's RSS stays
  bounded, and when it finally reads its stream has been cut (it was dropped);
- a browser ``EventSource`` in Debian's headless Chromium (tests/web/sse.mjs) that receives
  items published by slixmpp, then resumes after a server restart from its Last-Event-ID:
  every item exactly once, in order;
- CORS with the listener's origin allowlist: preflights and headers over raw HTTP, and a page
  on another origin in Chromium (tests/web/sse_cors.mjs) streaming, POSTing and DELETEing.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from conftest import ROOKERY_BIN, free_port
from test_pubsub import (Clients, make_contacts, node_config, payload, svc,  # noqa: F401
                         clients)

T = 10


def token(server, *args: str) -> subprocess.CompletedProcess:
    """Runs ``rookery token ARGS`` against the server's store."""
    return subprocess.run([ROOKERY_BIN, "--config", str(server.config_path), "token", *args],
                          text=True, capture_output=True, timeout=60, cwd=server.workdir)


def issue(server, user: str, scopes: str = "read,publish", expires: str = "1d") -> str:
    r = token(server, "issue", user, "--scopes", scopes, "--expires", expires)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def bearer(tok: str) -> dict:
    return {"Authorization": f"Bearer {tok}"}


def base(server) -> str:
    return f"http://127.0.0.1:{server.http_port}"


def node_url(server, node: str, service: str | None = None) -> str:
    from urllib.parse import quote
    return f"{base(server)}/pubsub/{quote(service or svc(server), safe='')}/{quote(node, safe='')}"


class Sse:
    """An SSE reader: parses the stream into events (dicts with event, id, data) on a queue."""

    def __init__(self, client: httpx.AsyncClient, url: str, headers: dict | None = None):
        self.client, self.url, self.headers = client, url, headers or {}
        self.events: asyncio.Queue = asyncio.Queue()
        self.status: int | None = None
        self.retry: int | None = None
        self.ended = asyncio.Event()
        self.opened = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self):
        try:
            async with self.client.stream(
                    "GET", self.url, headers={"Accept": "text/event-stream", **self.headers},
                    timeout=httpx.Timeout(T, read=None)) as r:
                self.status = r.status_code
                self.opened.set()
                if r.status_code != 200:
                    return
                ev: dict = {}
                async for line in r.aiter_lines():
                    if line == "":
                        if ev:
                            ev.setdefault("event", "message")
                            ev["data"] = "\n".join(ev.get("data", []))
                            await self.events.put(ev)
                        ev = {}
                    elif line.startswith(":"):
                        await self.events.put({"event": "comment"})
                    else:
                        field, _, value = line.partition(":")
                        value = value[1:] if value.startswith(" ") else value
                        if field == "data":
                            ev.setdefault("data", []).append(value)
                        elif field == "retry":
                            self.retry = int(value)
                        else:
                            ev[field] = value
        except httpx.HTTPError:
            pass
        finally:
            self.opened.set()
            self.ended.set()

    async def next(self, timeout: float = T) -> dict:
        while True:
            ev = await asyncio.wait_for(self.events.get(), timeout)
            if ev["event"] != "comment":
                return ev

    async def take(self, n: int) -> list[dict]:
        return [await self.next() for _ in range(n)]

    async def close(self):
        self.task.cancel()
        try:
            await self.task
        except BaseException:
            pass


async def open_sse(client, url, headers=None) -> Sse:
    s = Sse(client, url, headers)
    await asyncio.wait_for(s.opened.wait(), T)
    return s


def ev(kind, id_=None, data=None):
    d = {"event": kind, "data": data}
    if id_ is not None:
        d["id"] = id_
    return d


def entry_xml(text: str) -> str:
    return f'<entry xmlns="urn:test:entry">{text}</entry>'


# ---- SSE, replay, items API, tokens --------------------------------------------------------

async def test_sse_events_replay_and_the_items_api(server, clients):
    a = await clients("alice")
    s, ps = svc(server), a.plugin["xep_0060"]
    await ps.create_node(s, "news", config=node_config(max_items="4"), timeout=T)
    tok = issue(server, "alice")
    url = node_url(server, "news")
    async with httpx.AsyncClient() as http:
        live = await open_sse(http, url)
        assert live.status == 200
        # Published over XMPP: an item event with the payload's XML.
        await ps.publish(s, "news", id="1", payload=payload("one"), timeout=T)
        assert await live.next() == ev("item", "1", entry_xml("one"))
        assert live.retry == 2000
        # Over HTTP: JSON into an XEP-0335 container, XML with several lines.
        r = await http.post(url + "/items?id=2", headers={**bearer(tok),
                            "Content-Type": "application/json"}, content=b'{"temp": 21.5}')
        assert r.status_code == 201, r.text
        assert r.json()["id"] == "2"
        assert r.headers["location"] == f"/pubsub/{s}/news/items/2"
        assert await live.next() == ev("item", "2", '{"temp":21.5}')
        r = await http.post(url + "/items", headers={**bearer(tok),
                            "Content-Type": "application/xml"},
                            content=b"<entry xmlns='urn:test:entry'>a\nb</entry>")
        assert r.status_code == 201, r.text
        id3 = r.json()["id"]
        assert await live.next() == ev("item", id3, entry_xml("a\nb"))
        # Items as JSON, newest first; the JSON container as JSON.
        r = await http.get(url + "/items?max=2")
        assert r.status_code == 200
        got = r.json()["items"]
        assert [i["id"] for i in got] == [id3, "2"]
        assert got[1]["json"] == {"temp": 21.5}
        assert got[0]["xml"] == entry_xml("a\nb")
        assert got[1]["publisher"].startswith("alice@")
        # Retract over HTTP; the XMPP subscriber's view and the stream agree.
        r = await http.delete(url + "/items/2", headers=bearer(tok))
        assert r.status_code == 204
        assert await live.next() == ev("retract", data="2")
        # Replay after item 1 (header), and after the newest (query): nothing.
        replay = await open_sse(http, url, {"Last-Event-ID": "1"})
        assert await replay.next() == ev("item", id3, entry_xml("a\nb"))
        await ps.publish(s, "news", id="4", payload=payload("four"), timeout=T)
        assert await replay.next() == ev("item", "4", entry_xml("four"))
        assert await live.next() == ev("item", "4", entry_xml("four"))
        await replay.close()
        quiet = await open_sse(http, url + "?last_event_id=4")
        await ps.publish(s, "news", id="5", payload=payload("five"), timeout=T)
        assert await quiet.next() == ev("item", "5", entry_xml("five"))
        await quiet.close()
        # max_items 4: 1, 3, 4, 5 retained; 6 and 7 push 1 and 3 out.
        for i in ("6", "7"):
            await ps.publish(s, "news", id=i, payload=payload(i), timeout=T)
        assert [e["id"] for e in await live.take(3)] == ["5", "6", "7"]
        gone = await open_sse(http, url, {"Last-Event-ID": "1"})
        assert await gone.next() == ev("reset", data="news")
        assert [e["id"] for e in await gone.take(4)] == ["4", "5", "6", "7"]
        await gone.close()
        # Purge and delete end the story; the stream ends with the node.
        await ps.purge(s, "news", timeout=T)
        assert await live.next() == ev("purge", data="news")
        await ps.delete_node(s, "news", timeout=T)
        assert await live.next() == ev("delete", data="news")
        await asyncio.wait_for(live.ended.wait(), T)
    assert server.alive()


async def test_replay_after_an_item_id_that_is_not_ascii(server, clients):
    """ItemIDs may be any string; a browser sends the last one back UTF-8 encoded in
    Last-Event-ID, and the replay starts after it."""
    a = await clients("alice")
    s, ps = svc(server), a.plugin["xep_0060"]
    await ps.create_node(s, "cafe", timeout=T)
    url = node_url(server, "cafe")
    for i in ("un", "café", "trois"):
        await ps.publish(s, "cafe", id=i, payload=payload(i), timeout=T)
    async with httpx.AsyncClient() as http:
        replay = await open_sse(http, url, {"Last-Event-ID": "café".encode()})
        assert await replay.next() == ev("item", "trois", entry_xml("trois"))
        await replay.close()


async def test_a_refused_request_body_closes_the_connection_cleanly(server):
    """A request refused on its headers (no token) leaves its body unread, and the server
    closes the connection after the answer unless the whole body had already arrived: the
    answer says `Connection: close` (RFC 9112 §9.6), so a client that keeps connections
    alive opens a new one instead of losing its next request on this one (httpx saw "server
    disconnected without sending a response" now and then)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
    path = f"/pubsub/pubsub.{server.domain}/n/items"
    writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 f"Content-Type: application/xml\r\nContent-Length: 100\r\n\r\n".encode())
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.write(b"x" * 100)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), T)
    lines = head.decode().lower().split("\r\n")
    assert lines[0].startswith("http/1.1 401"), head
    assert "connection: close" in lines, head
    writer.close()


async def test_tokens_and_errors(server, clients):
    a = await clients("alice")
    s, ps = svc(server), a.plugin["xep_0060"]
    await ps.create_node(s, "n", timeout=T)
    url = node_url(server, "n")
    alice = issue(server, "alice")
    bob_read = issue(server, "bob", scopes="read")
    bob_pub = issue(server, "bob", scopes="publish")
    xml = {"Content-Type": "application/xml"}
    body = b"<entry xmlns='urn:test:entry'>x</entry>"
    async with httpx.AsyncClient() as http:
        async def post(headers, content=body, path="/items"):
            return await http.post(url + path, headers=headers, content=content)
        # 401: none, unknown, malformed; 403: scope, not a publisher.
        r = await post(xml)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert (await post({**xml, **bearer("00" * 32)})).status_code == 401
        r = await post({**xml, **bearer("nonsense")})
        assert r.status_code == 401 and "invalid_token" in r.headers["www-authenticate"]
        r = await post({**xml, **bearer(bob_read)})
        assert r.status_code == 403 and "insufficient_scope" in r.headers["www-authenticate"]
        r = await post({**xml, **bearer(bob_pub)})
        assert r.status_code == 403 and r.json()["error"] == "forbidden"
        # 400: malformed XML and JSON, other media; 413: too large; 404: unknown node.
        r = await post({**xml, **bearer(alice)}, b"<entry xmlns='urn:x'>")
        assert r.status_code == 400 and r.json()["error"] == "bad-request"
        r = await post({"Content-Type": "application/json", **bearer(alice)}, b"{nope")
        assert r.status_code == 400
        assert (await post({"Content-Type": "text/plain", **bearer(alice)})).status_code == 415
        big = b"<entry xmlns='urn:x'>" + b"x" * (300 * 1024) + b"</entry>"
        assert (await post({**xml, **bearer(alice)}, big)).status_code == 413
        r = await http.get(node_url(server, "nope") + "/items")
        assert r.status_code == 404 and r.json()["error"] == "item-not-found"
        r = await http.get(node_url(server, "nope"), headers={"Accept": "text/event-stream"})
        assert r.status_code == 404
        assert (await http.get(node_url(server, "n", "elsewhere.example") + "/items")
                ).status_code == 404
        # PEP of an account that does not exist: 404, not a service made up in memory.
        assert (await http.get(node_url(server, "n", f"nobody@{server.domain}") + "/items")
                ).status_code == 404
        assert (await http.delete(url + "/items/missing", headers=bearer(alice))
                ).status_code == 404
        # W3C WebSub §4: the node URL is a topic; a plain GET or HEAD answers (with the items)
        # and names the hub and the topic itself, for subscribers that discover the hub.
        for r in (await http.get(url), await http.head(url)):
            assert r.status_code == 200
            hub_url = f"http://127.0.0.1:{server.http_port}/websub"
            assert r.headers["link"] == f'<{hub_url}>; rel="hub", <{url}>; rel="self"'
        assert (await http.get(url)).json()["node"] == url.rsplit("/", 1)[1]
        # Publish-options as query parameters: a precondition that fails is 409.
        r = await post({**xml, **bearer(alice)}, path="/items?pubsub%23access_model=whitelist")
        assert r.status_code == 409 and r.json()["pubsub"] == "precondition-not-met"
        assert (await post({**xml, **bearer(alice)}, path="/items?pubsub%23access_model=open")
                ).status_code == 201
        # Revoked and expired tokens stop working; list shows what exists.
        listed = token(server, "list", "alice")
        assert listed.returncode == 0 and "alice@" in listed.stdout
        tid = listed.stdout.split()[0]
        assert token(server, "revoke", tid).returncode == 0
        assert token(server, "revoke", tid).returncode != 0
        assert (await post({**xml, **bearer(alice)})).status_code == 401
        short = issue(server, "alice", expires="3s")
        assert (await post({**xml, **bearer(short)})).status_code == 201
        time.sleep(3.1)  # the token's own lifetime, not another module's progress
        assert (await post({**xml, **bearer(short)})).status_code == 401
        assert token(server, "issue", "nobody").returncode != 0
        assert token(server, "issue", "alice", "--scopes", "admin").returncode != 0
    # Tokens go with the account.
    bob_tok = issue(server, "bob")
    assert server.user("delete", "bob").returncode == 0
    async with httpx.AsyncClient() as http:
        r = await http.get(url + "/items", headers=bearer(bob_tok))
        assert r.status_code == 401
    assert server.alive() and "panicked" not in server.log()


# ---- access --------------------------------------------------------------------------------

async def test_access_open_presence_whitelist_and_pep(server, clients):
    a, b = await clients("alice"), await clients("bob")
    s, ps = svc(server), a.plugin["xep_0060"]
    await make_contacts(a, b)
    for node, model in (("pres", "presence"), ("white", "whitelist"), ("open", "open")):
        await ps.create_node(s, node, config=node_config(access_model=model), timeout=T)
        await ps.publish(s, node, id="x", payload=payload("x"), timeout=T)
    bob, carol = issue(server, "bob", scopes="read"), issue(server, "carol", scopes="read")
    async with httpx.AsyncClient() as http:
        async def status(node, tok=None, service=None):
            h = bearer(tok) if tok else {}
            r = await http.get(node_url(server, node, service) + "/items", headers=h)
            return r.status_code, r.json().get("pubsub") or r.json().get("error")
        assert (await status("open"))[0] == 200
        assert await status("pres") == (401, "not-authorized")
        assert await status("pres", carol) == (403, "presence-subscription-required")
        assert (await status("pres", bob))[0] == 200
        assert await status("white", bob) == (403, "closed-node")
        # Streams are checked the same way.
        sse = await open_sse(http, node_url(server, "white"), bearer(bob))
        assert sse.status == 403
        await ps.modify_affiliations(s, "white", [(server.jid("bob"), "member")], timeout=T)
        assert (await status("white", bob))[0] == 200
        # The token as a query parameter, as a browser's EventSource must send it.
        sse = await open_sse(http, node_url(server, "white") + f"?access_token={bob}")
        assert sse.status == 200
        await ps.publish(s, "white", id="y", payload=payload("y"), timeout=T)
        assert (await sse.next())["id"] == "y"
        await sse.close()
        # PEP: the account's bare JID is the service; default access model presence.
        alice_jid = server.jid("alice")
        await ps.publish(alice_jid, "urn:test:pep", id="t1", payload=payload("tune", "urn:test:pep"),
                         timeout=T)
        assert (await status("urn:test:pep", None, alice_jid))[0] == 401
        assert (await status("urn:test:pep", carol, alice_jid))[0] == 403
        r = await http.get(node_url(server, "urn:test:pep", alice_jid) + "/items",
                           headers=bearer(bob))
        assert r.status_code == 200 and [i["id"] for i in r.json()["items"]] == ["t1"]


# ---- presence as a stream ------------------------------------------------------------------

async def test_presence_stream_for_subscribed_token_holders(server, clients):
    a, b = await clients("alice"), await clients("bob")
    await make_contacts(a, b)
    bob, carol = issue(server, "bob", scopes="read"), issue(server, "carol", scopes="read")
    url = f"{base(server)}/presence/{server.jid('alice')}"
    async with httpx.AsyncClient() as http:
        for headers, status in (({}, 401), (bearer(carol), 403)):
            r = await http.get(url, headers={"Accept": "text/event-stream", **headers})
            assert r.status_code == status, r.text
        r = await http.get(f"{base(server)}/presence/someone@elsewhere.example",
                           headers={"Accept": "text/event-stream", **bearer(bob)})
        assert r.status_code == 404
        watch = await open_sse(http, url, bearer(bob))
        assert watch.status == 200
        # What is available now comes first: alice's "test" resource.
        first = await watch.next()
        assert first["event"] == "available"
        assert json.loads(first["data"])["jid"] == server.jid("alice", "test")
        # A second resource comes, changes its show, and goes (a dead session counts too).
        a2 = await clients("alice", "meter")
        ev1 = await watch.next()
        assert (ev1["event"], json.loads(ev1["data"])["jid"]) == (
            "available", server.jid("alice", "meter"))
        a2.send_presence(pshow="away", pstatus="low battery")
        ev2 = await watch.next()
        assert json.loads(ev2["data"]) == {"jid": server.jid("alice", "meter"),
                                           "show": "away", "status": "low battery"}
        await a2.close()
        ev3 = await watch.next()
        assert (ev3["event"], json.loads(ev3["data"])["jid"]) == (
            "unavailable", server.jid("alice", "meter"))
        await watch.close()


# ---- a reader that never reads -------------------------------------------------------------

async def test_a_reader_that_never_reads_is_dropped_and_memory_stays_bounded(server, clients):
    a = await clients("alice")
    s, ps = svc(server), a.plugin["xep_0060"]
    await ps.create_node(s, "flood", config=node_config(max_items="10"), timeout=T)
    tok = issue(server, "alice")
    url = node_url(server, "flood")
    path = url.split(str(server.http_port), 1)[1]
    # A raw client with a tiny receive buffer that sends its request and never reads.
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", server.http_port))
    stuck.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode())
    # More than the kernel's socket buffers hold (tcp_wmem allows the sender 4 MiB).
    chunk = "x" * 64_000
    async with httpx.AsyncClient() as http:
        reader = await open_sse(http, url)
        await asyncio.sleep(0.2)
        rss_before = server.rss_kib()
        n = 200
        for i in range(n):
            r = await http.post(url + f"/items?id=i{i}", headers={
                **bearer(tok), "Content-Type": "application/xml"},
                content=f"<entry xmlns='urn:x'>{chunk}</entry>".encode())
            assert r.status_code == 201
            # The reading client keeps up.
            assert (await reader.next())["id"] == f"i{i}"
        rss_after = server.rss_kib()
        await reader.close()
    # 200 × 64 KB went by the stuck client: far more than it could hold, none of it kept.
    assert rss_after < rss_before + 24 * 1024, (rss_before, rss_after)
    # When it finally reads, its stream has been cut: it got a bounded prefix and an end.
    stuck.settimeout(10)
    got = b""
    while True:
        try:
            data = stuck.recv(65536)
        except socket.timeout:
            raise AssertionError(f"no end after {len(got)} bytes: {got[-300:]!r}")
        if not data:
            break
        got += data
        if b"\r\n0\r\n\r\n" in got:
            break
    stuck.close()
    ids = got.count(b"\nid: i")
    assert 0 < ids < n, ids
    assert server.alive()


# ---- a browser's EventSource across a server restart ---------------------------------------

WEB = Path(__file__).resolve().parent / "web"
NODE = shutil.which("node")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(NODE is None or CHROMIUM is None or not (WEB / "node_modules").is_dir(),
                    reason="node, Debian's chromium and tests/web/node_modules are needed")
async def test_browser_eventsource_resumes_after_a_restart(server, clients):
    a = await clients("alice")
    s, ps = svc(server), a.plugin["xep_0060"]
    await ps.create_node(s, "dash", timeout=T)
    tok = issue(server, "alice")
    url = node_url(server, "dash")
    proc = await asyncio.create_subprocess_exec(
        NODE, "sse.mjs", cwd=WEB, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "CHROMIUM": CHROMIUM, "BASE": base(server),
             "NODE_PATH": url[len(base(server)):], "EXPECT": "7"})
    steps: list[dict] = []

    async def until(pred, what: str):
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line, f"sse.mjs ended before {what}: {steps}\n{(await proc.stderr.read()).decode()}"
            if not line.startswith(b"{"):
                continue
            st = json.loads(line)
            steps.append(st)
            assert st["step"] not in ("failed", "pageerror"), st
            if pred(st):
                return st

    try:
        await until(lambda st: st["step"] == "open", "the stream opened")
        # Published over XMPP while the browser listens.
        for i in ("a1", "a2", "a3"):
            await ps.publish(s, "dash", id=i, payload=payload(i), timeout=T)
        await until(lambda st: st.get("id") == "a3", "a3")
        await a.close()
        # The server goes away: the browser sees the error and keeps retrying.
        server.stop()
        await until(lambda st: st["step"] == "error", "the error")
        server.start()
        # Published while the browser is disconnected (it retries every 2 s): it gets them
        # on reconnection from its Last-Event-ID, from the store.
        async with httpx.AsyncClient() as http:
            for i in ("b1", "b2", "b3"):
                r = await http.post(url + f"/items?id={i}", headers={
                    **bearer(tok), "Content-Type": "application/json"},
                    content=json.dumps({"n": i}).encode())
                assert r.status_code == 201, r.text
            await until(lambda st: st["step"] == "open", "the reconnection")
            r = await http.post(url + "/items?id=c1", headers={
                **bearer(tok), "Content-Type": "application/json"}, content=b'{"n":"c1"}')
            assert r.status_code == 201
            await until(lambda st: st["step"] == "done", "all items")
        rc = await asyncio.wait_for(proc.wait(), 30)
        assert rc == 0, steps
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    items = [st for st in steps if st["step"] == "item"]
    # Every item exactly once, in publish order: no gap, no duplicate, across the restart.
    assert [st["id"] for st in items] == ["a1", "a2", "a3", "b1", "b2", "b3", "c1"], steps
    assert items[0]["data"] == entry_xml("a1")
    assert json.loads(items[3]["data"]) == {"n": "b1"}
    assert not [st for st in steps if st["step"] == "reset"], steps


# ---- CORS: pages on other origins -----------------------------------------------------------

async def test_cors_follows_the_origin_allowlist(server_factory):
    page = "http://app.example:8080"
    srv = server_factory(http={"allowed_origins": [page]})
    cs = Clients(srv)
    try:
        a = await cs("alice")
        await a.plugin["xep_0060"].create_node(svc(srv), "cors", timeout=T)
    finally:
        await cs.close()
    tok = issue(srv, "alice")
    url = node_url(srv, "cors")
    presence = f"{base(srv)}/presence/{srv.jid('alice')}"
    allowed, evil = {"Origin": page}, {"Origin": "http://evil.example"}
    async with httpx.AsyncClient(timeout=T) as http:
        for u, method, methods in ((url, "GET", "GET, OPTIONS"),
                                   (url + "/items", "POST", "GET, POST, OPTIONS"),
                                   (url + "/items/x", "DELETE", "DELETE, OPTIONS"),
                                   (presence, "GET", "GET, OPTIONS")):
            r = await http.options(u, headers={
                **allowed, "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "authorization, content-type, last-event-id"})
            assert r.status_code == 204, (u, r.status_code, r.text)
            assert r.headers["access-control-allow-origin"] == page
            assert r.headers["access-control-allow-methods"] == methods
            allow = r.headers["access-control-allow-headers"].lower()
            for h in ("authorization", "content-type", "last-event-id"):
                assert h in allow, allow
            r = await http.options(u, headers={**evil, "Access-Control-Request-Method": method})
            assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
        # The requests themselves: answered with the origin (errors too, so a page can read
        # them); another origin is refused before the handler.
        r = await http.post(url + "/items?id=x", headers={
            **allowed, **bearer(tok), "Content-Type": "application/json"}, content=b'{"a":1}')
        assert r.status_code == 201, r.text
        assert r.headers["access-control-allow-origin"] == page
        assert "location" in r.headers["access-control-expose-headers"].lower()
        assert r.headers["vary"] == "Origin"
        r = await http.get(url + "/items", headers=allowed)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == page
        r = await http.get(url + "/items", headers={**allowed, "Authorization": "Bearer nope"})
        assert r.status_code == 401 and r.headers["access-control-allow-origin"] == page
        r = await http.post(url + "/items?id=y", headers={
            **evil, **bearer(tok), "Content-Type": "application/json"}, content=b'{"a":1}')
        assert r.status_code == 403, r.text
        assert [i["id"] for i in (await http.get(url + "/items")).json()["items"]] == ["x"]
        r = await http.delete(url + "/items/x", headers={**evil, **bearer(tok)})
        assert r.status_code == 403
        r = await http.delete(url + "/items/x", headers={**allowed, **bearer(tok)})
        assert r.status_code == 204 and r.headers["access-control-allow-origin"] == page
        # The stream: its head carries the answer too.
        async with http.stream("GET", url, headers={
                **allowed, "Accept": "text/event-stream"}) as r:
            assert r.status_code == 200
            assert r.headers["access-control-allow-origin"] == page
            assert r.headers["connection"] == "close"
        r = await http.get(url, headers={**evil, "Accept": "text/event-stream"})
        assert r.status_code == 403
        # Without an Origin (not a browser): no CORS headers, nothing refused.
        r = await http.get(url + "/items")
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


@pytest.mark.skipif(NODE is None or CHROMIUM is None or not (WEB / "node_modules").is_dir(),
                    reason="node, Debian's chromium and tests/web/node_modules are needed")
async def test_a_page_on_another_origin_streams_publishes_and_retracts(server_factory):
    page_port = free_port()
    srv = server_factory(http={"allowed_origins": [f"http://127.0.0.1:{page_port}"]})
    cs = Clients(srv)
    try:
        a = await cs("alice")
        await a.plugin["xep_0060"].create_node(svc(srv), "board", timeout=T)
    finally:
        await cs.close()
    url = node_url(srv, "board")
    proc = await asyncio.create_subprocess_exec(
        NODE, "sse_cors.mjs", cwd=WEB, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "CHROMIUM": CHROMIUM, "BASE": base(srv), "PAGE_PORT": str(page_port),
             "NODE_PATH": url[len(base(srv)):], "TOKEN": issue(srv, "alice")})
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    steps = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    assert proc.returncode == 0, (steps, err.decode()[-2000:])
    by = {st["step"]: st for st in steps}
    assert by["published"]["status"] == 201, steps
    assert by["published"]["location"].endswith("/items/x1"), steps
    assert (by["item"]["id"], json.loads(by["item"]["data"])) == ("x1", {"n": 1}), steps
    assert by["retracted"]["status"] == 204, steps
    assert by["retract"]["data"] == "x1", steps
    assert "done" in by, steps
