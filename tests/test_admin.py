"""The admin listener (`[listen] admin`): health and readiness, Prometheus metrics checked by
the Python `prometheus_client` OpenMetrics parser after a known workload, the REST admin API
(bearer token, users, sessions, kick, announce) and `rookery ctl` against the running server."""
import asyncio
import json
import urllib.error
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families

from slix import slix_login
from test_sm import NS_SM, enable, resume
from xmpp_raw import NS_CLIENT, SaslFailure, local, tag

BODY = f"{{{NS_CLIENT}}}body"


def http(srv, method: str, path: str, body=None, token: str | None = "server"):
    """One request to the admin listener: (status, headers, parsed JSON or text). `token`
    "server" sends the server's own token, None sends none."""
    if token == "server":
        token = srv.admin_token()
    req = urllib.request.Request(f"http://127.0.0.1:{srv.admin_port}{path}", method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, data, timeout=10) as r:
            status, headers, raw = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, headers, raw = e.code, e.headers, e.read()
    text = raw.decode()
    if headers.get("Content-Type", "").startswith("application/json") and text:
        return status, headers, json.loads(text)
    return status, headers, text


def metrics(srv) -> dict:
    """Every sample of /metrics, parsed by prometheus_client's OpenMetrics parser:
    {(sample name, frozenset of labels): value}."""
    status, headers, text = http(srv, "GET", "/metrics", token=None)
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples[(name, frozenset(labels.items()))]


async def metric_reaches(srv, name: str, target: float, timeout: float = 10.0, **labels):
    """Waits until a counter counted by another task (after the client saw the effect)
    reaches `target`; returns every sample then."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        m = metrics(srv)
        if value(m, name, **labels) >= target or asyncio.get_running_loop().time() > deadline:
            return m
        await asyncio.sleep(0.05)


async def test_health_and_ready(server):
    status, _, h = http(server, "GET", "/health", token=None)
    assert status == 200
    assert h["status"] == "ok" and h["pid"] == server.pid and h["version"]
    assert h["uptime_secs"] >= 0 and h["connections"]["c2s"] == 0
    c = await server.login("alice", "a")
    try:
        status, _, r = http(server, "GET", "/ready", token=None)
        assert status == 200
        assert r["status"] == "ok" and r["store"] is True and r["listeners"] is True
        assert r["connections"] == {"c2s": 1, "s2s_incoming": 0, "s2s_outgoing": 0,
                                    "components": 0}
    finally:
        await c.close()


async def test_metrics_after_a_known_workload(server):
    clients = [await server.login(u, "m") for u in ("alice", "bob", "carol")]
    bad = server.client()
    await bad.negotiate_tls()
    try:
        await bad.auth("alice", "wrong")
        raise AssertionError("a wrong password was accepted")
    except SaslFailure:
        pass
    finally:
        bad.abort()
    alice, bob, carol = clients
    alice.message(server.jid("bob", "m"), "hello")
    await bob.expect(lambda e: local(e) == "message" and e.findtext(BODY) == "hello")
    await carol.close()
    # A message for an account without sessions is stored, and delivered at its next login.
    alice.message(server.jid("carol"), "while you were away")
    await alice.iq("get", server.domain, "<ping xmlns='urn:xmpp:ping'/>")
    carol = await server.login("carol", "again")
    await carol.presence()
    await carol.expect(lambda e: local(e) == "message"
                       and e.findtext(BODY) == "while you were away")
    try:
        # The delivering task counts a message once queued, which may be after carol read it.
        m = await metric_reaches(server, "rookery_offline_delivered_total", 1)
        assert value(m, "rookery_logins_total", mechanism="SCRAM-SHA-1", result="success") == 4
        assert value(m, "rookery_logins_total", mechanism="SCRAM-SHA-1", result="failure") == 1
        assert value(m, "rookery_sessions", transport="tcp") == 3
        assert value(m, "rookery_stanzas_routed_total", kind="message") >= 2
        assert value(m, "rookery_stanzas_routed_total", kind="iq") >= 1  # the ping
        routed = sum(value(m, "rookery_stanzas_routed_total", kind=k)
                     for k in ("message", "presence", "iq"))
        # A stanza is counted when it enters the router and timed when it leaves it.
        timed = value(m, "rookery_routing_duration_seconds_count")
        assert 0 < timed <= routed
        assert value(m, "rookery_routing_duration_seconds_bucket", le="+Inf") == timed
        assert value(m, "rookery_offline_stored_total") == 1
        assert value(m, "rookery_offline_delivered_total") == 1
        assert value(m, "rookery_queue_overflows_total") == 0
        [build] = [dict(labels) for name, labels in m if name == "rookery_build_info"]
        assert build["version"] and value(m, "rookery_build_info", **build) == 1
        assert value(m, "process_resident_memory_bytes") > 1_000_000
        assert value(m, "process_open_fds") > 3
        assert value(m, "process_cpu_seconds_total") > 0
    finally:
        for c in (alice, bob, carol):
            await c.close()


async def test_api_needs_the_token(server):
    status, headers, body = http(server, "GET", "/api/v1/users", token=None)
    assert status == 401 and headers["WWW-Authenticate"] == "Bearer" and "error" in body
    status, headers, _ = http(server, "GET", "/api/v1/users", token="wrong")
    # RFC 6750 §3: a token was given and is not valid.
    assert status == 401 and headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert http(server, "GET", "/api/v1/users", token=server.admin_token() + "x")[0] == 401
    # Every error has the JSON body docs/openapi.yaml promises; unknown routes are behind the
    # token too (no probing of route names without it).
    status, _, body = http(server, "GET", "/api/v1/nope")
    assert status == 404 and "error" in body
    status, _, body = http(server, "GET", "/api/v1/announce")
    assert status == 405 and "error" in body
    # A path segment that is not UTF-8 once decoded: 400 with the JSON body too.
    status, _, body = http(server, "DELETE", "/api/v1/users/%FF")
    assert status == 400 and "error" in body, body
    # A body over the listener's limit (64 KiB): 413, the JSON body too, with or without
    # the token (`ctl announce` of a long text prints the message).
    for token in ("server", None):
        status, headers, body = http(server, "POST", "/api/v1/announce",
                                     {"body": "x" * 70000}, token=token)
        assert status == 413 and headers["Content-Type"] == "application/json", body
        assert "65536 bytes" in body["error"], body
    assert http(server, "GET", "/api/v1/nope", token=None)[0] == 401
    assert http(server, "POST", "/api/v1/users", {"username": "mallory", "password": "x"},
                token=None)[0] == 401
    status, _, body = http(server, "GET", "/api/v1/users")
    assert status == 200 and "mallory@localhost" not in body["users"]


def test_token_file_is_private(server):
    assert (server.data_dir / "admin.token").stat().st_mode & 0o777 == 0o600
    assert len(server.admin_token()) == 64


async def test_api_users(server):
    status, _, body = http(server, "GET", "/api/v1/users")
    assert status == 200
    assert body["users"] == ["alice@localhost", "bob@localhost", "carol@localhost"]
    status, _, body = http(server, "POST", "/api/v1/users", {"username": "dave", "password": "d1"})
    assert status == 201 and body["jid"] == "dave@localhost"
    assert http(server, "POST", "/api/v1/users", {"username": "dave", "password": "x"})[0] == 409
    assert http(server, "POST", "/api/v1/users", {"username": "a b@c", "password": "x"})[0] == 400
    c = await server.login("dave", "r", password="d1")
    await c.close()
    assert http(server, "PUT", "/api/v1/users/dave@localhost/password", {"password": "d2"})[0] == 204
    c = await server.login("dave", "r", password="d2")
    # Deleting an account closes its sessions (as in-band removal does).
    assert http(server, "DELETE", "/api/v1/users/dave")[0] == 204
    assert await c.stream_error() == "not-authorized"
    assert http(server, "DELETE", "/api/v1/users/dave")[0] == 404
    assert http(server, "PUT", "/api/v1/users/nobody/password", {"password": "x"})[0] == 404
    _, _, stats = http(server, "GET", "/api/v1/stats")
    assert stats["users"] == 3 and stats["domain"] == "localhost"


async def test_kick_sends_the_stream_error_with_the_reason(server):
    alice = await slix_login(server, "alice", resource="kickme")
    texts = []
    alice.add_event_handler("stream_error", lambda e: texts.append(e["text"]))
    try:
        status, _, _ = http(server, "DELETE",
                            "/api/v1/sessions/alice@localhost/kickme?reason=spamming%20rooms")
        assert status == 204
        for _ in range(100):
            if alice.stream_errors:
                break
            await asyncio.sleep(0.05)
        assert alice.stream_errors == ["policy-violation"]
        assert texts == ["spamming rooms"]
        assert http(server, "DELETE", "/api/v1/sessions/alice@localhost/kickme")[0] == 404
        assert http(server, "DELETE", "/api/v1/sessions/alice@localhost")[0] == 400
    finally:
        await alice.close()


async def test_ctl_against_the_running_server(server):
    c = await server.login("alice", "desk")
    try:
        r = server.ctl("status")
        assert r.returncode == 0, r.stderr
        assert "client sessions  1" in r.stdout and "accounts         3" in r.stdout
        r = server.ctl("--json", "status")
        assert json.loads(r.stdout)["connections"]["c2s"] == 1
        r = server.ctl("users", "add", "erin", input="erinpass\n")
        assert r.returncode == 0 and "created erin@localhost" in r.stdout, r.stderr
        r = server.ctl("users", "list")
        assert r.stdout.split() == ["JID", "alice@localhost", "bob@localhost",
                                    "carol@localhost", "erin@localhost"]
        r = server.ctl("kick", "alice@localhost/desk", "--reason", "maintenance")
        assert r.returncode == 0, r.stderr
        assert await c.stream_error() == "policy-violation"
        r = server.ctl("kick", "alice@localhost/desk")
        assert r.returncode != 0 and "not found" in r.stderr
    finally:
        c.abort()


def test_ctl_with_a_wrong_token(server):
    (server.data_dir / "admin.token").write_text("not-the-token\n")
    r = server.ctl("status")
    assert r.returncode != 0 and "bearer token" in r.stderr


CAPS = "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='https://example.org/tc' ver='QgayPKawpkPSDYmwT/WM94uAlu0='/>"


async def test_session_list(server):
    a = await server.login("alice", "desk")
    a.send(f"<presence>{CAPS}</presence>")
    await a.iq("get", server.domain, "<ping xmlns='urn:xmpp:ping'/>")
    b = await slix_login(server, "bob", resource="phone")
    try:
        status, _, body = http(server, "GET", "/api/v1/sessions")
        assert status == 200
        assert body["sessions"] == [
            {"jid": "alice@localhost/desk", "resource": "desk", "ip": "127.0.0.1",
             "transport": "tcp", "client": "https://example.org/tc"},
            {"jid": "bob@localhost/phone", "resource": "phone", "ip": "127.0.0.1",
             "transport": "tcp", "client": None},
        ]
        assert http(server, "GET", "/api/v1/sessions", token=None)[0] == 401
        r = server.ctl("sessions")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0].split() == ["JID", "IP", "TRANSPORT", "CLIENT"]
        assert lines[1].split() == ["alice@localhost/desk", "127.0.0.1", "tcp",
                                    "https://example.org/tc"]
        assert lines[2].split() == ["bob@localhost/phone", "127.0.0.1", "tcp", "-"]
        r = server.ctl("--json", "sessions")
        assert [s["jid"] for s in json.loads(r.stdout)["sessions"]] == [
            "alice@localhost/desk", "bob@localhost/phone"]
    finally:
        await a.close()
        await b.close()


def is_announcement(body):
    return lambda e: local(e) == "message" and e.findtext(BODY) == body


async def test_announce_reaches_every_online_session(server):
    slix = [await slix_login(server, u, resource="s", presence=True) for u in ("alice", "bob")]
    raw = await server.login("carol", "r")          # bound, no presence sent
    raw2 = await server.login("alice", "second")
    try:
        status, _, body = http(server, "POST", "/api/v1/announce",
                               {"body": "Restart at 22:00", "subject": "Maintenance"})
        assert status == 200 and body == {"sent": 4}
        for c in slix:
            m = await c.inbox.wait(is_announcement("Restart at 22:00"), what="the announcement")
            assert m.get("from") == "localhost" and m.get("type") == "normal"
            assert m.findtext(f"{{{NS_CLIENT}}}subject") == "Maintenance"
        for c in (raw, raw2):
            m = await c.expect(is_announcement("Restart at 22:00"))
            assert m.get("from") == "localhost" and m.get("to") == c.jid
        r = server.ctl("announce", "second notice")
        assert r.returncode == 0 and "sent to 4 sessions" in r.stdout, r.stderr
        for c in slix:
            await c.inbox.wait(is_announcement("second notice"), what="the ctl announcement")
        for c in (raw, raw2):
            await c.expect(is_announcement("second notice"))
        assert http(server, "POST", "/api/v1/announce", {"body": " "})[0] == 400
        # A character XML cannot carry (here from a file of the operator's) goes out as
        # U+FFFD: the streams it reaches stay well-formed (RFC 6120 §11.1).
        assert http(server, "POST", "/api/v1/announce", {"body": "bell\u0007"})[0] == 200
        for c in slix:
            await c.inbox.wait(is_announcement("bell\ufffd"), what="the sanitized announcement")
            await c.plugin["xep_0199"].send_ping(server.domain, timeout=10)
        await raw.expect(is_announcement("bell\ufffd"))
    finally:
        for c in slix:
            await c.close()
        for c in (raw, raw2):
            await c.close()


async def test_metrics_count_hibernation_and_resumption(server):
    c = await server.login("alice", "phone")
    _, enabled = await enable(c)
    c.abort()
    m = await metric_reaches(server, "rookery_sm_hibernations_total", 1)
    assert value(m, "rookery_sm_hibernations_total") == 1
    assert value(m, "rookery_sm_resumes_total") == 0
    assert value(m, "rookery_sessions", transport="tcp") == 1   # still bound while hibernating
    c2, answer = await resume(server, "alice", enabled.get("id"), 0)
    try:
        assert answer.tag == tag(NS_SM, "resumed")
        m = await metric_reaches(server, "rookery_sm_resumes_total", 1)
        assert value(m, "rookery_sm_resumes_total") == 1
    finally:
        await c2.close()
