"""Web clients (issue 13): independent JavaScript clients over the public HTTP listener,
run by node from tests/web (``npm ci`` there first; scripts/test.sh does), against the real
server and a slixmpp user on TCP.

- xmpp.js (@xmpp/client) over WebSocket (RFC 7395): SCRAM login, bind, roster, a message
  round trip with a TCP user, XEP-0198 resumption on a new WebSocket (tests/web/xmppjs.mjs);
- bad input over WebSocket (tests/web/ws_bad.mjs): binary frames, oversize messages,
  missing/wrong subprotocol, a foreign Origin, garbage after <open/>;
- Strophe.js over BOSH and over WebSocket (tests/web/strophe.mjs);
- Converse.js in Debian's headless Chromium over WebSocket and over BOSH
  (tests/web/converse.mjs), with a screenshot;
- RFC 7395 see-other-uri (tests/web/ws_redirect.mjs);
- the zero-config rule: plain HTTP only on loopback unless behind a TLS proxy.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from slix import slix_login

WEB = Path(__file__).resolve().parent / "web"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(
    NODE is None or not (WEB / "node_modules").is_dir(),
    reason="node and tests/web/node_modules are needed (cd tests/web && npm ci)",
)


async def run_node(script: str, env: dict, timeout: float = 90.0) -> list[dict]:
    """Runs a script of tests/web; returns its JSON lines, failing the test (with its output)
    when it exits non-zero."""
    proc = await asyncio.create_subprocess_exec(
        NODE, script, cwd=WEB, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"{script} did not finish in {timeout} s")
    text = out.decode(errors="replace")
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{text}\n{err.decode(errors='replace')}"
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def echo(c):
    """Makes a slixmpp client answer every chat message with "echo: <body>"."""
    def on_message(msg):
        if msg["type"] in ("chat", "normal") and msg["body"]:
            c.send_message(mto=msg["from"], mbody=f"echo: {msg['body']}", mtype="chat")
    c.add_event_handler("message", on_message)


async def test_xmppjs_over_websocket_with_a_tcp_user_and_resumption(server):
    bob = await slix_login(server, "bob", resource="tcp", presence=True)
    echo(bob)
    try:
        steps = await run_node("xmppjs.mjs", {
            "SERVICE": f"ws://127.0.0.1:{server.http_port}/xmpp-websocket",
            "DOMAIN": server.domain, "USERNAME": "alice", "PASSWORD": "alicepass",
            "PEER": server.jid("bob"),
        })
    finally:
        await bob.close()
    by_name = {s["step"]: s for s in steps}
    assert by_name["online"]["mechanism"] == "SCRAM-SHA-1"
    assert by_name["online"]["jid"].startswith("alice@localhost/")
    assert "roster" in by_name
    assert "carbon" in by_name and "csi" in by_name
    assert [s["body"] for s in steps if s["step"] == "round-trip"] == [
        "hello from xmpp.js", "hello again after resumption"]
    assert by_name["resumed"]["same"] is True
    assert "done" in by_name
    log = server.log()
    assert "resumed" in log or "resumption" in log, log[-3000:]


async def test_xmppjs_sasl2_bind2_and_fast_token_login(server):
    """XEP-0388 SASL2, XEP-0386 Bind2 and XEP-0484 FAST with xmpp.js (@xmpp/sasl2, its Bind2
    and FAST with HT-SHA-256-NONE — an independent implementation) over WebSocket: a password
    login that asks for a token and binds inline; a new client that has only the token (and
    a wrong password) logs in with it; after a password change the token is refused and the
    wrong password with it."""
    env = {"SERVICE": f"ws://127.0.0.1:{server.http_port}/xmpp-websocket",
           "DOMAIN": server.domain, "USERNAME": "alice", "PASSWORD": "alicepass",
           "DEVICE": "xmppjs-phone"}
    steps = {s["step"]: s for s in await run_node("xmppjs_fast.mjs", {**env, "MODE": "login"})}
    assert steps["online"]["mechanisms"] == ["SCRAM-SHA-1"], steps
    assert steps["online"]["jid"].startswith("alice@localhost/web."), steps
    token = steps["token"]["token"]
    assert token["mechanism"] == "HT-SHA-256-NONE" and token["token"]
    steps = {s["step"]: s for s in await run_node(
        "xmppjs_fast.mjs", {**env, "MODE": "fast", "TOKEN": json.dumps(token)})}
    assert steps["online"]["mechanisms"] == ["HT-SHA-256-NONE"], steps
    assert "message" in steps and "done" in steps
    assert server.user("passwd", "alice", password="changed-pass").returncode == 0
    steps = {s["step"]: s for s in await run_node(
        "xmppjs_fast.mjs", {**env, "MODE": "stale", "TOKEN": json.dumps(token)})}
    assert "login-failed" in steps and "online" not in steps, steps
    assert steps["login-failed"]["mechanisms"][0] == "HT-SHA-256-NONE", steps


def test_plain_http_on_a_public_address_needs_the_proxy_opt_in(server_factory, tmp_path):
    from conftest import ROOKERY_BIN, to_toml, free_port  # noqa: PLC0415
    cfg = tmp_path / "rookery.toml"
    cfg.write_text(to_toml({
        "domain": "localhost", "data_dir": str(tmp_path / "data"),
        "listen": {"c2s": f"127.0.0.1:{free_port()}", "c2s_direct_tls": "", "admin": "",
                   "https": "", "http": f"0.0.0.0:{free_port()}"},
    }))
    r = subprocess.run([ROOKERY_BIN, "serve", "--config", str(cfg)], capture_output=True,
                       text=True, timeout=60, cwd=tmp_path)
    assert r.returncode != 0
    assert "behind_tls_proxy" in r.stderr, r.stderr[-2000:]


async def test_bad_input_over_websocket_gets_the_right_answer(server):
    rss_before = server.rss_kib()
    results = await run_node("ws_bad.mjs", {
        "URL": f"ws://127.0.0.1:{server.http_port}/xmpp-websocket", "DOMAIN": server.domain})
    assert results[-1] == {"done": True}
    assert server.alive()
    assert "panicked" not in server.log()
    # The 300 KiB message was refused, not kept: memory stays where it was (loose bound).
    assert server.rss_kib() < rss_before + 16 * 1024


@pytest.mark.parametrize("transport", ["bosh", "websocket"])
async def test_strophe(server, transport):
    bob = await slix_login(server, "bob", resource="tcp", presence=True)
    echo(bob)
    service = (f"http://127.0.0.1:{server.http_port}/http-bind" if transport == "bosh"
               else f"ws://127.0.0.1:{server.http_port}/xmpp-websocket")
    try:
        steps = await run_node("strophe.mjs", {
            "SERVICE": service, "JID": server.jid("alice", "strophe"), "PASSWORD": "alicepass",
            "PEER": server.jid("bob")})
    finally:
        await bob.close()
    by_name = {s["step"]: s for s in steps}
    assert by_name["online"]["jid"] == "alice@localhost/strophe"
    assert by_name["online"]["mechanism"].startswith("SCRAM-SHA-"), by_name["online"]
    assert "roster" in by_name and "round-trip" in by_name and "done" in by_name


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is needed (apt-get install chromium)")
@pytest.mark.parametrize("transport", ["websocket", "bosh"])
async def test_converse_in_chromium_chats_with_a_tcp_user(server_factory, tmp_path, transport):
    from conftest import free_port  # noqa: PLC0415
    from test_im import make_mutual  # noqa: PLC0415
    page_port = free_port()
    # The page is served from another origin than the endpoint: allowed explicitly.
    srv = server_factory(http={"allowed_origins": [f"http://127.0.0.1:{page_port}"]})
    await make_mutual(srv, "alice", "bob")
    bob = await slix_login(srv, "bob", resource="tcp", presence=True)
    echo(bob)
    shot = tmp_path / "converse.png"
    try:
        steps = await run_node("converse.mjs", {
            "CHROMIUM": CHROMIUM,
            **({"BOSH": f"http://127.0.0.1:{srv.http_port}/http-bind"} if transport == "bosh"
               else {"WS": f"ws://127.0.0.1:{srv.http_port}/xmpp-websocket"}),
            "JID": srv.jid("alice"), "PASSWORD": "alicepass", "PEER": srv.jid("bob"),
            "SHOT": str(shot), "PAGE_PORT": str(page_port)}, timeout=120)
        # Bob, on TCP, got Alice's message from the browser (and answered it).
        await bob.inbox.wait(lambda el: el.tag.endswith("message") and any(
            c.text == "hello from Converse.js in Chromium" for c in el if c.tag.endswith("body")),
            what="the message from Converse")
    finally:
        await bob.close()
    names = [s["step"] for s in steps]
    for expected in ("connected", "peer-online", "sent", "echo-rendered", "screenshot", "done"):
        assert expected in names, steps
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


async def test_websocket_see_other_uri(server_factory):
    uri = "wss://other.example/xmpp-websocket"
    srv = server_factory(http={"websocket_see_other_uri": uri})
    await run_node("ws_redirect.mjs", {
        "URL": f"ws://127.0.0.1:{srv.http_port}/xmpp-websocket", "DOMAIN": srv.domain,
        "EXPECT": uri})
