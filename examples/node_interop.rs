//! Rust and Node.js talking over Node's own IPC channel, both ways.
//!
//! `cargo run --example node_interop` (needs `node` in PATH)
//!
//! 1. A Rust parent forks a Node script and exchanges messages with it.
//! 2. A Node parent forks this program (`--worker`, the worker of
//!    `fork_worker.rs`) with `child_process.fork` and gets its answers.

use child_process as cp;
use serde_json::{json, Value};

#[path = "fork_worker.rs"]
#[allow(dead_code)]
mod fork_worker;

const NODE_CHILD: &str = r#"
process.on('message', (msg) => {
  if (msg.cmd === 'bye') { process.disconnect(); return; }
  process.send({ doubled: msg.n * 2, from: 'node ' + process.version });
});
"#;

const NODE_PARENT: &str = r#"
const { fork } = require('child_process');
const worker = process.argv[1];
const child = fork(worker, ['--worker'], { execPath: worker });
let pending = 3;
child.on('message', (done) => {
  console.log(`node parent got: ${JSON.stringify(done)}`);
  if (--pending === 0) child.disconnect();
});
child.on('exit', (code) => console.log(`rust worker exited with ${code}`));
for (let id = 1; id <= 3; id++) child.send({ id, below: id * 1000 });
"#;

#[tokio::main]
async fn main() -> cp::Result<()> {
    if std::env::args().any(|a| a == "--worker") {
        return fork_worker::serve().await;
    }

    // 1. Rust parent, Node child.
    let script = std::env::temp_dir().join(format!("cp-interop-{}.js", std::process::id()));
    std::fs::write(&script, NODE_CHILD)?;
    let mut child = cp::fork(&script).spawn()?;
    for n in [1, 2, 21] {
        child.send(&json!({ "n": n })).await?;
        let reply: Value = child.recv().await?.expect("node replied");
        println!("rust parent got: {reply}");
    }
    child.send(&json!({ "cmd": "bye" })).await?;
    assert_eq!(child.recv::<Value>().await?, None, "node disconnected");
    println!("node child exited with {}", child.wait().await?);
    std::fs::remove_file(&script)?;

    // 2. Node parent, Rust child.
    let me = std::env::current_exe()?;
    let out = cp::exec_file(
        "node",
        ["-e", NODE_PARENT, me.to_str().expect("UTF-8 path")],
    )
    .text()
    .await?;
    println!("{out}");
    Ok(())
}
