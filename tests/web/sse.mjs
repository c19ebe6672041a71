// A browser EventSource (Debian's headless Chromium, driven by playwright-core) on a pubsub
// node's SSE URL, driven by tests/test_http_pubsub.py. Environment: CHROMIUM (the
// executable), BASE (http://127.0.0.1:<port> of the public listener), NODE_PATH (the node's
// path, /pubsub/…), EXPECT (items to receive before finishing).
//
// The page is one of the server's own, so the EventSource is same-origin. Each
// EventSource event is printed at once as a JSON line: {step:"open"}, {step:"error"},
// {step:"item", id, data}, {step:"reset"}; the test restarts the server in between and
// the browser reconnects by itself, sending Last-Event-ID. Non-zero exit on failure.
import { chromium } from "playwright-core";

const { CHROMIUM, BASE, NODE_PATH } = process.env;
const EXPECT = Number(process.env.EXPECT);
const TIMEOUT_MS = 60_000;

function step(name, data = {}) {
  console.log(JSON.stringify({ step: name, ...data }));
}

const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
try {
  const tab = await browser.newPage();
  let items = 0;
  let finish;
  const finished = new Promise((resolve) => { finish = resolve; });
  await tab.exposeFunction("report", (ev) => {
    step(ev.step, ev);
    if (ev.step === "item" && ++items >= EXPECT) finish();
  });
  tab.on("pageerror", (e) => step("pageerror", { text: String(e).slice(0, 300) }));
  // The node's items (JSON, shown as text) give the page the server's origin.
  await tab.goto(BASE + NODE_PATH + "/items");
  await tab.evaluate((path) => {
    const es = new EventSource(path);
    window.es = es;
    es.onopen = () => window.report({ step: "open" });
    es.onerror = () => window.report({ step: "error", state: es.readyState });
    es.addEventListener("item", (e) => window.report({ step: "item", id: e.lastEventId, data: e.data }));
    es.addEventListener("reset", (e) => window.report({ step: "reset", data: e.data }));
  }, NODE_PATH);
  const timer = setTimeout(() => finish("timeout"), TIMEOUT_MS);
  const why = await finished;
  clearTimeout(timer);
  if (why === "timeout") throw new Error(`only ${items} of ${EXPECT} items in ${TIMEOUT_MS} ms`);
  step("done");
} catch (err) {
  step("failed", { error: String(err?.stack ?? err) });
  process.exitCode = 1;
} finally {
  await browser.close();
}
