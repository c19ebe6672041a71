"""Resource binding (RFC 6120 §7) and the legacy session establishment (RFC 3921 §3)."""
import pytest

from xmpp_raw import NS_BIND, NS_SESSION, StreamError, local, stanza_error, tag


async def test_bind_requested_resource(server):
    c = await server.login("alice", "phone")
    assert c.jid == "alice@localhost/phone"
    await c.close()


async def test_bind_server_generated_resource(server):
    a = await server.login("alice")
    b = await server.login("alice")
    for c in (a, b):
        user, _, res = c.jid.partition("/")
        assert user == "alice@localhost" and res
    assert a.jid != b.jid
    await a.close()
    await b.close()


async def test_bind_features_and_legacy_session(server):
    c = server.client()
    await c.negotiate_tls()
    await c.auth("alice", "alicepass")
    assert c.has_feature(NS_BIND, "bind")
    sess = c.features.find(tag(NS_SESSION, "session"))
    assert sess is not None and sess.find(tag(NS_SESSION, "optional")) is not None
    # Older clients (Psi) still send <session/>, before or after bind: both succeed.
    r = await c.iq("set", None, f"<session xmlns='{NS_SESSION}'/>")
    assert r.get("type") == "result"
    await c.bind("r")
    r = await c.iq("set", None, f"<session xmlns='{NS_SESSION}'/>")
    assert r.get("type") == "result"
    await c.close()


async def test_bind_conflict_replaces_the_old_session(server):
    """RFC 6120 §7.7.2.2: the new session wins; the old one gets a `conflict` stream error."""
    old = await server.login("alice", "dup")
    new = await server.login("alice", "dup")
    assert new.jid == old.jid == "alice@localhost/dup"
    assert await old.wait_closed() == ("conflict", True)
    # The new session is the one that receives stanzas for the JID.
    bob = await server.login("bob", "b")
    bob.message("alice@localhost/dup", "to the new one")
    msg = await new.expect(lambda e: local(e) == "message")
    assert msg.findtext("{jabber:client}body") == "to the new one"
    await new.close()
    await bob.close()


async def test_resource_is_normalized_and_invalid_is_refused(server):
    """RFC 7622 §3.4: OpaqueString (NFC); at most 1023 bytes."""
    c = server.client()
    await c.negotiate_tls()
    await c.auth("alice", "alicepass")
    r = await c.iq("set", None, f"<bind xmlns='{NS_BIND}'><resource>{'x' * 1024}</resource></bind>")
    assert r.get("type") == "error" and stanza_error(r) == "bad-request"
    jid = await c.bind("cafe\u0301")
    assert jid == "alice@localhost/caf\u00e9"
    await c.close()


async def test_stanza_before_bind_is_refused(server):
    c = server.client()
    await c.negotiate_tls()
    await c.auth("alice", "alicepass")
    c.send("<message to='bob@localhost'><body>unbound</body></message>")
    with pytest.raises(StreamError) as e:
        await c.recv()
    assert e.value.condition == "not-authorized"


async def test_iq_before_bind_to_another_entity_ends_the_stream(server):
    """RFC 6120 §7.1: before binding, a stanza to an entity other than the server or the
    client's own account is not processed and the stream closes with <not-authorized/>; an
    IQ to the account itself is only refused."""
    c = server.client()
    await c.negotiate_tls()
    await c.auth("alice", "alicepass")
    r = await c.iq("set", server.jid("alice"), "<query xmlns='jabber:iq:private'/>")
    assert r.get("type") == "error" and stanza_error(r) == "not-authorized"
    c.send(f"<iq type='set' id='x' to='{server.jid('bob')}'>"
           "<query xmlns='jabber:iq:private'/></iq>")
    with pytest.raises(StreamError) as e:
        await c.recv()
    assert e.value.condition == "not-authorized"


async def test_second_bind_on_a_bound_stream_is_not_honoured(server):
    c = await server.login("alice", "one")
    r = await c.iq("set", None, f"<bind xmlns='{NS_BIND}'><resource>two</resource></bind>")
    assert r.get("type") == "error"
    await c.close()
