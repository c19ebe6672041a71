"""`[c2s] require_encryption` (default true) and `allow_unencrypted_plain` (default false).

By default TLS comes before SASL on the STARTTLS port (RFC 6120 §5.3.1). With
`require_encryption = false`, kept for measuring unencrypted sessions, STARTTLS is optional
and SCRAM may run on the plain stream; PLAIN and in-band registration, which carry the password
itself, stay refused there unless `allow_unencrypted_plain = true` too; SASL2 and FAST are
never offered there.
"""
import pytest

from slix import slix_login
from xmpp_raw import NS_SASL, NS_SASL2, NS_TLS, SaslFailure, tag

PLAIN_OK = {"require_encryption": False}
SCRAMS = ["SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-512"]


@pytest.mark.parametrize("mech", ["SCRAM-SHA-1", "PLAIN"])
async def test_default_requires_tls_before_sasl(server, mech):
    c = server.client()
    await c.connect()
    f = await c.open_stream()
    starttls = f.find(tag(NS_TLS, "starttls"))
    assert starttls is not None and starttls.find(tag(NS_TLS, "required")) is not None
    assert c.mechanisms() == []
    with pytest.raises(SaslFailure) as e:
        await c.authenticate("alice", "alicepass", mech)
    assert e.value.condition == "encryption-required"
    assert await c.stream_error() == "policy-violation"
    assert "require_encryption = false" not in server.log()


async def test_optional_tls_offers_scram_but_not_plain(server_factory):
    srv = server_factory(c2s=PLAIN_OK, registration={"enabled": True})
    c = srv.client()
    await c.connect()
    f = await c.open_stream()
    starttls = f.find(tag(NS_TLS, "starttls"))
    assert starttls is not None and starttls.find(tag(NS_TLS, "required")) is None
    assert sorted(c.mechanisms()) == SCRAMS, "no PLAIN, no -PLUS without TLS"
    assert not c.has_feature("http://jabber.org/features/iq-register", "register")
    # XEP-0388 Security Considerations: SASL2 (and with it XEP-0484 FAST) is offered only
    # after TLS; asked for anyway, it fails with encryption-required.
    assert not c.has_feature(NS_SASL2, "authentication")
    with pytest.raises(SaslFailure) as e:
        await c.sasl2("alice", "alicepass")
    assert e.value.condition == "encryption-required"
    c.abort()
    assert "require_encryption = false" in srv.log(), "the startup warning"


@pytest.mark.parametrize("mech", SCRAMS)
async def test_scram_login_over_plain_tcp(server_factory, mech):
    srv = server_factory(c2s=PLAIN_OK, users={"alice": "alicepass"})
    c = srv.client()
    await c.connect()
    await c.open_stream()
    await c.auth("alice", "alicepass", mech)
    assert await c.bind("plain") == srv.jid("alice", "plain")
    assert c.ssl_object() is None
    pong = await c.iq("get", srv.domain, "<ping xmlns='urn:xmpp:ping'/>")
    assert pong.get("type") == "result"
    assert await c.close()


async def test_plain_is_refused_without_tls_then_scram_works(server_factory):
    srv = server_factory(c2s=PLAIN_OK, users={"alice": "alicepass"})
    c = srv.client()
    await c.connect()
    await c.open_stream()
    with pytest.raises(SaslFailure) as e:
        await c.authenticate("alice", "alicepass", "PLAIN")
    assert e.value.condition == "encryption-required"
    await c.auth("alice", "alicepass", "SCRAM-SHA-256")
    await c.bind("r")
    assert await c.close()


async def test_registration_is_refused_without_tls(server_factory):
    srv = server_factory(c2s=PLAIN_OK, registration={"enabled": True, "min_interval_secs": 0})
    c = srv.client()
    await c.connect()
    await c.open_stream()
    r = await c.iq("set", None, "<query xmlns='jabber:iq:register'><username>dave</username>"
                   "<password>davepass</password></query>")
    assert r.get("type") == "error"
    assert r.find(f"*/{{urn:ietf:params:xml:ns:xmpp-stanzas}}policy-violation") is not None
    c.abort()
    assert srv.user("list").stdout.count("dave") == 0


async def test_starttls_stays_available_and_then_plain_is_offered(server_factory):
    srv = server_factory(c2s=PLAIN_OK, users={"alice": "alicepass"})
    c = srv.client()
    await c.connect()
    await c.open_stream()
    await c.starttls()
    assert "PLAIN" in c.mechanisms()
    assert not c.has_feature(NS_TLS, "starttls")
    await c.auth("alice", "alicepass", "PLAIN")
    await c.bind("r")
    assert await c.close()


async def test_allow_unencrypted_plain(server_factory):
    srv = server_factory(c2s={**PLAIN_OK, "allow_unencrypted_plain": True},
                         users={"alice": "alicepass"}, registration={"enabled": True})
    c = srv.client()
    await c.connect()
    await c.open_stream()
    assert "PLAIN" in c.mechanisms()
    assert c.has_feature("http://jabber.org/features/iq-register", "register")
    await c.auth("alice", "alicepass", "PLAIN")
    await c.bind("r")
    assert await c.close()


async def test_allow_unencrypted_plain_alone_changes_nothing(server_factory):
    srv = server_factory(c2s={"allow_unencrypted_plain": True})
    c = srv.client()
    await c.connect()
    await c.open_stream()
    assert c.mechanisms() == []
    with pytest.raises(SaslFailure) as e:
        await c.authenticate("alice", "alicepass", "PLAIN")
    assert e.value.condition == "encryption-required"
    assert "has no effect" in srv.log()


async def test_slixmpp_scram_over_plain_tcp(server_factory):
    """The same with slixmpp, an independent client, without STARTTLS."""
    srv = server_factory(c2s=PLAIN_OK, users={"alice": "alicepass"})
    c = await slix_login(srv, "alice", resource="slix", mech="SCRAM-SHA-1", plaintext=True)
    try:
        assert str(c.boundjid) == srv.jid("alice", "slix")
        assert c.negotiated_mechanism() == "SCRAM-SHA-1"
        assert c.tls_version() is None
        await c.plugin["xep_0199"].ping(srv.domain, timeout=10)
    finally:
        await c.close()
