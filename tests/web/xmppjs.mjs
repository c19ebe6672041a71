// xmpp.js (@xmpp/client) over Rookery's WebSocket endpoint (RFC 7395), driven by
// tests/test_web.py. Environment: SERVICE (ws://…/xmpp-websocket), DOMAIN, USERNAME,
// PASSWORD, PEER (a bare JID on TCP that answers every message with "echo: <body>").
//
// Scenario: SCRAM-SHA-1 login, bind, roster get, presence, a message round trip with the
// TCP peer; message carbons (XEP-0280) and client state indication (XEP-0352) with a second
// xmpp.js session of the same account; then the WebSocket is cut, xmpp.js reconnects on a
// new WebSocket and resumes the XEP-0198 session, and a second round trip runs on the
// resumed session.
// Prints one JSON line per step; exits non-zero on the first failure.
import { client, xml } from "@xmpp/client";
import { WebSocket } from "ws";

// Node 20 has no global WebSocket; xmpp.js uses the global one (as in a browser).
globalThis.WebSocket ??= WebSocket;

const { SERVICE, DOMAIN, USERNAME, PASSWORD, PEER } = process.env;
const TIMEOUT_MS = 15_000;

function step(name, data = {}) {
  console.log(JSON.stringify({ step: name, ...data }));
}

function within(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timeout: ${what}`)), TIMEOUT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

let mechanism = null;
function session(resource) {
  return client({
    service: SERVICE,
    domain: DOMAIN,
    resource,
    credentials: async (authenticate, mechanisms) => {
      mechanism = mechanisms.find((m) => m.startsWith("SCRAM-"));
      if (!mechanism) throw new Error(`no SCRAM mechanism offered: ${mechanisms}`);
      await authenticate({ username: USERNAME, password: PASSWORD }, mechanism);
    },
  });
}
const xmpp = session("xmppjs");
xmpp.on("error", (err) => step("client-error", { error: String(err) }));

const received = [];
const waiting = [];
xmpp.on("stanza", (stanza) => {
  if (!stanza.is("message")) return;
  received.push(stanza);
  for (const w of [...waiting]) {
    if (w.pred(stanza)) {
      waiting.splice(waiting.indexOf(w), 1);
      w.resolve(stanza);
    }
  }
});

function nextMessage(pred, what) {
  const seen = received.find(pred);
  if (seen) return Promise.resolve(seen);
  return within(new Promise((resolve) => waiting.push({ pred, resolve })), what);
}

async function roundTrip(body) {
  const bare = (jid) => String(jid).split("/")[0];
  const reply = nextMessage(
    (s) => bare(s.attrs.from) === PEER && s.getChildText("body") === `echo: ${body}`,
    `echo of ${body}`,
  );
  await xmpp.send(xml("message", { to: PEER, type: "chat" }, xml("body", {}, body)));
  await reply;
  step("round-trip", { body });
}

try {
  const online = new Promise((resolve) => xmpp.once("online", resolve));
  await xmpp.start();
  const jid = await within(online, "online");
  step("online", { jid: String(jid), mechanism });
  if (!String(jid).startsWith(`${USERNAME}@${DOMAIN}/`)) throw new Error(`bound ${jid}`);
  if (mechanism !== "SCRAM-SHA-1") throw new Error(`authenticated with ${mechanism}`);

  const roster = await xmpp.iqCaller.request(
    xml("iq", { type: "get" }, xml("query", { xmlns: "jabber:iq:roster" })),
  );
  const items = roster.getChild("query", "jabber:iq:roster").getChildren("item");
  step("roster", { items: items.map((i) => i.attrs.jid) });

  await xmpp.send(xml("presence"));
  await roundTrip("hello from xmpp.js");

  // Carbons and CSI: a second session of the account sends to the peer (this session gets
  // the <sent/> copy) while this one is inactive, then to this session (a message with a
  // body is not held back by CSI).
  await xmpp.iqCaller.request(
    xml("iq", { type: "set" }, xml("enable", { xmlns: "urn:xmpp:carbons:2" })),
  );
  await xmpp.send(xml("inactive", { xmlns: "urn:xmpp:csi:0" }));
  const second = session("second");
  const secondOnline = new Promise((resolve) => second.once("online", resolve));
  await second.start();
  await within(secondOnline, "second online");
  const copy = nextMessage(
    (s) => s.getChild("sent", "urn:xmpp:carbons:2")?.getChild("forwarded", "urn:xmpp:forward:0")
      ?.getChild("message")?.getChildText("body") === "from the second session",
    "the carbon copy",
  );
  await second.send(xml("message", { to: PEER, type: "chat" }, xml("body", {}, "from the second session")));
  await copy;
  step("carbon");
  const direct = nextMessage((s) => s.getChildText("body") === "to the first session", "direct");
  await second.send(xml("message", { to: String(xmpp.jid), type: "chat" }, xml("body", {}, "to the first session")));
  await direct;
  await xmpp.send(xml("active", { xmlns: "urn:xmpp:csi:0" }));
  step("csi");
  await second.stop();

  const sm = xmpp.streamManagement;
  if (!sm.enabled || !sm.id) throw new Error("stream management not enabled");
  const smId = sm.id;
  step("sm-enabled", { id: smId });
  const resumed = within(new Promise((resolve) => sm.once("resumed", resolve)), "resumed");
  // Cut the WebSocket without closing the XMPP stream: the session hibernates on the server
  // and xmpp.js' reconnect module opens a new WebSocket and sends <resume/>.
  xmpp.socket.socket.close();
  await resumed;
  step("resumed", { id: sm.id, same: sm.id === smId });
  await roundTrip("hello again after resumption");

  await xmpp.stop();
  step("done");
  process.exit(0);
} catch (err) {
  step("failed", { error: String(err?.stack ?? err) });
  process.exit(1);
}
