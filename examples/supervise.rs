//! A small process manager built on the cluster primary: N workers of any
//! program on one port, replaced when they crash (5 per minute at most per
//! slot), reloaded one by one on SIGHUP without failing a request, logs
//! per worker in a directory, a graceful stop on SIGTERM or Ctrl-C.
//!
//! ```text
//! cargo run --example supervise -- --workers 4 --logs /tmp/logs -- node examples/cluster_app.js
//! cargo run --example supervise -- --workers 4 --listen 0.0.0.0:8080 -- python3 server.py
//! kill -HUP <pid>     # rolling reload
//! ```
//!
//! Node cluster apps share their port through the cluster protocol; other
//! programs get the `--listen` sockets at fd 3 (`LISTEN_FDS`) and should
//! send `READY=1` to `$NOTIFY_SOCKET` (or the primary waits 30 s for them
//! to be ready in a reload).

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use child_process as cp;
use cp::cluster::{Event, Restart};
use tokio::signal::unix::{signal, SignalKind};

struct Options {
    workers: Option<usize>,
    listen: Vec<String>,
    logs: Option<PathBuf>,
    command: Vec<String>,
}

fn options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut o = Options {
        workers: None,
        listen: Vec::new(),
        logs: None,
        command: Vec::new(),
    };
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--workers" => {
                o.workers = Some(value()?.parse().map_err(|e| format!("--workers: {e}"))?)
            }
            "--listen" => o.listen.push(value()?),
            "--logs" => o.logs = Some(value()?.into()),
            "--" => {
                o.command = args.collect();
                break;
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if o.command.is_empty() {
        return Err(
            "usage: supervise [--workers N] [--listen ADDR].. [--logs DIR] -- PROGRAM ARGS.."
                .into(),
        );
    }
    Ok(o)
}

#[tokio::main]
async fn main() -> cp::Result<()> {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("supervise: {e}");
            std::process::exit(2);
        }
    };
    let mut setup = cp::cluster(&o.command[0])
        .args(&o.command[1..])
        .restart(Restart::OnFailure)
        .silent(true);
    if let Some(n) = o.workers {
        setup = setup.workers(n);
    }
    for addr in &o.listen {
        setup = setup.listen_fds(addr.clone());
    }
    if let Some(dir) = &o.logs {
        std::fs::create_dir_all(dir)?;
    }
    let mut primary = setup.start().await?;
    let (mut hup, mut term) = (
        signal(SignalKind::hangup())?,
        signal(SignalKind::terminate())?,
    );
    loop {
        tokio::select! {
            event = primary.next_event() => match event {
                Some(Event::Output { worker, stream, line }) => {
                    log(&o.logs, worker, &format!("{stream}: {line}"));
                }
                Some(Event::Exit { worker, status, expected: false }) => {
                    log(&o.logs, worker, &format!("exited unexpectedly: {status}"));
                }
                Some(Event::GaveUp { slot, crashes, period }) => {
                    eprintln!("supervise: slot {slot} crashed {crashes} times in {period:?}; stopping");
                    break;
                }
                Some(Event::Ready { worker }) => log(&o.logs, worker, "ready"),
                Some(_) => {}
                None => break,
            },
            _ = hup.recv() => {
                eprintln!("supervise: reloading");
                let report = primary.reload().await?;
                match report.failed {
                    None => eprintln!("supervise: reloaded {} workers", report.replaced.len()),
                    Some(why) => eprintln!("supervise: reload stopped: {why}"),
                }
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    let report = primary.shutdown(Duration::from_secs(10)).await?;
    eprintln!("supervise: stopped (drained: {})", report.drained);
    std::process::exit(if report.drained { 0 } else { 1 });
}

/// One line for a worker: to `DIR/worker-N.log`, or to stderr. A log that
/// cannot be written (the directory was removed) is said on stderr; it
/// never stops the supervisor.
fn log(dir: &Option<PathBuf>, worker: u32, text: &str) {
    if let Err(e) = try_log(dir, worker, text) {
        eprintln!("supervise: cannot log for worker {worker}: {e}: {text}");
    }
}

fn try_log(dir: &Option<PathBuf>, worker: u32, text: &str) -> std::io::Result<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let line = format!(
        "{}.{:03} [{worker}] {text}\n",
        now.as_secs(),
        now.subsec_millis()
    );
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(format!("worker-{worker}.log")))?
                .write_all(line.as_bytes())
        }
        None => std::io::stderr().write_all(line.as_bytes()),
    }
}
