"""Login: STARTTLS and direct TLS (RFC 6120 §5, XEP-0368), SASL (§6), failures and limits.

The -PLUS mechanisms with the tls-exporter channel binding, which Python's ssl cannot export,
are tested in crates/server/tests/sasl_plus.rs; with tls-server-end-point (RFC 5929, the
hash of the server's certificate, which Python can compute) here.
"""
import hashlib
import ssl

import pytest

from slix import LoginFailed, slix_login
from xmpp_raw import (NS_SASL, NS_SASL_CB, NS_TLS, SaslFailure, StreamError, tag, tls_context)

MECHS = ["SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]
TRANSPORTS = ["starttls", "direct_tls"]


async def test_features_before_and_after_tls(server):
    c = server.client()
    await c.connect()
    f = await c.open_stream()
    starttls = f.find(tag(NS_TLS, "starttls"))
    assert starttls is not None and starttls.find(tag(NS_TLS, "required")) is not None
    assert c.mechanisms() == [], "no SASL mechanism may be offered before TLS"
    assert c.header.get("from") == server.domain and c.header.get("id")
    await c.starttls()
    assert c.ssl_object().version() == "TLSv1.3"
    mechs = c.mechanisms()
    for m in MECHS + [m + "-PLUS" for m in MECHS[:3]]:
        assert m in mechs
    cb = c.features.find(f"{tag(NS_SASL_CB, 'sasl-channel-binding')}/{tag(NS_SASL_CB, 'channel-binding')}")
    assert cb is not None and cb.get("type") == "tls-exporter", "XEP-0440 advertisement"
    assert not c.has_feature(NS_TLS, "starttls"), "no second STARTTLS"
    await c.close()


def end_point(c) -> bytes:
    """RFC 5929 §4.1 tls-server-end-point of the server's certificate: SHA-256 of its DER
    (the test server's generated certificate is ECDSA P-256 with SHA-256)."""
    return hashlib.sha256(c.ssl_object().getpeercert(binary_form=True)).digest()


def binding_types(c) -> list[str]:
    cbs = c.features.find(tag(NS_SASL_CB, "sasl-channel-binding"))
    return [b.get("type") for b in cbs] if cbs is not None else []


@pytest.mark.parametrize("tls12", [False, True], ids=["tls13", "tls12"])
async def test_scram_plus_with_tls_server_end_point(server, tls12, monkeypatch):
    """XEP-0440 1.0.0 Business Rules: servers MUST implement and advertise
    tls-server-end-point — beside tls-exporter on TLS 1.3, alone on TLS 1.2 (no exporter
    there), where -PLUS is then offered too; SCRAM -PLUS binds to it and succeeds, and a
    wrong hash fails."""
    if tls12:
        def tls12_context(alpn=None):
            ctx = tls_context(alpn)
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            return ctx
        monkeypatch.setattr("xmpp_raw.tls_context", tls12_context)
    c = server.client()
    await c.negotiate_tls()
    assert c.ssl_object().version() == ("TLSv1.2" if tls12 else "TLSv1.3")
    want = ["tls-server-end-point"] if tls12 else ["tls-exporter", "tls-server-end-point"]
    assert binding_types(c) == want
    assert "SCRAM-SHA-256-PLUS" in c.mechanisms()
    with pytest.raises(SaslFailure) as e:
        await c.authenticate("alice", "alicepass", "SCRAM-SHA-256-PLUS",
                             cb=("tls-server-end-point", bytes(32)))
    assert e.value.condition == "not-authorized"
    await c.authenticate("alice", "alicepass", "SCRAM-SHA-256-PLUS",
                         cb=("tls-server-end-point", end_point(c)))
    await c.open_stream()
    assert await c.bind("plus") == server.jid("alice", "plus")
    await c.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mech", MECHS)
async def test_raw_login(server_factory, backend, mech, transport):
    """Each mechanism over each transport, on each store; SCRAM server signatures checked."""
    srv = server_factory(backend=backend, users={"alice": "alicepass"})
    c = await srv.login("alice", "res", mechanism=mech, direct_tls=transport == "direct_tls")
    assert c.jid == srv.jid("alice", "res")
    pong = await c.iq("get", srv.domain, "<ping xmlns='urn:xmpp:ping'/>")
    assert pong.get("type") == "result"
    assert await c.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mech", MECHS)
async def test_slixmpp_login(server_factory, mech, transport):
    """The same with slixmpp, an independent client implementation."""
    srv = server_factory(users={"alice": "alicepass"})
    c = await slix_login(srv, "alice", resource="slix", mech=mech,
                         direct_tls=transport == "direct_tls")
    try:
        assert str(c.boundjid) == srv.jid("alice", "slix")
        assert c.negotiated_mechanism() == mech
        assert c.tls_version() == "TLSv1.3"
        await c.plugin["xep_0199"].ping(srv.domain, timeout=10)
    finally:
        await c.close()


async def test_slixmpp_wrong_password_fails(server):
    with pytest.raises(LoginFailed, match="not-authorized"):
        await slix_login(server, "alice", mech="SCRAM-SHA-256", password="wrong")


@pytest.mark.parametrize("mech", MECHS)
async def test_wrong_password_and_unknown_user_get_the_same_answer(server_factory, backend, mech):
    srv = server_factory(backend=backend, users={"alice": "alicepass"})
    for user, pw in [("alice", "wrong"), ("nobody", "alicepass")]:
        c = srv.client()
        await c.negotiate_tls()
        with pytest.raises(SaslFailure) as e:
            await c.authenticate(user, pw, mech)
        assert e.value.condition == "not-authorized", (user, mech)
        c.abort()


async def test_scram_unknown_user_is_not_revealed_by_the_challenge(server):
    """The server-first-message for an unknown user looks like one for a real user (a salt
    and the iteration count), and is stable, so probing does not tell who exists."""
    import base64

    def first(c, user):
        c.send(f"<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-256'>"
               + base64.b64encode(f"n,,n={user},r=abcdefghijklmnop".encode()).decode() + "</auth>")

    seen = {}
    for user in ["alice", "nobody", "nobody"]:
        c = server.client()
        await c.negotiate_tls()
        first(c, user)
        ch = await c.recv()
        assert ch.tag == tag(NS_SASL, "challenge")
        attrs = dict(kv.split("=", 1) for kv in base64.b64decode(ch.text).decode().split(","))
        assert set(attrs) == {"r", "s", "i"}
        seen.setdefault(user, []).append((attrs["s"], attrs["i"]))
        c.abort()
    assert seen["nobody"][0] == seen["nobody"][1]
    assert seen["alice"][0][1] == seen["nobody"][0][1]


async def test_auth_attempts_limit_closes_the_stream(server_factory):
    srv = server_factory(users={"alice": "alicepass"}, c2s={"max_auth_attempts": 3})
    c = srv.client()
    await c.negotiate_tls()
    for _ in range(2):
        with pytest.raises(SaslFailure, match="not-authorized"):
            await c.authenticate("alice", "wrong", "PLAIN")
    c.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>AGFsaWNlAHdyb25n</auth>")
    el = await c.recv()
    assert el.tag == tag(NS_SASL, "failure")
    assert await c.stream_error() == "policy-violation"
    assert await c.wait_closed() == (None, True)


async def sasl_failure(srv, ip, password, mechanism) -> str:
    """Authenticates as alice from `ip`, expecting a SASL failure; returns its condition."""
    c = srv.client(local_addr=ip)
    await c.negotiate_tls()
    with pytest.raises(SaslFailure) as e:
        await c.authenticate("alice", password, mechanism)
    c.abort()
    return e.value.condition


async def test_auth_failures_per_ip_are_rate_limited(server_factory):
    srv = server_factory(users={"alice": "alicepass"},
                         c2s={"auth_failures_per_ip_per_minute": 2,
                              "auth_failures_per_account_per_minute": 100})
    for _ in range(2):
        assert await sasl_failure(srv, "127.0.0.2", "wrong", "SCRAM-SHA-1") == "not-authorized"
    # Even the right password is refused from that address now ...
    assert (await sasl_failure(srv, "127.0.0.2", "alicepass", "SCRAM-SHA-1")
            == "temporary-auth-failure")
    # ... while other addresses are not affected.
    c = await srv.login("alice", "ok")
    await c.close()


async def test_auth_failures_per_account_are_rate_limited(server_factory):
    srv = server_factory(users={"alice": "alicepass", "bob": "bobpass"},
                         c2s={"auth_failures_per_ip_per_minute": 100,
                              "auth_failures_per_account_per_minute": 2})
    for ip in ["127.0.0.2", "127.0.0.3"]:
        assert await sasl_failure(srv, ip, "wrong", "PLAIN") == "not-authorized"
    assert await sasl_failure(srv, "127.0.0.4", "alicepass", "PLAIN") == "temporary-auth-failure"
    c = await srv.login("bob", "ok")
    await c.close()


async def test_auth_before_starttls_is_refused(server):
    c = server.client()
    await c.connect()
    await c.open_stream()
    c.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>AGFsaWNlAGFsaWNlcGFzcw==</auth>")
    el = await c.recv()
    assert el.tag == tag(NS_SASL, "failure")
    assert el.find(tag(NS_SASL, "encryption-required")) is not None
    assert await c.stream_error() == "policy-violation"


async def test_stanza_before_starttls_is_refused(server):
    c = server.client()
    await c.connect()
    await c.open_stream()
    c.send("<message to='bob@localhost'><body>clear text</body></message>")
    assert await c.stream_error() == "policy-violation"


async def test_bytes_after_starttls_before_the_handshake_are_discarded(server):
    """RFC 6120 §5.4.3.3: bytes that follow <starttls/> before the TLS handshake are dropped,
    never parsed into the encrypted stream (sent in one write, so one TCP segment)."""
    import asyncio
    from xmpp_raw import local, tls_context
    c = server.client()
    await c.connect()
    await c.open_stream()
    c.send(f"<starttls xmlns='{NS_TLS}'/><iq type='get' id='injected'><ping xmlns='urn:xmpp:ping'/></iq>")
    el = await c.recv()
    assert el.tag == tag(NS_TLS, "proceed")
    await asyncio.wait_for(c.writer.start_tls(tls_context(), server_hostname=server.domain), 10)
    c.tls = True
    await c.open_stream()
    await c.auth("alice", "alicepass")
    await c.bind("r")
    c.send("<iq type='get' id='mine'><ping xmlns='urn:xmpp:ping'/></iq>")
    first_iq = await c.expect(lambda e: local(e) == "iq")
    assert first_iq.get("id") == "mine"
    await c.close()


async def test_strict_authzid(server):
    c = server.client()
    await c.negotiate_tls()
    with pytest.raises(SaslFailure) as e:
        await c.authenticate("alice", "alicepass", "PLAIN", authzid="bob@localhost")
    assert e.value.condition == "invalid-authzid"
    # Its own bare JID as authzid is fine.
    await c.authenticate("alice", "alicepass", "SCRAM-SHA-256", authzid="alice@localhost")
    c.abort()


async def test_unknown_and_plus_without_binding_mechanisms(server):
    c = server.client()
    await c.negotiate_tls()
    c.send(f"<auth xmlns='{NS_SASL}' mechanism='DIGEST-MD5'/>")
    el = await c.recv()
    assert el.find(tag(NS_SASL, "invalid-mechanism")) is not None
    c.abort()


async def test_a_stream_from_another_domain_is_invalid_from(server):
    """XEP-0388 "SASL mechanism negotiation" (RFC 6120 §4.9.3.9): a header whose `from`
    names an address of another domain than its `to` — or is no address — is refused with
    `invalid-from`; one of the domain asked for is answered as usual."""
    for bad in ("bob@other.example", "not@an@address"):
        c = server.client()
        c.stream_from = bad
        await c.connect()
        with pytest.raises(StreamError) as e:
            await c.open_stream()
        assert e.value.condition == "invalid-from", bad
    c = server.client()
    c.stream_from = server.jid("alice")
    await c.connect()
    await c.open_stream()
    c.abort()


async def test_wrong_stream_host_is_refused(server):
    c = server.client()
    await c.connect()
    with pytest.raises(StreamError) as e:
        await c.open_stream(to="example.org")
    assert e.value.condition == "host-unknown"
