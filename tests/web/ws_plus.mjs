// SCRAM -PLUS over WebSocket (RFC 7395) with the RFC 9266 `tls-exporter` channel binding,
// computed by an independent TLS stack: node's OpenSSL, through
// `tls.TLSSocket#exportKeyingMaterial` (Python's ssl cannot export keying material). The SCRAM
// (RFC 5802), XEP-0474 and HT (XEP-0484 FAST) client sides are written here with node's crypto.
// Driven by tests/test_web_plus.py. Environment: URL (wss://… or ws://…/xmpp-websocket),
// DOMAIN, USERNAME, PASSWORD.
//
// Prints one JSON line per step; the test judges them. Always:
//   {step: "features", tls, exporter, mechanisms, channel_bindings, sasl2, fast}
// and, when the stream offers SCRAM-SHA-256-PLUS and the client has an exporter:
//   {step: "plus"}        RFC 6120 SASL with the right binding: outcome, server signature
//                         verified, then a stream restart and a resource bound;
//   {step: "plus-wrong"}  the same with a wrong binding: the outcome (a <failure/>);
//   {step: "sasl2-plus"}  SASL2 with the right binding, XEP-0474 `h=` checked against the
//                         features, asking for an HT-SHA-256-EXPR token;
//   {step: "fast-expr"}   a new connection logging in with that token over HT-SHA-256-EXPR;
//   {step: "fast-expr-other"}  the token with the binding of another connection.
// Exits non-zero only when the script itself fails (timeout, unexpected element).
import crypto from "node:crypto";
import { DOMParser } from "@xmldom/xmldom";
import { WebSocket } from "ws";

const { URL, DOMAIN, USERNAME, PASSWORD } = process.env;
const TIMEOUT_MS = 15_000;
const DEVICE = "node-plus";
const NS = {
  framing: "urn:ietf:params:xml:ns:xmpp-framing",
  sasl: "urn:ietf:params:xml:ns:xmpp-sasl",
  sasl2: "urn:xmpp:sasl:2",
  cb: "urn:xmpp:sasl-cb:0",
  fast: "urn:xmpp:fast:0",
  bind: "urn:ietf:params:xml:ns:xmpp-bind",
};
const OPEN = `<open xmlns='${NS.framing}' to='${DOMAIN}' version='1.0'/>`;

const step = (name, data = {}) => console.log(JSON.stringify({ step: name, ...data }));

/// One WebSocket stream: its messages parsed as elements, in order, and the TLS exporter.
class Stream {
  static open() {
    return new Promise((resolve, reject) => {
      const s = new Stream();
      s.ws = new WebSocket(URL, ["xmpp"], { rejectUnauthorized: false });
      s.ws.on("upgrade", (res) => {
        const sock = res.socket;
        s.tls = typeof sock.getProtocol === "function" ? sock.getProtocol() : null;
        // RFC 9266: 32 bytes, label EXPORTER-Channel-Binding, no context (TLS 1.3 only).
        s.exporter =
          s.tls === "TLSv1.3" ? sock.exportKeyingMaterial(32, "EXPORTER-Channel-Binding") : null;
        // RFC 5929 tls-server-end-point: SHA-256 of the server's certificate (the test
        // server's is ECDSA P-256 with SHA-256).
        const raw = s.tls ? sock.getPeerCertificate().raw : null;
        s.endPoint = raw ? sha256(raw) : null;
      });
      s.ws.on("message", (data) => s.push(String(data)));
      s.ws.on("close", () => s.push(null));
      s.ws.on("error", reject);
      s.ws.on("open", () => resolve(s));
    });
  }

  constructor() {
    this.queue = [];
    this.waiting = null;
  }

  push(text) {
    const el = text === null ? null : new DOMParser().parseFromString(text, "text/xml").documentElement;
    if (this.waiting) {
      const w = this.waiting;
      this.waiting = null;
      w(el);
    } else {
      this.queue.push(el);
    }
  }

  send(text) {
    this.ws.send(text);
  }

  next() {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("timeout waiting for the server")), TIMEOUT_MS);
      this.waiting = (el) => {
        clearTimeout(timer);
        resolve(el);
      };
    });
  }

  /// Sends <open/>, returns the <stream:features/> that follow it.
  async features() {
    this.send(OPEN);
    const open = await this.next();
    if (open?.localName !== "open") throw new Error(`expected <open/>, got ${open}`);
    const f = await this.next();
    if (f?.localName !== "features") throw new Error(`expected features, got ${f}`);
    return f;
  }

  close() {
    this.ws.close();
  }
}

const children = (el, name, ns) =>
  el ? Array.from(el.childNodes).filter((n) => n.nodeType === 1 && n.localName === name && n.namespaceURI === ns) : [];
const child = (el, name, ns) => children(el, name, ns)[0];
const texts = (els) => els.map((e) => e.textContent.trim());

function describe(features) {
  const sasl2 = child(features, "authentication", NS.sasl2);
  const fast = child(child(sasl2, "inline", NS.sasl2), "fast", NS.fast);
  return {
    mechanisms: texts(children(child(features, "mechanisms", NS.sasl), "mechanism", NS.sasl)),
    channel_bindings: children(child(features, "sasl-channel-binding", NS.cb), "channel-binding", NS.cb).map(
      (e) => e.getAttribute("type"),
    ),
    sasl2: texts(children(sasl2, "mechanism", NS.sasl2)),
    fast: texts(children(fast, "mechanism", NS.fast)),
  };
}

// ---- SCRAM-SHA-256-PLUS (RFC 5802, RFC 9266) --------------------------------------------

const b64 = (b) => Buffer.from(b).toString("base64");
const hmac = (key, data) => crypto.createHmac("sha256", key).update(data).digest();
const sha256 = (data) => crypto.createHash("sha256").update(data).digest();

class Scram {
  constructor(cbData, cbType = "tls-exporter") {
    this.cbData = cbData;
    this.gs2 = `p=${cbType},,`;
    this.first = `n=${USERNAME},r=${crypto.randomBytes(18).toString("base64")}`;
  }

  clientFirst() {
    return this.gs2 + this.first;
  }

  /// The client-final message for `serverFirst`; keeps what verifying the server needs.
  clientFinal(serverFirst) {
    const attrs = Object.fromEntries(serverFirst.split(",").map((a) => [a[0], a.slice(2)]));
    this.attrs = attrs;
    const salted = crypto.pbkdf2Sync(PASSWORD, Buffer.from(attrs.s, "base64"), Number(attrs.i), 32, "sha256");
    const clientKey = hmac(salted, "Client Key");
    const withoutProof = `c=${b64(Buffer.concat([Buffer.from(this.gs2), this.cbData]))},r=${attrs.r}`;
    const authMessage = `${this.first},${serverFirst},${withoutProof}`;
    const signature = hmac(sha256(clientKey), authMessage);
    const proof = Buffer.from(clientKey.map((b, i) => b ^ signature[i]));
    this.serverSignature = hmac(hmac(salted, "Server Key"), authMessage);
    return `${withoutProof},p=${b64(proof)}`;
  }

  verify(serverFinal) {
    return serverFinal === `v=${b64(this.serverSignature)}`;
  }
}

const text = (el) => Buffer.from(el.textContent.trim(), "base64").toString();

/// RFC 6120 SASL with SCRAM-SHA-256-PLUS and `cbData`; returns the outcome element, the
/// server signature's check, and the client.
async function saslPlus(s, cbData, cbType) {
  const scram = new Scram(cbData, cbType);
  s.send(`<auth xmlns='${NS.sasl}' mechanism='SCRAM-SHA-256-PLUS'>${b64(scram.clientFirst())}</auth>`);
  const challenge = await s.next();
  if (challenge?.localName !== "challenge") return { outcome: challenge };
  s.send(`<response xmlns='${NS.sasl}'>${b64(scram.clientFinal(text(challenge)))}</response>`);
  const outcome = await s.next();
  return { outcome, verified: outcome?.localName === "success" && scram.verify(text(outcome)) };
}

const outcomeOf = (el) => ({
  outcome: el?.localName ?? "closed",
  condition: el?.localName === "failure" ? Array.from(el.childNodes).find((n) => n.nodeType === 1)?.localName : undefined,
});

/// SCRAM-SHA-256-PLUS on a new stream, with the binding of type `cbType` that `cbOf` makes
/// of that stream.
async function plus(cbOf, cbType) {
  const s = await Stream.open();
  await s.features();
  const { outcome, verified } = await saslPlus(s, cbOf(s), cbType);
  const result = { ...outcomeOf(outcome), verified };
  if (outcome?.localName === "success") {
    await s.features();
    s.send(`<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='${NS.bind}'><resource>plus</resource></bind></iq>`);
    const iq = await s.next();
    result.jid = child(child(iq, "bind", NS.bind), "jid", NS.bind)?.textContent;
  }
  s.close();
  return result;
}

/// XEP-0474 (0.4.0+): SHA-256 of the sorted offered mechanisms joined by U+001E, then
/// U+001F and the sorted channel bindings joined by U+001E.
function ssdp(offer) {
  let s = [...offer.mechanisms].sort().join("\x1e");
  if (offer.channel_bindings.length) s += `\x1f${[...offer.channel_bindings].sort().join("\x1e")}`;
  return b64(sha256(s));
}

async function sasl2Plus() {
  const s = await Stream.open();
  const offer = describe(await s.features());
  const scram = new Scram(s.exporter);
  s.send(
    `<authenticate xmlns='${NS.sasl2}' mechanism='SCRAM-SHA-256-PLUS'>` +
      `<initial-response>${b64(scram.clientFirst())}</initial-response>` +
      `<user-agent id='${DEVICE}'><software>ws_plus.mjs</software></user-agent>` +
      `<request-token xmlns='${NS.fast}' mechanism='HT-SHA-256-EXPR'/></authenticate>`,
  );
  const challenge = await s.next();
  if (challenge?.localName !== "challenge") return { ...outcomeOf(challenge) };
  s.send(`<response xmlns='${NS.sasl2}'>${b64(scram.clientFinal(text(challenge)))}</response>`);
  const outcome = await s.next();
  const result = { ...outcomeOf(outcome), ssdp: scram.attrs.h === ssdp(offer) };
  if (outcome?.localName === "success") {
    result.verified = scram.verify(text(child(outcome, "additional-data", NS.sasl2)));
    result.jid = child(outcome, "authorization-identifier", NS.sasl2)?.textContent;
    result.token = child(outcome, "token", NS.fast)?.getAttribute("token");
  }
  s.close();
  return result;
}

/// XEP-0484 FAST with HT-SHA-256-EXPR: `authcid NUL HMAC(token, "Initiator" || cb-data)`;
/// the server answers `HMAC(token, "Responder" || cb-data)`.
async function fastExpr(token, cbOf) {
  const s = await Stream.open();
  await s.features();
  const cb = cbOf(s);
  const message = Buffer.concat([
    Buffer.from(`${USERNAME}\0`),
    hmac(token, Buffer.concat([Buffer.from("Initiator"), cb])),
  ]);
  s.send(
    `<authenticate xmlns='${NS.sasl2}' mechanism='HT-SHA-256-EXPR'>` +
      `<initial-response>${b64(message)}</initial-response>` +
      `<user-agent id='${DEVICE}'/><fast xmlns='${NS.fast}'/></authenticate>`,
  );
  const outcome = await s.next();
  const result = outcomeOf(outcome);
  if (outcome?.localName === "success") {
    const data = Buffer.from(child(outcome, "additional-data", NS.sasl2).textContent.trim(), "base64");
    result.verified = data.equals(hmac(token, Buffer.concat([Buffer.from("Responder"), cb])));
  }
  s.close();
  return result;
}

const own = (s) => s.exporter;

try {
  const s = await Stream.open();
  const offer = describe(await s.features());
  step("features", { tls: s.tls, exporter: s.exporter !== null, ...offer });
  if (s.exporter && offer.mechanisms.includes("SCRAM-SHA-256-PLUS")) {
    step("plus", await plus(own));
    step("plus-wrong", await plus((t) => Buffer.from(t.exporter.map((b) => b ^ 0x5a))));
    step("plus-end-point", await plus((t) => t.endPoint, "tls-server-end-point"));
    const sasl2 = await sasl2Plus();
    step("sasl2-plus", { ...sasl2, token: sasl2.token !== undefined });
    if (sasl2.token) {
      const token = sasl2.token;
      step("fast-expr", await fastExpr(token, own));
      // A man in the middle's binding: the first stream's, still open.
      step("fast-expr-other", await fastExpr(token, () => s.exporter));
    }
  }
  s.close();
  process.exit(0);
} catch (err) {
  step("error", { error: String(err?.stack ?? err) });
  process.exit(1);
}
