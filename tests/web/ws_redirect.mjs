// RFC 7395 §3.6.1 see-other-uri, driven by tests/test_web.py: the server answers <open/>
// with <close see-other-uri='…'/> and closes. Environment: URL, DOMAIN, EXPECT (the URI).
import { WebSocket } from "ws";

const { URL, DOMAIN, EXPECT } = process.env;
const ws = new WebSocket(URL, ["xmpp"]);
const messages = [];
const timer = setTimeout(() => {
  console.log(JSON.stringify({ failed: "timeout", messages }));
  process.exit(1);
}, 10_000);
ws.on("open", () =>
  ws.send(`<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='${DOMAIN}' version='1.0'/>`),
);
ws.on("message", (data) => messages.push(String(data)));
ws.on("close", (code) => {
  clearTimeout(timer);
  const ok =
    messages.length === 1 &&
    [`see-other-uri="${EXPECT}"`, `see-other-uri='${EXPECT}'`].some((a) => messages[0].includes(a));
  console.log(JSON.stringify({ ok, code, messages }));
  process.exit(ok && code === 1000 ? 0 : 1);
});
