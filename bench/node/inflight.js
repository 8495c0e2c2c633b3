'use strict';
// Start n children at once (`sleep <secs>`, stdio 'ignore'), wait for all.
// usage: node inflight.js <n> <sleep_secs>
// Prints one JSON line with wall time, failures, fds and zombies.
const cp = require('child_process');
const fs = require('fs');

const n = Number(process.argv[2]);
const secs = process.argv[3];
const countFds = () => fs.readdirSync('/proc/self/fd').length;

function zombies() {
  let z = 0;
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(rest[1]) === process.pid && rest[0] === 'Z') z++;
    } catch (_) { /* gone */ }
  }
  return z;
}

const baseFds = countFds();
const t0 = process.hrtime.bigint();
let failures = 0;
const waits = [];
for (let i = 0; i < n; i++) {
  waits.push(new Promise((resolve) => {
    const child = cp.spawn('sleep', [secs], { stdio: 'ignore' });
    child.on('error', () => { failures++; resolve(); });
    child.on('exit', (code) => { if (code !== 0) failures++; resolve(); });
  }));
}
const spawnMs = Number(process.hrtime.bigint() - t0) / 1e6;
const peakFds = countFds();
Promise.all(waits).then(() => {
  const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
  setTimeout(() => {
    console.log(JSON.stringify({
      wall_ms: wallMs, spawn_ms: spawnMs, failures,
      base_fds: baseFds, peak_fds: peakFds, fds_after: countFds(), zombies_after: zombies(),
    }));
  }, 50);
});
