'use strict';
// Node <-> Node IPC over child_process.fork with `serialization: 'json'`
// (Node's default). The parent times, the child answers.
// usage: node ipc.js <oneway|pingpong|bulk> <count|serve> [size_bytes]
//   oneway    parent sends <count> small messages {n: i}; the child counts
//             them and answers {done: count}. Reported as messages/s.
//   pingpong  parent sends {n: i}, the child echoes it, <count> times.
//             Reported as round trips/s.
//   bulk      parent sends <count> messages {d: <string of size_bytes>};
//             the child answers {done: count}. Reported as payload MB/s.
// Senders respect backpressure: every batch of messages ends with one whose
// send callback is awaited before the next batch goes out.
// Prints one JSON line: {"secs": .., "per_sec": .., "mb_per_sec": ..}
// With `serve` instead of <count>: one child for the whole run and one timed
// batch per line read on stdin (its count), as spawn.js.
const cp = require('child_process');

if (process.argv[2] === 'child') {
  // A split run (benches/compare.rs `split`): the parent is on CPU 0 and
  // this child moves itself to the CPU named here, as the Rust peers do.
  if (process.env.COMPARE_CHILD_CPU !== undefined) {
    cp.execFileSync('taskset', ['-a', '-p', '-c', process.env.COMPARE_CHILD_CPU, String(process.pid)], { stdio: 'ignore' });
  }
  let expected = 0;
  let got = 0;
  process.on('message', (m) => {
    if (m.start !== undefined) { expected = m.start; got = 0; return; }
    if (m.n !== undefined && m.echo) { process.send(m); return; }
    got++;
    if (got === expected) process.send({ done: got });
  });
  process.on('disconnect', () => process.exit(0));
  return;
}

const [kind, countArg, sizeArg] = process.argv.slice(2);
const count = Number(countArg);
const size = Number(sizeArg || 0);
const child = cp.fork(__filename, ['child'], { serialization: 'json' });

const next = () => new Promise((resolve) => child.once('message', resolve));
const sent = (m) => new Promise((resolve, reject) => child.send(m, (e) => (e ? reject(e) : resolve())));

async function streamed(k, make, batch) {
  child.send({ start: k });
  const done = next();
  for (let i = 0; i < k; i += batch) {
    const end = Math.min(k, i + batch);
    for (let j = i; j < end - 1; j++) child.send(make(j));
    await sent(make(end - 1));
  }
  await done;
}

// Callback style: each reply sends the next message from inside the
// 'message' handler (an `await` per round trip measured 3x slower).
function pingpong(k) {
  return new Promise((resolve) => {
    let i = 0;
    const onMessage = () => {
      i++;
      if (i < k) {
        child.send({ n: i, echo: true });
      } else {
        child.removeListener('message', onMessage);
        resolve();
      }
    };
    child.on('message', onMessage);
    child.send({ n: 0, echo: true });
  });
}

async function run(k) {
  if (kind === 'oneway') return streamed(k, (i) => ({ n: i }), 10000);
  if (kind === 'pingpong') return pingpong(k);
  if (kind === 'bulk') {
    const payload = 'x'.repeat(size);
    return streamed(k, () => ({ d: payload }), Math.max(1, Math.floor((1 << 20) / size)));
  }
  throw new Error(`unknown workload ${kind}`);
}

if (countArg === 'serve') {
  require('./serve.js')(run, () => 0, () => child.disconnect());
  return;
}

(async () => {
  await run(Math.max(1, Math.floor(count / 10))); // warm-up
  const t0 = process.hrtime.bigint();
  await run(count);
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(JSON.stringify({ secs, per_sec: count / secs, mb_per_sec: (count * size) / secs / 1e6 }));
  child.disconnect();
})();
