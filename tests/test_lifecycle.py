"""Stream and process lifecycle: timeouts, the close handshake (RFC 6120 §4.4), keepalives,
shutdown on SIGTERM, persistence across restarts, and the `rookery user` CLI."""
import asyncio
import signal
import time

import pytest

from conftest import free_port
from xmpp_raw import Closed, RawClient, SaslFailure, StreamError


async def test_negotiation_timeout_closes_an_idle_unauthenticated_stream(server_factory):
    srv = server_factory(users={"alice": "alicepass"}, c2s={"negotiation_timeout_secs": 1})
    c = srv.client()
    await c.connect()
    await c.open_stream()
    assert await c.wait_closed() == ("connection-timeout", True)


async def test_negotiation_timeout_covers_silent_sockets_and_tls(server_factory):
    srv = server_factory(users={"alice": "alicepass"}, c2s={"negotiation_timeout_secs": 2})

    async def silent():             # not even a stream header
        c = srv.client()
        await c.connect()
        return (await c.wait_closed())[0]

    async def after_tls():          # STARTTLS, then nothing
        c = srv.client()
        await c.negotiate_tls()
        return (await c.wait_closed())[0]

    async def direct():             # direct TLS handshake done, no stream
        c = srv.client(direct_tls=True)
        await c.connect()
        return (await c.wait_closed())[0]

    results = await asyncio.gather(silent(), after_tls(), direct())
    assert results == ["connection-timeout"] * 3


async def test_negotiation_timeout_does_not_apply_after_bind(server_factory):
    srv = server_factory(users={"alice": "alicepass"}, c2s={"negotiation_timeout_secs": 2})
    c = await srv.login("alice", "a")
    # Longer than the negotiation timeout, awaiting something that never comes.
    with pytest.raises(TimeoutError):
        await c.recv(timeout=3)
    r = await c.iq("get", None, "<ping xmlns='urn:xmpp:ping'/>")
    assert r.get("type") == "result"
    await c.close()


async def test_idle_timeout(server_factory):
    srv = server_factory(users={"alice": "alicepass"}, c2s={"idle_timeout_secs": 1})
    c = await srv.login("alice", "a")
    assert await c.wait_closed() == ("connection-timeout", True)


async def test_whitespace_keepalive_is_tolerated(server):
    c = await server.login("alice", "a")
    c.send(" ")
    c.send("\n\n")
    r = await c.iq("get", None, "<ping xmlns='urn:xmpp:ping'/>")
    assert r.get("type") == "result"
    c.send("  \t ")
    r = await c.iq("get", None, "<ping xmlns='urn:xmpp:ping'/>")
    assert r.get("type") == "result"
    await c.close()


@pytest.mark.parametrize("stage", ["plain", "tls", "authenticated", "bound"])
async def test_close_handshake(server, stage):
    """The client's `</stream:stream>` is answered with the server's, then TCP closes."""
    c = server.client()
    await c.connect()
    await c.open_stream()
    if stage != "plain":
        await c.starttls()
    if stage in ("authenticated", "bound"):
        await c.auth("alice", "alicepass")
    if stage == "bound":
        await c.bind("r")
    assert await c.close() is True


async def test_closed_session_is_unbound(server):
    """After the close handshake (or a dropped socket), the resource is gone: an IQ to it is
    answered with service-unavailable."""
    from xmpp_raw import stanza_error
    a = await server.login("alice", "a")
    gone = await server.login("bob", "closed")
    dropped = await server.login("bob", "dropped")
    assert await gone.close()
    dropped.abort()
    for res in ("closed", "dropped"):
        # The drop is noticed asynchronously; the close handshake finished before we got here.
        for _ in range(50):
            r = await a.iq("get", f"bob@localhost/{res}", "<query xmlns='urn:example:x'/>",
                           timeout=10)
            if stanza_error(r) == "service-unavailable":
                break
            await asyncio.sleep(0.1)
        assert stanza_error(r) == "service-unavailable", res
    await a.close()


async def test_sigterm_sends_system_shutdown_and_exits_zero(server):
    a = await server.login("alice", "a")
    b = await server.login("bob", "b", direct_tls=True)
    pending = server.client()
    await pending.negotiate_tls()
    server.signal(signal.SIGTERM)
    assert await a.wait_closed() == ("system-shutdown", True)
    assert await b.wait_closed() == ("system-shutdown", True)
    assert await pending.wait_closed() == ("system-shutdown", True)
    assert server.wait(15) == 0
    assert "stopped" in server.log()


async def test_sigterm_ends_negotiating_streams_too(server):
    """RFC 6120 §4.9.3.17: all active streams are closed, not only bound sessions."""
    plain = server.client()
    await plain.connect()
    await plain.open_stream()
    tls = server.client()
    await tls.negotiate_tls()
    authed = server.client(direct_tls=True)
    await authed.negotiate_tls()
    await authed.auth("alice", "alicepass")
    server.signal(signal.SIGTERM)
    for c in (plain, tls, authed):
        assert await c.wait_closed() == ("system-shutdown", True)
    assert server.wait(15) == 0


@pytest.mark.parametrize("stall", ["direct-tls-handshake", "http-body", "https-handshake"])
async def test_sigterm_is_not_held_up_by_a_stalled_connection(server, stall):
    """Nobody unauthenticated can delay a shutdown: a direct-TLS handshake that stalls after
    a few bytes (it waited out the negotiation timeout), an HTTP request whose body never
    comes (it held the c2s context the BOSH route shares until the request deadline,
    90 s), an HTTPS handshake that stalls — each is cut when the server stops."""
    port, data = {
        "direct-tls-handshake": (server.direct_tls_port, b"\x16\x03\x01\x02\x00\x01"),
        "http-body": (server.http_port,
                      b"POST /http-bind HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                      b"\r\n<body"),
        "https-handshake": (server.https_port, b"\x16\x03\x01\x02\x00\x01"),
    }[stall]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    await asyncio.sleep(0.5)
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.wait(20) == 0
    assert time.monotonic() - started < 12, "the shutdown waited for the stalled connection"
    writer.close()


async def test_sigterm_ends_server_to_server_streams_too(server_factory):
    """A peer server's stream gets `system-shutdown` as well (here one still negotiating;
    bound and outgoing ones: crates/s2s/tests/federation.rs)."""
    port = free_port()
    srv = server_factory(listen={"s2s": f"127.0.0.1:{port}"})
    peer = RawClient("127.0.0.1", port, "localhost")
    await peer.connect()
    peer.send("<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
              "xmlns:stream='http://etherx.jabber.org/streams' "
              "xmlns:db='jabber:server:dialback' from='peer.example' to='localhost' "
              "version='1.0'>")
    await peer.flush()
    features = await peer.recv()
    assert features.find("{urn:ietf:params:xml:ns:xmpp-tls}starttls") is not None
    srv.signal(signal.SIGTERM)
    assert await peer.wait_closed() == ("system-shutdown", True)
    assert srv.wait(15) == 0


async def test_sigint_also_stops_cleanly(server):
    a = await server.login("alice", "a")
    server.signal(signal.SIGINT)
    assert (await a.wait_closed())[0] == "system-shutdown"
    assert server.wait(15) == 0


async def test_accounts_persist_across_restart(server_factory, backend):
    srv = server_factory(backend=backend, users={"alice": "alicepass"},
                         registration={"enabled": True, "min_interval_secs": 0})
    c = srv.client()
    await c.negotiate_tls()
    r = await c.iq("set", None, "<query xmlns='jabber:iq:register'><username>zed</username>"
                                "<password>zedpassword</password></query>")
    assert r.get("type") == "result"
    c.abort()
    srv.restart()
    for user, pw in [("alice", "alicepass"), ("zed", "zedpassword")]:
        c = await srv.login(user, "again", password=pw, mechanism="SCRAM-SHA-512")
        await c.close()


async def test_user_cli(server_factory, backend):
    srv = server_factory(backend=backend, users={"alice": "alicepass"})
    r = srv.user("add", "alice", password="x")
    assert r.returncode != 0 and "already exists" in r.stderr
    r = srv.user("add", "Frank", password="frankpass")
    assert r.returncode == 0 and "frank@localhost" in r.stdout, "usernames are normalized"
    assert srv.user("list").stdout.split() == ["alice@localhost", "frank@localhost"]
    r = srv.user("add", "bad@name", password="x")
    assert r.returncode != 0
    r = srv.user("add", "emptypw", password="")
    assert r.returncode != 0, "an empty password is refused"
    # The running server sees CLI changes at once.
    c = await srv.login("frank", "f", password="frankpass")
    await c.close()
    assert srv.user("passwd", "frank", password="frank2pass").returncode == 0
    c = srv.client()
    await c.negotiate_tls()
    with pytest.raises(SaslFailure):
        await c.authenticate("frank", "frankpass", "SCRAM-SHA-256")
    c.abort()
    c = await srv.login("frank", "f", password="frank2pass")
    assert srv.user("delete", "frank").returncode == 0
    assert srv.user("delete", "frank").returncode != 0
    assert srv.user("passwd", "nobody", password="x").returncode != 0
    await c.close()
    assert "frank" not in srv.user("list").stdout


async def test_stream_errors_of_the_header(server):
    c = server.client()
    await c.connect()
    c.send("<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
           "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>")
    assert (await c.wait_closed())[0] == "invalid-namespace"
    c = server.client()
    await c.connect()
    c.send("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
           "xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='2.0'>")
    assert (await c.wait_closed())[0] == "unsupported-version"
    c = server.client()
    await c.connect()
    with pytest.raises((StreamError, Closed)):
        c.send("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await c.recv()


async def test_whitespace_keepalive_resets_the_idle_timeout(server_factory):
    """RFC 6120 §4.6.1: whitespace keepalives are how clients show they are alive; the idle
    timeout counts any bytes, not only stanzas."""
    srv = server_factory(users={"alice": "alicepass"}, c2s={"idle_timeout_secs": 2})
    c = await srv.login("alice", "a")
    for _ in range(8):          # 4 s of keepalives, twice the idle timeout
        c.send(" ")
        await c.flush()
        await asyncio.sleep(0.5)
    r = await c.iq("get", None, "<ping xmlns='urn:xmpp:ping'/>")
    assert r.get("type") == "result"
    await c.close()


async def test_log_to_a_file_has_no_colour_codes(server):
    c = await server.login("alice", "a")
    await c.close()
    log = server.log()
    assert "authenticated" in log and "alice@localhost" in log
    assert "\x1b[" not in log, "ANSI escape codes in a non-terminal log"


# i64::MAX seconds: how a TOML file says "never" (TOML integers are 64-bit signed).
NEVER = 9223372036854775807


async def test_timeouts_too_long_for_the_clock_mean_never(server_factory):
    """A configured timeout that a clock cannot add (i64::MAX seconds) waits for ever instead
    of panicking every connection's task: c2s negotiation, idle, pings and resumption, the
    component's handshake and pings, and an outgoing s2s stream's deadlines (here to a closed
    port: the stanza bounces, as with any unreachable peer)."""
    from slix import Component, slix_login
    from xmpp_raw import NS_CLIENT, local, stanza_error

    comp_port, dead_port = free_port(), free_port()
    srv = server_factory(
        c2s={"negotiation_timeout_secs": NEVER, "idle_timeout_secs": NEVER,
             "ping_interval_secs": NEVER, "ping_timeout_secs": NEVER,
             "sm_resume_timeout_secs": NEVER},
        component={"listen": f"127.0.0.1:{comp_port}", "handshake_timeout_secs": NEVER,
                   "ping_interval_secs": NEVER, "ping_timeout_secs": NEVER,
                   "service": [{"domain": "bot.localhost", "secret": "s"}]},
        s2s={"negotiation_timeout_secs": NEVER, "connect_timeout_secs": NEVER,
             "dialback_timeout_secs": NEVER, "idle_timeout_secs": NEVER,
             "backoff_initial_secs": NEVER, "backoff_max_secs": NEVER,
             "routes": {"peer.example": f"127.0.0.1:{dead_port}"}})
    c = await slix_login(srv, "alice")
    await c.plugin["xep_0199"].ping(srv.domain, timeout=10)
    bot = Component("bot.localhost", "s", comp_port)
    bot.connect()
    await asyncio.wait_for(bot.session, 10)
    c.send_message(mto="bot.localhost", mbody="hello", mtype="chat")
    echo = await c.inbox.wait(lambda e: e.findtext(f"{{{NS_CLIENT}}}body") == "echo: hello",
                              what="the component's echo")
    assert echo.get("from") == "bot.localhost"
    c.send_message(mto="someone@peer.example", mbody="far", mtype="chat")
    bounce = await c.inbox.wait(lambda e: local(e) == "message" and e.get("type") == "error",
                                what="the s2s bounce")
    assert stanza_error(bounce) == "remote-server-not-found"
    # A resumable session hibernates (its resumption deadline is "never") and resumes.
    raw = await srv.login("bob", "phone")
    raw.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
    en = await raw.expect(lambda e: local(e) == "enabled", what="<enabled/>")
    raw.abort()
    await asyncio.sleep(0.5)
    from test_sm import resume
    again, answer = await resume(srv, "bob", en.get("id"), 0)
    assert local(answer) == "resumed"
    await c.plugin["xep_0199"].ping(srv.domain, timeout=10)
    assert "panicked" not in srv.log()
    await again.close()
    await bot.close()
    await c.close()


async def test_sigterm_hands_what_hibernated_sessions_held_to_offline_storage(server_factory):
    """XEP-0198 §5 and the shutdown: a hibernated session's parked stanzas were acknowledged
    to their senders; at SIGTERM each ending session hands them on (here to offline storage,
    one commit each), and the store closes only after that — not after a fixed 5 s."""
    import sqlite3
    sessions, per = 20, 2000
    users = {f"u{i}": "pw" for i in range(sessions)} | {"sender": "pw"}
    srv = server_factory(users=users, c2s={"sm_max_unacked": per + 10},
                         im={"offline": {"max_per_user": per}})
    for i in range(sessions):
        c = await srv.login(f"u{i}", "phone")
        await c.presence()
        c.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
        await c.expect(lambda e: e.tag == "{urn:xmpp:sm:3}enabled", what="<enabled/>")
        c.abort()
    await asyncio.sleep(1)
    sender = await srv.login("sender", "s")
    for j in range(per):
        for i in range(sessions):
            sender.message(srv.jid(f"u{i}", "phone"), f"parked {j}")
        await sender.flush()
    # Handled in order: once this is answered, every message is parked.
    r = await sender.iq("get", None, "<ping xmlns='urn:xmpp:ping'/>", timeout=120)
    assert r.get("type") == "result"
    srv.signal(signal.SIGTERM)
    assert srv.wait(170) == 0
    with sqlite3.connect(srv.data_dir / "rookery.db") as db:
        (stored,) = db.execute("SELECT count(*) FROM offline_messages").fetchone()
    assert stored == sessions * per, srv.log()[-3000:]
