"""RFC 6121 and the IM extensions end to end (crates/im): roster, subscriptions (every
transition of Appendix A, table-driven), presence, the §8.5 delivery matrix, offline messages
(XEP-0160, surviving a restart), blocking (XEP-0191), carbons (XEP-0280), vCard, private
storage, last activity, XEP-0237 roster versioning.

Most tests use raw clients and a `Peer` wrapper that keeps everything received: `await
p.sync()` is a ping round trip that returns what arrived before the answer. The server handles
one session's stanzas in order and routes each before reading the next, so "sender syncs,
then receiver syncs" shows exactly what the receiver got.
"""
from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from xml.sax.saxutils import quoteattr

import pytest

from slix import slix_login
import xmpp_raw
from xmpp_raw import NS_CLIENT, NS_DISCO_INFO, local, stanza_error, tag

NS_ROSTER = "jabber:iq:roster"
NS_ROSTERVER = "urn:xmpp:features:rosterver"
NS_PREAPPROVAL = "urn:xmpp:features:pre-approval"
NS_BLOCKING = "urn:xmpp:blocking"
NS_BLOCKING_ERRORS = "urn:xmpp:blocking:errors"
NS_CARBONS = "urn:xmpp:carbons:2"
NS_FORWARD = "urn:xmpp:forward:0"
NS_DELAY = "urn:xmpp:delay"
NS_VCARD = "vcard-temp"
NS_PRIVATE = "jabber:iq:private"
NS_LAST = "jabber:iq:last"
BODY = tag(NS_CLIENT, "body")
PASSWORD = "pw-im-tests"


class Peer:
    """A logged-in raw client that keeps what it receives."""

    def __init__(self, c, jid: str):
        self.c = c
        self.jid = jid
        self.bare = jid.split("/")[0]
        self.seen: list[ET.Element] = []

    def send(self, xml: str):
        self.c.send(xml)

    async def sync(self, timeout: float = 15.0) -> list[ET.Element]:
        """Ping round trip; returns (and keeps) what arrived before the answer."""
        rid = self.c.next_id("sync")
        self.c.send(f"<iq type='get' id='{rid}'><ping xmlns='urn:xmpp:ping'/></iq>")
        new = []
        while True:
            el = await self.c.recv(timeout)
            if local(el) == "iq" and el.get("id") == rid:
                break
            new.append(el)
        self.seen += new
        return new

    async def iq(self, type_: str, payload: str, to: str | None = None) -> ET.Element:
        rid = self.c.next_id("iq")
        to_attr = f" to={quoteattr(to)}" if to else ""
        self.c.send(f"<iq type='{type_}' id='{rid}'{to_attr}>{payload}</iq>")
        while True:
            el = await self.c.recv(15)
            if local(el) == "iq" and el.get("id") == rid and el.get("type") in ("result", "error"):
                return el
            self.seen.append(el)

    async def roster(self, ver: str | None = None) -> dict[str, ET.Element]:
        v = f" ver={quoteattr(ver)}" if ver is not None else ""
        r = await self.iq("get", f"<query xmlns='{NS_ROSTER}'{v}/>")
        assert r.get("type") == "result", ET.tostring(r)
        q = r.find(tag(NS_ROSTER, "query"))
        return {} if q is None else {i.get("jid"): i for i in q.findall(tag(NS_ROSTER, "item"))}

    def message(self, to: str, body: str, type_: str = "chat"):
        self.c.message(to, body, type_)

    def presence(self, to: str | None = None, type_: str | None = None, extra: str = ""):
        attrs = (f" to={quoteattr(to)}" if to else "") + (f" type='{type_}'" if type_ else "")
        self.send(f"<presence{attrs}>{extra}</presence>")

    async def until(self, pred, what: str, timeout: float = 10.0):
        """Syncs until an element `pred` holds for has arrived; keeps all in `seen`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not any(pred(e) for e in self.seen):
            assert loop.time() < deadline, f"timeout waiting for {what}"
            await self.sync()

    def take(self, pred) -> list[ET.Element]:
        got = [e for e in self.seen if pred(e)]
        self.seen = [e for e in self.seen if not pred(e)]
        return got

    async def close(self):
        await self.c.close()


async def peer(srv, user: str, resource: str = "r", *, roster: bool = True,
               presence: bool = True, password: str | None = None) -> Peer:
    c = srv.client()
    jid = await c.login(user, password or srv.users.get(user, PASSWORD), resource)
    p = Peer(c, jid)
    if roster:
        await p.roster()
    if presence:
        p.presence()
        await p.sync()
    return p


def is_presence(type_: str | None = None, frm: str | None = None):
    def pred(e):
        return (local(e) == "presence" and (e.get("type") or "available") == (type_ or "available")
                and (frm is None or e.get("from") == frm))
    return pred


def is_push(jid: str | None = None):
    def pred(e):
        if local(e) != "iq" or e.get("type") != "set":
            return False
        item = e.find(f"{tag(NS_ROSTER, 'query')}/{tag(NS_ROSTER, 'item')}")
        return item is not None and (jid is None or item.get("jid") == jid)
    return pred


def is_msg(body: str):
    return lambda e: local(e) == "message" and e.findtext(BODY) == body


def item_state(items: dict, jid: str) -> tuple[str, bool, bool]:
    i = items.get(jid)
    if i is None:
        return ("none", False, False)
    return (i.get("subscription"), i.get("ask") == "subscribe", i.get("approved") == "true")


# ---- roster (§2) ----------------------------------------------------------------------------

async def test_roster_set_push_get_remove(server):
    a1 = await peer(server, "alice", "one")
    a2 = await peer(server, "alice", "two")
    a3 = await peer(server, "alice", "quiet", roster=False)   # not interested: no pushes
    r = await a1.iq("set", f"<query xmlns='{NS_ROSTER}'><item jid='Carol@LOCALHOST' name='C'>"
                           "<group>Friends</group><group>Work</group></item></query>")
    assert r.get("type") == "result"
    for p in (a1, a2):
        await p.sync()
        pushes = p.take(is_push("carol@localhost"))
        assert len(pushes) == 1, f"one push at {p.jid}"
        item = pushes[0].find(f"{tag(NS_ROSTER, 'query')}/{tag(NS_ROSTER, 'item')}")
        assert item.get("name") == "C" and item.get("subscription") == "none"
        assert [g.text for g in item.findall(tag(NS_ROSTER, "group"))] == ["Friends", "Work"]
        assert pushes[0].get("from") in (None, "alice@localhost")
    assert not (await a3.sync()) and not a3.take(is_push())
    items = await a2.roster()
    assert set(items) == {"carol@localhost"}
    # Update keeps the subscription; groups are replaced.
    await a1.iq("set", f"<query xmlns='{NS_ROSTER}'><item jid='carol@localhost'/></query>")
    item = (await a1.roster())["carol@localhost"]
    assert item.get("name") is None and not item.findall(tag(NS_ROSTER, "group"))
    r = await a1.iq("set", f"<query xmlns='{NS_ROSTER}'><item jid='carol@localhost' "
                           "subscription='remove'/></query>")
    assert r.get("type") == "result"
    await a2.sync()
    removes = [p for p in a2.take(is_push("carol@localhost"))
               if p.find(f".//{tag(NS_ROSTER, 'item')}").get("subscription") == "remove"]
    assert removes, "removal pushed"
    assert await a1.roster() == {}
    for p in (a1, a2, a3):
        await p.close()


@pytest.mark.parametrize("payload,cond", [
    ("", "bad-request"),
    ("<item jid='a@localhost'/><item jid='b@localhost'/>", "bad-request"),
    ("<item/>", "bad-request"),
    ("<item jid='a@localhost/res'/>", "bad-request"),
    ("<item jid='alice@localhost'/>", "not-allowed"),
    ("<item jid='a@localhost'><group></group></item>", "not-acceptable"),
    ("<item jid='a@localhost'><group>g</group><group>g</group></item>", "bad-request"),
    (f"<item jid='a@localhost' name='{'n' * 2000}'/>", "not-acceptable"),
    ("<item jid='nobody@localhost' subscription='remove'/>", "item-not-found"),
])
async def test_roster_set_errors(server, payload, cond):
    """RFC 6121 §2.3.3 and §2.5.3 error cases."""
    a = await peer(server, "alice", presence=False)
    r = await a.iq("set", f"<query xmlns='{NS_ROSTER}'>{payload}</query>")
    assert r.get("type") == "error" and stanza_error(r) == cond, ET.tostring(r)
    await a.close()


async def test_roster_of_another_account_is_forbidden(server):
    a = await peer(server, "alice", presence=False)
    r = await a.iq("get", f"<query xmlns='{NS_ROSTER}'/>", to="bob@localhost")
    assert stanza_error(r) == "forbidden"
    await a.close()


async def test_roster_versioning(server_factory, backend):
    """XEP-0237: feature advertised; ver on results and pushes; empty result when current;
    empty result then pushes of what changed (items and removals) for an older version."""
    srv = server_factory(backend=backend)
    c = srv.client()
    await c.negotiate_tls()
    await c.auth("alice", "alicepass")
    assert c.has_feature(NS_ROSTERVER, "ver")
    assert c.has_feature(NS_PREAPPROVAL, "sub")   # RFC 6121 §3.4.1
    await c.bind("v")
    a = Peer(c, "alice@localhost/v")
    r = await a.iq("get", f"<query xmlns='{NS_ROSTER}' ver=''/>")
    v0 = r.find(tag(NS_ROSTER, "query")).get("ver")
    assert v0 is not None
    for who in ("x1", "x2", "x3"):
        await a.iq("set", f"<query xmlns='{NS_ROSTER}'><item jid='{who}@localhost'/></query>")
    await a.sync()
    pushes = a.take(is_push())
    vers = [p.find(tag(NS_ROSTER, "query")).get("ver") for p in pushes]
    assert len(vers) == 3 and len(set(vers)) == 3 and all(vers)
    v3 = vers[-1]
    # Current version: empty result.
    r = await a.iq("get", f"<query xmlns='{NS_ROSTER}' ver='{v3}'/>")
    assert r.get("type") == "result" and r.find(tag(NS_ROSTER, "query")) is None
    # Change two things; the version before them gets exactly those as pushes, in the order
    # they happened, each with its own version: a client that stores the version of the
    # last push it got, and loses the stream after it, has missed nothing older (a removal
    # pushed with the current version after a later change would be lost for good).
    await a.iq("set", f"<query xmlns='{NS_ROSTER}'><item jid='x2@localhost' subscription='remove'/></query>")
    await a.iq("set", f"<query xmlns='{NS_ROSTER}'><item jid='x1@localhost' name='one'/></query>")
    await a.sync()
    own = [(p.find(f".//{tag(NS_ROSTER, 'item')}").get("jid"),
            int(p.find(tag(NS_ROSTER, "query")).get("ver"))) for p in a.take(is_push())]
    a.seen.clear()
    r = await a.iq("get", f"<query xmlns='{NS_ROSTER}' ver='{v3}'/>")
    assert r.get("type") == "result" and r.find(tag(NS_ROSTER, "query")) is None
    await a.sync()
    pushes = a.take(is_push())
    order = [(p.find(f".//{tag(NS_ROSTER, 'item')}").get("jid"),
              int(p.find(tag(NS_ROSTER, "query")).get("ver"))) for p in pushes]
    assert order == own and order[0][1] < order[1][1], (order, own)
    pushed = {p.find(f".//{tag(NS_ROSTER, 'item')}").get("jid"):
              p.find(f".//{tag(NS_ROSTER, 'item')}") for p in pushes}
    assert set(pushed) == {"x1@localhost", "x2@localhost"}, pushed
    assert pushed["x1@localhost"].get("name") == "one"
    assert pushed["x2@localhost"].get("subscription") == "remove"
    # An unknown version: the whole roster, with the current version.
    r = await a.iq("get", f"<query xmlns='{NS_ROSTER}' ver='bogus'/>")
    q = r.find(tag(NS_ROSTER, "query"))
    assert q is not None and {i.get("jid") for i in q} == {"x1@localhost", "x3@localhost"}
    # Versions survive a restart.
    await a.close()
    srv.restart()
    a = await peer(srv, "alice", presence=False, roster=False)
    r = await a.iq("get", f"<query xmlns='{NS_ROSTER}' ver='{q.get('ver')}'/>")
    assert r.find(tag(NS_ROSTER, "query")) is None, "unchanged after restart"
    await a.close()


# ---- subscriptions (§3, Appendix A) -----------------------------------------------------------

# RFC 6121 Appendix A as (event, state) -> (next state, action), written from the RFC's prose.
# States: N, NO (pending out), NI (pending in), NOI, T (to), TI, F (from), FO, B (both).
# Actions: fwd (outbound: routed; inbound: delivered), drop, auto (server answers subscribed).
APPENDIX_A = {
    # A.2.1 outbound subscribe
    ("out-subscribe", "N"): ("NO", "fwd"), ("out-subscribe", "NO"): ("NO", "fwd"),
    ("out-subscribe", "NI"): ("NOI", "fwd"), ("out-subscribe", "NOI"): ("NOI", "fwd"),
    ("out-subscribe", "T"): ("T", "fwd"), ("out-subscribe", "TI"): ("TI", "fwd"),
    ("out-subscribe", "F"): ("FO", "fwd"), ("out-subscribe", "FO"): ("FO", "fwd"),
    ("out-subscribe", "B"): ("B", "fwd"),
    # A.2.2 outbound unsubscribe
    ("out-unsubscribe", "N"): ("N", "fwd"), ("out-unsubscribe", "NO"): ("N", "fwd"),
    ("out-unsubscribe", "NI"): ("NI", "fwd"), ("out-unsubscribe", "NOI"): ("NI", "fwd"),
    ("out-unsubscribe", "T"): ("N", "fwd"), ("out-unsubscribe", "TI"): ("NI", "fwd"),
    ("out-unsubscribe", "F"): ("F", "fwd"), ("out-unsubscribe", "FO"): ("F", "fwd"),
    ("out-unsubscribe", "B"): ("F", "fwd"),
    # A.2.3 outbound subscribed
    ("out-subscribed", "N"): ("N", "drop"), ("out-subscribed", "NO"): ("NO", "drop"),
    ("out-subscribed", "NI"): ("F", "fwd"), ("out-subscribed", "NOI"): ("FO", "fwd"),
    ("out-subscribed", "T"): ("T", "drop"), ("out-subscribed", "TI"): ("B", "fwd"),
    ("out-subscribed", "F"): ("F", "drop"), ("out-subscribed", "FO"): ("FO", "drop"),
    ("out-subscribed", "B"): ("B", "drop"),
    # A.2.4 outbound unsubscribed
    ("out-unsubscribed", "N"): ("N", "drop"), ("out-unsubscribed", "NO"): ("NO", "drop"),
    ("out-unsubscribed", "NI"): ("N", "fwd"), ("out-unsubscribed", "NOI"): ("NO", "fwd"),
    ("out-unsubscribed", "T"): ("T", "drop"), ("out-unsubscribed", "TI"): ("T", "fwd"),
    ("out-unsubscribed", "F"): ("N", "fwd"), ("out-unsubscribed", "FO"): ("NO", "fwd"),
    ("out-unsubscribed", "B"): ("T", "fwd"),
    # A.3.1 inbound subscribe (a pending request is delivered again)
    ("in-subscribe", "N"): ("NI", "fwd"), ("in-subscribe", "NO"): ("NOI", "fwd"),
    ("in-subscribe", "NI"): ("NI", "fwd"), ("in-subscribe", "NOI"): ("NOI", "fwd"),
    ("in-subscribe", "T"): ("TI", "fwd"), ("in-subscribe", "TI"): ("TI", "fwd"),
    ("in-subscribe", "F"): ("F", "auto"), ("in-subscribe", "FO"): ("FO", "auto"),
    ("in-subscribe", "B"): ("B", "auto"),
    # A.3.2 inbound unsubscribe
    ("in-unsubscribe", "N"): ("N", "drop"), ("in-unsubscribe", "NO"): ("NO", "drop"),
    ("in-unsubscribe", "NI"): ("N", "fwd"), ("in-unsubscribe", "NOI"): ("NO", "fwd"),
    ("in-unsubscribe", "T"): ("T", "drop"), ("in-unsubscribe", "TI"): ("T", "fwd"),
    ("in-unsubscribe", "F"): ("N", "fwd"), ("in-unsubscribe", "FO"): ("NO", "fwd"),
    ("in-unsubscribe", "B"): ("T", "fwd"),
    # A.3.3 inbound subscribed
    ("in-subscribed", "N"): ("N", "drop"), ("in-subscribed", "NO"): ("T", "fwd"),
    ("in-subscribed", "NI"): ("NI", "drop"), ("in-subscribed", "NOI"): ("TI", "fwd"),
    ("in-subscribed", "T"): ("T", "drop"), ("in-subscribed", "TI"): ("TI", "drop"),
    ("in-subscribed", "F"): ("F", "drop"), ("in-subscribed", "FO"): ("B", "fwd"),
    ("in-subscribed", "B"): ("B", "drop"),
    # A.3.4 inbound unsubscribed
    ("in-unsubscribed", "N"): ("N", "drop"), ("in-unsubscribed", "NO"): ("N", "fwd"),
    ("in-unsubscribed", "NI"): ("NI", "drop"), ("in-unsubscribed", "NOI"): ("NI", "fwd"),
    ("in-unsubscribed", "T"): ("N", "fwd"), ("in-unsubscribed", "TI"): ("NI", "fwd"),
    ("in-unsubscribed", "F"): ("F", "drop"), ("in-unsubscribed", "FO"): ("F", "fwd"),
    ("in-unsubscribed", "B"): ("F", "fwd"),
}
STATES = ["N", "NO", "NI", "NOI", "T", "TI", "F", "FO", "B"]
EVENTS = ["subscribe", "unsubscribe", "subscribed", "unsubscribed"]
# (subscription, pending out, pending in) of each state.
PARTS = {"N": ("none", 0, 0), "NO": ("none", 1, 0), "NI": ("none", 0, 1), "NOI": ("none", 1, 1),
         "T": ("to", 0, 0), "TI": ("to", 0, 1), "F": ("from", 0, 0), "FO": ("from", 1, 0),
         "B": ("both", 0, 0)}
STATE_OF = {v: k for k, v in PARTS.items()}
MIRROR_SUB = {"none": "none", "to": "from", "from": "to", "both": "both"}
# How to reach each state of U's item for C from nothing: (sender, type) steps.
SETUP = {
    "N": [], "NO": [("U", "subscribe")], "NI": [("C", "subscribe")],
    "NOI": [("U", "subscribe"), ("C", "subscribe")],
    "T": [("U", "subscribe"), ("C", "subscribed")],
    "TI": [("U", "subscribe"), ("C", "subscribed"), ("C", "subscribe")],
    "F": [("C", "subscribe"), ("U", "subscribed")],
    "FO": [("C", "subscribe"), ("U", "subscribed"), ("U", "subscribe")],
    "B": [("U", "subscribe"), ("C", "subscribed"), ("C", "subscribe"), ("U", "subscribed")],
}


def mirror(state: str) -> str:
    sub, out, inn = PARTS[state]
    return STATE_OF[(MIRROR_SUB[sub], inn, out)]


class Side:
    """The model of one account's item for the other: state and pre-approval."""

    def __init__(self, state: str):
        self.state, self.approved = state, False

    def step(self, direction: str, event: str) -> str:
        """Applies the Appendix A row (plus §3.4 pre-approval); returns the action."""
        before = self.state
        nxt, action = APPENDIX_A[(f"{direction}-{event}", before)]
        if direction == "out" and event == "subscribed":
            if nxt == before:
                self.approved = self.approved or before in ("N", "NO", "T")
            else:
                self.approved = False
        elif direction == "out" and event == "unsubscribed":
            self.approved = False
        elif direction == "in" and event == "subscribe" and action == "fwd" and self.approved:
            nxt, _ = APPENDIX_A[("out-subscribed", nxt)]
            self.approved, action = False, "auto"
        self.state = nxt
        return action


def simulate(state: str, actor: str, event: str):
    """Both servers' models for one event; returns (U side, C side, delivered-to-U?,
    delivered-to-C?)."""
    u, c = Side(state), Side(mirror(state))
    sender, receiver = (u, c) if actor == "U" else (c, u)
    delivered = {"U": False, "C": False}
    if sender.step("out", event) == "fwd":
        action = receiver.step("in", event)
        if action == "fwd":
            delivered["C" if actor == "U" else "U"] = True
        elif action == "auto":
            # The receiver's server answers `subscribed` for its user.
            if sender.step("in", "subscribed") == "fwd":
                delivered[actor] = True
    return u, c, delivered["U"], delivered["C"]


def appendix_cases():
    for state in STATES:
        for actor in ("U", "C"):
            for event in EVENTS:
                yield state, actor, event


def test_the_python_model_covers_appendix_a():
    assert len(APPENDIX_A) == 72
    assert len(list(appendix_cases())) == 72
    for s in STATES:
        assert mirror(mirror(s)) == s


async def test_appendix_a_every_transition(server_factory):
    """For each of the 9 states and the 8 events (the user's 4 outbound stanzas, the
    contact's 4), a fresh pair of accounts is brought to the state with real stanzas, the
    event is sent, and both rosters and deliveries are compared with the Appendix A model."""
    cases = list(appendix_cases())
    srv = server_factory(users={})
    r = srv.user("add-bulk", "--prefix", "s", "--count", str(2 * len(cases)), "--password", PASSWORD)
    assert r.returncode == 0, r.stderr
    failures = []
    for i, (state, actor, event) in enumerate(cases):
        u = await peer(srv, f"s{2 * i + 1}", password=PASSWORD)
        c = await peer(srv, f"s{2 * i + 2}", password=PASSWORD)
        peers = {"U": u, "C": c}
        for who, t in SETUP[state]:
            other = c if who == "U" else u
            peers[who].presence(other.bare, t)
            await peers[who].sync()
        await u.sync()
        await c.sync()
        got = (item_state(await u.roster(), c.bare), item_state(await c.roster(), u.bare))
        sub, out, _ = PARTS[state]
        csub, cout, _ = PARTS[mirror(state)]
        if got != ((sub, bool(out), False), (csub, bool(cout), False)):
            failures.append(f"setup of {state}: got {got}")
            continue
        u.seen.clear()
        c.seen.clear()
        sender, receiver = (u, c) if actor == "U" else (c, u)
        sender.presence(receiver.bare, event)
        await sender.sync()
        await receiver.sync()
        mu, mc, to_u, to_c = simulate(state, actor, event)
        want = ((PARTS[mu.state][0], bool(PARTS[mu.state][1]), mu.approved),
                (PARTS[mc.state][0], bool(PARTS[mc.state][1]), mc.approved))
        got = (item_state(await u.roster(), c.bare), item_state(await c.roster(), u.bare))
        got_u = any(is_presence(event, c.bare)(e) for e in u.seen)
        got_c = any(is_presence(event, u.bare)(e) for e in c.seen)
        name = f"{event} from {'user' if actor == 'U' else 'contact'} in {state}"
        if got != want:
            failures.append(f"{name}: rosters {got}, expected {want}")
        if actor == "C" and got_u != to_u:
            failures.append(f"{name}: delivered to user {got_u}, expected {to_u}")
        if actor == "U" and got_c != to_c:
            failures.append(f"{name}: delivered to contact {got_c}, expected {to_c}")
        await u.close()
        await c.close()
    assert not failures, "\n".join(failures)


async def test_subscription_handshake_pushes_and_presence(server):
    """§3.1: request, approval, pushes with ask, presence of the new contact."""
    a = await peer(server, "alice")
    b = await peer(server, "bob")
    a.presence("bob@localhost", "subscribe")
    await a.sync()
    push = a.take(is_push("bob@localhost"))[-1].find(f".//{tag(NS_ROSTER, 'item')}")
    assert (push.get("subscription"), push.get("ask")) == ("none", "subscribe")
    await b.sync()
    req = b.take(is_presence("subscribe", "alice@localhost"))
    assert req and not b.take(is_push()), "a request alone does not touch bob's roster"
    b.presence("alice@localhost", "subscribed")
    await b.sync()
    push = b.take(is_push("alice@localhost"))[-1].find(f".//{tag(NS_ROSTER, 'item')}")
    assert push.get("subscription") == "from"
    await a.sync()
    assert a.take(is_presence("subscribed", "bob@localhost"))
    push = a.take(is_push("bob@localhost"))[-1].find(f".//{tag(NS_ROSTER, 'item')}")
    assert (push.get("subscription"), push.get("ask")) == ("to", None)
    assert a.take(is_presence(None, b.jid)), "bob's current presence follows the approval"
    await a.close()
    await b.close()


async def test_roster_pushes_follow_the_presence_they_are_about(server):
    """RFC 6121 §3.1.6, §3.2.3: the subscriber's resources get the `subscribed` (and later
    `unsubscribed`) before the roster push it causes; §3.2.2: a cancelled subscriber gets the
    contact's `unavailable` before the `unsubscribed`, while it is still subscribed."""
    a = await peer(server, "alice")
    b = await peer(server, "bob")
    a.presence("bob@localhost", "subscribe")
    await a.sync()
    b.presence("alice@localhost", "subscribed")
    await b.sync()
    got = await a.sync()
    kinds = [("push" if is_push("bob@localhost")(e) else e.get("type") or "available")
             for e in got if is_push("bob@localhost")(e) or is_presence(
                 "subscribed", "bob@localhost")(e)]
    assert kinds == ["subscribed", "push"], kinds
    b.presence("alice@localhost", "unsubscribed")
    await b.sync()
    got = await a.sync()
    order = [("push" if is_push("bob@localhost")(e) else e.get("type") or "available")
             for e in got if is_push("bob@localhost")(e) or (
                 local(e) == "presence" and e.get("from", "").startswith("bob@localhost"))]
    assert order == ["unavailable", "unsubscribed", "push"], order
    await a.close()
    await b.close()


async def test_removed_account_cancels_its_subscriptions(server):
    """XEP-0077 §3.2 / RFC 6121 §3.3: an account removed in-band tells its contacts as if it
    removed each roster item: unavailable from its resources, `unsubscribed` and
    `unsubscribe`, so the contact's roster drops to `none`. Nothing is recorded for the
    deleted account afterwards (no last activity, hence no foreign-key failure in the log)."""
    await make_mutual(server, "alice", "bob")
    b = await peer(server, "bob", "desk")
    a = await peer(server, "alice", "one")
    await b.sync()
    assert b.take(is_presence(None, a.jid))
    bye = await a.iq("set", "<query xmlns='jabber:iq:register'><remove/></query>")
    assert bye.get("type") == "result"
    assert (await a.c.wait_closed())[0] == "not-authorized"
    await b.sync()
    assert b.take(is_presence("unavailable", a.jid))
    assert b.take(is_presence("unsubscribed", "alice@localhost"))
    assert b.take(is_presence("unsubscribe", "alice@localhost"))
    pushes = b.take(is_push("alice@localhost"))
    assert pushes, "bob's roster changed"
    last = pushes[-1].find(f".//{tag(NS_ROSTER, 'item')}")
    assert (last.get("subscription"), last.get("ask")) == ("none", None)
    assert item_state(await b.roster(), "alice@localhost")[0] == "none"
    await b.close()
    log = server.log()
    assert "recording last activity failed" not in log
    assert "FOREIGN KEY" not in log


async def test_pending_request_is_redelivered_at_next_login(server):
    a = await peer(server, "alice")
    a.presence("carol@localhost", "subscribe", "<status>please</status>")
    await a.sync()
    c = await peer(server, "carol", "first", presence=False)
    c.presence()
    req = await c.c.expect(is_presence("subscribe", "alice@localhost"), 10, "stored request")
    assert req.findtext(tag(NS_CLIENT, "status")) == "please"
    await c.close()
    # Still pending: delivered again at the next login, until answered.
    c = await peer(server, "carol", "second", presence=False)
    c.presence()
    await c.c.expect(is_presence("subscribe", "alice@localhost"), 10, "request again")
    c.presence("alice@localhost", "subscribed")
    await c.sync()
    await c.close()
    c = await peer(server, "carol", "third")
    await asyncio.sleep(0.3)
    await c.sync()
    assert not c.take(is_presence("subscribe")), "answered requests are forgotten"
    await a.close()
    await c.close()


async def test_pre_approval(server):
    """§3.4: bob approves before alice asks; her request is answered by the server."""
    b = await peer(server, "bob")
    b.presence("alice@localhost", "subscribed")
    await b.sync()
    push = b.take(is_push("alice@localhost"))[-1].find(f".//{tag(NS_ROSTER, 'item')}")
    assert (push.get("subscription"), push.get("approved")) == ("none", "true")
    a = await peer(server, "alice")
    a.presence("bob@localhost", "subscribe")
    await a.sync()
    await b.sync()
    assert not b.take(is_presence("subscribe")), "a pre-approved request is not shown"
    assert item_state(await b.roster(), "alice@localhost") == ("from", False, False)
    await a.sync()
    assert a.take(is_presence("subscribed", "bob@localhost"))
    assert item_state(await a.roster(), "bob@localhost") == ("to", False, False)
    await a.close()
    await b.close()


async def make_mutual(srv, x: str, y: str):
    p, q = await peer(srv, x, "setup"), await peer(srv, y, "setup")
    for s, r in ((p, q), (q, p)):
        s.presence(r.bare, "subscribe")
        await s.sync()
        r.presence(s.bare, "subscribed")
        await r.sync()
    await p.close()
    await q.close()


# ---- presence (§4) ----------------------------------------------------------------------------

async def test_initial_presence_probes_broadcast_and_unavailable(server):
    await make_mutual(server, "alice", "bob")
    b = await peer(server, "bob", "desk", presence=False)
    b.presence(extra="<show>dnd</show><status>busy</status><priority>3</priority>")
    await b.sync()
    a1 = await peer(server, "alice", "one", presence=False)
    a1.presence(extra="<status>here</status>")
    # Probe answered with bob's last presence; alice's own presence reflected to her.
    got = await a1.c.expect(is_presence(None, b.jid), 10, "bob's presence")
    assert got.findtext(tag(NS_CLIENT, "status")) == "busy"
    await b.sync()
    assert b.take(is_presence(None, a1.jid))
    # A second resource of alice: sees the first one's presence; the first sees it.
    a2 = await peer(server, "alice", "two", presence=False)
    a2.presence()
    await a2.c.expect(is_presence(None, a1.jid), 10, "own other resource")
    await a1.sync()
    assert a1.take(is_presence(None, a2.jid))
    # Presence update (§4.4): subscribers and own resources, no new probes.
    a1.presence(extra="<show>away</show>")
    await a1.sync()
    await b.sync()
    upd = b.take(is_presence(None, a1.jid))
    assert upd and upd[-1].findtext(tag(NS_CLIENT, "show")) == "away"
    # A dead socket: unavailable goes out anyway (§4.5.2).
    a1.c.abort()
    for p in (b, a2):
        await p.c.expect(is_presence("unavailable", a1.jid), 10, "unavailable after abort")
    # Explicit unavailable with a status.
    a2.presence(type_="unavailable", extra="<status>bye</status>")
    u = await b.c.expect(is_presence("unavailable", a2.jid), 10, "explicit unavailable")
    assert u.findtext(tag(NS_CLIENT, "status")) == "bye"
    await a2.close()
    await b.close()


async def test_directed_presence_gets_its_unavailable(server):
    """§4.6: directed presence to a non-subscriber; unavailable when the session ends."""
    a = await peer(server, "alice")
    c = await peer(server, "carol")
    a.presence("carol@localhost", extra="<status>psst</status>")
    await a.sync()
    await c.sync()
    assert c.take(is_presence(None, a.jid)), "directed presence to the bare JID reaches carol"
    await a.close()
    await c.c.expect(is_presence("unavailable", a.jid), 10, "unavailable owed to carol")
    await c.close()


async def test_presence_without_subscription_is_not_broadcast(server):
    a = await peer(server, "alice")
    c = await peer(server, "carol")
    a.presence(extra="<status>hello</status>")
    await a.sync()
    await c.sync()
    assert not c.take(is_presence(None, a.jid))
    await a.close()
    await c.close()


# ---- message delivery (§8.5) --------------------------------------------------------------------

DELIVERY = [
    # (type, to, resources that get it, error for the sender)
    ("chat", "bob@localhost", {"hi"}, None),
    ("normal", "bob@localhost", {"hi"}, None),
    ("headline", "bob@localhost", {"hi", "lo"}, None),
    ("groupchat", "bob@localhost", set(), "service-unavailable"),
    ("error", "bob@localhost", set(), None),
    ("chat", "bob@localhost/lo", {"lo"}, None),
    ("chat", "bob@localhost/neg", {"neg"}, None),
    ("groupchat", "bob@localhost/na", {"na"}, None),
    ("chat", "bob@localhost/gone", {"hi"}, None),
    ("normal", "bob@localhost/gone", set(), "service-unavailable"),   # §8.5.3.2.1
    ("headline", "bob@localhost/gone", set(), None),
    ("groupchat", "bob@localhost/gone", set(), "service-unavailable"),
    ("chat", "nobody@localhost", set(), "service-unavailable"),
    ("headline", "nobody@localhost", set(), None),
    ("groupchat", "carol@localhost", set(), "service-unavailable"),
    ("headline", "carol@localhost", set(), None),
    ("chat", "carol@localhost", set(), None),   # stored offline (carol has no resource)
]


async def test_delivery_matrix(server):
    """RFC 6121 §8.5.2/§8.5.3 for each message type and address shape."""
    a = await peer(server, "alice", "a")
    bob = {}
    for res, prio in (("hi", 5), ("lo", 1), ("neg", -1), ("na", None)):
        p = await peer(server, "bob", res, presence=False)
        if prio is not None:
            p.presence(extra=f"<priority>{prio}</priority>")
        bob[res] = p
    for p in bob.values():
        await p.sync()
        p.seen.clear()
    failures = []
    for i, (type_, to, want, err) in enumerate(DELIVERY):
        body = f"m{i}"
        a.send(f"<message to='{to}' type='{type_}' id='m{i}'><body>{body}</body></message>")
        await a.sync()
        got = set()
        for res, p in bob.items():
            await p.sync()
            if p.take(is_msg(body)):
                got.add(res)
        errors = a.take(lambda e: local(e) == "message" and e.get("id") == f"m{i}")
        got_err = stanza_error(errors[0]) if errors else None
        if got != want or got_err != err:
            failures.append(f"{type_} to {to}: delivered to {got}, error {got_err}; "
                            f"expected {want}, {err}")
    assert not failures, "\n".join(failures)
    await a.close()
    for p in bob.values():
        await p.close()


# ---- offline messages (XEP-0160, XEP-0203) --------------------------------------------------------

async def test_offline_messages_survive_a_restart(server_factory, backend):
    srv = server_factory(backend=backend)
    a = await peer(srv, "alice")
    info = await a.iq("get", f"<query xmlns='{NS_DISCO_INFO}'/>", to="localhost")
    assert "msgoffline" in {f.get("var") for f in info.iter(tag(NS_DISCO_INFO, "feature"))}
    for i in range(3):
        a.send(f"<message to='carol@localhost' type='chat'><body>off {i}</body></message>")
    a.send("<message to='carol@localhost' type='chat'>"
           "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
    a.send("<message to='carol@localhost' type='headline'><body>news</body></message>")
    await a.sync()
    assert not a.take(lambda e: e.get("type") == "error"), "stored, not bounced"
    await a.close()
    srv.restart()
    c = await peer(srv, "carol", presence=False)
    c.presence()
    got = []
    for i in range(3):
        got.append(await c.c.expect(is_msg(f"off {i}"), 15, f"offline message {i}"))
    for m in got:
        assert m.get("from") == "alice@localhost/r"
        d = m.find(tag(NS_DELAY, "delay"))
        assert d is not None and d.get("from") == "localhost" and d.get("stamp", "").endswith("Z")
    await c.sync()
    assert not c.take(is_msg("news")), "headlines are not stored"
    assert not c.take(lambda e: local(e) == "message"), "nothing else stored"
    await c.close()
    c = await peer(srv, "carol", "again")
    await asyncio.sleep(0.3)
    await c.sync()
    assert not c.take(lambda e: local(e) == "message"), "delivered messages are deleted"
    await c.close()


async def test_offline_messages_not_acked_are_stored_again_with_their_first_stamp(server):
    """Offline messages are deleted from the store once queued for a session; one that the
    session then cannot deliver (here: written, never acknowledged under XEP-0198, and the
    connection dies) is routed again, so it goes back to offline storage, keeping the
    `<delay/>` of its first storage (XEP-0203 §3) rather than gaining a second one."""
    a = await peer(server, "alice")
    for i in range(3):
        a.send(f"<message to='carol@localhost' type='chat'><body>again {i}</body></message>")
    await a.sync()
    await a.close()
    c = server.client()
    await c.login("carol", server.users["carol"], "phone")
    c.send("<enable xmlns='urn:xmpp:sm:3'/>")   # acks, no resumption: the session ends with
    await c.expect(lambda e: local(e) == "enabled", what="<enabled/>")   # the connection
    c.send("<presence/>")
    first = {}
    while len(first) < 3:
        el = await c.recv(15)
        if local(el) == "message":
            first[el.findtext(BODY)] = el.find(tag(NS_DELAY, "delay")).get("stamp")
    c.abort()   # never acknowledged
    await asyncio.sleep(0.5)
    c2 = await peer(server, "carol", "again", presence=False)
    c2.presence()
    for i in range(3):
        m = await c2.c.expect(is_msg(f"again {i}"), 15, f"message {i} stored again")
        delays = m.findall(tag(NS_DELAY, "delay"))
        assert len(delays) == 1, ET.tostring(m)
        assert delays[0].get("stamp") == first[f"again {i}"]
    await c2.close()


async def test_offline_storage_cap(server_factory):
    srv = server_factory(im={"offline": {"max_per_user": 2}})
    a = await peer(srv, "alice")
    for i in range(3):
        a.send(f"<message to='carol@localhost' type='chat' id='o{i}'><body>{i}</body></message>")
    await a.sync()
    errs = a.take(lambda e: local(e) == "message" and e.get("type") == "error")
    assert [e.get("id") for e in errs] == ["o2"]
    # XEP-0160 §2: what the server cannot store is service-unavailable.
    assert stanza_error(errs[0]) == "service-unavailable"
    assert "full" in (errs[0].findtext(f".//{{urn:ietf:params:xml:ns:xmpp-stanzas}}text") or "")
    await a.close()


async def test_negative_priority_gets_no_offline_messages(server):
    a = await peer(server, "alice")
    a.message("carol@localhost", "later")
    await a.sync()
    c = await peer(server, "carol", "neg", presence=False)
    c.presence(extra="<priority>-1</priority>")
    await asyncio.sleep(0.5)
    await c.sync()
    assert not c.take(is_msg("later"))
    await c.close()
    c = await peer(server, "carol", "pos", presence=False)
    c.presence()
    await c.c.expect(is_msg("later"), 10, "offline message at non-negative priority")
    await c.close()
    # XEP-0160 §2: a resource that goes from a negative to a non-negative priority gets what
    # was stored meanwhile, without logging in again.
    a.message("carol@localhost", "after the raise")
    await a.sync()
    c = await peer(server, "carol", "neg", presence=False)
    c.presence(extra="<priority>-1</priority>")
    await c.sync()
    assert not c.take(is_msg("after the raise"))
    c.presence(extra="<priority>1</priority>")
    await c.c.expect(is_msg("after the raise"), 10, "offline message once the priority rose")
    await a.close()
    await c.close()


# ---- blocking (XEP-0191) ----------------------------------------------------------------------------

async def test_blocking_enforcement_and_pushes(server):
    await make_mutual(server, "alice", "bob")
    a1 = await peer(server, "alice", "one")
    a2 = await peer(server, "alice", "two", presence=False)
    r = await a2.iq("get", f"<blocklist xmlns='{NS_BLOCKING}'/>")
    assert r.find(tag(NS_BLOCKING, "blocklist")) is not None
    b = await peer(server, "bob")
    await b.sync()
    b.seen.clear()
    r = await a1.iq("set", f"<block xmlns='{NS_BLOCKING}'><item jid='bob@localhost'/></block>")
    assert r.get("type") == "result"
    await a2.sync()
    assert a2.take(lambda e: e.find(tag(NS_BLOCKING, "block")) is not None), "push to a2"
    await b.sync()
    assert b.take(is_presence("unavailable", a1.jid)), "bob sees alice go away"
    await a1.sync()
    a1.seen.clear()
    # Inbound: messages bounce, IQs bounce, presence is dropped.
    b.send("<message to='alice@localhost/one' type='chat' id='bm'><body>hey</body></message>")
    b.send("<iq to='alice@localhost/one' type='get' id='biq'><ping xmlns='urn:xmpp:ping'/></iq>")
    b.presence(extra="<status>look</status>")
    await b.sync()
    await a1.sync()
    assert not a1.take(is_msg("hey")) and not a1.take(is_presence(None, b.jid))
    assert not a1.take(lambda e: e.get("id") == "biq")
    errs = {e.get("id"): stanza_error(e) for e in b.take(lambda e: e.get("type") == "error")}
    assert errs == {"bm": "service-unavailable", "biq": "service-unavailable"}, errs
    # Outbound: not-acceptable with <blocked/>.
    a1.send("<message to='bob@localhost' type='chat' id='am'><body>psst</body></message>")
    await a1.sync()
    err = a1.take(lambda e: e.get("id") == "am")
    assert err and stanza_error(err[0]) == "not-acceptable"
    assert err[0].find(f".//{tag(NS_BLOCKING_ERRORS, 'blocked')}") is not None
    await b.sync()
    assert not b.take(is_msg("psst"))
    # Unblock everything: messages flow, bob sees alice's presence again.
    r = await a1.iq("set", f"<unblock xmlns='{NS_BLOCKING}'/>")
    assert r.get("type") == "result"
    await b.sync()
    assert b.take(is_presence(None, a1.jid))
    b.message("alice@localhost/one", "again")
    await b.sync()
    await a1.sync()
    assert a1.take(is_msg("again"))
    r = await a1.iq("get", f"<blocklist xmlns='{NS_BLOCKING}'/>")
    assert not list(r.find(tag(NS_BLOCKING, "blocklist")))
    for p in (a1, a2, b):
        await p.close()


async def test_blocking_a_domain_and_persistence(server):
    a = await peer(server, "alice")
    r = await a.iq("set", f"<block xmlns='{NS_BLOCKING}'><item jid='localhost/evil'/>"
                          "<item jid='carol@localhost'/></block>")
    assert r.get("type") == "result"
    r = await a.iq("set", f"<block xmlns='{NS_BLOCKING}'/>")
    assert stanza_error(r) == "bad-request"
    await a.close()
    a = await peer(server, "alice", "new")
    r = await a.iq("get", f"<blocklist xmlns='{NS_BLOCKING}'/>")
    assert {i.get("jid") for i in r.iter(tag(NS_BLOCKING, "item"))} == {
        "localhost/evil", "carol@localhost"}
    # carol is blocked while alice is offline too: no offline storage for her.
    await a.close()
    c = await peer(server, "carol")
    c.message("alice@localhost", "stored?")
    await c.sync()
    assert c.take(lambda e: e.get("type") == "error")
    await c.close()


async def test_the_block_list_is_bounded(server):
    """Audit 37 L3: `[im.blocking] max_items` (5,000 by default) bounds the block list; a
    block that would pass it gets `resource-constraint` (RFC 6120 §8.3.3.18, as a full
    roster) and blocks nothing, while re-blocking what is there still works. The get answers
    the whole list, each item once."""
    def block(jids) -> str:
        items = "".join(f"<item jid='{j}'/>" for j in jids)
        return f"<block xmlns='{NS_BLOCKING}'>{items}</block>"

    d = await peer(server, "carol")
    r = await d.iq("set", block(f"u{i}@spam.example" for i in range(4999)))
    assert r.get("type") == "result", ET.tostring(r)
    r = await d.iq("set", block(["new1@spam.example", "new2@spam.example", "u1@spam.example"]))
    assert stanza_error(r) == "resource-constraint", ET.tostring(r)
    # Duplicates and items already there count once, or not at all.
    r = await d.iq("set", block(["new1@spam.example", "new1@spam.example", "u7@spam.example"]))
    assert r.get("type") == "result", ET.tostring(r)
    r = await d.iq("set", block(["new2@spam.example"]))
    assert stanza_error(r) == "resource-constraint", ET.tostring(r)
    # A full list still takes what adds nothing.
    r = await d.iq("set", block(["u3@spam.example"]))
    assert r.get("type") == "result", ET.tostring(r)
    r = await d.iq("get", f"<blocklist xmlns='{NS_BLOCKING}'/>")
    jids = [i.get("jid") for i in r.iter(tag(NS_BLOCKING, "item"))]
    assert len(jids) == 5000 and len(set(jids)) == 5000 and "new1@spam.example" in jids
    assert jids == sorted(jids)
    await d.close()


async def test_blocking_holds_back_what_was_stored_before_the_block(server):
    """XEP-0191 §3.3: once alice blocks bob, nothing from bob reaches her, including what
    was stored before the block and is delivered after her initial presence: his offline
    message is dropped, his subscription request stays pending, undelivered, until he is
    unblocked."""
    b = await peer(server, "bob")
    c = await peer(server, "carol")
    b.message("alice@localhost", "before the block")
    b.presence("alice@localhost", "subscribe")
    await b.sync()
    c.message("alice@localhost", "from carol")
    await c.sync()
    a = await peer(server, "alice", "one", presence=False)
    r = await a.iq("set", f"<block xmlns='{NS_BLOCKING}'><item jid='bob@localhost'/></block>")
    assert r.get("type") == "result"
    a.presence()
    # Offline messages come last, after the stored requests: carol's marks the end.
    await a.until(is_msg("from carol"), "carol's offline message")
    assert not a.take(is_msg("before the block")), "offline message from a blocked JID"
    assert not a.take(is_presence("subscribe", "bob@localhost")), "request from a blocked JID"
    r = await a.iq("set", f"<unblock xmlns='{NS_BLOCKING}'/>")
    assert r.get("type") == "result"
    await a.close()
    a = await peer(server, "alice", "two", presence=False)
    a.presence()
    await a.until(is_presence("subscribe", "bob@localhost"), "the request after the unblock")
    await asyncio.sleep(0.3)
    await a.sync()
    assert not a.take(is_msg("before the block")), "the blocked offline message was dropped"
    for p in (a, b, c):
        await p.close()


async def test_blocking_a_domain_or_a_resource_sends_unavailable_to_what_it_reaches(
        server_factory):
    """XEP-0191 §3.3: blocking sends unavailable to every entity the new item reaches that
    may receive the user's presence, whatever the item's form: a domain (dave, a subscriber
    at second.test), a full JID (bob's phone, not his desk), a bare JID that got directed
    presence (carol); §3.4: unblocking sends the current presence to the same."""
    srv = server_factory(host=[{"domain": "second.test"}])
    r = srv.user("add", "dave@second.test", password="davepass")
    assert r.returncode == 0, r.stderr
    await make_mutual(srv, "alice", "bob")
    dc = xmpp_raw.RawClient(srv.host, srv.port, "second.test")
    d = Peer(dc, await dc.login("dave", "davepass", "r"))
    await d.roster()
    d.presence("alice@localhost", "subscribe")
    await d.sync()
    a = await peer(srv, "alice")
    a.presence("dave@second.test", "subscribed")
    await a.sync()
    d.presence()
    phone, desk = await peer(srv, "bob", "phone"), await peer(srv, "bob", "desk")
    c = await peer(srv, "carol")
    a.presence(c.jid, extra="<status>directed</status>")
    await a.sync()
    everyone = (d, phone, desk, c)
    for p in everyone:
        await p.sync()
        p.seen.clear()
    r = await a.iq("set", f"<block xmlns='{NS_BLOCKING}'><item jid='second.test'/>"
                          "<item jid='bob@localhost/phone'/><item jid='carol@localhost'/></block>")
    assert r.get("type") == "result"
    for p in everyone:
        await p.sync()
    for p in (d, phone, c):
        assert p.take(is_presence("unavailable", a.jid)), f"{p.jid} sees alice go away"
    assert not desk.take(is_presence("unavailable", a.jid)), "bob's desk is not blocked"
    r = await a.iq("set", f"<unblock xmlns='{NS_BLOCKING}'/>")
    assert r.get("type") == "result"
    for p in everyone:
        await p.sync()
    for p in (d, phone, c):
        assert p.take(is_presence(None, a.jid)), f"{p.jid} sees alice again"
    assert not desk.take(is_presence(None, a.jid)), "bob's desk saw her all along"
    for p in (a, *everyone):
        await p.close()


# ---- carbons (XEP-0280) ----------------------------------------------------------------------------

def carbon(kind: str, body: str):
    def pred(e):
        fw = e.find(f"{tag(NS_CARBONS, kind)}/{tag(NS_FORWARD, 'forwarded')}/{tag(NS_CLIENT, 'message')}")
        return local(e) == "message" and fw is not None and fw.findtext(BODY) == body
    return pred


async def test_carbons_between_resources(server):
    a1 = await peer(server, "alice", "one")
    a2 = await peer(server, "alice", "two")
    a3 = await peer(server, "alice", "three")      # never enables carbons
    b = await peer(server, "bob")
    for p in (a1, a2):
        r = await p.iq("set", f"<enable xmlns='{NS_CARBONS}'/>")
        assert r.get("type") == "result"
    b.message("alice@localhost/one", "in")
    await b.sync()
    await a1.sync()
    assert a1.take(is_msg("in")) and not a1.take(carbon("received", "in"))
    await a2.sync()
    rc = a2.take(carbon("received", "in"))
    assert rc and rc[0].get("from") == "alice@localhost" and rc[0].get("to") == a2.jid
    a1.message("bob@localhost/r", "out")
    await a1.sync()
    await a2.sync()
    assert a2.take(carbon("sent", "out"))
    # <private/> is not copied; a disabled resource gets nothing more.
    a1.send("<message to='bob@localhost/r' type='chat'><body>secret</body>"
            f"<private xmlns='{NS_CARBONS}'/></message>")
    r = await a2.iq("set", f"<disable xmlns='{NS_CARBONS}'/>")
    await a1.sync()
    b.message("alice@localhost/one", "after")
    await b.sync()
    await a2.sync()
    assert not a2.take(carbon("sent", "secret")) and not a2.take(carbon("received", "after"))
    await a3.sync()
    assert not [e for e in a3.seen if e.find(tag(NS_CARBONS, "received")) is not None
                or e.find(tag(NS_CARBONS, "sent")) is not None]
    for p in (a1, a2, a3, b):
        await p.close()


async def test_carbons_eligibility_rules(server):
    """XEP-0280 §6.1.1: besides chat and normal-with-body messages, IM payloads without a
    body (receipts, markers, chat states), errors echoing such a message and invitations
    (direct and mediated) are copied; a private message from a MUC occupant is not copied
    on the receiving side (the MUC service gives it to every joined client), but is on the
    sending side; groupchat and headlines never are."""
    a1 = await peer(server, "alice", "one")
    a2 = await peer(server, "alice", "two")
    b = await peer(server, "bob")
    for p in (a1, a2):
        r = await p.iq("set", f"<enable xmlns='{NS_CARBONS}'/>")
        assert r.get("type") == "result"
    muc_user = "http://jabber.org/protocol/muc#user"
    received = {
        "receipt": ("normal", "<received xmlns='urn:xmpp:receipts' id='m0'/>", True),
        "marker": ("normal", "<displayed xmlns='urn:xmpp:chat-markers:0' id='m0'/>", True),
        "state": ("normal", "<active xmlns='http://jabber.org/protocol/chatstates'/>", True),
        "error": ("error", "<body>bounced</body><error type='cancel'>"
                  "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>", True),
        "direct": ("normal", "<x xmlns='jabber:x:conference' jid='room@conference.localhost'/>",
                   True),
        "mediated": ("normal", f"<x xmlns='{muc_user}'><invite from='carol@localhost'/></x>",
                     True),
        "pm": ("chat", f"<body>psst</body><x xmlns='{muc_user}'/>", False),
        "groupchat": ("groupchat", "<body>all</body>", False),
        "headline": ("headline", "<body>news</body>", False),
        "empty": ("normal", "<thread>t</thread>", False),
    }
    for id_, (type_, payload, _) in received.items():
        b.send(f"<message to='{a1.jid}' type='{type_}' id='{id_}'>{payload}</message>")
    await b.sync()
    a1.send(f"<message to='{b.jid}' type='chat' id='pm-out'><body>back</body>"
            f"<x xmlns='{muc_user}'/></message>")
    await a1.sync()
    await a2.sync()

    def copied(kind):
        path = f"{tag(NS_CARBONS, kind)}/{tag(NS_FORWARD, 'forwarded')}/{tag(NS_CLIENT, 'message')}"
        return {e.find(path).get("id") for e in a2.seen if e.find(path) is not None}
    assert copied("received") == {i for i, (_, _, want) in received.items() if want}
    assert copied("sent") == {"pm-out"}
    for p in (a1, a2, b):
        await p.close()


async def test_a_negative_priority_carbons_resource_gets_a_copy_of_what_goes_offline(server):
    """XEP-0280 §6: each Carbons-enabled resource that did not get the message under the
    RFC 6121 rules gets a received carbon — also when, with no resource of priority ≥ 0, the
    message goes to offline storage."""
    bob = await server.login("bob", "neg")
    bob.send("<presence><priority>-1</priority></presence>")
    res = await bob.iq("set", None, f"<enable xmlns='{NS_CARBONS}'/>")
    assert res.get("type") == "result"
    alice = await server.login("alice", "a")
    alice.message(server.jid("bob"), "to the store")
    got = await bob.expect(lambda e: e.find(f"{{{NS_CARBONS}}}received") is not None,
                           what="the received carbon")
    fwd = got.find(f"{{{NS_CARBONS}}}received/{{{NS_FORWARD}}}forwarded/{{jabber:client}}message")
    assert fwd.findtext(tag(NS_CLIENT, 'body')) == "to the store"
    await bob.close()
    bob = await server.login("bob", "pos")
    await bob.presence()
    await bob.expect(lambda e: local(e) == "message" and e.findtext(tag(NS_CLIENT, 'body'))
                     == "to the store", what="the stored message")
    await bob.close()
    await alice.close()


async def test_carbons_with_slixmpp(server):
    """The acceptance flow with an independent client library."""
    a1 = await slix_login(server, "alice", resource="s1", presence=True)
    a2 = await slix_login(server, "alice", resource="s2", presence=True)
    try:
        for c in (a1, a2):
            iq = c.make_iq_set()
            iq.append(ET.fromstring(f"<enable xmlns='{NS_CARBONS}'/>"))
            await iq.send(timeout=10)
        b = await peer(server, "bob")
        b.message("alice@localhost/s1", "via slix")
        await a2.inbox.wait(carbon("received", "via slix"), what="received carbon")
        await b.close()
    finally:
        await a1.close()
        await a2.close()


# ---- vCard, private storage, last activity ------------------------------------------------------------

async def test_vcard(server_factory):
    srv = server_factory(im={"vcard": {"max_bytes": 2000}})
    a = await peer(srv, "alice", presence=False)
    r = await a.iq("get", f"<vCard xmlns='{NS_VCARD}'/>")
    assert r.get("type") == "result" and r.find(tag(NS_VCARD, "vCard")) is not None
    r = await a.iq("set", f"<vCard xmlns='{NS_VCARD}'><FN>Alice A.</FN><NICKNAME>al</NICKNAME></vCard>")
    assert r.get("type") == "result"
    b = await peer(srv, "bob", presence=False)
    # XEP-0054 §3.3: another account's missing vCard is the error an account that does not
    # exist gets (service-unavailable in both cases: no directory harvesting).
    r = await a.iq("get", f"<vCard xmlns='{NS_VCARD}'/>", to="bob@localhost")
    assert stanza_error(r) == "service-unavailable", ET.tostring(r)
    r = await a.iq("get", f"<vCard xmlns='{NS_VCARD}'/>", to="nobody@localhost")
    assert stanza_error(r) == "service-unavailable", ET.tostring(r)
    r = await b.iq("get", f"<vCard xmlns='{NS_VCARD}'/>", to="alice@localhost")
    assert r.find(f"{tag(NS_VCARD, 'vCard')}/{tag(NS_VCARD, 'FN')}").text == "Alice A."
    r = await b.iq("set", f"<vCard xmlns='{NS_VCARD}'><FN>Mallory</FN></vCard>", to="alice@localhost")
    assert stanza_error(r) == "forbidden"
    r = await a.iq("set", f"<vCard xmlns='{NS_VCARD}'><PHOTO><BINVAL>{'A' * 4000}</BINVAL></PHOTO></vCard>")
    assert stanza_error(r) == "not-acceptable"
    await a.close()
    await b.close()


async def test_private_storage(server):
    a = await peer(server, "alice", presence=False)
    r = await a.iq("get", f"<query xmlns='{NS_PRIVATE}'><storage xmlns='storage:bookmarks'/></query>")
    st = r.find(f"{tag(NS_PRIVATE, 'query')}/{{storage:bookmarks}}storage")
    assert st is not None and not list(st)
    r = await a.iq("set", f"<query xmlns='{NS_PRIVATE}'><storage xmlns='storage:bookmarks'>"
                          "<conference jid='room@muc.localhost' name='Room'/></storage></query>")
    assert r.get("type") == "result"
    r = await a.iq("get", f"<query xmlns='{NS_PRIVATE}'><storage xmlns='storage:bookmarks'/></query>")
    conf = r.find(f".//{{storage:bookmarks}}conference")
    assert conf is not None and conf.get("name") == "Room"
    r = await a.iq("get", f"<query xmlns='{NS_PRIVATE}'><x xmlns='jabber:iq:private'/></query>")
    assert stanza_error(r) == "not-acceptable"
    b = await peer(server, "bob", presence=False)
    r = await b.iq("get", f"<query xmlns='{NS_PRIVATE}'><storage xmlns='storage:bookmarks'/></query>",
                   to="alice@localhost")
    assert stanza_error(r) == "forbidden"
    await a.close()
    await b.close()


async def test_private_storage_is_bounded_per_account(server):
    """At most 64 distinct elements per account: the 65th new one is `not-acceptable` (as
    an element too large); replacing one it holds still works."""
    a = await peer(server, "alice", presence=False)
    many = "".join(f"<prefs xmlns='urn:test:private:{i}'><n>{i}</n></prefs>" for i in range(64))
    r = await a.iq("set", f"<query xmlns='{NS_PRIVATE}'>{many}</query>")
    assert r.get("type") == "result"
    r = await a.iq("set", f"<query xmlns='{NS_PRIVATE}'><prefs xmlns='urn:test:private:64'/></query>")
    assert stanza_error(r) == "not-acceptable"
    r = await a.iq("get", f"<query xmlns='{NS_PRIVATE}'><prefs xmlns='urn:test:private:64'/></query>")
    assert not list(r.find(".//{urn:test:private:64}prefs")), "nothing was stored"
    r = await a.iq("set", f"<query xmlns='{NS_PRIVATE}'><prefs xmlns='urn:test:private:7'>"
                          "<n>again</n></prefs></query>")
    assert r.get("type") == "result"
    await a.close()


async def test_last_activity(server):
    await make_mutual(server, "alice", "bob")
    a = await peer(server, "alice")
    a.presence(type_="unavailable", extra="<status>gone fishing</status>")
    await a.sync()
    await a.close()
    b = await peer(server, "bob")
    r = await b.iq("get", f"<query xmlns='{NS_LAST}'/>", to="alice@localhost")
    q = r.find(tag(NS_LAST, "query"))
    assert q is not None and int(q.get("seconds")) >= 0 and q.text == "gone fishing"
    c = await peer(server, "carol")
    r = await c.iq("get", f"<query xmlns='{NS_LAST}'/>", to="alice@localhost")
    assert stanza_error(r) == "forbidden", "not subscribed"
    r = await c.iq("get", f"<query xmlns='{NS_LAST}'/>", to="localhost")
    assert int(r.find(tag(NS_LAST, "query")).get("seconds")) >= 0, "server uptime"
    # §3: an online resource's idle time. The server refuses a stranger itself (the client
    # never sees the query); a subscribed contact's query reaches the client.
    a = await peer(server, "alice", "desk")
    r = await c.iq("get", f"<query xmlns='{NS_LAST}'/>", to="alice@localhost/desk")
    assert stanza_error(r) == "forbidden", "a stranger asking an online resource"
    b.send(f"<iq type='get' id='idle1' to='alice@localhost/desk'><query xmlns='{NS_LAST}'/></iq>")
    await a.until(lambda e: local(e) == "iq" and e.get("id") == "idle1", "bob's query")
    assert not [e for e in a.seen if local(e) == "iq" and e.get("from", "").startswith("carol@")]
    await a.close()
    await b.close()
    await c.close()


async def test_offline_respects_no_store(server):
    """XEP-0334 `<no-store/>`: not stored; with a body the sender learns it was not delivered."""
    a = await peer(server, "alice")
    a.send("<message to='carol@localhost' type='chat' id='ns'><body>volatile</body>"
           "<no-store xmlns='urn:xmpp:hints'/></message>")
    await a.sync()
    err = a.take(lambda e: e.get("id") == "ns")
    assert err and stanza_error(err[0]) == "service-unavailable"
    c = await peer(server, "carol")
    await asyncio.sleep(0.3)
    await c.sync()
    assert not c.take(is_msg("volatile"))
    await a.close()
    await c.close()


# ---- XEP-0115 entity capabilities, as the server caches them -----------------------------------

NS_CAPS = "http://jabber.org/protocol/caps"
NS_TUNE = "http://jabber.org/protocol/tune"


def caps_ver(features: list[str]) -> str:
    """XEP-0115 §5.1 sha-1 `ver` for one identity client/pc and `features`."""
    import base64
    import hashlib
    s = "client/pc//<" + "".join(f + "<" for f in sorted(features))
    return base64.b64encode(hashlib.sha1(s.encode()).digest()).decode()


async def answer_disco(p: Peer, features: list[str]) -> bool:
    """Answers the server's disco#info query about `p`'s caps, if one came."""
    await p.sync()
    asked = p.take(lambda e: local(e) == "iq" and e.get("type") == "get"
                   and e.find(tag(NS_DISCO_INFO, "query")) is not None)
    for iq in asked:
        node = iq.find(tag(NS_DISCO_INFO, "query")).get("node")
        feats = "".join(f"<feature var={quoteattr(f)}/>" for f in features)
        p.send(f"<iq type='result' id={quoteattr(iq.get('id'))} to={quoteattr(iq.get('from'))}>"
               f"<query xmlns='{NS_DISCO_INFO}' node={quoteattr(node)}>"
               f"<identity category='client' type='pc'/>{feats}</query></iq>")
    return bool(asked)


async def test_a_legacy_caps_answer_does_not_poison_a_hashed_announcement(server):
    """XEP-0115 §5.4: a `ver` announced with a hash is trusted only once an answer hashes to
    it. carol announces bob's client's node and ver *without* a hash and answers that it
    wants no tune notifications; bob then announces the same node and ver with
    hash='sha-1': the server must ask bob (not reuse carol's unverifiable answer), and bob
    gets alice's tune (XEP-0163 +notify)."""
    await make_mutual(server, "alice", "bob")
    node = "https://client.example/caps"
    honest = ["http://jabber.org/protocol/caps", NS_TUNE + "+notify"]
    ver = caps_ver(honest)
    carol = await peer(server, "carol", "mallory", presence=False)
    carol.presence(extra=f"<c xmlns='{NS_CAPS}' node='{node}' ver='{ver}'/>")
    for _ in range(20):
        if await answer_disco(carol, ["http://jabber.org/protocol/caps"]):
            break
    else:
        raise AssertionError("the server never asked carol about her caps")
    await carol.sync()
    a = await peer(server, "alice", "desk")
    b = await peer(server, "bob", "phone", presence=False)
    b.presence(extra=f"<c xmlns='{NS_CAPS}' hash='sha-1' node='{node}' ver='{ver}'/>")
    asked = False
    for _ in range(10):
        asked = await answer_disco(b, honest) or asked
        if asked:
            break
    assert asked, "the server reused carol's answer for bob's hashed ver instead of asking him"
    a.send("<iq type='set' id='tune1'><pubsub xmlns='http://jabber.org/protocol/pubsub'>"
           f"<publish node='{NS_TUNE}'><item><tune xmlns='{NS_TUNE}'><title>Song</title>"
           "</tune></item></publish></pubsub></iq>")
    await b.until(lambda e: local(e) == "message"
                  and e.find(f".//{{{NS_TUNE}}}title") is not None, "the tune at bob")
    for p in (a, b, carol):
        await p.close()


async def test_an_oversized_caps_answer_is_not_cached(server):
    """Audit 37 L1: the caps cache is server-wide and long-lived, so an answer listing more
    features than any real client (here 300, each ~60 bytes) is not cached: announcing the
    same legacy node#ver again makes the server ask again. Before the fix it was kept
    whole, and one account could fill the cache with megabytes of features."""
    carol = await peer(server, "carol", "big", presence=False)
    node, ver = "https://big.example/caps", "v1"
    big = [f"urn:example:feature:{j}:xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" for j in range(300)]
    carol.presence(extra=f"<c xmlns='{NS_CAPS}' node='{node}' ver='{ver}'/>")
    for _ in range(20):
        if await answer_disco(carol, big):
            break
    else:
        raise AssertionError("the server never asked carol about her caps")
    await carol.sync()
    asked_again = False
    for _ in range(10):
        await asyncio.sleep(0.2)
        carol.presence(extra=f"<c xmlns='{NS_CAPS}' node='{node}' ver='{ver}'/>")
        if await answer_disco(carol, big):
            asked_again = True
            break
    assert asked_again, "the oversized caps answer was cached"
    await carol.close()


# ---- audit 36: stored requests, directed presence, limits, errors to the bare JID ----------

async def test_stored_requests_reach_a_resource_that_asks_for_the_roster_after_its_presence(
        server):
    """RFC 6121 §3.1.3: a stored subscription request is delivered "when the contact next has
    an available resource" that is interested — also when the client sends its initial
    presence before it asks for the roster (RFC 6120 allows either order): it comes after the
    roster result, once."""
    a = await peer(server, "alice")
    a.presence("carol@localhost", "subscribe")
    await a.sync()
    c = await peer(server, "carol", roster=False)
    assert not c.take(is_presence("subscribe", "alice@localhost"))
    await c.roster()
    await c.until(is_presence("subscribe", "alice@localhost"), "the stored request")
    await asyncio.sleep(0.3)
    await c.sync()
    assert len(c.take(is_presence("subscribe", "alice@localhost"))) == 1
    # Asking again is not a first time: nothing more.
    await c.roster()
    await c.sync()
    assert not c.take(is_presence("subscribe", "alice@localhost"))
    for p in (a, c):
        await p.close()


async def test_directed_presence_before_initial_presence_gets_its_unavailable(server):
    """RFC 6121 §4.6: whoever was sent directed presence hears `unavailable` when the session
    ends — also a subscriber, when the session never sent broadcast presence (its
    unavailable broadcast reaches nobody)."""
    b, c = await peer(server, "bob"), await peer(server, "carol")
    c.presence("bob@localhost", "subscribe")
    await c.sync()
    await b.until(is_presence("subscribe", "carol@localhost"), "the request")
    b.presence("carol@localhost", "subscribed")
    await b.sync()
    await c.sync()
    c.take(lambda e: True)
    b2 = await peer(server, "bob", "quiet", presence=False)
    b2.presence("carol@localhost", extra="<show>dnd</show>")
    await b2.sync()
    await c.until(is_presence(None, b2.jid), "the directed presence")
    await b2.close()
    await c.until(is_presence("unavailable", b2.jid), "its unavailable")
    for p in (b, c):
        await p.close()


async def test_roster_and_directed_presence_limits_hold_for_every_way_in(server_factory):
    """`[im.roster] max_items` bounds what a subscription request or a pre-approval adds
    (`resource-constraint` to the session, nothing routed, no push), as it bounds roster
    sets; `[im.presence] max_directed` bounds the entities a session keeps directed presence
    for (RFC 6120 §13.12)."""
    srv = server_factory(im={"roster": {"max_items": 1}, "presence": {"max_directed": 2}})
    a = await peer(srv, "alice")
    r = await a.iq("set", f"<query xmlns='{NS_ROSTER}'><item jid='carol@localhost'/></query>")
    assert r.get("type") == "result"
    await a.sync()
    a.take(lambda e: True)
    for type_, to in (("subscribe", "s1@example.org"), ("subscribed", "p1@example.org")):
        a.presence(to, type_)
        await a.sync()
        err = a.take(lambda e: local(e) == "presence" and e.get("type") == "error")
        assert len(err) == 1, type_
        assert stanza_error(err[0]) == "resource-constraint"
        assert not a.take(is_push()), type_
    assert set(await a.roster()) == {"carol@localhost"}
    for i in range(3):
        a.presence(f"room{i}@conference.localhost/alice")
    await a.sync()
    errors = [e for e in a.seen if local(e) == "presence" and e.get("type") == "error"
              and e.get("from") == "room2@conference.localhost/alice"]
    assert [stanza_error(e) for e in errors] == ["resource-constraint"]
    await a.close()


def roster_set(jid: str, name: str = "", groups: tuple[str, ...] = ()) -> str:
    name_attr = f" name={quoteattr(name)}" if name else ""
    gs = "".join(f"<group>{g}</group>" for g in groups)
    return f"<query xmlns='{NS_ROSTER}'><item jid={quoteattr(jid)}{name_attr}>{gs}</item></query>"


async def test_the_roster_byte_budget_holds_for_every_way_in(server_factory, backend):
    """`[im.roster] max_bytes` bounds what the items of a roster hold — contact JIDs, names
    and group names (fuzz F2: the per-item limits multiplied to gigabytes). A roster set,
    an outbound subscription, a pre-approval or the approval of a stored request (RFC 6121
    §3.1.3) that would add past it gets `resource-constraint` and changes nothing (no push,
    nothing routed); changes that add nothing, removals first, still work, and what a
    removal frees can be used again. The count is derived from the stored roster: a restart
    finds the same."""
    srv = server_factory(backend=backend, im={"roster": {"max_bytes": 1000}})
    a = await peer(srv, "alice")

    async def set_item(jid, name="", groups=()):
        r = await a.iq("set", roster_set(jid, name, groups))
        await a.sync()
        pushes = a.take(is_push(jid))
        return (stanza_error(r) if r.get("type") == "error" else None), len(pushes)

    # 14 + 300 + 100 bytes each: two fit (828), a third of 314 would make 1142.
    for jid in ("a1@example.net", "b1@example.net"):
        assert await set_item(jid, "n" * 300, ("g" * 100,)) == (None, 1)
    assert await set_item("c1@example.net", "n" * 300) == ("resource-constraint", 0)
    # Growing an item past the budget is refused too; shrinking one is not.
    assert await set_item("a1@example.net", "n" * 500, ("g" * 100,)) == ("resource-constraint", 0)
    assert (await a.roster())["a1@example.net"].get("name") == "n" * 300
    assert await set_item("a1@example.net", "n" * 100, ("g" * 100,)) == (None, 1)   # 628
    # A subscription or a pre-approval that would add an item of 382 bytes (the JID).
    long_jid = "x" * 370 + "@example.net"
    for type_ in ("subscribe", "subscribed"):
        a.presence(long_jid, type_)
        await a.sync()
        err = a.take(lambda e: local(e) == "presence" and e.get("type") == "error")
        assert [stanza_error(e) for e in err] == ["resource-constraint"], type_
        assert not a.take(is_push()), type_
    assert set(await a.roster()) == {"a1@example.net", "b1@example.net"}
    # A removal always works, and what it frees takes the third item (528).
    r = await a.iq("set", f"<query xmlns='{NS_ROSTER}'><item jid='b1@example.net' "
                          "subscription='remove'/></query>")
    assert r.get("type") == "result"
    assert await set_item("c1@example.net", "n" * 300) == (None, 1)
    await a.close()

    srv.restart()
    a = await peer(srv, "alice")
    # 528 stored: 473 more would make 1001, 472 make exactly 1000.
    assert await set_item("d1@example.net", "n" * 459) == ("resource-constraint", 0)
    assert await set_item("d1@example.net", "n" * 458) == (None, 1)
    # Bob's request is stored and delivered (a request is no item), but approving it would
    # add bob@localhost: refused until an item makes room.
    b = await peer(srv, "bob")
    b.presence("alice@localhost", "subscribe")
    await b.sync()
    await a.until(is_presence("subscribe", "bob@localhost"), "bob's request")
    a.presence("bob@localhost", "subscribed")
    await a.sync()
    err = a.take(lambda e: local(e) == "presence" and e.get("type") == "error")
    assert [stanza_error(e) for e in err] == ["resource-constraint"]
    assert not a.take(is_push("bob@localhost"))
    r = await a.iq("set", f"<query xmlns='{NS_ROSTER}'><item jid='d1@example.net' "
                          "subscription='remove'/></query>")
    assert r.get("type") == "result"
    a.presence("bob@localhost", "subscribed")
    await a.sync()
    assert item_state(await a.roster(), "bob@localhost") == ("from", False, False)
    await b.until(is_presence("subscribed", "alice@localhost"), "alice's approval")
    for p in (a, b):
        await p.close()


async def test_a_subscription_error_reaches_the_account(server):
    """A subscription request goes out from the bare JID (§3.1.2), so the error that answers
    it — here the server's own `remote-server-not-found` for a domain it cannot reach — comes
    back to the bare JID and is delivered to the account's available resources."""
    a = await peer(server, "alice")
    a.presence("nobody@nonexistent.invalid", "subscribe")
    await a.until(lambda e: local(e) == "presence" and e.get("type") == "error",
                  "the error", timeout=15)
    err = next(e for e in a.seen if local(e) == "presence" and e.get("type") == "error")
    assert err.get("from") == "nobody@nonexistent.invalid"
    assert stanza_error(err) == "remote-server-not-found"
    await a.close()


async def test_outbound_presence_to_a_blocked_jid_is_refused(server):
    """XEP-0191 §3.3: the user's server "MUST NOT route the stanza" to a blocked JID and
    returns `not-acceptable` with `<blocked/>` — presence of every kind included."""
    a, b = await peer(server, "alice"), await peer(server, "bob")
    r = await a.iq("set", f"<block xmlns='{NS_BLOCKING}'><item jid='bob@localhost'/></block>")
    assert r.get("type") == "result"
    await b.sync()
    b.take(lambda e: True)
    for to, type_ in ((b.jid, None), ("bob@localhost", "subscribe"),
                      ("bob@localhost", "unsubscribed")):
        a.presence(to, type_)
        await a.sync()
        err = a.take(lambda e: local(e) == "presence" and e.get("type") == "error")
        assert len(err) == 1, (to, type_)
        e = err[0].find(tag(NS_CLIENT, "error"))
        assert e.find(tag("urn:ietf:params:xml:ns:xmpp-stanzas", "not-acceptable")) is not None
        assert e.find(tag(NS_BLOCKING_ERRORS, "blocked")) is not None
    await b.sync()
    assert not [e for e in b.seen if local(e) == "presence"], "nothing reached bob"
    for p in (a, b):
        await p.close()


async def test_a_stored_request_keeps_only_what_a_client_shows(server):
    """RFC 6121 §3.1.3 stores a request until it is answered; what is kept of it is its
    `<status/>` and XEP-0172 `<nick/>` (within 4 KiB), not whatever else its sender put in
    (up to its stanza limit), which every login would be sent again."""
    a, b = await peer(server, "alice"), await peer(server, "bob")
    a.presence("carol@localhost", "subscribe",
               extra="<status>let me in</status><nick xmlns='http://jabber.org/protocol/nick'>"
                     f"Al</nick><x xmlns='urn:example:junk'>{'j' * 20000}</x>")
    b.presence("carol@localhost", "subscribe", extra=f"<status>{'s' * 8000}</status>")
    for p in (a, b):
        await p.sync()
    c = await peer(server, "carol")
    await c.until(is_presence("subscribe", "bob@localhost"), "bob's request")
    await c.until(is_presence("subscribe", "alice@localhost"), "alice's request")
    got = c.take(is_presence("subscribe", "alice@localhost"))[0]
    assert got.findtext(tag(NS_CLIENT, "status")) == "let me in"
    assert got.findtext("{http://jabber.org/protocol/nick}nick") == "Al"
    assert got.find("{urn:example:junk}x") is None
    got = c.take(is_presence("subscribe", "bob@localhost"))[0]
    assert list(got) == []
    for p in (a, b, c):
        await p.close()


async def test_a_stored_request_drops_its_attributes_too(server):
    """Audit 37 L7: the stored request is rebuilt from its `from`, `to` and `type` with its
    status, so a huge `id` or unknown attribute (here 20 KB) is not stored and replayed at
    every login; the whole stored stanza stays within 4 KiB."""
    a = await peer(server, "alice")
    a.send(f"<presence to='carol@localhost' type='subscribe' id='{'q' * 12000}' "
           f"foo='{'f' * 8000}'><status>hi</status></presence>")
    await a.sync()
    c = await peer(server, "carol")
    await c.until(is_presence("subscribe", "alice@localhost"), "alice's request")
    got = c.take(is_presence("subscribe", "alice@localhost"))[0]
    assert got.findtext(tag(NS_CLIENT, "status")) == "hi"
    assert got.get("foo") is None
    assert len(ET.tostring(got)) < 4096, len(ET.tostring(got))
    for p in (a, c):
        await p.close()
