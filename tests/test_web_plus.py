"""SCRAM -PLUS over WebSocket (issue 13): RFC 5802 with the RFC 9266 `tls-exporter` channel
binding of the HTTPS connection the WebSocket was upgraded from, with XEP-0440, SASL2 (XEP-0388,
XEP-0474 downgrade protection) and FAST's HT-SHA-256-EXPR (XEP-0484) on the same binding.

The client is tests/web/ws_plus.mjs: node's OpenSSL computes the exporter (Python's ssl
cannot), the SCRAM and HT client sides are written there with node's crypto. Without a binding
of our own TLS — plain HTTP (a TLS-terminating proxy's listener), a trusted proxy re-encrypting
to the HTTPS listener, BOSH — nothing bound is offered.
"""
from __future__ import annotations

import http.client
import ssl

from test_web import run_node, pytestmark  # noqa: F401  (node and tests/web/node_modules)
from xmpp_raw import NS_SASL_CB, tag

BOUND = ["SCRAM-SHA-512-PLUS", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"]


async def ws_plus(srv, scheme: str) -> dict:
    port = srv.https_port if scheme == "wss" else srv.http_port
    steps = await run_node("ws_plus.mjs", {
        "URL": f"{scheme}://127.0.0.1:{port}/xmpp-websocket", "DOMAIN": srv.domain,
        "USERNAME": "alice", "PASSWORD": "alicepass"})
    return {s["step"]: s for s in steps}


async def test_scram_plus_sasl2_and_fast_expr_over_wss(server):
    steps = await ws_plus(server, "wss")
    f = steps["features"]
    assert f["tls"] == "TLSv1.3" and f["exporter"], f
    # The same offer as c2s over TLS.
    c = server.client()
    await c.negotiate_tls()
    cbs = c.features.find(tag(NS_SASL_CB, "sasl-channel-binding"))
    assert f["mechanisms"] == c.mechanisms(), f
    assert f["sasl2"] == c.sasl2_mechanisms() == f["mechanisms"], f
    assert f["channel_bindings"] == [e.get("type") for e in cbs] == [
        "tls-exporter", "tls-server-end-point"], f
    assert f["fast"] == ["HT-SHA-256-EXPR", "HT-SHA-256-NONE"], f
    await c.close()
    assert all(m in f["mechanisms"] for m in BOUND), f

    assert steps["plus"] == {"step": "plus", "outcome": "success", "verified": True,
                             "jid": "alice@localhost/plus"}, steps
    assert steps["plus-end-point"] == {"step": "plus-end-point", "outcome": "success",
                                       "verified": True, "jid": "alice@localhost/plus"}, steps
    assert steps["plus-wrong"]["outcome"] == "failure", steps
    assert steps["plus-wrong"]["condition"] == "not-authorized", steps
    s = steps["sasl2-plus"]
    assert s["outcome"] == "success" and s["verified"] and s["ssdp"] and s["token"], s
    assert s["jid"] == "alice@localhost", s  # no Bind2 asked: the bare JID
    assert steps["fast-expr"] == {"step": "fast-expr", "outcome": "success", "verified": True}
    other = steps["fast-expr-other"]
    assert (other["outcome"], other["condition"]) == ("failure", "not-authorized"), other


def unbound(f: dict) -> bool:
    return (not any(m.endswith("-PLUS") for m in f["mechanisms"] + f["sasl2"])
            and f["channel_bindings"] == [] and f["fast"] == ["HT-SHA-256-NONE"]
            and "SCRAM-SHA-256" in f["mechanisms"] and f["sasl2"] == f["mechanisms"])


async def test_plain_http_offers_nothing_bound(server_factory):
    # The plain listener as a TLS-terminating proxy's backend: the client's TLS is the
    # proxy's, whose exporter the server cannot know.
    srv = server_factory(http={"behind_tls_proxy": True})
    steps = await ws_plus(srv, "ws")
    f = steps["features"]
    assert f["tls"] is None and not f["exporter"], f
    assert unbound(f), f
    assert "plus" not in steps


async def test_a_trusted_proxy_on_the_https_listener_gets_no_binding(server_factory):
    # A proxy that re-encrypts to the HTTPS listener: the TLS connection is the proxy's, so
    # its exporter is not the client's.
    srv = server_factory(http={"trusted_proxies": ["127.0.0.1"]})
    steps = await ws_plus(srv, "wss")
    f = steps["features"]
    assert f["tls"] == "TLSv1.3" and f["exporter"], f
    assert unbound(f), f


def test_bosh_over_https_offers_no_plus(server):
    # A BOSH session spans many HTTP connections: no one connection's binding is its own.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the test server's certificate is self-signed
    c = http.client.HTTPSConnection("127.0.0.1", server.https_port, timeout=10, context=ctx)
    c.request("POST", "/http-bind",
              body=f"<body xmlns='http://jabber.org/protocol/httpbind' rid='1' "
                   f"to='{server.domain}' wait='5' hold='1'/>",
              headers={"Content-Type": "text/xml"})
    text = c.getresponse().read().decode()
    c.close()
    assert ">SCRAM-SHA-256<" in text and "-PLUS" not in text, text
    assert "sasl-channel-binding" not in text and "HT-SHA-256-EXPR" not in text, text
