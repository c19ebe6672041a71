// Converse.js in headless Chromium (Debian's, driven by playwright-core: no browser download)
// over Rookery's WebSocket or BOSH endpoint, driven by tests/test_web.py. Environment: CHROMIUM
// (the executable), WS (ws://…/xmpp-websocket) or BOSH (http://…/http-bind), JID, PASSWORD,
// PEER (a contact of JID on TCP that answers every message with "echo: <body>"), SHOT (where
// to save the screenshot).
//
// Converse's files are served from node_modules by a small static server on another port,
// so the page is cross-origin to the endpoint (the test allows its origin).
// Scenario: log in, see PEER online in the roster, send PEER a message from the chat view,
// see the echo rendered, save a screenshot. One JSON line per step; non-zero on failure.
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const { CHROMIUM, WS, BOSH, JID, PASSWORD, PEER, SHOT } = process.env;
const ENDPOINT = BOSH ? `bosh_service_url: ${JSON.stringify(BOSH)}` : `websocket_url: ${JSON.stringify(WS)}`;
const DIST = path.join(path.dirname(fileURLToPath(import.meta.url)), "node_modules/converse.js/dist");
const TIMEOUT_MS = 30_000;
const TYPES = { ".js": "text/javascript", ".css": "text/css", ".json": "application/json",
  ".wasm": "application/wasm", ".svg": "image/svg+xml", ".woff2": "font/woff2", ".png": "image/png" };

function step(name, data = {}) {
  console.log(JSON.stringify({ step: name, ...data }));
}

const page = `<!doctype html>
<html><head><meta charset="utf-8"><title>Converse on Rookery</title>
<link rel="stylesheet" href="/dist/converse.min.css">
<script type="module" src="/dist/converse.min.js"></script></head>
<body class="converse-fullscreen"><script type="module">
converse.plugins.add("rookery-test", {
  initialize() { window.testApi = this._converse.api; },
});
converse.initialize({
  assets_path: "/dist/",
  ${ENDPOINT},
  discover_connection_methods: false,
  jid: ${JSON.stringify(JID)},
  password: ${JSON.stringify(PASSWORD)},
  auto_login: true,
  view_mode: "fullscreen",
  whitelisted_plugins: ["rookery-test"],
  play_sounds: false,
  show_controlbox_by_default: true,
  omemo_default: false,
});
</script></body></html>`;

const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://x");
  if (url.pathname === "/") {
    res.writeHead(200, { "content-type": "text/html" }).end(page);
    return;
  }
  const file = path.join(DIST, path.normalize(url.pathname.replace(/^\/dist\//, "")));
  if (!url.pathname.startsWith("/dist/") || !file.startsWith(DIST) || !fs.existsSync(file)) {
    step("404", { path: url.pathname });
    res.writeHead(404).end();
    return;
  }
  res.writeHead(200, { "content-type": TYPES[path.extname(file)] ?? "application/octet-stream" });
  fs.createReadStream(file).pipe(res);
});
await new Promise((resolve) => server.listen(Number(process.env.PAGE_PORT ?? 0), "127.0.0.1", resolve));
const origin = `http://127.0.0.1:${server.address().port}`;
step("serving", { origin });

const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
let tab;
try {
  tab = await browser.newPage({ viewport: { width: 1100, height: 700 } });
  tab.on("console", (m) => ["error", "warning"].includes(m.type()) && step("console", { type: m.type(), text: m.text().slice(0, 300) }));
  tab.on("pageerror", (e) => step("pageerror", { text: String(e).slice(0, 300) }));
  await tab.goto(origin + "/");
  await tab.waitForFunction(() => window.testApi?.connection?.connected?.(), null, { timeout: TIMEOUT_MS });
  step("connected", { jid: await tab.evaluate(() => window.testApi.user.jid()) });

  await tab.waitForFunction(
    async (peer) => (await window.testApi.contacts.get(peer))?.getStatus() === "online",
    PEER,
    { timeout: TIMEOUT_MS, polling: 250 },
  );
  step("peer-online", { peer: PEER });

  const body = "hello from Converse.js in Chromium";
  await tab.evaluate(async ({ peer, body }) => {
    const chat = await window.testApi.chats.open(peer, {}, true);
    await chat.sendMessage({ body });
  }, { peer: PEER, body });
  step("sent", { body });
  // The echo, as the chat view renders it.
  await tab.waitForFunction((text) => document.body.innerText.includes(text), `echo: ${body}`, {
    timeout: TIMEOUT_MS,
  });
  step("echo-rendered", { text: `echo: ${body}` });
  await tab.screenshot({ path: SHOT });
  step("screenshot", { path: SHOT });
  step("done");
} catch (err) {
  if (tab && SHOT) await tab.screenshot({ path: SHOT }).catch(() => {});
  step("failed", { error: String(err?.stack ?? err) });
  process.exitCode = 1;
} finally {
  await browser.close();
  server.close();
}
