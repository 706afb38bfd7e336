// First render of a 16,384-node flame graph in headless Chromium (BENCHMARKS.md "Web UI").
// Pushes a synthetic folded profile (128 functions × 127 callees each, all distinct: 16,385
// nodes with the root) to a running `pyrite serve`, then opens its flame graph RUNS times and
// prints the medians of: navigation → graph painted, and data received → graph painted.
// Usage: node bench.mjs <pyrite url> [runs]
import { chromium } from "playwright-core";

const [url, runsText] = process.argv.slice(2);
const runs = Number(runsText || 7);
const tenant = "ui-bench";
const lines = [];
for (let i = 0; i < 128; i++) for (let j = 0; j < 127; j++) lines.push(`main;f${i};g${i}_${j} ${1 + ((i * 131 + j * 17) % 97)}`);
const now = Math.floor(Date.now() / 1000);
const push = await fetch(`${url}/ingest?name=bench.cpu&format=folded&sampleRate=100&from=${now - 60}&until=${now - 50}`, {
  method: "POST",
  headers: { "X-Scope-OrgID": tenant, "Content-Type": "text/plain" },
  body: lines.join("\n"),
});
if (!push.ok) throw new Error(`push: ${push.status} ${await push.text()}`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
});
const median = (values) => values.sort((a, b) => a - b)[Math.floor(values.length / 2)];
const total = [];
const render = [];
let nodes = 0;
try {
  for (let run = 0; run < runs; run++) {
    const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
    await page.goto(`${url}/?tenant=${tenant}&view=flame&service=bench&from=now-15m&until=now`);
    await page.waitForFunction(() => performance.getEntriesByName("pyrite:flame-painted").length > 0, null, { timeout: 60000 });
    const measured = await page.evaluate(() => {
      const painted = performance.getEntriesByName("pyrite:flame-painted")[0].startTime;
      const data = performance.getEntriesByName("pyrite:flame-data")[0].startTime;
      return { total: painted, render: painted - data, nodes: Number(document.querySelector('[data-testid="flame-panel"]').dataset.nodes) };
    });
    total.push(measured.total);
    render.push(measured.render);
    nodes = measured.nodes;
    await page.close();
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify({ nodes, runs, navigation_to_painted_ms: median(total), data_to_painted_ms: median(render), all_total: total, all_render: render }));
