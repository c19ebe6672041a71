"""XEP-0077 in-band registration: off by default; when on, register, change password, remove."""
import pytest

from xmpp_raw import (NS_REGISTER, NS_REGISTER_FEATURE, SaslFailure, StreamError, local,
                      stanza_error, tag)

OPEN = {"registration": {"enabled": True, "min_interval_secs": 0, "min_password_len": 8}}


def reg_set(user, pw):
    return (f"<query xmlns='{NS_REGISTER}'><username>{user}</username>"
            f"<password>{pw}</password></query>")


async def pre_auth(srv, ip=None):
    c = srv.client(local_addr=ip)
    await c.negotiate_tls()
    return c


async def test_registration_off_by_default(server):
    c = await pre_auth(server)
    assert not c.has_feature(NS_REGISTER_FEATURE, "register")
    r = await c.iq("get", None, f"<query xmlns='{NS_REGISTER}'/>")
    assert stanza_error(r) == "service-unavailable"
    r = await c.iq("set", None, reg_set("mallory", "longenough"))
    assert stanza_error(r) == "service-unavailable"
    c.abort()
    assert server.user("list").stdout.count("mallory") == 0


async def test_other_iq_before_auth_is_refused(server_factory):
    srv = server_factory(users={}, **OPEN)
    c = await pre_auth(srv)
    c.send("<iq type='get' id='x'><ping xmlns='urn:xmpp:ping'/></iq>")
    with pytest.raises(StreamError) as e:
        await c.recv()
    assert e.value.condition == "not-authorized"


async def test_register_login_passwd_remove(server_factory, backend):
    srv = server_factory(backend=backend, users={"bob": "bobpass"}, **OPEN)
    c = await pre_auth(srv)
    assert c.has_feature(NS_REGISTER_FEATURE, "register")
    form = await c.iq("get", None, f"<query xmlns='{NS_REGISTER}'/>")
    q = form.find(tag(NS_REGISTER, "query"))
    assert q.find(tag(NS_REGISTER, "username")) is not None
    assert q.find(tag(NS_REGISTER, "password")) is not None
    r = await c.iq("set", None, reg_set("dave", "davepass1"))
    assert r.get("type") == "result"
    # Registered on this stream: authenticate right away.
    await c.auth("dave", "davepass1", "SCRAM-SHA-256")
    assert await c.bind("r") == "dave@localhost/r"
    assert "dave@localhost" in srv.user("list").stdout

    # Password change (XEP-0077 §3.3).
    info = await c.iq("get", None, f"<query xmlns='{NS_REGISTER}'/>")
    assert info.find(f"{tag(NS_REGISTER, 'query')}/{tag(NS_REGISTER, 'registered')}") is not None
    short = await c.iq("set", None, reg_set("dave", "short"))
    assert stanza_error(short) == "not-acceptable"
    other = await c.iq("set", None, reg_set("bob", "newdavepass"))
    assert stanza_error(other) == "not-allowed"
    # §3.3: incomplete information (no username) is bad-request, not "changes not allowed".
    bare = await c.iq("set", None, f"<query xmlns='{NS_REGISTER}'><password>newdavepass</password></query>")
    assert stanza_error(bare) == "bad-request"
    # §3.2: <remove/> with anything beside it is bad-request, and the account stays.
    mixed = await c.iq("set", None, f"<query xmlns='{NS_REGISTER}'><remove/><username>dave</username></query>")
    assert stanza_error(mixed) == "bad-request"
    ok = await c.iq("set", None, reg_set("dave", "newdavepass"))
    assert ok.get("type") == "result"
    d2 = await srv.login("dave", "second", password="newdavepass")
    old = srv.client()
    await old.negotiate_tls()
    with pytest.raises(SaslFailure, match="not-authorized"):
        await old.authenticate("dave", "davepass1", "PLAIN")
    old.abort()

    # Removal (XEP-0077 §3.2): the result, then every session of the account ends.
    bye = await c.iq("set", None, f"<query xmlns='{NS_REGISTER}'><remove/></query>")
    assert bye.get("type") == "result"
    assert (await c.wait_closed())[0] == "not-authorized"
    assert (await d2.wait_closed())[0] == "not-authorized"
    gone = srv.client()
    await gone.negotiate_tls()
    with pytest.raises(SaslFailure, match="not-authorized"):
        await gone.authenticate("dave", "newdavepass", "SCRAM-SHA-1")
    gone.abort()
    assert "dave@localhost" not in srv.user("list").stdout


async def test_register_conflict_and_bad_input(server_factory):
    srv = server_factory(users={"bob": "bobpass"}, **OPEN)
    c = await pre_auth(srv)
    r = await c.iq("set", None, reg_set("bob", "anotherpass"))
    assert stanza_error(r) == "conflict"
    r = await c.iq("set", None, reg_set("BOB", "anotherpass"))
    assert stanza_error(r) == "conflict", "usernames are case-folded (RFC 7622)"
    r = await c.iq("set", None, reg_set("eve", "short"))
    assert stanza_error(r) == "not-acceptable"
    r = await c.iq("set", None, reg_set("a@b", "longenough"))
    assert stanza_error(r) == "jid-malformed"
    r = await c.iq("set", None, f"<query xmlns='{NS_REGISTER}'><username>eve</username></query>")
    assert stanza_error(r) == "not-acceptable"
    c.abort()


async def test_registration_is_rate_limited_per_ip(server_factory):
    srv = server_factory(users={}, registration={"enabled": True, "min_interval_secs": 3600})
    c = await pre_auth(srv, "127.0.0.2")
    assert (await c.iq("set", None, reg_set("first", "password1"))).get("type") == "result"
    r = await c.iq("set", None, reg_set("second", "password2"))
    assert stanza_error(r) == "resource-constraint"
    assert r.find("{jabber:client}error").get("type") == "wait"
    c.abort()
    c = await pre_auth(srv, "127.0.0.2")
    r = await c.iq("set", None, reg_set("third", "password3"))
    assert stanza_error(r) == "resource-constraint"
    c.abort()
    c = await pre_auth(srv, "127.0.0.3")
    r = await c.iq("set", None, reg_set("fourth", "password4"))
    assert r.get("type") == "result", "another address is not limited"
    c.abort()


async def test_password_change_without_open_registration(server):
    """Registration closed still lets a logged-in user change the password and leave."""
    c = await server.login("carol", "c")
    r = await c.iq("set", None, reg_set("carol", "carolnewpass"))
    assert r.get("type") == "result"
    d = await server.login("carol", "d", password="carolnewpass")
    bye = await d.iq("set", None, f"<query xmlns='{NS_REGISTER}'><remove/></query>")
    assert bye.get("type") == "result"
    assert (await d.wait_closed())[0] == "not-authorized"
    assert (await c.wait_closed())[0] == "not-authorized"
    assert local(bye) == "iq"


async def test_register_iq_to_another_account_is_refused(server):
    """jabber:iq:register acts on the sender's own account, addressed to the server or to
    itself; sent to someone else's bare JID it must not act at all (and certainly not on the
    sender's account)."""
    bob = await server.login("bob", "b")
    r = await bob.iq("set", "alice@localhost", f"<query xmlns='{NS_REGISTER}'><remove/></query>")
    assert stanza_error(r) == "service-unavailable"
    r = await bob.iq("set", "alice@localhost", reg_set("bob", "hijacked-pass"))
    assert stanza_error(r) == "service-unavailable"
    r = await bob.iq("get", "alice@localhost", f"<query xmlns='{NS_REGISTER}'/>")
    assert stanza_error(r) == "service-unavailable"
    users = server.user("list").stdout
    assert "alice@localhost" in users and "bob@localhost" in users
    # To the server and to oneself it works.
    r = await bob.iq("get", "localhost", f"<query xmlns='{NS_REGISTER}'/>")
    assert r.get("type") == "result"
    r = await bob.iq("get", "bob@localhost", f"<query xmlns='{NS_REGISTER}'/>")
    assert r.get("type") == "result"
    await bob.close()


async def test_cli_delete_removes_the_same_data_as_in_band_removal(server):
    """`rookery user delete` goes through the same store deletion as XEP-0077 removal: the
    roster, offline messages and PEP nodes go with the account, so an account created again
    under the name starts empty."""
    carol = await server.login("carol", "c")
    r = await carol.iq("set", None, "<query xmlns='jabber:iq:roster'>"
                       "<item jid='bob@localhost' name='Bob'/></query>")
    assert r.get("type") == "result"
    r = await carol.iq("set", None, "<pubsub xmlns='http://jabber.org/protocol/pubsub'>"
                       "<publish node='urn:xmpp:tune'><item id='current'>"
                       "<tune xmlns='http://jabber.org/protocol/tune'><title>Gone</title></tune>"
                       "</item></publish></pubsub>")
    assert r.get("type") == "result"
    await carol.close()
    bob = await server.login("bob", "b")
    bob.message("carol@localhost", "kept offline")
    await bob.iq("get", None, "<ping xmlns='urn:xmpp:ping'/>")
    await bob.close()
    server.stop()   # the running server's caches are not the CLI's business
    r = server.user("delete", "carol")
    assert r.returncode == 0, r.stderr
    assert server.user("add", "carol", password="carolpass").returncode == 0
    server.start()
    carol = await server.login("carol", "again")
    r = await carol.iq("get", None, "<query xmlns='jabber:iq:roster'/>")
    assert r.find(f".//{{jabber:iq:roster}}item") is None, "roster emptied"
    r = await carol.iq("get", "carol@localhost", "<pubsub xmlns='http://jabber.org/protocol/pubsub'>"
                       "<items node='urn:xmpp:tune'/></pubsub>")
    assert stanza_error(r) == "item-not-found", "PEP node deleted"
    carol.send("<presence/>")
    await carol.flush()
    got = []
    try:
        while True:
            el = await carol.recv(timeout=2)
            if local(el) == "message":
                got.append(el)
    except TimeoutError:
        pass
    assert not got, "offline messages deleted"
    await carol.close()
