"""BOSH (XEP-0124, XEP-0206) at /http-bind with raw HTTP: the binding's own rules and bad
input. Strophe.js over BOSH is in test_web.py."""
from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import http.client
import re
import socket
import time
import xml.etree.ElementTree as ET

from slix import slix_login

NS = "http://jabber.org/protocol/httpbind"


def post(srv, body: str, headers: dict | None = None, timeout: float = 10.0) -> tuple[int, str, dict]:
    c = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=timeout)
    c.request("POST", "/http-bind", body=body.encode(),
              headers={"Content-Type": "text/xml; charset=utf-8", **(headers or {})})
    r = c.getresponse()
    out = (r.status, r.read().decode(), dict(r.getheaders()))
    c.close()
    return out


def create(srv, rid: int, wait: int = 5, **attrs) -> str:
    status, text, _ = post(srv, f"<body xmlns='{NS}' rid='{rid}' to='{srv.domain}' wait='{wait}' "
                                f"hold='1' ver='1.6' xmpp:version='1.0' "
                                f"xmlns:xmpp='urn:xmpp:xbosh'{extra_attrs(attrs)}/>")
    assert status == 200, text
    sid = re.search(r"sid='([0-9a-f]+)'", text)
    assert sid and "<stream:features" in text and "starttls" not in text, text
    if attrs.get("ack") == "1":
        # §9.1: the creation response says acknowledgements are in use.
        assert f"ack='{rid}'" in text, text
    return sid.group(1)


def extra_attrs(attrs: dict) -> str:
    """`xmpp_restart='true'` as the attribute `xmpp:restart='true'`."""
    return "".join(f" {k.replace('_', ':')}='{v}'" for k, v in attrs.items())


def req(srv, sid: str, rid: int, payload: str = "", **attrs) -> str:
    extra = extra_attrs(attrs)
    status, text, _ = post(srv, f"<body xmlns='{NS}' rid='{rid}' sid='{sid}' "
                                f"xmlns:xmpp='urn:xmpp:xbosh'{extra}>{payload}</body>")
    assert status == 200, text
    return text


def plain(user: str, password: str) -> str:
    b64 = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    return f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{b64}</auth>"


def test_bodies_that_are_not_xml_or_not_bosh_are_refused(server):
    for bad in ["hello", "<body", f"<body xmlns='{NS}'/>", "<iq xmlns='jabber:client'/>",
                f"<body xmlns='{NS}' rid='x'/>"]:
        status, text, _ = post(server, bad)
        assert status == 200 and "type='terminate'" in text and "bad-request" in text, (bad, text)
    assert server.alive()


def test_unknown_sid_and_unknown_host(server):
    text = req(server, "0123456789abcdef", 5)
    assert "type='terminate'" in text and "item-not-found" in text
    _, text, _ = post(server, f"<body xmlns='{NS}' rid='1' to='elsewhere.example' wait='5' hold='1'/>")
    assert "host-unknown" in text
    # XEP-0124 §17.2: no `to` at all is improper addressing.
    _, text, _ = post(server, f"<body xmlns='{NS}' rid='1' wait='5' hold='1'/>")
    assert "type='terminate'" in text and "improper-addressing" in text, text


def test_login_restart_bind_and_a_repeated_rid_gets_the_same_answer(server):
    sid = create(server, 1000)
    first = req(server, sid, 1001, plain("alice", "alicepass"))
    assert "<success" in first, first
    # The same rid again (as after a lost response): the same answer, not a second login.
    assert req(server, sid, 1001, plain("alice", "alicepass")) == first
    # xmpp:restart is an xs:boolean: "1" restarts as "true" does (XEP-0206 §5).
    features = req(server, sid, 1002, xmpp_restart="1", to=server.domain)
    assert "urn:ietf:params:xml:ns:xmpp-bind" in features, features
    bound = req(server, sid, 1003, "<iq xmlns='jabber:client' type='set' id='b'>"
                "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>bosh</resource></bind></iq>")
    assert "alice@localhost/bosh" in bound, bound
    bye = req(server, sid, 1004, type="terminate")
    assert "type='terminate'" in bye
    # The session is gone afterwards.
    assert "item-not-found" in req(server, sid, 1005)


def test_a_rid_far_outside_the_window_terminates_the_session(server):
    sid = create(server, 50)
    text = req(server, sid, 5000)
    assert "type='terminate'" in text and "item-not-found" in text
    assert "item-not-found" in req(server, sid, 51)


def test_the_session_survives_a_lost_http_connection(server):
    sid = create(server, 10, wait=30)
    # A request held by the server, then its connection dropped by the client.
    s = socket.create_connection(("127.0.0.1", server.http_port))
    body = f"<body xmlns='{NS}' rid='11' sid='{sid}'/>".encode()
    s.sendall(b"POST /http-bind HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    s.close()
    # The client never got an answer to rid 11, so it sends it again (XEP-0124 §14.3) — held
    # if the server had read it, new if the connection was lost before it was read — and
    # the session goes on with the next rid, which sends the held one back.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        resent = pool.submit(req, server, sid, 11)
        assert "<success" in req(server, sid, 12, plain("alice", "alicepass"))
        assert "<body" in resent.result(timeout=10)


def test_cors_preflight_and_origins(server):
    own = f"http://127.0.0.1:{server.http_port}"
    c = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
    c.request("OPTIONS", "/http-bind", headers={
        "Origin": own, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    r = c.getresponse()
    r.read()
    assert r.status == 204
    assert r.getheader("Access-Control-Allow-Origin") == own
    assert "POST" in r.getheader("Access-Control-Allow-Methods")
    c.request("OPTIONS", "/http-bind", headers={"Origin": "https://evil.example"})
    r = c.getresponse()
    r.read()
    assert r.status == 403
    status, _, headers = post(server, f"<body xmlns='{NS}' rid='1' to='{server.domain}' wait='5' hold='1'/>",
                              headers={"Origin": own})
    assert status == 200 and headers.get("access-control-allow-origin") == own


def test_sessions_from_one_address_are_bounded(server_factory):
    srv = server_factory(http={"bosh_max_sessions_per_ip": 5})
    rss_before = srv.rss_kib()
    answers = []
    for i in range(200):
        _, text, _ = post(srv, f"<body xmlns='{NS}' rid='{i + 1}' to='{srv.domain}' wait='5' hold='1'/>")
        answers.append(text)
    assert sum("sid=" in a for a in answers) == 5
    assert sum("policy-violation" in a for a in answers) == 195
    assert srv.alive() and srv.rss_kib() < rss_before + 16 * 1024


def test_host_meta_names_both_endpoints(server_factory):
    import json  # noqa: PLC0415
    srv = server_factory()
    c = http.client.HTTPConnection("127.0.0.1", srv.http_port, timeout=10)
    c.request("GET", "/.well-known/host-meta")
    r = c.getresponse()
    xrd = r.read().decode()
    assert r.status == 200 and r.getheader("Access-Control-Allow-Origin") == "*"
    base = f"127.0.0.1:{srv.http_port}"
    assert f"href='ws://{base}/xmpp-websocket'" in xrd and f"href='http://{base}/http-bind'" in xrd
    c.request("GET", "/.well-known/host-meta.json")
    links = {link["rel"]: link["href"] for link in json.loads(c.getresponse().read())["links"]}
    assert links["urn:xmpp:alt-connections:xbosh"] == f"http://{base}/http-bind"
    # Behind a proxy the published URL is the configured one.
    srv2 = server_factory(http={"public_url": "https://chat.example.org"})
    c = http.client.HTTPConnection("127.0.0.1", srv2.http_port, timeout=10)
    c.request("GET", "/.well-known/host-meta.json")
    links = {link["rel"]: link["href"] for link in json.loads(c.getresponse().read())["links"]}
    assert links["urn:xmpp:alt-connections:websocket"] == "wss://chat.example.org/xmpp-websocket"
    # Behind a TLS proxy without a configured URL: the clients' scheme is the secure one
    # (XEP-0156 §3 allows only https:// and wss:// links).
    srv3 = server_factory(http={"behind_tls_proxy": True})
    c = http.client.HTTPConnection("127.0.0.1", srv3.http_port, timeout=10)
    c.request("GET", "/.well-known/host-meta.json", headers={"Host": "chat.example.org"})
    links = {link["rel"]: link["href"] for link in json.loads(c.getresponse().read())["links"]}
    assert links == {"urn:xmpp:alt-connections:websocket": "wss://chat.example.org/xmpp-websocket",
                     "urn:xmpp:alt-connections:xbosh": "https://chat.example.org/http-bind"}


def test_host_meta_warns_at_start_when_its_links_would_not_be_https(server_factory):
    """XEP-0156 §3 allows only https:// and wss:// links: an http `public_url`, or a proxy
    with no `public_url` (the links then follow each request's Host), is logged at start."""
    import time  # noqa: PLC0415

    def logged(srv, text: str) -> bool:
        deadline = time.monotonic() + 5
        while text not in srv.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        return text in srv.log()
    insecure = server_factory(http={"public_url": "http://chat.example.org"})
    assert logged(insecure, "public_url is not https")
    reflecting = server_factory(http={"behind_tls_proxy": True})
    assert logged(reflecting, "public_url is not set")
    secure = server_factory(http={"public_url": "https://chat.example.org"})
    assert logged(secure, "listening for web clients")
    assert "public_url is not" not in secure.log()


def test_forwarded_addresses_count_only_from_trusted_proxies(server_factory):
    def open_from(srv, forwarded_for: str) -> str:
        _, text, _ = post(srv, f"<body xmlns='{NS}' rid='1' to='{srv.domain}' wait='5' hold='1'/>",
                          headers={"X-Forwarded-For": forwarded_for})
        return text
    trusting = server_factory(http={"bosh_max_sessions_per_ip": 2, "trusted_proxies": ["127.0.0.1"]})
    answers = [open_from(trusting, "203.0.113.1") for _ in range(3)]
    assert ["sid=" in a for a in answers] == [True, True, False]
    assert "sid=" in open_from(trusting, "203.0.113.2")
    assert "too many from this address client=203.0.113.1:0" in trusting.log()
    # Without trust the header is ignored: everything counts for 127.0.0.1.
    plain = server_factory(http={"bosh_max_sessions_per_ip": 2})
    answers = [open_from(plain, f"203.0.113.{i}") for i in range(3)]
    assert ["sid=" in a for a in answers] == [True, True, False]


def test_https_listener_serves_with_the_server_certificate(server):
    import ssl  # noqa: PLC0415
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the test server's certificate is self-signed
    c = http.client.HTTPSConnection("127.0.0.1", server.https_port, timeout=10, context=ctx)
    c.request("GET", "/.well-known/host-meta.json")
    r = c.getresponse()
    body = r.read().decode()
    assert r.status == 200
    assert f"wss://127.0.0.1:{server.https_port}/xmpp-websocket" in body, body
    # BOSH over HTTPS: the stream counts as encrypted (PLAIN offered, no STARTTLS).
    c.request("POST", "/http-bind", body=f"<body xmlns='{NS}' rid='1' to='{server.domain}' "
              "wait='5' hold='1'/>", headers={"Content-Type": "text/xml"})
    text = c.getresponse().read().decode()
    assert ">PLAIN<" in text and "starttls" not in text, text


def test_an_empty_request_while_one_is_held_is_overactivity(server):
    """XEP-0124 §11: while the one request the session may hold is held, another empty
    request within `polling` seconds ends the session with `policy-violation`; a request
    with a payload at that moment is the normal case and goes through."""
    sid = create(server, 2000, wait=30)
    assert "<success" in req(server, sid, 2001, plain("alice", "alicepass"))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        held = pool.submit(req, server, sid, 2002)
        restart = req(server, sid, 2003, xmpp_restart="true", to=server.domain)
        assert "urn:ietf:params:xml:ns:xmpp-bind" in restart, restart
        assert "<body" in held.result(timeout=10)
        # Whichever of the two arrives first, the second finds the first held.
        held = pool.submit(req, server, sid, 2004)
        text = req(server, sid, 2005)
        assert "type='terminate'" in text and "policy-violation" in text, text
        held.result(timeout=10)
    assert "item-not-found" in req(server, sid, 2006)


async def test_a_request_resent_while_held_is_passed_on_once(server):
    """XEP-0124 §14.3: a client that gave up waiting sends the same rid again while the
    first copy is still held; the payload reached the stream with the first copy and must
    not a second time (bob gets the message once). The first copy is answered at once with
    a recoverable binding condition (`type='error'`), the answer goes to the latest copy."""
    bob = await slix_login(server, "bob", resource="b")
    loop = asyncio.get_running_loop()

    def bosh_alice() -> str:
        sid = create(server, 3000, wait=10)
        assert "<success" in req(server, sid, 3001, plain("alice", "alicepass"))
        req(server, sid, 3002, xmpp_restart="true", to=server.domain)
        bound = req(server, sid, 3003, "<iq xmlns='jabber:client' type='set' id='b'><bind "
                    "xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>bosh</resource></bind></iq>")
        assert "alice@localhost/bosh" in bound, bound
        return sid

    sid = await loop.run_in_executor(None, bosh_alice)
    message = (f"<message xmlns='jabber:client' to='{server.jid('bob', 'b')}' type='chat'>"
               "<body>only once</body></message>")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(req, server, sid, 3004, message)
        await bob.inbox.wait(lambda el: el.findtext("{jabber:client}body") == "only once", 10,
                             "the message")
        second = pool.submit(req, server, sid, 3004, message)
        await asyncio.sleep(1)
        assert first.done() and not second.done()
        release = await loop.run_in_executor(None, req, server, sid, 3005)
        answers = [f.result(timeout=15) for f in (first, second)]
    assert "type='error'" in answers[0], answers
    assert answers[1].startswith("<body") and "type=" not in answers[1], answers
    assert "<body" in release, release
    await asyncio.sleep(1)
    got = [el for el in bob.inbox.items if el.findtext("{jabber:client}body") == "only once"]
    assert len(got) == 1, got
    await bob.close()


def test_the_creation_response_states_the_terms(server):
    """XEP-0124 §7.1: the version is the lower of the client's and ours, every response
    carries the `Content-Type` the client asked for; XEP-0206 §5: stream restarts are
    advertised (`xmpp:restartlogic`)."""
    status, text, headers = post(
        server, f"<body xmlns='{NS}' rid='7000' to='{server.domain}' wait='5' hold='1' "
                f"ver='1.6' content='application/xml' xmpp:version='1.0' "
                f"xmlns:xmpp='urn:xmpp:xbosh'/>")
    assert status == 200 and "ver='1.6'" in text and "xmpp:restartlogic='true'" in text, text
    # `[http] bosh_inactivity_secs`, 60 by default.
    assert "inactivity='60'" in text, text
    assert {k.lower(): v for k, v in headers.items()}["content-type"] == "application/xml"
    sid = re.search(r"sid='([0-9a-f]+)'", text).group(1)
    _, _, headers = post(server, f"<body xmlns='{NS}' rid='7001' sid='{sid}'>"
                                 f"{plain('alice', 'alicepass')}</body>")
    assert {k.lower(): v for k, v in headers.items()}["content-type"] == "application/xml"


def bosh_login(srv, rid: int, wait: int, **attrs) -> str:
    """A BOSH session of alice, bound to resource `bosh`, whose next rid is `rid + 4`."""
    sid = create(srv, rid, wait=wait, **attrs)
    assert "<success" in req(srv, sid, rid + 1, plain("alice", "alicepass"))
    req(srv, sid, rid + 2, xmpp_restart="true", to=srv.domain)
    bound = req(srv, sid, rid + 3, "<iq xmlns='jabber:client' type='set' id='b'><bind "
                "xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>bosh</resource></bind></iq>")
    assert "alice@localhost/bosh" in bound, bound
    return sid


def bosh_available(srv, rid: int, wait: int) -> str:
    """`bosh_login` and available presence: alice's BOSH session, next rid `rid + 5`."""
    sid = bosh_login(srv, rid, wait)
    req(srv, sid, rid + 4, "<presence xmlns='jabber:client'/>")
    return sid


async def test_payloads_reach_the_stream_in_rid_order(server):
    """XEP-0124 §14.1: payloads are forwarded in `rid` order. A request with more stanzas
    than the window takes at once is still passing them when the next rid (sent a moment
    earlier, so it waits for its turn) is admitted: the next one's stanzas follow all of
    the first's, none in between."""
    bob = await slix_login(server, "bob", resource="b")
    loop = asyncio.get_running_loop()
    sid = await loop.run_in_executor(None, bosh_login, server, 4000, 2)

    def messages(tag: str) -> str:
        return "".join(f"<message xmlns='jabber:client' to='{server.jid('bob', 'b')}' "
                       f"type='chat'><body>{tag}{i}</body></message>" for i in range(8))

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        second = pool.submit(req, server, sid, 4005, messages("b"))
        await asyncio.sleep(0.2)
        first = pool.submit(req, server, sid, 4004, messages("a"))
        await bob.inbox.wait(lambda el: el.findtext("{jabber:client}body") == "b7", 10, "b7")
        first.result(timeout=10)
        second.result(timeout=10)
    got = [el.findtext("{jabber:client}body") for el in bob.inbox.items
           if (el.findtext("{jabber:client}body") or "")[:1] in ("a", "b")]
    assert got == [f"a{i}" for i in range(8)] + [f"b{i}" for i in range(8)], got
    await bob.close()


async def test_a_payload_is_delivered_whole_when_its_connection_drops(server):
    """A request carrying many stanzas, whose HTTP connection the client drops while they
    are being passed on (a phone changing networks): the server took the rid, so the client's resend
    (XEP-0124 §14.3) is answered without its payload being passed again — every stanza of the
    first copy must reach the stream, not only those that had fitted in before the drop."""
    bob = await slix_login(server, "bob", resource="b")
    loop = asyncio.get_running_loop()
    sid = await loop.run_in_executor(None, bosh_login, server, 5000, 5)
    n = 2000
    payload = "".join(f"<message xmlns='jabber:client' to='{server.jid('bob', 'b')}' "
                      f"type='chat'><body>drop{i}</body></message>" for i in range(n))
    body = f"<body xmlns='{NS}' rid='5004' sid='{sid}'>{payload}</body>".encode()
    s = socket.create_connection(("127.0.0.1", server.http_port))
    s.sendall(b"POST /http-bind HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
              b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    # Dropped once the stanzas are flowing.
    await bob.inbox.wait(lambda el: el.findtext("{jabber:client}body") == "drop0", 10,
                         "the first message")
    s.close()
    await asyncio.sleep(0.5)
    # The resend gets the request's answer; then the session goes on.
    await loop.run_in_executor(None, req, server, sid, 5004, payload)
    await loop.run_in_executor(None, req, server, sid, 5005)
    await bob.inbox.wait(lambda el: el.findtext("{jabber:client}body") == f"drop{n - 1}", 10,
                         "the last message")
    await asyncio.sleep(0.5)
    got = [el.findtext("{jabber:client}body") for el in bob.inbox.items
           if (el.findtext("{jabber:client}body") or "").startswith("drop")]
    assert got == [f"drop{i}" for i in range(n)], got
    await bob.close()


def test_responses_carry_ack_when_the_client_asked(server):
    """XEP-0124 §9.1: with `ack='1'` at creation, a response carries `ack`, the highest rid
    received with all before it, unless that is the rid it answers: a held request answered
    because a later one arrived acknowledges the later one."""
    sid = create(server, 5000, wait=30, ack="1")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        held = pool.submit(req, server, sid, 5001)
        time.sleep(0.3)
        login = req(server, sid, 5002, plain("alice", "alicepass"))
        released = held.result(timeout=10)
    assert "ack='5002'" in released, released
    assert "<success" in login and "ack=" not in login, login


def test_wait_zero_is_granted(server):
    """XEP-0124 §7.1: the response's `wait` is at most the request's, and 0 asks for
    immediate answers."""
    started = time.monotonic()
    _, text, _ = post(server, f"<body xmlns='{NS}' rid='6000' to='{server.domain}' wait='0' "
                              f"hold='1' ver='1.6' xmpp:version='1.0' xmlns:xmpp='urn:xmpp:xbosh'/>")
    assert "wait='0'" in text, text
    assert time.monotonic() - started < 1, time.monotonic() - started
    sid = re.search(r"sid='([0-9a-f]+)'", text).group(1)
    # With nothing to send, a request is answered at once, not after a second. (A client
    # polling again after an empty answer waits `polling` seconds first, XEP-0124 §12.)
    for rid in (6001, 6002):
        started = time.monotonic()
        text += req(server, sid, rid)
        assert time.monotonic() - started < 1, time.monotonic() - started
        if "<stream:features" in text:
            break
        time.sleep(2.1)
    assert "<stream:features" in text, text


async def test_sessions_are_measured_by_their_transport(server):
    """`rookery_sessions{transport}` counts each session under its own transport: a BOSH
    session is not a TCP one (docs/operations.md, metrics)."""
    from test_admin import metrics, value
    tcp = await server.login("bob", "tcp")
    sid = create(server, 2000)
    assert "<success" in req(server, sid, 2001, plain("alice", "alicepass"))
    req(server, sid, 2002, xmpp_restart="true", to=server.domain)
    bound = req(server, sid, 2003, "<iq xmlns='jabber:client' type='set' id='b'>"
                "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>web</resource></bind></iq>")
    assert "alice@localhost/web" in bound, bound
    m = metrics(server)
    assert value(m, "rookery_sessions", transport="tcp") == 1
    assert value(m, "rookery_sessions", transport="bosh") == 1
    assert value(m, "rookery_sessions", transport="websocket") == 0
    req(server, sid, 2004, type="terminate")
    await tcp.close()


async def test_stanzas_waiting_for_a_client_that_stopped_polling_are_routed_again(server_factory):
    """A BOSH client that stops sending requests (a closed browser tab) without
    `type='terminate'`: what waits for it in the session's window when `inactivity` ends
    the session is routed again as a TCP session's undelivered stanzas are (XEP-0206 §7,
    RFC 6121 §8.5.3.2.1): the messages go to offline storage and reach alice's next login
    with a `<delay/>`, and the IQ request gets `service-unavailable` — nothing is dropped
    silently. `inactivity` is `[http] bosh_inactivity_secs`, short here."""
    server = server_factory(http={"bosh_inactivity_secs": 3})
    _, text, _ = post(server, f"<body xmlns='{NS}' rid='1' to='{server.domain}' wait='5' hold='1'/>")
    assert "inactivity='3'" in text, text
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, bosh_available, server, 8000, 2)
    bob = await server.login("bob", "b")
    bob.message(server.jid("alice"), "to the bare jid")
    bob.message(server.jid("alice", "bosh"), "to the resource")
    bob.send(f"<iq type='get' id='ping1' to='{server.jid('alice', 'bosh')}'>"
             "<ping xmlns='urn:xmpp:ping'/></iq>")
    await bob.flush()
    # `inactivity` is 3 s after the last answer (XEP-0124 §7.1).
    err = await bob.expect(lambda el: el.get("id") == "ping1", 20, "the ping's error")
    assert err.get("type") == "error" and err.find(
        "{jabber:client}error/{urn:ietf:params:xml:ns:xmpp-stanzas}service-unavailable"
    ) is not None, ET.tostring(err)
    alice = await slix_login(server, "alice", resource="later", presence=True)
    for body in ("to the bare jid", "to the resource"):
        got = await alice.inbox.wait(lambda el, b=body: el.findtext("{jabber:client}body") == b,
                                     10, body)
        assert got.find("{urn:xmpp:delay}delay") is not None, ET.tostring(got)
    await alice.close()
    await bob.close()


def test_a_bad_rid_on_a_live_session_ends_it(server):
    """XEP-0124 §17.2: a terminal condition ends the session. A request naming a live
    session with an unusable `rid` is answered `bad-request` — and the session is gone (its
    sid unknown from then on), not left running, bound, until `inactivity`."""
    sid = bosh_login(server, 9000, 2)
    req(server, sid, 9004, "<presence xmlns='jabber:client'/>")
    status, text, _ = post(server, f"<body xmlns='{NS}' rid='x' sid='{sid}'/>")
    assert status == 200 and "type='terminate'" in text and "bad-request" in text, text
    assert "item-not-found" in req(server, sid, 9005)


def test_stanzas_in_a_restart_request_are_ignored(server):
    """XEP-0206 §5: the restart request SHOULD be empty, and the connection manager SHOULD
    ignore a stanza in it (Strophe puts what it has queued there): the restart answers with
    the stream features, and the session goes on."""
    sid = create(server, 9100)
    assert "<success" in req(server, sid, 9101, plain("alice", "alicepass"))
    features = req(server, sid, 9102, "<message xmlns='jabber:client' to='bob@localhost'>"
                   "<body>early</body></message>", xmpp_restart="true", to=server.domain)
    assert "urn:ietf:params:xml:ns:xmpp-bind" in features and "terminate" not in features, features
    bound = req(server, sid, 9103, "<iq xmlns='jabber:client' type='set' id='b'><bind "
                "xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>bosh</resource></bind></iq>")
    assert "alice@localhost/bosh" in bound, bound


def test_polling_sessions_follow_the_polling_rule(server):
    """XEP-0124 §12, for sessions that poll (`hold` or `wait` 0): two consecutive empty new
    requests within `polling` seconds, the first answered empty, end the session with
    `policy-violation` — and nothing else does: an empty poll right after a request that
    carried something is the normal case."""
    def open_session(rid: int, wait: int, hold: int) -> str:
        _, text, _ = post(server, f"<body xmlns='{NS}' rid='{rid}' to='{server.domain}' "
                                  f"wait='{wait}' hold='{hold}' ver='1.6'/>")
        sid = re.search(r"sid='([0-9a-f]+)'", text).group(1)
        # Polled at the allowed pace until the stream features are in.
        while "<stream:features" not in text:
            time.sleep(2.1)
            rid += 1
            text = req(server, sid, rid)
        return sid, rid + 1

    # hold='0': a request with a payload is answered at once (empty), the poll after it
    # is no violation.
    sid, rid = open_session(9300, 5, 0)
    req(server, sid, rid, plain("alice", "alicepass"))
    time.sleep(0.3)
    text = req(server, sid, rid + 1)
    assert "type='terminate'" not in text, text
    # wait='0': a tight loop of empty polls is one.
    sid, rid = open_session(9400, 0, 1)
    time.sleep(2.1)
    answers = [req(server, sid, rid + i) for i in range(3)]
    assert "policy-violation" in answers[-1] or "policy-violation" in answers[-2], answers


async def test_shutdown_does_not_wait_for_an_idle_bosh_session(server):
    """An idle BOSH session (no request held) at SIGTERM: nobody can pick up its
    `system-shutdown` once the HTTP listener drained, so the shutdown does not wait for its
    `inactivity` (60 s) — and what waited for it in the window is stored offline, as a TCP
    session's queue is (XEP-0206 §7)."""
    import signal  # noqa: PLC0415
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, bosh_available, server, 9200, 1)
    bob = await server.login("bob", "b")
    bob.message(server.jid("alice", "bosh"), "before the shutdown")
    await bob.flush()
    await asyncio.sleep(0.5)
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    assert await loop.run_in_executor(None, server.wait, 20) == 0
    assert time.monotonic() - started < 15, time.monotonic() - started
    server.start()
    alice = await slix_login(server, "alice", resource="later", presence=True)
    got = await alice.inbox.wait(
        lambda el: el.findtext("{jabber:client}body") == "before the shutdown", 10, "the message")
    assert got.find("{urn:xmpp:delay}delay") is not None, ET.tostring(got)
    await alice.close()


async def test_a_body_of_several_large_stanzas_passes_and_an_oversized_one_is_a_bosh_answer(server):
    """The body limit bounds a whole `<body/>` of several stanzas, each within the stanza
    limit (a client sends what it queued in one body, as it would on TCP). A body over it is
    answered as BOSH answers (XEP-0124 §17.1: no HTTP error codes to a non-legacy client):
    HTTP 200, `type='terminate' condition='policy-violation'`, CORS headers kept."""
    bob = await server.login("bob", "b")
    loop = asyncio.get_running_loop()
    sid = await loop.run_in_executor(None, bosh_login, server, 9500, 2)
    big = "x" * 150_000
    payload = "".join(f"<message xmlns='jabber:client' to='{server.jid('bob', 'b')}' type='chat'>"
                      f"<body>{tag}{big}</body></message>" for tag in ("one", "two"))
    await loop.run_in_executor(None, req, server, sid, 9504, payload)
    for tag in ("one", "two"):
        await bob.expect(lambda el, t=tag: (el.findtext("{jabber:client}body") or "").startswith(t),
                         10, tag)
    own = f"http://127.0.0.1:{server.http_port}"
    huge = f"<body xmlns='{NS}' rid='9505' sid='{sid}'>" + payload * 8 + "</body>"
    status, text, headers = await loop.run_in_executor(None, lambda: post(server, huge, {"Origin": own}))
    assert status == 200 and "type='terminate'" in text and "policy-violation" in text, (status, text)
    assert {k.lower(): v for k, v in headers.items()}.get("access-control-allow-origin") == own
    await bob.close()


def test_from_and_authid_come_as_soon_as_known(server):
    """XEP-0124 §7.1: the creation response SHOULD carry `from`; XEP-0206 §4: `authid` goes
    out in a response as soon as it is available — with `hold='0'` the creation response
    comes before the stream header, and `authid` follows with a later response."""
    _, text, _ = post(server, f"<body xmlns='{NS}' rid='9600' to='{server.domain}' wait='5' "
                              f"hold='0' ver='1.6'/>")
    assert f"from='{server.domain}'" in text, text
    sid = re.search(r"sid='([0-9a-f]+)'", text).group(1)
    seen, rid = text, 9600
    while "<stream:features" not in seen:
        time.sleep(2.1)
        rid += 1
        seen += req(server, sid, rid)
    assert re.search(r"authid='[0-9a-f]+'", seen), seen


def raw_post(s: socket.socket, body: str, headers: str = "") -> tuple[dict, str]:
    """POSTs `body` on the open connection `s` (with `headers`, lines ending in CRLF) and
    reads the response as its head frames it: (header fields, body). XEP-0124 §5: a
    `Content-Length`, no chunked transfer coding."""
    data = body.encode()
    host, port = s.getpeername()
    s.sendall(f"POST /http-bind HTTP/1.1\r\nHost: {host}:{port}\r\n"
              f"Content-Type: text/xml; charset=utf-8\r\n{headers}"
              f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = s.recv(65536)
        assert chunk, got
        got += chunk
    head, rest = got.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    assert lines[0].startswith("HTTP/1.1 200"), head
    fields = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    assert "transfer-encoding" not in fields and "content-length" in fields, head
    length = int(fields["content-length"])
    while len(rest) < length:
        chunk = s.recv(65536)
        assert chunk, (head, rest)
        rest += chunk
    # Nothing beyond the stated length: the connection is at the next response's start.
    assert len(rest) == length, (head, rest)
    return fields, rest.decode()


async def test_responses_state_their_length_and_are_not_chunked(server):
    """XEP-0124 §5: the connection manager SHOULD NOT use chunked transfer coding. Every
    answer — the creation response, a held request answered when a stanza comes, the
    terminate — states its `Content-Length`, on connections the client keeps alive for its
    next requests; a page's answers keep their CORS header."""
    own = f"http://127.0.0.1:{server.http_port}"
    cors = f"Origin: {own}\r\n"
    loop = asyncio.get_running_loop()
    a = socket.create_connection(("127.0.0.1", server.http_port), timeout=15)
    b = socket.create_connection(("127.0.0.1", server.http_port), timeout=15)

    def on(s: socket.socket, rid: int, payload: str = "", attrs: str = "") -> str:
        fields, text = raw_post(s, f"<body xmlns='{NS}' rid='{rid}' sid='{sid}' "
                                   f"xmlns:xmpp='urn:xmpp:xbosh'{attrs}>{payload}</body>", cors)
        assert fields.get("connection") != "close", fields
        assert fields.get("access-control-allow-origin") == own, fields
        return text

    fields, text = raw_post(a, f"<body xmlns='{NS}' rid='100' to='{server.domain}' wait='10' "
                               f"hold='1' ver='1.6' xmpp:version='1.0' "
                               f"xmlns:xmpp='urn:xmpp:xbosh'/>", cors)
    assert "sid=" in text and fields["content-type"].startswith("text/xml"), (fields, text)
    assert fields.get("access-control-allow-origin") == own, fields
    sid = re.search(r"sid='([0-9a-f]+)'", text).group(1)
    # The same connection, kept alive, for the whole login.
    assert "<success" in on(a, 101, plain("alice", "alicepass"))
    assert "xmpp-bind" in on(a, 102, attrs=f" xmpp:restart='true' to='{server.domain}'")
    bound = on(a, 103, "<iq xmlns='jabber:client' type='set' id='b'><bind "
               "xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>bosh</resource></bind></iq>")
    assert "alice@localhost/bosh" in bound, bound
    on(a, 104, "<presence xmlns='jabber:client'/>")
    bob = await server.login("bob", "b")
    # Held on the other connection until bob's message comes.
    held = loop.run_in_executor(None, on, b, 105)
    await asyncio.sleep(0.5)
    bob.message(server.jid("alice", "bosh"), "for the held request")
    await bob.flush()
    text = await asyncio.wait_for(held, 15)
    assert "for the held request" in text, text
    bye = await loop.run_in_executor(None, lambda: on(a, 106, attrs=" type='terminate'"))
    assert "type='terminate'" in bye, bye
    a.close()
    b.close()
    await bob.close()
