//! A worker on another machine, reached through ssh: only stdin and
//! stdout cross, and the channel runs over them. The same program is the
//! worker (`--worker`), so copy it to the host first.
//!
//! ```text
//! cargo run --example ssh_worker -- build-host /usr/local/bin/ssh_worker
//! cargo run --example ssh_worker                # no host: a local shell
//! ```
//!
//! ssh carries the bytes and the authentication; the channel adds none of
//! its own (see docs/gotchas.md, "Which transport"). `-T` keeps ssh from
//! allocating a terminal, which would echo and mangle the lines.

use child_process as cp;
use serde_json::{json, Value};

#[tokio::main]
async fn main() -> cp::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--worker") {
        return worker().await;
    }
    let fork = match args.as_slice() {
        [host, remote_exe] => cp::fork("ssh").args(["-T", host, remote_exe, "--worker"]),
        // No host given: the same through a local shell, which also
        // carries only stdio.
        _ => {
            let me = std::env::current_exe()?;
            cp::fork("sh").args([
                "-c".as_ref(),
                "exec \"$0\" --worker".as_ref(),
                me.as_os_str(),
            ])
        }
    };
    let mut worker = fork.channel_on_stdio().spawn()?;
    for n in 1..=3 {
        worker.send(&json!({ "square": n })).await?;
        let reply: Value = worker.recv().await?.expect("the worker answers");
        println!("{n}² = {} (from {})", reply["result"], reply["host"]);
    }
    worker.disconnect();
    let status = worker.wait().await?;
    println!("worker exited: {status}");
    Ok(())
}

async fn worker() -> cp::Result<()> {
    let mut parent = cp::Channel::from_stdio()?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    while let Some(job) = parent.recv::<Value>().await? {
        let n = job["square"].as_i64().unwrap_or(0);
        // println! would go to stderr now: stdout is the channel.
        parent
            .send(&json!({ "result": n * n, "host": host.trim() }))
            .await?;
    }
    Ok(())
}
