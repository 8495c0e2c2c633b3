'use strict';
// Node <-> Node over the child's stdin and stdout pipes: JSON lines, one per
// message, read with `readline` and written with `JSON.stringify(m) + '\n'`
// (what examples/stdio_worker.js does). The peer of our stdio channel rows;
// the workloads and the output are those of ipc.js.
// usage: node stdio.js <oneway|pingpong> <count>
//   oneway    parent writes <count> lines {n: i}; the child counts them and
//             answers {done: count}. Reported as messages/s.
//   pingpong  parent writes {n: i, echo: true}, the child echoes it, <count>
//             times. Reported as round trips/s.
// Writers respect backpressure: every batch of messages ends with one whose
// write callback is awaited before the next batch goes out.
// Prints one JSON line: {"secs": .., "per_sec": .., "mb_per_sec": 0}
const cp = require('child_process');
const readline = require('node:readline');

if (process.argv[2] === 'child') {
  const send = (msg) => process.stdout.write(JSON.stringify(msg) + '\n');
  let expected = 0;
  let got = 0;
  readline.createInterface({ input: process.stdin }).on('line', (line) => {
    const m = JSON.parse(line);
    if (m.start !== undefined) { expected = m.start; got = 0; return; }
    if (m.n !== undefined && m.echo) { send(m); return; }
    got++;
    if (got === expected) send({ done: got });
  });
  // stdin closed (the parent ended it): readline closes and, with nothing
  // left to do, the process exits.
  return;
}

const [kind, countArg] = process.argv.slice(2);
const count = Number(countArg);
const child = cp.spawn(process.execPath, [__filename, 'child'], {
  stdio: ['pipe', 'pipe', 'inherit'],
});
const lines = readline.createInterface({ input: child.stdout });
let onMessage = null;
lines.on('line', (line) => onMessage(JSON.parse(line)));

const send = (m) => child.stdin.write(JSON.stringify(m) + '\n');
const next = () => new Promise((resolve) => { onMessage = resolve; });
const sent = (m) =>
  new Promise((resolve, reject) =>
    child.stdin.write(JSON.stringify(m) + '\n', (e) => (e ? reject(e) : resolve())));

async function streamed(k, make, batch) {
  send({ start: k });
  const done = next();
  for (let i = 0; i < k; i += batch) {
    const end = Math.min(k, i + batch);
    for (let j = i; j < end - 1; j++) send(make(j));
    await sent(make(end - 1));
  }
  const reply = await done;
  if (reply.done !== k) throw new Error(`child counted ${reply.done}, not ${k}`);
}

// Callback style, as in ipc.js: each reply sends the next message from
// inside the 'line' handler.
function pingpong(k) {
  return new Promise((resolve) => {
    let i = 0;
    onMessage = () => {
      i++;
      if (i < k) {
        send({ n: i, echo: true });
      } else {
        resolve();
      }
    };
    send({ n: 0, echo: true });
  });
}

async function run(k) {
  if (kind === 'oneway') return streamed(k, (i) => ({ n: i }), 10000);
  if (kind === 'pingpong') return pingpong(k);
  throw new Error(`unknown workload ${kind}`);
}

(async () => {
  await run(Math.max(1, Math.floor(count / 10))); // warm-up
  const t0 = process.hrtime.bigint();
  await run(count);
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(JSON.stringify({ secs, per_sec: count / secs, mb_per_sec: 0 }));
  child.stdin.end();
})();
