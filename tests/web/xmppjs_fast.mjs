// xmpp.js (@xmpp/client 0.14: @xmpp/sasl2, Bind2, FAST with HT-SHA-256-NONE) against
// Rookery's WebSocket endpoint, driven by tests/test_web.py. Environment: SERVICE, DOMAIN,
// USERNAME, PASSWORD, DEVICE (the user-agent id), MODE, TOKEN (JSON, for MODE fast/stale).
//
// MODE=login: SASL2 with the password; xmpp.js asks for a FAST token (it has none) and binds
//   with Bind2 in the same exchange. Prints the token.
// MODE=fast:  a new client with that token and a wrong password: only the token can log it
//   in, in one SASL2 round trip (HT-SHA-256-NONE). Sends a message to itself to prove the
//   session works.
// MODE=stale: the same with a token the server no longer honours: xmpp.js falls back to the
//   (wrong) password, which fails.
// Prints one JSON line per step; exits non-zero on the first failure.
import { client, xml } from "@xmpp/client";
import { WebSocket } from "ws";

globalThis.WebSocket ??= WebSocket;

const { SERVICE, DOMAIN, USERNAME, PASSWORD, DEVICE, MODE, TOKEN } = process.env;
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

const xmpp = client({
  service: SERVICE,
  domain: DOMAIN,
  username: USERNAME,
  password: MODE === "login" ? PASSWORD : "not-the-password",
  resource: "web",
  userAgent: xml("user-agent", { id: DEVICE }, xml("software", {}, "xmpp.js")),
});
// No reconnection: a failed login must fail the run.
xmpp.reconnect.stop();

// The token store of a real client (here: memory, seeded from TOKEN).
let token = TOKEN ? JSON.parse(TOKEN) : null;
const saved = [];
xmpp.fast.saveToken = async (t) => {
  token = t;
  saved.push(t);
};
xmpp.fast.fetchToken = async () => token;
xmpp.fast.deleteToken = async () => {
  token = null;
};

const mechanisms = [];
xmpp.on("send", (el) => {
  if (el.is("authenticate", "urn:xmpp:sasl:2")) mechanisms.push(el.attrs.mechanism);
});
xmpp.on("error", (err) => step("client-error", { error: String(err) }));

try {
  const online = new Promise((resolve) => xmpp.once("online", resolve));
  const failed = new Promise((_, reject) => xmpp.once("error", reject));
  xmpp.start().catch(() => {});
  let jid;
  try {
    jid = await within(Promise.race([online, failed]), "online");
  } catch (err) {
    step("login-failed", { error: String(err), mechanisms });
    if (MODE === "stale") {
      step("done");
      process.exit(0);
    }
    throw err;
  }
  step("online", { jid: String(jid), mechanisms, saved });
  if (MODE === "stale") throw new Error("a stale token and a wrong password logged in");
  // The session works: a message to itself comes back.
  const echo = new Promise((resolve) =>
    xmpp.on("stanza", (s) => {
      if (s.is("message") && s.getChildText("body") === "to myself") resolve();
    }),
  );
  await xmpp.send(xml("message", { to: String(jid), type: "chat" }, xml("body", {}, "to myself")));
  await within(echo, "message to myself");
  step("message");
  if (token) step("token", { token });
  await xmpp.stop();
  step("done");
  process.exit(0);
} catch (err) {
  step("failed", { error: String(err), mechanisms });
  process.exit(1);
}
