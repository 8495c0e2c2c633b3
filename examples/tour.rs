//! The main job: exec, exec_file and spawn working, end to end.
//!
//! `cargo run --example tour`

use std::time::Duration;

use child_process as cp;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[tokio::main]
async fn main() -> cp::Result<()> {
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
    Ok(())
}
