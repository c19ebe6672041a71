// A page on another origin than the server (served here, on PAGE_PORT) using the pubsub API
// in Debian's headless Chromium, driven by tests/test_http_pubsub.py: an EventSource on the
// node's SSE URL, a fetch POST (JSON, with a bearer token: preflighted) and a fetch DELETE
// (preflighted). Every one of them is a CORS request the browser lets through only with the
// server's Access-Control-* answers. Environment: CHROMIUM, BASE (the public listener),
// NODE_PATH (/pubsub/…), TOKEN (read,publish), PAGE_PORT. JSON lines on stdout:
// {step:"serving", origin}, {step:"open"}, {step:"published", status, location},
// {step:"item", id, data}, {step:"retracted", status}, {step:"retract", data}, {step:"done"};
// non-zero exit on failure.
import http from "node:http";
import { chromium } from "playwright-core";

const { CHROMIUM, BASE, NODE_PATH, TOKEN } = process.env;
const TIMEOUT_MS = 60_000;

function step(name, data = {}) {
  console.log(JSON.stringify({ step: name, ...data }));
}

const page = "<!doctype html><html><body>another origin</body></html>";
const server = http.createServer((req, res) => res.writeHead(200, { "content-type": "text/html" }).end(page));
await new Promise((resolve) => server.listen(Number(process.env.PAGE_PORT ?? 0), "127.0.0.1", resolve));
const origin = `http://127.0.0.1:${server.address().port}`;
step("serving", { origin });

const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
try {
  const tab = await browser.newPage();
  tab.on("pageerror", (e) => step("pageerror", { text: String(e).slice(0, 300) }));
  tab.on("console", (m) => m.type() === "error" && step("console", { text: m.text().slice(0, 300) }));
  await tab.goto(origin + "/");
  const steps = await tab.evaluate(async ({ url, token, timeout }) => {
    const out = [];
    const es = new EventSource(url);
    const next = (kind) => new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no ${kind} event`)), timeout);
      es.addEventListener(kind, (e) => { clearTimeout(t); resolve(e); }, { once: true });
    });
    await next("open");
    out.push({ step: "open" });
    const item = next("item");
    const auth = { Authorization: `Bearer ${token}` };
    const posted = await fetch(url + "/items?id=x1", {
      method: "POST", headers: { ...auth, "Content-Type": "application/json" }, body: '{"n":1}',
    });
    out.push({ step: "published", status: posted.status, location: posted.headers.get("Location") });
    const e = await item;
    out.push({ step: "item", id: e.lastEventId, data: e.data });
    const retract = next("retract");
    const deleted = await fetch(url + "/items/x1", { method: "DELETE", headers: auth });
    out.push({ step: "retracted", status: deleted.status });
    out.push({ step: "retract", data: (await retract).data });
    es.close();
    return out;
  }, { url: BASE + NODE_PATH, token: TOKEN, timeout: TIMEOUT_MS });
  for (const s of steps) step(s.step, s);
  step("done");
} catch (err) {
  step("failed", { error: String(err?.stack ?? err) });
  process.exitCode = 1;
} finally {
  await browser.close();
  server.close();
}
