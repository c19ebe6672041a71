"""XEP-0050 ad-hoc commands with XEP-0133 service administration, driven by slixmpp's
xep_0050 client: an admin (in `admins`) discovers and runs the commands; anyone else sees
none and gets `forbidden`."""
from __future__ import annotations

import asyncio

from slixmpp.exceptions import IqError

from slix import slix_login
from xmpp_raw import stanza_error

NS = "http://jabber.org/protocol/commands"
ADMIN = "http://jabber.org/protocol/admin"


async def admin_client(srv, user: str):
    c = await slix_login(srv, user, resource="adhoc")
    c.register_plugin("xep_0004")
    c.register_plugin("xep_0050")
    return c


async def run(c, srv, node: str, values: dict | None = None):
    """Runs `node` through slixmpp's command workflow: the form is filled with `values` and
    completed. Returns the final IQ (or raises IqError via the session's error)."""
    done = asyncio.get_running_loop().create_future()

    def on_error(iq, session):
        if not done.done():
            done.set_exception(IqError(iq))

    def on_completed(iq, session):
        if not done.done():
            done.set_result(iq)

    def on_form(iq, session):
        if iq["command"]["status"] == "completed":
            return on_completed(iq, session)
        form = iq["command"]["form"]
        answer = c.plugin["xep_0004"].make_form(ftype="submit")
        answer.add_field(var="FORM_TYPE", ftype="hidden", value=ADMIN)
        for var, value in (values or {}).items():
            answer.add_field(var=var, value=value)
        session["payload"] = answer
        session["next"] = on_completed
        c.plugin["xep_0050"].complete_command(session)

    c.plugin["xep_0050"].start_command(srv.domain, node,
                                       {"next": on_form, "error": on_error})
    return await asyncio.wait_for(done, 10)


def note(iq) -> str:
    return iq["command"].xml.find(f"{{{NS}}}note").text


async def test_admin_runs_the_commands_and_others_are_forbidden(server_factory):
    srv = server_factory(admins=["alice@localhost"])
    alice = await admin_client(srv, "alice")
    bob = await admin_client(srv, "bob")
    try:
        info = await alice.plugin["xep_0030"].get_info(jid=srv.domain)
        assert NS in info["disco_info"]["features"]
        items = await alice.plugin["xep_0050"].get_commands(srv.domain)
        nodes = {i[1] for i in items["disco_items"]["items"]}
        assert f"{ADMIN}#add-user" in nodes and f"{ADMIN}#announce" in nodes
        # Not an admin: no commands listed, and running one is forbidden.
        items = await bob.plugin["xep_0050"].get_commands(srv.domain)
        assert not items["disco_items"]["items"]
        try:
            await run(bob, srv, f"{ADMIN}#get-online-users-list")
            raise AssertionError("a non-admin ran a command")
        except IqError as e:
            assert e.condition == "forbidden"

        iq = await run(alice, srv, f"{ADMIN}#add-user", {
            "accountjid": "dave@localhost", "password": "davepass",
            "password-verify": "davepass"})
        assert iq["command"]["status"] == "completed", iq
        dave = await slix_login(srv, "dave", password="davepass")

        iq = await run(alice, srv, f"{ADMIN}#get-online-users-list")
        users = iq["command"]["form"]["values"]["onlineuserjids"]
        assert {"alice@localhost", "bob@localhost", "dave@localhost"} <= set(users), users

        iq = await run(alice, srv, f"{ADMIN}#user-stats", {"accountjid": "dave@localhost"})
        stats = iq["command"]["form"]["values"]
        assert stats["ipaddresses"] == ["127.0.0.1"], stats

        iq = await run(alice, srv, f"{ADMIN}#announce",
                       {"subject": "Maintenance", "announcement": "Back soon"})
        assert note(iq) == "sent to 3 sessions"
        await bob.inbox.wait(lambda el: el.findtext("{jabber:client}body") == "Back soon",
                             what="the announcement")

        iq = await run(alice, srv, f"{ADMIN}#change-user-password",
                       {"accountjid": "dave@localhost", "password": "newpass"})
        assert iq["command"]["status"] == "completed"
        iq = await run(alice, srv, f"{ADMIN}#end-user-session",
                       {"accountjids": ["dave@localhost"]})
        assert note(iq) == "ended 1 sessions"
        async def kicked():
            while "policy-violation" not in dave.stream_errors:
                await asyncio.sleep(0.05)
        await asyncio.wait_for(kicked(), 10)
        await dave.close()
        dave2 = await slix_login(srv, "dave", password="newpass")
        await dave2.close()

        iq = await run(alice, srv, f"{ADMIN}#delete-user", {"accountjids": ["dave@localhost"]})
        assert note(iq) == "deleted 1 accounts"
        r = srv.user("list")
        assert "dave@" not in r.stdout
    finally:
        await alice.close()
        await bob.close()


def specific(el) -> str | None:
    """The XEP-0050 condition beside the defined one, or None."""
    for c in el.iter():
        if c.tag.startswith(f"{{{NS}}}") and c.tag != f"{{{NS}}}command":
            return c.tag.split("}")[1]
    return None


async def test_user_stats_has_the_xep_0133_node_and_the_old_one_still_runs(server_factory):
    """XEP-0133 §4.11: the node is `#user-stats`; `#get-user-stats` (this server's node
    before) keeps working for scripts."""
    srv = server_factory(admins=["alice@localhost"])
    alice = await admin_client(srv, "alice")
    try:
        items = await alice.plugin["xep_0050"].get_commands(srv.domain)
        nodes = {i[1] for i in items["disco_items"]["items"]}
        assert f"{ADMIN}#user-stats" in nodes and f"{ADMIN}#get-user-stats" not in nodes
        for node in (f"{ADMIN}#user-stats", f"{ADMIN}#get-user-stats"):
            iq = await run(alice, srv, node, {"accountjid": "alice@localhost"})
            assert iq["command"]["form"]["values"]["accountjid"] == "alice@localhost", node
        # A bare domain or another server's account names no account here: bad-request, as
        # for the other commands (it answered with empty statistics).
        for jid in ("localhost", "someone@elsewhere.example"):
            try:
                await run(alice, srv, f"{ADMIN}#user-stats", {"accountjid": jid})
                raise AssertionError(f"{jid}: statistics of no account")
            except IqError as e:
                assert e.condition == "bad-request", (jid, e.condition)
    finally:
        await alice.close()


async def test_execution_errors_are_xep_0050s(server_factory):
    """XEP-0050 "Possible Errors": malformed-action, bad-action, bad-payload,
    bad-sessionid, session-expired; an `<x type='cancel'/>` counts as submitted ("Use of
    Data Forms"); an IQ get runs nothing."""
    srv = server_factory(admins=["alice@localhost"])
    c = await srv.login("alice", "adhoc")
    add = f"{ADMIN}#add-user"

    async def command(attrs: str, inner: str = "", type_: str = "set"):
        return await c.iq(type_, srv.domain,
                          f"<command xmlns='{NS}' node='{add}' {attrs}>{inner}</command>")

    def form(**values) -> str:
        fields = "".join(f"<field var='{k}'><value>{v}</value></field>"
                         for k, v in values.items())
        return (f"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>"
                f"<value>{ADMIN}</value></field>{fields}</x>")

    def cmd(r):
        return r.find(f"{{{NS}}}command")

    try:
        r = await command("action='foo'")
        assert (stanza_error(r), specific(r)) == ("bad-request", "malformed-action")
        first = await command("action='execute'")
        sid = cmd(first).get("sessionid")
        assert cmd(first).get("status") == "executing" and sid
        r = await command(f"sessionid='{sid}' action='next'", form(accountjid="x@localhost"))
        assert (stanza_error(r), specific(r)) == ("bad-request", "bad-action")
        r = await command(f"sessionid='{sid}' action='complete'",
                          form(accountjid="erin@localhost"))
        assert (stanza_error(r), specific(r)) == ("bad-request", "bad-payload"), "no password"
        r = await command(f"sessionid='{sid}' action='complete'",
                          "<x xmlns='jabber:x:data' type='cancel'/>")
        assert (stanza_error(r), specific(r)) == ("bad-request", "bad-payload"), "x cancel"
        r = await command("sessionid='made-up' action='complete'",
                          form(accountjid="erin@localhost", password="pw"))
        assert (stanza_error(r), specific(r)) == ("bad-request", "bad-sessionid")
        # The refused forms left the session open; it completes, and then it is over.
        r = await command(f"sessionid='{sid}' action='complete'",
                          form(accountjid="erin@localhost", password="pw"))
        assert cmd(r).get("status") == "completed", r
        r = await command(f"sessionid='{sid}' action='complete'",
                          form(accountjid="fred@localhost", password="pw"))
        assert (stanza_error(r), specific(r)) == ("not-allowed", "session-expired")
        # Canceled: over as well.
        sid2 = cmd(await command("")).get("sessionid")
        r = await command(f"sessionid='{sid2}' action='cancel'")
        assert cmd(r).get("status") == "canceled"
        r = await command(f"sessionid='{sid2}'", form(accountjid="fred@localhost", password="pw"))
        assert (stanza_error(r), specific(r)) == ("not-allowed", "session-expired")
        # A get runs nothing.
        r = await command("", form(accountjid="gina@localhost", password="pw"), type_="get")
        assert stanza_error(r) == "bad-request"
        assert "gina@" not in srv.user("list").stdout
        assert "fred@" not in srv.user("list").stdout
    finally:
        await c.close()
