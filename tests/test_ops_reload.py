"""Reload without drops (SIGHUP, `rookery ctl reload`, `POST /api/v1/reload`): a renewed
certificate serves new TLS handshakes while every connected session stays; a broken
configuration or certificate is refused, the running one kept, one error logged."""
from __future__ import annotations

import asyncio
import hashlib
import signal
import ssl
import subprocess
import time

from test_admin import http, metrics, value

# Sessions held through the reload (the 500; about 15 s on a debug build).
SESSIONS = 500
# Logins at once while connecting them.
BATCH = 50


def new_cert(srv, name: str = "cert") -> tuple[str, str]:
    """A new self-signed certificate for the server's domain in the work directory:
    (cert path, key path)."""
    cert, key = srv.workdir / f"{name}.pem", srv.workdir / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "30", "-subj", f"/CN={srv.domain}",
         "-addext", f"subjectAltName=DNS:{srv.domain}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30)
    return str(cert), str(key)


def pem_sha256(path) -> str:
    der = ssl.PEM_cert_to_DER_cert(open(path).read())
    return hashlib.sha256(der).hexdigest()


async def served_sha256(srv) -> str:
    """The fingerprint of the certificate a new direct-TLS connection is shown."""
    c = srv.client(direct_tls=True)
    await c.connect()
    der = c.ssl_object().getpeercert(binary_form=True)
    c.writer.close()
    return hashlib.sha256(der).hexdigest()


def write_config(srv, **changes):
    """Rewrites the server's config file with `changes` merged into its sections."""
    from conftest import _merge, to_toml
    srv.config = _merge(srv.config, changes)
    srv.config_path.write_text(to_toml(srv.config))


def wait_log(srv, text: str, count: int = 1, timeout: float = 10.0):
    """Waits until the server log holds `text` `count` times (the reload is logged after a
    signal, asynchronously)."""
    end = time.monotonic() + timeout
    while srv.log().count(text) < count:
        assert time.monotonic() < end, f"{text!r} not logged {count} times"
        time.sleep(0.05)


async def connect_sessions(srv, n: int) -> list:
    clients = []
    for start in range(0, n, BATCH):
        batch = await asyncio.gather(*(
            srv.login("alice", f"r{i}", direct_tls=True)
            for i in range(start, min(n, start + BATCH))))
        clients.extend(batch)
    return clients


async def all_answer(clients: list):
    """Every session still answers a ping from the server's domain."""
    replies = await asyncio.gather(*(
        c.iq("get", None, "<ping xmlns='urn:xmpp:ping'/>") for c in clients))
    assert all(r.get("type") == "result" for r in replies)


async def test_sighup_serves_a_new_certificate_and_drops_no_session(server_factory):
    srv = server_factory()
    cert, key = new_cert(srv)
    old = await served_sha256(srv)
    assert old != pem_sha256(cert)
    clients = await connect_sessions(srv, SESSIONS)
    assert http(srv, "GET", "/api/v1/stats")[2]["connections"]["c2s"] == SESSIONS
    write_config(srv, tls={"cert": cert, "key": key}, log={"level": "debug"})
    srv.signal(signal.SIGHUP)
    wait_log(srv, "configuration reloaded")
    assert await served_sha256(srv) == pem_sha256(cert)
    await all_answer(clients)
    assert http(srv, "GET", "/api/v1/stats")[2]["connections"]["c2s"] == SESSIONS
    # The new log level is live: a new connection is logged at debug level.
    await served_sha256(srv)
    wait_log(srv, "accepted")
    for c in clients:
        c.writer.close()


async def test_a_broken_config_or_certificate_is_refused_and_the_old_one_kept(server_factory):
    srv = server_factory()
    old = await served_sha256(srv)
    alice = await srv.login("alice", "a")
    good = srv.config_path.read_text()

    srv.config_path.write_text(good + "\nnot toml [\n")
    srv.signal(signal.SIGHUP)
    wait_log(srv, "configuration not reloaded")
    assert srv.log().count("configuration not reloaded") == 1
    # (`rookery ctl` reads the same file to find the server: the API is asked directly.)
    status, _, body = http(srv, "POST", "/api/v1/reload")
    assert status == 422 and body["error"].startswith("parsing"), body
    assert srv.log().count("configuration not reloaded") == 2

    # A key that is not the certificate's.
    cert, _ = new_cert(srv, "a")
    _, other_key = new_cert(srv, "b")
    srv.config_path.write_text(good)
    write_config(srv, tls={"cert": cert, "key": other_key})
    status, _, body = http(srv, "POST", "/api/v1/reload")
    assert status == 422 and "certificate" in body["error"], body

    # Still serving, with the old certificate, the session untouched.
    assert await served_sha256(srv) == old
    await all_answer([alice])
    bob = await srv.login("bob", "b")
    await bob.close()

    # Fixed: `ctl reload` applies it and says so.
    srv.config_path.write_text(good)
    r = srv.ctl("--json", "reload")
    assert r.returncode == 0, r.stderr
    assert '"restart_needed": []' in r.stdout, r.stdout
    m = metrics(srv)
    assert value(m, "rookery_reloads_total", result="failure") == 3
    assert value(m, "rookery_reloads_total", result="success") == 1


async def test_reload_adds_and_removes_components_and_names_what_needs_a_restart(
        server_factory):
    from conftest import free_port
    port = free_port()
    bot = {"domain": "bot.localhost", "secret": "s1"}
    srv = server_factory(component={"listen": f"127.0.0.1:{port}", "service": [bot]})
    gw = {"domain": "gw.localhost", "secret": "s2"}
    write_config(srv, component={"service": [gw]}, c2s={"max_stanza_bytes": 100000})
    status, _, body = http(srv, "POST", "/api/v1/reload")
    assert status == 200, body
    assert body["components_added"] == ["gw.localhost"]
    assert body["components_removed"] == ["bot.localhost"]
    assert body["restart_needed"] == ["[c2s]"]
    alice = await srv.login("alice", "a")
    # The removed component's domain is no longer served: remote (no federation here).
    r = await alice.iq("get", "bot.localhost", "<ping xmlns='urn:xmpp:ping'/>")
    assert r.get("type") == "error"
    # The added one is routed: service-unavailable while it is not connected.
    r = await alice.iq("get", "gw.localhost", "<ping xmlns='urn:xmpp:ping'/>")
    assert r.find("{jabber:client}error/"
                  "{urn:ietf:params:xml:ns:xmpp-stanzas}service-unavailable") is not None


async def test_a_reload_refuses_what_the_server_could_not_start_with(server_factory):
    """A reload runs the validation `serve` runs: a file the next start would refuse is
    refused now (422, the reason), and the running configuration stays."""
    from conftest import _merge, to_toml
    srv = server_factory()
    alice = await srv.login("alice", "a")
    broken = [
        ({"domain": "exa mple"}, "domain"),
        ({"mam": {"default": "sometimes"}}, "[mam] default"),
        ({"muc": {"create_rooms": "all"}}, "[muc] create_rooms"),
        ({"log": {"level": "inof"}}, "[log] level"),
        ({"c2s": {"max_stanza_bytes": 0}}, "[c2s] max_stanza_bytes"),
        ({"listen": {"https": "nonsense"}}, "[listen] https"),
    ]
    for i, (change, word) in enumerate(broken):
        srv.config_path.write_text(to_toml(_merge(srv.config, change)))
        status, _, body = http(srv, "POST", "/api/v1/reload")
        assert status == 422 and word in body["error"], (change, status, body)
        assert srv.log().count("configuration not reloaded") == i + 1
    # Still serving as before: the same domain, logging at info.
    await all_answer([alice])
    bound = srv.log().count("resource bound")
    bob = await srv.login("bob", "b")
    await bob.close()
    wait_log(srv, "resource bound", count=bound + 1)
    srv.config_path.write_text(to_toml(srv.config))
    status, _, body = http(srv, "POST", "/api/v1/reload")
    assert status == 200 and body["restart_needed"] == [], body
    await alice.close()


async def test_restart_needed_is_measured_against_what_runs(server_factory):
    """A change a reload does not apply stays named on every later reload until a restart
    (not only on the first), and a file put back as it was started needs nothing; the first
    component declared by a reload needs a restart for its listener."""
    from conftest import _merge, to_toml
    srv = server_factory()
    started = to_toml(srv.config)
    srv.config_path.write_text(to_toml(_merge(srv.config, {"muc": {"history_length": 5}})))
    for _ in range(2):
        status, _, body = http(srv, "POST", "/api/v1/reload")
        assert status == 200 and body["restart_needed"] == ["[muc]"], body
    srv.config_path.write_text(started)
    status, _, body = http(srv, "POST", "/api/v1/reload")
    assert status == 200 and body["restart_needed"] == [], body
    # No component at start: no component listener; the first one declared needs it.
    gw = {"domain": "gw.localhost", "secret": "s"}
    srv.config_path.write_text(to_toml(_merge(srv.config, {"component": {"service": [gw]}})))
    status, _, body = http(srv, "POST", "/api/v1/reload")
    assert status == 200 and body["components_added"] == ["gw.localhost"], body
    assert body["restart_needed"] == ["[component] listener"], body
