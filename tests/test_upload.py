"""XEP-0363 HTTP File Upload: slixmpp's plugin finds the service, gets a slot and PUTs the
file (aiohttp); another client downloads it over plain HTTP (urllib); slot errors, tampered
and reused PUT URLs, quota, account deletion and kill -9 are checked against the real server."""
import asyncio
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

from slix import slix_login
from xmpp_raw import NS_DISCO_INFO, NS_DISCO_ITEMS, stanza_error, tag

NS_UPLOAD = "urn:xmpp:http:upload:0"
UPLOAD = "upload.localhost"


def web_server(server_factory, **upload):
    """Upload URLs on the plain loopback listener (aiohttp refuses the self-signed HTTPS
    certificate), with `upload` settings."""
    return server_factory(listen={"https": ""}, upload=upload)


async def http(method: str, url: str, data: bytes | None = None, headers: dict | None = None):
    """(status, headers, body) of one request, with the standard library (not the server's
    code, not slixmpp's)."""
    def run():
        req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()
    return await asyncio.to_thread(run)


async def slot(c, filename: str, size, content_type: str | None = "text/plain"):
    ctype = f" content-type='{content_type}'" if content_type else ""
    r = await c.iq("get", UPLOAD, f"<request xmlns='{NS_UPLOAD}' filename='{filename}' "
                                  f"size='{size}'{ctype}/>")
    s = r.find(tag(NS_UPLOAD, "slot"))
    if s is None:
        return r, None, None
    return r, s.find(tag(NS_UPLOAD, "put")).get("url"), s.find(tag(NS_UPLOAD, "get")).get("url")


async def test_slixmpp_uploads_and_another_client_downloads(server_factory):
    srv = web_server(server_factory)
    alice = await slix_login(srv, "alice")
    try:
        alice.register_plugin("xep_0363")
        import io
        data = b"hello, rookery\n" * 1000
        url = await alice.plugin["xep_0363"].upload_file(
            "notes été.txt", size=len(data), content_type="text/plain",
            input_file=io.BytesIO(data), timeout=10)
        assert alice.plugin["xep_0363"].max_file_size == 50 * 1024 * 1024
    finally:
        await alice.close()
    status, headers, body = await http("GET", url)
    assert status == 200 and body == data
    assert headers["Content-Type"] == "text/plain"
    assert headers["Content-Disposition"] == "inline; filename*=UTF-8''notes%20%C3%A9t%C3%A9.txt"
    assert "immutable" in headers["Cache-Control"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Access-Control-Allow-Origin"] == "*"
    status, headers, body = await http("HEAD", url)
    assert status == 200 and body == b"" and headers["Content-Length"] == str(len(data))
    # Uploads are kept on disk before the 201: a kill -9 right after loses nothing.
    srv.crash_restart()
    status, _, body = await http("GET", url)
    assert status == 200 and body == data


async def test_disco(server):
    c = await server.login("alice", "a")
    items = await c.iq("get", "localhost", f"<query xmlns='{NS_DISCO_ITEMS}'/>")
    assert UPLOAD in [i.get("jid") for i in items.iter(tag(NS_DISCO_ITEMS, "item"))]
    info = await c.iq("get", UPLOAD, f"<query xmlns='{NS_DISCO_INFO}'/>")
    ident = info.find(f".//{tag(NS_DISCO_INFO, 'identity')}")
    assert (ident.get("category"), ident.get("type")) == ("store", "file")
    assert NS_UPLOAD in [f.get("var") for f in info.iter(tag(NS_DISCO_INFO, "feature"))]
    values = {f.get("var"): f.findtext("{jabber:x:data}value")
              for f in info.iter("{jabber:x:data}field")}
    assert values["FORM_TYPE"] == NS_UPLOAD and values["max-file-size"] == str(50 * 1024 * 1024)
    await c.close()


async def test_slot_errors(server_factory):
    srv = web_server(server_factory, max_file_bytes=1000, quota_bytes=1500)
    c = await srv.login("alice", "a")
    r, _, _ = await slot(c, "big.bin", 1001)
    assert stanza_error(r) == "not-acceptable"
    err = r.find(f".//{tag(NS_UPLOAD, 'file-too-large')}")
    assert err.findtext(tag(NS_UPLOAD, "max-file-size")) == "1000"
    for size in ("0", "-1", "x", "1" * 30):
        r, _, _ = await slot(c, "a.txt", size)
        assert stanza_error(r) == "bad-request", size
    r, _, _ = await slot(c, "", 10)
    assert stanza_error(r) == "bad-request"
    r, _, _ = await slot(c, "a.txt", 10, "text/html; charset=utf-8")
    assert stanza_error(r) == "bad-request"
    # Quota: 1000 stored, 600 more would pass 1500.
    _, put, _ = await slot(c, "one.bin", 1000, "application/octet-stream")
    status, _, _ = await http("PUT", put, b"x" * 1000, {"Content-Type": "application/octet-stream"})
    assert status == 201
    r, _, _ = await slot(c, "two.bin", 600)
    assert stanza_error(r) == "resource-constraint"
    assert r.find(tag("jabber:client", "error")).get("type") == "wait"
    # A set, or a request to a JID at the service, is not a slot request.
    r = await c.iq("set", UPLOAD, f"<request xmlns='{NS_UPLOAD}' filename='a' size='1'/>")
    assert stanza_error(r) == "service-unavailable"
    await c.close()


async def test_put_urls_cannot_be_bent(server_factory):
    srv = web_server(server_factory)
    c = await srv.login("alice", "a")
    _, put, get = await slot(c, "../../etc/passwd", 5, "text/plain")
    # The name is one safe path component, inside the slot.
    assert "/upload/" in get and "%2F" not in get and get.endswith(".._.._etc_passwd")
    ok = {"Content-Type": "text/plain"}
    u = urllib.parse.urlsplit(put)
    q = dict(urllib.parse.parse_qsl(u.query))

    def with_query(**changes):
        return urllib.parse.urlunsplit(u._replace(query=urllib.parse.urlencode({**q, **changes})))
    assert (await http("PUT", with_query(sig="0" * 64), b"hello", ok))[0] == 403
    assert (await http("PUT", with_query(size="6"), b"hello!", ok))[0] == 403
    assert (await http("PUT", with_query(type="text/html"), b"hello",
                       {"Content-Type": "text/html"}))[0] == 403
    assert (await http("PUT", put.split("?")[0], b"hello", ok))[0] == 403
    other = urllib.parse.urlunsplit(u._replace(path=u.path.rsplit("/", 1)[0] + "/other.txt"))
    assert (await http("PUT", other, b"hello", ok))[0] == 403
    assert (await http("PUT", put, b"hello", {"Content-Type": "image/png"}))[0] == 400
    assert (await http("PUT", put, b"hell", ok))[0] == 400
    assert (await http("GET", get))[0] == 404, "a refused PUT leaves nothing behind"
    assert (await http("PUT", put, b"hello", ok))[0] == 201
    assert (await http("PUT", put, b"hello", ok))[0] == 409, "a slot is used once"
    status, _, body = await http("GET", get)
    assert status == 200 and body == b"hello"
    assert (srv.data_dir / "upload").is_dir()
    assert not list(srv.data_dir.parent.glob("**/passwd"))
    # Unknown files and ids that are not ours.
    base = get.rsplit("/", 3)[0]
    for path in ("/0123/4567/x", "/" + "0" * 32 + "/" + "0" * 32 + "/x", "/../../rookery.toml"):
        assert (await http("GET", base + path))[0] == 404, path
    await c.close()


async def test_expired_put_url(server_factory):
    srv = web_server(server_factory, put_valid_secs=1)
    c = await srv.login("alice", "a")
    _, put, _ = await slot(c, "late.txt", 5)
    await asyncio.sleep(2.1)
    assert (await http("PUT", put, b"hello", {"Content-Type": "text/plain"}))[0] == 403
    await c.close()


async def test_files_go_with_the_account(server_factory):
    srv = web_server(server_factory)
    c = await srv.login("alice", "a")
    _, put, get = await slot(c, "mine.txt", 5)
    assert (await http("PUT", put, b"hello", {"Content-Type": "text/plain"}))[0] == 201
    bye = await c.iq("set", None, "<query xmlns='jabber:iq:register'><remove/></query>")
    assert bye.get("type") == "result"
    for _ in range(50):
        if (await http("GET", get))[0] == 404:
            break
        await asyncio.sleep(0.1)
    assert (await http("GET", get))[0] == 404


async def test_cors_preflight(server_factory):
    srv = web_server(server_factory)
    c = await srv.login("alice", "a")
    _, put, _ = await slot(c, "x.txt", 5)
    status, headers, _ = await http("OPTIONS", put, None, {
        "Origin": "https://converse.example", "Access-Control-Request-Method": "PUT"})
    assert status == 204 and "PUT" in headers["Access-Control-Allow-Methods"]
    assert headers["Access-Control-Allow-Origin"] == "*"
    await c.close()


async def test_a_put_cut_off_by_a_crash_can_be_made_again(server_factory):
    """A PUT whose server was killed mid-body left a slot that is not used: the same URL
    takes the whole file after the restart (201), not `409` until the purge. A second PUT
    while one is running is still refused with 409."""
    srv = web_server(server_factory)
    c = await srv.login("alice", "a")
    size = 10 * 1024 * 1024
    data = bytes(range(256)) * (size // 256)
    _, put, get = await slot(c, "big.bin", size, "application/octet-stream")
    await c.close()
    u = urllib.parse.urlsplit(put)

    async def start_put():
        """A PUT of the whole size whose body has not come yet: (reader, writer)."""
        reader, writer = await asyncio.open_connection(u.hostname, u.port)
        writer.write(f"PUT {u.path}?{u.query} HTTP/1.1\r\nHost: {u.netloc}\r\n"
                     "Content-Type: application/octet-stream\r\n"
                     f"Content-Length: {size}\r\n\r\n".encode())
        await writer.drain()
        return reader, writer

    reader, writer = await start_put()
    writer.write(data[:1024 * 1024])
    await writer.drain()
    await asyncio.sleep(0.5)
    # Meanwhile the slot is taken: a second PUT is answered at once.
    r2, w2 = await start_put()
    assert (await asyncio.wait_for(r2.readline(), 10)).split()[1] == b"409"
    w2.close()
    srv.crash_restart()
    writer.close()
    headers = {"Content-Type": "application/octet-stream"}
    assert (await http("GET", get))[0] == 404
    assert (await http("PUT", put, data, headers))[0] == 201
    status, _, body = await http("GET", get)
    assert status == 200 and body == data
    r3, w3 = await start_put()
    assert (await asyncio.wait_for(r3.readline(), 10)).split()[1] == b"409", "used once"
    w3.close()
