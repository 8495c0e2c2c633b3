//! The worker side of `fork_parent`: it takes jobs from its parent over the
//! IPC channel, answers each, and exits when the parent disconnects.
//!
//! Run on its own it explains itself; `fork_parent` and `node_interop`
//! start it (as themselves with `--worker`) through `cp::fork`, and so can a
//! Node parent: `child_process.fork(path, [], { execPath: path })`.

use child_process as cp;
use serde::{Deserialize, Serialize};

/// A job from the parent.
#[derive(Debug, Serialize, Deserialize)]
pub struct Job {
    pub id: u64,
    /// Count the primes below this.
    pub below: u64,
}

/// The answer to one job.
#[derive(Debug, Serialize, Deserialize)]
pub struct Done {
    pub id: u64,
    pub primes: u64,
    pub worker: u32,
}

fn count_primes(below: u64) -> u64 {
    (2..below)
        .filter(|&n| (2..).take_while(|d| d * d <= n).all(|d| n % d != 0))
        .count() as u64
}

/// Serve jobs until the parent disconnects.
pub async fn serve() -> cp::Result<()> {
    let Some(mut parent) = cp::Channel::from_parent()? else {
        eprintln!("no IPC channel: start me with child_process::fork (or Node's fork)");
        std::process::exit(2);
    };
    while let Some(job) = parent.recv::<Job>().await? {
        let primes = count_primes(job.below);
        parent
            .send(&Done {
                id: job.id,
                primes,
                worker: std::process::id(),
            })
            .await?;
    }
    // The parent disconnected: nothing more to do.
    Ok(())
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> cp::Result<()> {
    serve().await
}
