'use strict';
// Spawn + wait `/bin/true`, timed inside Node (startup excluded).
// usage: node spawn.js <spawn|spawn-pipe|spawnSync> <n|serve> [big_mib]
//   spawn       child_process.spawn, stdio 'ignore', await 'exit'
//   spawn-pipe  child_process.spawn, default pipes, await 'exit'
//   spawnSync   child_process.spawnSync, stdio 'ignore'
// big_mib > 0 first allocates and touches that many MiB (Buffer.alloc(.., 1)).
// Prints one JSON line: {"ns_per_op": .., "rss_mib": .., "failures": ..}
// With `serve` instead of <n>: one timed batch per line read on stdin (its
// size), one line {"ns_per_op": .., "failures": ..} written back for each;
// the benchmark pairs these with its own batches (issue 16).
const cp = require('child_process');

const [mode, nArg, bigArg] = process.argv.slice(2);
const n = Number(nArg);
const bigMiB = Number(bigArg || 0);
let hold = null;
if (bigMiB > 0) hold = Buffer.alloc(bigMiB * 1048576, 1);
let failures = 0;

function once(stdio) {
  return new Promise((resolve) => {
    const child = cp.spawn('/bin/true', [], { stdio });
    child.on('error', () => { failures++; resolve(); });
    child.on('exit', (code) => { if (code !== 0) failures++; resolve(); });
  });
}

async function batch(k) {
  if (mode === 'spawnSync') {
    for (let i = 0; i < k; i++) {
      const r = cp.spawnSync('/bin/true', [], { stdio: 'ignore' });
      if (r.status !== 0) failures++;
    }
  } else {
    const stdio = mode === 'spawn-pipe' ? 'pipe' : 'ignore';
    for (let i = 0; i < k; i++) await once(stdio);
  }
}

if (nArg === 'serve') {
  require('./serve.js')(batch, () => {
    const f = failures;
    failures = 0;
    return f;
  });
  return;
}

(async () => {
  await batch(Math.max(3, Math.floor(n / 10))); // warm-up
  failures = 0;
  const t0 = process.hrtime.bigint();
  await batch(n);
  const ns = Number(process.hrtime.bigint() - t0);
  const rss = process.memoryUsage().rss / 1048576;
  console.log(JSON.stringify({ ns_per_op: ns / n, rss_mib: rss, failures, held: hold ? hold.length : 0 }));
})();
