//! The main job: exec, exec_file, spawn and fork working, end to end.
//!
//! `cargo run --example tour`

use std::time::Duration;

use child_process as cp;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

// The fork demo starts this program again as a worker (`--worker`).
#[path = "fork_worker.rs"]
#[allow(dead_code)]
mod fork_worker;

#[tokio::main]
async fn main() -> cp::Result<()> {
    if std::env::args().any(|a| a == "--worker") {
        return fork_worker::serve().await;
    }

    // exec: a command line through /bin/sh -c, output buffered.
    let out = cp::exec("echo hello from the shell; echo and stderr >&2").await?;
    print!("exec stdout: {}", String::from_utf8_lossy(&out.stdout));
    print!("exec stderr: {}", String::from_utf8_lossy(&out.stderr));

    // text(): stdout as a String, trailing newline trimmed.
    let kernel = cp::exec("uname -sr").text().await?;
    println!("kernel: {kernel}");

    // A non-zero exit is an error that says what ran and why it failed.
    let err = cp::exec("echo 'no such target' >&2; exit 2")
        .await
        .unwrap_err();
    println!("error: {err}");

    // A timeout kills the whole process tree.
    let err = cp::exec("sleep 10 & sleep 10")
        .timeout(Duration::from_millis(100))
        .await
        .unwrap_err();
    println!("error: {err}");

    // exec_file: no shell, arguments passed literally.
    let echoed = cp::exec_file("printf", ["%s", "$HOME stays literal"])
        .text()
        .await?;
    println!("exec_file: {echoed}");

    // spawn: the primitive, stdio piped by default.
    let mut child = cp::spawn("sort", ["-r"])?;
    let mut stdin = child.stdin.take().expect("piped");
    stdin.write_all(b"apple\ncherry\nbanana\n").await?;
    drop(stdin);
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    while let Some(line) = lines.next_line().await? {
        println!("spawn (sort -r): {line}");
    }
    println!("sort exited: {}", child.wait().await?);

    // fork: a child with Node's IPC channel (newline-delimited JSON on fd 3).
    let mut worker = cp::fork(std::env::current_exe()?)
        .args(["--worker"])
        .spawn()?;
    worker
        .send(&fork_worker::Job { id: 1, below: 1000 })
        .await?;
    let done: fork_worker::Done = worker.recv().await?.expect("the worker answers");
    println!(
        "fork: worker {} counted {} primes below 1000",
        done.worker, done.primes
    );
    worker.disconnect();
    println!("worker exited: {}", worker.wait().await?);

    // The blocking form, for scripts without a runtime (here inside one,
    // on a blocking thread).
    let user = tokio::task::spawn_blocking(|| cp::exec("id -un").text_sync())
        .await
        .expect("joined")?;
    println!("run_sync: running as {user}");
    Ok(())
}
