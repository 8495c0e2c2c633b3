//! A parallel task runner: each task is a shell command line, run with a
//! timeout; their output is shown live, each line prefixed with the task's
//! number and stream; a summary ends the run. What `make -j`, `npm-run-all`
//! or a CI step runner does, in a few lines.
//!
//! ```sh
//! cargo run --example task_runner -- -j 2 --timeout 5 \
//!     'echo building; sleep 0.2; echo built' \
//!     'echo testing >&2; exit 3' \
//!     'sleep 30'
//! ```
//!
//! Exits 1 if any task failed or timed out. Ctrl-C stops every task (the
//! crate passes it on to their process groups).

use std::sync::Arc;
use std::time::{Duration, Instant};

use child_process as cp;
use futures::StreamExt;
use tokio::sync::Semaphore;

struct Args {
    jobs: usize,
    timeout: Duration,
    tasks: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let (mut jobs, mut timeout, mut tasks) = (2, Duration::from_secs(60), Vec::new());
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "-j" => jobs = value("-j")?.parse().map_err(|e| format!("-j: {e}"))?,
            "--timeout" => {
                let secs: f64 = value("--timeout")?
                    .parse()
                    .map_err(|e| format!("--timeout: {e}"))?;
                timeout = Duration::from_secs_f64(secs);
            }
            _ => tasks.push(arg),
        }
    }
    if tasks.is_empty() {
        return Err("usage: task_runner [-j N] [--timeout SECS] 'command' ...".into());
    }
    Ok(Args {
        jobs: jobs.max(1),
        timeout,
        tasks,
    })
}

/// Runs one task, printing its lines as they come; says how it ended.
async fn run(n: usize, line: String, timeout: Duration) -> (usize, String, Duration, String) {
    let start = Instant::now();
    let outcome = match cp::exec(&line).timeout(timeout).lines() {
        Err(e) => format!("could not start: {e}"),
        Ok(mut lines) => {
            let mut outcome = "ok".to_string();
            while let Some(item) = lines.next().await {
                match item {
                    Ok(l) => println!("[{n}:{}] {}", l.stream(), l.text()),
                    Err(e) if e.is_timeout() => outcome = format!("timed out after {timeout:?}"),
                    Err(e) => match e.exit_status() {
                        Some(status) => outcome = format!("failed ({status})"),
                        None => outcome = format!("failed: {e}"),
                    },
                }
            }
            outcome
        }
    };
    (n, line, start.elapsed(), outcome)
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(why) => {
            eprintln!("{why}");
            std::process::exit(2);
        }
    };
    let slots = Arc::new(Semaphore::new(args.jobs));
    let mut running = Vec::new();
    for (i, task) in args.tasks.into_iter().enumerate() {
        let slots = slots.clone();
        let timeout = args.timeout;
        running.push(tokio::spawn(async move {
            let _slot = slots.acquire_owned().await.expect("never closed");
            run(i + 1, task, timeout).await
        }));
    }
    let mut results = Vec::new();
    for task in running {
        results.push(task.await.expect("a task panicked"));
    }
    println!("--- summary");
    let mut failed = 0;
    for (n, line, took, outcome) in results {
        if outcome != "ok" {
            failed += 1;
        }
        println!("[{n}] {outcome:<24} {:>7.2}s  {line}", took.as_secs_f64());
    }
    std::process::exit(i32::from(failed > 0));
}
