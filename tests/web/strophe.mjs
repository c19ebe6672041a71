// Strophe.js over Rookery's BOSH (XEP-0124/0206) or WebSocket (RFC 7395) endpoint, driven
// by tests/test_web.py. Environment: SERVICE (http://…/http-bind or ws://…/xmpp-websocket),
// JID, PASSWORD, PEER (a bare JID on TCP that answers every message with "echo: <body>").
//
// Strophe's Node build brings its DOM (@xmldom/xmldom) and WebSocket (ws) shims; BOSH needs
// XMLHttpRequest, which Node lacks, so a minimal one over node:http is installed here.
// Scenario: login (the strongest SCRAM offered), bind, roster, presence, a message round
// trip with the TCP peer, a clean disconnect. One JSON line per step; non-zero on failure.
import http from "node:http";
import { Strophe, $iq, $msg, $pres } from "strophe.js";

/** Just what Strophe's BOSH transport uses of XMLHttpRequest. */
class NodeXHR {
  readyState = 0;
  status = 0;
  responseText = "";
  responseXML = null;
  onreadystatechange = null;
  #req = null;
  #opts = null;
  #headers = {};
  open(method, url) {
    this.#opts = { method, url };
    this.readyState = 1;
  }
  setRequestHeader(k, v) {
    this.#headers[k] = v;
  }
  getAllResponseHeaders() {
    return "";
  }
  send(body) {
    const { method, url } = this.#opts;
    this.#req = http.request(url, { method, headers: this.#headers, agent: false }, (res) => {
      let data = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (data += c));
      res.on("end", () => {
        this.status = res.statusCode;
        this.responseText = data;
        // As a browser does for a text/xml response (Strophe reads responseXML).
        if (/xml/.test(res.headers["content-type"] ?? "")) {
          this.responseXML = new globalThis.DOMParser().parseFromString(data, "text/xml");
        }
        this.#done();
      });
    });
    this.#req.on("error", () => {
      this.status = 0;
      this.#done();
    });
    this.#req.end(body);
  }
  abort() {
    this.#req?.destroy();
  }
  #done() {
    this.readyState = 4;
    this.onreadystatechange?.();
  }
}
globalThis.XMLHttpRequest = NodeXHR;

const { SERVICE, JID, PASSWORD, PEER } = process.env;
const TIMEOUT_MS = 20_000;

function step(name, data = {}) {
  console.log(JSON.stringify({ step: name, ...data }));
}
function fail(why) {
  step("failed", { error: String(why) });
  process.exit(1);
}
setTimeout(() => fail("timeout"), TIMEOUT_MS * 2).unref();

const conn = new Strophe.Connection(SERVICE);
const statusName = Object.fromEntries(Object.entries(Strophe.Status).map(([k, v]) => [v, k]));

conn.connect(JID, PASSWORD, async (status, condition) => {
  step("status", { status: statusName[status], condition });
  if (status === Strophe.Status.CONNFAIL || status === Strophe.Status.AUTHFAIL) {
    fail(`${statusName[status]} ${condition ?? ""}`);
  }
  if (status === Strophe.Status.DISCONNECTED) {
    step("done");
    process.exit(0);
  }
  if (status !== Strophe.Status.CONNECTED) return;
  try {
    step("online", { jid: conn.jid, mechanism: conn._sasl_mechanism?.mechname });
    const roster = await new Promise((resolve, reject) =>
      conn.sendIQ($iq({ type: "get" }).c("query", { xmlns: "jabber:iq:roster" }), resolve, reject, TIMEOUT_MS),
    );
    step("roster", { items: roster.getElementsByTagName("item").length });
    conn.send($pres());
    const body = `hello from strophe over ${SERVICE.split(":")[0]}`;
    const echoed = new Promise((resolve) => {
      conn.addHandler(
        (msg) => {
          const b = msg.getElementsByTagName("body")[0];
          if (Strophe.getBareJidFromJid(msg.getAttribute("from")) === PEER && b?.textContent === `echo: ${body}`) {
            resolve();
            return false;
          }
          return true;
        },
        null,
        "message",
      );
    });
    conn.send($msg({ to: PEER, type: "chat" }).c("body").t(body));
    await echoed;
    step("round-trip", { body });
    conn.disconnect("bye");
  } catch (e) {
    fail(e?.stack ?? e);
  }
});
