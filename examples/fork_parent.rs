//! Master and workers: fork one worker per CPU, hand out jobs, collect the
//! results, and shut the workers down cleanly.
//!
//! `cargo run --example fork_parent`
//!
//! The workers are this same program started with `--worker` (the code is
//! in `fork_worker.rs`), so one `cargo run` builds everything.

use std::collections::VecDeque;

use child_process as cp;
use tokio::sync::mpsc;

#[path = "fork_worker.rs"]
#[allow(dead_code)]
mod fork_worker;

use fork_worker::{Done, Job};

#[tokio::main]
async fn main() -> cp::Result<()> {
    if std::env::args().any(|a| a == "--worker") {
        return fork_worker::serve().await;
    }
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut jobs: VecDeque<Job> = (0..20)
        .map(|id| Job {
            id,
            below: 20_000 + id * 1_000,
        })
        .collect();
    let total = jobs.len();
    println!("{workers} workers, {total} jobs");

    // Each worker's results come back on one queue; each gets a job as soon
    // as it finishes the previous one.
    let (done_tx, mut done_rx) = mpsc::channel::<(usize, Done)>(workers);
    let mut senders = Vec::new();
    let mut children = Vec::new();
    for w in 0..workers {
        let mut child = cp::fork(std::env::current_exe()?)
            .args(["--worker"])
            .spawn()?;
        let (tx, mut rx) = child.take_channel().expect("forked").split();
        let done_tx = done_tx.clone();
        tokio::spawn(async move {
            while let Ok(Some(done)) = rx.recv::<Done>().await {
                if done_tx.send((w, done)).await.is_err() {
                    break;
                }
            }
        });
        if let Some(job) = jobs.pop_front() {
            tx.send(&job).await?;
        }
        senders.push(tx);
        children.push(child);
    }
    drop(done_tx);

    let mut results = Vec::new();
    while results.len() < total {
        let (w, done) = done_rx.recv().await.expect("a worker died");
        println!(
            "job {:>2}: {:>5} primes (worker pid {})",
            done.id, done.primes, done.worker
        );
        results.push(done);
        if let Some(job) = jobs.pop_front() {
            senders[w].send(&job).await?;
        }
    }

    // Clean shutdown: disconnecting ends each worker's recv loop.
    for tx in &senders {
        tx.disconnect();
    }
    for mut child in children {
        let status = child.wait().await?;
        assert!(status.success(), "worker exited with {status}");
    }
    println!("all {total} jobs done, workers exited cleanly");
    Ok(())
}
