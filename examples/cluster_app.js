// An ordinary Node cluster app, unmodified: `node examples/cluster_app.js`
// runs it under Node's own primary; `cargo run --example cluster_node` runs
// the same file under the Rust primary.
'use strict';
const cluster = require('node:cluster');
const http = require('node:http');
const os = require('node:os');

const port = Number(process.env.PORT || 8000);

if (cluster.isPrimary) {
  console.log(`Primary ${process.pid} is running`);
  for (let i = 0; i < os.availableParallelism(); i++) {
    cluster.fork();
  }
  cluster.on('exit', (worker, code, signal) => {
    console.log(`worker ${worker.process.pid} died (${signal || code})`);
  });
} else {
  http
    .createServer((req, res) => {
      res.writeHead(200);
      res.end(`hello world from worker ${cluster.worker.id}\n`);
    })
    .listen(port);
  console.log(`Worker ${process.pid} started`);
  // Leave gracefully on SIGTERM, as a well-behaved app does.
  process.on('SIGTERM', () => cluster.worker.disconnect());
}
