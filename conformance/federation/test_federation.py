"""Federation between Rookery and real peers (Prosody, ejabberd from Debian), both ways, with
slixmpp clients on each side: messages, IQ (ping, disco), presence subscription and updates.

Every test runs once per peer (the `peer` fixture). The first stanza to a domain sets up the
server-to-server streams (TLS, then dialback or SASL EXTERNAL), so waits are generous.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import time
import xml.etree.ElementTree as ET

import pytest
from slixmpp.exceptions import IqError

import servers
from slix import Component, SlixClient, slix_login

WAIT = 30.0
NS_CLIENT = "jabber:client"


def body(el) -> str | None:
    """The text of a stanza's <body/>, in whatever stream namespace (client or component)."""
    for c in el:
        if c.tag.rsplit("}", 1)[-1] == "body":
            return c.text
    return None


async def clients(rookery, peer, presence=True, users=("alice", "bob")):
    a = await slix_login(rookery, users[0], resource="fed", presence=presence)
    try:
        b = await slix_login(peer, users[1], resource="fed", presence=presence)
    except BaseException:
        await a.close()
        raise
    return a, b


async def close(*cs):
    for c in cs:
        await c.close()


async def round_trip(here, peer, out: str, back: str, presence: bool = False):
    """alice on `here` (a Rookery, a node, or a further host of one) writes `out` to bob on
    `peer`, who answers `back`; each arrives from the other's full JID."""
    a, b = await clients(here, peer, presence=presence)
    try:
        a.send_message(mto=peer.jid("bob", "fed"), mbody=out, mtype="chat")
        m = await b.inbox.wait(lambda el: body(el) == out, WAIT, what=f"{out!r} on {peer.domain}")
        assert m.get("from") == here.jid("alice", "fed")
        b.send_message(mto=here.jid("alice", "fed"), mbody=back, mtype="chat")
        m = await a.inbox.wait(lambda el: body(el) == back, WAIT, what=f"{back!r} on {here.domain}")
        assert m.get("from") == peer.jid("bob", "fed")
    finally:
        await close(a, b)


async def test_message_rookery_to_peer(rookery, peer):
    a, b = await clients(rookery, peer)
    try:
        a.send_message(mto=peer.jid("bob", "fed"), mbody="hello from rookery", mtype="chat")
        m = await b.inbox.wait(lambda el: body(el) == "hello from rookery", WAIT,
                               what=f"the message on {peer.domain}")
        assert m.get("from") == rookery.jid("alice", "fed")
    finally:
        await close(a, b)


async def test_message_peer_to_rookery(rookery, peer):
    a, b = await clients(rookery, peer)
    try:
        b.send_message(mto=rookery.jid("alice", "fed"), mbody=f"hello from {peer.domain}",
                       mtype="chat")
        m = await a.inbox.wait(lambda el: body(el) == f"hello from {peer.domain}", WAIT,
                               what="the message on rookery")
        assert m.get("from") == peer.jid("bob", "fed")
        # To the bare JID: delivered to the available resource.
        b.send_message(mto=rookery.jid("alice"), mbody="to the bare jid", mtype="chat")
        await a.inbox.wait(lambda el: body(el) == "to the bare jid", WAIT, what="bare-JID message")
    finally:
        await close(a, b)


async def test_iq_ping_and_disco_rookery_to_peer(rookery, peer):
    a, b = await clients(rookery, peer)
    try:
        await a.plugin["xep_0199"].send_ping(peer.domain, timeout=WAIT)
        info = await a.plugin["xep_0030"].get_info(jid=peer.domain, timeout=WAIT)
        ids = info["disco_info"]["identities"]
        assert any(cat == "server" for cat, *_ in ids), ids
        # Client to client across the federation.
        await a.plugin["xep_0199"].send_ping(peer.jid("bob", "fed"), timeout=WAIT)
    finally:
        await close(a, b)


async def test_iq_ping_and_disco_peer_to_rookery(rookery, peer):
    a, b = await clients(rookery, peer)
    try:
        await b.plugin["xep_0199"].send_ping(rookery.domain, timeout=WAIT)
        info = await b.plugin["xep_0030"].get_info(jid=rookery.domain, timeout=WAIT)
        feats = info["disco_info"]["features"]
        assert "urn:xmpp:ping" in feats, feats
        await b.plugin["xep_0199"].send_ping(rookery.jid("alice", "fed"), timeout=WAIT)
    finally:
        await close(a, b)


async def _has_roster(rookery) -> bool:
    a = await slix_login(rookery, "alice", resource="probe")
    try:
        await a.get_roster(timeout=WAIT)
        return True
    except IqError:
        return False
    finally:
        await a.close()


@pytest.mark.parametrize("direction", ["rookery_subscribes", "peer_subscribes"])
async def test_presence_subscription_and_updates(rookery, peer, direction):
    if not await _has_roster(rookery):
        pytest.skip("the roster/presence engine (crates/im) is not wired into the server yet")
    # Fresh users per direction: once subscribed both ways, a new request changes nothing.
    users = ("alice", "bob") if direction == "rookery_subscribes" else ("carol", "carol")
    await subscription_and_updates(rookery, peer, users, direction)


async def subscription_and_updates(rookery, peer, users: tuple[str, str], direction: str):
    """users[0] on `rookery` (a server or a node of a cluster) and users[1] on `peer`
    subscribe to each other (`direction` says who asks), then the other's presence update
    reaches the subscriber."""
    a, b = await clients(rookery, peer, users=users)
    try:
        # Subscription stanzas go to "interested" resources: those that fetched the roster
        # (RFC 6121 §2.1.6).
        await a.get_roster(timeout=WAIT)
        await b.get_roster(timeout=WAIT)
        ajid, bjid = rookery.jid(users[0]), peer.jid(users[1])
        sub, other, sub_jid, other_jid = (a, b, ajid, bjid) if direction == "rookery_subscribes" \
            else (b, a, bjid, ajid)
        # slixmpp approves (auto_authorize) and subscribes back (auto_subscribe).
        sub.send_presence(pto=other_jid, ptype="subscribe")
        await sub.inbox.wait(lambda el: el.get("type") == "subscribed"
                             and el.get("from", "").startswith(other_jid), WAIT,
                             what="subscribed")
        await other.inbox.wait(lambda el: el.get("type") == "subscribe"
                               and el.get("from", "").startswith(sub_jid), WAIT,
                               what="the subscription request")
        # Presence updates flow to the subscriber.
        other.send_presence(pstatus="updated status")
        await sub.inbox.wait(
            lambda el: el.get("from", "").startswith(other_jid)
            and (el.find(f"{{{NS_CLIENT}}}status") is not None
                 and el.find(f"{{{NS_CLIENT}}}status").text == "updated status"),
            WAIT, what="the presence update")
    finally:
        await close(a, b)


async def test_s2s_authentication_method(rookery, peer):
    """Both directions authenticated the way the mode calls for: SASL EXTERNAL when the
    certificates are trusted, dialback otherwise (read from Rookery's log)."""
    a, b = await clients(rookery, peer)
    try:
        a.send_message(mto=peer.jid("bob", "fed"), mbody="auth check out", mtype="chat")
        await b.inbox.wait(lambda el: body(el) == "auth check out", WAIT, what="message out")
        b.send_message(mto=rookery.jid("alice", "fed"), mbody="auth check in", mtype="chat")
        await a.inbox.wait(lambda el: body(el) == "auth check in", WAIT, what="message in")
    finally:
        await close(a, b)
    log = rookery.log()
    method = "SASL EXTERNAL" if os.environ.get("FEDERATION_MODE") == "external" else "dialback"
    out = re.search(rf"s2s_out{{local={re.escape(rookery.domain)} remote={re.escape(peer.domain)}}}"
                    rf".*authenticated with {method}", log)
    assert out, f"outgoing stream to {peer.domain} not authenticated with {method}"
    inc = re.search(rf"s2s_in{{.*authenticated with {method}.*{re.escape(peer.domain)}", log)
    assert inc, f"incoming stream from {peer.domain} not authenticated with {method}"
    if rookery.s2s_direct_tls_port:
        # Rookery published `_xmpps-server` first: the peer came over direct TLS (XEP-0368).
        assert "direct_tls=true" in inc.group(0), inc.group(0)


async def test_a_second_host_federates_with_its_own_certificate(rookery, peer):
    """A further domain of Rookery (`[[host]]` with a certificate of its own) reaches the peer
    as itself, both ways. In "external" mode the peer requires certificates valid for the
    domain a stream speaks for: Rookery's stream from the second host presents that host's
    certificate and is accepted by SASL EXTERNAL (the primary's would be refused)."""
    second = rookery.host_view(servers.SECOND_HOST)
    await round_trip(second, peer, "from the second host", "to the second host")
    method = "SASL EXTERNAL" if os.environ.get("FEDERATION_MODE") == "external" else "dialback"
    out = re.search(rf"s2s_out{{local={re.escape(second.domain)} remote={re.escape(peer.domain)}}}"
                    rf".*authenticated with {method}", rookery.log())
    assert out, f"outgoing stream {second.domain} → {peer.domain} not authenticated with {method}"


async def test_admin_closes_the_streams_with_a_peer(rookery, peer):
    """`rookery ctl s2s` lists the streams with the peer in both directions by domain; `ctl
    s2s close` ends them all, and the next stanzas open new ones."""
    def with_peer() -> tuple[bool, bool]:
        r = rookery.ctl("--json", "s2s")
        assert r.returncode == 0, r.stderr
        listed = json.loads(r.stdout)
        return (any(s["remote"] == peer.domain for s in listed["outgoing"]),
                any(peer.domain in s["remote"] for s in listed["incoming_streams"]))

    async def both_ways(text: str):
        a.send_message(mto=peer.jid("bob", "fed"), mbody=f"{text} out", mtype="chat")
        await b.inbox.wait(lambda el: body(el) == f"{text} out", WAIT, what=f"{text} out")
        b.send_message(mto=rookery.jid("alice", "fed"), mbody=f"{text} in", mtype="chat")
        await a.inbox.wait(lambda el: body(el) == f"{text} in", WAIT, what=f"{text} in")

    a, b = await clients(rookery, peer)
    try:
        await both_ways("before the close")
        assert with_peer() == (True, True)
        r = rookery.ctl("s2s", "close", peer.domain)
        assert r.returncode == 0 and "closed" in r.stdout, r.stderr
        deadline = time.monotonic() + WAIT
        while with_peer() != (False, False):
            assert time.monotonic() < deadline, f"streams with {peer.domain} still listed"
            await asyncio.sleep(0.2)
        assert "outgoing stream closed by an administrator" in rookery.log()
        await both_ways("after the close")
    finally:
        await close(a, b)


async def test_pubsub_service_from_a_remote_user(rookery, peer):
    """A user of the peer subscribes to a node of pubsub.<rookery> (a domain of its own, with
    its own server-to-server streams) and gets the notification of a publication."""
    a, b = await clients(rookery, peer)
    service, node = f"pubsub.{rookery.domain}", f"news-{peer.domain.split('.')[0]}"
    ns_event = "http://jabber.org/protocol/pubsub#event"
    try:
        for c in (a, b):
            c.register_plugin("xep_0060")
        await a.plugin["xep_0060"].create_node(service, node, timeout=WAIT)
        info = await b.plugin["xep_0030"].get_info(jid=service, node=node, timeout=WAIT)
        assert any(cat == "pubsub" for cat, *_ in info["disco_info"]["identities"])
        await b.plugin["xep_0060"].subscribe(service, node, timeout=WAIT)
        entry = ET.Element("{urn:example:federation}entry")
        entry.text = f"hello {peer.domain}"
        await a.plugin["xep_0060"].publish(service, node, id="item1", payload=entry,
                                           timeout=WAIT)
        ev = await b.inbox.wait(
            lambda el: el.get("from") == service
            and el.find(f"{{{ns_event}}}event/{{{ns_event}}}items/{{{ns_event}}}item") is not None,
            WAIT, what="the pubsub notification")
        item = ev.find(f"{{{ns_event}}}event/{{{ns_event}}}items/{{{ns_event}}}item")
        assert item.get("id") == "item1"
        assert item.find("{urn:example:federation}entry").text == f"hello {peer.domain}"
    finally:
        await close(a, b)


async def pep_client(srv, user, resource="pep"):
    """A client that advertises +notify for User Nickname (XEP-0172) through its caps."""
    c = SlixClient(srv.jid(user, resource), srv.users[user])
    for p in ("xep_0115", "xep_0163", "xep_0172"):
        c.register_plugin(p)
    c.connect(srv.host, srv.port)
    try:
        await asyncio.wait_for(c.session, WAIT)
        await c.get_roster(timeout=WAIT)
    except BaseException:
        await c.close()
        raise
    c.send_presence()
    return c


@pytest.mark.parametrize("publisher", ["peer", "rookery"])
async def test_pep_notification_to_a_remote_contact(rookery, peer, publisher):
    """XEP-0163 across servers: contacts subscribed to each other's presence get the other's
    nickname publication, filtered by the +notify in their caps (which the publisher's server
    learnt from the contact's presence and a disco#info query across the federation)."""
    users = {"peer": ("bob", "carol"), "rookery": ("carol", "bob")}[publisher]
    a = await pep_client(rookery, users[0])
    try:
        b = await pep_client(peer, users[1])
    except BaseException:
        await a.close()
        raise
    try:
        ajid, bjid = rookery.jid(users[0]), peer.jid(users[1])
        a.send_presence(pto=bjid, ptype="subscribe")
        await a.inbox.wait(lambda el: el.get("type") == "subscribed", WAIT, what="subscribed")
        await b.inbox.wait(lambda el: el.get("type") == "subscribed", WAIT,
                           what="subscribed back")
        await asyncio.sleep(1)  # let each server learn the other client's caps
        pub, sub, pub_jid = (b, a, bjid) if publisher == "peer" else (a, b, ajid)
        nick = f"nick of {pub_jid}"
        await pub.plugin["xep_0172"].publish_nick(nick, timeout=WAIT)
        ns_event, ns_nick = "http://jabber.org/protocol/pubsub#event", "http://jabber.org/protocol/nick"
        await sub.inbox.wait(
            lambda el: el.get("from", "").startswith(pub_jid)
            and el.find(f".//{{{ns_event}}}item/{{{ns_nick}}}nick") is not None
            and el.find(f".//{{{ns_event}}}item/{{{ns_nick}}}nick").text == nick,
            WAIT, what="the PEP notification")
    finally:
        await close(a, b)


NS_EVENT, NS_NICK = "http://jabber.org/protocol/pubsub#event", "http://jabber.org/protocol/nick"


def nick_of(el) -> str | None:
    n = el.find(f".//{{{NS_EVENT}}}item/{{{NS_NICK}}}nick")
    return n.text if n is not None else None


async def test_pep_last_item_to_a_remote_contact_coming_online(rookery, peer):
    """XEP-0163 §4.3.2 across servers: a remote contact's resource that comes online with
    +notify gets the last published item from Rookery, learnt from its presence alone —
    also while the publishing account is offline."""
    # A pair no other test subscribes, so the handshake below is a fresh one.
    a = await pep_client(rookery, "alice")
    try:
        b = await pep_client(peer, "alice")
    except BaseException:
        await a.close()
        raise
    b2 = b3 = None
    try:
        ajid, bjid = rookery.jid("alice"), peer.jid("alice")
        a.send_presence(pto=bjid, ptype="subscribe")
        await a.inbox.wait(lambda el: el.get("type") == "subscribed", WAIT, what="subscribed")
        await b.inbox.wait(lambda el: el.get("type") == "subscribed", WAIT,
                           what="subscribed back")
        await asyncio.sleep(1)
        nick = f"last nick of {ajid} for {peer.domain}"
        await a.plugin["xep_0172"].publish_nick(nick, timeout=WAIT)
        await b.inbox.wait(lambda el: el.get("from", "").startswith(ajid) and nick_of(el) == nick,
                           WAIT, what="the notification to the first resource")
        b2 = await pep_client(peer, "alice", resource="pep2")
        await b2.inbox.wait(lambda el: el.get("from", "").startswith(ajid)
                            and nick_of(el) == nick, WAIT,
                            what="the last item sent to the new resource")
        # The owner gone (PEP does not tie notifications to its presence, §3): a resource
        # coming online now is owed the last item all the same — a new OMEMO device list.
        await a.close()
        await asyncio.sleep(1)
        b3 = await pep_client(peer, "alice", resource="pep3")
        await b3.inbox.wait(lambda el: el.get("from", "").startswith(ajid)
                            and nick_of(el) == nick, WAIT,
                            what="the last item of an owner who is offline")
    finally:
        await close(*(c for c in (a, b, b2, b3) if c is not None))


async def test_component_reachable_from_a_remote_server(rookery, peer):
    """An XEP-0114 component at bot.<rookery> is a domain of its own to the federation: the
    peer resolves it, opens server-to-server streams to it (authenticated as that domain, by
    dialback or SASL EXTERNAL), and the component's answers go back on streams from it."""
    bot = rookery.component_domain
    comp = Component(bot, rookery.component_secret, rookery.component_port)
    comp.connect()
    try:
        await asyncio.wait_for(comp.session, WAIT)
        b = await slix_login(peer, "bob", resource="tobot", presence=True)
    except BaseException:
        await comp.close()
        raise
    try:
        b.send_message(mto=f"echo@{bot}", mbody=f"hello bot from {peer.domain}", mtype="chat")
        m = await b.inbox.wait(lambda el: body(el) == f"echo: hello bot from {peer.domain}",
                               WAIT, what="the component's echo")
        assert m.get("from") == f"echo@{bot}"
        got = await comp.inbox.wait(lambda el: body(el) == f"hello bot from {peer.domain}", WAIT,
                                    what="the message at the component")
        assert got.get("from") == peer.jid("bob", "tobot")
        # IQ round trips to the component's domain: disco#info and software version.
        info = await b.plugin["xep_0030"].get_info(jid=bot, timeout=WAIT)
        ids = info["disco_info"]["identities"]
        assert any(cat == "automation" for cat, *_ in ids), ids
        b.register_plugin("xep_0092")
        v = await b.plugin["xep_0092"].get_version(bot, timeout=WAIT)
        assert v["software_version"]["name"], v
        # Component-initiated, to the remote user's full JID.
        comp.send_message(mto=peer.jid("bob", "tobot"), mfrom=bot, mbody="unprompted",
                          mtype="chat")
        await b.inbox.wait(lambda el: body(el) == "unprompted" and el.get("from") == bot, WAIT,
                           what="the component's own message")
    finally:
        await close(b, comp)
    out = re.search(rf"s2s_out{{local={re.escape(bot)} remote={re.escape(peer.domain)}}}"
                    r".*authenticated with", rookery.log())
    assert out, f"no outgoing stream authenticated as {bot} to {peer.domain}"


async def test_unreachable_domain_bounces(rookery, peer):
    a = await slix_login(rookery, "alice", resource="bounce")
    try:
        start = time.monotonic()
        a.send_message(mto="x@nowhere.example", mbody="lost", mtype="chat")
        err = await a.inbox.wait(lambda el: el.get("type") == "error"
                                 and el.get("from", "").endswith("nowhere.example"), WAIT,
                                 what="the bounce")
        assert err.find(f"{{{NS_CLIENT}}}error/"
                        "{urn:ietf:params:xml:ns:xmpp-stanzas}remote-server-not-found") is not None
        assert time.monotonic() - start < WAIT
    finally:
        await a.close()
    await asyncio.sleep(0)


async def muc_client(srv, user, resource="muc"):
    return await slix_login(srv, user, resource=resource, presence=True,
                            plugins=("xep_0004", "xep_0045"))


def muc_codes(pres) -> set[int]:
    return {int(c) for c in pres["muc"]["status_codes"]}


async def test_muc_room_with_a_remote_occupant(rookery, peer):
    """XEP-0045 across servers: a user of the peer enters a room at conference.<rookery> (a
    domain of its own, reached over server-to-server streams), is announced to the local
    occupants with its real JID for the owner, and exchanges groupchat and private messages
    with them; its leaving is announced. The room sees the remote occupant exactly as a local
    one (status codes, role, affiliation)."""
    from slixmpp.plugins.xep_0004 import Form
    room = f"fed-{peer.domain.split('.')[0]}@conference.{rookery.domain}"
    a = await muc_client(rookery, "alice")
    try:
        b = await muc_client(peer, "bob")
    except BaseException:
        await a.close()
        raise
    try:
        pres, *_ = await a.plugin["xep_0045"].join_muc_wait(room, "owner", timeout=WAIT)
        assert muc_codes(pres) == {110, 201}
        form = Form()
        form["type"] = "submit"
        await a.plugin["xep_0045"].set_room_config(room, form, timeout=WAIT)
        # The remote user enters: self-presence (110) with its role and affiliation.
        pres, *_ = await b.plugin["xep_0045"].join_muc_wait(room, "remote", timeout=WAIT)
        assert 110 in muc_codes(pres)
        assert (pres["muc"]["role"], pres["muc"]["affiliation"]) == ("participant", "none")
        # The occupant already there, as the remote user's server relayed it.
        owner = await b.inbox.wait(lambda el: el.get("from") == f"{room}/owner", WAIT,
                                   what="the owner's presence on the peer")
        item = owner.find("{http://jabber.org/protocol/muc#user}x/"
                          "{http://jabber.org/protocol/muc#user}item")
        assert (item.get("role"), item.get("affiliation")) == ("moderator", "owner")
        # The owner is told, with the remote occupant's real JID (moderators see it).
        seen = await a.inbox.wait(
            lambda el: el.get("from") == f"{room}/remote" and el.get("type") is None, WAIT,
            what="the remote occupant's presence")
        item = seen.find("{http://jabber.org/protocol/muc#user}x/"
                         "{http://jabber.org/protocol/muc#user}item")
        assert item.get("jid") == peer.jid("bob", "muc")
        assert (item.get("role"), item.get("affiliation")) == ("participant", "none")
        # Groupchat both ways, reflected to every occupant.
        a.send_message(mto=room, mbody=f"welcome, {peer.domain}", mtype="groupchat")
        m = await b.inbox.wait(lambda el: body(el) == f"welcome, {peer.domain}", WAIT,
                               what="the groupchat message on the peer")
        assert m.get("from") == f"{room}/owner" and m.get("type") == "groupchat"
        b.send_message(mto=room, mbody="thanks from afar", mtype="groupchat")
        m = await a.inbox.wait(lambda el: body(el) == "thanks from afar", WAIT,
                               what="the remote occupant's groupchat message")
        assert m.get("from") == f"{room}/remote"
        await b.inbox.wait(lambda el: body(el) == "thanks from afar"
                           and el.get("from") == f"{room}/remote", WAIT,
                           what="the reflection to the remote sender")
        # A private message through the room, from the remote occupant to the owner.
        b.send_message(mto=f"{room}/owner", mbody="psst", mtype="chat")
        m = await a.inbox.wait(lambda el: body(el) == "psst", WAIT, what="the private message")
        assert m.get("from") == f"{room}/remote"
        # Leaving is announced to the others.
        b.plugin["xep_0045"].leave_muc(room, "remote")
        await a.inbox.wait(lambda el: el.get("from") == f"{room}/remote"
                           and el.get("type") == "unavailable", WAIT,
                           what="the remote occupant leaving")
    finally:
        await close(a, b)


async def test_a_cluster_federates_from_either_node(rookery_cluster, peer):
    """Two nodes of a Rookery cluster, only the first in DNS: alice on node 2 writes to the
    peer over node 2's own stream (the peer checks its dialback key through node 1: one
    secret for every node), and the peer's answer comes in through node 1 and crosses the
    bus to her."""
    _, n2 = rookery_cluster
    await round_trip(n2, peer, "from node 2", "to node 2", presence=True)
    # Presence from the peer to carol's bare JID comes in through node 1 (the one in DNS)
    # and reaches her resource on node 2; the peer's probe (at its user's next presence) is
    # answered by node 2, which holds her presence.
    await subscription_and_updates(n2, peer, ("carol", "bob"), "rookery_subscribes")
    await subscription_and_updates(n2, peer, ("bob", "carol"), "peer_subscribes")


async def test_a_dead_nodes_users_go_unavailable_for_contacts_on_the_peer(rookery_cluster, peer):
    """Node 2 of the cluster is killed (SIGKILL) while alice is online on it: once the lease
    runs out, node 1 tells her contact on the peer server that her resource is unavailable
    (RFC 6121 §4.5.2) — her own node can no longer, and the peer would otherwise show her
    online until her next login. Node 2 is started again afterwards."""
    _, n2 = rookery_cluster
    await subscription_and_updates(n2, peer, ("alice", "alice"), "rookery_subscribes")
    a, b = await clients(n2, peer, users=("alice", "alice"))
    try:
        await gone_with_its_node(n2, b, n2.jid("alice", "fed"))
    finally:
        await close(a, b)
        n2.start()


async def test_a_dead_nodes_directed_presence_is_ended_on_the_peer(rookery_cluster, peer):
    """RFC 6121 §4.6.3 across a node's death: bob on node 2 sends directed presence to bob on
    the peer, who is not his contact — as a client does to a room on another server — so
    only node 2 kept that he is owed an unavailable presence; node 2 told node 1 (a note on
    the bus), and when node 2 is killed (SIGKILL) node 1 sends it once the lease runs out.
    Node 2 is started again afterwards."""
    _, n2 = rookery_cluster
    a, b = await clients(n2, peer, users=("bob", "bob"))
    try:
        a.send_presence(pto=peer.jid("bob", "fed"))
        await gone_with_its_node(n2, b, n2.jid("bob", "fed"))
    finally:
        await close(a, b)
        n2.start()


async def gone_with_its_node(node, watcher, jid: str):
    """Once `watcher` (a client on the peer) was shown `jid` available, kills `node`, which
    holds `jid`'s session, and waits for `watcher` to get `jid`'s unavailable presence —
    from another node, `jid`'s own being dead."""

    def presence(t):
        return lambda el: (el.tag.endswith("presence") and el.get("from") == jid
                           and el.get("type") == t)

    await watcher.inbox.wait(presence(None), WAIT, what=f"{jid} available at the peer")
    watcher.inbox.items.clear()
    servers.kill_group(node.proc)
    await watcher.inbox.wait(presence("unavailable"), WAIT,
                             what=f"{jid} unavailable at the peer after its node died")
