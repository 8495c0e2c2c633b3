'use strict';
// The `serve` mode of the benchmark's scripts (issue 16): the Rust side
// alternates its own batches with Node's, each side timed inside its own
// process, so a slow spell of a shared machine hits both sides of the
// batches it spans.
//
// One batch per line read on stdin (the number of operations); for each,
// one JSON line {"ns_per_op": .., "failures": ..} on stdout. `run(k)` does
// k operations (a promise), `failures()` returns and resets the count of
// failed ones, `done()` runs when stdin ends.
module.exports = function serve(run, failures, done) {
  const rl = require('readline').createInterface({ input: process.stdin });
  let queue = Promise.resolve();
  rl.on('line', (line) => {
    queue = queue.then(async () => {
      const k = Number(line);
      if (!(k > 0)) throw new Error(`bad batch size ${JSON.stringify(line)}`);
      const t0 = process.hrtime.bigint();
      await run(k);
      const ns = Number(process.hrtime.bigint() - t0);
      console.log(JSON.stringify({ ns_per_op: ns / k, failures: failures() }));
    });
  });
  rl.on('close', () => {
    queue.then(() => done && done());
  });
};
