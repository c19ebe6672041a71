"""XEP-0357 push notifications: the app server is a slixmpp XEP-0114 component (an
independent implementation) that records the pubsub publishes the server sends it and
answers them (or refuses those for the node `refuse`). Clients are raw clients."""
from __future__ import annotations

import asyncio
import time

import pytest
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from conftest import free_port
from slix import Component, Inbox
from test_component import wait_port
from test_sm import enable
from xmpp_raw import stanza_error

APP = "push.localhost"
SECRET = "pushsecret"
NS_PUSH = "urn:xmpp:push:0"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_DATA = "jabber:x:data"


class AppServer(Component):
    """An app server: every pubsub publish lands in `publishes`; it answers `result`, or
    `item-not-found` for the node `refuse`."""

    def __init__(self, port: int):
        super().__init__(APP, SECRET, port, echo=False)
        self.publishes = Inbox()
        self.register_handler(Callback(
            "push publish", MatchXPath(f"{{jabber:component:accept}}iq/{{{NS_PUBSUB}}}pubsub"),
            self._publish))

    def _publish(self, iq):
        self.publishes.push(iq.xml)
        publish = iq.xml.find(f"{{{NS_PUBSUB}}}pubsub/{{{NS_PUBSUB}}}publish")
        reply = iq.reply(clear=True)
        if publish is not None and publish.get("node") == "refuse":
            reply["type"] = "error"
            reply["error"]["type"] = "cancel"
            reply["error"]["condition"] = "item-not-found"
        reply.send()


def summary(iq) -> dict:
    form = iq.find(f"{{{NS_PUBSUB}}}pubsub/{{{NS_PUBSUB}}}publish/{{{NS_PUBSUB}}}item/"
                   f"{{{NS_PUSH}}}notification/{{{NS_DATA}}}x")
    return {f.get("var"): f.findtext(f"{{{NS_DATA}}}value") for f in form}


def node_of(iq) -> str:
    return iq.find(f"{{{NS_PUBSUB}}}pubsub/{{{NS_PUBSUB}}}publish").get("node")


@pytest.fixture
async def push_srv(server_factory):
    port = free_port()
    srv = server_factory(component={"listen": f"127.0.0.1:{port}",
                                    "service": [{"domain": APP, "secret": SECRET}]},
                         im={"push": {"include_body": True}})
    wait_port(port)
    app = AppServer(port)
    app.connect()
    await asyncio.wait_for(app.session, 10)
    yield srv, app
    await app.close()


async def push_iq(c, what: str, node: str | None = "n1", form: str = "") -> str:
    node_attr = f" node='{node}'" if node else ""
    r = await c.iq("set", None, f"<{what} xmlns='{NS_PUSH}' jid='{APP}'{node_attr}>{form}</{what}>")
    return r.get("type")


async def log_line(srv, text: str, timeout: float = 10.0):
    """Waits (bounded) until the server has logged `text`: the one way to see that it
    noticed something with no wire effect (a connection gone, a registration dropped)."""
    deadline = time.monotonic() + timeout
    while text not in srv.log():
        assert time.monotonic() < deadline, f"the server never logged {text!r}"
        await asyncio.sleep(0.05)


async def message_to(srv, to: str, body: str):
    bob = await srv.login("bob", "b")
    bob.message(to, body)
    # A round trip: bob's message has been routed when the ping is answered.
    await bob.iq("get", srv.domain, "<ping xmlns='urn:xmpp:ping'/>")
    await bob.close()


async def test_account_feature(push_srv):
    srv, _ = push_srv
    c = await srv.login("alice", "a")
    info = await c.iq("get", srv.jid("alice"),
                      "<query xmlns='http://jabber.org/protocol/disco#info'/>")
    assert any(f.get("var") == NS_PUSH
               for f in info.iter("{http://jabber.org/protocol/disco#info}feature"))
    assert await push_iq(c, "enable", node=None) == "error"  # a node is required
    await c.close()


async def test_offline_message_notifies_then_disable_stops(push_srv):
    srv, app = push_srv
    c = await srv.login("alice", "a")
    assert await push_iq(c, "enable", "n1") == "result"
    assert await push_iq(c, "enable", "n2") == "result"
    await c.close()
    await message_to(srv, srv.jid("alice"), "one")
    first = await app.publishes.wait(lambda iq: node_of(iq) == "n1", what="a notification")
    assert first.get("from") == srv.domain
    s = summary(first)
    assert s["FORM_TYPE"] == "urn:xmpp:push:summary"
    assert s["message-count"] == "1"
    assert s["last-message-sender"].startswith(srv.jid("bob"))
    assert "last-message-body" not in s  # the client did not ask for it
    # Disabled: n1 gets nothing more; n2 (still enabled) shows the next message was handled.
    c = await srv.login("alice", "a")
    assert await push_iq(c, "disable", "n1") == "result"
    await c.close()
    before = len(app.publishes.items)
    await message_to(srv, srv.jid("alice"), "two")
    await message_to(srv, srv.jid("alice"), "three")
    # The count started again when alice's resource was bound: 2 for "three".
    await app.publishes.wait(lambda iq: summary(iq)["message-count"] == "2",
                             what="the third message's notification")
    assert [node_of(iq) for iq in app.publishes.items[before:]] == ["n2", "n2"]


async def test_app_server_error_disables_the_registration(push_srv):
    srv, app = push_srv
    c = await srv.login("alice", "a")
    assert await push_iq(c, "enable", "refuse") == "result"
    assert await push_iq(c, "enable", "ok") == "result"
    await c.close()
    await message_to(srv, srv.jid("alice"), "one")
    await app.publishes.wait(lambda iq: node_of(iq) == "refuse", what="the refused publish")
    await app.publishes.wait(lambda iq: node_of(iq) == "ok", what="the accepted publish")
    await log_line(srv, "push registration disabled by an error")
    n = len(app.publishes.items)
    await message_to(srv, srv.jid("alice"), "two")
    await app.publishes.wait(lambda iq: node_of(iq) == "ok" and summary(iq)["message-count"] == "2",
                             what="the second notification")
    # The registration that got an error is gone: only "ok" was notified.
    assert [node_of(iq) for iq in app.publishes.items[n:]] == ["ok"]


async def hibernated_with_body(srv):
    """alice/phone enables stream management and push (node n1, bodies included), then its
    connection drops: the session hibernates, waiting for resumption."""
    c = await srv.login("alice", "phone")
    await c.presence()
    await enable(c)
    form = (f"<x xmlns='{NS_DATA}' type='submit'><field var='FORM_TYPE'>"
            f"<value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
            f"<field var='include-body'><value>true</value></field></x>")
    assert await push_iq(c, "enable", "n1", form) == "result"
    c.abort()
    await log_line(srv, "session hibernating")


async def test_hibernated_session_notifies_with_body_when_asked(push_srv):
    srv, app = push_srv
    await hibernated_with_body(srv)
    await message_to(srv, srv.jid("alice", "phone"), "wake up")
    iq = await app.publishes.wait(lambda iq: node_of(iq) == "n1", what="a notification")
    s = summary(iq)
    assert s["last-message-body"] == "wake up"
    assert iq.find(f"{{{NS_PUBSUB}}}pubsub/{{{NS_PUBSUB}}}publish-options/{{{NS_DATA}}}x") \
        is not None


async def test_a_hibernated_session_is_woken_by_groupchat_but_not_by_errors(push_srv):
    """What a parked message wakes: an `error` (anyone can address one to any resource)
    does not; a `groupchat` message (a room's message to the session) does."""
    srv, app = push_srv
    await hibernated_with_body(srv)
    bob = await srv.login("bob", "b")
    phone = srv.jid("alice", "phone")
    bob.message(phone, "a bounce", type_="error")
    bob.message(phone, "room talk", type_="groupchat")
    await bob.iq("get", srv.domain, "<ping xmlns='urn:xmpp:ping'/>")
    await bob.close()
    iq = await app.publishes.wait(lambda iq: node_of(iq) == "n1", what="a notification")
    assert summary(iq)["last-message-body"] == "room talk"
    assert summary(iq)["message-count"] == "1"


async def test_a_device_that_is_off_is_woken_while_another_is_online(push_srv):
    """Registrations are per device (the resource that enabled them): the phone that is off
    is woken for messages the desktop receives, to the bare JID and to the desktop's full
    JID; once the phone is back online it is not."""
    srv, app = push_srv
    for device in ("phone", "tablet"):
        c = await srv.login("alice", device)
        assert await push_iq(c, "enable", f"n-{device}") == "result"
        await c.close()
    desk = await srv.login("alice", "desk")
    await desk.presence()
    await message_to(srv, srv.jid("alice"), "to the bare JID")
    await desk.expect(lambda e: e.findtext("{jabber:client}body") == "to the bare JID",
                      what="the message on the desktop")
    await app.publishes.wait(lambda iq: node_of(iq) == "n-phone", what="the phone woken")
    await app.publishes.wait(lambda iq: node_of(iq) == "n-tablet", what="the tablet woken")
    await message_to(srv, srv.jid("alice", "desk"), "to the desktop")
    for device in ("phone", "tablet"):
        await app.publishes.wait(lambda iq: node_of(iq) == f"n-{device}"
                                 and summary(iq)["message-count"] == "2",
                                 what=f"the {device} woken for the full-JID message")
    # The phone is back: only the tablet (still off) is woken now. (Notifications go out
    # in tasks of their own: what came before is all in, and is set aside.)
    phone = await srv.login("alice", "phone")
    await phone.presence()
    app.publishes.items.clear()
    await message_to(srv, srv.jid("alice"), "phone online")
    await app.publishes.wait(lambda iq: node_of(iq) == "n-tablet"
                             and summary(iq)["message-count"] == "1",
                             what="the tablet woken once more")
    assert [node_of(iq) for iq in app.publishes.items] == ["n-tablet"]
    await phone.close()
    await desk.close()


async def test_the_count_starts_again_when_the_last_registration_goes(push_srv):
    """A bind starts the count of an account with registrations only (the count is in the
    store: other binds write nothing), so disabling the last one starts it too: the phone
    that enables again after a bind counts from 1."""
    srv, app = push_srv
    phone = await srv.login("alice", "phone")
    assert await push_iq(phone, "enable", "n1") == "result"
    await phone.close()
    desk = await srv.login("alice", "desk")
    await desk.presence()
    await message_to(srv, srv.jid("alice"), "one")
    await app.publishes.wait(lambda iq: summary(iq)["message-count"] == "1", what="a count")
    assert await push_iq(desk, "disable", "n1") == "result"
    phone = await srv.login("alice", "phone")
    assert await push_iq(phone, "enable", "n1") == "result"
    await phone.close()
    before = len(app.publishes.items)
    await message_to(srv, srv.jid("alice"), "two")
    iq = await app.publishes.wait(lambda iq: iq not in app.publishes.items[:before],
                                  what="the second notification")
    assert summary(iq)["message-count"] == "1"
    await desk.close()


async def test_a_registration_survives_kill_9(push_srv):
    """What the server acknowledged (the `enable` result) is kept across `kill -9`."""
    srv, app = push_srv
    c = await srv.login("alice", "phone")
    assert await push_iq(c, "enable", "n1") == "result"
    await app.close()
    srv.crash_restart()
    port = int(srv.config["component"]["listen"].rsplit(":", 1)[1])
    wait_port(port)
    app = AppServer(port)
    app.connect()
    await asyncio.wait_for(app.session, 10)
    try:
        await message_to(srv, srv.jid("alice"), "after the crash")
        iq = await app.publishes.wait(lambda iq: node_of(iq) == "n1", what="a notification")
        assert summary(iq)["message-count"] == "1"
    finally:
        await app.close()


async def test_registrations_per_account_are_bounded(push_srv):
    """One account cannot register without bound (each one costs a row and a notification
    per message): the 17th new node is refused with policy-violation (a quota of this server;
    `not-allowed` would read as never allowed); enabling a node it holds again still works."""
    srv, _ = push_srv
    c = await srv.login("alice", "a")
    for i in range(16):
        assert await push_iq(c, "enable", f"dev{i}") == "result", i
    r = await c.iq("set", None, f"<enable xmlns='{NS_PUSH}' jid='{APP}' node='dev16'/>")
    assert stanza_error(r) == "policy-violation"
    assert await push_iq(c, "enable", "dev3") == "result", "re-enabling a held node"
    assert await push_iq(c, "disable", "dev0") == "result"
    assert await push_iq(c, "enable", "dev16") == "result", "room again after a disable"
    await c.close()


async def test_notifications_come_from_the_accounts_own_host(server_factory):
    """Virtual hosting: the publish for an account of a second host comes from that host
    (XEP-0357 §4: an app server may accept publishes only from the user's own server, and
    its refusal would disable the registration)."""
    import xml.etree.ElementTree as ET
    from test_vhost import DAVE, SECOND, slix
    port = free_port()
    srv = server_factory(component={"listen": f"127.0.0.1:{port}",
                                    "service": [{"domain": APP, "secret": SECRET}]},
                         host=[{"domain": SECOND}])
    assert srv.user("add", f"{DAVE[0]}@{SECOND}", password=DAVE[1]).returncode == 0
    wait_port(port)
    app = AppServer(port)
    app.connect()
    await asyncio.wait_for(app.session, 10)
    try:
        dave = await slix(srv, f"dave@{SECOND}", DAVE[1])
        iq = dave.Iq()
        iq["type"] = "set"
        iq.append(ET.fromstring(f"<enable xmlns='{NS_PUSH}' jid='{APP}' node='d1'/>"))
        await iq.send(timeout=10)
        await dave.close()
        await message_to(srv, f"dave@{SECOND}", "hello")
        note = await app.publishes.wait(lambda iq: node_of(iq) == "d1", what="a notification")
        assert note.get("from") == SECOND
    finally:
        await app.close()
