"""Routing between local sessions (RFC 6120 §8, §10; RFC 6121 §8.5) and the `from` rule."""
import pytest

from slix import slix_login
from xmpp_raw import NS_CLIENT, Closed, StreamError, local, stanza_error

BODY = f"{{{NS_CLIENT}}}body"


def is_msg(body):
    return lambda e: local(e) == "message" and e.findtext(BODY) == body


async def test_message_between_slixmpp_clients(server_factory, backend):
    """Full JID, bare JID (to the available resource) and a reply, with slixmpp."""
    srv = server_factory(backend=backend)
    alice = await slix_login(srv, "alice", resource="a", presence=True)
    bob = await slix_login(srv, "bob", resource="b", presence=True)
    try:
        alice.send_message(mto=srv.jid("bob", "b"), mbody="hi full", mtype="chat")
        m = await bob.inbox.wait(is_msg("hi full"), what="message to the full JID")
        assert m.get("from") == srv.jid("alice", "a")
        assert m.get("to") == srv.jid("bob", "b")
        alice.send_message(mto=srv.jid("bob"), mbody="hi bare", mtype="chat")
        m = await bob.inbox.wait(is_msg("hi bare"), what="message to the bare JID")
        assert m.get("from") == srv.jid("alice", "a")
        bob.send_message(mto=m.get("from"), mbody="reply", mtype="chat")
        r = await alice.inbox.wait(is_msg("reply"), what="the reply")
        assert r.get("from") == srv.jid("bob", "b")
    finally:
        await alice.close()
        await bob.close()


async def test_message_to_bare_jid_goes_to_highest_priority(server):
    alice = await server.login("alice", "a")
    hi = await server.login("bob", "hi")
    lo = await server.login("bob", "lo")
    hi.send("<presence><priority>5</priority></presence>")
    lo.send("<presence><priority>1</priority></presence>")
    await hi.flush()
    await lo.flush()
    # Presence is processed in order per session; a ping round trip makes sure it was.
    for c in (hi, lo):
        await c.iq("get", None, "<ping xmlns='urn:xmpp:ping'/>")
    alice.message("bob@localhost", "to the best")
    m = await hi.expect(is_msg("to the best"))
    assert m.get("from") == "alice@localhost/a"
    # lo must not get it: the next thing lo receives is the reply to its own ping.
    lo.send("<iq type='get' id='after'><ping xmlns='urn:xmpp:ping'/></iq>")
    nxt = await lo.expect(lambda e: local(e) in ("message", "iq"))
    assert local(nxt) == "iq" and nxt.get("id") == "after"
    for c in (alice, hi, lo):
        await c.close()


async def test_spoofed_from_is_rewritten(server):
    alice = await server.login("alice", "a")
    bob = await server.login("bob", "b")
    alice.send("<message from='carol@localhost/evil' to='bob@localhost/b' type='chat'>"
               "<body>spoof</body></message>")
    m = await bob.expect(is_msg("spoof"))
    assert m.get("from") == "alice@localhost/a"
    # The same for IQs: the reply goes back to the real sender.
    r = await alice.iq("get", "bob@localhost", "<ping xmlns='urn:xmpp:ping'/>")
    assert r.get("from") == "bob@localhost" and r.get("type") == "result"
    alice.send("<iq type='get' id='sp' from='carol@localhost' to='bob@localhost/b'>"
               "<query xmlns='urn:example:x'/></iq>")
    iq = await bob.expect(lambda e: local(e) == "iq" and e.get("id") == "sp")
    assert iq.get("from") == "alice@localhost/a"
    for c in (alice, bob):
        await c.close()


async def test_iq_between_clients(server):
    alice = await server.login("alice", "a")
    bob = await server.login("bob", "b")
    alice.send("<iq type='get' id='q1' to='bob@localhost/b'><query xmlns='urn:example:q'/></iq>")
    iq = await bob.expect(lambda e: local(e) == "iq" and e.get("id") == "q1")
    bob.send("<iq type='result' id='q1' to='alice@localhost/a'/>")
    r = await alice.expect(lambda e: local(e) == "iq" and e.get("id") == "q1")
    assert r.get("type") == "result" and r.get("from") == "bob@localhost/b"
    assert iq.get("from") == "alice@localhost/a"
    for c in (alice, bob):
        await c.close()


@pytest.mark.parametrize("to", ["nobody@localhost", "nobody@localhost/res",
                                "bob@localhost/offline"])
async def test_iq_to_unknown_user_or_offline_resource_is_service_unavailable(server, to):
    alice = await server.login("alice", "a")
    r = await alice.iq("get", to, "<query xmlns='jabber:iq:version'/>")
    assert r.get("type") == "error" and stanza_error(r) == "service-unavailable"
    assert r.get("from") == to
    await alice.close()


async def test_unknown_payload_to_account_and_server_is_service_unavailable(server):
    alice = await server.login("alice", "a")
    for to in ["bob@localhost", "localhost", None]:
        r = await alice.iq("get", to, "<query xmlns='urn:example:unknown'/>")
        assert stanza_error(r) == "service-unavailable", to
    await alice.close()


async def test_message_to_unknown_user_bounces(server):
    alice = await server.login("alice", "a")
    alice.message("nobody@localhost", "hello?")
    r = await alice.expect(lambda e: local(e) == "message")
    assert r.get("type") == "error" and stanza_error(r) == "service-unavailable"
    assert r.get("from") == "nobody@localhost"
    await alice.close()


async def test_results_and_errors_are_never_answered(server):
    """An IQ result/error (and a message error) to nowhere is dropped, not bounced: the next
    thing the client receives is the reply to its following request."""
    alice = await server.login("alice", "a")
    alice.send("<iq type='result' id='r1' to='nobody@localhost/x'/>")
    alice.send("<iq type='error' id='r2' to='bob@localhost/gone'>"
               "<error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
               "</error></iq>")
    alice.send("<message type='error' to='nobody@localhost'><body>x</body></message>")
    # Malformed ones too (§8.2.3): a result with a bad address or none with an id; and an IQ
    # without id, whose reply could not say what it answers.
    alice.send("<iq type='result' id='r3' to='a@@b'/>")
    alice.send("<iq type='result'/>")
    alice.send("<iq type='get'><ping xmlns='urn:xmpp:ping'/></iq>")
    alice.send("<iq type='get' id='probe'><ping xmlns='urn:xmpp:ping'/></iq>")
    first = await alice.expect(lambda e: True)
    assert local(first) == "iq" and first.get("id") == "probe"
    await alice.close()


async def test_message_to_unreachable_remote_domain_bounces(server_factory):
    """RFC 6120 §10.4: a foreign domain goes to the s2s route; when its server cannot be
    reached the stanza bounces. A static route to a closed loopback port keeps the test off
    the network (no DNS, no outside traffic)."""
    srv = server_factory(s2s={"routes": {"nowhere.invalid": "127.0.0.1:1"}})
    alice = await srv.login("alice", "a")
    alice.message("someone@nowhere.invalid", "far away")
    r = await alice.expect(lambda e: local(e) == "message", timeout=30)
    assert r.get("type") == "error"
    assert stanza_error(r) in ("remote-server-not-found", "remote-server-timeout")
    assert r.get("from") == "someone@nowhere.invalid"
    await alice.close()


async def test_message_without_to_goes_to_own_account(server):
    """RFC 6120 §10.3.1: no `to` means the sender's bare JID."""
    a1 = await server.login("alice", "one")
    a2 = await server.login("alice", "two")
    await a2.presence()
    await a2.iq("get", None, "<ping xmlns='urn:xmpp:ping'/>")
    a1.send("<message type='chat'><body>note to self</body></message>")
    m = await a2.expect(is_msg("note to self"))
    assert m.get("from") == "alice@localhost/one"
    await a1.close()
    await a2.close()


async def test_a_client_that_does_not_read_is_disconnected(server_factory):
    """The outbound queue per session is bounded (`session_queue`): a client that stops
    reading is cut off with a stream error instead of growing the server's memory, and the
    sender is not affected."""
    srv = server_factory(session_queue=8)
    bob = srv.client(rcvbuf=4096)
    await bob.login("bob", "bobpass", "stuck")
    bob.pause_reading()
    alice = await srv.login("alice", "a")
    n, body = 1000, "x" * 8000   # 8 MB: far more than the socket and TLS buffers hold
    for i in range(n):
        alice.message("bob@localhost/stuck", f"{i} {body}")
    await alice.flush()
    r = await alice.iq("get", None, "<ping xmlns='urn:xmpp:ping'/>", timeout=60)
    assert r.get("type") == "result", "the sender is still served"
    received = 0
    cond = None
    bob.writer.transport.resume_reading()
    try:
        while True:
            el = await bob.recv(timeout=30)
            received += local(el) == "message"
    except StreamError as e:
        cond = e.condition
    except Closed:
        pass
    # policy-violation from the full queue, or connection-timeout when a write to the
    # non-reading client times out first; either way the session ended before all arrived.
    assert cond in ("policy-violation", "connection-timeout"), cond
    assert received < n
    await alice.close()


@pytest.mark.parametrize(
    "bound",
    [{"session_queue": 8}, {"session_queue": 100000, "session_queue_bytes": 65536}],
    ids=["stanzas", "bytes"],
)
async def test_nothing_sent_to_a_client_that_does_not_read_is_lost(server_factory, bound):
    """A client that stops reading is disconnected when its queue overflows — counted in
    stanzas (`session_queue`) or in bytes (`session_queue_bytes`) —, but every message sent
    to it still ends somewhere: it read it before the stream error, or it finds it in offline
    storage at its next login (RFC 6121 §8.5.3.2.1: a message for a resource that is not
    online is handled as if sent to the bare JID), or the sender gets an error. The message
    that overflowed the queue, and those sent until the session was unbound, used to vanish."""
    srv = server_factory(**bound, im={"offline": {"max_per_user": 2000}})
    bob = srv.client(rcvbuf=4096)
    await bob.login("bob", "bobpass", "stuck")
    await bob.presence()
    bob.pause_reading()
    alice = await srv.login("alice", "a")
    n, body = 1000, "x" * 8000   # 8 MB: far more than the socket and TLS buffers hold
    for i in range(n):
        alice.message("bob@localhost/stuck", f"{i} {body}")
    alice.send("<iq type='get' id='sync'><ping xmlns='urn:xmpp:ping'/></iq>")
    await alice.flush()
    bounced = set()
    while True:   # every message was routed once the ping is answered
        el = await alice.recv(timeout=60)
        if local(el) == "iq" and el.get("id") == "sync":
            break
        if local(el) == "message" and el.get("type") == "error":
            bounced.add(int(el.findtext(BODY).split()[0]))
    read = set()
    bob.writer.transport.resume_reading()
    try:
        while True:
            el = await bob.recv(timeout=30)
            if local(el) == "message":
                read.add(int(el.findtext(BODY).split()[0]))
    except (StreamError, Closed):
        pass
    assert len(read) < n, "the session was cut off before it got everything"
    again = await srv.login("bob", "again")
    await again.presence()
    stored = set()
    missing = set(range(n)) - read - bounced
    while not missing <= stored:
        el = await again.recv(timeout=30)
        if local(el) == "message" and el.findtext(BODY):
            stored.add(int(el.findtext(BODY).split()[0]))
    assert read | stored | bounced == set(range(n))
    await alice.close()
    await again.close()


async def test_an_attribute_in_a_namespace_keeps_its_declaration(server):
    """An attribute with a prefix (`x:y`) is forwarded with a declaration of its namespace
    (RFC 6120 §11.2, Namespaces in XML): the recipient's stream must not break on an
    undeclared prefix — before, any user could cut any other's connection this way."""
    alice = await server.login("alice", "a")
    bob = await slix_login(server, "bob", resource="b")
    try:
        alice.send(f"<message to='{server.jid('bob', 'b')}' type='chat' xmlns:x='urn:example:x'>"
                   "<body x:y='1'>prefixed</body></message>")
        m = await bob.inbox.wait(is_msg("prefixed"), what="the message")
        assert m.find("{jabber:client}body").get("{urn:example:x}y") == "1"
        # Bob's stream is still up.
        await bob.plugin["xep_0199"].send_ping(server.domain, timeout=10)
    finally:
        await alice.close()
        await bob.close()


async def test_a_stanza_without_xml_lang_gets_its_streams(server):
    """RFC 6120 §4.7.4: a stanza without `xml:lang` is in the language of its sender's
    stream, and the server adds it when delivering (the recipient's stream may declare
    another); a stanza's own `xml:lang` is kept."""
    bob = await slix_login(server, "bob", resource="b")
    alice = server.client()
    plain_header = alice.stream_header
    alice.stream_header = lambda to=None: plain_header(to).replace(
        "version='1.0'>", "version='1.0' xml:lang='de'>")
    try:
        await alice.negotiate_tls()
        await alice.auth("alice", server.users["alice"])
        await alice.bind("a")
        alice.message(server.jid("bob", "b"), "Hallo")
        alice.send(f"<message to='{server.jid('bob', 'b')}' type='chat' xml:lang='fr'>"
                   "<body>Bonjour</body></message>")
        lang = "{http://www.w3.org/XML/1998/namespace}lang"
        m = await bob.inbox.wait(is_msg("Hallo"), what="the German message")
        assert m.get(lang) == "de"
        m = await bob.inbox.wait(is_msg("Bonjour"), what="the French message")
        assert m.get(lang) == "fr"
    finally:
        await alice.close()
        await bob.close()


async def test_a_domain_beyond_dns_limits_is_malformed_at_once(server):
    """RFC 7622 §3.2: DNS limits apply to a domainpart (63 octets a label): a message to
    such an address gets `jid-malformed` at once, not a `remote-server-not-found` once a
    lookup failed."""
    alice = await server.login("alice", "a")
    alice.send(f"<message to='a@{'x' * 64}.example' id='long1' type='chat'><body>x</body></message>")
    r = await alice.expect(lambda e: e.get("id") == "long1", what="the error reply")
    assert r.get("type") == "error" and stanza_error(r) == "jid-malformed"
    await alice.close()


async def test_error_reply_to_a_malformed_address_does_not_echo_it(server):
    """A stanza whose `to` is not a JID gets `jid-malformed` (RFC 6120 §8.3.3.8); the reply
    must not claim to come from that non-address: the server generates it, so it comes from
    the server's domain (§8.1.2.1; without `from` it would seem to come from alice's own
    account)."""
    alice = await server.login("alice", "a")
    alice.send("<message to='a@@localhost' id='bad1' type='chat'><body>x</body></message>")
    r = await alice.expect(lambda e: e.get("id") == "bad1", what="the error reply")
    assert r.get("type") == "error"
    assert stanza_error(r) == "jid-malformed"
    assert r.get("from") == server.domain
    await alice.close()
