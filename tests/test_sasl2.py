"""Modern client login: XEP-0388 SASL2 with XEP-0474 downgrade protection, XEP-0386 Bind2
inline (carbons, CSI, stream management), XEP-0198 resumption inline in SASL2, and XEP-0484
FAST tokens (request, one-round-trip login, rotation, replay, password change, flood).

No client library of the test environment speaks SASL2 (slixmpp has no plugin for it), so the
client side is the raw client's `sasl2()` (tests/xmpp_raw.py): a SCRAM client written from
RFC 5802 with Python's hashlib, checking the server's `h=` and signature itself. Every
machine step (each failure condition, malformed requests) is also a unit test in
crates/c2s/src/machine.rs; here the real binary is driven over TLS sockets."""
import asyncio
import base64
import hmac
import xml.etree.ElementTree as ET

import pytest

from xmpp_raw import (NS_BIND, NS_BIND2, NS_CLIENT, NS_FAST, NS_SASL2, NS_SM, SaslFailure,
                      StreamError, ht_message, local, tag)

NS_CARBONS = "urn:xmpp:carbons:2"
NS_CSI = "urn:xmpp:csi:0"
NS_MAM = "urn:xmpp:mam:2"
BODY = f"{{{NS_CLIENT}}}body"


def xml(el) -> str:
    return ET.tostring(el, encoding="unicode")


async def tls_client(srv, **kw):
    c = srv.client(**kw)
    await c.negotiate_tls()
    return c


def bind2(*inline: str, tag_: str = "Raw") -> str:
    return f"<bind xmlns='{NS_BIND2}'><tag>{tag_}</tag>{''.join(inline)}</bind>"


async def test_features_offer_sasl2_with_inline_bind_and_sm(server):
    c = await tls_client(server)
    auth = c.features.find(tag(NS_SASL2, "authentication"))
    assert auth is not None, xml(c.features)
    assert c.sasl2_mechanisms() == c.mechanisms()
    inline = auth.find(tag(NS_SASL2, "inline"))
    feats = {f.get("var") for f in inline.find(tag(NS_BIND2, "bind")).iter()
             if f.get("var")}
    assert feats == {NS_CARBONS, NS_CSI, NS_SM}
    assert inline.find(tag(NS_SM, "sm")) is not None
    await c.close()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1", "SCRAM-SHA-512", "PLAIN"])
async def test_sasl2_without_bind2_then_rfc6120_bind(server, mechanism):
    """No stream restart after SASL2 success: the client binds on the same stream."""
    c = await tls_client(server)
    s = await c.sasl2("alice", "alicepass", mechanism,
                      authzid=server.jid("alice") if mechanism != "PLAIN" else None)
    assert s.findtext(tag(NS_SASL2, "authorization-identifier")) == server.jid("alice")
    # The features of the authenticated stream followed the success (XEP-0388 §2.6.1).
    assert c.has_feature(NS_BIND, "bind") and c.has_feature(NS_SM, "sm"), xml(c.features)
    jid = await c.bind("desk")
    assert jid == server.jid("alice", "desk")
    pong = await c.iq("get", server.domain, "<ping xmlns='urn:xmpp:ping'/>")
    assert pong.get("type") == "result"
    await c.close()


async def test_failure_conditions(server_factory):
    srv = server_factory(c2s={"max_auth_attempts": 10})
    c = await tls_client(srv)
    for mech, user, password, authzid, cond in [
        ("SCRAM-SHA-256", "alice", "wrong", None, "not-authorized"),
        ("PLAIN", "alice", "wrong", None, "not-authorized"),
        ("SCRAM-SHA-256", "nobody", "x", None, "not-authorized"),
        ("PLAIN", "alice", "alicepass", srv.jid("bob"), "invalid-authzid"),
        ("DIGEST-MD5", "alice", "alicepass", None, "invalid-mechanism"),
    ]:
        with pytest.raises(SaslFailure) as e:
            await c.sasl2(user, password, mech, authzid=authzid)
        assert e.value.condition == cond, (mech, user)
    # Malformed requests: a SASL2 failure, never a crash; the stream stays usable.
    for bad, cond in [
        (f"<authenticate xmlns='{NS_SASL2}'/>", "malformed-request"),
        (f"<authenticate xmlns='{NS_SASL2}' mechanism='PLAIN'>"
         f"<initial-response>***</initial-response></authenticate>", "incorrect-encoding"),
        (f"<authenticate xmlns='{NS_SASL2}' mechanism='PLAIN'><user-agent id='{'x' * 300}'/>"
         f"</authenticate>", "malformed-request"),
        (f"<authenticate xmlns='{NS_SASL2}' mechanism='PLAIN'><initial-response>"
         f"AGFsaWNlAGFsaWNlcGFzcw==</initial-response>{bind2()}{bind2()}</authenticate>",
         "malformed-request"),
    ]:
        c.send(bad)
        el = await c.recv()
        assert el.tag == tag(NS_SASL2, "failure"), xml(el)
        assert local(next(iter(el))) == cond, xml(el)
    s = await c.sasl2("alice", "alicepass")
    assert s.findtext(tag(NS_SASL2, "authorization-identifier")) == srv.jid("alice")
    await c.close()
    # §2.4: while a SASL2 exchange waits for a <response/>, anything else ends the stream.
    c = await tls_client(srv)
    c.send(f"<authenticate xmlns='{NS_SASL2}' mechanism='SCRAM-SHA-256'/>")
    challenge = await c.recv()
    assert challenge.tag == tag(NS_SASL2, "challenge")
    # XEP-0388 "SASL Data Encoding": no data is an empty element, not RFC 6120's "=".
    assert not challenge.text, xml(challenge)
    c.send("<message to='bob@localhost'><body>sneaked in</body></message>")
    with pytest.raises(StreamError) as e:
        await c.recv()
    assert e.value.condition == "policy-violation"


async def test_authzid_must_match_the_stream_from(server):
    """XEP-0388 "Initiation": a non-empty authorization string that does not match the
    stream header's `from` fails the authentication (invalid-authzid); matching, or empty,
    it succeeds."""
    c = server.client()
    c.stream_from = server.jid("bob")
    await c.negotiate_tls()
    with pytest.raises(SaslFailure) as e:
        await c.sasl2("alice", "alicepass", authzid=server.jid("alice"))
    assert e.value.condition == "invalid-authzid"
    s = await c.sasl2("alice", "alicepass")
    assert s.findtext(tag(NS_SASL2, "authorization-identifier")) == server.jid("alice")
    await c.close()
    c = server.client()
    c.stream_from = server.jid("alice")
    await c.negotiate_tls()
    s = await c.sasl2("alice", "alicepass", authzid=server.jid("alice"))
    assert s.findtext(tag(NS_SASL2, "authorization-identifier")) == server.jid("alice")
    await c.close()


async def test_bind2_with_carbons_csi_and_sm(server):
    """Bind2: one round trip to a bound, managed session with carbons on; the resource is
    the tag and a hash of the device id, the same on every login of that device."""
    c = await tls_client(server)
    s = await c.sasl2("alice", "alicepass", device="phone-1234", inline=bind2(
        f"<enable xmlns='{NS_CARBONS}'/>", f"<inactive xmlns='{NS_CSI}'/>",
        f"<enable xmlns='{NS_SM}' resume='true'/>"))
    jid = s.findtext(tag(NS_SASL2, "authorization-identifier"))
    assert jid.startswith(server.jid("alice", "Raw.")), jid
    enabled = s.find(f"{tag(NS_BIND2, 'bound')}/{tag(NS_SM, 'enabled')}")
    assert enabled is not None and enabled.get("resume") == "true", xml(s)
    # Carbons are on: a message bob sends to alice's other resource is copied here.
    other = await server.login("alice", "desk")
    bob = await server.login("bob", "b")
    bob.message(server.jid("alice", "desk"), "to desk")
    await bob.flush()
    el = await c.expect(lambda e: local(e) == "message", what="a received carbon")
    assert el.find(f"{{{NS_CARBONS}}}received") is not None and "to desk" in xml(el), xml(el)
    for x in (c, other, bob):
        await x.close()
    # The same device gets the same resource again.
    c2 = await tls_client(server)
    s2 = await c2.sasl2("alice", "alicepass", device="phone-1234", inline=bind2())
    assert s2.findtext(tag(NS_SASL2, "authorization-identifier")) == jid
    await c2.close()


async def received_bodies(c, quiet: float = 1.0) -> list[str]:
    """Bodies of the messages that reach `c` until it has been quiet for `quiet` seconds."""
    bodies = []
    while True:
        try:
            el = await c.recv(quiet)
        except asyncio.TimeoutError:
            return bodies
        if local(el) == "message" and el.find(BODY) is not None:
            bodies.append(el.findtext(BODY))


async def archived(c) -> list[tuple[str, str]]:
    """(archive id, body) of everything in the account's archive (an XEP-0313 query)."""
    qid = c.next_id("mam")
    c.send(f"<iq type='set' id='{qid}'><query xmlns='{NS_MAM}' queryid='{qid}'/></iq>")
    rows = []
    while True:
        el = await c.expect(lambda e: local(e) in ("message", "iq"), what="archive results")
        if local(el) == "iq" and el.get("id") == qid:
            assert el.get("type") == "result", xml(el)
            return rows
        result = el.find(tag(NS_MAM, "result"))
        if result is not None:
            rows.append((result.get("id"), result.findtext(f".//{BODY}")))


@pytest.mark.parametrize("archiving", [True, False], ids=["archive", "no-archive"])
async def test_bind2_clears_the_offline_messages_the_archive_holds(server_factory, archiving):
    """XEP-0386 §4.2: binding with Bind2, the server clears the account's offline messages
    "as they will be provided by MAM" — a client that reads its archive after login would
    otherwise get each one twice — and says in `<bound/>` where the archive stands (the
    XEP-0313 `<metadata/>`, SHOULD). Only those the archive holds are cleared: with archiving
    off they are delivered at initial presence as before, never lost, and `<bound/>` has no
    metadata."""
    srv = server_factory(mam={"enabled": archiving})
    bob = await srv.login("bob", "b")
    for body in ("while you were out", "and again"):
        bob.message(srv.jid("alice"), body)
    await bob.flush()
    # Offline storage is committed before the sender's next stanza is served.
    await bob.iq("get", srv.domain, "<ping xmlns='urn:xmpp:ping'/>")
    c = await tls_client(srv)
    s = await c.sasl2("alice", "alicepass", inline=bind2())
    metadata = s.find(f"{tag(NS_BIND2, 'bound')}/{tag(NS_MAM, 'metadata')}")
    await c.presence()
    delivered = await received_bodies(c)
    if archiving:
        assert delivered == [], delivered
        rows = await archived(c)
        assert [b for _, b in rows] == ["while you were out", "and again"]
        assert metadata is not None, xml(s)
        assert metadata.find(tag(NS_MAM, "start")).get("id") == rows[0][0], xml(metadata)
        assert metadata.find(tag(NS_MAM, "end")).get("id") == rows[-1][0], xml(metadata)
    else:
        assert delivered == ["while you were out", "and again"]
        assert metadata is None, xml(s)
    await c.close()
    # Cleared, not merely withheld from that session: a later login finds none either.
    again = await srv.login("alice", "desk")
    await again.presence()
    assert await received_bodies(again) == []
    for x in (again, bob):
        await x.close()


async def test_bind2_drops_a_tag_that_makes_no_resource(server):
    """XEP-0386 §4.1: the tag is a hint, validated; one that makes no resourcepart (an
    unassigned code point) is dropped and the default prefix used, never a SASL failure for
    a client whose password was right."""
    c = await tls_client(server)
    s = await c.sasl2("alice", "alicepass", inline=bind2(tag_="x&#x378;"))
    jid = s.findtext(tag(NS_SASL2, "authorization-identifier"))
    assert jid.startswith(server.jid("alice", "rookery.")), jid
    pong = await c.iq("get", server.domain, "<ping xmlns='urn:xmpp:ping'/>")
    assert pong.get("type") == "result"
    await c.close()


async def test_bind2_at_the_session_limit_is_no_credential_failure(server_factory):
    """Bind2 past `max_sessions_per_account`: `temporary-auth-failure` with the reason (not
    `not-authorized`, which tells a client its password or token is wrong), no token issued,
    and the stream stays usable: the client may authenticate again without Bind2."""
    srv = server_factory(c2s={"max_sessions_per_account": 1})
    first = await srv.login("alice", "desk")
    c = await tls_client(srv)
    plain = base64.b64encode(b"\0alice\0alicepass").decode()
    c.send(f"<authenticate xmlns='{NS_SASL2}' mechanism='PLAIN'><initial-response>{plain}"
           f"</initial-response><user-agent id='phone-1'/>{request_token()}{bind2()}"
           "</authenticate>")
    el = await c.recv()
    assert el.tag == tag(NS_SASL2, "failure"), xml(el)
    assert local(next(iter(el))) == "temporary-auth-failure", xml(el)
    assert "too many sessions" in (el.findtext(tag(NS_SASL2, "text")) or ""), xml(el)
    assert el.find(tag(NS_FAST, "token")) is None, xml(el)
    s = await c.sasl2("alice", "alicepass")
    assert s.findtext(tag(NS_SASL2, "authorization-identifier")) == srv.jid("alice")
    for x in (c, first):
        await x.close()


async def test_inline_resumption_of_a_hibernated_session(server):
    """The phone's link dies; it comes back with SASL2 + `<resume/>` inline and gets
    `<resumed/>` and what it missed in the same round trip as the authentication."""
    c = await tls_client(server)
    s = await c.sasl2("alice", "alicepass", inline=bind2(
        f"<enable xmlns='{NS_SM}' resume='true'/>"))
    jid = s.findtext(tag(NS_SASL2, "authorization-identifier"))
    previd = s.find(f"{tag(NS_BIND2, 'bound')}/{tag(NS_SM, 'enabled')}").get("id")
    c.abort()
    bob = await server.login("bob", "b")
    bob.message(jid, "while away")
    await bob.flush()
    # A round trip on bob's stream: his message has been routed before the ping's answer.
    await bob.iq("get", server.domain, "<ping xmlns='urn:xmpp:ping'/>")
    c2 = await tls_client(server)
    s2 = await c2.sasl2("alice", "alicepass", inline=(
        f"<resume xmlns='{NS_SM}' previd='{previd}' h='0'/>" + bind2()))
    resumed = s2.find(tag(NS_SM, "resumed"))
    assert resumed is not None and resumed.get("previd") == previd, xml(s2)
    assert s2.findtext(tag(NS_SASL2, "authorization-identifier")) == jid
    # XEP-0198 "SASL2 and BIND2 interaction": the success re-established the stream and no
    # stream features follow it — the next element is the message that waited.
    el = await c2.recv()
    assert local(el) == "message" and el.findtext(BODY) == "while away", xml(el)
    await c2.close()
    await bob.close()


async def test_refused_inline_resumption_falls_back_to_bind2(server):
    c = await tls_client(server)
    s = await c.sasl2("alice", "alicepass", inline=(
        f"<resume xmlns='{NS_SM}' previd='nope' h='0'/>" + bind2()))
    assert s.find(tag(NS_SM, "failed")) is not None, xml(s)
    assert s.find(tag(NS_BIND2, "bound")) is not None, xml(s)
    pong = await c.iq("get", server.domain, "<ping xmlns='urn:xmpp:ping'/>")
    assert pong.get("type") == "result"
    await c.close()


async def test_rfc6120_sasl_unchanged(server):
    """The RFC 6120 path still restarts the stream and binds as before."""
    c = await server.login("alice", "r", mechanism="SCRAM-SHA-256")
    assert c.jid == server.jid("alice", "r")
    assert c.has_feature(NS_BIND, "bind")
    await c.close()


# ---- XEP-0484 FAST ---------------------------------------------------------------------

HT = "HT-SHA-256-NONE"


def request_token() -> str:
    return f"<request-token xmlns='{NS_FAST}' mechanism='{HT}'/>"


def fast(count: int, attrs: str = "") -> str:
    return f"<fast xmlns='{NS_FAST}' count='{count}'{attrs}/>"


async def token_login(srv, token, count, *, device="phone-1", inline="", fast_attrs=""):
    """A new connection authenticating with a FAST token: (client, success) or SaslFailure."""
    c = await tls_client(srv)
    s = await c.sasl2("alice", "", HT, device=device, initial=ht_message("alice", token),
                      inline=fast(count, fast_attrs) + inline)
    # The server proves it held the token too.
    want = hmac.new(token.encode(), b"Responder", "sha256").digest()
    assert base64.b64decode(s.findtext(tag(NS_SASL2, "additional-data"))) == want
    return c, s


async def refused(srv, token, count, *, device="phone-1") -> str:
    c = await tls_client(srv)
    with pytest.raises(SaslFailure) as e:
        await c.sasl2("alice", "", HT, device=device, initial=ht_message("alice", token),
                      inline=fast(count))
    await c.close()
    return e.value.condition


def token_of(success) -> str:
    t = success.find(tag(NS_FAST, "token"))
    assert t is not None and t.get("expiry", "").endswith("Z"), xml(success)
    return t.get("token")


async def test_fast_token_request_reconnect_rotation_and_replay(server):
    c = await tls_client(server)
    inline = c.features.find(f"{tag(NS_SASL2, 'authentication')}/{tag(NS_SASL2, 'inline')}")
    # -EXPR too: the stream has a tls-exporter binding (Python's ssl cannot compute it, so
    # only -NONE is used here; -EXPR is a unit test in crates/c2s).
    assert [m.text for m in inline.find(tag(NS_FAST, "fast"))] == ["HT-SHA-256-EXPR", HT]
    s = await c.sasl2("alice", "alicepass", device="phone-1",
                      inline=request_token() + bind2())
    t1 = token_of(s)
    await c.close()

    # Reconnect in one round trip: token + Bind2 + rotation.
    c, s = await token_login(server, t1, 1, inline=request_token() + bind2())
    assert s.find(tag(NS_BIND2, "bound")) is not None
    t2 = token_of(s)
    assert t2 != t1
    await c.close()
    # The old token is valid until the new one is used...
    c, _ = await token_login(server, t1, 2)
    await c.close()
    c, _ = await token_login(server, t2, 3)
    await c.close()
    # ...and not after.
    assert await refused(server, t1, 4) == "not-authorized"
    # A count that does not rise is a replay.
    assert await refused(server, t2, 3) == "not-authorized"
    c, _ = await token_login(server, t2, 5)
    await c.close()
    # Another device cannot use this device's token; a made-up token fails.
    assert await refused(server, t2, 6, device="laptop") == "not-authorized"
    assert await refused(server, "x" * 72, 7) == "not-authorized"


async def test_an_expired_token_is_credentials_expired(server_factory):
    """XEP-0484 Business Rules: a token the server no longer trusts fails with
    `credentials-expired`, not `not-authorized`; the client then uses its password and gets
    a new token. (That it is not counted as a password failure is a unit test in
    crates/c2s machine.rs `fast_refusals`.)"""
    srv = server_factory(c2s={"fast_token_lifetime_secs": 1})
    c = await tls_client(srv)
    t = token_of(await c.sasl2("alice", "alicepass", device="phone-1", inline=request_token()))
    await c.close()
    await asyncio.sleep(2.1)
    assert await refused(srv, t, 1) == "credentials-expired"
    c = await tls_client(srv)
    s = await c.sasl2("alice", "alicepass", device="phone-1", inline=request_token())
    assert token_of(s) != t
    await c.close()


async def test_invalidate_logs_the_device_out(server):
    """XEP-0484 `invalidate`: a device authenticating with its token and `invalidate='true'`
    is logged in this once; then neither that token nor the device's other one (the one it
    replaced, still valid until then) works, and a token asked for beside it is not issued."""
    c = await tls_client(server)
    t1 = token_of(await c.sasl2("alice", "alicepass", device="phone-1", inline=request_token()))
    await c.close()
    c, s = await token_login(server, t1, 1, inline=request_token())
    t2 = token_of(s)
    await c.close()
    c, s = await token_login(server, t2, 2, inline=request_token() + bind2(),
                             fast_attrs=" invalidate='true'")
    assert s.find(tag(NS_FAST, "token")) is None, xml(s)
    assert s.find(tag(NS_BIND2, "bound")) is not None, xml(s)
    await c.close()
    assert await refused(server, t2, 3) == "not-authorized"
    assert await refused(server, t1, 4) == "not-authorized"


async def test_a_token_asked_for_expr_is_refused_with_none(server):
    """XEP-0484 §3.3: a token is bound to the mechanism it was asked for; a token asked for
    with channel binding (-EXPR) is refused without it (-NONE)."""
    c = await tls_client(server)
    s = await c.sasl2("alice", "alicepass", device="phone-1",
                      inline=f"<request-token xmlns='{NS_FAST}' mechanism='HT-SHA-256-EXPR'/>")
    t = token_of(s)
    await c.close()
    assert await refused(server, t, 1) == "not-authorized"


async def test_the_count_restarts_with_each_token(server):
    """XEP-0484 §3.1: the count is per token, reset to zero when the token changes; the
    replaced token keeps its own."""
    c = await tls_client(server)
    t1 = token_of(await c.sasl2("alice", "alicepass", device="phone-1",
                                inline=request_token()))
    await c.close()
    c, s = await token_login(server, t1, 5, inline=request_token())
    t2 = token_of(s)
    await c.close()
    # The replaced token: its own count, 5.
    assert await refused(server, t1, 5) == "not-authorized"
    c, _ = await token_login(server, t1, 6)
    await c.close()
    # The new one starts again at 1, then must rise.
    c, _ = await token_login(server, t2, 1)
    await c.close()
    assert await refused(server, t2, 1) == "not-authorized"
    c, _ = await token_login(server, t2, 2)
    await c.close()


async def test_a_token_and_its_count_survive_kill_9(server):
    """A token the server handed out (and the count it last accepted) is stored before the
    success that carries it: a `kill -9` right after loses neither."""
    c = await tls_client(server)
    t = token_of(await c.sasl2("alice", "alicepass", device="phone-1", inline=request_token()))
    await c.close()
    c, _ = await token_login(server, t, 5)
    await c.close()
    server.crash_restart()
    assert await refused(server, t, 5) == "not-authorized"  # still a replay
    c, s = await token_login(server, t, 6, inline=bind2())
    assert s.find(tag(NS_BIND2, "bound")) is not None
    await c.close()


async def test_password_change_kills_tokens(server):
    c = await tls_client(server)
    t = token_of(await c.sasl2("alice", "alicepass", inline=request_token()))
    await c.close()
    c, _ = await token_login(server, t, 1, device="device-1")
    await c.close()
    assert server.user("passwd", "alice", password="newpass").returncode == 0
    assert await refused(server, t, 2, device="device-1") == "not-authorized"


async def test_fast_token_flood_is_bounded(server_factory):
    srv = server_factory(c2s={"fast_max_devices": 3})
    tokens = {}
    c = await tls_client(srv)
    for i in range(6):
        dev = f"dev-{i}"
        s = await c.sasl2("alice", "alicepass", device=dev, inline=request_token())
        tokens[dev] = token_of(s)
        await c.close()
        c = await tls_client(srv)
    await c.close()
    # Only the three devices issued last keep their tokens.
    for i in range(6):
        dev = f"dev-{i}"
        if i < 3:
            assert await refused(srv, tokens[dev], 1, device=dev) == "not-authorized"
        else:
            c2, _ = await token_login(srv, tokens[dev], 1, device=dev)
            await c2.close()


async def test_malformed_fast_requests(server_factory):
    srv = server_factory(c2s={"max_auth_attempts": 10})
    c = await tls_client(srv)
    for initial, inline, cond in [
        (b"junk", fast(1), "malformed-request"),
        (ht_message("alice", "t"), f"<fast xmlns='{NS_FAST}' count='x'/>", "malformed-request"),
        (ht_message("alice", "t"), fast(1, " invalidate='yes'"), "malformed-request"),
    ]:
        with pytest.raises(SaslFailure) as e:
            await c.sasl2("alice", "", HT, initial=initial, inline=inline)
        assert e.value.condition == cond
    with pytest.raises(SaslFailure) as e:
        await c.sasl2("alice", "", "HT-SHA-256-EXPR", initial=b"x")
    assert e.value.condition == "malformed-request"
    with pytest.raises(SaslFailure) as e:
        await c.sasl2("alice", "", "HT-SHA-256-UNIQ", initial=b"x")  # TLS 1.2 only
    assert e.value.condition == "invalid-mechanism"
    with pytest.raises(SaslFailure) as e:
        await c.sasl2("alice", "alicepass", "PLAIN",
                      inline=f"<request-token xmlns='{NS_FAST}' mechanism='HT-MD5'/>")
    assert e.value.condition == "invalid-mechanism"
    s = await c.sasl2("alice", "alicepass", "PLAIN")
    assert s.find(tag(NS_FAST, "token")) is None
    await c.close()
