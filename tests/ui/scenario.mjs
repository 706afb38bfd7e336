// Drives Pyrite's web UI in headless Debian Chromium as a person would and prints what each
// step showed, as one JSON object on stdout (tests/ui.rs asserts on it). Any console error or
// page error is recorded in `errors`; a step whose element never appears fails the run.
// Usage: node scenario.mjs <pyrite url> <tenant> <service> <screenshot dir> <download dir>
import { chromium } from "playwright-core";

const [url, tenant, service, shots, downloads] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
const errors = [];
const seen = {};
const timeout = 30000;

function watch(page, name) {
  page.on("pageerror", (error) => errors.push(`${name}: page error: ${error}`));
  page.on("console", (message) => {
    if (message.type() === "error") errors.push(`${name}: console error: ${message.text()}`);
  });
}

async function shot(page, name) {
  await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
}

// What the page shows right now: the status line, the top table, the match share, the URL.
async function view(page) {
  return page.evaluate(() => {
    const total = document.querySelector('[data-testid="flame-total"]');
    const rows = [...document.querySelectorAll('[data-testid="topTable"] [role="row"]')].map((row) =>
      [...row.querySelectorAll('[role="cell"], [role="columnheader"]')].map((cell) => cell.textContent.trim()),
    );
    const share = document.querySelector('[data-testid="match-share"]');
    return {
      url: location.href,
      total: total ? Number(total.dataset.total) : null,
      from: total ? Number(total.dataset.from) : null,
      end: total ? Number(total.dataset.end) : null,
      status: total?.textContent ?? null,
      rows,
      matchShare: share && !share.hidden ? share.textContent : null,
      search: document.querySelector('[data-testid="flame-panel"] input[placeholder="Search..."]')?.value ?? null,
      canvases: document.querySelectorAll('[data-testid="flame-panel"] canvas').length,
      sandwich: Boolean(document.querySelector('[aria-label="Remove sandwich view"]')),
    };
  });
}

async function timeline(page, testId) {
  return page.evaluate((id) => {
    const svg = document.querySelector(`[data-testid="${id}"] svg`);
    return {
      points: JSON.parse(svg.dataset.points),
      start: Number(svg.dataset.start),
      end: Number(svg.dataset.end),
      step: Number(svg.dataset.step),
      axis: [...svg.querySelectorAll(".axis-label")].map((label) => label.textContent),
    };
  }, testId);
}

/** Drags across the timeline `testId` from `a` to `b` (fractions of its width). */
async function drag(page, testId, a, b) {
  const box = await page.locator(`[data-testid="${testId}"] svg`).boundingBox();
  const y = box.y + box.height / 2;
  await page.mouse.move(box.x + box.width * a, y);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * ((a + b) / 2), y, { steps: 4 });
  await page.mouse.move(box.x + box.width * b, y, { steps: 4 });
  await page.mouse.up();
}

const waitForFlame = (page) =>
  page.waitForFunction(
    () => document.querySelector('[data-testid="flame-total"]') && document.querySelectorAll('[data-testid="topTable"] [role="row"]').length > 1,
    null,
    { timeout },
  );

try {
  const context = await browser.newContext({ viewport: { width: 1600, height: 1000 }, acceptDownloads: true });
  const page = await context.newPage();
  watch(page, "main");

  // Landing: the tenant's services, each with its small time series.
  await page.goto(`${url}/?tenant=${encodeURIComponent(tenant)}`);
  await page.waitForSelector('[data-testid="service-card"]', { timeout });
  seen.landing = await page.evaluate(() =>
    [...document.querySelectorAll('[data-testid="service-card"]')].map((card) => ({
      service: card.dataset.service,
      text: card.textContent,
      points: card.querySelector("polyline").getAttribute("points").split(" ").filter(Boolean).length,
    })),
  );
  seen.types = await page.evaluate(() =>
    [...document.querySelectorAll('[data-testid="profile-type"] optgroup')].map((group) => ({
      name: group.label,
      options: [...group.querySelectorAll("option")].map((option) => option.textContent),
    })),
  );
  await shot(page, "01-landing");

  // A service and a preset: the top table holds its top functions.
  await page.click(`[data-testid="service-card"][data-service="${service}"]`);
  await waitForFlame(page);
  await page.click('[data-testid="preset-15m"]');
  await page.waitForFunction(() => new URL(location.href).searchParams.get("from") === "now-15m", null, { timeout });
  await waitForFlame(page);
  seen.flame = await view(page);
  seen.flameTimeline = await timeline(page, "timeline");
  await shot(page, "02-flame-15m");

  // Search: highlighted in the graph, the table narrowed to matches, and the match share shown.
  await page.fill('[data-testid="flame-panel"] input[placeholder="Search..."]', "sha256");
  await page.waitForFunction(() => {
    const share = document.querySelector('[data-testid="match-share"]');
    return share && !share.hidden && share.textContent.includes("%");
  }, null, { timeout });
  await page.waitForFunction(() => new URL(location.href).searchParams.get("search") === "sha256", null, { timeout });
  await page.waitForTimeout(500);
  seen.search = await view(page);
  await shot(page, "03-search");

  // A copied URL opened in a new page shows the same view (window, search, table).
  const copied = page.url();
  const second = await context.newPage();
  watch(second, "copied-url");
  await second.goto(copied);
  await waitForFlame(second);
  await second.waitForFunction(() => {
    const share = document.querySelector('[data-testid="match-share"]');
    return share && !share.hidden && share.textContent.includes("%");
  }, null, { timeout });
  await second.waitForTimeout(500);
  seen.copied = await view(second);
  await shot(second, "04-copied-url");
  await second.close();

  // Sandwich view of the top function: callers above, callees below.
  await page.fill('[data-testid="flame-panel"] input[placeholder="Search..."]', "");
  await page.waitForFunction(() => document.querySelector('[data-testid="match-share"]').hidden, null, { timeout });
  const firstRow = page.locator('[data-testid="topTable"] [role="row"]').nth(1);
  seen.sandwichFunction = (await firstRow.locator('[role="cell"]').nth(1).textContent()).trim();
  await firstRow.hover();
  await firstRow.locator('[aria-label="Show in sandwich view"]').click();
  await page.waitForSelector('[aria-label="Remove sandwich view"]', { timeout });
  seen.sandwich = await view(page);
  await shot(page, "05-sandwich");
  await page.click('[aria-label="Remove sandwich view"]');

  // Exports of the current view: each a download named after the service and window.
  seen.exports = {};
  for (const format of ["svg", "pprof", "folded"]) {
    const [download] = await Promise.all([
      page.waitForEvent("download", { timeout }),
      page.click(`[data-testid="export-${format}"]`),
    ]);
    const path = `${downloads}/${download.suggestedFilename()}`;
    await download.saveAs(path);
    seen.exports[format] = { name: download.suggestedFilename(), path };
  }

  // A wider window, then a drag over its last quarter narrows it.
  await page.click('[data-testid="preset-1h"]');
  await page.waitForFunction(() => new URL(location.href).searchParams.get("from") === "now-1h", null, { timeout });
  await waitForFlame(page);
  seen.hour = await view(page);
  seen.hourTimeline = await timeline(page, "timeline");
  await shot(page, "06-flame-1h");
  await drag(page, "timeline", 0.75, 0.995);
  await page.waitForFunction(() => /^\d+$/.test(new URL(location.href).searchParams.get("from") ?? ""), null, { timeout });
  await page.waitForFunction(
    (previous) => Number(document.querySelector('[data-testid="flame-total"]')?.dataset.total) !== previous,
    seen.hour.total,
    { timeout },
  );
  await waitForFlame(page);
  seen.dragged = await view(page);
  await shot(page, "07-dragged");

  // Comparison: a long baseline window against a short comparison window.
  await page.click('[data-testid="preset-1h"]');
  await page.click('[data-testid="view-diff"]');
  await page.waitForSelector('[data-testid="timeline-baseline"] svg', { timeout });
  await page.waitForSelector('[data-testid="diff-totals"]', { timeout });
  await drag(page, "timeline-baseline", 0.005, 0.6);
  await page.waitForFunction(() => /^\d+$/.test(new URL(location.href).searchParams.get("left_from") ?? ""), null, { timeout });
  await drag(page, "timeline-comparison", 0.85, 0.995);
  await page.waitForFunction(() => /^\d+$/.test(new URL(location.href).searchParams.get("right_from") ?? ""), null, { timeout });
  await page.waitForFunction(() => {
    const totals = document.querySelector('[data-testid="diff-totals"]');
    const params = new URL(location.href).searchParams;
    return totals && document.querySelectorAll('[data-testid="topTable"] [role="row"]').length > 1 && params.get("right_from");
  }, null, { timeout });
  // The table is virtualised: search narrows it to the functions asked about.
  await page.fill('[data-testid="flame-panel"] input[placeholder="Search..."]', "sha256|Fibonacci");
  await page.waitForFunction(() => {
    const share = document.querySelector('[data-testid="match-share"]');
    return share && !share.hidden && share.textContent.includes("comparison");
  }, null, { timeout });
  await page.waitForTimeout(1000);
  seen.diff = {
    ...(await view(page)),
    ...(await page.evaluate(() => {
      const totals = document.querySelector('[data-testid="diff-totals"]');
      return { left: Number(totals.dataset.left), right: Number(totals.dataset.right), totals: totals.textContent };
    })),
  };
  await shot(page, "08-diff");

  // Switching tenant empties every list until the new tenant's arrive (here: none).
  await page.fill('[data-testid="tenant"]', "nobody-here");
  await page.press('[data-testid="tenant"]', "Enter");
  await page.waitForSelector('[data-testid="no-data"]', { timeout });
  seen.otherTenant = await page.evaluate(() => ({
    types: [...document.querySelectorAll('[data-testid="profile-type"] option')].map((o) => o.value).filter(Boolean),
    services: [...document.querySelectorAll('[data-testid="service"] option')].map((o) => o.value).filter(Boolean),
    message: document.querySelector('[data-testid="no-data"]').textContent,
    url: location.href,
  }));
  await shot(page, "09-other-tenant");
} catch (error) {
  errors.push(`scenario failed: ${error.stack || error}`);
} finally {
  await browser.close();
}
console.log(JSON.stringify({ ...seen, errors }));
