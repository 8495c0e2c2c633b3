//! Stream a child's stdout line by line while it runs.
//!
//! `cargo run --example spawn_lines`

use child_process as cp;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() -> cp::Result<()> {
    let mut child = cp::Command::new("sh")
        .args(["-c", "for i in 1 2 3; do echo line $i; sleep 0.1; done"])
        .stderr(cp::Stdio::inherit())
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    while let Some(line) = lines.next_line().await? {
        println!("got: {line}");
    }
    let status = child.wait().await?;
    println!("exited: {status}");
    Ok(())
}
