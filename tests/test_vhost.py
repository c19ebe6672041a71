"""Several domains on one server (virtual hosting, `[[host]]`): each host has its own
accounts, a stream names its host in `to` (an unknown one gets `host-unknown`), accounts of
two hosts talk to each other through the local router, `rookery user` takes bare JIDs, and
a TLS client naming a host (SNI) is shown that host's certificate."""
from __future__ import annotations

import asyncio
import hashlib
import ssl
import subprocess
import xml.etree.ElementTree as ET

from slix import SlixClient
import pytest

from xmpp_raw import RawClient, SaslFailure

NS_PUBSUB = "http://jabber.org/protocol/pubsub"

SECOND = "second.test"
DAVE = ("dave", "davepass")


def cert(workdir, domain: str) -> tuple[str, str]:
    """A self-signed certificate for `domain` (and its subdomains): (cert path, key path)."""
    crt, key = workdir / f"{domain}.pem", workdir / f"{domain}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "30", "-subj", f"/CN={domain}",
         "-addext", f"subjectAltName=DNS:{domain},DNS:*.{domain}",
         "-keyout", str(key), "-out", str(crt)],
        check=True, capture_output=True, timeout=30)
    return str(crt), str(key)


def two_hosts(server_factory, tmp_path, **host):
    """A server for `localhost` (alice, bob) and SECOND (dave, added by bare JID)."""
    srv = server_factory(users={"alice": "alicepass", "bob": "bobpass"},
                         host=[{"domain": SECOND, **host}])
    r = srv.user("add", f"{DAVE[0]}@{SECOND}", password=DAVE[1])
    assert r.returncode == 0, r.stderr
    assert f"created dave@{SECOND}" in r.stdout
    return srv


async def slix(srv, jid: str, password: str, plugins=()) -> SlixClient:
    """slixmpp logged in as `jid` (its domain picks the host) with `plugins` registered, an
    interested resource (roster fetched) and available; it approves subscription requests
    and asks back (slixmpp's defaults)."""
    c = SlixClient(jid + "/vhost", password)
    for p in plugins:
        c.register_plugin(p)
    c.connect(srv.host, srv.port)
    try:
        await asyncio.wait_for(c.session, 20)
    except BaseException:
        await c.close()
        raise
    await c.get_roster(timeout=10)
    c.send_presence()
    return c


async def subscription(c: SlixClient, contact: str) -> str | None:
    """The subscription state of `contact` in `c`'s roster (a plain roster get)."""
    r = await c.make_iq_get(queryxmlns="jabber:iq:roster").send(timeout=10)
    items = {str(k): v for k, v in r["roster"]["items"].items()}
    return items.get(contact, {}).get("subscription")


def body_of(text: str):
    return lambda el: el.tag.endswith("message") and any(
        c.tag.endswith("body") and c.text == text for c in el)


async def test_accounts_of_two_hosts_subscribe_and_talk(server_factory, tmp_path):
    srv = two_hosts(server_factory, tmp_path)
    alice_jid, dave_jid = srv.jid("alice"), f"dave@{SECOND}"
    alice = await slix(srv, alice_jid, "alicepass")
    dave = await slix(srv, dave_jid, DAVE[1])
    try:
        assert str(dave.boundjid) == f"{dave_jid}/vhost"
        # alice asks; dave's client approves and asks back; alice's approves: "both".
        alice.send_presence(pto=dave_jid, ptype="subscribe")
        for _ in range(100):
            states = (await subscription(alice, dave_jid), await subscription(dave, alice_jid))
            if states == ("both", "both"):
                break
            await asyncio.sleep(0.1)
        assert states == ("both", "both")
        # Each sees the other's available presence (the probe crossed hosts too).
        await alice.inbox.wait(lambda el: el.tag.endswith("presence") and el.get("type") is None
                               and el.get("from", "").startswith(dave_jid + "/"),
                               what="dave's presence")

        alice.send_message(mto=dave_jid, mbody="hello from localhost", mtype="chat")
        await dave.inbox.wait(body_of("hello from localhost"), what="alice's message")
        dave.send_message(mto=alice_jid, mbody="hello from second.test", mtype="chat")
        await alice.inbox.wait(body_of("hello from second.test"), what="dave's message")
    finally:
        await alice.close()
        await dave.close()
    # Nothing of it went to federation: no s2s listener or stream was ever needed.
    assert "remote-server-not-found" not in srv.log()


async def test_each_host_has_its_own_accounts_and_unknown_hosts_are_refused(
        server_factory, tmp_path):
    srv = two_hosts(server_factory, tmp_path)
    c = RawClient(srv.host, srv.port, SECOND)
    assert (await c.login("dave", DAVE[1], "r")) == f"dave@{SECOND}/r"
    assert c.header.get("from") == SECOND
    # The host answers the server's IQs as itself: disco#info, ping.
    info = await c.iq("get", SECOND, "<query xmlns='http://jabber.org/protocol/disco#info'/>")
    assert info.get("type") == "result" and info.get("from") == SECOND
    assert info.find(".//{http://jabber.org/protocol/disco#info}identity").get("category") \
        == "server"
    pong = await c.iq("get", SECOND, "<ping xmlns='urn:xmpp:ping'/>")
    assert pong.get("type") == "result" and pong.get("from") == SECOND
    # PEP for the host's account, and the host's own services count it as local: a node on
    # its pubsub service, a room on its MUC service (both "local" creation policies; more in
    # test_vhost_services.py).
    item = "<item id='1'><x xmlns='urn:example'/></item>"
    r = await c.iq("set", None, f"<pubsub xmlns='{NS_PUBSUB}'><publish node='urn:example'>"
                                f"{item}</publish></pubsub>")
    assert r.get("type") == "result", ET.tostring(r)
    r = await c.iq("set", f"pubsub.{SECOND}",
                   f"<pubsub xmlns='{NS_PUBSUB}'><create node='daves'/></pubsub>")
    assert r.get("type") == "result", ET.tostring(r)
    c.send(f"<presence to='room@conference.{SECOND}/dave'>"
           "<x xmlns='http://jabber.org/protocol/muc'/></presence>")
    joined = await c.expect(lambda el: el.tag.endswith("presence"), what="the room's presence")
    assert joined.get("type") is None, ET.tostring(joined)
    await c.close()
    # alice is an account of localhost only.
    c = RawClient(srv.host, srv.port, SECOND)
    await c.negotiate_tls()
    with pytest.raises(SaslFailure) as failed:
        await c.auth("alice", "alicepass")
    assert failed.value.condition == "not-authorized"
    c.abort()
    # A stream to a domain the server does not host.
    c = srv.client()
    await c.connect()
    c.send(c.stream_header("unknown.test"))
    assert await c.stream_error() == "host-unknown"
    c.abort()


def test_user_commands_take_bare_jids(server_factory, tmp_path):
    """`rookery user` (on the store) and `rookery ctl users` (the running server)."""
    srv = two_hosts(server_factory, tmp_path)
    r = srv.user("add", "erin@SECOND.test", password="erinpass")
    assert r.returncode == 0 and "created erin@second.test" in r.stdout, r.stderr
    r = srv.user("add", "erin", password="erinpass")  # the old form: the primary domain
    assert r.returncode == 0 and "created erin@localhost" in r.stdout, r.stderr
    r = srv.user("add", "frank@elsewhere.test", password="frankpass")
    assert r.returncode != 0
    assert '"elsewhere.test" is not a hosted domain' in r.stderr
    assert "localhost, second.test" in r.stderr
    listed = srv.user("list", "--host", SECOND).stdout.split()
    assert listed == ["dave@second.test", "erin@second.test"]
    assert "erin@localhost" in srv.user("list").stdout.split()
    r = srv.user("passwd", "erin@second.test", password="newpass1")
    assert r.returncode == 0, r.stderr
    r = srv.user("delete", "dave@second.test")
    assert r.returncode == 0, r.stderr
    assert srv.user("list", "--host", SECOND).stdout.split() == ["erin@second.test"]
    # The running server's admin API (`rookery ctl`) manages the host's accounts too.
    r = srv.ctl("users", "add", "gina@second.test", input="ginapass\n")
    assert r.returncode == 0, r.stderr
    r = srv.ctl("users", "add", "gina@elsewhere.test", input="ginapass\n")
    assert r.returncode != 0 and "not an account of a hosted domain" in r.stderr, r.stderr
    assert "gina@second.test" in srv.user("list", "--host", SECOND).stdout.split()


def pem_sha256(path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(open(path).read())).hexdigest()


async def served_sha256(srv, name: str, direct_tls: bool) -> str:
    """The fingerprint of the certificate a TLS client naming `name` (SNI) is shown."""
    c = RawClient(srv.host, srv.direct_tls_port if direct_tls else srv.port, name,
                  direct_tls=direct_tls)
    await c.connect()
    if not direct_tls:
        await c.open_stream()
        await c.starttls()
    der = c.ssl_object().getpeercert(binary_form=True)
    c.abort()
    return hashlib.sha256(der).hexdigest()


async def test_each_host_is_shown_its_own_certificate(server_factory, tmp_path):
    crt, key = cert(tmp_path, SECOND)
    srv = two_hosts(server_factory, tmp_path, cert=crt, key=key)
    primary = pem_sha256(srv.data_dir / "cert.pem")  # the generated zero-config one
    assert primary != pem_sha256(crt)
    for direct_tls in (True, False):
        assert await served_sha256(srv, SECOND, direct_tls) == pem_sha256(crt)
        assert await served_sha256(srv, srv.domain, direct_tls) == primary
    # A subdomain of the host (its services) is served the host's certificate.
    assert await served_sha256(srv, "pubsub." + SECOND, True) == pem_sha256(crt)
    # And the account logs in over it.
    c = RawClient(srv.host, srv.direct_tls_port, SECOND, direct_tls=True)
    assert (await c.login("dave", DAVE[1], "tls")) == f"dave@{SECOND}/tls"
    await c.close()


def test_a_bosh_session_to_the_second_host(server_factory, tmp_path):
    """BOSH (XEP-0206) names its host in `to` like a stream header."""
    from types import SimpleNamespace

    from test_web_bosh import create, plain, req
    srv = two_hosts(server_factory, tmp_path)
    second = SimpleNamespace(domain=SECOND, http_port=srv.http_port)
    sid = create(second, 1000)
    assert "<success" in req(second, sid, 1001, plain("dave", DAVE[1]))
    req(second, sid, 1002, xmpp_restart="true", to=SECOND)
    bound = req(second, sid, 1003, "<iq xmlns='jabber:client' type='set' id='b'>"
                "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>bosh</resource></bind></iq>")
    assert f"dave@{SECOND}/bosh" in bound, bound
    req(second, sid, 1004, type="terminate")
