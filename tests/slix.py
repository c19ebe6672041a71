"""slixmpp, an independent client library, driven against the test server.

    c = await slix_login(srv, "alice", resource="laptop")          # STARTTLS
    c = await slix_login(srv, "alice", direct_tls=True, mech="SCRAM-SHA-256")
    msg = await c.inbox.wait(lambda el: ..., what="a message")
    await c.close()

The client does not fetch its roster (slixmpp only does when asked) and sends no presence
unless `presence=True`. Certificates are not verified (the test server's is self-signed).
Every message, presence and IQ set received lands in `c.inbox`.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
import xml.etree.ElementTree as ET

from slixmpp import ClientXMPP, ComponentXMPP
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath, StanzaPath

logging.getLogger("slixmpp").setLevel(logging.CRITICAL)

LOGIN_TIMEOUT = 20.0


class LoginFailed(Exception):
    """slixmpp reported an authentication failure, a stream error or a connection failure."""


class Inbox:
    """Everything a client received, with waiting on a predicate."""

    def __init__(self):
        self.items: list[ET.Element] = []
        self.waiters: list[tuple] = []

    def push(self, el: ET.Element):
        self.items.append(el)
        for w in list(self.waiters):
            pred, fut = w
            if not fut.done() and pred(el):
                fut.set_result(el)
                self.waiters.remove(w)

    async def wait(self, pred, timeout: float = 10.0, what: str = "a stanza") -> ET.Element:
        for el in self.items:
            if pred(el):
                return el
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append((pred, fut))
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"timeout waiting for {what}") from None


class _Recording:
    """What the client and the component share: `inbox` gets every message and presence,
    `session` resolves when the stream is ready or fails with `failure`, `stream_errors`
    lists the stream error conditions received."""

    failure: type[Exception] = RuntimeError

    def _record(self):
        self.inbox = Inbox()
        self.session = asyncio.get_running_loop().create_future()
        self.stream_errors: list[str] = []
        self.add_event_handler("session_start", self._on_session)
        self.add_event_handler("stream_error", self._on_stream_error)
        self.add_event_handler("connection_failed", lambda e: self._fail(f"connection failed: {e}"))
        ns = self.default_ns
        for name in ("message", "presence"):
            self.register_handler(Callback(f"inbox {name}", MatchXPath(f"{{{ns}}}{name}"),
                                           lambda st: self.inbox.push(st.xml)))

    def _on_session(self, _):
        if not self.session.done():
            self.session.set_result(True)

    def _on_stream_error(self, e):
        self.stream_errors.append(e["condition"])
        self._fail(f"stream error: {e['condition']}")

    def _fail(self, why: str):
        if not self.session.done():
            self.session.set_exception(self.failure(why))

    async def close(self, timeout: float = 5.0):
        """Ends the stream politely, then drops the socket whatever happened."""
        try:
            await asyncio.wait_for(asyncio.shield(self.disconnect(wait=1.0)), timeout)
        except Exception:
            pass
        try:
            self.abort()
        except Exception:
            pass


class SlixClient(_Recording, ClientXMPP):
    """A slixmpp client that records what it receives and reports login failures."""

    failure = LoginFailed

    def __init__(self, jid: str, password: str, *, mech: str | None = None,
                 direct_tls: bool = False, plaintext: bool = False):
        super().__init__(jid, password, sasl_mech=mech)
        self.enable_direct_tls = direct_tls
        self.enable_starttls = not direct_tls and not plaintext
        self.enable_plaintext = plaintext
        if plaintext:
            # slixmpp refuses SCRAM on an unencrypted stream unless told otherwise.
            self.plugin["feature_mechanisms"].config["unencrypted_scram"] = True
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.ssl_context = ctx
        self._record()
        for p in ("xep_0030", "xep_0092", "xep_0199"):
            self.register_plugin(p)
        self.add_event_handler("failed_auth", lambda st: self._fail(f"auth failed: {st['condition']}"))
        self.add_event_handler("failed_all_auth", lambda *_: self._fail("all mechanisms failed"))
        self.register_handler(Callback("inbox iq-set", StanzaPath("iq@type=set"),
                                       lambda st: self.inbox.push(st.xml)))

    def negotiated_mechanism(self) -> str | None:
        mech = getattr(self.plugin["feature_mechanisms"], "mech", None)
        return mech.name if mech is not None else None

    def tls_version(self) -> str | None:
        obj = self.transport.get_extra_info("ssl_object") if self.transport else None
        return obj.version() if obj is not None else None


async def slix_login(srv, user: str, *, resource: str | None = None, mech: str | None = None,
                     direct_tls: bool = False, password: str | None = None,
                     presence: bool = False, plaintext: bool = False,
                     plugins: tuple[str, ...] = ()) -> SlixClient:
    """Logs in with slixmpp; raises LoginFailed (after closing the client) on failure.
    `plaintext` skips STARTTLS (for a server with `[c2s] require_encryption = false`);
    `plugins` are registered before connecting."""
    jid = srv.jid(user, resource)
    c = SlixClient(jid, password if password is not None else srv.users[user], mech=mech,
                   direct_tls=direct_tls, plaintext=plaintext)
    for p in plugins:
        c.register_plugin(p)
    c.connect(srv.host, srv.direct_tls_port if direct_tls else srv.port)
    try:
        await asyncio.wait_for(c.session, LOGIN_TIMEOUT)
    except BaseException:
        await c.close()
        raise
    if presence:
        c.send_presence()
    return c


class Component(_Recording, ComponentXMPP):
    """A slixmpp XEP-0114 component that echoes chat messages ("echo: <body>"), answers disco
    and version, and records what it receives in `inbox`; `session` resolves once the
    handshake succeeded (or fails with the stream error)."""

    def __init__(self, jid: str, secret: str, port: int, echo: bool = True,
                 host: str = "127.0.0.1"):
        super().__init__(jid, secret, host, port)
        self._record()
        self.closed = asyncio.Event()
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0092")
        self.plugin["xep_0030"].add_identity(category="automation", itype="bot", name="Echo")
        self.add_event_handler("disconnected", lambda *_: self.closed.set())
        if echo:
            self.add_event_handler("message", self._echo)

    def _echo(self, msg):
        if msg["type"] in ("chat", "normal") and msg["body"]:
            msg.reply("echo: " + msg["body"]).send()
