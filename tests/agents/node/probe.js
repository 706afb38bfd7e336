// Burns CPU in named functions under the real @pyroscope/nodejs agent, then flushes and exits.
//
// Usage: node probe.js <server url> <application name> <tenant> <seconds>
'use strict';

const Pyroscope = require('@pyroscope/nodejs');

function pyrite_probe_fibonacci(n) {
  return n < 2 ? n : pyrite_probe_fibonacci(n - 1) + pyrite_probe_fibonacci(n - 2);
}

function pyrite_probe_busy_loop(rounds) {
  let x = 0;
  for (let i = 0; i < rounds; i++) {
    x = (x * 31 + i) % 1000003;
  }
  return x;
}

async function main() {
  const [url, app, tenant, seconds] = process.argv.slice(2);
  if (seconds === undefined) {
    throw new Error('usage: node probe.js <url> <app> <tenant> <seconds>');
  }
  Pyroscope.init({
    serverAddress: url,
    appName: app,
    tenantID: tenant,
    tags: { agent: 'node' },
    flushIntervalMs: 2000,
    // CPU time next to wall time, so both sample types carry the probe functions.
    wall: { samplingDurationMs: 2000, collectCpuTime: true },
  });
  Pyroscope.start();
  const deadline = Date.now() + Number(seconds) * 1000;
  let sink = 0;
  while (Date.now() < deadline) {
    sink += pyrite_probe_fibonacci(22);
    sink += pyrite_probe_busy_loop(200000);
    // Yield to the event loop so the agent's flush timers run.
    await new Promise((resolve) => setImmediate(resolve));
  }
  // stop() takes the last profiles and uploads them before resolving.
  await Pyroscope.stop();
  console.log('done', sink % 7);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
