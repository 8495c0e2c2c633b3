//! A command that runs too long is killed, with everything it started.
//!
//! `cargo run --example exec_timeout`

use std::time::{Duration, Instant};

use child_process as cp;

#[tokio::main]
async fn main() -> cp::Result<()> {
    let start = Instant::now();
    // The shell starts a background `sleep` that holds stdout open: Node's
    // exec would kill only the shell; here the whole process group goes.
    let result = cp::exec("echo working; sleep 60 & sleep 60")
        .timeout(Duration::from_millis(200))
        .await;
    match result {
        Err(err @ cp::Error::Timeout { .. }) => {
            println!("{err}");
            println!(
                "stdout so far: {:?}",
                String::from_utf8_lossy(&err.output().unwrap().stdout)
            );
            println!("returned after {:?}", start.elapsed());
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    Ok(())
}
