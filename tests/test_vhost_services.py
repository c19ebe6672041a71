"""Each host's own services (virtual hosting, issue 14): `pubsub.<host>` and
`conference.<host>` for every `[[host]]` as for the primary domain, listed in that host's
disco#items alone; a host's accounts are the "local" ones of its services (who may create
nodes and rooms); accounts of the other hosts join its rooms and subscribe to its nodes as
anyone may. A `[[host]]` table renames or removes its services."""
from __future__ import annotations


import pytest
from slixmpp.exceptions import IqError, PresenceError
from slixmpp.plugins.xep_0004 import Form
from slixmpp.xmlstream import ET

from slix import SlixClient
from test_vhost import DAVE, SECOND, slix, two_hosts

T = 10
ERIN = ("erin", "erinpass")
NS_EVENT = "http://jabber.org/protocol/pubsub#event"
PLUGINS = ("xep_0004", "xep_0030", "xep_0045", "xep_0060")


async def login(srv, jid: str, password: str) -> SlixClient:
    """slixmpp with the disco, forms, MUC and pubsub plugins logged in as `jid`, available."""
    return await slix(srv, jid, password, PLUGINS)


def hosts_with_erin(server_factory, tmp_path, **host):
    srv = two_hosts(server_factory, tmp_path, **host)
    r = srv.user("add", f"{ERIN[0]}@{SECOND}", password=ERIN[1])
    assert r.returncode == 0, r.stderr
    return srv


async def items_of(c: SlixClient, jid: str) -> set[str]:
    r = await c.plugin["xep_0030"].get_items(jid=jid, timeout=T)
    return {i[0] for i in r["disco_items"]["items"]}


def entry(text: str):
    el = ET.Element("{urn:example}entry")
    el.text = text
    return el


def event_from(service: str, node: str, text: str):
    def pred(el):
        if not el.tag.endswith("message") or el.get("from") != service:
            return False
        items = el.find(f"{{{NS_EVENT}}}event/{{{NS_EVENT}}}items")
        return items is not None and items.get("node") == node and any(
            e.text == text for e in items.iter("{urn:example}entry"))
    return pred


async def test_each_host_lists_and_serves_its_own_pubsub_service(server_factory, tmp_path):
    srv = hosts_with_erin(server_factory, tmp_path)
    ps_a, ps_b = f"pubsub.{srv.domain}", f"pubsub.{SECOND}"
    alice = await login(srv, srv.jid("alice"), "alicepass")
    dave = await login(srv, f"dave@{SECOND}", DAVE[1])
    erin = await login(srv, f"erin@{SECOND}", ERIN[1])
    try:
        # disco#items of each host: its own services, not the other host's.
        b_items = await items_of(dave, SECOND)
        assert {ps_b, f"conference.{SECOND}"} <= b_items, b_items
        assert ps_a not in b_items and f"conference.{srv.domain}" not in b_items
        a_items = await items_of(alice, srv.domain)
        assert {ps_a, f"conference.{srv.domain}"} <= a_items, a_items
        assert ps_b not in a_items and f"conference.{SECOND}" not in a_items
        info = await dave.plugin["xep_0030"].get_info(jid=ps_b, timeout=T)
        assert ("pubsub", "service") in {
            (i[0], i[1]) for i in info["disco_info"]["identities"]}

        # A user of the host creates a node on its service; a user of the same host and
        # one of the primary subscribe; the publication reaches both, from pubsub.<host>.
        await dave.plugin["xep_0060"].create_node(ps_b, "news", timeout=T)
        await erin.plugin["xep_0060"].subscribe(ps_b, "news", timeout=T)
        await alice.plugin["xep_0060"].subscribe(ps_b, "news", timeout=T)
        await dave.plugin["xep_0060"].publish(ps_b, "news", id="1", payload=entry("hello B"),
                                              timeout=T)
        for c in (erin, alice):
            await c.inbox.wait(event_from(ps_b, "news", "hello B"), what="the notification")
        nodes = await dave.plugin["xep_0060"].get_nodes(jid=ps_b, timeout=T)
        assert "news" in {i[1] for i in nodes["disco_items"]["items"]}
        # The primary's service does not show the host's node, nor the reverse.
        nodes = await alice.plugin["xep_0060"].get_nodes(jid=ps_a, timeout=T)
        assert "news" not in {i[1] for i in nodes["disco_items"]["items"]}

        # "local" creation: each service's own host's accounts.
        with pytest.raises(IqError) as e:
            await alice.plugin["xep_0060"].create_node(ps_b, "alices", timeout=T)
        assert e.value.condition == "forbidden"
        with pytest.raises(IqError) as e:
            await dave.plugin["xep_0060"].create_node(ps_a, "daves", timeout=T)
        assert e.value.condition == "forbidden"

        # The primary's service works as before.
        await alice.plugin["xep_0060"].create_node(ps_a, "news", timeout=T)
        await alice.plugin["xep_0060"].subscribe(ps_a, "news", timeout=T)
        await alice.plugin["xep_0060"].publish(ps_a, "news", id="1", payload=entry("hello A"),
                                               timeout=T)
        await alice.inbox.wait(event_from(ps_a, "news", "hello A"), what="the notification")
    finally:
        for c in (alice, dave, erin):
            await c.close()


def groupchat(body: str, sender: str):
    return lambda el: el.tag.endswith("message") and el.get("type") == "groupchat" and \
        el.get("from", "").endswith("/" + sender) and \
        any(c.tag.endswith("body") and c.text == body for c in el)


async def test_a_room_on_the_hosts_conference_service(server_factory, tmp_path):
    srv = hosts_with_erin(server_factory, tmp_path)
    room = f"lounge@conference.{SECOND}"
    alice = await login(srv, srv.jid("alice"), "alicepass")
    dave = await login(srv, f"dave@{SECOND}", DAVE[1])
    erin = await login(srv, f"erin@{SECOND}", ERIN[1])
    try:
        muc = dave.plugin["xep_0045"]
        pres, *_ = await muc.join_muc_wait(room, "dave", timeout=T)
        assert {int(c) for c in pres["muc"]["status_codes"]} == {110, 201}
        form = Form()
        form["type"] = "submit"
        await muc.set_room_config(room, form, timeout=T)
        await erin.plugin["xep_0045"].join_muc_wait(room, "erin", timeout=T)
        # An account of the other host joins (it may not create, see below).
        await alice.plugin["xep_0045"].join_muc_wait(room, "alice", timeout=T)
        alice.send_message(mto=room, mbody="hi from localhost", mtype="groupchat")
        for c in (dave, erin):
            await c.inbox.wait(groupchat("hi from localhost", "alice"), what="alice's message")
        erin.send_message(mto=room, mbody="hi from second", mtype="groupchat")
        await alice.inbox.wait(groupchat("hi from second", "erin"), what="erin's message")
        listed = await items_of(alice, f"conference.{SECOND}")
        assert room in listed, listed

        # "local" room creation: the service's own host's accounts.
        with pytest.raises(PresenceError) as e:
            await alice.plugin["xep_0045"].join_muc_wait(f"alices@conference.{SECOND}",
                                                         "alice", timeout=T)
        assert e.value.condition == "not-allowed"
        with pytest.raises(PresenceError) as e:
            await muc.join_muc_wait(f"daves@conference.{srv.domain}", "dave", timeout=T)
        assert e.value.condition == "not-allowed"
        # The primary's service as before.
        pres, *_ = await alice.plugin["xep_0045"].join_muc_wait(
            f"home@conference.{srv.domain}", "alice", timeout=T)
        assert 201 in {int(c) for c in pres["muc"]["status_codes"]}
    finally:
        for c in (alice, dave, erin):
            await c.close()


async def test_a_host_table_renames_or_removes_its_services(server_factory, tmp_path):
    srv = hosts_with_erin(server_factory, tmp_path, pubsub="", muc=f"rooms.{SECOND}")
    dave = await login(srv, f"dave@{SECOND}", DAVE[1])
    try:
        listed = await items_of(dave, SECOND)
        assert f"rooms.{SECOND}" in listed, listed
        assert f"conference.{SECOND}" not in listed and f"pubsub.{SECOND}" not in listed
        await dave.plugin["xep_0045"].join_muc_wait(f"r@rooms.{SECOND}", "dave", timeout=T)
        # No service there: the domain is neither hosted nor routed (no federation).
        with pytest.raises(IqError):
            await dave.plugin["xep_0060"].create_node(f"pubsub.{SECOND}", "n", timeout=T)
    finally:
        await dave.close()


async def test_the_http_face_serves_the_hosts_service_and_pep(server_factory, tmp_path):
    """`/pubsub/{service}/{node}` (docs/http.md) for pubsub.<host> and a host's account,
    with a token `rookery token issue` gives an account of the host (a bare JID), which
    `rookery token list` then lists."""
    import httpx
    from test_http_pubsub import bearer, issue, node_url, token

    srv = hosts_with_erin(server_factory, tmp_path)
    ps_b = f"pubsub.{SECOND}"
    dave = await login(srv, f"dave@{SECOND}", DAVE[1])
    try:
        await dave.plugin["xep_0060"].create_node(ps_b, "news", timeout=T)
        await dave.plugin["xep_0060"].publish(ps_b, "news", id="1", payload=entry("over xmpp"),
                                              timeout=T)
        tok = issue(srv, f"dave@{SECOND}")
        # `token list` without an account lists every host's tokens.
        listed = token(srv, "list")
        assert listed.returncode == 0 and f"\tdave@{SECOND}\t" in listed.stdout, listed
        async with httpx.AsyncClient() as http:
            url = node_url(srv, "news", ps_b)
            r = await http.post(url + "/items?id=2", headers={
                **bearer(tok), "Content-Type": "application/json"}, content=b'{"n": 2}')
            assert r.status_code == 201, r.text
            r = await http.get(url + "/items")
            assert r.status_code == 200, r.text
            assert [i["id"] for i in r.json()["items"]] == ["2", "1"]
            assert r.json()["items"][0]["publisher"].startswith(f"dave@{SECOND}")
            # PEP of the host's account, read by its owner.
            await dave.plugin["xep_0060"].publish(None, "urn:example", id="p1",
                                                  payload=entry("pep"), timeout=T)
            r = await http.get(node_url(srv, "urn:example", f"dave@{SECOND}") + "/items",
                               headers=bearer(tok))
            assert r.status_code == 200, r.text
            assert [i["id"] for i in r.json()["items"]] == ["p1"]
            r = await http.get(node_url(srv, "news", f"pubsub.{srv.domain}") + "/items")
            assert r.status_code == 404  # the primary's service has no such node
    finally:
        await dave.close()


async def test_the_admin_api_lists_and_deletes_a_hosts_nodes(server_factory, tmp_path):
    """`/api/v1/pubsub/nodes?service=` and `rookery ctl pubsub --service`."""
    import json

    from test_admin import http

    srv = hosts_with_erin(server_factory, tmp_path)
    ps_b = f"pubsub.{SECOND}"
    dave = await login(srv, f"dave@{SECOND}", DAVE[1])
    try:
        for node in ("news", "weather"):
            await dave.plugin["xep_0060"].create_node(ps_b, node, timeout=T)
    finally:
        await dave.close()
    status, _, body = http(srv, "GET", f"/api/v1/pubsub/nodes?service={ps_b}")
    assert status == 200 and sorted(n["node"] for n in body["nodes"]) == ["news", "weather"]
    # The primary's service by default; an unknown service is 404.
    assert http(srv, "GET", "/api/v1/pubsub/nodes")[2]["nodes"] == []
    assert http(srv, "GET", "/api/v1/pubsub/nodes?service=pubsub.nowhere.test")[0] == 404
    r = srv.ctl("--json", "pubsub", "--service", ps_b)
    assert r.returncode == 0 and len(json.loads(r.stdout)["nodes"]) == 2, r.stderr
    r = srv.ctl("pubsub", "--service", ps_b, "delete", "news")
    assert r.returncode == 0, r.stderr
    assert http(srv, "DELETE", f"/api/v1/pubsub/nodes/news?service={ps_b}")[0] == 404
    assert [n["node"] for n in http(srv, "GET", f"/api/v1/pubsub/nodes?service={ps_b}")[2][
        "nodes"]] == ["weather"]


async def test_ad_hoc_commands_of_a_host_are_named_by_that_host(server_factory, tmp_path):
    """XEP-0050 §7: a responder reports its own command nodes only — the items an admin of
    the second host gets from it name that host, not the primary domain."""
    srv = server_factory(users={"alice": "alicepass"}, admins=[f"dave@{SECOND}"],
                         host=[{"domain": SECOND}])
    r = srv.user("add", f"{DAVE[0]}@{SECOND}", password=DAVE[1])
    assert r.returncode == 0, r.stderr
    dave = await slix(srv, f"dave@{SECOND}", DAVE[1], plugins=("xep_0050",))
    try:
        items = await dave.plugin["xep_0050"].get_commands(SECOND, timeout=10)
        jids = {i[0] for i in items["disco_items"]["items"]}
        assert jids == {SECOND}, jids
    finally:
        await dave.close()
