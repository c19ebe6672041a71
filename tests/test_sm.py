"""Flaky links: XEP-0198 stream management (acks, resumption after a killed or silent TCP
connection, the resumption timeout), dead-peer detection with server pings (XEP-0199), and
XEP-0352 client state indication. Counter wrap-around and the exact timer behaviour are unit
tests in crates/c2s (paused clock); here the real server is driven over real sockets."""
import asyncio
import calendar
import time
import xml.etree.ElementTree as ET

import pytest

from slix import SlixClient, slix_login
from xmpp_raw import NS_CLIENT, Closed, RawClient, StreamError, local, tag

NS_SM = "urn:xmpp:sm:3"
NS_CSI = "urn:xmpp:csi:0"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
BODY = f"{{{NS_CLIENT}}}body"


def is_msg(body):
    return lambda e: local(e) == "message" and e.findtext(BODY) == body


class Sm:
    """Client-side XEP-0198 bookkeeping for a raw client: counts the stanzas it receives
    (the `h` it reports) and answers the server's `<r/>`."""

    def __init__(self, client):
        self.c = client
        self.h = 0

    async def recv(self, timeout=None) -> ET.Element:
        while True:
            el = await self.c.recv(timeout)
            if el.tag == tag(NS_SM, "r"):
                self.c.send(f"<a xmlns='{NS_SM}' h='{self.h}'/>")
                continue
            if el.tag in (tag(NS_CLIENT, "message"), tag(NS_CLIENT, "presence"),
                          tag(NS_CLIENT, "iq")):
                self.h += 1
            return el

    # The raw client's deadline loop, over this class's `recv`.
    timeout = 10.0
    expect = RawClient.expect

    async def drain(self, quiet=0.5):
        """Receives until nothing arrives for `quiet` seconds."""
        try:
            while True:
                await self.recv(quiet)
        except asyncio.TimeoutError:
            pass


def is_ping(el) -> bool:
    return (local(el) == "iq" and el.get("type") == "get"
            and el.find("{urn:xmpp:ping}ping") is not None)


async def expect_alive(c, pred, timeout=10.0, what="element") -> ET.Element:
    """`c.expect`, answering the server's keepalive pings meanwhile."""
    def answer_pings(el):
        if is_ping(el):
            c.send(f"<iq type='result' id='{el.get('id')}' to='{el.get('from')}'/>")
            return False
        return pred(el)
    return await c.expect(answer_pings, timeout, what)


async def stay_alive(c, seconds):
    """Reads for `seconds`, answering pings (a live client)."""
    try:
        await expect_alive(c, lambda e: False, timeout=seconds)
    except asyncio.TimeoutError:
        pass


async def enable(c, resume=True) -> tuple[Sm, ET.Element]:
    assert c.has_feature(NS_SM, "sm"), "urn:xmpp:sm:3 not offered after authentication"
    c.send(f"<enable xmlns='{NS_SM}'" + (" resume='true'" if resume else "") + "/>")
    el = await c.expect(lambda e: e.tag in (tag(NS_SM, "enabled"), tag(NS_SM, "failed")),
                        what="<enabled/>")
    assert el.tag == tag(NS_SM, "enabled"), ET.tostring(el, encoding="unicode")
    return Sm(c), el


async def resume(srv, user, previd, h):
    """A new connection that authenticates and sends `<resume/>`; returns (client, answer)."""
    c = srv.client()
    await c.negotiate_tls()
    await c.auth(user, srv.users[user])
    assert c.has_feature(NS_SM, "sm")
    c.send(f"<resume xmlns='{NS_SM}' previd='{previd}' h='{h}'/>")
    el = await c.expect(lambda e: e.tag in (tag(NS_SM, "resumed"), tag(NS_SM, "failed")),
                        what="<resumed/> or <failed/>")
    return c, el


async def test_features_after_authentication(server):
    c = await server.login("alice", "a")
    assert c.has_feature(NS_SM, "sm")
    assert c.has_feature(NS_CSI, "csi")
    await c.close()


async def failed(srv, user, request, condition):
    """A new connection that authenticates as `user` and sends `request`, which the server
    must answer with `<failed/>` and `condition`; returns the connection."""
    c = srv.client()
    await c.negotiate_tls()
    await c.auth(user, srv.users[user])
    c.send(request)
    el = await c.recv()
    assert el.tag == tag(NS_SM, "failed")
    assert el.find(tag(NS_STANZAS, condition)) is not None
    return c


async def test_enable_before_bind_fails_and_bind_still_works(server):
    c = await failed(server, "alice", f"<enable xmlns='{NS_SM}'/>", "unexpected-request")
    assert await c.bind("a") == server.jid("alice", "a")
    await c.close()


async def test_a_second_enable_ends_the_stream(server):
    """§3: a server receiving a second <enable/> "SHOULD respond with a stream error, thus
    terminating the client connection" (policy-violation here)."""
    c = await server.login("alice", "a")
    await enable(c)
    c.send(f"<enable xmlns='{NS_SM}'/>")
    assert await c.stream_error() == "policy-violation"


async def test_enable_and_ack(server):
    """Acceptance scenario 15 and more: `<a h/>` counts what the client sent; the server asks
    for acks of what it sent."""
    c = await server.login("alice", "a")
    sm, en = await enable(c)
    assert en.get("resume") == "true" and en.get("id")
    assert en.get("max") == "300"
    for _ in range(2):
        r = await c.iq("get", server.domain, "<ping xmlns='urn:xmpp:ping'/>")
        assert r.get("type") == "result"
    c.send(f"<r xmlns='{NS_SM}'/>")
    a = await c.expect(lambda e: e.tag == tag(NS_SM, "a"), what="<a/>")
    assert a.get("h") == "2"
    # Five stanzas unacknowledged: the server asks.
    bob = await server.login("bob", "b")
    for i in range(5):
        bob.message(server.jid("alice", "a"), f"m{i}")
    await bob.flush()
    got = 0
    while True:
        el = await c.recv()
        if el.tag == tag(NS_SM, "r"):
            break
        got += 1
    assert got >= 3, "the server asked for an ack before enough stanzas were unacknowledged"
    c.send(f"<a xmlns='{NS_SM}' h='{2 + got}'/>")
    r = await c.iq("get", server.domain, "<ping xmlns='urn:xmpp:ping'/>")
    assert r.get("type") == "result"
    await c.close()
    await bob.close()


async def test_answers_the_session_writes_itself_are_counted(server):
    """The error a malformed stanza gets (RFC 6120 §8.3) and the legacy `<session/>` result
    are stanzas the client counts: the server counts them too, so acknowledging them is no
    stream error and the session goes on (XEP-0198 §4)."""
    c = await server.login("alice", "a")
    sm, _ = await enable(c)
    c.send("<message to='@@bad' id='m1' type='chat'><body>x</body></message>")
    err = await sm.recv()
    assert local(err) == "message" and err.get("type") == "error", ET.tostring(err)
    c.send("<iq type='set' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
    res = await sm.recv()
    assert local(res) == "iq" and res.get("type") == "result" and res.get("id") == "s1"
    assert sm.h == 2
    c.send(f"<a xmlns='{NS_SM}' h='{sm.h}'/>")
    r = await c.iq("get", server.domain, "<ping xmlns='urn:xmpp:ping'/>")
    assert r.get("type") == "result"
    await c.close()


async def test_ack_for_more_than_was_sent_is_a_stream_error(server):
    c = await server.login("alice", "a")
    await enable(c)
    c.send(f"<a xmlns='{NS_SM}' h='10'/>")
    with pytest.raises(StreamError) as e:
        await c.recv()
    assert e.value.condition == "undefined-condition"


async def test_resume_after_the_tcp_connection_was_killed(server):
    """Acceptance scenario 16: a TCP abort, a message meanwhile, `<resume/>` redelivers only
    what was not acknowledged."""
    c = await server.login("alice", "phone")
    await c.presence()
    sm, en = await enable(c)
    previd = en.get("id")
    bob = await server.login("bob", "b")
    bob.message(server.jid("alice", "phone"), "before")
    await bob.flush()
    await sm.expect(is_msg("before"), what="the first message")
    await sm.drain()
    h = sm.h
    c.abort()
    await asyncio.sleep(0.3)
    bob.message(server.jid("alice", "phone"), "while away")
    await bob.flush()
    await asyncio.sleep(0.3)
    c2, el = await resume(server, "alice", previd, h)
    assert el.tag == tag(NS_SM, "resumed"), ET.tostring(el, encoding="unicode")
    assert el.get("previd") == previd
    sm2 = Sm(c2)
    sm2.h = h
    m = await sm2.expect(lambda e: local(e) == "message", what="the message sent while away")
    assert m.findtext(BODY) == "while away", "an acknowledged stanza was sent again"
    assert m.get("to") == server.jid("alice", "phone")
    # Same session: the bound JID did not change and the stream goes on.
    r = await c2.iq("get", server.domain, "<ping xmlns='urn:xmpp:ping'/>")
    assert r.get("type") == "result" and r.get("to") == server.jid("alice", "phone")
    await c2.close()
    await bob.close()


async def test_resume_without_h_fails_and_the_session_waits(server):
    """§5: a `<resume/>` MUST carry 'h' — one without is `bad-request` (taking it as "nothing
    acknowledged" would send everything again), and the session still waits for a proper
    one."""
    c = await server.login("alice", "phone")
    _, en = await enable(c)
    previd = en.get("id")
    c.abort()
    await asyncio.sleep(0.3)
    bad = await failed(server, "alice", f"<resume xmlns='{NS_SM}' previd='{previd}'/>",
                       "bad-request")
    await bad.close()
    c2, el = await resume(server, "alice", previd, 0)
    assert el.tag == tag(NS_SM, "resumed"), ET.tostring(el, encoding="unicode")
    await c2.close()


async def test_resume_while_the_old_socket_is_silent(server):
    """The server has not noticed the old connection is gone (no FIN, no RST): resumption
    takes the session over and closes the old stream."""
    old = await server.login("alice", "phone")
    sm, en = await enable(old)
    bob = await server.login("bob", "b")
    bob.message(server.jid("alice", "phone"), "unacked")
    await bob.flush()
    await sm.expect(is_msg("unacked"), what="the message")
    # The old socket stays open; nothing more is read from it or written to it for now.
    new, el = await resume(server, "alice", en.get("id"), 0)
    assert el.tag == tag(NS_SM, "resumed"), ET.tostring(el, encoding="unicode")
    await new.expect(is_msg("unacked"), what="the unacknowledged message, resent")
    with pytest.raises(StreamError) as e:
        while True:
            await old.recv()
    assert e.value.condition == "conflict"
    await new.close()
    await bob.close()


async def test_resume_with_unknown_id_fails_then_bind_works(server):
    c = await failed(server, "alice", f"<resume xmlns='{NS_SM}' previd='nope' h='0'/>",
                     "item-not-found")
    assert await c.bind("a") == server.jid("alice", "a")
    await c.close()


async def test_another_user_cannot_resume_a_session(server):
    a = await server.login("alice", "a")
    _, en = await enable(a)
    c = await failed(server, "bob", f"<resume xmlns='{NS_SM}' previd='{en.get('id')}' h='0'/>",
                     "item-not-found")
    await c.close()
    await a.close()


async def offline_storage(srv) -> bool:
    c = await srv.login("carol", "probe")
    info = await c.iq("get", srv.domain, "<query xmlns='http://jabber.org/protocol/disco#info'/>")
    await c.close()
    return any(f.get("var") == "msgoffline" for f in info.iter()
               if local(f) == "feature")


async def test_after_the_resumption_timeout_unacked_messages_are_not_lost(server_factory):
    """XEP-0198 §5: when a hibernated session times out, what it did not deliver is handled
    like stanzas to an unavailable resource: offline storage when the server has it, an error
    bounce otherwise — never dropped."""
    srv = server_factory(c2s={"sm_resume_timeout_secs": 1})
    stores_offline = await offline_storage(srv)
    c = await srv.login("alice", "phone")
    await c.presence()
    sm, en = await enable(c)
    assert en.get("max") == "1"
    bob = await srv.login("bob", "b")
    bob.message(srv.jid("alice", "phone"), "lost in transit")
    await bob.flush()
    await sm.expect(is_msg("lost in transit"), what="the message")  # received, never acked
    c.abort()
    await asyncio.sleep(2.5)
    c2, el = await resume(srv, "alice", en.get("id"), 0)
    assert el.tag == tag(NS_SM, "failed")
    assert el.find(tag(NS_STANZAS, "item-not-found")) is not None
    await c2.bind("phone2")
    if stores_offline:
        await c2.presence()
        m = await c2.expect(is_msg("lost in transit"), what="the message from offline storage")
        assert m.get("from") == srv.jid("bob", "b")
    else:
        err = await bob.expect(lambda e: local(e) == "message" and e.get("type") == "error",
                               what="the bounce")
        assert err.findtext(BODY) == "lost in transit"
    await c2.close()
    await bob.close()


async def test_a_client_that_never_acks_is_bounded_in_bytes_and_loses_nothing(server):
    """`sm_max_unacked_bytes` (16 MiB): a client that reads but never answers `<r/>` could
    pin `sm_max_unacked` × `max_stanza_bytes` (125 MiB) per session; past 16 MiB of
    unacknowledged stanzas its stream ends with `policy-violation` (as past the count), and
    what it did not acknowledge is routed again: the next login gets every message."""
    c = await server.login("alice", "phone")
    await c.presence()
    await enable(c)
    bob = await server.login("bob", "b")
    big = "x" * 200_000
    n = 90  # 18 MB: under the count (500), over the bytes

    async def read_without_acks():
        while True:
            await c.recv(20)

    reader = asyncio.create_task(read_without_acks())
    for i in range(n):
        bob.message(server.jid("alice", "phone"), f"{i} {big}")
        await bob.flush()
        # Paced, so that the client keeps up with its connection's queue (a client that
        # does not read is the queue's limit, not this one).
        await asyncio.sleep(0.03)
    with pytest.raises(StreamError) as e:
        await reader
    assert e.value.condition == "policy-violation", e.value
    assert "unacknowledged" in e.value.text, e.value.text
    c.abort()
    again = await server.login("alice", "desk")
    await again.presence()
    got = set()
    while len(got) < n:
        el = await again.expect(lambda x: local(x) == "message" and x.findtext(BODY),
                                timeout=20, what=f"message {len(got)} of {n}")
        got.add(int(el.findtext(BODY).split()[0]))
    await again.close()
    await bob.close()


async def test_offline_messages_are_deleted_only_once_acknowledged(server_factory):
    """Stored messages (XEP-0160) delivered to a managed session stay stored until the client
    acknowledges them (XEP-0198): a crash (kill -9) before the acknowledgement loses none —
    they come again at the next login —, and once acknowledged they are gone."""
    srv = server_factory()
    bob = await srv.login("bob", "b")
    for i in range(5):
        bob.message(srv.jid("alice"), f"stored {i}")
    # In order after the messages: once answered, they are committed to offline storage.
    await bob.iq("get", srv.domain, "<ping xmlns='urn:xmpp:ping'/>")
    await bob.close()
    c = await srv.login("alice", "phone")
    await enable(c)
    await c.presence()
    for i in range(5):
        await c.expect(is_msg(f"stored {i}"), what=f"stored {i}")  # never acknowledged
    srv.crash_restart()
    c = await srv.login("alice", "phone")
    sm, _ = await enable(c)
    await c.presence()
    for i in range(5):
        await sm.expect(is_msg(f"stored {i}"), what=f"stored {i} after the crash")
    c.send(f"<a xmlns='{NS_SM}' h='{sm.h}'/>")
    await asyncio.sleep(1)
    await c.close()
    c = await srv.login("alice", "phone")
    await c.presence()
    with pytest.raises(asyncio.TimeoutError):
        await c.expect(lambda e: local(e) == "message", timeout=1.5, what="nothing")
    await c.close()


async def test_after_the_resumption_timeout_copies_are_not_routed_again_and_the_rest_is_delayed(
        server_factory):
    """XEP-0198 §4: what a timed-out session did not get acknowledged is treated like stanzas
    to an unavailable resource, with a `<delay/>` of when it was first sent; a carbon the
    session got is a copy the other resources already have (they got the original), so it
    is not routed again to them."""
    srv = server_factory(c2s={"sm_resume_timeout_secs": 1})
    desk = await srv.login("alice", "desk")
    phone = await srv.login("alice", "phone")
    for c in (desk, phone):
        r = await c.iq("set", None, "<enable xmlns='urn:xmpp:carbons:2'/>")
        assert r.get("type") == "result"
        await c.presence()
    sm, _ = await enable(phone)
    bob = await srv.login("bob", "b")
    sent = time.time()
    bob.message(srv.jid("alice", "desk"), "to the desk")
    bob.message(srv.jid("alice", "phone"), "to the phone")
    await bob.flush()
    carbon = await sm.expect(lambda e: e.find("{urn:xmpp:carbons:2}received") is not None,
                             what="the received carbon of the desk's message")
    assert carbon.get("from") == "alice@localhost"
    await sm.expect(is_msg("to the phone"), what="the phone's message")   # never acked
    await expect_alive(desk, is_msg("to the desk"), what="the desk's message")
    phone.abort()
    seen = []

    def seeing(pred):
        def f(e):
            seen.append(e)
            return pred(e)
        return f
    m = await expect_alive(desk, seeing(is_msg("to the phone")), timeout=10,
                           what="the phone's message, routed again")
    d = m.find("{urn:xmpp:delay}delay")
    assert d is not None and d.get("from") == "localhost", ET.tostring(m, encoding="unicode")
    stamp = calendar.timegm(time.strptime(d.get("stamp")[:19], "%Y-%m-%dT%H:%M:%S"))
    assert sent - 1 <= stamp <= sent + 1, (d.get("stamp"), sent)
    try:
        await expect_alive(desk, seeing(lambda e: False), timeout=1.0)
    except asyncio.TimeoutError:
        pass
    # The desk's carbon of the phone's message is due; its own message back as a carbon is not.
    again = [e for e in seen if e.find(f"{{urn:xmpp:carbons:2}}received//{BODY}") is not None
             and e.find(f"{{urn:xmpp:carbons:2}}received//{BODY}").text == "to the desk"]
    assert not again, ET.tostring(again[0], encoding="unicode")
    await desk.close()
    await bob.close()


async def test_dead_peer_is_detected_and_unbound(server_factory):
    """A client that stops reading and never answers the server's ping is closed (here within
    about two seconds) and its resource disappears."""
    srv = server_factory(c2s={"ping_interval_secs": 1, "ping_timeout_secs": 1})
    dead = await srv.login("alice", "dead")
    await dead.presence()
    bob = await srv.login("bob", "b")
    await stay_alive(bob, 3.5)  # alice meanwhile reads nothing and answers nothing
    r = await bob.iq("get", srv.jid("alice", "dead"), "<ping xmlns='urn:xmpp:ping'/>")
    assert r.get("type") == "error", "the dead resource is still bound"
    # What the dead socket had been sent: the ping it never answered, then the stream error.
    seen, condition = [], None
    try:
        while True:
            seen.append(await dead.recv(2))
    except StreamError as e:
        condition = e.condition
    except Closed:
        pass
    assert any(is_ping(x) for x in seen), seen
    assert condition == "connection-timeout"
    await bob.close()


async def test_dead_peer_presence_goes_unavailable(server_factory):
    """With the presence engine, a subscribed watcher sees the dead resource go unavailable."""
    srv = server_factory(c2s={"ping_interval_secs": 1, "ping_timeout_secs": 1})
    bob = await srv.login("bob", "watcher")
    roster = await bob.iq("get", None, "<query xmlns='jabber:iq:roster'/>")
    if roster.get("type") != "result":
        await bob.close()
        pytest.skip("no roster/presence module yet")
    await bob.presence()
    meter = await srv.login("alice", "meter-1")
    await meter.presence()
    # Mutual subscription alice <-> bob.
    bob.send(f"<presence to='{srv.jid('alice')}' type='subscribe'/>")
    await bob.flush()
    meter.send(f"<presence to='{srv.jid('bob')}' type='subscribed'/>")
    await meter.flush()
    meter_jid = srv.jid("alice", "meter-1")
    await expect_alive(bob, lambda e: local(e) == "presence" and e.get("from") == meter_jid
                       and e.get("type") is None, what="the meter's presence")
    # The meter stops reading and answering: bob sees it go unavailable.
    await expect_alive(bob, lambda e: local(e) == "presence" and e.get("from") == meter_jid
                       and e.get("type") == "unavailable", timeout=10,
                       what="unavailable presence")
    await bob.close()


async def test_silent_sm_client_hibernates_and_can_resume(server_factory):
    """With resumption on, a connection that goes silent is hibernated instead of closed for
    good, and the client can resume it later."""
    srv = server_factory(c2s={"ping_interval_secs": 1, "ping_timeout_secs": 1})
    c = await srv.login("alice", "phone")
    sm, en = await enable(c)
    await asyncio.sleep(3.5)  # the server's <r/> goes unanswered: hibernation
    bob = await srv.login("bob", "b")
    bob.message(srv.jid("alice", "phone"), "parked")
    await bob.flush()
    c2, el = await resume(srv, "alice", en.get("id"), 0)
    assert el.tag == tag(NS_SM, "resumed"), ET.tostring(el, encoding="unicode")
    await c2.expect(is_msg("parked"), what="the message that waited")
    await c2.close()
    await bob.close()


async def test_csi_holds_presence_and_passes_messages(server):
    alice = await server.login("alice", "phone")
    bob = await server.login("bob", "b")
    alice.send(f"<inactive xmlns='{NS_CSI}'/>")
    r = await alice.iq("get", server.domain, "<ping xmlns='urn:xmpp:ping'/>")
    assert r.get("type") == "result"
    bob.send(f"<presence to='{server.jid('alice', 'phone')}'><status>one</status></presence>")
    bob.send(f"<presence to='{server.jid('alice', 'phone')}'><status>two</status></presence>")
    await bob.flush()
    with pytest.raises(asyncio.TimeoutError):
        await alice.recv(1.0)
    bob.message(server.jid("alice", "phone"), "wake up")
    await bob.flush()
    p = await alice.recv()
    assert local(p) == "presence" and p.findtext(f"{{{NS_CLIENT}}}status") == "two", \
        "the newest presence, before the message"
    m = await alice.recv()
    assert m.findtext(BODY) == "wake up"
    bob.send(f"<presence to='{server.jid('alice', 'phone')}'><status>three</status></presence>")
    await bob.flush()
    with pytest.raises(asyncio.TimeoutError):
        await alice.recv(1.0)
    alice.send(f"<active xmlns='{NS_CSI}'/>")
    p = await alice.recv()
    assert p.findtext(f"{{{NS_CLIENT}}}status") == "three"
    await alice.close()
    await bob.close()


async def test_slixmpp_enables_acks_and_resumes(server):
    """An independent client's XEP-0198 implementation: enable with resumption, acks, then a
    killed TCP connection and slixmpp's own resumption with redelivery."""
    c = SlixClient(server.jid("alice", "slix"), "alicepass")
    c.register_plugin("xep_0198", pconfig={"window": 1})  # an ack request per stanza
    resumed = asyncio.get_running_loop().create_future()
    acked = []
    c.add_event_handler("session_resumed", lambda _: resumed.done() or resumed.set_result(True))
    c.add_event_handler("stanza_acked", lambda st: acked.append(st))
    c.connect(server.host, server.port)
    try:
        await asyncio.wait_for(c.session, 20)
        sm = c.plugin["xep_0198"]
        for _ in range(50):
            if sm.sm_id:
                break
            await asyncio.sleep(0.1)
        assert sm.sm_id, "stream management was not enabled with resumption"
        c.send_presence()
        await c.plugin["xep_0199"].ping(server.domain, timeout=5)
        for _ in range(50):
            if acked:
                break
            await asyncio.sleep(0.1)
        assert acked, "the server never acknowledged slixmpp's stanzas"
        bob = await server.login("bob", "b")
        bob.message(server.jid("alice", "slix"), "first")
        await bob.flush()
        await c.inbox.wait(is_msg("first"), what="the first message")
        # Kill the TCP connection without a close, then have a message wait for us.
        c.transport.abort()
        await asyncio.sleep(0.5)
        bob.message(server.jid("alice", "slix"), "second")
        await bob.flush()
        await asyncio.sleep(0.3)
        c.connect(server.host, server.port)
        await asyncio.wait_for(resumed, 20)
        await c.inbox.wait(is_msg("second"), what="the message sent while disconnected")
        firsts = [e for e in c.inbox.items if is_msg("first")(e)]
        assert len(firsts) >= 1
        await bob.close()
    finally:
        await c.close()
