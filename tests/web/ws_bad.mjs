// Bad input over Rookery's WebSocket endpoint (RFC 7395, RFC 6455), with the `ws` client,
// driven by tests/test_web.py. Environment: URL (ws://…/xmpp-websocket), DOMAIN.
// Each case checks the HTTP status, close code or stream error the server must answer with;
// prints one JSON line per case and exits non-zero on the first wrong answer.
import { WebSocket } from "ws";

const { URL, DOMAIN } = process.env;
const TIMEOUT_MS = 10_000;
const OPEN = `<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='${DOMAIN}' version='1.0'/>`;

function fail(why) {
  console.log(JSON.stringify({ failed: why }));
  process.exit(1);
}

// Opens a WebSocket and collects what happens: the HTTP refusal, the messages, the close.
function session({ protocols = ["xmpp"], origin, send = [] }) {
  return new Promise((resolve) => {
    const ws = new WebSocket(URL, protocols, origin ? { origin } : {});
    const got = { status: null, protocol: null, messages: [], code: null };
    const timer = setTimeout(() => {
      ws.terminate();
      resolve({ ...got, timeout: true });
    }, TIMEOUT_MS);
    ws.on("unexpected-response", (_req, res) => {
      got.status = res.statusCode;
      clearTimeout(timer);
      resolve(got);
    });
    ws.on("error", () => {});
    ws.on("open", () => {
      got.protocol = ws.protocol;
      for (const m of send) ws.send(m);
    });
    ws.on("message", (data, isBinary) => got.messages.push(isBinary ? "<binary>" : String(data)));
    ws.on("close", (code) => {
      got.code = code;
      clearTimeout(timer);
      resolve(got);
    });
  });
}

function check(name, ok, got) {
  console.log(JSON.stringify({ case: name, ok, got }));
  if (!ok) fail(name);
}

const streamError = (got, condition) =>
  got.messages.some((m) => m.includes("<stream:error") && m.includes(`<${condition}`)) &&
  got.messages.at(-1)?.startsWith("<close");

// A good start, to know the endpoint works: <open/> answered, features without STARTTLS
// (WebSocket cannot upgrade), PLAIN offered on loopback, SCRAM too.
{
  const got = await session({ send: [OPEN, "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"] });
  const features = got.messages.find((m) => m.startsWith("<stream:features"));
  check(
    "open-features-close",
    got.protocol === "xmpp" &&
      got.messages[0]?.startsWith("<open") &&
      features !== undefined &&
      features.includes("xmlns:stream=") &&
      !features.includes("starttls") &&
      features.includes(">PLAIN<") &&
      features.includes(">SCRAM-SHA-256<") &&
      got.messages.at(-1)?.startsWith("<close") &&
      got.code === 1000,
    got,
  );
}

for (const [name, protocols] of [["no-subprotocol", []], ["wrong-subprotocol", ["chat"]]]) {
  const got = await session({ protocols });
  check(name, got.status === 400, got);
}

{
  const got = await session({ origin: "https://evil.example" });
  check("foreign-origin", got.status === 403, got);
}

{
  const got = await session({ send: [OPEN, Buffer.from("<presence/>")] });
  check("binary-frame", got.code === 1003, got);
}

{
  // Beyond the stanza limit (256 KiB): refused by the WebSocket layer, never buffered.
  const got = await session({ send: [OPEN, `<message><body>${"x".repeat(300 * 1024)}</body></message>`] });
  check("oversize-message", got.code === 1009, got);
}

{
  // Within the WebSocket limit but beyond the pre-authentication element limit (8 KiB).
  const got = await session({ send: [OPEN, `<message><body>${"x".repeat(20 * 1024)}</body></message>`] });
  check("pre-auth-limit", streamError(got, "policy-violation") && got.code === 1000, got);
}

for (const [name, garbage, condition] of [
  ["garbage-after-open", "hello, world", "not-well-formed"],
  ["incomplete-element", "<message><body>", "not-well-formed"],
  // A TCP stream close is no element either (RFC 7395 §3.3.3: <close/> ends the stream).
  ["tcp-stream-close", "</stream:stream>", "not-well-formed"],
  // A TCP stream header is no RFC 7395 message (any stream error will do).
  ["tcp-stream-header", "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>", ""],
]) {
  const got = await session({ send: [OPEN, garbage] });
  check(name, streamError(got, condition), got);
}

{
  // Something else than <open/> first: the stream needs its header.
  const got = await session({ send: ["<presence xmlns='jabber:client'/>"] });
  check("no-open", streamError(got, "bad-format"), got);
}

console.log(JSON.stringify({ done: true }));
process.exit(0);
