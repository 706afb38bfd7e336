// Opens Pyrite's UI in headless Chromium and prints what a user sees, as JSON on stdout:
// the chosen profile type, the top-table rows, and the flame graph SVG's frame names.
// Usage: node check.mjs <pyrite url> <tenant> <service> [screenshot.png] [baseline from] [baseline until]
// With a baseline, the page compares the window against it (differential flame graph).
import { chromium } from "playwright-core";

const [url, tenant, service, screenshot, baselineFrom, baselineUntil] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  await page.goto(url);
  await page.fill("#tenant", tenant);
  // Profile types and services load for the default tenant first; reload them for ours.
  await page.evaluate(() => loadTypes());
  await page.waitForFunction(() => document.querySelector("#type").options.length > 0, null, { timeout: 20000 });
  await page.selectOption("#service", service);
  if (baselineFrom) {
    await page.fill("#baseline-from", baselineFrom);
    await page.fill("#baseline-until", baselineUntil);
  }
  await page.click("#show");
  await page.waitForFunction(() => document.querySelectorAll("#top tbody tr").length > 0, null, { timeout: 20000 });
  await page.waitForFunction(() => {
    const doc = document.querySelector("#flamegraph").contentDocument;
    return doc && doc.querySelectorAll("g title").length > 0;
  }, null, { timeout: 20000 });
  const result = await page.evaluate(() => ({
    type: document.querySelector("#type").value,
    status: document.querySelector("#status").textContent,
    headings: [...document.querySelectorAll("#top thead th")].map((th) => th.textContent),
    rows: [...document.querySelectorAll("#top tbody tr")].map((tr) => [...tr.cells].map((td) => td.textContent)),
    frames: [...document.querySelector("#flamegraph").contentDocument.querySelectorAll("g title")].map((t) => t.textContent),
  }));
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify({ ...result, errors }));
} finally {
  await browser.close();
}
