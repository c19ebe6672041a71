"""The admin API and `rookery ctl` for federation, components and pubsub nodes, and malformed
JSON bodies answered with 400 (end to end, against the running server)."""
from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest

from conftest import free_port
from test_admin import http
from test_component import connect, wait_port

NS_PUBSUB = "http://jabber.org/protocol/pubsub"


def raw_post(srv, path: str, body: bytes, content_type: str | None = "application/json"):
    """A request whose body is sent as is (json.dumps would only send valid JSON)."""
    req = urllib.request.Request(f"http://127.0.0.1:{srv.admin_port}{path}", data=body,
                                 method="POST")
    req.add_header("Authorization", f"Bearer {srv.admin_token()}")
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.parametrize("body,content_type", [
    (b"{not json", "application/json"),                 # not JSON
    (b'{"username": 1}', "application/json"),           # the wrong shape
    (b'{"username": "x", "password": "y"}', None),      # not labelled as JSON
])
def test_malformed_json_bodies_are_400_with_a_json_error(server, body, content_type):
    status, answer = raw_post(server, "/api/v1/users", body, content_type)
    assert status == 400, answer
    assert answer["error"]
    status, answer = raw_post(server, "/api/v1/announce", body, content_type)
    assert status == 400, answer


async def test_components_listed_and_disconnected(server_factory):
    port = free_port()
    srv = server_factory(component={
        "listen": f"127.0.0.1:{port}",
        "service": [{"domain": "bot.localhost", "secret": "s", "name": "Bot"},
                    {"domain": "gw.localhost", "secret": "g"}]})
    srv.component_port = port
    wait_port(port)
    bot = await connect(srv, "bot.localhost", "s")
    try:
        status, _, body = http(srv, "GET", "/api/v1/components")
        assert status == 200
        assert body["components"] == [
            {"domain": "bot.localhost", "name": "Bot", "connected": True},
            {"domain": "gw.localhost", "name": None, "connected": False}]
        r = srv.ctl("components")
        assert r.returncode == 0 and "bot.localhost  Bot" in r.stdout, r.stdout
        r = srv.ctl("components", "disconnect", "gw.localhost")
        assert r.returncode != 0 and "not found" in r.stderr
        r = srv.ctl("components", "disconnect", "bot.localhost")
        assert r.returncode == 0, r.stderr
        await asyncio.wait_for(bot.closed.wait(), 10)
        assert http(srv, "GET", "/api/v1/components")[2]["components"][0]["connected"] is False
    finally:
        await bot.close()


async def test_pubsub_nodes_listed_and_deleted_and_s2s_listed(server):
    alice = await server.login("alice", "a")
    for node in ("news", "weather"):
        r = await alice.iq("set", f"pubsub.{server.domain}",
                           f"<pubsub xmlns='{NS_PUBSUB}'><create node='{node}'/></pubsub>")
        assert r.get("type") == "result"
    status, _, body = http(server, "GET", "/api/v1/pubsub/nodes")
    assert status == 200
    assert sorted(n["node"] for n in body["nodes"]) == ["news", "weather"]
    r = server.ctl("--json", "pubsub")
    assert r.returncode == 0 and len(json.loads(r.stdout)["nodes"]) == 2
    r = server.ctl("pubsub", "delete", "news")
    assert r.returncode == 0, r.stderr
    assert http(server, "DELETE", "/api/v1/pubsub/nodes/news")[0] == 404
    assert [n["node"] for n in http(server, "GET", "/api/v1/pubsub/nodes")[2]["nodes"]] == \
        ["weather"]
    # Federation is on (no listener here): no streams yet.
    status, _, body = http(server, "GET", "/api/v1/s2s")
    assert (status, body) == (200, {"outgoing": [], "incoming": 0, "incoming_streams": []})
    r = server.ctl("s2s")
    assert r.returncode == 0 and "incoming connections: 0" in r.stdout
    assert http(server, "DELETE", "/api/v1/s2s/elsewhere.example")[0] == 404
    r = server.ctl("s2s", "close", "elsewhere.example")
    assert r.returncode != 0
    r = server.ctl("stats")
    assert r.returncode == 0 and "connections.c2s" in r.stdout and "users" in r.stdout
    await alice.close()
