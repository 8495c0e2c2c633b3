// A worker whose channel is its stdin and stdout: JSON lines, one per
// message, in any language. These are all the lines it takes in Node; start
// it with `cp::fork("examples/stdio_worker.js").channel_on_stdio()`, or
// through anything that carries stdio (`ssh host node stdio_worker.js`).
// Log to stderr: stdout is the channel.
'use strict';
const readline = require('node:readline');
const send = (msg) => process.stdout.write(JSON.stringify(msg) + '\n');

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const msg = JSON.parse(line);
  send({ echo: msg, pid: process.pid });
});
