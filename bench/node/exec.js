'use strict';
// exec("echo hello") with the output captured, awaited one after another,
// timed inside Node (startup excluded).
// usage: node exec.js <n|serve>
// Prints one JSON line: {"ns_per_op": .., "failures": ..}
// With `serve`: one timed batch per line read on stdin, as spawn.js.
const cp = require('child_process');

const n = Number(process.argv[2]);
let failures = 0;

function once() {
  return new Promise((resolve) => {
    cp.exec('echo hello', (err, stdout) => {
      if (err || stdout !== 'hello\n') failures++;
      resolve();
    });
  });
}

async function batch(k) {
  for (let i = 0; i < k; i++) await once();
}

if (process.argv[2] === 'serve') {
  require('./serve.js')(batch, () => {
    const f = failures;
    failures = 0;
    return f;
  });
  return;
}

(async () => {
  for (let i = 0; i < Math.max(3, Math.floor(n / 10)); i++) await once(); // warm-up
  failures = 0;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) await once();
  const ns = Number(process.hrtime.bigint() - t0);
  console.log(JSON.stringify({ ns_per_op: ns / n, failures }));
})();
