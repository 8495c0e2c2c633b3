//! An unmodified Node cluster app (`examples/cluster_app.js`, which runs
//! under `node` as it is) served under the crate's Rust primary.
//!
//! ```text
//! PORT=8000 cargo run --example cluster_node
//! curl localhost:8000/
//! ```
//!
//! `CLUSTER_WORKERS` sets the worker count (default: one per CPU),
//! `CLUSTER_SHARED=1` shares the listening socket instead of round robin.
//! Ctrl-C or SIGTERM drains the workers and stops.

use std::time::Duration;

use child_process as cp;
use cp::cluster::{Event, Scheduling};

#[tokio::main]
async fn main() -> cp::Result<()> {
    let app = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/cluster_app.js");
    // Under systemd socket activation (a .socket unit, or
    // `systemd-socket-activate -l 8000`), the port comes from systemd.
    let mut setup = cp::cluster(app).socket_activation(true);
    if let Some(n) = std::env::var("CLUSTER_WORKERS")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        setup = setup.workers(n);
    }
    if std::env::var_os("CLUSTER_SHARED").is_some() {
        setup = setup.scheduling(Scheduling::Shared);
    }
    let mut primary = setup.start().await?;
    println!("primary {} is running", std::process::id());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            event = primary.next_event() => match event {
                Some(Event::Listening { worker, address }) => {
                    let pid = primary
                        .workers()
                        .await?
                        .iter()
                        .find(|w| w.id == worker)
                        .map_or(0, |w| w.pid);
                    println!("worker {worker} (pid {pid}) listening on {address}");
                }
                Some(Event::Exit { worker, status, expected }) => {
                    println!("worker {worker} exited: {status} (expected: {expected})");
                }
                Some(_) => {}
                None => return Ok(()),
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    let report = primary.shutdown(Duration::from_secs(10)).await?;
    println!("stopped; drained: {}", report.drained);
    Ok(())
}
