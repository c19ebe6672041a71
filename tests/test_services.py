"""Server modules: XEP-0030 disco, XEP-0199 ping, XEP-0092 version."""
import pytest

from slix import slix_login
from xmpp_raw import (NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING, NS_REGISTER, NS_VERSION,
                      stanza_error, tag)


def features(result):
    q = result.find(tag(NS_DISCO_INFO, "query"))
    return {f.get("var") for f in q.findall(tag(NS_DISCO_INFO, "feature"))}


def identities(result):
    q = result.find(tag(NS_DISCO_INFO, "query"))
    return {(i.get("category"), i.get("type")) for i in q.findall(tag(NS_DISCO_INFO, "identity"))}


@pytest.mark.parametrize("to", ["localhost", None, "bob@localhost"])
async def test_ping(server, to):
    c = await server.login("alice", "a")
    r = await c.iq("get", to, f"<ping xmlns='{NS_PING}'/>")
    assert r.get("type") == "result" and len(r) == 0
    await c.close()


async def test_ping_to_an_online_client_is_delivered(server):
    """XEP-0199 §4.1: a ping to a full JID goes to that client, which answers it."""
    a = await server.login("alice", "a")
    b = await server.login("bob", "b")
    a.send(f"<iq type='get' id='p' to='bob@localhost/b'><ping xmlns='{NS_PING}'/></iq>")
    got = await b.expect(lambda e: e.get("id") == "p")
    assert got.get("from") == "alice@localhost/a"
    b.send("<iq type='result' id='p' to='alice@localhost/a'/>")
    r = await a.expect(lambda e: e.get("id") == "p")
    assert r.get("type") == "result"
    await a.close()
    await b.close()


async def test_disco_server(server):
    c = await server.login("alice", "a")
    info = await c.iq("get", "localhost", f"<query xmlns='{NS_DISCO_INFO}'/>")
    assert ("server", "im") in identities(info)
    assert {NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING, NS_VERSION, NS_REGISTER} <= features(info)
    items = await c.iq("get", "localhost", f"<query xmlns='{NS_DISCO_ITEMS}'/>")
    assert items.get("type") == "result"
    assert items.find(tag(NS_DISCO_ITEMS, "query")) is not None
    node = await c.iq("get", "localhost", f"<query xmlns='{NS_DISCO_INFO}' node='nope'/>")
    assert stanza_error(node) == "item-not-found"
    await c.close()


async def test_disco_account(server):
    """XEP-0030 §8: the server answers disco#info for an account only to whom the account
    shares its presence with (and to itself): no directory harvesting. disco#items of an
    account that does not exist is an empty result, its disco#info service-unavailable."""
    from test_im import make_mutual
    c = await server.login("alice", "a")
    info = await c.iq("get", "bob@localhost", f"<query xmlns='{NS_DISCO_INFO}'/>")
    assert stanza_error(info) == "service-unavailable", "not subscribed to bob's presence"
    own = await c.iq("get", None, f"<query xmlns='{NS_DISCO_INFO}'/>")
    assert ("account", "registered") in identities(own), "no `to` = the user's own account"
    items = await c.iq("get", "bob@localhost", f"<query xmlns='{NS_DISCO_ITEMS}'/>")
    assert items.get("type") == "result"
    unknown = await c.iq("get", "nobody@localhost", f"<query xmlns='{NS_DISCO_INFO}'/>")
    assert stanza_error(unknown) == "service-unavailable"
    nobody = await c.iq("get", "nobody@localhost", f"<query xmlns='{NS_DISCO_ITEMS}'/>")
    assert nobody.get("type") == "result", "an empty result, as for an account without items"
    q = nobody.find(tag(NS_DISCO_ITEMS, "query"))
    assert q is not None and len(q) == 0
    await c.close()
    await make_mutual(server, "alice", "bob")
    c = await server.login("alice", "a")
    info = await c.iq("get", "bob@localhost", f"<query xmlns='{NS_DISCO_INFO}'/>")
    assert info.get("from") == "bob@localhost"
    assert ("account", "registered") in identities(info)
    assert NS_DISCO_INFO in features(info)
    await c.close()


async def test_version(server):
    c = await server.login("alice", "a")
    r = await c.iq("get", "localhost", f"<query xmlns='{NS_VERSION}'/>")
    q = r.find(tag(NS_VERSION, "query"))
    assert q.findtext(tag(NS_VERSION, "name")) == "Rookery"
    assert q.findtext(tag(NS_VERSION, "version"))
    assert q.find(tag(NS_VERSION, "os")) is None, "the OS is not disclosed by default"
    s = await c.iq("set", "localhost", f"<query xmlns='{NS_VERSION}'/>")
    assert stanza_error(s) == "bad-request"
    await c.close()


async def test_version_show_os(server_factory):
    srv = server_factory(users={"alice": "alicepass"}, version={"show_os": True})
    c = await srv.login("alice", "a")
    r = await c.iq("get", "localhost", f"<query xmlns='{NS_VERSION}'/>")
    assert r.find(f"{tag(NS_VERSION, 'query')}/{tag(NS_VERSION, 'os')}") is not None
    await c.close()


async def test_version_disabled(server_factory):
    srv = server_factory(users={"alice": "alicepass"}, version={"enabled": False})
    c = await srv.login("alice", "a")
    r = await c.iq("get", "localhost", f"<query xmlns='{NS_VERSION}'/>")
    assert stanza_error(r) == "service-unavailable"
    info = await c.iq("get", "localhost", f"<query xmlns='{NS_DISCO_INFO}'/>")
    assert NS_VERSION not in features(info), "disco must not advertise a disabled module"
    await c.close()


async def test_services_with_slixmpp(server):
    c = await slix_login(server, "alice", resource="s")
    try:
        await c.plugin["xep_0199"].ping(server.domain, timeout=10)
        info = await c.plugin["xep_0030"].get_info(jid=server.domain, timeout=10)
        assert ("server", "im", None, "Rookery") in info["disco_info"]["identities"]
        assert NS_PING in info["disco_info"]["features"]
        items = await c.plugin["xep_0030"].get_items(jid=server.domain, timeout=10)
        assert items["type"] == "result"
        v = await c.plugin["xep_0092"].get_version(server.domain, timeout=10)
        assert v["software_version"]["name"] == "Rookery"
    finally:
        await c.close()


NS_EXTDISCO = "urn:xmpp:extdisco:2"
SERVERINFO = "http://jabber.org/network/serverinfo"


async def test_contact_addresses(server_factory):
    """XEP-0157: the configured addresses as an XEP-0128 form in the server's disco#info, read
    by slixmpp's disco plugin with XEP-0128; no form when none is configured."""
    srv = server_factory(contact={"abuse": ["mailto:abuse@localhost"],
                                  "security": ["xmpp:sec@localhost", "https://localhost/sec"]})
    c = await slix_login(srv, "alice")
    try:
        c.register_plugin("xep_0128")
        info = await c.plugin["xep_0030"].get_info(jid="localhost")
        forms = [f.get_values() for f in info["disco_info"].iterables if f.name == "x"]
        form = next(f for f in forms if f["FORM_TYPE"] == [SERVERINFO])
        assert form["abuse-addresses"] == ["mailto:abuse@localhost"]
        assert form["security-addresses"] == ["xmpp:sec@localhost", "https://localhost/sec"]
        assert "admin-addresses" not in form
    finally:
        await c.close()


async def test_no_contact_form_by_default(server):
    c = await server.login("alice", "a")
    info = await c.iq("get", "localhost", f"<query xmlns='{NS_DISCO_INFO}'/>")
    assert info.find(".//{jabber:x:data}x") is None
    await c.close()


async def test_external_services(server_factory):
    """XEP-0215: STUN and TURN listed to local users; TURN credentials computed as coturn's
    REST API checks them (the password recomputed here from the shared secret); filtering by
    type; <credentials/> for one service; item-not-found for an unknown one; sets refused."""
    import base64, hashlib, hmac, time
    srv = server_factory(external_services=[
        {"type": "stun", "host": "stun.localhost", "port": 3478, "transport": "udp"},
        {"type": "turn", "host": "turn.localhost", "port": 3478, "transport": "udp",
         "secret": "north", "ttl_secs": 600},
    ])
    c = await srv.login("alice", "a")
    info = await c.iq("get", "localhost", f"<query xmlns='{NS_DISCO_INFO}'/>")
    assert NS_EXTDISCO in features(info)
    before = int(time.time())
    r = await c.iq("get", "localhost", f"<services xmlns='{NS_EXTDISCO}'/>")
    services = r.findall(f".//{tag(NS_EXTDISCO, 'service')}")
    assert [s.get("type") for s in services] == ["stun", "turn"]
    stun, turn = services
    assert stun.get("username") is None and stun.get("port") == "3478"
    user = turn.get("username")
    expiry, who = user.split(":", 1)
    assert who == "alice@localhost" and before + 600 <= int(expiry) <= int(time.time()) + 600
    want = base64.b64encode(hmac.new(b"north", user.encode(), hashlib.sha1).digest()).decode()
    assert turn.get("password") == want and turn.get("expires")
    only = await c.iq("get", "localhost", f"<services xmlns='{NS_EXTDISCO}' type='turn'/>")
    assert [s.get("type") for s in only.findall(f".//{tag(NS_EXTDISCO, 'service')}")] == ["turn"]
    cred = await c.iq("get", "localhost", f"<credentials xmlns='{NS_EXTDISCO}'>"
                      f"<service type='turn' host='turn.localhost'/></credentials>")
    assert cred.find(f".//{tag(NS_EXTDISCO, 'service')}").get("password")
    missing = await c.iq("get", "localhost", f"<credentials xmlns='{NS_EXTDISCO}'>"
                         f"<service type='turn' host='nope.localhost'/></credentials>")
    assert stanza_error(missing) == "item-not-found"
    bad = await c.iq("get", "localhost", f"<credentials xmlns='{NS_EXTDISCO}'/>")
    assert stanza_error(bad) == "bad-request"
    s = await c.iq("set", "localhost", f"<services xmlns='{NS_EXTDISCO}'/>")
    assert stanza_error(s) == "bad-request"
    await c.close()


async def test_no_external_services_by_default(server):
    c = await server.login("alice", "a")
    info = await c.iq("get", "localhost", f"<query xmlns='{NS_DISCO_INFO}'/>")
    assert NS_EXTDISCO not in features(info)
    r = await c.iq("get", "localhost", f"<services xmlns='{NS_EXTDISCO}'/>")
    assert stanza_error(r) == "service-unavailable"
    await c.close()
