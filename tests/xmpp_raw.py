"""A small raw-socket XMPP client for the end-to-end tests (asyncio + ElementTree pull parser).

Used where a client library would hide what is on the wire: exact SASL failure conditions,
stream errors, hostile input, timeouts. It speaks just enough XMPP for that:

- stream open (and reading our header back), STARTTLS, direct TLS (XEP-0368, ALPN
  `xmpp-client`), TLS verification off (the test server uses a self-signed certificate);
- SASL PLAIN and SCRAM-SHA-1/-256/-512 (RFC 5802/7677, hashlib + hmac), verifying the server
  signature; no -PLUS (Python's ssl has no tls-exporter: see crates/server/tests/sasl_plus.rs);
- XEP-0388 SASL2 (`sasl2()`): the same mechanisms inside `<authenticate/>`, with a
  `<user-agent/>` and inline requests (Bind2, SM resumption), checking the XEP-0474 `h=` of
  the SCRAM server-first against the offered mechanisms;
- resource binding, IQ helpers, send/recv of top-level elements, the close handshake.

    c = RawClient(srv.host, srv.port, srv.domain)
    await c.login("alice", "alicepass", resource="phone")     # STARTTLS + SCRAM-SHA-1 + bind
    pong = await c.iq("get", srv.domain, "<ping xmlns='urn:xmpp:ping'/>")

`recv()` raises `StreamError(condition)` when the server sends `<stream:error/>` and
`Closed` when the stream or the TCP connection ends; `wait_closed()` collects both.
"""
from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import hmac
import os
import socket
import ssl
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

NS_STREAM = "http://etherx.jabber.org/streams"
NS_STREAM_ERR = "urn:ietf:params:xml:ns:xmpp-streams"
NS_STANZA_ERR = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_SASL_CB = "urn:xmpp:sasl-cb:0"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
NS_CLIENT = "jabber:client"
NS_REGISTER = "jabber:iq:register"
NS_REGISTER_FEATURE = "http://jabber.org/features/iq-register"
NS_PING = "urn:xmpp:ping"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_VERSION = "jabber:iq:version"
NS_SASL2 = "urn:xmpp:sasl:2"
NS_BIND2 = "urn:xmpp:bind:0"
NS_SM = "urn:xmpp:sm:3"
NS_FAST = "urn:xmpp:fast:0"

SCRAM_HASHES = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}


class XMPPError(Exception):
    """A protocol step did not go as expected."""


class StreamError(XMPPError):
    """The server sent `<stream:error/>` with `condition`."""

    def __init__(self, condition: str, text: str = ""):
        super().__init__(f"stream error <{condition}/>" + (f": {text}" if text else ""))
        self.condition = condition
        self.text = text


class SaslFailure(XMPPError):
    """The server answered `<failure/>` with `condition`."""

    def __init__(self, condition: str):
        super().__init__(f"SASL failure <{condition}/>")
        self.condition = condition


class Closed(XMPPError):
    """The stream (`</stream:stream>`) or the TCP connection (EOF/reset) ended."""


def tag(ns: str, name: str) -> str:
    """ElementTree's `{ns}name`."""
    return f"{{{ns}}}{name}"


def local(el: ET.Element) -> str:
    """The local name of an element."""
    return el.tag.rsplit("}", 1)[-1]


def stanza_error(el: ET.Element) -> str | None:
    """The defined condition of an error stanza, or None."""
    err = el.find(tag(NS_CLIENT, "error"))
    if err is None:
        return None
    for c in err:
        if c.tag.startswith("{" + NS_STANZA_ERR + "}") and local(c) != "text":
            return local(c)
    return "undefined-condition"


def tls_context(alpn: list[str] | None = None) -> ssl.SSLContext:
    """A client context that accepts any certificate (the test server's is self-signed)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def scram_keys(hash_name: str, password: str, salt: bytes, iterations: int):
    """(client_key, stored_key, server_key) of RFC 5802 §3."""
    salted = hashlib.pbkdf2_hmac(hash_name, password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hash_name).digest()
    stored_key = hashlib.new(hash_name, client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hash_name).digest()
    return client_key, stored_key, server_key


def ht_message(user: str, token: str, cb_data: bytes = b"") -> bytes:
    """The HT-SHA-256-* message of XEP-0484 FAST: authcid NUL HMAC(token, "Initiator"||cb)."""
    return user.encode() + b"\0" + hmac.new(token.encode(), b"Initiator" + cb_data,
                                           "sha256").digest()


class RawClient:
    """One XMPP client stream over TCP; `recv()` yields top-level elements in order."""

    def __init__(self, host: str, port: int, domain: str, *, timeout: float = 10.0,
                 direct_tls: bool = False, local_addr: str | None = None,
                 rcvbuf: int | None = None):
        self.host, self.port, self.domain = host, port, domain
        self.rcvbuf = rcvbuf
        self.local_addr = (local_addr, 0) if local_addr else None
        self.timeout = timeout
        self.direct_tls = direct_tls
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.queue: collections.deque = collections.deque()
        self.header: dict = {}
        self.features: ET.Element | None = None
        self.jid: str | None = None
        # The `from` of the stream headers we send (RFC 6120 §4.7.1), if any.
        self.stream_from: str | None = None
        self.tls = direct_tls
        self._id = 0
        self._reset_parser()

    # ---- transport -----------------------------------------------------------------------
    async def connect(self) -> "RawClient":
        ssl_ctx = tls_context(["xmpp-client"]) if self.direct_tls else None
        kw = {"local_addr": self.local_addr}
        if self.rcvbuf:
            # A small receive window, so a client that stops reading is noticed quickly.
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
            if self.local_addr:
                sock.bind(self.local_addr)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (self.host, self.port))
            kw = {"sock": sock}
        else:
            kw.update(host=self.host, port=self.port)
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(ssl=ssl_ctx,
                                    server_hostname=self.domain if ssl_ctx else None,
                                    limit=1 << 20, **kw),
            self.timeout)
        return self

    def ssl_object(self) -> ssl.SSLObject | None:
        return self.writer.get_extra_info("ssl_object") if self.writer else None

    def _reset_parser(self):
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0
        self.root = None

    def next_id(self, prefix: str = "r") -> str:
        self._id += 1
        return f"{prefix}{self._id}"

    def send(self, data: str | bytes):
        """Queues raw bytes (not drained: call `flush()` or any receive)."""
        self.writer.write(data.encode() if isinstance(data, str) else data)

    async def flush(self):
        await asyncio.wait_for(self.writer.drain(), self.timeout)

    def _feed(self, data: bytes):
        self.parser.feed(data)
        for ev, el in self.parser.read_events():
            if ev == "start":
                self.depth += 1
                if self.depth == 1:
                    self.root = el
                    self.header = dict(el.attrib)
                    self.queue.append(("header", el))
            else:
                self.depth -= 1
                if self.depth == 1:
                    if self.root is not None:
                        self.root.remove(el)
                    self.queue.append(("el", el))
                elif self.depth == 0:
                    self.queue.append(("end", None))

    async def recv_raw(self, timeout: float | None = None):
        """The next item: ('header', el) | ('el', el) | ('end', None) | ('eof', None)."""
        timeout = self.timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.queue:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise asyncio.TimeoutError("nothing received")
            try:
                data = await asyncio.wait_for(self.reader.read(65536), remaining)
            except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
                # StreamReader raises the reset before handing out what it had buffered (such
                # as the stream error the server sent just before closing): take that first.
                buffered = getattr(self.reader, "_buffer", None)
                data = bytes(buffered) if buffered else b""
                if buffered:
                    buffered.clear()
            if not data:
                return ("eof", None)
            self._feed(data)
        return self.queue.popleft()

    async def recv(self, timeout: float | None = None) -> ET.Element:
        """The next top-level element; raises StreamError or Closed."""
        while True:
            kind, el = await self.recv_raw(timeout)
            if kind == "header":
                continue
            if kind == "end":
                raise Closed("stream closed by the server")
            if kind == "eof":
                raise Closed("connection closed by the server")
            if el.tag == tag(NS_STREAM, "error"):
                cond, text = "undefined-condition", ""
                for c in el:
                    if c.tag == tag(NS_STREAM_ERR, "text"):
                        text = c.text or ""
                    elif c.tag.startswith("{" + NS_STREAM_ERR + "}"):
                        cond = local(c)
                raise StreamError(cond, text)
            return el

    async def expect(self, pred, timeout: float | None = None, what: str = "element") -> ET.Element:
        """Receives until `pred(el)` holds; other elements are dropped."""
        timeout = self.timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise asyncio.TimeoutError(f"timeout waiting for {what}")
            el = await self.recv(remaining)
            if pred(el):
                return el

    async def stream_error(self, timeout: float | None = None) -> str:
        """Receives until a stream error; returns its condition (fails on a plain close)."""
        while True:
            try:
                await self.recv(timeout)
            except StreamError as e:
                return e.condition

    async def wait_closed(self, timeout: float | None = None) -> tuple[str | None, bool]:
        """Reads to the end: (stream error condition or None, saw `</stream:stream>`).
        Returns when the server closes the TCP connection, and closes ours too (as a client
        does, RFC 6120 §4.4), so the server need not wait for us."""
        cond, end = None, False
        while True:
            kind, el = await self.recv_raw(timeout)
            if kind == "eof":
                self.abort()
                return cond, end
            if kind == "end":
                end = True
            elif kind == "el" and el.tag == tag(NS_STREAM, "error"):
                cond = next((local(c) for c in el
                             if c.tag.startswith("{" + NS_STREAM_ERR + "}") and local(c) != "text"),
                            "undefined-condition")

    # ---- negotiation ---------------------------------------------------------------------
    def stream_header(self, to: str | None = None) -> str:
        from_ = f"from={quoteattr(self.stream_from)} " if self.stream_from else ""
        return ("<?xml version='1.0'?>"
                f"<stream:stream xmlns='{NS_CLIENT}' xmlns:stream='{NS_STREAM}' "
                f"to={quoteattr(to or self.domain)} {from_}version='1.0'>")

    async def open_stream(self, to: str | None = None) -> ET.Element:
        """Sends a header and returns the server's `<stream:features/>`."""
        self._reset_parser()
        self.send(self.stream_header(to))
        el = await self.recv()
        if el.tag != tag(NS_STREAM, "features"):
            raise XMPPError(f"expected features, got {el.tag}")
        self.features = el
        return el

    def has_feature(self, ns: str, name: str) -> bool:
        return self.features is not None and self.features.find(tag(ns, name)) is not None

    def mechanisms(self) -> list[str]:
        m = self.features.find(tag(NS_SASL, "mechanisms")) if self.features is not None else None
        return [x.text for x in m.findall(tag(NS_SASL, "mechanism"))] if m is not None else []

    async def starttls(self):
        self.send(f"<starttls xmlns='{NS_TLS}'/>")
        el = await self.recv()
        if el.tag != tag(NS_TLS, "proceed"):
            raise XMPPError(f"STARTTLS refused: {el.tag}")
        await asyncio.wait_for(
            self.writer.start_tls(tls_context(), server_hostname=self.domain), self.timeout)
        self.tls = True
        return await self.open_stream()

    async def authenticate(self, user: str, password: str, mechanism: str = "SCRAM-SHA-1",
                           authzid: str | None = None, cb: tuple[str, bytes] | None = None):
        """One SASL exchange; raises SaslFailure with the server's condition. The stream is
        not restarted (see `auth`). For a -PLUS mechanism `cb` is the channel binding used:
        (type, data), e.g. ("tls-server-end-point", the hash of the server's certificate)."""
        if mechanism == "PLAIN":
            msg = f"{authzid or ''}\0{user}\0{password}".encode()
            self.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>"
                      f"{base64.b64encode(msg).decode() or '='}</auth>")
            el = await self.recv()
        elif mechanism.removesuffix("-PLUS") in SCRAM_HASHES:
            el = await self._scram(mechanism, user, password, authzid, cb)
        else:
            raise XMPPError(f"unsupported mechanism {mechanism}")
        if el.tag == tag(NS_SASL, "failure"):
            conds = [local(c) for c in el if local(c) != "text"]
            raise SaslFailure(conds[0] if conds else "")
        if el.tag != tag(NS_SASL, "success"):
            raise XMPPError(f"unexpected {el.tag} during SASL")

    async def auth(self, user: str, password: str, mechanism: str = "SCRAM-SHA-1"):
        """SASL, then the stream restart."""
        await self.authenticate(user, password, mechanism)
        await self.open_stream()

    async def _scram(self, mech: str, user: str, password: str, authzid: str | None,
                     cb: tuple[str, bytes] | None = None):
        h = SCRAM_HASHES[mech.removesuffix("-PLUS")]
        cnonce = base64.b64encode(os.urandom(18)).decode()
        flag = f"p={cb[0]}" if cb else "n"
        gs2 = flag + "," + (f"a={authzid}" if authzid else "") + ","
        cb_data = gs2.encode() + (cb[1] if cb else b"")
        first_bare = f"n={user.replace('=', '=3D').replace(',', '=2C')},r={cnonce}"
        self.send(f"<auth xmlns='{NS_SASL}' mechanism='{mech}'>"
                  f"{base64.b64encode((gs2 + first_bare).encode()).decode()}</auth>")
        el = await self.recv()
        if el.tag != tag(NS_SASL, "challenge"):
            return el
        server_first = base64.b64decode(el.text or "").decode()
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        nonce, salt, iters = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
        if not nonce.startswith(cnonce) or nonce == cnonce:
            raise XMPPError("SCRAM: server nonce does not extend ours")
        client_key, stored_key, server_key = scram_keys(h, password, salt, iters)
        without_proof = f"c={base64.b64encode(cb_data).decode()},r={nonce}"
        auth_msg = f"{first_bare},{server_first},{without_proof}".encode()
        sig = hmac.new(stored_key, auth_msg, h).digest()
        proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, sig))).decode()
        final = f"{without_proof},p={proof}"
        self.send(f"<response xmlns='{NS_SASL}'>{base64.b64encode(final.encode()).decode()}</response>")
        el = await self.recv()
        if el.tag == tag(NS_SASL, "success"):
            expect = base64.b64encode(hmac.new(server_key, auth_msg, h).digest()).decode()
            got = base64.b64decode(el.text or "").decode()
            if got != f"v={expect}":
                raise XMPPError(f"SCRAM: bad server signature {got!r}")
        return el

    def sasl2_mechanisms(self) -> list[str]:
        a = self.features.find(tag(NS_SASL2, "authentication")) if self.features is not None else None
        return [x.text for x in a.findall(tag(NS_SASL2, "mechanism"))] if a is not None else []

    async def sasl2(self, user: str, password: str, mechanism: str = "SCRAM-SHA-256", *,
                    device: str | None = "device-1", inline: str = "",
                    authzid: str | None = None, initial: bytes = b"") -> ET.Element:
        """One XEP-0388 exchange; returns `<success/>` (its `<additional-data/>` checked
        for SCRAM) after reading the stream features that follow it (none after an inline
        resumption), raises SaslFailure with the condition of `<failure/>`. For SCRAM the
        XEP-0474 `h=` must hash what the features offered (sorted mechanisms joined by
        U+001E, then U+001F and the sorted channel-binding types joined by U+001E)."""
        ua = (f"<user-agent id={quoteattr(device)}><software>raw</software>"
              f"<device>test</device></user-agent>") if device else ""

        def authenticate(initial: bytes) -> str:
            return (f"<authenticate xmlns='{NS_SASL2}' mechanism='{mechanism}'>"
                    f"<initial-response>{base64.b64encode(initial).decode() or '='}"
                    f"</initial-response>{ua}{inline}</authenticate>")

        if mechanism == "PLAIN":
            self.send(authenticate(f"{authzid or ''}\0{user}\0{password}".encode()))
            el = await self.recv()
        elif mechanism in SCRAM_HASHES:
            h = SCRAM_HASHES[mechanism]
            cnonce = base64.b64encode(os.urandom(18)).decode()
            gs2 = "n," + (f"a={authzid}" if authzid else "") + ","
            first_bare = f"n={user},r={cnonce}"
            self.send(authenticate((gs2 + first_bare).encode()))
            el = await self.recv()
            if el.tag == tag(NS_SASL2, "challenge"):
                server_first = base64.b64decode(el.text or "").decode()
                attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
                cbs = self.features.find(tag(NS_SASL_CB, "sasl-channel-binding"))
                cb_types = sorted(c.get("type") for c in cbs) if cbs is not None else []
                ssdp = "\x1e".join(sorted(self.sasl2_mechanisms()))
                if cb_types:
                    ssdp += "\x1f" + "\x1e".join(cb_types)
                want = base64.b64encode(hashlib.new(h, ssdp.encode()).digest()).decode()
                if attrs.get("h") != want:
                    raise XMPPError(f"XEP-0474: h={attrs.get('h')!r}, expected {want!r}")
                nonce, salt, iters = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
                client_key, stored_key, server_key = scram_keys(h, password, salt, iters)
                without_proof = f"c={base64.b64encode(gs2.encode()).decode()},r={nonce}"
                auth_msg = f"{first_bare},{server_first},{without_proof}".encode()
                sig = hmac.new(stored_key, auth_msg, h).digest()
                proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, sig))).decode()
                final = f"{without_proof},p={proof}".encode()
                self.send(f"<response xmlns='{NS_SASL2}'>{base64.b64encode(final).decode()}"
                          "</response>")
                el = await self.recv()
                if el.tag == tag(NS_SASL2, "success"):
                    expect = "v=" + base64.b64encode(
                        hmac.new(server_key, auth_msg, h).digest()).decode()
                    got = base64.b64decode(el.findtext(tag(NS_SASL2, "additional-data")) or "")
                    if got.decode() != expect:
                        raise XMPPError(f"SCRAM: bad server signature {got!r}")
        else:
            # Any other mechanism (XEP-0484 HT-*): its one message as given.
            self.send(authenticate(initial))
            el = await self.recv()
        if el.tag == tag(NS_SASL2, "failure"):
            conds = [local(c) for c in el if c.tag.startswith("{" + NS_SASL + "}")]
            raise SaslFailure(conds[0] if conds else "")
        if el.tag != tag(NS_SASL2, "success"):
            raise XMPPError(f"unexpected {el.tag} during SASL2")
        self.jid = el.findtext(tag(NS_SASL2, "authorization-identifier"))
        if el.find(tag(NS_SM, "resumed")) is not None:
            # XEP-0198 "SASL2 and BIND2 interaction": a resumed stream is re-established by
            # the success itself, and stream features MUST NOT follow.
            return el
        # XEP-0388 §2.6.1: the stream's features follow at once, without a restart.
        features = await self.recv()
        if features.tag != tag(NS_STREAM, "features"):
            raise XMPPError(f"no stream features after the SASL2 success: {features.tag}")
        self.features = features
        return el

    async def bind(self, resource: str | None = None) -> str:
        """Binds `resource` (or lets the server choose); returns the full JID."""
        res = f"<resource>{escape(resource)}</resource>" if resource is not None else ""
        el = await self.iq("set", None, f"<bind xmlns='{NS_BIND}'>{res}</bind>")
        if el.get("type") != "result":
            raise XMPPError("bind failed: " + ET.tostring(el, encoding="unicode"))
        self.jid = el.findtext(f"{tag(NS_BIND, 'bind')}/{tag(NS_BIND, 'jid')}")
        return self.jid

    async def negotiate_tls(self):
        """Connects and gets to an encrypted stream (STARTTLS or direct TLS)."""
        if self.reader is None:
            await self.connect()
        await self.open_stream()
        if not self.tls:
            await self.starttls()

    async def login(self, user: str, password: str, resource: str | None = None, *,
                    mechanism: str = "SCRAM-SHA-1") -> str:
        """Connect, TLS, SASL, bind; returns the bound full JID."""
        await self.negotiate_tls()
        await self.auth(user, password, mechanism)
        return await self.bind(resource)

    # ---- stanzas -------------------------------------------------------------------------
    async def iq(self, type_: str, to: str | None, payload: str, *,
                 timeout: float | None = None) -> ET.Element:
        """Sends an IQ and returns the reply with the same id."""
        rid = self.next_id("iq")
        to_attr = f" to={quoteattr(to)}" if to else ""
        self.send(f"<iq type='{type_}' id='{rid}'{to_attr}>{payload}</iq>")
        return await self.expect(lambda e: local(e) == "iq" and e.get("id") == rid
                                 and e.get("type") in ("result", "error"),
                                 timeout, what=f"reply to iq {rid}")

    def message(self, to: str, body: str, type_: str = "chat", extra_attrs: str = ""):
        self.send(f"<message to={quoteattr(to)} type='{type_}'{extra_attrs}>"
                  f"<body>{escape(body)}</body></message>")

    async def presence(self):
        """Available presence (makes the session eligible for messages to the bare JID)."""
        self.send("<presence/>")
        await self.flush()

    async def close(self, timeout: float = 5.0) -> bool:
        """The closing handshake (RFC 6120 §4.4): returns whether the server answered with
        `</stream:stream>` before closing the connection."""
        if self.writer is None:
            return False
        try:
            self.send("</stream:stream>")
            await self.flush()
            _, end = await self.wait_closed(timeout)
            return end
        except (ConnectionError, asyncio.TimeoutError):
            return False
        finally:
            self.abort()

    def pause_reading(self):
        """Stops reading from the socket (asyncio would otherwise keep buffering in the
        background): with a small `rcvbuf` the server soon cannot write to us."""
        self.writer.transport.pause_reading()

    def abort(self):
        """Drops the TCP connection without closing the stream."""
        if self.writer is not None:
            try:
                self.writer.transport.abort()
            except Exception:
                pass
