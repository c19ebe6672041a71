"""Modern client login: XEP-0388 SASL2 with XEP-0474 downgrade protection, XEP-0386 Bind2
inline (carbons, CSI, stream management) and XEP-0198 resumption inline in SASL2.

No client library of the test environment speaks SASL2 (slixmpp has no plugin for it), so the
client side is the raw client's `sasl2()` (tests/xmpp_raw.py): a SCRAM client written from
RFC 5802 with Python's hashlib, checking the server's `d=` and signature itself. Every
machine step (each failure condition, malformed requests) is also a unit test in
crates/c2s/src/machine.rs; here the real binary is driven over TLS sockets."""
import xml.etree.ElementTree as ET

import pytest

from xmpp_raw import (NS_BIND, NS_BIND2, NS_CLIENT, NS_SASL2, NS_SM, SaslFailure, local,
                      tag)

NS_CARBONS = "urn:xmpp:carbons:2"
NS_CSI = "urn:xmpp:csi:0"
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
    el = await c2.expect(lambda e: local(e) == "message", what="the message sent meanwhile")
    assert el.findtext(BODY) == "while away"
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
