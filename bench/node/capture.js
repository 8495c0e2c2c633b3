'use strict';
// Capture a producer's whole stdout with execFile in buffer mode.
// Run in a fresh node per measurement so maxRSS belongs to this capture.
// usage: node capture.js <expected_bytes> <program> [args...]
// Prints one JSON line: {"secs": .., "len": .., "maxrss_kib": ..}
const cp = require('child_process');

const expected = Number(process.argv[2]);
const [file, ...args] = process.argv.slice(3);
const t0 = process.hrtime.bigint();
cp.execFile(file, args, { encoding: 'buffer', maxBuffer: Infinity }, (err, stdout) => {
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const len = stdout ? stdout.length : 0;
  console.log(JSON.stringify({
    secs,
    len,
    ok: !err && len === expected,
    error: err ? String(err.message).slice(0, 200) : null,
    maxrss_kib: process.resourceUsage().maxRSS,
  }));
});
