"""W3C WebSub hub at /websub (issue 15, part B): a webhook receiver written here with the
standard library (`http.server` in a thread) answers verification of intent, checks
`X-Hub-Signature` and counts deliveries by item id; items are published by slixmpp.

Subscribe → verify → signed deliveries in order (XML and XEP-0335 JSON); retractions and
purges as signed POSTs of the XEP-0060 event (``X-Hub-Event``), also across a crash; unsubscribe;
denial (unknown topic, access refused); bad requests; SSRF refusal; redelivery after 500s;
a permanently failing receiver marked `failing`; lease expiry; and `kill -9` during a burst
of publishes: every acknowledged item reaches every callback at least once after restart.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from test_pubsub import login, node_config, payload, publish_options

T = 10
NS_JSON = "urn:xmpp:json:0"
# Quick retries so the tests need no long waits; the receiver is on loopback.
WEBHOOKS = {"allow_private": True, "retry_initial_ms": 100, "retry_max_secs": 1,
            "max_attempts": 3}


class Receiver:
    """A webhook receiver: one callback per name at /cb/<name>."""

    def __init__(self):
        self.lock = threading.Lock()
        self.deliveries: dict[str, list[dict]] = defaultdict(list)
        self.verifications: dict[str, list[dict]] = defaultdict(list)
        self.posts: dict[str, int] = defaultdict(int)
        self.secrets: dict[str, str] = {}
        self.fail: dict[str, int] = {}      # POSTs still to answer 500 (-1: all)
        self.delay = 0.0                    # seconds each POST takes to answer
        self.bad_signatures = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def name(self) -> str:
                return urllib.parse.urlsplit(self.path).path.rsplit("/", 1)[-1]

            def reply(self, status: int, body: bytes = b""):
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                with receiver.lock:
                    receiver.verifications[self.name()].append(q)
                if q.get("hub.mode") in ("subscribe", "unsubscribe"):
                    self.reply(200, q.get("hub.challenge", "").encode())
                else:
                    self.reply(200)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                time.sleep(receiver.delay)
                name = self.name()
                with receiver.lock:
                    receiver.posts[name] += 1
                    left = receiver.fail.get(name, 0)
                    if left:
                        receiver.fail[name] = left - 1 if left > 0 else -1
                if left:
                    return self.reply(500)
                secret = receiver.secrets.get(name)
                sig = self.headers.get("X-Hub-Signature")
                if secret is not None:
                    want = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
                    if not sig or not hmac.compare_digest(sig, want):
                        with receiver.lock:
                            receiver.bad_signatures += 1
                        return self.reply(403)
                with receiver.lock:
                    receiver.deliveries[name].append({
                        "id": self.headers.get("X-Hub-Item-Id"),
                        "event": self.headers.get("X-Hub-Event"),
                        "body": body.decode(),
                        "type": self.headers.get("Content-Type"),
                        "link": self.headers.get("Link"),
                        "signature": sig,
                    })
                self.reply(204)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/cb/{name}"

    def ids(self, name: str) -> list[str]:
        with self.lock:
            return [d["id"] for d in self.deliveries[name]]

    def modes(self, name: str) -> list[str]:
        with self.lock:
            return [v.get("hub.mode") for v in self.verifications[name]]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


async def until(pred, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _http(srv, method: str, fields: dict | None = None, query: dict | None = None,
          content_type: str = "application/x-www-form-urlencoded",
          bearer: str | None = None) -> tuple[int, bytes]:
    url = f"http://127.0.0.1:{srv.http_port}/websub"
    data = None
    if query:
        url += "?" + urllib.parse.urlencode(query)
    if fields is not None:
        data = urllib.parse.urlencode(fields).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", content_type)
    if bearer is not None:
        req.add_header("Authorization", f"Bearer {bearer}")
    try:
        with urllib.request.urlopen(req, timeout=T) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


async def hub(srv, **fields) -> tuple[int, bytes]:
    return await asyncio.to_thread(_http, srv, "POST", fields)


async def status(srv, topic: str, callback: str) -> tuple[int, bytes]:
    return await asyncio.to_thread(
        _http, srv, "GET", None, {"hub.topic": topic, "hub.callback": callback})


def topic(srv, node: str, service: str | None = None) -> str:
    service = service or f"pubsub.{srv.domain}"
    return (f"http://127.0.0.1:{srv.http_port}/pubsub/{urllib.parse.quote(service, safe='')}/"
            f"{urllib.parse.quote(node, safe='')}")


async def subscribe(srv, receiver: Receiver, name: str, node: str, *, secret: str | None = None,
                    lease: int | None = None):
    """Subscribes callback `name` to `node` and waits until the hub stored it."""
    fields = {"hub.mode": "subscribe", "hub.topic": topic(srv, node),
              "hub.callback": receiver.url(name)}
    if secret is not None:
        fields["hub.secret"] = secret
        receiver.secrets[name] = secret
    if lease is not None:
        fields["hub.lease_seconds"] = str(lease)
    code, body = await hub(srv, **fields)
    assert code == 202, body
    await until(lambda: "subscribe" in receiver.modes(name), f"verification of {name}")
    ok = []

    async def stored():
        code, _ = await status(srv, topic(srv, node), receiver.url(name))
        ok.append(code == 200)
    # The subscription is stored right after the verification answer.
    deadline = time.monotonic() + T
    while not (ok and ok[-1]):
        assert time.monotonic() < deadline, f"subscription {name} not stored"
        await stored()
        await asyncio.sleep(0.02)


async def publisher(srv, node: str, **config):
    c = await login(srv, "alice")
    await c.plugin["xep_0060"].create_node(
        f"pubsub.{srv.domain}", node, config=node_config(**config) if config else None,
        timeout=T)
    return c


async def publish(c, srv, node: str, item_id: str, el: ET.Element | None = None):
    await c.plugin["xep_0060"].publish(f"pubsub.{srv.domain}", node, id=item_id,
                                       payload=el if el is not None else payload(item_id),
                                       timeout=T)


def json_payload(text: str) -> ET.Element:
    el = ET.Element(f"{{{NS_JSON}}}json")
    el.text = text
    return el


async def test_subscribe_deliver_signed_in_order_then_unsubscribe(server_factory, backend,
                                                                   receiver):
    srv = server_factory(backend=backend, webhooks=WEBHOOKS)
    c = await publisher(srv, "news")
    try:
        await subscribe(srv, receiver, "a", "news", secret="s3cret", lease=3600)
        v = receiver.verifications["a"][0]
        assert v["hub.topic"] == topic(srv, "news")
        assert v["hub.lease_seconds"] == "3600"
        await subscribe(srv, receiver, "b", "news")  # no secret: unsigned
        ids = [f"i{n}" for n in range(10)]
        for i in ids:
            await publish(c, srv, "news", i)
        await publish(c, srv, "news", "j1", json_payload('{"temp": 21.5}'))
        await until(lambda: len(receiver.ids("a")) == 11 and len(receiver.ids("b")) == 11,
                    "11 deliveries to each callback")
        assert receiver.ids("a") == ids + ["j1"]          # in publication order
        assert receiver.ids("b") == ids + ["j1"]
        assert receiver.bad_signatures == 0
        first = receiver.deliveries["a"][0]
        assert first["type"] == "application/xml"
        assert "i0" in first["body"] and "urn:test:entry" in first["body"]
        assert first["signature"].startswith("sha256=")
        assert receiver.deliveries["b"][0]["signature"] is None
        hub_url = f"http://127.0.0.1:{srv.http_port}/websub"
        assert first["link"] == f'<{hub_url}>; rel="hub", <{topic(srv, "news")}>; rel="self"'
        last = receiver.deliveries["a"][-1]
        assert last["type"] == "application/json"
        assert last["body"] == '{"temp": 21.5}'

        code, body = await status(srv, topic(srv, "news"), receiver.url("a"))
        assert code == 200 and b'"state":"active"' in body, body

        # Unsubscribe: verified like a subscription, then nothing more reaches "a".
        code, _ = await hub(srv, **{"hub.mode": "unsubscribe", "hub.topic": topic(srv, "news"),
                                    "hub.callback": receiver.url("a")})
        assert code == 202
        await until(lambda: "unsubscribe" in receiver.modes("a"), "unsubscribe verification")
        deadline = time.monotonic() + T
        while (await status(srv, topic(srv, "news"), receiver.url("a")))[0] != 404:
            assert time.monotonic() < deadline, "unsubscription not applied"
        await publish(c, srv, "news", "after")
        await until(lambda: "after" in receiver.ids("b"), "delivery to the remaining callback")
        assert "after" not in receiver.ids("a")
    finally:
        await c.close()


NS_EVENT = "http://jabber.org/protocol/pubsub#event"


async def test_retractions_and_purges_reach_the_callbacks(server_factory, backend, receiver):
    srv = server_factory(backend=backend, webhooks=WEBHOOKS)
    c = await publisher(srv, "news")
    ps, svc = c.plugin["xep_0060"], f"pubsub.{srv.domain}"
    try:
        await subscribe(srv, receiver, "a", "news", secret="s3cret")
        await subscribe(srv, receiver, "b", "news")
        await publish(c, srv, "news", "i1")
        await publish(c, srv, "news", "i2")
        await ps.retract(svc, "news", "i1", timeout=T)
        await ps.purge(svc, "news", timeout=T)
        await until(lambda: len(receiver.ids("a")) == 4 and len(receiver.ids("b")) == 4,
                    "four deliveries to each callback")
        for name in ("a", "b"):
            got = receiver.deliveries[name]
            # In order with the items; each says what it is.
            assert [(d["event"], d["id"]) for d in got] == [
                ("item", "i1"), ("item", "i2"), ("retract", "i1"), ("purge", None)], got
            retract, purge = ET.fromstring(got[2]["body"]), ET.fromstring(got[3]["body"])
            assert (retract.tag, retract.get("id")) == (f"{{{NS_EVENT}}}retract", "i1")
            assert (purge.tag, purge.get("node")) == (f"{{{NS_EVENT}}}purge", "news")
            assert got[2]["type"] == got[3]["type"] == "application/xml"
        # Signed like the items (the receiver checks every signature of "a").
        assert receiver.deliveries["a"][2]["signature"].startswith("sha256=")
        assert receiver.bad_signatures == 0

        # At least once: a retraction owed when the server is killed arrives after restart.
        with receiver.lock:
            receiver.fail["a"] = -1
        await publish(c, srv, "news", "k1")
        await until(lambda: "k1" in receiver.ids("b"), "k1 at b")
        await ps.retract(svc, "news", "k1", timeout=T)
        await until(lambda: receiver.deliveries["b"][-1]["event"] == "retract", "k1's retraction at b")
    finally:
        try:
            await asyncio.wait_for(c.close(), 5)
        except Exception:
            pass
    srv.kill()
    with receiver.lock:
        receiver.fail["a"] = 0
    srv.start()
    await until(lambda: ("retract", "k1") in [(d["event"], d["id"]) for d in receiver.deliveries["a"]],
                "k1's retraction at a after the restart")
    assert [(d["event"], d["id"]) for d in receiver.deliveries["a"]][-2:] == [
        ("item", "k1"), ("retract", "k1")]
    assert receiver.bad_signatures == 0


async def test_denied_unknown_topic_and_closed_node(server_factory, receiver):
    srv = server_factory(webhooks=WEBHOOKS)
    c = await publisher(srv, "closed", access_model="whitelist")
    try:
        for name, node in [("unknown", "no-such-node"), ("closed", "closed")]:
            code, _ = await hub(srv, **{"hub.mode": "subscribe", "hub.topic": topic(srv, node),
                                        "hub.callback": receiver.url(name)})
            assert code == 202
        # A URL that names no node of this hub is denied too.
        code, _ = await hub(srv, **{"hub.mode": "subscribe",
                                    "hub.topic": f"http://127.0.0.1:{srv.http_port}/elsewhere",
                                    "hub.callback": receiver.url("elsewhere")})
        assert code == 202
        for name in ("unknown", "closed", "elsewhere"):
            await until(lambda: "denied" in receiver.modes(name), f"denial of {name}")
        reasons = {n: receiver.verifications[n][0]["hub.reason"]
                   for n in ("unknown", "closed", "elsewhere")}
        assert reasons["unknown"] == "unknown topic"
        assert reasons["closed"].startswith("access refused"), reasons
        assert "subscribe" not in receiver.modes("closed")
        code, _ = await status(srv, topic(srv, "closed"), receiver.url("closed"))
        assert code == 404
    finally:
        await c.close()


async def test_bad_requests(server_factory, receiver):
    srv = server_factory(webhooks=WEBHOOKS)
    good = {"hub.mode": "subscribe", "hub.topic": topic(srv, "n"),
            "hub.callback": receiver.url("x")}
    cases = [
        {k: v for k, v in good.items() if k != "hub.mode"},
        {k: v for k, v in good.items() if k != "hub.topic"},
        {k: v for k, v in good.items() if k != "hub.callback"},
        {**good, "hub.mode": "publish"},
        {**good, "hub.callback": "not a url"},
        {**good, "hub.callback": "ftp://127.0.0.1/x"},
        {**good, "hub.topic": "not a url"},
        {**good, "hub.secret": "x" * 200},
        {**good, "hub.lease_seconds": "forever"},
    ]
    for fields in cases:
        code, body = await hub(srv, **fields)
        assert code == 400, (fields, code, body)
    code, _ = await asyncio.to_thread(_http, srv, "POST", good, None, "text/plain")
    assert code == 400
    code, _ = await status(srv, topic(srv, "n"), receiver.url("x"))
    assert code == 404
    code, _ = await asyncio.to_thread(_http, srv, "GET", None, {"hub.topic": topic(srv, "n")})
    assert code == 400
    assert receiver.verifications == {}
    assert srv.alive()


async def test_ssrf_private_callbacks_refused(server_factory, receiver):
    srv = server_factory()  # [webhooks] allow_private = false (the default)
    for cb in [receiver.url("x"), f"http://localhost:{receiver.port}/cb/x",
               "http://[::1]/cb", "http://10.0.0.1/cb", "http://169.254.169.254/latest"]:
        code, body = await hub(srv, **{"hub.mode": "subscribe", "hub.topic": topic(srv, "n"),
                                       "hub.callback": cb})
        assert code == 400, (cb, body)
        assert b"not public" in body, body
    assert receiver.verifications == {}


async def test_redelivery_after_errors(server_factory, receiver):
    srv = server_factory(webhooks={**WEBHOOKS, "max_attempts": 10})
    c = await publisher(srv, "flaky")
    try:
        await subscribe(srv, receiver, "f", "flaky", secret="k")
        receiver.fail["f"] = 3
        await publish(c, srv, "flaky", "one")
        await publish(c, srv, "flaky", "two")
        await until(lambda: receiver.ids("f") == ["one", "two"], "redelivery in order")
        assert receiver.posts["f"] == 5   # 3 failures, then one each
        code, body = await status(srv, topic(srv, "flaky"), receiver.url("f"))
        assert b'"state":"active"' in body and b'"pending":0' in body, body
    finally:
        await c.close()


async def test_permanent_failure_marks_failing(server_factory, receiver):
    srv = server_factory(webhooks=WEBHOOKS)  # max_attempts = 3
    c = await publisher(srv, "down")
    try:
        await subscribe(srv, receiver, "d", "down")
        receiver.fail["d"] = -1
        await publish(c, srv, "down", "lost?")
        bodies = []

        async def failing():
            code, body = await status(srv, topic(srv, "down"), receiver.url("d"))
            bodies.append(body)
        deadline = time.monotonic() + 20
        while not (bodies and b'"state":"failing"' in bodies[-1]):
            assert time.monotonic() < deadline, bodies[-1:]
            await failing()
            await asyncio.sleep(0.1)
        assert b'"last_error":"HTTP 500"' in bodies[-1] and b'"pending":1' in bodies[-1]
        assert "websub subscription failing" in srv.log()
        # Nothing is dropped: once the receiver recovers, the item arrives.
        receiver.fail["d"] = 0
        await until(lambda: receiver.ids("d") == ["lost?"], "delivery after recovery")
        deadline = time.monotonic() + T
        while b'"state":"active"' not in (await status(srv, topic(srv, "down"),
                                                       receiver.url("d")))[1]:
            assert time.monotonic() < deadline, "subscription not active again"
    finally:
        await c.close()


async def test_lease_expiry(server_factory, receiver):
    srv = server_factory(webhooks=WEBHOOKS)
    c = await publisher(srv, "short")
    try:
        await subscribe(srv, receiver, "s", "short", lease=2)
        assert receiver.verifications["s"][0]["hub.lease_seconds"] == "2"
        deadline = time.monotonic() + 15
        while (await status(srv, topic(srv, "short"), receiver.url("s")))[0] != 404:
            assert time.monotonic() < deadline, "lease did not expire"
            await asyncio.sleep(0.2)
        assert "websub subscription expired" in srv.log()
        await subscribe(srv, receiver, "t", "short")
        await publish(c, srv, "short", "late")
        await until(lambda: "late" in receiver.ids("t"), "delivery to a live subscription")
        assert receiver.ids("s") == []
    finally:
        await c.close()


async def test_kill9_during_publish_burst_loses_nothing(server_factory, backend, receiver):
    srv = server_factory(backend=backend, webhooks=WEBHOOKS)
    c = await publisher(srv, "burst")
    await subscribe(srv, receiver, "x", "burst", secret="kx")
    await subscribe(srv, receiver, "y", "burst")
    acked: list[str] = []
    killed = False

    async def one(i: int):
        nonlocal killed
        try:
            await publish(c, srv, "burst", f"b{i}")
        except Exception:
            return
        acked.append(f"b{i}")
        if len(acked) == 60 and not killed:
            killed = True
            srv.kill()   # SIGKILL while the other publishes are in flight

    try:
        for start in range(0, 300, 20):
            await asyncio.gather(*(one(i) for i in range(start, start + 20)))
            if killed:
                break
    finally:
        try:
            await asyncio.wait_for(c.close(), 5)
        except Exception:
            pass
    assert killed and len(acked) >= 60
    srv.start()
    want = set(acked)
    await until(lambda: want <= set(receiver.ids("x")) and want <= set(receiver.ids("y")),
                "every acknowledged item at every callback", timeout=60)
    assert receiver.bad_signatures == 0


async def test_stricter_access_model_ends_the_subscription(server_factory, receiver):
    srv = server_factory(webhooks=WEBHOOKS)
    c = await publisher(srv, "gate")
    try:
        await subscribe(srv, receiver, "g", "gate")
        await publish(c, srv, "gate", "p1")
        await until(lambda: receiver.ids("g") == ["p1"], "delivery while open")
        await c.plugin["xep_0060"].set_node_config(
            f"pubsub.{srv.domain}", "gate", node_config(access_model="whitelist"), timeout=T)
        await publish(c, srv, "gate", "p2")
        await until(lambda: "denied" in receiver.modes("g"), "denial after the change")
        denial = [v for v in receiver.verifications["g"] if v.get("hub.mode") == "denied"][0]
        assert denial["hub.reason"].startswith("access refused"), denial
        assert denial["hub.topic"] == topic(srv, "gate")
        code, _ = await status(srv, topic(srv, "gate"), receiver.url("g"))
        assert code == 404
        assert receiver.ids("g") == ["p1"]
    finally:
        await c.close()


async def test_pep_topics_follow_the_access_model(server_factory, receiver):
    """PEP (service = the account's bare JID): an open node is readable anonymously, a node
    with PEP's default `presence` access model is not."""
    srv = server_factory(webhooks=WEBHOOKS)
    c = await login(srv, "alice")
    try:
        ps, me = c.plugin["xep_0060"], srv.jid("alice")
        await ps.publish(me, "urn:test:open", id="o1", payload=payload("o1"),
                         options=publish_options(access_model="open"), timeout=T)
        await ps.publish(me, "urn:test:private", id="p1", payload=payload("p1"), timeout=T)
        open_topic = topic(srv, "urn:test:open", service=me)
        code, _ = await hub(srv, **{"hub.mode": "subscribe", "hub.topic": open_topic,
                                    "hub.callback": receiver.url("open")})
        assert code == 202
        code, _ = await hub(srv, **{"hub.mode": "subscribe",
                                    "hub.topic": topic(srv, "urn:test:private", service=me),
                                    "hub.callback": receiver.url("private")})
        assert code == 202
        await until(lambda: "denied" in receiver.modes("private"), "denial of the PEP node")
        await until(lambda: "subscribe" in receiver.modes("open"), "verification")
        deadline = time.monotonic() + T
        while (await status(srv, open_topic, receiver.url("open")))[0] != 200:
            assert time.monotonic() < deadline, "PEP subscription not stored"
        await ps.publish(me, "urn:test:open", id="o2", payload=payload("o2"), timeout=T)
        await until(lambda: receiver.ids("open") == ["o2"], "PEP delivery")
    finally:
        await c.close()


async def test_token_holder_subscribes_to_a_closed_node(server_factory, receiver):
    """A subscriber with a bearer token reads the node as the token's account: the owner of a
    whitelist node gets its items; a bad token is 401, a token without `read` 403, and a
    token of an account the node does not admit is denied like an anonymous caller."""
    import subprocess
    from conftest import ROOKERY_BIN

    def issue(user: str, scopes: str) -> str:
        r = subprocess.run([ROOKERY_BIN, "--config", str(srv.config_path), "token", "issue",
                            user, "--scopes", scopes, "--expires", "1d"],
                           text=True, capture_output=True, timeout=60, cwd=srv.workdir)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()
    srv = server_factory(webhooks=WEBHOOKS)
    c = await publisher(srv, "closed", access_model="whitelist")
    try:
        fields = {"hub.mode": "subscribe", "hub.topic": topic(srv, "closed")}
        code, _ = await asyncio.to_thread(_http, srv, "POST",
                                          {**fields, "hub.callback": receiver.url("bad")},
                                          bearer="f" * 64)
        assert code == 401
        code, _ = await asyncio.to_thread(_http, srv, "POST",
                                          {**fields, "hub.callback": receiver.url("scope")},
                                          bearer=issue("alice", "publish"))
        assert code == 403
        code, _ = await asyncio.to_thread(_http, srv, "POST",
                                          {**fields, "hub.callback": receiver.url("bob")},
                                          bearer=issue("bob", "read"))
        assert code == 202
        await until(lambda: "denied" in receiver.modes("bob"), "denial of bob")
        code, _ = await asyncio.to_thread(_http, srv, "POST",
                                          {**fields, "hub.callback": receiver.url("owner")},
                                          bearer=issue("alice", "read"))
        assert code == 202
        await until(lambda: "subscribe" in receiver.modes("owner"), "verification of the owner")
        deadline = time.monotonic() + T
        while (await status(srv, topic(srv, "closed"), receiver.url("owner")))[0] != 200:
            assert time.monotonic() < deadline, "subscription not stored"
            await asyncio.sleep(0.02)
        await publish(c, srv, "closed", "secret-1")
        await until(lambda: receiver.ids("owner") == ["secret-1"], "delivery to the owner")
    finally:
        await c.close()


def sub_fields(srv, receiver: Receiver, name: str, node: str, url: str | None = None) -> dict:
    return {"hub.mode": "subscribe", "hub.topic": topic(srv, node),
            "hub.callback": url or receiver.url(name)}


async def test_one_callback_host_holds_at_most_100_subscriptions(server_factory, receiver):
    """Audit 37 L12: anyone who echoes challenges subscribed anonymously without bound. A
    callback host holding `max_subscriptions_per_callback_host` (100) live subscriptions is
    refused a new one at once with 403 (§5.1: a 4xx for a request the hub will not take);
    a renewal passes, as does another host."""
    srv = server_factory(webhooks=WEBHOOKS)
    c = await publisher(srv, "n")
    try:
        for i in range(100):
            await subscribe(srv, receiver, f"cb{i}", "n")
        code, body = await hub(srv, **sub_fields(srv, receiver, "cb100", "n"))
        assert (code, body) == (403, b"too many subscriptions for this callback host\n")
        # Another port, path or user info is the same host.
        other_port = f"http://u@127.0.0.1:{receiver.port + 1}/cb/x"
        code, _ = await hub(srv, **sub_fields(srv, receiver, "x", "n", other_port))
        assert code == 403
        code, _ = await hub(srv, **sub_fields(srv, receiver, "cb0", "n"))
        assert code == 202
        code, _ = await hub(srv, **sub_fields(srv, receiver, "y", "n",
                                              f"http://localhost:{receiver.port}/cb/y"))
        assert code == 202
        assert "cb100" not in receiver.verifications
    finally:
        await c.close()


async def test_one_topic_holds_at_most_max_subscriptions_per_topic(server_factory, receiver):
    """Audit 37 L12: a topic holding `max_subscriptions_per_topic` live subscriptions refuses
    a new one with 403 (here 3; the default is 1,000); renewals pass, other topics too."""
    srv = server_factory(webhooks={**WEBHOOKS, "max_subscriptions_per_topic": 3})
    c = await publisher(srv, "n")
    try:
        await c.plugin["xep_0060"].create_node(f"pubsub.{srv.domain}", "m", timeout=T)
        for i in range(3):
            await subscribe(srv, receiver, f"cb{i}", "n")
        code, body = await hub(srv, **sub_fields(srv, receiver, "cb3", "n"))
        assert (code, body) == (403, b"too many subscriptions to this topic\n")
        code, _ = await hub(srv, **sub_fields(srv, receiver, "cb1", "n"))
        assert code == 202
        await subscribe(srv, receiver, "cb3", "m")
    finally:
        await c.close()
