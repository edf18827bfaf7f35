// Drives nsqadmin's UI in Debian's headless Chromium through Playwright (playwright-core: no
// browser download, the system /usr/bin/chromium is launched). The Rust test
// (crates/nsqadmin/tests/it/browser.rs) starts the cluster, runs one phase of this script at a
// time, and checks through the daemons' HTTP APIs that the clicks changed the cluster.
//
//   node drive.js <phase> '<json config>'
//   phases: pages (render live data, screenshots), actions (pause, empty, delete, create via
//           the UI, accepting the confirm() dialogs), dead (a killed nsqd is an error row)
//
// Exits 0 after printing "ok <phase>", 1 with the reason otherwise, 2 on its own timeout.
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const { chromium } = require("playwright-core");

const [phase, rawConfig] = process.argv.slice(2);
const cfg = JSON.parse(rawConfig || "{}");
const TIMEOUT_MS = 30000; // per wait: generous, CI runs the whole workspace on 2 cores

setTimeout(() => {
  console.error(`drive.js ${phase}: gave up after 240 s`);
  process.exit(2);
}, 240000).unref();

// Flags that keep Chromium quiet on a machine without network (no update checks, no sync,
// no QUIC probes) and able to run as root in CI.
const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--hide-scrollbars",
];

function check(cond, what) {
  if (!cond) throw new Error(what);
}

async function open(page, url, waitFor) {
  await page.goto(url, { waitUntil: "load", timeout: TIMEOUT_MS });
  if (waitFor) await page.waitForSelector(waitFor, { timeout: TIMEOUT_MS });
}

async function shot(page, name) {
  if (!cfg.shots) return;
  fs.mkdirSync(cfg.shots, { recursive: true });
  await page.screenshot({ path: path.join(cfg.shots, name), fullPage: true });
}

const phases = {
  async pages(page) {
    const b = cfg.base;
    await open(page, `${b}/topics`, "a:text-is('orders')");
    check(await page.isVisible("a:text-is('payments')"), "topics: payments missing");
    check(await page.isVisible("th:text-is('Messages/s')"), "topics: no rate column");
    // The sampler has run: the orders row shows a rate, not a dash.
    const rate = await page.textContent("tr:has(a:text-is('orders')) td.rate");
    check(rate && rate !== "–", `topics: no rate for orders (${rate})`);
    await shot(page, "topics.png");

    await open(page, `${b}/topics/orders`, "a:text-is('billing')");
    check(await page.isVisible("a:text-is('audit')"), "topic: audit channel missing");
    for (const label of ["Pause", "Empty", "Delete"]) {
      check(await page.isVisible(`button:text-is('${label}')`), `topic: no ${label} button`);
    }
    const lines = await page.$$("div.charts svg.spark polyline");
    check(lines.length >= 2, `topic: ${lines.length} sparklines drawn, want 2`);
    check((await page.$$("td.sparkcell svg.spark polyline")).length === 2, "topic: channel rate sparklines");
    for (const n of cfg.nodes) check((await page.textContent("main")).includes(n), `topic: node ${n} missing`);
    // The nodes track e2e latency at p99 and p50: one column each in both tables, a cell per
    // node row, total row and channel row (2 nodes + total, 2 channels: 5 rows x 2).
    check((await page.$$("th:text-is('e2e p99')")).length === 2, "topic: no e2e p99 columns");
    check((await page.$$("th:text-is('e2e p50')")).length === 2, "topic: no e2e p50 columns");
    const e2eCells = await page.$$("td.e2e");
    check(e2eCells.length === 10, `topic: ${e2eCells.length} e2e cells, want 10`);
    await shot(page, "topic.png");

    await open(page, `${b}/topics/orders/billing`, "h2:text-is('Clients')");
    const main = await page.textContent("main");
    check(!main.includes("No clients connected"), "channel: the consumer is not listed");
    check(main.includes(cfg.nodes[0]), "channel: n1 missing");
    check((await page.$$("div.charts svg.spark polyline")).length === 3, "channel: 3 sparklines");
    await shot(page, "channel.png");

    await open(page, `${b}/nodes`, "h1:text-is('Nodes')");
    const nodes = await page.textContent("main");
    for (const n of cfg.nodes) check(nodes.includes(n.split(":")[1]), `nodes: ${n} missing`);
    await shot(page, "nodes.png");

    await open(page, `${b}/nodes/${cfg.nodes[0]}`, "a:text-is('orders')");
    await shot(page, "node.png");

    await open(page, `${b}/lookup`, "h2:text-is('Inactive topics and channels')");
    const lookup = await page.textContent("main");
    check(lookup.includes(cfg.lookupd), "lookup: lookupd address missing");
    check(lookup.includes("dormant") && lookup.includes("later"), "lookup: inactive topic missing");
    await shot(page, "lookup.png");

    await open(page, `${b}/counter`, "#counter[data-count]");
    const first = Number(await page.getAttribute("#counter", "data-count"));
    check(first > 0, `counter: ${first}`);
    await page.waitForFunction(
      (n) => Number(document.querySelector("#counter").getAttribute("data-count")) > n,
      first,
      { timeout: TIMEOUT_MS },
    );
    await page.waitForSelector(".counter-rate:has-text('messages/s')", { timeout: TIMEOUT_MS });
    await shot(page, "counter.png");
  },

  async actions(page) {
    const b = cfg.base;
    const dialogs = [];
    page.on("dialog", (d) => {
      dialogs.push(d.message());
      d.accept();
    });
    const ok = (method, suffix) => (r) =>
      r.request().method() === method && r.url().endsWith(suffix) && r.status() === 200;

    await open(page, `${b}/topics/orders/billing`, "button:text-is('Pause')");
    await Promise.all([
      page.waitForResponse(ok("POST", "/api/topics/orders/billing"), { timeout: TIMEOUT_MS }),
      page.click("button:text-is('Pause')"),
    ]);
    await page.waitForSelector("h1 .badge.paused", { timeout: TIMEOUT_MS });
    await page.waitForSelector("button:text-is('Unpause')", { timeout: TIMEOUT_MS });

    await Promise.all([
      page.waitForResponse(ok("POST", "/api/topics/orders/billing"), { timeout: TIMEOUT_MS }),
      page.click("button:text-is('Empty')"),
    ]);
    await page.waitForFunction(
      () => {
        const total = document.querySelector("tr.total td.num");
        return total && total.textContent === "0";
      },
      null,
      { timeout: TIMEOUT_MS },
    );

    // Policy (nsq-rs): a refused one shows nsqd's reason; a valid one lands on every node.
    await open(page, `${b}/topics/orders/billing`, "button:text-is('Apply policy')");
    await page.fill("textarea.policy-edit", '{"max_attempts":0,"dead_letter_topic":"orders.dead"}');
    await page.click("button:text-is('Apply policy')");
    await page.waitForSelector("div.policy-status:has-text('max_attempts: expected an integer')", { timeout: TIMEOUT_MS });
    await page.fill("textarea.policy-edit", '{"max_attempts":5,"dead_letter_topic":"orders.dead","ttl":"1h"}');
    await Promise.all([
      page.waitForResponse(ok("POST", "/api/topics/orders/billing"), { timeout: TIMEOUT_MS }),
      page.click("button:text-is('Apply policy')"),
    ]);
    await page.waitForSelector("pre.policy:has-text('orders.dead')", { timeout: TIMEOUT_MS });
    await shot(page, "policy.png");

    await open(page, `${b}/topics/payments`, "button:text-is('Delete')");
    await Promise.all([
      page.waitForURL(/\/topics$/, { timeout: TIMEOUT_MS }),
      page.click("button:text-is('Delete')"),
    ]);
    await page.waitForSelector("a:text-is('orders')", { timeout: TIMEOUT_MS });
    check(!(await page.isVisible("a:text-is('payments')")), "payments still listed after delete");

    await open(page, `${b}/lookup`, "form.create");
    await page.fill("form.create input[aria-label=topic]", "from_ui");
    await page.fill("form.create input[aria-label=channel]", "ui_channel");
    await Promise.all([
      page.waitForResponse(ok("POST", "/api/topics"), { timeout: TIMEOUT_MS }),
      page.click("form.create button[type=submit]"),
    ]);
    await page.waitForSelector("td:text-is('from_ui')", { timeout: TIMEOUT_MS });

    const confirms = dialogs.filter((m) => m.startsWith("Are you sure"));
    check(confirms.length === 3, `expected 3 confirm() dialogs, got ${JSON.stringify(dialogs)}`);
  },

  async dead(page) {
    const b = cfg.base;
    await open(page, `${b}/topics/orders`, "tr.error");
    const row = await page.textContent("tr.error");
    check(row.includes(cfg.dead), `error row does not name ${cfg.dead}: ${row}`);
    check((await page.textContent(".alert.warn")).startsWith("WARNING: "), "no WARNING banner");
    check((await page.textContent("main")).includes(cfg.nodes[0]), "the live node is not shown");
    await shot(page, "dead-node.png");
    await open(page, `${b}/nodes`, "tr.error");
    check((await page.textContent("tr.error")).includes(cfg.dead), "nodes: no error row");
  },
};

(async () => {
  const run = phases[phase];
  if (!run) throw new Error(`unknown phase ${phase}`);
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "nsqadmin-e2e-chromium-"));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: cfg.chromium || "/usr/bin/chromium",
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 720 },
    timeout: 60000,
  });
  const errors = [];
  try {
    const page = await ctx.newPage();
    page.on("pageerror", (e) => errors.push(`page error: ${e.message}`));
    page.on("console", (m) => {
      if (m.type() === "error") errors.push(`console error: ${m.text()}`);
    });
    await run(page);
    // A dead node's failed fetches are expected in the "dead" phase only; in "actions", the
    // one refused policy answers 400 on purpose (and must have, exactly once).
    let unexpected = phase === "dead" ? [] : errors;
    if (phase === "actions") {
      const refused = unexpected.filter((e) => e.includes("status of 400"));
      check(refused.length === 1, `expected one refused policy (400), got ${refused.length}`);
      unexpected = unexpected.filter((e) => !e.includes("status of 400"));
    }
    check(unexpected.length === 0, unexpected.join("\n"));
  } finally {
    await ctx.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  console.log(`ok ${phase}`);
})().catch((e) => {
  console.error(`drive.js ${phase} FAILED: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
