"""Publish-subscribe (XEP-0060) at pubsub.<domain> and PEP (XEP-0163), driven by slixmpp's
xep_0060/xep_0163 plugins (an independent implementation) and raw XML where the plugin cannot
say it (exact error children, IQ sets the plugin sends as gets).

Each use case with its success and its listed errors; access models; notifications (payloads
or not, retract, purge, delete with redirect, configuration, SubID headers); persistence across
a restart on each store; PEP auto-create, +notify delivery to contacts with caps, last items
on login, bookmarks/avatars/OMEMO with publish-options.
"""
from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import pytest
from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0004 import Form

import xmpp_raw
from slix import SlixClient

NS = "http://jabber.org/protocol/pubsub"
NS_OWNER = NS + "#owner"
NS_EVENT = NS + "#event"
NS_ERRORS = NS + "#errors"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_SHIM = "http://jabber.org/protocol/shim"
NS_TUNE = "http://jabber.org/protocol/tune"
NS_BOOKMARKS = "urn:xmpp:bookmarks:1"
NS_AVATAR_DATA = "urn:xmpp:avatar:data"
NS_AVATAR_META = "urn:xmpp:avatar:metadata"
NS_OMEMO_DEVICES = "eu.siacs.conversations.axolotl.devicelist"
T = 10


def svc(srv) -> str:
    return f"pubsub.{srv.domain}"


PLUGINS = ("xep_0004", "xep_0060", "xep_0115", "xep_0163", "xep_0118", "xep_0084",
           "xep_0402")


async def login(srv, user: str, resource: str = "test", *, presence: bool = True,
                plugins=PLUGINS, roster: bool = True) -> SlixClient:
    c = SlixClient(srv.jid(user, resource), srv.users[user])
    for p in plugins:
        c.register_plugin(p)
    c.connect(srv.host, srv.port)
    try:
        await asyncio.wait_for(c.session, 20)
    except BaseException:
        await c.close()
        raise
    if roster:
        await c.get_roster(timeout=T)
    if presence:
        c.send_presence()
    return c


class Clients:
    """Closes every client at the end of a test."""

    def __init__(self, srv):
        self.srv = srv
        self.all: list[SlixClient] = []

    async def __call__(self, user: str, resource: str = "test", **kw) -> SlixClient:
        c = await login(self.srv, user, resource, **kw)
        self.all.append(c)
        return c

    async def close(self):
        for c in self.all:
            await c.close()


@pytest.fixture
async def clients(server):
    cs = Clients(server)
    yield cs
    await cs.close()


def one(v):
    """A form value: slixmpp gives some single values as one-element lists."""
    return v[0] if isinstance(v, list) and len(v) == 1 else v


def local(el) -> str:
    return el.tag.rsplit("}", 1)[-1]


def form(form_type: str | None, fields: dict, ftype: str = "submit") -> Form:
    f = Form()
    f["type"] = ftype
    if form_type:
        f.add_field(var="FORM_TYPE", ftype="hidden", value=form_type)
    for k, v in fields.items():
        f.add_field(var=k, value=v)
    return f


def node_config(**fields) -> Form:
    return form(NS + "#node_config", {f"pubsub#{k}": v for k, v in fields.items()})


def publish_options(**fields) -> Form:
    return form(NS + "#publish-options", {f"pubsub#{k}": v for k, v in fields.items()})


def payload(text: str, ns: str = "urn:test:entry") -> ET.Element:
    el = ET.Element(f"{{{ns}}}entry")
    el.text = text
    return el


async def expect_error(coro, condition: str, app: str | None = None, type_: str | None = None):
    with pytest.raises(IqError) as ei:
        await coro
    err = ei.value.iq["error"]
    assert err["condition"] == condition, ET.tostring(ei.value.iq.xml)
    if app is not None:
        assert err.xml.find(f"{{{NS_ERRORS}}}{app}") is not None, ET.tostring(err.xml)
    if type_ is not None:
        assert err["type"] == type_, ET.tostring(err.xml)
    return ei.value.iq


async def raw_iq(c: SlixClient, type_: str, to: str | None, xml: str):
    iq = c.Iq()
    iq["type"] = type_
    if to:
        iq["to"] = to
    iq.append(ET.fromstring(xml))
    return await iq.send(timeout=T)


def event(node: str, kind: str, frm: str | None = None, item_id: str | None = None):
    """A predicate: a pubsub event message for `node` with a child `kind` (items' children:
    'item', 'retract'; or 'purge', 'delete', 'configuration', 'subscription')."""
    def pred(el):
        if local(el) != "message" or (frm and el.get("from", "").split("/")[0] != frm):
            return False
        ev = el.find(f"{{{NS_EVENT}}}event")
        if ev is None:
            return False
        items = ev.find(f"{{{NS_EVENT}}}items")
        if kind in ("item", "retract"):
            if items is None or items.get("node") != node:
                return False
            found = items.find(f"{{{NS_EVENT}}}{kind}")
            return found is not None and (item_id is None or found.get("id") == item_id)
        child = ev.find(f"{{{NS_EVENT}}}{kind}")
        return child is not None and child.get("node") == node
    return pred


async def absent(c: SlixClient, pred, seconds: float = 1.5) -> bool:
    try:
        await c.inbox.wait(pred, seconds)
        return False
    except AssertionError:
        return True


async def make_contacts(a: SlixClient, b: SlixClient):
    """A mutual presence subscription (both clients auto-authorize and auto-subscribe)."""
    aj, bj = a.boundjid.bare, b.boundjid.bare
    a.send_presence(pto=bj, ptype="subscribe")
    for _ in range(100):
        # A plain roster get (no XEP-0237 version: the whole roster in the result).
        ra = await a.make_iq_get(queryxmlns="jabber:iq:roster").send(timeout=T)
        rb = await b.make_iq_get(queryxmlns="jabber:iq:roster").send(timeout=T)
        ia = {str(k): v for k, v in ra["roster"]["items"].items()}
        ib = {str(k): v for k, v in rb["roster"]["items"].items()}
        sa = ia.get(bj, {}).get("subscription")
        sb = ib.get(aj, {}).get("subscription")
        if sa == "both" and sb == "both":
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no mutual subscription: {sa} / {sb}")


# ---- discovery ---------------------------------------------------------------------------

async def test_service_discovery(server, clients):
    a = await clients("alice")
    items = await a.plugin["xep_0030"].get_items(jid=server.domain, timeout=T)
    assert svc(server) in [i[0] for i in items["disco_items"]["items"]]
    info = await a.plugin["xep_0030"].get_info(jid=svc(server), timeout=T)
    assert ("pubsub", "service") in [(i[0], i[1]) for i in info["disco_info"]["identities"]]
    feats = set(info["disco_info"]["features"])
    for f in ("create-nodes", "publish", "subscribe", "retrieve-items", "publish-options",
              "access-authorize", "access-whitelist", "instant-nodes", "multi-subscribe"):
        assert f"{NS}#{f}" in feats
    await a.plugin["xep_0060"].create_node(svc(server), "disco", config=node_config(title="Disco"),
                                    timeout=T)
    await a.plugin["xep_0060"].publish(svc(server), "disco", id="i1", payload=payload("x"), timeout=T)
    nodes = await a.plugin["xep_0060"].get_nodes(jid=svc(server), timeout=T)
    assert ("disco", "Disco") in [(i[1], i[2]) for i in nodes["disco_items"]["items"]]
    ninfo = await a.plugin["xep_0030"].get_info(jid=svc(server), node="disco", timeout=T)
    assert ("pubsub", "leaf") in [(i[0], i[1]) for i in ninfo["disco_info"]["identities"]]
    meta = ninfo["disco_info"]["form"]
    assert one(meta["values"]["FORM_TYPE"]) == NS + "#meta-data"
    assert one(meta["values"]["pubsub#title"]) == "Disco"
    assert server.jid("alice") in meta["values"]["pubsub#owner"]
    ids = await a.plugin["xep_0060"].get_item_ids(svc(server), "disco", timeout=T)
    assert [i[2] for i in ids["disco_items"]["items"]] == ["i1"]
    with pytest.raises(IqError) as ei:
        await a.plugin["xep_0030"].get_info(jid=svc(server), node="missing", timeout=T)
    assert ei.value.condition == "item-not-found"


# ---- owner: create, configure, default, delete ---------------------------------------------

async def test_create_named_instant_and_errors(server_factory):
    srv = server_factory(pubsub={"create_nodes": "listed", "creators": ["alice@localhost"]})
    cs = Clients(srv)
    try:
        a, b = await cs("alice"), await cs("bob")
        ps = a.plugin["xep_0060"]
        await ps.create_node(svc(srv), "named", timeout=T)
        await expect_error(ps.create_node(svc(srv), "named", timeout=T), "conflict", type_="cancel")
        r = await raw_iq(a, "set", svc(srv), f"<pubsub xmlns='{NS}'><create/></pubsub>")
        instant = r.xml.find(f"{{{NS}}}pubsub/{{{NS}}}create").get("node")
        assert instant
        # Only listed creators.
        await expect_error(b.plugin["xep_0060"].create_node(svc(srv), "bobs", timeout=T),
                           "forbidden", type_="auth")
        # Create-and-configure; an invalid value refuses the node.
        await ps.create_node(svc(srv), "configured",
                             config=node_config(max_items="3", title="T"), timeout=T)
        cfg = await ps.get_node_config(svc(srv), "configured", timeout=T)
        values = cfg["pubsub_owner"]["configure"]["form"]["values"]
        assert values["pubsub#max_items"] == "3" and values["pubsub#title"] == "T"
        await expect_error(ps.create_node(svc(srv), "bad", config=node_config(access_model="x"),
                                          timeout=T), "not-acceptable")
        affs = await ps.get_affiliations(svc(srv), timeout=T)
        got = {(x["node"], x["affiliation"]) for x in affs["pubsub"]["affiliations"]}
        assert {("named", "owner"), (instant, "owner"), ("configured", "owner")} <= got
    finally:
        await cs.close()


async def test_configure_default_and_config_notification(server, clients):
    a, b = await clients("alice"), await clients("bob")
    s = svc(server)
    default = await a.plugin["xep_0060"].get_node_config(s, timeout=T)
    dv = default["pubsub_owner"]["default"]["form"]["values"]
    assert dv["pubsub#access_model"] == "open" and dv["pubsub#persist_items"] in (True, "1")
    await a.plugin["xep_0060"].create_node(s, "cfg", config=node_config(notify_config="1"), timeout=T)
    await b.plugin["xep_0060"].subscribe(s, "cfg", timeout=T)
    got = await a.plugin["xep_0060"].get_node_config(s, "cfg", timeout=T)
    fields = got["pubsub_owner"]["configure"]["form"]["values"]
    for var in ("pubsub#access_model", "pubsub#publish_model", "pubsub#persist_items",
                "pubsub#max_items", "pubsub#deliver_payloads", "pubsub#notify_retract",
                "pubsub#notify_delete", "pubsub#notify_config", "pubsub#send_last_published_item",
                "pubsub#title"):
        assert var in fields, var
    await a.plugin["xep_0060"].set_node_config(s, "cfg", node_config(title="Renamed"), timeout=T)
    await b.inbox.wait(event("cfg", "configuration"), T, "configuration notification")
    # Errors: not the owner; invalid value; no such node.
    await expect_error(b.plugin["xep_0060"].get_node_config(s, "cfg", timeout=T), "forbidden")
    await expect_error(b.plugin["xep_0060"].set_node_config(s, "cfg", node_config(title="x"), timeout=T),
                       "forbidden")
    await expect_error(a.plugin["xep_0060"].set_node_config(s, "cfg", node_config(max_items="many"),
                                                     timeout=T), "not-acceptable")
    await expect_error(a.plugin["xep_0060"].get_node_config(s, "nope", timeout=T), "item-not-found")


async def test_delete_with_redirect_and_purge(server, clients):
    a, b = await clients("alice"), await clients("bob")
    s, ps = svc(server), a.plugin["xep_0060"]
    await ps.create_node(s, "old", timeout=T)
    await b.plugin["xep_0060"].subscribe(s, "old", timeout=T)
    await ps.publish(s, "old", id="x", payload=payload("x"), timeout=T)
    await expect_error(b.plugin["xep_0060"].purge(s, "old", timeout=T), "forbidden")
    await ps.purge(s, "old", timeout=T)
    await b.inbox.wait(event("old", "purge"), T, "purge notification")
    items = await ps.get_items(s, "old", timeout=T)
    assert list(items["pubsub"]["items"]) == []
    await expect_error(b.plugin["xep_0060"].delete_node(s, "old", timeout=T), "forbidden")
    await raw_iq(a, "set", s, f"<pubsub xmlns='{NS_OWNER}'><delete node='old'>"
                              f"<redirect uri='xmpp:{s}?;node=new'/></delete></pubsub>")
    msg = await b.inbox.wait(event("old", "delete"), T, "delete notification")
    redirect = msg.find(f"{{{NS_EVENT}}}event/{{{NS_EVENT}}}delete/{{{NS_EVENT}}}redirect")
    assert redirect is not None and redirect.get("uri") == f"xmpp:{s}?;node=new"
    await expect_error(ps.delete_node(s, "old", timeout=T), "item-not-found")
    await expect_error(ps.purge(s, "old", timeout=T), "item-not-found")


# ---- publisher and subscriber ----------------------------------------------------------------

async def test_publish_subscribe_retrieve_retract(server, clients):
    a, b = await clients("alice"), await clients("bob")
    s, ps = svc(server), a.plugin["xep_0060"]
    await ps.create_node(s, "news", timeout=T)
    sub = await b.plugin["xep_0060"].subscribe(s, "news", timeout=T)
    assert sub["pubsub"]["subscription"]["subscription"] == "subscribed"
    assert sub["pubsub"]["subscription"]["subid"]
    # With an id, and without one (the service makes one up and returns it).
    await ps.publish(s, "news", id="first", payload=payload("one"), timeout=T)
    msg = await b.inbox.wait(event("news", "item", s, "first"), T, "notification")
    assert msg.get("type") == "headline"
    entry = msg.find(f".//{{urn:test:entry}}entry")
    assert entry is not None and entry.text == "one"
    r = await ps.publish(s, "news", payload=payload("two"), timeout=T)
    generated = r["pubsub"]["publish"]["item"]["id"]
    assert generated
    await b.inbox.wait(event("news", "item", s, generated), T, "second notification")
    # Retrieve: all (oldest first), by id, the last one.
    items = await b.plugin["xep_0060"].get_items(s, "news", timeout=T)
    assert [i["id"] for i in items["pubsub"]["items"]] == ["first", generated]
    one = await b.plugin["xep_0060"].get_item(s, "news", "first", timeout=T)
    assert [i["id"] for i in one["pubsub"]["items"]] == ["first"]
    last = await b.plugin["xep_0060"].get_items(s, "news", max_items=1, timeout=T)
    assert [i["id"] for i in last["pubsub"]["items"]] == [generated]
    # Own subscriptions.
    subs = await b.plugin["xep_0060"].get_subscriptions(s, timeout=T)
    assert [(x["node"], x["subscription"]) for x in subs["pubsub"]["subscriptions"]] == [
        ("news", "subscribed")]
    # Retract with notify.
    await expect_error(b.plugin["xep_0060"].retract(s, "news", "first", timeout=T), "forbidden")
    await expect_error(ps.retract(s, "news", "nope", timeout=T), "item-not-found")
    await ps.retract(s, "news", "first", notify=True, timeout=T)
    await b.inbox.wait(event("news", "retract", s, "first"), T, "retract notification")
    # Unsubscribe; then no notifications.
    await b.plugin["xep_0060"].unsubscribe(s, "news", timeout=T)
    await ps.publish(s, "news", id="third", payload=payload("3"), timeout=T)
    assert await absent(b, event("news", "item", s, "third"))


async def test_publish_errors(server_factory):
    srv = server_factory(pubsub={"max_payload_bytes": 200})
    cs = Clients(srv)
    try:
        a, b = await cs("alice"), await cs("bob")
        s, ps = svc(srv), a.plugin["xep_0060"]
        await ps.create_node(s, "n", timeout=T)
        await expect_error(b.plugin["xep_0060"].publish(s, "n", payload=payload("x"), timeout=T),
                           "forbidden", type_="auth")
        await expect_error(ps.publish(s, "missing", payload=payload("x"), timeout=T),
                           "item-not-found")
        await expect_error(ps.publish(s, "n", payload=payload("x" * 500), timeout=T),
                           "not-acceptable", "payload-too-big", "modify")
        await expect_error(raw_iq(a, "set", s, f"<pubsub xmlns='{NS}'><publish node='n'>"
                                               "<item><a xmlns='urn:x'/><b xmlns='urn:x'/></item>"
                                               "</publish></pubsub>"),
                           "bad-request", "invalid-payload")
        await expect_error(raw_iq(a, "set", s, f"<pubsub xmlns='{NS}'><publish node='n'>"
                                               "<item/></publish></pubsub>"),
                           "bad-request", "payload-required")
        await expect_error(raw_iq(a, "set", s, f"<pubsub xmlns='{NS}'><publish node='n'/>"
                                               "</pubsub>"),
                           "bad-request", "item-required")
        await expect_error(raw_iq(a, "set", s, f"<pubsub xmlns='{NS}'><publish>"
                                               "<item><a xmlns='urn:x'/></item></publish></pubsub>"),
                           "bad-request", "nodeid-required")
        # A transient notification-only node refuses payloads.
        await ps.create_node(s, "t", config=node_config(persist_items="0", deliver_payloads="0"),
                             timeout=T)
        await expect_error(ps.publish(s, "t", payload=payload("x"), timeout=T),
                           "bad-request", "item-forbidden")
        await expect_error(ps.get_items(s, "t", timeout=T), "feature-not-implemented",
                           "unsupported")
    finally:
        await cs.close()


async def test_publish_options_preconditions(server, clients):
    a = await clients("alice")
    s, ps = svc(server), a.plugin["xep_0060"]
    await ps.create_node(s, "pre", timeout=T)
    iq = await expect_error(
        ps.publish(s, "pre", payload=payload("x"), options=publish_options(access_model="whitelist"),
                   timeout=T), "conflict", "precondition-not-met", "cancel")
    assert iq is not None
    await ps.set_node_config(s, "pre", node_config(access_model="whitelist"), timeout=T)
    await ps.publish(s, "pre", payload=payload("x"),
                     options=publish_options(access_model="whitelist"), timeout=T)


async def test_subscribe_and_unsubscribe_errors_and_subids(server, clients):
    a, b, c = await clients("alice"), await clients("bob"), await clients("carol")
    s = svc(server)
    await a.plugin["xep_0060"].create_node(s, "n", timeout=T)
    await expect_error(b.plugin["xep_0060"].subscribe(s, "n", subscribee=server.jid("carol"), timeout=T),
                       "bad-request", "invalid-jid", "modify")
    await expect_error(b.plugin["xep_0060"].subscribe(s, "missing", timeout=T), "item-not-found")
    await expect_error(b.plugin["xep_0060"].unsubscribe(s, "n", timeout=T),
                       "unexpected-request", "not-subscribed", "cancel")
    first = await b.plugin["xep_0060"].subscribe(s, "n", timeout=T)
    subid1 = first["pubsub"]["subscription"]["subid"]
    # Subscribing again without options returns the same subscription.
    again = await b.plugin["xep_0060"].subscribe(s, "n", timeout=T)
    assert again["pubsub"]["subscription"]["subid"] == subid1
    # With options: a second subscription (multi-subscribe) and SubID headers.
    second = await raw_iq(b, "set", s,
                          f"<pubsub xmlns='{NS}'><subscribe node='n' jid='{server.jid('bob')}'/>"
                          f"<options><x xmlns='jabber:x:data' type='submit'>"
                          f"<field var='FORM_TYPE' type='hidden'><value>{NS}#subscribe_options</value></field>"
                          "<field var='pubsub#deliver'><value>1</value></field></x></options></pubsub>")
    subid2 = second.xml.find(f"{{{NS}}}pubsub/{{{NS}}}subscription").get("subid")
    assert subid2 and subid2 != subid1
    await a.plugin["xep_0060"].publish(s, "n", id="h", payload=payload("x"), timeout=T)
    msg = await b.inbox.wait(event("n", "item", s, "h"), T, "notification with headers")
    headers = [h.text for h in msg.findall(f"{{{NS_SHIM}}}headers/{{{NS_SHIM}}}header")
               if h.get("name") == "SubID"]
    assert sorted(headers) == sorted([subid1, subid2])
    await expect_error(b.plugin["xep_0060"].unsubscribe(s, "n", timeout=T),
                       "bad-request", "subid-required", "modify")
    await expect_error(b.plugin["xep_0060"].unsubscribe(s, "n", subid="bogus", timeout=T),
                       "not-acceptable", "invalid-subid", "modify")
    await expect_error(c.plugin["xep_0060"].unsubscribe(s, "n", subscribee=server.jid("bob"),
                                                 subid=subid1, timeout=T), "forbidden")
    await b.plugin["xep_0060"].unsubscribe(s, "n", subid=subid1, timeout=T)


async def test_subscription_options(server, clients):
    a, b = await clients("alice"), await clients("bob")
    s = svc(server)
    await a.plugin["xep_0060"].create_node(s, "opt", timeout=T)
    await b.plugin["xep_0060"].subscribe(s, "opt", timeout=T)
    got = await b.plugin["xep_0060"].get_subscription_options(s, "opt", server.jid("bob"), timeout=T)
    deliver = got.xml.find(f"{{{NS}}}pubsub/{{{NS}}}options/{{jabber:x:data}}x/"
                           "{jabber:x:data}field[@var='pubsub#deliver']/{jabber:x:data}value")
    assert deliver is not None and deliver.text == "1"
    default = await b.plugin["xep_0060"].get_subscription_options(s, "opt", timeout=T)
    assert default.xml.find(f"{{{NS}}}pubsub/{{{NS}}}default/{{jabber:x:data}}x/"
                            "{jabber:x:data}field[@var='pubsub#deliver']") is not None
    await expect_error(raw_iq(b, "get", s, f"<pubsub xmlns='{NS}'><options node='opt'/></pubsub>"),
                       "bad-request", "jid-required")
    await expect_error(raw_iq(a, "get", s, f"<pubsub xmlns='{NS}'><options node='opt' "
                                           f"jid='{server.jid('alice')}'/></pubsub>"),
                       "unexpected-request", "not-subscribed")
    await expect_error(raw_iq(b, "get", s, f"<pubsub xmlns='{NS}'><options node='opt' "
                                           f"jid='{server.jid('bob')}' subid='x'/></pubsub>"),
                       "not-acceptable", "invalid-subid")
    submit = (f"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
              f"<value>{NS}#subscribe_options</value></field>"
              "<field var='pubsub#deliver'><value>{v}</value></field></x>")
    await expect_error(raw_iq(b, "set", s, f"<pubsub xmlns='{NS}'><options node='opt' "
                                           f"jid='{server.jid('bob')}'>"
                                           + submit.replace("{v}", "perhaps")
                                           + "</options></pubsub>"),
                       "bad-request", "invalid-options")
    await raw_iq(b, "set", s, f"<pubsub xmlns='{NS}'><options node='opt' jid='{server.jid('bob')}'>"
                              + submit.replace("{v}", "0") + "</options></pubsub>")
    await a.plugin["xep_0060"].publish(s, "opt", id="quiet", payload=payload("x"), timeout=T)
    assert await absent(b, event("opt", "item", s, "quiet"))


async def test_payloads_left_out_when_configured(server, clients):
    a, b = await clients("alice"), await clients("bob")
    s = svc(server)
    await a.plugin["xep_0060"].create_node(s, "thin", config=node_config(deliver_payloads="0"), timeout=T)
    await b.plugin["xep_0060"].subscribe(s, "thin", timeout=T)
    await a.plugin["xep_0060"].publish(s, "thin", id="i", payload=payload("x"), timeout=T)
    msg = await b.inbox.wait(event("thin", "item", s, "i"), T, "notification")
    item = msg.find(f".//{{{NS_EVENT}}}item")
    assert len(list(item)) == 0, "no payload"
    items = await b.plugin["xep_0060"].get_items(s, "thin", timeout=T)
    assert items["pubsub"]["items"]["item"]["payload"] is not None


# ---- access models ----------------------------------------------------------------------------

async def test_access_models(server, clients):
    a, b, c = await clients("alice"), await clients("bob"), await clients("carol")
    s, ps = svc(server), a.plugin["xep_0060"]
    await make_contacts(a, b)
    # carol is in alice's roster, group Friends, without a presence subscription.
    a.update_roster(server.jid("carol"), name="Carol", groups=["Friends"])
    for node, model in (("pres", "presence"), ("rost", "roster"), ("white", "whitelist"),
                        ("auth", "authorize"), ("open", "open")):
        extra = {"roster_groups_allowed": "Friends"} if model == "roster" else {}
        await ps.create_node(s, node, config=node_config(access_model=model, **extra), timeout=T)
        await ps.publish(s, node, id="x", payload=payload("x"), timeout=T)
    await asyncio.sleep(0.3)
    # open
    await c.plugin["xep_0060"].subscribe(s, "open", timeout=T)
    # presence: bob yes, carol no.
    await b.plugin["xep_0060"].subscribe(s, "pres", timeout=T)
    await expect_error(c.plugin["xep_0060"].subscribe(s, "pres", timeout=T),
                       "not-authorized", "presence-subscription-required", "auth")
    await expect_error(c.plugin["xep_0060"].get_items(s, "pres", timeout=T),
                       "not-authorized", "presence-subscription-required")
    # roster: carol (Friends) yes, bob (no group) no.
    await c.plugin["xep_0060"].subscribe(s, "rost", timeout=T)
    await expect_error(b.plugin["xep_0060"].subscribe(s, "rost", timeout=T),
                       "not-authorized", "not-in-roster-group", "auth")
    # whitelist: closed until bob is a member.
    await expect_error(b.plugin["xep_0060"].subscribe(s, "white", timeout=T),
                       "not-allowed", "closed-node", "cancel")
    await ps.modify_affiliations(s, "white", [(server.jid("bob"), "member")], timeout=T)
    await b.plugin["xep_0060"].subscribe(s, "white", timeout=T)
    items = await b.plugin["xep_0060"].get_items(s, "white", timeout=T)
    assert [i["id"] for i in items["pubsub"]["items"]] == ["x"]
    await expect_error(c.plugin["xep_0060"].get_items(s, "white", timeout=T), "not-allowed",
                       "closed-node")
    # authorize: pending, the owner gets an approval form, approves, carol is told.
    sub = await c.plugin["xep_0060"].subscribe(s, "auth", timeout=T)
    assert sub["pubsub"]["subscription"]["subscription"] == "pending"
    await expect_error(c.plugin["xep_0060"].subscribe(s, "auth", timeout=T),
                       "not-authorized", "pending-subscription")
    await expect_error(c.plugin["xep_0060"].get_items(s, "auth", timeout=T),
                       "not-authorized", "not-subscribed")

    def approval(el):
        x = el.find("{jabber:x:data}x")
        return local(el) == "message" and x is not None and any(
            v.text == NS + "#subscribe_authorization" for v in x.iter("{jabber:x:data}value"))
    req = await a.inbox.wait(approval, T, "approval request")
    x = req.find("{jabber:x:data}x")
    values = {f.get("var"): [v.text for v in f.findall("{jabber:x:data}value")]
              for f in x.findall("{jabber:x:data}field")}
    assert values["pubsub#node"] == ["auth"]
    assert values["pubsub#subscriber_jid"] == [server.jid("carol")]
    answer = form(NS + "#subscribe_authorization", {
        "pubsub#subid": values["pubsub#subid"][0], "pubsub#node": "auth",
        "pubsub#subscriber_jid": server.jid("carol"), "pubsub#allow": "1"})
    m = a.Message()
    m["to"] = s
    m.append(answer)
    m.send()
    await c.inbox.wait(event("auth", "subscription"), T, "approval notification")
    items = await c.plugin["xep_0060"].get_items(s, "auth", timeout=T)
    assert [i["id"] for i in items["pubsub"]["items"]] == ["x"]
    # Outcasts are refused everything and lose their subscription.
    await ps.modify_affiliations(s, "open", [(server.jid("carol"), "outcast")], timeout=T)
    await expect_error(c.plugin["xep_0060"].subscribe(s, "open", timeout=T), "forbidden", type_="auth")
    await expect_error(c.plugin["xep_0060"].get_items(s, "open", timeout=T), "forbidden")
    subs = await ps.get_node_subscriptions(s, "open", timeout=T)
    assert list(subs["pubsub_owner"]["subscriptions"]) == []


async def test_manage_subscriptions_and_affiliations(server, clients):
    a, b, c = await clients("alice"), await clients("bob"), await clients("carol")
    s, ps = svc(server), a.plugin["xep_0060"]
    await ps.create_node(s, "m", timeout=T)
    await expect_error(b.plugin["xep_0060"].get_node_subscriptions(s, "m", timeout=T), "forbidden")
    await expect_error(b.plugin["xep_0060"].get_node_affiliations(s, "m", timeout=T), "forbidden")
    await ps.modify_subscriptions(s, "m", [(server.jid("bob"), "subscribed")], timeout=T)
    await b.inbox.wait(event("m", "subscription"), T, "subscription notification")
    subs = await ps.get_node_subscriptions(s, "m", timeout=T)
    assert [(x["jid"].bare, x["subscription"]) for x in subs["pubsub_owner"]["subscriptions"]] == [
        (server.jid("bob"), "subscribed")]
    await ps.modify_subscriptions(s, "m", [(server.jid("bob"), "none")], timeout=T)
    subs = await ps.get_node_subscriptions(s, "m", timeout=T)
    assert list(subs["pubsub_owner"]["subscriptions"]) == []
    # Affiliations: publisher publishes; publish-only publishes but does not read; the last owner
    # stays.
    await ps.modify_affiliations(s, "m", [(server.jid("bob"), "publisher"),
                                          (server.jid("carol"), "publish-only")], timeout=T)
    affs = await ps.get_node_affiliations(s, "m", timeout=T)
    got = {(x["jid"].bare, x["affiliation"]) for x in affs["pubsub_owner"]["affiliations"]}
    assert got == {(server.jid("alice"), "owner"), (server.jid("bob"), "publisher"),
                   (server.jid("carol"), "publish-only")}
    await b.plugin["xep_0060"].publish(s, "m", id="by-bob", payload=payload("x"), timeout=T)
    await c.plugin["xep_0060"].publish(s, "m", id="by-carol", payload=payload("x"), timeout=T)
    await expect_error(c.plugin["xep_0060"].get_items(s, "m", timeout=T), "forbidden")
    await expect_error(c.plugin["xep_0060"].retract(s, "m", "by-bob", timeout=T), "forbidden")
    await c.plugin["xep_0060"].retract(s, "m", "by-carol", timeout=T)
    await expect_error(ps.modify_affiliations(s, "m", [(server.jid("alice"), "none")], timeout=T),
                       "not-acceptable")
    await ps.modify_affiliations(s, "m", [(server.jid("bob"), "owner")], timeout=T)
    await b.plugin["xep_0060"].get_node_config(s, "m", timeout=T)


async def test_last_item_sent_on_subscription(server, clients):
    a, b = await clients("alice"), await clients("bob")
    s = svc(server)
    await a.plugin["xep_0060"].create_node(s, "last", config=node_config(send_last_published_item="on_sub"),
                                    timeout=T)
    await a.plugin["xep_0060"].publish(s, "last", id="latest", payload=payload("x"), timeout=T)
    await b.plugin["xep_0060"].subscribe(s, "last", timeout=T)
    msg = await b.inbox.wait(event("last", "item", s, "latest"), T, "last published item")
    assert msg.find("{urn:xmpp:delay}delay") is not None


# ---- persistence ----------------------------------------------------------------------------

async def test_nodes_items_and_subscriptions_survive_restart(server_factory, backend):
    srv = server_factory(backend=backend)
    a = await login(srv, "alice")
    b = await login(srv, "bob")
    s = svc(srv)
    try:
        await a.plugin["xep_0060"].create_node(s, "keep", config=node_config(max_items="10", title="K"),
                                        timeout=T)
        await b.plugin["xep_0060"].subscribe(s, "keep", timeout=T)
        for i in range(3):
            await a.plugin["xep_0060"].publish(s, "keep", id=f"i{i}", payload=payload(f"v{i}"), timeout=T)
    finally:
        await a.close()
        await b.close()
    srv.restart()
    a = await login(srv, "alice")
    b = await login(srv, "bob")
    try:
        items = await b.plugin["xep_0060"].get_items(s, "keep", timeout=T)
        assert [i["id"] for i in items["pubsub"]["items"]] == ["i0", "i1", "i2"]
        cfg = await a.plugin["xep_0060"].get_node_config(s, "keep", timeout=T)
        assert cfg["pubsub_owner"]["configure"]["form"]["values"]["pubsub#title"] == "K"
        subs = await b.plugin["xep_0060"].get_subscriptions(s, timeout=T)
        assert [x["node"] for x in subs["pubsub"]["subscriptions"]] == ["keep"]
        await a.plugin["xep_0060"].publish(s, "keep", id="after", payload=payload("x"), timeout=T)
        await b.inbox.wait(event("keep", "item", s, "after"), T, "notification after restart")
    finally:
        await a.close()
        await b.close()


# ---- PEP --------------------------------------------------------------------------------------

async def test_pep_discovery_and_auto_create(server, clients):
    a = await clients("alice")
    me = server.jid("alice")
    info = await a.plugin["xep_0030"].get_info(jid=me, timeout=T)
    assert ("pubsub", "pep") in [(i[0], i[1]) for i in info["disco_info"]["identities"]]
    feats = set(info["disco_info"]["features"])
    for f in ("auto-create", "publish-options", "filtered-notifications", "last-published"):
        assert f"{NS}#{f}" in feats
    await a.plugin["xep_0118"].publish_tune(artist="A", title="T", timeout=T)
    items = await a.plugin["xep_0030"].get_items(jid=me, timeout=T)
    assert NS_TUNE in [i[1] for i in items["disco_items"]["items"]]
    cfg = await a.plugin["xep_0060"].get_node_config(me, NS_TUNE, timeout=T)
    values = cfg["pubsub_owner"]["configure"]["form"]["values"]
    assert values["pubsub#access_model"] == "presence"
    # Only the account publishes to its PEP service, and no instant nodes there.
    b = await clients("bob")
    await expect_error(b.plugin["xep_0060"].publish(me, NS_TUNE, payload=payload("x", NS_TUNE), timeout=T),
                       "forbidden")
    await expect_error(raw_iq(a, "set", None, f"<pubsub xmlns='{NS}'><create/></pubsub>"),
                       "not-acceptable", "nodeid-required")


async def test_pep_notify_to_contacts_with_caps_and_own_resources(server, clients):
    a = await clients("alice", "one")
    a2 = await clients("alice", "two")
    b = await clients("bob")
    c = await clients("carol")
    await make_contacts(a, b)
    # Caps of bob and alice's second resource are resolved by the server (disco#info to them).
    await asyncio.sleep(1.0)
    await a.plugin["xep_0118"].publish_tune(artist="Artist", title="Song", timeout=T)
    me = server.jid("alice")
    await b.inbox.wait(event(NS_TUNE, "item", me), T, "tune at contact")
    await a2.inbox.wait(event(NS_TUNE, "item", me), T, "tune at own other resource")
    # carol is no contact: nothing, and presence access keeps her out.
    assert await absent(c, event(NS_TUNE, "item", me))
    await expect_error(c.plugin["xep_0060"].get_items(me, NS_TUNE, timeout=T),
                       "not-authorized", "presence-subscription-required")
    items = await b.plugin["xep_0060"].get_items(me, NS_TUNE, timeout=T)
    assert len(items["pubsub"]["items"]) == 1


async def test_pep_last_item_on_login(server, clients):
    a = await clients("alice")
    b = await clients("bob")
    await make_contacts(a, b)
    await a.plugin["xep_0118"].publish_tune(artist="Old", title="Earlier", timeout=T)
    await b.close()
    b2 = await clients("bob", "later")
    me = server.jid("alice")
    msg = await b2.inbox.wait(event(NS_TUNE, "item", me), 20, "last tune on login")
    assert msg.find(".//{http://jabber.org/protocol/tune}title").text == "Earlier"


async def test_pep_bookmarks_avatars_and_omemo(server, clients):
    a = await clients("alice")
    b = await clients("bob")
    await make_contacts(a, b)
    me = server.jid("alice")
    # XEP-0402 bookmarks: whitelist, max_items=max; two bookmarks kept; contacts see nothing.
    opts = publish_options(persist_items="true", max_items="max",
                           send_last_published_item="never", access_model="whitelist")
    for room in ("a@muc.example.org", "b@muc.example.org"):
        conf = ET.Element(f"{{{NS_BOOKMARKS}}}conference", {"name": room, "autojoin": "true"})
        await a.plugin["xep_0060"].publish(me, NS_BOOKMARKS, id=room, payload=conf, options=opts,
                                    timeout=T)
    items = await a.plugin["xep_0060"].get_items(me, NS_BOOKMARKS, timeout=T)
    assert sorted(i["id"] for i in items["pubsub"]["items"]) == ["a@muc.example.org",
                                                                  "b@muc.example.org"]
    await expect_error(b.plugin["xep_0060"].get_items(me, NS_BOOKMARKS, timeout=T), "not-allowed",
                       "closed-node")
    # Publishing with other options to the existing node: precondition not met.
    await expect_error(a.plugin["xep_0060"].publish(me, NS_BOOKMARKS, id="c",
                                             payload=ET.Element(f"{{{NS_BOOKMARKS}}}conference"),
                                             options=publish_options(access_model="open"),
                                             timeout=T), "conflict", "precondition-not-met")
    # XEP-0084 avatars: data then metadata (contacts read both).
    data = ET.Element(f"{{{NS_AVATAR_DATA}}}data")
    data.text = "iVBORw0KGgo="
    await a.plugin["xep_0060"].publish(me, NS_AVATAR_DATA, id="abc", payload=data, timeout=T)
    meta = ET.Element(f"{{{NS_AVATAR_META}}}metadata")
    ET.SubElement(meta, f"{{{NS_AVATAR_META}}}info",
                  {"id": "abc", "bytes": "8", "type": "image/png"})
    await a.plugin["xep_0060"].publish(me, NS_AVATAR_META, id="abc", payload=meta, timeout=T)
    got = await b.plugin["xep_0060"].get_item(me, NS_AVATAR_DATA, "abc", timeout=T)
    assert [i["id"] for i in got["pubsub"]["items"]] == ["abc"]
    # XEP-0384 device list with access_model=open: anyone can read it.
    devices = ET.Element(f"{{{NS_OMEMO_DEVICES}}}list")
    ET.SubElement(devices, f"{{{NS_OMEMO_DEVICES}}}device", {"id": "12345"})
    await a.plugin["xep_0060"].publish(me, NS_OMEMO_DEVICES, id="current", payload=devices,
                                options=publish_options(access_model="open"), timeout=T)
    c = await clients("carol")
    got = await c.plugin["xep_0060"].get_items(me, NS_OMEMO_DEVICES, timeout=T)
    assert [i["id"] for i in got["pubsub"]["items"]] == ["current"]


async def test_pep_survives_restart(server):
    a = await login(server, "alice")
    try:
        await a.plugin["xep_0118"].publish_tune(artist="Kept", title="Across", timeout=T)
    finally:
        await a.close()
    server.restart()
    a = await login(server, "alice")
    try:
        items = await a.plugin["xep_0060"].get_items(server.jid("alice"), NS_TUNE, timeout=T)
        tune = items["pubsub"]["items"]["item"]["payload"]
        assert tune.find(f"{{{NS_TUNE}}}title").text == "Across"
    finally:
        await a.close()


async def test_blocking_stops_notifications(server, clients):
    """XEP-0191: a service or PEP owner that a subscriber blocks does not reach it, and a PEP
    owner's events do not reach contacts it blocks."""
    a, b, c = await clients("alice"), await clients("bob"), await clients("carol")
    s = svc(server)
    await a.plugin["xep_0060"].create_node(s, "blk", timeout=T)
    await c.plugin["xep_0060"].subscribe(s, "blk", timeout=T)
    await raw_iq(c, "set", None, f"<block xmlns='urn:xmpp:blocking'><item jid='{s}'/></block>")
    await a.plugin["xep_0060"].publish(s, "blk", id="b1", payload=payload("x"), timeout=T)
    assert await absent(c, event("blk", "item", s, "b1"))
    await make_contacts(a, b)
    await asyncio.sleep(1.0)
    me = server.jid("alice")
    await raw_iq(a, "set", None,
                 f"<block xmlns='urn:xmpp:blocking'><item jid='{server.jid('bob')}'/></block>")
    await a.plugin["xep_0118"].publish_tune(artist="Private", title="Hidden", timeout=T)
    assert await absent(b, event(NS_TUNE, "item", me))
    await raw_iq(a, "set", None,
                 f"<unblock xmlns='urn:xmpp:blocking'><item jid='{server.jid('bob')}'/></unblock>")
    await a.plugin["xep_0118"].publish_tune(artist="Public", title="Shown", timeout=T)
    await b.inbox.wait(event(NS_TUNE, "item", me), T, "tune after unblock")


async def test_pep_nodes_go_with_the_account(server):
    """An account removed in-band (XEP-0077 §3.2) takes its PEP nodes with it."""
    a = await login(server, "alice")
    me = server.jid("alice")
    try:
        await a.plugin["xep_0118"].publish_tune(artist="Gone", title="Soon", timeout=T)
        await raw_iq(a, "set", None, "<query xmlns='jabber:iq:register'><remove/></query>")
    finally:
        await a.close()
    r = server.user("add", "alice", password="alicepass")
    assert r.returncode == 0, r.stderr
    a = await login(server, "alice")
    try:
        items = await a.plugin["xep_0030"].get_items(jid=me, timeout=T)
        assert not items["disco_items"]["items"]
        await expect_error(a.plugin["xep_0060"].get_items(me, NS_TUNE, timeout=T), "item-not-found")
    finally:
        await a.close()


NS_MAM = "urn:xmpp:mam:2"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_FWD = "urn:xmpp:forward:0"


async def node_history(c: SlixClient, service: str, node: str, *, rsm: str = "",
                       fields: str = "") -> tuple[list[tuple[str, str | None]], ET.Element]:
    """A MAM query on a node (XEP-0442): ([(item id, entry text)] in order, the <fin/>)."""
    qid = f"h{len(c.inbox.items)}"
    form = (f"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
            f"<value>{NS_MAM}</value></field>{fields}</x>") if fields else ""
    res = await raw_iq(c, "set", service, f"<query xmlns='{NS_MAM}' queryid='{qid}' "
                       f"node='{node}'>{form}<set xmlns='{NS_RSM}'>{rsm}</set></query>")
    out = []
    for el in c.inbox.items:
        r = el.find(f"{{{NS_MAM}}}result")
        if r is None or r.get("queryid") != qid:
            continue
        item = r.find(f"{{{NS_FWD}}}forwarded/{{jabber:client}}message/{{{NS_EVENT}}}event/"
                      f"{{{NS_EVENT}}}items/{{{NS_EVENT}}}item")
        entry = item.find("{urn:test:entry}entry")
        out.append((item.get("id"), entry.text if entry is not None else None))
    return out, res.xml.find(f"{{{NS_MAM}}}fin")


async def test_node_history_as_an_archive(server_factory, backend):
    """XEP-0442: a persistent node's items as a message archive on the service — in publish
    order, each forwarded as its notification with the publication time, RSM paging both
    ways, `with` the publisher, metadata; access as for retrieving items; advertised in the
    node's disco#info. On both stores (the history is a view over the items table)."""
    server = server_factory(backend=backend)
    clients = Clients(server)
    try:
        await _node_history(server, clients)
    finally:
        await clients.close()


async def _node_history(server, clients):
    a, b, c = await clients("alice"), await clients("bob"), await clients("carol")
    s, ps = svc(server), a.plugin["xep_0060"]
    await ps.create_node(s, "log", timeout=T)
    for i in range(1, 5):
        await ps.publish(s, "log", id=f"e{i}", payload=payload(f"entry {i}"), timeout=T)
    # Republishing an id moves it to the end: the history is the node's items in order.
    await ps.publish(s, "log", id="e2", payload=payload("entry 2 again"), timeout=T)
    info = await b.plugin["xep_0030"].get_info(jid=s, node="log", timeout=T)
    assert NS_MAM in info["disco_info"]["features"]
    got, fin = await node_history(b, s, "log")
    assert got == [("e1", "entry 1"), ("e3", "entry 3"), ("e4", "entry 4"),
                   ("e2", "entry 2 again")]
    assert fin.get("complete") == "true"
    last2, fin = await node_history(b, s, "log", rsm="<max>2</max><before/>")
    assert [i for i, _ in last2] == ["e4", "e2"] and fin.get("complete") != "true"
    first = fin.find(f"{{{NS_RSM}}}set/{{{NS_RSM}}}first").text
    older, fin = await node_history(b, s, "log", rsm=f"<max>2</max><before>{first}</before>")
    assert [i for i, _ in older] == ["e1", "e3"] and fin.get("complete") == "true"
    mine, _ = await node_history(b, s, "log", fields=f"<field var='with'><value>"
                                 f"{server.jid('alice')}</value></field>")
    assert len(mine) == 4
    theirs, _ = await node_history(b, s, "log", fields=f"<field var='with'><value>"
                                   f"{server.jid('bob')}</value></field>")
    assert theirs == []
    meta = await raw_iq(b, "get", s, f"<metadata xmlns='{NS_MAM}' node='log'/>")
    m = meta.xml.find(f"{{{NS_MAM}}}metadata")
    assert [m.find(f"{{{NS_MAM}}}{e}").get("id") for e in ("start", "end")] == ["e1", "e2"]
    # Access: a whitelist node's history is for its members; unknown nodes are not found.
    await ps.create_node(s, "secret", config=node_config(access_model="whitelist"), timeout=T)
    await ps.publish(s, "secret", id="x", payload=payload("x"), timeout=T)
    await expect_error(node_history(c, s, "secret"), "not-allowed", "closed-node")
    await expect_error(node_history(c, s, "nope"), "item-not-found")


# ---- audit fixes: one test per finding, each failing on the server before its fix ------------

def multi_subscribe(jid: str) -> str:
    """A subscription request with options: always a further subscription (multi-subscribe)."""
    return (f"<pubsub xmlns='{NS}'><subscribe node='n' jid='{jid}'/>"
            f"<options><x xmlns='jabber:x:data' type='submit'>"
            f"<field var='FORM_TYPE' type='hidden'><value>{NS}#subscribe_options</value></field>"
            "<field var='pubsub#deliver'><value>1</value></field></x></options></pubsub>")


async def pep_nodes(c: SlixClient, jid: str) -> list[str]:
    items = await c.plugin["xep_0030"].get_items(jid=jid, timeout=T)
    return [i[1] for i in items["disco_items"]["items"]]


async def test_pep_last_items_on_login_respect_the_owners_block_list(server, clients):
    """XEP-0163 §4.3.3 (3): the last item a contact gets when it comes online is withheld while
    the owner blocks it (XEP-0191), as live notifications are."""
    a, b = await clients("alice"), await clients("bob")
    await make_contacts(a, b)
    await a.plugin["xep_0118"].publish_tune(artist="Private", title="Blocked", timeout=T)
    bob = server.jid("bob")
    await raw_iq(a, "set", None, f"<block xmlns='urn:xmpp:blocking'><item jid='{bob}'/></block>")
    await b.close()
    me = server.jid("alice")
    b2 = await clients("bob", "blocked")
    assert await absent(b2, event(NS_TUNE, "item", me), 3.0)
    await raw_iq(a, "set", None,
                 f"<unblock xmlns='urn:xmpp:blocking'><item jid='{bob}'/></unblock>")
    b3 = await clients("bob", "unblocked")
    await b3.inbox.wait(event(NS_TUNE, "item", me), 20, "last tune once unblocked")


async def test_pep_account_advertises_pubsub_on_a_jid(server, clients):
    """XEP-0060 §9: the account's disco#info MUST include pubsub#pubsub-on-a-jid."""
    a = await clients("alice")
    info = await a.plugin["xep_0030"].get_info(jid=server.jid("alice"), timeout=T)
    assert f"{NS}#pubsub-on-a-jid" in set(info["disco_info"]["features"])


async def test_service_does_not_advertise_last_published_with_a_never_default(server, clients):
    """XEP-0060 §4.3: a service with `last-published` MUST default send_last_published_item to
    on_sub_and_presence; the service keeps `never` (it tracks no presence), so it does not
    advertise the feature. PEP does both."""
    a = await clients("alice")
    info = await a.plugin["xep_0030"].get_info(jid=svc(server), timeout=T)
    default = await a.plugin["xep_0060"].get_node_config(svc(server), timeout=T)
    send_last = default["pubsub_owner"]["default"]["form"]["values"][
        "pubsub#send_last_published_item"]
    assert (f"{NS}#last-published" in set(info["disco_info"]["features"])) == (
        send_last == "on_sub_and_presence")
    pep = await a.plugin["xep_0030"].get_info(jid=server.jid("alice"), timeout=T)
    assert f"{NS}#last-published" in set(pep["disco_info"]["features"])


async def test_pep_auto_create_refuses_what_it_would_refuse_on_the_node(server, clients):
    """XEP-0060 §7.1.5 at auto-create: an unknown publish-options field is refused
    (precondition-not-met), a refused publication creates no node, and the NodeID limit of
    <create/> holds."""
    a = await clients("alice")
    me = server.jid("alice")
    unknown = form(NS + "#publish-options", {"pubsub#no_such_option": "1"})
    await expect_error(a.plugin["xep_0060"].publish(me, "urn:x:unknown", payload=payload("x"),
                                                    options=unknown, timeout=T),
                       "conflict", "precondition-not-met", "cancel")
    await expect_error(raw_iq(a, "set", None, f"<pubsub xmlns='{NS}'><publish node='urn:x:empty'/>"
                                              "</pubsub>"), "bad-request", "item-required")
    long_id = "urn:x:" + "n" * 2000
    await expect_error(a.plugin["xep_0060"].publish(me, long_id, payload=payload("x"), timeout=T),
                       "not-acceptable")
    assert not {"urn:x:unknown", "urn:x:empty", long_id} & set(await pep_nodes(a, me))
    # A valid first publication still creates the node.
    await a.plugin["xep_0060"].publish(me, "urn:x:fine", payload=payload("x"), timeout=T)
    assert "urn:x:fine" in await pep_nodes(a, me)


async def test_configure_with_a_node_after_create_is_refused(server, clients):
    """XEP-0060 §8.1.3: <configure/> after <create/> MUST NOT have a node attribute
    (bad-request), and no node is created."""
    a = await clients("alice")
    s = svc(server)
    await expect_error(raw_iq(a, "set", s, f"<pubsub xmlns='{NS}'><create node='cfg-a'/>"
                                           "<configure node='cfg-b'/></pubsub>"),
                       "bad-request", type_="modify")
    await expect_error(a.plugin["xep_0060"].get_node_config(s, "cfg-a", timeout=T),
                       "item-not-found")
    await raw_iq(a, "set", s, f"<pubsub xmlns='{NS}'><create node='cfg-a'/><configure/></pubsub>")


async def test_items_with_several_subscriptions_need_a_subid(server, clients):
    """XEP-0060 §6.5.9.1 (multi-subscribe): several subscriptions and no SubID: bad-request
    with subid-required; with one of them, the items."""
    a, b = await clients("alice"), await clients("bob")
    s = svc(server)
    await a.plugin["xep_0060"].create_node(s, "n", timeout=T)
    await a.plugin["xep_0060"].publish(s, "n", id="i1", payload=payload("x"), timeout=T)
    first = await raw_iq(b, "set", s, multi_subscribe(server.jid("bob")))
    subid = first.xml.find(f"{{{NS}}}pubsub/{{{NS}}}subscription").get("subid")
    # One subscription: no SubID needed.
    await b.plugin["xep_0060"].get_items(s, "n", timeout=T)
    await raw_iq(b, "set", s, multi_subscribe(server.jid("bob")))
    await expect_error(b.plugin["xep_0060"].get_items(s, "n", timeout=T),
                       "bad-request", "subid-required", "modify")
    got = await raw_iq(b, "get", s, f"<pubsub xmlns='{NS}'><items node='n' subid='{subid}'/>"
                                    "</pubsub>")
    assert [i.get("id") for i in got.xml.iter(f"{{{NS}}}item")] == ["i1"]


async def test_owner_batches_refuse_duplicates_and_keep_unstated_subscriptions(server, clients):
    """XEP-0060 §8.9.2.4: one <affiliation/> per entity, else bad-request (and nothing
    changes); §8.8.2.1: a <subscription/> without a 'subscription' attribute changes nothing."""
    a = await clients("alice")
    s, ps = svc(server), a.plugin["xep_0060"]
    bob = server.jid("bob")
    await ps.create_node(s, "batch", timeout=T)
    await expect_error(raw_iq(a, "set", s, f"<pubsub xmlns='{NS_OWNER}'><affiliations node='batch'>"
                                           f"<affiliation jid='{bob}' affiliation='member'/>"
                                           f"<affiliation jid='{bob}' affiliation='outcast'/>"
                                           "</affiliations></pubsub>"), "bad-request", type_="modify")
    affs = await ps.get_node_affiliations(s, "batch", timeout=T)
    assert bob not in {x["jid"].bare for x in affs["pubsub_owner"]["affiliations"]}
    await ps.modify_subscriptions(s, "batch", [(bob, "subscribed")], timeout=T)
    await raw_iq(a, "set", s, f"<pubsub xmlns='{NS_OWNER}'><subscriptions node='batch'>"
                              f"<subscription jid='{bob}'/></subscriptions></pubsub>")
    subs = await ps.get_node_subscriptions(s, "batch", timeout=T)
    assert [(x["jid"].bare, x["subscription"]) for x in subs["pubsub_owner"]["subscriptions"]] == [
        (bob, "subscribed")]


async def test_notification_ids_differ_across_a_restart(server):
    """XEP-0060 §12.1: notification ids are unique within the service, a restart included."""
    ids = []
    for _ in range(2):
        a, b = await login(server, "alice"), await login(server, "bob")
        try:
            s = svc(server)
            if not ids:
                await a.plugin["xep_0060"].create_node(s, "ids", timeout=T)
                await b.plugin["xep_0060"].subscribe(s, "ids", timeout=T)
            await a.plugin["xep_0060"].publish(s, "ids", payload=payload("x"), timeout=T)
            msg = await b.inbox.wait(event("ids", "item", s), T, "notification")
            ids.append(msg.get("id"))
        finally:
            await a.close()
            await b.close()
        server.restart()
    assert ids[0] and ids[0] != ids[1], ids


async def test_pep_bare_subscriber_notified_on_its_interested_resources_only(server, clients):
    """XEP-0163 §4.3.2 (3): a subscriber by bare JID whose available resources show their
    interest (caps with node+notify) gets one notification on each of those, not on the
    others — the last item that answers the subscription as well as later ones."""
    a = await clients("alice")
    me, node = server.jid("alice"), "urn:x:p5"
    await a.plugin["xep_0060"].publish(me, node, id="p0", payload=payload("first", node),
                                       options=publish_options(access_model="open"), timeout=T)
    c1 = await clients("carol", "r1", presence=False)
    c1.plugin["xep_0163"].add_interest(node)
    await asyncio.sleep(0.5)
    c1.send_presence()
    c2 = await clients("carol", "r2")
    # The server resolves both resources' caps (disco#info to them).
    await asyncio.sleep(1.0)
    await raw_iq(c1, "set", me, f"<pubsub xmlns='{NS}'><subscribe node='{node}' "
                                f"jid='{server.jid('carol')}'/></pubsub>")
    last = await c1.inbox.wait(event(node, "item", me, "p0"), T, "the last item")
    assert last.get("to") == c1.boundjid.full
    assert await absent(c2, event(node, "item", me, "p0"))
    await a.plugin["xep_0060"].publish(me, node, id="p5", payload=payload("x", node), timeout=T)
    await c1.inbox.wait(event(node, "item", me, "p5"), T, "at the interested resource")
    assert await absent(c2, event(node, "item", me, "p5"))


async def pep_subscribers(c: SlixClient, me: str, node: str) -> list[str]:
    subs = await c.plugin["xep_0060"].get_node_subscriptions(me, node, timeout=T)
    return [x["jid"].bare for x in subs["pubsub_owner"]["subscriptions"]
            if x["subscription"] == "subscribed"]


async def until(pred, what: str, seconds: float = 5.0):
    for _ in range(int(seconds * 10)):
        if await pred():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(what)


async def test_pep_subscriptions_end_with_the_access_the_roster_gave(server, clients):
    """XEP-0163 §8.1: access is re-calculated when a presence subscription or a roster group
    changes; a subscriber that lost it loses its explicit subscription (told with
    subscription='none', XEP-0060 §12.5) and its notifications."""
    a, b = await clients("alice"), await clients("bob")
    await make_contacts(a, b)
    me, bob = server.jid("alice"), server.jid("bob")
    ps = a.plugin["xep_0060"]
    # A presence node, and a roster node for the group "friends".
    await ps.publish(me, "urn:x:p1", payload=payload("x", "urn:x:p1"), timeout=T)
    await raw_iq(a, "set", None, f"<query xmlns='jabber:iq:roster'><item jid='{bob}'>"
                                 "<group>friends</group></item></query>")
    await ps.publish(me, "urn:x:p1g", payload=payload("x", "urn:x:p1g"), timeout=T,
                     options=publish_options(access_model="roster",
                                             roster_groups_allowed="friends"))
    for node in ("urn:x:p1", "urn:x:p1g"):
        await raw_iq(b, "set", me, f"<pubsub xmlns='{NS}'><subscribe node='{node}' jid='{bob}'/>"
                                   "</pubsub>")
    await ps.publish(me, "urn:x:p1g", id="before", payload=payload("x", "urn:x:p1g"), timeout=T)
    await b.inbox.wait(event("urn:x:p1g", "item", me, "before"), T, "notification while a friend")
    # Out of the group: the roster node's subscription goes, the presence node's stays.
    await raw_iq(a, "set", None, f"<query xmlns='jabber:iq:roster'><item jid='{bob}'>"
                                 "<group>others</group></item></query>")
    await b.inbox.wait(event("urn:x:p1g", "subscription"), T, "told of the cancelled subscription")
    assert await pep_subscribers(a, me, "urn:x:p1g") == []
    assert await pep_subscribers(a, me, "urn:x:p1") == [bob]
    await ps.publish(me, "urn:x:p1g", id="after", payload=payload("x", "urn:x:p1g"), timeout=T)
    assert await absent(b, event("urn:x:p1g", "item", me, "after"))
    # The presence subscription cancelled: the presence node's subscription goes.
    a.send_presence(pto=bob, ptype="unsubscribed")

    async def gone():
        return await pep_subscribers(a, me, "urn:x:p1") == []
    await until(gone, "subscription to the presence node still there")
    await ps.publish(me, "urn:x:p1", id="after", payload=payload("x", "urn:x:p1"), timeout=T)
    assert await absent(b, event("urn:x:p1", "item", me, "after"))


def approval_request(el) -> bool:
    x = el.find("{jabber:x:data}x")
    return local(el) == "message" and x is not None and x.get("type") == "form" and any(
        v.text == NS + "#subscribe_authorization" for v in x.iter("{jabber:x:data}value"))


async def test_pep_owner_answers_approval_requests(server, clients):
    """XEP-0060 §8.6 on a PEP `authorize` node: the approval request comes from the account
    itself, and the owner's answer, sent back to its own bare JID, is applied: a cancelled
    form leaves the request pending, an approval subscribes (the subscriber is told, and gets
    the last item, §12.6) and does not reach the owner's clients as a message."""
    a, c = await clients("alice"), await clients("carol")
    me, carol, node = server.jid("alice"), server.jid("carol"), "urn:x:p6"
    await a.plugin["xep_0060"].publish(me, node, id="last", payload=payload("x", node),
                                       options=publish_options(access_model="authorize"),
                                       timeout=T)
    sub = await c.plugin["xep_0060"].subscribe(me, node, timeout=T)
    assert sub["pubsub"]["subscription"]["subscription"] == "pending"
    req = await a.inbox.wait(approval_request, T, "approval request")
    assert req.get("from") == me
    subid = next(f.find("{jabber:x:data}value").text
                 for f in req.iter("{jabber:x:data}field") if f.get("var") == "pubsub#subid")

    def answer(x) -> None:
        m = a.Message()
        m["to"] = me
        m.append(x)
        m.send()
    cancel = Form()
    cancel["type"] = "cancel"
    answer(cancel)
    await asyncio.sleep(0.5)
    subs = await a.plugin["xep_0060"].get_node_subscriptions(me, node, timeout=T)
    assert [(x["jid"].bare, x["subscription"]) for x in subs["pubsub_owner"]["subscriptions"]] == [
        (carol, "pending")]
    answer(form(NS + "#subscribe_authorization", {
        "pubsub#subid": subid, "pubsub#node": node, "pubsub#subscriber_jid": carol,
        "pubsub#allow": "1"}))
    await c.inbox.wait(event(node, "subscription"), T, "approval notification")
    await c.inbox.wait(event(node, "item", me, "last"), T, "last item on approval")
    subs = await a.plugin["xep_0060"].get_node_subscriptions(me, node, timeout=T)
    assert [(x["jid"].bare, x["subscription"]) for x in subs["pubsub_owner"]["subscriptions"]] == [
        (carol, "subscribed")]

    def answer_back(el) -> bool:
        x = el.find("{jabber:x:data}x")
        return local(el) == "message" and x is not None and x.get("type") in ("submit", "cancel")
    assert await absent(a, answer_back, 0.5)


def raw_refusal(reply: ET.Element) -> tuple[str | None, str | None, list[str]]:
    """(error type, stanza condition, pubsub#errors conditions) of a raw IQ reply: slixmpp
    does not know `policy-violation` and drops such a reply, so those tests go raw."""
    err = reply.find("{jabber:client}error")
    assert reply.get("type") == "error" and err is not None, ET.tostring(reply)
    return (err.get("type"), xmpp_raw.stanza_error(reply),
            [local(c) for c in err if c.tag.startswith(f"{{{NS_ERRORS}}}")])


async def test_one_account_owns_at_most_max_nodes_per_user(server, clients):
    """Audit 37 L8: a creator that owns `max_nodes_per_user` (100) nodes is refused another
    (policy-violation with <max-nodes-exceeded/>), so one account cannot take the service's
    whole `max_nodes`; others still create, and a deleted node frees a place."""
    a, b = await server.login("alice", "raw"), await clients("bob")
    s = svc(server)
    create = "<pubsub xmlns='{ns}'><create node='{n}'/></pubsub>"
    try:
        for i in range(100):
            r = await a.iq("set", s, create.format(ns=NS, n=f"mine{i}"))
            assert r.get("type") == "result", ET.tostring(r)
        r = await a.iq("set", s, create.format(ns=NS, n="one-more"))
        assert raw_refusal(r) == ("cancel", "policy-violation", ["max-nodes-exceeded"])
        await b.plugin["xep_0060"].create_node(s, "bobs", timeout=T)
        r = await a.iq("set", s, f"<pubsub xmlns='{NS_OWNER}'><delete node='mine0'/></pubsub>")
        assert r.get("type") == "result", ET.tostring(r)
        r = await a.iq("set", s, create.format(ns=NS, n="one-more"))
        assert r.get("type") == "result", ET.tostring(r)
    finally:
        await a.close()


async def test_node_config_text_fields_are_bounded(server, clients):
    """Audit 37 L8: a title, description or type over 1 KiB is refused with not-acceptable
    on create and on configure (a title is each node's name in disco#items); 1 KiB passes."""
    a = await clients("alice")
    ps, s = a.plugin["xep_0060"], svc(server)
    long_ = "x" * 1025
    for field in ("title", "description", "type"):
        await expect_error(ps.create_node(s, f"big-{field}", config=node_config(**{field: long_}),
                                          timeout=T), "not-acceptable", type_="modify")
    await ps.create_node(s, "n", config=node_config(title="x" * 1024), timeout=T)
    await expect_error(ps.set_node_config(s, "n", node_config(description=long_), timeout=T),
                       "not-acceptable", type_="modify")
    items = await a.plugin["xep_0030"].get_items(jid=s, timeout=T)
    assert [i[2] for i in items["disco_items"]["items"]] == ["x" * 1024]


async def test_one_account_holds_at_most_16_subscriptions_to_a_node(server, clients):
    """Audit 37 L11: multi-subscribe (§6.1.6) is capped per bare JID: the 17th subscription of
    one account, whatever its resource, is refused with policy-violation and
    <too-many-subscriptions/> (§6.1.3.9), and another account still subscribes."""
    a, c = await clients("alice"), await clients("carol")
    b = await server.login("bob", "raw")
    s = svc(server)
    try:
        await a.plugin["xep_0060"].create_node(s, "n", timeout=T)
        for i in range(16):
            r = await b.iq("set", s, multi_subscribe(server.jid("bob", f"r{i}")))
            assert r.get("type") == "result", ET.tostring(r)
        r = await b.iq("set", s, multi_subscribe(server.jid("bob", "r16")))
        assert raw_refusal(r) == ("wait", "policy-violation", ["too-many-subscriptions"])
        await c.plugin["xep_0060"].subscribe(s, "n", timeout=T)
    finally:
        await b.close()
