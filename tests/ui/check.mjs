// Opens Pyrite's UI in headless Chromium and prints what a user sees, as JSON on stdout:
// the chosen profile type, the top-table rows, the flame graph SVG's frame names and the
// timeline; without a baseline it then drags across the whole timeline, as a user picking a
// window does, and reports the window and flame graph that gives.
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
  const seen = () => page.evaluate(() => ({
    type: document.querySelector("#type").value,
    status: document.querySelector("#status").textContent,
    headings: [...document.querySelectorAll("#top thead th")].map((th) => th.textContent),
    rows: [...document.querySelectorAll("#top tbody tr")].map((tr) => [...tr.cells].map((td) => td.textContent)),
    frames: [...document.querySelector("#flamegraph").contentDocument.querySelectorAll("g title")].map((t) => t.textContent),
    timeline: {
      points: (document.querySelector("#timeline polyline")?.getAttribute("points") || "").split(" ").filter(Boolean).length,
      total: Number(document.querySelector("#timeline").dataset.total),
      from: Number(document.querySelector("#timeline").dataset.from),
      until: Number(document.querySelector("#timeline").dataset.until),
    },
  }));
  const result = await seen();
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
  let dragged = null;
  if (!baselineFrom) {
    const box = await page.locator("#timeline").boundingBox();
    const before = await page.evaluate(() => document.querySelector("#flamegraph").data);
    await page.mouse.move(box.x + 1, box.y + box.height / 2);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2, { steps: 5 });
    await page.mouse.move(box.x + box.width - 1, box.y + box.height / 2, { steps: 5 });
    await page.mouse.up();
    await page.waitForFunction((previous) => {
      const object = document.querySelector("#flamegraph");
      const doc = object.contentDocument;
      return object.data !== previous && doc && doc.querySelectorAll("g title").length > 0;
    }, before, { timeout: 20000 });
    dragged = { ...(await seen()), from: await page.inputValue("#from"), until: await page.inputValue("#until") };
  }
  console.log(JSON.stringify({ ...result, dragged, errors }));
} finally {
  await browser.close();
}
