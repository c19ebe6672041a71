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
    c = await server.login("alice", "a")
    info = await c.iq("get", "bob@localhost", f"<query xmlns='{NS_DISCO_INFO}'/>")
    assert info.get("from") == "bob@localhost"
    assert ("account", "registered") in identities(info)
    assert NS_DISCO_INFO in features(info)
    own = await c.iq("get", None, f"<query xmlns='{NS_DISCO_INFO}'/>")
    assert ("account", "registered") in identities(own), "no `to` = the user's own account"
    items = await c.iq("get", "bob@localhost", f"<query xmlns='{NS_DISCO_ITEMS}'/>")
    assert items.get("type") == "result"
    unknown = await c.iq("get", "nobody@localhost", f"<query xmlns='{NS_DISCO_INFO}'/>")
    assert stanza_error(unknown) == "service-unavailable"
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
