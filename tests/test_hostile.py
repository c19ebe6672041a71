"""Hostile input (RFC 6120 §11 restricted XML, §13.12 limits): each gets its stream error, the
connection ends, the server keeps serving others, and its memory stays bounded."""
import asyncio

import pytest

from xmpp_raw import NS_CLIENT, NS_STREAM, StreamError, local

HEADER = (f"<?xml version='1.0'?><stream:stream xmlns='{NS_CLIENT}' xmlns:stream='{NS_STREAM}' "
          "to='localhost' version='1.0'>")

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
"""

# (name, bytes sent instead of / after the stream header, expected stream error condition)
# `raw` cases replace the header; the others follow a valid header on an unauthenticated
# plain stream, where the tight pre-auth limits apply.

def case(name, how, data, condition, marks=()):
    return pytest.param(name, how, data, condition, id=name, marks=marks)


PRE_AUTH = [
    case("billion_laughs", "raw", BILLION_LAUGHS + HEADER.split("?>", 1)[1] + "<a>&lol9;</a>",
         "restricted-xml"),
    case("doctype_in_stream", "after", "<!DOCTYPE foo>", "restricted-xml"),
    case("comment", "after", "<!-- hello -->", "restricted-xml"),
    case("processing_instruction", "after", "<?evil data?>", "restricted-xml"),
    case("undeclared_entity", "after", "<message><body>&xxe;</body></message>", "restricted-xml"),
    case("external_entity", "raw",
         "<?xml version='1.0'?><!DOCTYPE s [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>" + HEADER,
         "restricted-xml"),
    case("mismatched_tag", "after", "<message><body>x</message>", "not-well-formed"),
    case("invalid_utf8", "after", b"<message><body>\xff\xfe</body></message>", "not-well-formed"),
    # RFC 6120 §4.9.3.13: a namespace well-formedness error [XML-NAMES] is not-well-formed.
    case("undeclared_prefix", "after", "<foo:bar/>", "not-well-formed"),
    case("pre_auth_8k_element", "after", "<iq type='get' id='x'>" + "a" * 9000 + "</iq>",
         "policy-violation"),
    case("pre_auth_many_elements", "after", "<iq>" + "<a/>" * 40 + "</iq>", "policy-violation"),
    case("pre_auth_deep", "after", "<a>" * 12 + "</a>" * 12, "policy-violation"),
    case("too_many_attributes", "after", "<a " + " ".join(f"a{i}='1'" for i in range(80)) + "/>",
         "policy-violation"),
]


async def _hostile(srv, how, data):
    c = srv.client()
    await c.connect()
    if how == "after":
        await c.open_stream()
    c.send(data)
    return await c.wait_closed()


async def assert_still_serving(srv):
    c = await srv.login("bob", "check")
    r = await c.iq("get", srv.domain, "<ping xmlns='urn:xmpp:ping'/>")
    assert r.get("type") == "result"
    await c.close()


@pytest.mark.parametrize("name,how,data,condition", PRE_AUTH)
async def test_pre_auth_hostile_input(server, name, how, data, condition):
    cond, _ = await _hostile(server, how, data)
    assert cond == condition
    await assert_still_serving(server)


async def test_billion_laughs_after_tls(server):
    """The same inside TLS, at the stream restart after STARTTLS."""
    c = server.client()
    await c.connect()
    await c.open_stream()
    c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    await c.recv()
    await c.writer.start_tls(__import__("xmpp_raw").tls_context(), server_hostname="localhost")
    c._reset_parser()
    c.send(BILLION_LAUGHS + HEADER.split("?>", 1)[1])
    assert (await c.wait_closed())[0] == "restricted-xml"
    await assert_still_serving(server)


# Authenticated: the wider c2s limits (256 KiB stanzas, depth 32).
POST_AUTH = [
    ("oversized_stanza", "<message to='bob@localhost'><body>" + "x" * (300 * 1024)
     + "</body></message>", "policy-violation"),
    ("oversized_1mib", "<message to='bob@localhost'><body>" + "y" * (1024 * 1024)
     + "</body></message>", "policy-violation"),
    ("too_deep", "<message to='bob@localhost'>" + "<a>" * 40 + "</a>" * 40 + "</message>",
     "policy-violation"),
    ("comment", "<message><!-- c --></message>", "restricted-xml"),
    ("mismatched_tag", "<message><body></message>", "not-well-formed"),
    ("doctype", "<!DOCTYPE x>", "restricted-xml"),
    ("not_a_stanza", "<foo xmlns='urn:example'/>", "unsupported-stanza-type"),
]


@pytest.mark.parametrize("name,data,condition", POST_AUTH, ids=[p[0] for p in POST_AUTH])
async def test_post_auth_hostile_input(server, name, data, condition):
    bob = await server.login("bob", "victim")
    c = await server.login("alice", "attacker")
    c.send(data)
    try:
        await c.flush()
    except (ConnectionError, OSError):
        pass  # the server may close before reading everything
    assert (await c.wait_closed())[0] == condition
    # Nothing of it reached bob; he is still served.
    r = await bob.iq("get", None, "<ping xmlns='urn:xmpp:ping'/>")
    assert r.get("type") == "result"
    await bob.close()
    await assert_still_serving(server)


async def test_oversized_stanza_is_never_delivered(server):
    bob = await server.login("bob", "b")
    alice = await server.login("alice", "a")
    alice.message("bob@localhost/b", "z" * (300 * 1024))
    alice.message("bob@localhost/b", "small after")
    try:
        await alice.flush()
    except (ConnectionError, OSError):
        pass
    assert (await alice.wait_closed())[0] == "policy-violation"
    bob.send("<iq type='get' id='p'><ping xmlns='urn:xmpp:ping'/></iq>")
    first = await bob.expect(lambda e: local(e) in ("message", "iq"))
    assert local(first) == "iq", "neither the oversized nor the following message arrives"
    await bob.close()


async def test_memory_stays_bounded_under_hostile_input(server):
    """Repeated hostile input, in parallel, does not grow the server's memory without bound.
    The bound is generous (48 MiB over the warmed-up baseline): a leak or an entity expansion
    would blow far past it."""
    await assert_still_serving(server)
    baseline = server.rss_kib()
    payloads = [("raw", BILLION_LAUGHS + HEADER.split("?>", 1)[1] + "<a>&lol9;&lol9;</a>"),
                ("after", "<iq>" + "a" * (64 * 1024) + "</iq>"),
                ("after", "<message><body>&xxe;</body></message>"),
                ("after", "<a>" * 5000)]
    for _ in range(10):
        results = await asyncio.gather(*(_hostile(server, how, data)
                                          for how, data in payloads * 5))
        assert all(cond is not None for cond, _ in results)
    growth = server.rss_kib() - baseline
    assert growth < 48 * 1024, f"RSS grew by {growth} KiB"
    await assert_still_serving(server)


async def test_slow_drip_of_one_oversized_element_pre_auth(server):
    """An element that never ends, fed in small pieces, is cut at the pre-auth limit rather than
    buffered."""
    c = server.client()
    await c.connect()
    await c.open_stream()
    c.send("<iq type='get' id='x'>")
    with pytest.raises((StreamError, ConnectionError)) as e:
        for _ in range(100):
            c.send("b" * 512)
            await c.flush()
        await c.recv()
    if isinstance(e.value, StreamError):
        assert e.value.condition == "policy-violation"
    c.abort()
    await assert_still_serving(server)
