//! The cluster primary (issue 14 §4): the same unmodified Node cluster app
//! (`examples/cluster_app.js`) under Node's own primary, under ours (round
//! robin and shared) and under PM2's cluster mode, side by side in one run.
//!
//! ```sh
//! cargo bench --bench cluster          # ~3 minutes on 2 cores
//! CLUSTER_BENCH_ONLY=node,rr cargo bench --bench cluster
//! CLUSTER_BENCH_SCENARIO=supervisor cargo bench --bench cluster   # ~3 minutes
//! ```
//!
//! `CLUSTER_BENCH_SCENARIO=supervisor` (issue 15) runs, instead of the
//! throughput comparison, two supervisor scenarios under the same load
//! (both modes), and writes the section "Supervisor: reload and crashes
//! (issue 15)" of `bench/RESULTS.md`:
//!
//! - reload: rolling reloads back to back until at least 10,000 requests
//!   were sent during them. Ours: `SIGHUP` to `--primary rr N supervise`,
//!   which calls `primary.reload()` and prints a `reload` line. PM2: `pm2
//!   reload`. Node: its primary is hand-rolled (`NODE_SUPERVISOR`, written
//!   to `/tmp`) since the app's own primary cannot reload.
//! - kill: `SIGKILL` to a random child of the primary (from `/proc`) every
//!   500 ms for 10 s; our primary restarts with `restart_delay(0, 0)`, restarting at once as
//!   Node's hand-rolled primary does, and `crash_window(1000, 60 s)`, PM2 runs with `--max-restarts
//!   1000`, the Node script forks again at once.
//!
//! Failures are split into new connection, kept-alive connection and
//! idle close (EOF or reset before any byte on a reused connection,
//! CLUSTER.md §7); replacement times come from `/proc` (all) and from the
//! primary's timestamped `listening` events (ours, Node). Peers default to
//! `rr,pm2,node` there (`shared` may be added); `CLUSTER_BENCH_WARMUP`,
//! `CLUSTER_BENCH_CONC`, `CLUSTER_BENCH_WORKERS`, `CLUSTER_BENCH_MODES`
//! and `CLUSTER_BENCH_WRITE` apply.
//!
//! Peers, each started once at the beginning and kept up for the whole run
//! (only the one being measured gets traffic):
//!
//! - `node`: `node examples/cluster_app.js`. The app forks
//!   `os.availableParallelism()` workers itself; the bench warns when that
//!   is not `CLUSTER_BENCH_WORKERS`.
//! - `rr`, `shared`: our primary, round robin or `Scheduling::Shared`, run
//!   as a separate process (this binary again, `--primary rr|shared`, which
//!   does what `examples/cluster_node.rs` does with the library built in
//!   the bench profile), so every primary is measured the same way.
//! - `pm2`: `pm2 start examples/cluster_app.js -i N` with a private
//!   `PM2_HOME` under `/tmp`; `pm2` comes from `bench/node/node_modules`
//!   (`npm install --prefix bench/node`), skipped when it is not there.
//!
//! Load: a client in this process (tokio, `CLUSTER_BENCH_CONC` concurrent
//! connections, HTTP/1.1 GET, a 2 s timeout per request covering connect,
//! write and the whole response, no retries). Mode `new`: a new TCP
//! connection per request with `Connection: close`, read to EOF (the
//! dispatch-bound one). Mode `keepalive`: one connection per client, many
//! requests on it; a failure drops that connection and the next request
//! opens a new one. Each run is a warm-up followed by the measured window;
//! a request counts when it starts inside the window. Rounds are
//! interleaved (the peer order rotates every round) and the medians are
//! reported.
//!
//! Primary CPU: utime+stime of the primary process (Node's primary, ours,
//! PM2's God daemon) from `/proc/<pid>/stat`, read at the start and the
//! end of the measured window; workers' CPU likewise over the primary's
//! descendants. Resolution is one clock tick (10 ms).
//!
//! Every process started here is killed at the end, on panic and on
//! SIGINT/SIGTERM/SIGHUP: process groups and all descendants, and
//! `pm2 kill` with the private `PM2_HOME`.
//!
//! The section "Cluster primary (issue 14)" of `bench/RESULTS.md` is
//! replaced (or appended) with the results. Nothing here asserts.
//!
//! Environment knobs (defaults in brackets):
//!
//! - `CLUSTER_BENCH_SECS` [5]: measured seconds per run.
//! - `CLUSTER_BENCH_WARMUP` [1]: warm-up seconds per run.
//! - `CLUSTER_BENCH_ROUNDS` [3]: interleaved rounds.
//! - `CLUSTER_BENCH_CONC` [32]: concurrent client connections.
//! - `CLUSTER_BENCH_WORKERS` [2]: workers for ours and PM2.
//! - `CLUSTER_BENCH_CLIENT_THREADS` [1]: client runtime threads (1: a
//!   current-thread runtime).
//! - `CLUSTER_BENCH_ONLY` [node,rr,shared,pm2]: peers to run.
//! - `CLUSTER_BENCH_MODES` [new,keepalive]: load modes to run.
//! - `CLUSTER_BENCH_WRITE` [1]: `0` leaves `bench/RESULTS.md` alone.
//! - `CLUSTER_BENCH_SCENARIO` [throughput]: `supervisor` for issue 15's
//!   reload and kill scenarios (above).
//! - `NODE` [node]: the node binary (also what our primary runs the app
//!   with, through `PATH`).
//! - `PM2` [bench/node/node_modules/.bin/pm2]: the pm2 CLI.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const APP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/cluster_app.js");
const SECTION: &str = "## Cluster primary (issue 14)";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------
// Our primary, in a process of its own.

fn primary_mode(args: &[String]) {
    let shared = args.first().map(String::as_str) == Some("shared");
    let workers: usize = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(2);
    let supervise = args.get(2).map(String::as_str) == Some("supervise");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    if let Err(e) = rt.block_on(run_primary(shared, workers, supervise)) {
        eprintln!("cluster bench primary: {e}");
        std::process::exit(1);
    }
}

/// What `examples/cluster_node.rs` does, on a multi-thread runtime as
/// `#[tokio::main]` gives it. With `supervise` (the supervisor scenarios):
/// `Restart::OnFailure` with a 10 ms restart delay and a crash window of
/// 1000 per 60 s (so 20 kills in 10 s never make it give up), `SIGHUP`
/// runs `primary.reload()` and prints `reload <t> <ms> replaced=N
/// failed=..`, and every Fork, Ready, Exit, Restarting and GaveUp is
/// printed as `ev <t> ...` with `t` in µs of `CLOCK_MONOTONIC` (the
/// bench's clock too).
async fn run_primary(shared: bool, workers: usize, supervise: bool) -> child_process::Result<()> {
    use child_process::cluster::{Event, Restart, Scheduling};
    let mut setup = child_process::cluster(APP).workers(workers);
    if shared {
        setup = setup.scheduling(Scheduling::Shared);
    }
    if supervise {
        setup = setup
            .restart(Restart::OnFailure)
            .restart_delay(Duration::ZERO, Duration::ZERO)
            .crash_window(1000, Duration::from_secs(60));
    }
    let mut primary = setup.start().await?;
    println!("primary {} is running", std::process::id());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    loop {
        tokio::select! {
            event = primary.next_event() => match event {
                Some(Event::Listening { worker, address }) => {
                    println!("worker {worker} listening on {address}");
                }
                Some(Event::Exit { worker, status, expected }) => {
                    if supervise {
                        println!("ev {} exit {worker} {} {expected}", mono_us(), format!("{status}").replace(' ', "_"));
                    } else {
                        println!("worker {worker} exited: {status} (expected: {expected})");
                    }
                }
                Some(Event::Fork { worker, pid, slot }) if supervise => {
                    println!("ev {} fork {worker} {pid} {slot}", mono_us());
                }
                Some(Event::Ready { worker }) if supervise => {
                    println!("ev {} ready {worker}", mono_us());
                }
                Some(Event::Restarting { slot, delay }) if supervise => {
                    println!("ev {} restarting {slot} {}", mono_us(), delay.as_micros());
                }
                Some(Event::GaveUp { slot, crashes, .. }) if supervise => {
                    println!("ev {} gaveup {slot} {crashes}", mono_us());
                }
                Some(Event::Error { worker, error }) if supervise => {
                    println!("ev {} error {worker:?} {}", mono_us(), format!("{error}").replace('\n', " "));
                }
                Some(_) => {}
                None => return Ok(()),
            },
            _ = hup.recv(), if supervise => {
                // Events queue meanwhile (`reload` and `next_event` both
                // borrow the primary) and are printed after.
                let t0 = Instant::now();
                let line = match primary.reload().await {
                    Ok(r) => format!(
                        "replaced={} failed={}",
                        r.replaced.len(),
                        r.failed.unwrap_or_else(|| "none".into()).replace(' ', "_")
                    ),
                    Err(e) => format!("replaced=0 failed=error:{}", format!("{e}").replace(' ', "_")),
                };
                println!("reload {} {} {line}", mono_us(), t0.elapsed().as_millis());
            }
            _ = term.recv() => break,
        }
    }
    primary.shutdown(Duration::from_secs(2)).await?;
    Ok(())
}

/// µs of `CLOCK_MONOTONIC`: comparable across processes on this machine
/// (Node's `process.hrtime` reads the same clock).
fn mono_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

// ---------------------------------------------------------------------------
// Knobs.

struct Params {
    secs: f64,
    warmup: f64,
    rounds: usize,
    conc: usize,
    workers: usize,
    client_threads: usize,
    only: Vec<Peer>,
    modes: Vec<Mode>,
    write: bool,
    node: String,
    pm2: PathBuf,
    /// `CLUSTER_BENCH_SCENARIO=supervisor`.
    supervise: bool,
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    match std::env::var(key) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{key}={v}: not a valid value")),
        Err(_) => default,
    }
}

impl Params {
    fn from_env() -> Params {
        let supervise = match std::env::var("CLUSTER_BENCH_SCENARIO").as_deref() {
            Err(_) | Ok("throughput") | Ok("") => false,
            Ok("supervisor") => true,
            Ok(other) => panic!("CLUSTER_BENCH_SCENARIO: unknown scenario {other:?}"),
        };
        let only = std::env::var("CLUSTER_BENCH_ONLY")
            .unwrap_or_else(|_| {
                if supervise {
                    "node,rr,pm2"
                } else {
                    "node,rr,shared,pm2"
                }
                .into()
            })
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| match s.trim() {
                "node" => Peer::Node,
                "rr" => Peer::OursRr,
                "shared" => Peer::OursShared,
                "pm2" => Peer::Pm2,
                other => panic!("CLUSTER_BENCH_ONLY: unknown peer {other:?}"),
            })
            .collect();
        let modes = std::env::var("CLUSTER_BENCH_MODES")
            .unwrap_or_else(|_| "new,keepalive".into())
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| match s.trim() {
                "new" => Mode::New,
                "keepalive" => Mode::KeepAlive,
                other => panic!("CLUSTER_BENCH_MODES: unknown mode {other:?}"),
            })
            .collect();
        Params {
            secs: env_or("CLUSTER_BENCH_SECS", 5.0),
            warmup: env_or("CLUSTER_BENCH_WARMUP", 1.0),
            rounds: env_or("CLUSTER_BENCH_ROUNDS", 3),
            conc: env_or("CLUSTER_BENCH_CONC", 32),
            workers: env_or("CLUSTER_BENCH_WORKERS", 2),
            client_threads: env_or("CLUSTER_BENCH_CLIENT_THREADS", 1),
            only,
            modes,
            write: env_or("CLUSTER_BENCH_WRITE", 1) != 0,
            node: std::env::var("NODE").unwrap_or_else(|_| "node".into()),
            pm2: std::env::var_os("PM2")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(MANIFEST_DIR).join("bench/node/node_modules/.bin/pm2")
                }),
            supervise,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Peer {
    Node,
    OursRr,
    OursShared,
    Pm2,
}

impl Peer {
    const ALL: [Peer; 4] = [Peer::Node, Peer::OursRr, Peer::OursShared, Peer::Pm2];

    fn label(self) -> &'static str {
        match self {
            Peer::Node => "Node primary",
            Peer::OursRr => "ours RR",
            Peer::OursShared => "ours shared",
            Peer::Pm2 => "PM2 cluster",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Mode {
    New,
    KeepAlive,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::New => "new connection per request",
            Mode::KeepAlive => "keep-alive",
        }
    }
}

// ---------------------------------------------------------------------------
// Every process we start, and how to get rid of it.

enum Started {
    /// A process leading its own group.
    Process(u32),
    /// A PM2 daemon with its private home.
    Pm2 { bin: PathBuf, home: PathBuf },
}

static STARTED: Mutex<Vec<Started>> = Mutex::new(Vec::new());

fn register(s: Started) {
    STARTED.lock().unwrap_or_else(|e| e.into_inner()).push(s);
}

/// Kill everything we started, with all descendants. Idempotent.
fn cleanup_all() {
    let started: Vec<Started> =
        std::mem::take(&mut *STARTED.lock().unwrap_or_else(|e| e.into_inner()));
    let own_group = unsafe { libc::getpgrp() };
    for s in started.into_iter().rev() {
        match s {
            Started::Process(pid) => kill_tree(pid, own_group),
            Started::Pm2 { bin, home } => {
                let daemon = read_pid(&home.join("pm2.pid"));
                let tree: Vec<u32> = daemon.map(descendants_and_self).unwrap_or_default();
                let mut cmd = Command::new(&bin);
                cmd.arg("kill")
                    .env("PM2_HOME", &home)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                let _ = run_with_timeout(cmd, Duration::from_secs(15));
                for pid in tree {
                    kill_pid_and_group(pid, own_group);
                }
                if home.starts_with("/tmp/") {
                    let _ = std::fs::remove_dir_all(&home);
                }
            }
        }
    }
}

fn kill_tree(root: u32, own_group: libc::pid_t) {
    // Stop the root first so it forks nothing more, then the rest.
    let tree = descendants_and_self(root);
    unsafe { libc::kill(root as libc::pid_t, libc::SIGSTOP) };
    let tree2 = descendants_and_self(root);
    for pid in tree.into_iter().chain(tree2) {
        kill_pid_and_group(pid, own_group);
    }
}

fn kill_pid_and_group(pid: u32, own_group: libc::pid_t) {
    unsafe {
        let pgid = libc::getpgid(pid as libc::pid_t);
        if pgid > 1 && pgid != own_group {
            libc::killpg(pgid, libc::SIGKILL);
        }
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

struct CleanupGuard;

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        cleanup_all();
    }
}

fn install_cleanup_handlers() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        cleanup_all();
    }));
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])
    .expect("signal handlers");
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            eprintln!("cluster bench: signal {sig}, killing what it started");
            cleanup_all();
            std::process::exit(128 + sig);
        }
    });
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `(pid, ppid)` of every process.
fn process_table() -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(fields) = stat_fields(pid) {
            // fields[0] is the state (field 3), fields[1] the ppid.
            if let Some(ppid) = fields.get(1).and_then(|p| p.parse().ok()) {
                out.push((pid, ppid));
            }
        }
    }
    out
}

fn descendants_and_self(root: u32) -> Vec<u32> {
    let table = process_table();
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(
            table
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    out
}

/// The fields of `/proc/<pid>/stat` after the command name (field 3 on).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// utime + stime in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let f = stat_fields(pid)?;
    // utime and stime are fields 14 and 15; f[0] is field 3.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn clk_tck() -> f64 {
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

fn run_with_timeout(mut cmd: Command, limit: Duration) -> std::io::Result<(bool, String)> {
    cmd.stdin(Stdio::null());
    let mut child = cmd.spawn()?;
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            let mut out = String::new();
            if let Some(mut s) = child.stdout.take() {
                let _ = s.read_to_string(&mut out);
            }
            if let Some(mut s) = child.stderr.take() {
                let _ = s.read_to_string(&mut out);
            }
            return Ok((status.success(), out));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok((false, format!("{cmd:?}: timed out after {limit:?}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Starting the peers.

struct Server {
    peer: Peer,
    port: u16,
    /// The primary: Node's, ours, or PM2's God daemon.
    primary: u32,
    /// Kept so it is reaped; killed through `STARTED`.
    _child: Option<Child>,
    /// The primary's stdout lines not read yet (ours and Node's), and
    /// those read while starting.
    lines: Option<mpsc::Receiver<String>>,
    seen: Vec<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("[::]:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Start `cmd` leading a process group of its own, dying with this process
/// (spawn from the main thread only: the death signal follows the thread).
fn spawn_group(cmd: &mut Command) -> std::io::Result<Child> {
    cmd.process_group(0);
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    register(Started::Process(child.id()));
    Ok(child)
}

/// Forward the child's stdout lines to a channel (and keep draining it).
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    rx
}

fn wait_lines(
    rx: &mpsc::Receiver<String>,
    pattern: &str,
    n: usize,
    deadline: Instant,
) -> Result<Vec<String>, String> {
    let mut seen = 0;
    let mut all = Vec::new();
    while seen < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if line.contains(pattern) {
                    seen += 1;
                }
                all.push(line);
            }
            Err(_) => {
                return Err(format!(
                    "saw {seen} of {n} {pattern:?} lines; output: {all:?}"
                ))
            }
        }
    }
    Ok(all)
}

/// One blocking GET answered 200.
fn http_ok(port: u16) -> bool {
    use std::io::Write;
    let Ok(mut s) = std::net::TcpStream::connect_timeout(
        &([127, 0, 0, 1], port).into(),
        Duration::from_millis(500),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    buf.starts_with(b"HTTP/1.1 200")
}

fn wait_http(port: u16, deadline: Instant) -> Result<(), String> {
    while Instant::now() < deadline {
        if http_ok(port) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("port {port} never answered 200"))
}

fn start(peer: Peer, p: &Params) -> Result<Server, String> {
    let port = free_port();
    let deadline = Instant::now() + Duration::from_secs(30);
    let server = match peer {
        Peer::Node => {
            let mut cmd = Command::new(&p.node);
            let n = if p.supervise {
                // The hand-rolled supervisor (see `NODE_SUPERVISOR`)
                // running the app's worker side.
                let script = std::env::temp_dir()
                    .join(format!("cluster-bench-node-sup-{}.js", std::process::id()));
                std::fs::write(&script, NODE_SUPERVISOR).map_err(|e| e.to_string())?;
                cmd.arg(&script).arg(APP).arg(p.workers.to_string());
                p.workers
            } else {
                cmd.arg(APP);
                node_parallelism(p)
            };
            cmd.env("PORT", port.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped());
            let mut child = spawn_group(&mut cmd).map_err(|e| format!("{}: {e}", p.node))?;
            let rx = lines_of(&mut child);
            let seen = wait_lines(&rx, "Worker ", n, deadline)?;
            Server {
                peer,
                port,
                primary: child.id(),
                _child: Some(child),
                lines: Some(rx),
                seen,
            }
        }
        Peer::OursRr | Peer::OursShared => {
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let mut cmd = Command::new(exe);
            cmd.arg("--primary")
                .arg(if peer == Peer::OursShared {
                    "shared"
                } else {
                    "rr"
                })
                .arg(p.workers.to_string())
                .arg(if p.supervise { "supervise" } else { "plain" })
                .env("PORT", port.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped());
            let mut child = spawn_group(&mut cmd).map_err(|e| e.to_string())?;
            let rx = lines_of(&mut child);
            let seen = wait_lines(&rx, " listening on ", p.workers, deadline)?;
            Server {
                peer,
                port,
                primary: child.id(),
                _child: Some(child),
                lines: Some(rx),
                seen,
            }
        }
        Peer::Pm2 => {
            if !p.pm2.exists() {
                return Err(format!(
                    "{} not found (npm install --prefix bench/node pm2)",
                    p.pm2.display()
                ));
            }
            let home = PathBuf::from(format!("/tmp/cluster-bench-pm2-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&home);
            std::fs::create_dir_all(&home).map_err(|e| e.to_string())?;
            register(Started::Pm2 {
                bin: p.pm2.clone(),
                home: home.clone(),
            });
            let mut cmd = Command::new(&p.pm2);
            cmd.args([
                "start",
                APP,
                "-i",
                &p.workers.to_string(),
                "--name",
                "cluster_bench",
            ]);
            if p.supervise {
                // 20 kills in 10 s are more than PM2's default 16
                // unstable restarts allow.
                cmd.args(["--max-restarts", "1000"]);
            }
            cmd.env("PM2_HOME", &home)
                .env("PORT", port.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let (ok, out) =
                run_with_timeout(cmd, Duration::from_secs(30)).map_err(|e| e.to_string())?;
            if !ok {
                return Err(format!("pm2 start failed: {out}"));
            }
            let daemon = read_pid(&home.join("pm2.pid")).ok_or("no pm2.pid")?;
            // Both instances online.
            loop {
                let mut cmd = Command::new(&p.pm2);
                cmd.arg("jlist")
                    .env("PM2_HOME", &home)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null());
                let (_, out) =
                    run_with_timeout(cmd, Duration::from_secs(10)).map_err(|e| e.to_string())?;
                if out.matches("\"status\":\"online\"").count() >= p.workers {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("pm2: instances not online: {out}"));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Server {
                peer,
                port,
                primary: daemon,
                _child: None,
                lines: None,
                seen: Vec::new(),
            }
        }
    };
    wait_http(port, deadline)?;
    // Let every worker finish starting.
    std::thread::sleep(Duration::from_millis(300));
    Ok(server)
}

fn node_parallelism(p: &Params) -> usize {
    Command::new(&p.node)
        .args(["-p", "require('os').availableParallelism()"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(1)
}

// ---------------------------------------------------------------------------
// The load generator.

#[derive(Debug, Clone, Copy)]
enum Fail {
    Timeout,
    Connect,
    Io,
    /// Closed before a whole response.
    Eof,
    Status,
}

#[derive(Default, Clone)]
struct Tally {
    ok: u64,
    fails: HashMap<&'static str, u64>,
    lat_us: Vec<u32>,
    /// Connections opened inside the window.
    conns: u64,
    /// Responses per worker id ("hello world from worker N").
    by_worker: HashMap<u32, u64>,
}

impl Tally {
    fn fail(&mut self, f: Fail) {
        let k = match f {
            Fail::Timeout => "timeout",
            Fail::Connect => "connect",
            Fail::Io => "reset/io",
            Fail::Eof => "eof",
            Fail::Status => "status",
        };
        *self.fails.entry(k).or_default() += 1;
    }

    fn merge(&mut self, o: Tally) {
        self.ok += o.ok;
        self.conns += o.conns;
        self.lat_us.extend(o.lat_us);
        for (k, v) in o.by_worker {
            *self.by_worker.entry(k).or_default() += v;
        }
        for (k, v) in o.fails {
            *self.fails.entry(k).or_default() += v;
        }
    }

    fn failed(&self) -> u64 {
        self.fails.values().sum()
    }
}

#[derive(Clone)]
struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    failed: u64,
    fails: String,
    conns: u64,
    requests: u64,
    /// Primary CPU over the window, ms.
    primary_cpu_ms: f64,
    workers_cpu_ms: f64,
    /// This process (the load generator) over the window, ms.
    client_cpu_ms: f64,
    workers_seen: usize,
    /// Share of the responses per worker, busiest first.
    spread: String,
}

const REQ_CLOSE: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
const REQ_KEEP: &[u8] = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn io_fail(e: std::io::Error) -> Fail {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Fail::Eof,
        _ => Fail::Io,
    }
}

/// The worker id in the body ("hello world from worker N").
fn worker_of(resp: &[u8]) -> Option<u32> {
    const MARK: &[u8] = b"from worker ";
    let at = find(resp, MARK)? + MARK.len();
    let digits = resp[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&resp[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

async fn one_new(port: u16, buf: &mut Vec<u8>) -> Result<(), Fail> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|_| Fail::Connect)?;
    let _ = s.set_nodelay(true);
    s.write_all(REQ_CLOSE).await.map_err(io_fail)?;
    buf.clear();
    s.read_to_end(buf).await.map_err(io_fail)?;
    if buf.is_empty() {
        return Err(Fail::Eof);
    }
    if !buf.starts_with(b"HTTP/1.1 200") {
        return Err(Fail::Status);
    }
    Ok(())
}

/// Read one response off a keep-alive connection.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), Fail> {
    buf.clear();
    loop {
        if let Some(h) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..h]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                return Err(Fail::Status);
            }
            let body = h + 4;
            if let Some(cl) = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
            {
                while buf.len() < body + cl {
                    buf.reserve(4096);
                    if s.read_buf(buf).await.map_err(io_fail)? == 0 {
                        return Err(Fail::Eof);
                    }
                }
            } else {
                // Chunked.
                while find(&buf[body..], b"0\r\n\r\n").is_none() {
                    buf.reserve(4096);
                    if s.read_buf(buf).await.map_err(io_fail)? == 0 {
                        return Err(Fail::Eof);
                    }
                }
            }
            return Ok(());
        }
        buf.reserve(4096);
        if s.read_buf(buf).await.map_err(io_fail)? == 0 {
            return Err(Fail::Eof);
        }
    }
}

async fn client(port: u16, mode: Mode, warm_end: Instant, end: Instant) -> Tally {
    let mut t = Tally::default();
    let mut buf = Vec::with_capacity(4096);
    let mut conn: Option<TcpStream> = None;
    loop {
        let started = Instant::now();
        if started >= end {
            break;
        }
        let counted = started >= warm_end;
        let res = match mode {
            Mode::New => {
                if counted {
                    t.conns += 1;
                }
                tokio::time::timeout(REQUEST_TIMEOUT, one_new(port, &mut buf)).await
            }
            Mode::KeepAlive => {
                let opened = conn.is_none();
                if opened && counted {
                    t.conns += 1;
                }
                let fut = async {
                    if conn.is_none() {
                        let s = TcpStream::connect(("127.0.0.1", port))
                            .await
                            .map_err(|_| Fail::Connect)?;
                        let _ = s.set_nodelay(true);
                        conn = Some(s);
                    }
                    let s = conn.as_mut().expect("connected");
                    s.write_all(REQ_KEEP).await.map_err(io_fail)?;
                    read_response(s, &mut buf).await
                };
                tokio::time::timeout(REQUEST_TIMEOUT, fut).await
            }
        };
        let res = res.unwrap_or(Err(Fail::Timeout));
        if res.is_err() {
            conn = None;
        }
        if counted {
            match res {
                Ok(()) => {
                    t.ok += 1;
                    if let Some(w) = worker_of(&buf) {
                        *t.by_worker.entry(w).or_default() += 1;
                    }
                    t.lat_us
                        .push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
                }
                Err(f) => t.fail(f),
            }
        }
    }
    t
}

fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

fn workers_cpu(primary: u32) -> (u64, usize) {
    let tree = descendants_and_self(primary);
    let workers = &tree[1..];
    (
        workers.iter().filter_map(|&p| cpu_ticks(p)).sum(),
        workers.len(),
    )
}

async fn load(server: &Server, mode: Mode, p: &Params) -> Run {
    let t0 = Instant::now();
    let warm_end = t0 + Duration::from_secs_f64(p.warmup);
    let end = warm_end + Duration::from_secs_f64(p.secs);
    let primary = server.primary;
    let sampler = tokio::spawn(async move {
        tokio::time::sleep_until(warm_end.into()).await;
        let a = (
            cpu_ticks(primary),
            workers_cpu(primary),
            cpu_ticks(std::process::id()),
        );
        tokio::time::sleep_until(end.into()).await;
        let b = (
            cpu_ticks(primary),
            workers_cpu(primary),
            cpu_ticks(std::process::id()),
        );
        (a, b)
    });
    let tasks: Vec<_> = (0..p.conc)
        .map(|_| tokio::spawn(client(server.port, mode, warm_end, end)))
        .collect();
    let mut total = Tally::default();
    for t in tasks {
        total.merge(t.await.expect("client task"));
    }
    let ((pa, (wa, _), ca), (pb, (wb, nw), cb)) = sampler.await.expect("sampler");
    let tick_ms = 1000.0 / clk_tck();
    let primary_cpu_ms = match (pa, pb) {
        (Some(a), Some(b)) => b.saturating_sub(a) as f64 * tick_ms,
        _ => f64::NAN,
    };
    total.lat_us.sort_unstable();
    let mut shares: Vec<u64> = total.by_worker.values().copied().collect();
    shares.sort_unstable_by(|a, b| b.cmp(a));
    let spread = shares
        .iter()
        .map(|n| format!("{:.0}", *n as f64 * 100.0 / total.ok.max(1) as f64))
        .collect::<Vec<_>>()
        .join("/");
    let mut fails: Vec<_> = total
        .fails
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    fails.sort();
    Run {
        rps: total.ok as f64 / p.secs,
        p50_ms: percentile(&total.lat_us, 0.50),
        p99_ms: percentile(&total.lat_us, 0.99),
        failed: total.failed(),
        fails: fails.join(", "),
        conns: total.conns,
        requests: total.ok + total.failed(),
        primary_cpu_ms,
        workers_cpu_ms: wb.saturating_sub(wa) as f64 * tick_ms,
        client_cpu_ms: match (ca, cb) {
            (Some(a), Some(b)) => b.saturating_sub(a) as f64 * tick_ms,
            _ => f64::NAN,
        },
        workers_seen: nw,
        spread,
    }
}

// ---------------------------------------------------------------------------
// Report.

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn thousands(x: f64) -> String {
    if x.is_nan() {
        return "–".into();
    }
    let s = format!("{:.0}", x);
    let (neg, digits) = s
        .strip_prefix('-')
        .map_or((false, s.as_str()), |d| (true, d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if neg {
        format!("-{out}")
    } else {
        out
    }
}

fn ms(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else if x < 10.0 {
        format!("{x:.2} ms")
    } else {
        format!("{x:.1} ms")
    }
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_nan() || b.is_nan() || b == 0.0 {
        "–".into()
    } else {
        format!("{:.2}×", a / b)
    }
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

type Results = HashMap<(Peer, Mode), Vec<Run>>;

fn render(
    p: &Params,
    results: &Results,
    skipped: &[(Peer, String)],
    load_before: &str,
    took: Duration,
) -> String {
    let peers: Vec<Peer> = Peer::ALL
        .into_iter()
        .filter(|x| p.only.contains(x))
        .collect();
    let med = |peer: Peer, mode: Mode, f: &dyn Fn(&Run) -> f64| -> f64 {
        results
            .get(&(peer, mode))
            .map_or(f64::NAN, |runs| median(runs.iter().map(f).collect()))
    };
    let mut s = String::new();
    let _ = writeln!(s, "{SECTION}\n");
    let _ = writeln!(
        s,
        "Produced by `cargo bench --bench cluster` on {} (took {:.0} s). The same \
         unmodified Node cluster app (`examples/cluster_app.js`) under Node's own \
         primary, under ours (round robin, and `Scheduling::Shared`), and under PM2 \
         cluster mode, {} workers each. Load: {} concurrent connections from a Rust \
         client in the bench (tokio, {} thread(s)), HTTP/1.1 GET, {} s timeout per \
         request, no retries; each run {} s warm-up then {} s measured; {} rounds \
         interleaved (peer order rotates); medians.\n",
        sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        took.as_secs_f64(),
        p.workers,
        p.conc,
        p.client_threads,
        REQUEST_TIMEOUT.as_secs(),
        p.warmup,
        p.secs,
        p.rounds,
    );
    let _ = writeln!(
        s,
        "Machine: {} CPUs ({}), kernel {}, node {}, PM2 {}; crate at `{}`; load \
         average before the run {}. The machine is shared with an engineer compiling, so the figures \
         are noisy: compare within a round (table below) as much as across.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        sh(
            "sh",
            &["-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"]
        )
        .trim(),
        sh("uname", &["-r"]),
        sh(&p.node, &["--version"]),
        pm2_version(p),
        sh("git", &["-C", MANIFEST_DIR, "describe", "--always", "--dirty"]),
        load_before,
    );
    for (peer, why) in skipped {
        let _ = writeln!(s, "**{} skipped**: {why}\n", peer.label());
    }

    let mut head = String::from("| scenario |");
    let mut sep = String::from("|---|");
    for peer in &peers {
        let _ = write!(head, " {} |", peer.label());
        sep.push_str("---:|");
    }
    head.push_str(" ours RR / Node | ours RR / PM2 | ours shared / Node |");
    sep.push_str("---:|---:|---:|");
    let _ = writeln!(s, "{head}\n{sep}");

    let row = |s: &mut String,
               name: &str,
               mode: Mode,
               f: &dyn Fn(&Run) -> f64,
               fmt: &dyn Fn(f64) -> String| {
        let _ = write!(s, "| {name} |");
        for &peer in &peers {
            let _ = write!(s, " {} |", fmt(med(peer, mode, f)));
        }
        let rr = med(Peer::OursRr, mode, f);
        let sh = med(Peer::OursShared, mode, f);
        let node = med(Peer::Node, mode, f);
        let pm2 = med(Peer::Pm2, mode, f);
        let _ = writeln!(
            s,
            " {} | {} | {} |",
            ratio(rr, node),
            ratio(rr, pm2),
            ratio(sh, node)
        );
    };
    for &mode in &p.modes {
        let m = mode.label();
        row(&mut s, &format!("req/s, {m}"), mode, &|r| r.rps, &thousands);
        row(&mut s, &format!("p99, {m}"), mode, &|r| r.p99_ms, &ms);
        row(&mut s, &format!("p50, {m}"), mode, &|r| r.p50_ms, &ms);
        row(
            &mut s,
            &format!("failed requests, {m} (per run)"),
            mode,
            &|r| r.failed as f64,
            &thousands,
        );
        match mode {
            Mode::New => {
                row(
                    &mut s,
                    "primary CPU per 10k connections dispatched",
                    mode,
                    &|r| per_10k(r.primary_cpu_ms, r.conns),
                    &ms,
                );
                row(
                    &mut s,
                    "workers' CPU per 10k connections",
                    mode,
                    &|r| per_10k(r.workers_cpu_ms, r.conns),
                    &ms,
                );
                row(
                    &mut s,
                    "client (bench) CPU per 10k connections",
                    mode,
                    &|r| per_10k(r.client_cpu_ms, r.conns),
                    &ms,
                );
            }
            Mode::KeepAlive => {
                row(
                    &mut s,
                    &format!("primary CPU over the {} s window, keep-alive", p.secs),
                    mode,
                    &|r| r.primary_cpu_ms,
                    &ms,
                );
                row(
                    &mut s,
                    "workers' CPU per 10k requests, keep-alive",
                    mode,
                    &|r| per_10k(r.workers_cpu_ms, r.requests),
                    &ms,
                );
            }
        }
    }
    s.push('\n');

    // The issue's target.
    if p.modes.contains(&Mode::New) {
        let f = |peer| med(peer, Mode::New, &|r: &Run| r.rps);
        let q = |peer| med(peer, Mode::New, &|r: &Run| r.p99_ms);
        let (rr, node) = (f(Peer::OursRr), f(Peer::Node));
        let (prr, pnode) = (q(Peer::OursRr), q(Peer::Node));
        let holds = !rr.is_nan() && !node.is_nan() && rr >= 1.3 * node && prr < pnode;
        let _ = writeln!(
            s,
            "Target (issue 14): ours RR dispatches ≥ 1.3× the connections per second of \
             Node's primary at a lower p99, new connection per request: {} and p99 {} vs \
             {}: **{}**.\n",
            ratio(rr, node),
            ms(prr),
            ms(pnode),
            if rr.is_nan() || node.is_nan() {
                "not measured"
            } else if holds {
                "holds"
            } else {
                "does not hold"
            }
        );
    }

    // How far a cheaper primary can go when the CPUs are the limit.
    if p.modes.contains(&Mode::New) {
        let c = |peer, f: &dyn Fn(&Run) -> f64| med(peer, Mode::New, f);
        let prim = c(Peer::Node, &|r| per_10k(r.primary_cpu_ms, r.conns));
        let rest = c(Peer::Node, &|r| {
            per_10k(r.workers_cpu_ms, r.conns) + per_10k(r.client_cpu_ms, r.conns)
        });
        if !prim.is_nan() && !rest.is_nan() && rest > 0.0 {
            let _ = writeln!(
                s,
                "Ceiling, new connection per request: with every CPU busy, a primary that \
                 cost nothing would leave Node's workers and the client their {} per 10k \
                 connections instead of {} with Node's primary: at most {} Node's \
                 connections per second, whatever the primary does (the Node workers' \
                 per-connection cost, the IPC handle and its acks, is the same under \
                 every round-robin primary).\n",
                ms(rest),
                ms(prim + rest),
                ratio(prim + rest, rest),
            );
        }
    }

    let _ = writeln!(
        s,
        "Every run (req/s, p99, failed, primary CPU ms over the window, connections \
         opened in the window, workers seen under the primary, share of the responses \
         per worker in %, busiest first):\n"
    );
    let _ = writeln!(s, "| round | mode | peer | req/s | p99 | failed | primary CPU | connections | workers | spread |");
    let _ = writeln!(s, "|---:|---|---|---:|---:|---|---:|---:|---:|---|");
    for round in 0..p.rounds {
        for &mode in &p.modes {
            for &peer in &peers {
                if let Some(r) = results.get(&(peer, mode)).and_then(|v| v.get(round)) {
                    let _ = writeln!(
                        s,
                        "| {} | {} | {} | {} | {} | {}{} | {} | {} | {} | {} |",
                        round + 1,
                        if mode == Mode::New {
                            "new"
                        } else {
                            "keep-alive"
                        },
                        peer.label(),
                        thousands(r.rps),
                        ms(r.p99_ms),
                        r.failed,
                        if r.fails.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", r.fails)
                        },
                        ms(r.primary_cpu_ms),
                        thousands(r.conns as f64),
                        r.workers_seen,
                        r.spread,
                    );
                }
            }
        }
    }
    s.push('\n');
    let _ = writeln!(
        s,
        "Primary CPU is utime+stime of the primary process from `/proc/<pid>/stat` \
         (PM2: its God daemon), 10 ms ticks; in shared mode the workers accept \
         themselves, so the primary has nothing to do per connection. Our primary \
         is this bench binary re-run as `--primary rr|shared` (the library in the \
         bench profile doing what `examples/cluster_node.rs` does). Knobs: see the \
         top of `benches/cluster.rs`.\n"
    );
    s
}

/// Read off its package.json: `pm2 --version` starts a daemon in the
/// default `PM2_HOME`.
fn pm2_version(p: &Params) -> String {
    let pkg = p
        .pm2
        .parent()
        .and_then(Path::parent)
        .map(|bin| bin.join("pm2/package.json"))
        .and_then(|f| std::fs::read_to_string(f).ok())
        .unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(&pkg)
        .ok()
        .and_then(|v| v["version"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "not installed".into())
}

fn per_10k(cpu_ms: f64, n: u64) -> f64 {
    if n == 0 {
        f64::NAN
    } else {
        cpu_ms * 10_000.0 / n as f64
    }
}

/// Replace our section of `bench/RESULTS.md` (up to the next `## ` heading)
/// or append it.
fn write_section(section: &str, markdown: &str) {
    let path = PathBuf::from(MANIFEST_DIR).join("bench/RESULTS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let new = match old.find(section) {
        Some(at) => {
            let after = at + section.len();
            let end = old[after..]
                .find("\n## ")
                .map_or(old.len(), |i| after + i + 1);
            format!("{}{}{}", &old[..at], markdown, &old[end..])
        }
        None => {
            let sep = if old.is_empty() || old.ends_with("\n\n") {
                ""
            } else if old.ends_with('\n') {
                "\n"
            } else {
                "\n\n"
            };
            format!("{old}{sep}{markdown}")
        }
    };
    match std::fs::write(&path, new) {
        Ok(()) => eprintln!("wrote {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
}

// ---------------------------------------------------------------------------

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = args.iter().position(|a| a == "--primary") {
        primary_mode(&args[at + 1..]);
        return;
    }
    install_cleanup_handlers();
    let _guard = CleanupGuard;
    let began = Instant::now();
    let p = Params::from_env();
    if p.supervise {
        supervisor_main(&p, began);
        return;
    }
    let load_before = sh("cat", &["/proc/loadavg"])
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");

    if p.only.contains(&Peer::Node) {
        let n = node_parallelism(&p);
        if n != p.workers {
            eprintln!(
                "warning: os.availableParallelism() is {n}: Node's primary forks {n} workers, \
                 ours and PM2 fork {}",
                p.workers
            );
        }
    }

    let mut servers = Vec::new();
    let mut skipped = Vec::new();
    for peer in Peer::ALL.into_iter().filter(|x| p.only.contains(x)) {
        let t = Instant::now();
        match start(peer, &p) {
            Ok(s) => {
                eprintln!(
                    "{}: port {}, primary pid {}, up in {} ms",
                    peer.label(),
                    s.port,
                    s.primary,
                    t.elapsed().as_millis()
                );
                servers.push(s);
            }
            Err(e) => {
                eprintln!("{}: skipped: {e}", peer.label());
                skipped.push((peer, e));
            }
        }
    }

    let rt = if p.client_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(p.client_threads);
        b
    }
    .enable_all()
    .build()
    .expect("client runtime");

    let mut results: Results = HashMap::new();
    for round in 0..p.rounds {
        for &mode in &p.modes {
            for i in 0..servers.len() {
                let server = &servers[(i + round) % servers.len()];
                // Quiet between runs: connections of the last one wind down.
                std::thread::sleep(Duration::from_millis(300));
                let r = rt.block_on(load(server, mode, &p));
                eprintln!(
                    "round {} {:>10} {:<12} {:>8} req/s  p99 {:>9}  failed {}{}  primary CPU {}  conns {}  spread {}",
                    round + 1,
                    if mode == Mode::New { "new" } else { "keep-alive" },
                    server.peer.label(),
                    thousands(r.rps),
                    ms(r.p99_ms),
                    r.failed,
                    if r.fails.is_empty() { String::new() } else { format!(" ({})", r.fails) },
                    ms(r.primary_cpu_ms),
                    r.conns,
                    r.spread,
                );
                results.entry((server.peer, mode)).or_default().push(r);
            }
        }
    }
    // Stop the peers before writing anything.
    cleanup_all();
    drop(servers);

    let markdown = render(&p, &results, &skipped, &load_before, began.elapsed());
    print!("{markdown}");
    if p.write {
        write_section(SECTION, &markdown);
    }
}

// ---------------------------------------------------------------------------
// The supervisor scenarios (issue 15): `CLUSTER_BENCH_SCENARIO=supervisor`.

const SUP_SECTION: &str = "## Supervisor: reload and crashes (issue 15)";
/// Requests sent while reloads run, at least (reloads go back to back
/// until then).
const RELOAD_MIN_REQUESTS: u64 = 10_000;
/// The crash test: a `SIGKILL` every `KILL_EVERY` for `KILL_FOR`.
const KILL_EVERY: Duration = Duration::from_millis(500);
const KILL_FOR: Duration = Duration::from_secs(10);
/// Measured after the last kill too, so its replacement is seen.
const KILL_TAIL: Duration = Duration::from_millis(1500);

/// Node's own primary for the supervisor scenarios: what CLUSTER.md §7
/// hand-rolled, written to `/tmp` at run time and running the worker side
/// of the unmodified `examples/cluster_app.js` (whose own primary neither
/// replaces a dead worker nor reloads). A worker that exits unasked is
/// forked again at once; `SIGHUP` replaces the workers one at a time
/// (fork, wait `listening`, `disconnect()` the old one, `SIGTERM` after a
/// 10 s drain as ours, `SIGKILL` 2 s later). Prints the same `ev` and
/// `reload` lines as our `--primary ... supervise` (`process.hrtime` is
/// `CLOCK_MONOTONIC`).
const NODE_SUPERVISOR: &str = r#"'use strict';
// Written by benches/cluster.rs (CLUSTER_BENCH_SCENARIO=supervisor).
const cluster = require('node:cluster');
const t = () => String(process.hrtime.bigint() / 1000n);
cluster.setupPrimary({ exec: process.argv[2] });
const n = Number(process.argv[3] || 2);
const slotOf = new Map();
function fork(slot) {
  const w = cluster.fork({ NODE_APP_INSTANCE: String(slot) });
  slotOf.set(w.id, slot);
  console.log(`ev ${t()} fork ${w.id} ${w.process.pid} ${slot}`);
  return w;
}
cluster.on('listening', (w) => console.log(`ev ${t()} ready ${w.id}`));
cluster.on('exit', (w, code, signal) => {
  const asked = w.exitedAfterDisconnect === true;
  console.log(`ev ${t()} exit ${w.id} ${signal || code} ${asked}`);
  if (!asked) fork(slotOf.get(w.id));
});
for (let i = 0; i < n; i++) fork(i);
let reloading = false;
process.on('SIGHUP', async () => {
  if (reloading) return;
  reloading = true;
  const t0 = Date.now();
  let replaced = 0;
  let failed = 'none';
  const old = Object.values(cluster.workers).filter((w) => w.isConnected() && !w.retiring);
  for (const w of old) {
    const nw = fork(slotOf.get(w.id));
    const ok = await new Promise((res) => {
      nw.once('listening', () => res(true));
      nw.once('exit', () => res(false));
    });
    if (!ok) { failed = `new_worker_${nw.id}_exited`; break; }
    w.retiring = true;
    w.disconnect();
    const timer = setTimeout(() => {
      w.process.kill('SIGTERM');
      setTimeout(() => w.process.kill('SIGKILL'), 2000).unref();
    }, 10000);
    timer.unref();
    w.once('exit', () => clearTimeout(timer));
    replaced++;
  }
  console.log(`reload ${t()} ${Date.now() - t0} replaced=${replaced} failed=${failed}`);
  reloading = false;
});
"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scen {
    Reload,
    Crash,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Ok,
    /// Failed on a connection opened for it (every request in mode
    /// `new`; the first of a connection in mode `keepalive`).
    NewConn,
    /// Failed on a reused keep-alive connection, not an idle close.
    KeepAlive,
    /// EOF or reset before any response byte on a reused keep-alive
    /// connection (CLUSTER.md §7: counted apart).
    IdleClose,
}

struct Rec {
    /// Start, µs of `CLOCK_MONOTONIC`.
    t: u64,
    class: Class,
    kind: &'static str,
    lat_us: u32,
}

fn fail_name(f: Fail) -> &'static str {
    match f {
        Fail::Timeout => "timeout",
        Fail::Connect => "connect",
        Fail::Io => "reset/io",
        Fail::Eof => "eof",
        Fail::Status => "status",
    }
}

/// One client: requests back to back until `stop`, each recorded. A
/// response saying `Connection: close` ends the connection, as a real
/// client does.
async fn sup_client(
    port: u16,
    mode: Mode,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> Vec<Rec> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut out = Vec::with_capacity(1 << 14);
    let mut buf = Vec::with_capacity(4096);
    let mut conn: Option<TcpStream> = None;
    while !stop.load(Relaxed) {
        let t = mono_us();
        let began = Instant::now();
        sent.fetch_add(1, Relaxed);
        buf.clear();
        let (res, reused) = match mode {
            Mode::New => (
                tokio::time::timeout(REQUEST_TIMEOUT, one_new(port, &mut buf)).await,
                false,
            ),
            Mode::KeepAlive => {
                let reused = conn.is_some();
                let fut = async {
                    if conn.is_none() {
                        let s = TcpStream::connect(("127.0.0.1", port))
                            .await
                            .map_err(|_| Fail::Connect)?;
                        let _ = s.set_nodelay(true);
                        conn = Some(s);
                    }
                    let s = conn.as_mut().expect("connected");
                    s.write_all(REQ_KEEP).await.map_err(io_fail)?;
                    read_response(s, &mut buf).await
                };
                (tokio::time::timeout(REQUEST_TIMEOUT, fut).await, reused)
            }
        };
        let res = res.unwrap_or(Err(Fail::Timeout));
        let (class, kind) = match res {
            Ok(()) => {
                if mode == Mode::KeepAlive {
                    let head_end = find(&buf, b"\r\n\r\n").unwrap_or(buf.len());
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    if head.contains("\r\nconnection: close") {
                        conn = None;
                    }
                }
                (Class::Ok, "")
            }
            Err(f) => {
                conn = None;
                let class = if !reused {
                    Class::NewConn
                } else if matches!(f, Fail::Eof | Fail::Io) && buf.is_empty() {
                    Class::IdleClose
                } else {
                    Class::KeepAlive
                };
                (class, fail_name(f))
            }
        };
        out.push(Rec {
            t,
            class,
            kind,
            lat_us: began.elapsed().as_micros().min(u32::MAX as u128) as u32,
        });
    }
    out
}

/// The live (not zombie) children of a process, by a `/proc` scan that
/// reads the `stat` of new pids only (no `/proc/<pid>/task/*/children`
/// on this kernel).
struct Children {
    parent: u32,
    ppid: HashMap<u32, u32>,
}

impl Children {
    fn new(parent: u32) -> Children {
        Children {
            parent,
            ppid: HashMap::new(),
        }
    }

    fn scan(&mut self) -> Vec<u32> {
        let mut now = HashMap::with_capacity(self.ppid.len() + 16);
        let mut kids = Vec::new();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return kids;
        };
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let pp = match self.ppid.get(&pid) {
                Some(&pp) => pp,
                None => match stat_fields(pid) {
                    Some(f) => f.get(1).and_then(|p| p.parse().ok()).unwrap_or(0),
                    None => continue,
                },
            };
            now.insert(pid, pp);
            if pp == self.parent {
                // Still alive and not a zombie.
                if stat_fields(pid).is_some_and(|f| f.first().map(String::as_str) != Some("Z")) {
                    kids.push(pid);
                }
            }
        }
        self.ppid = now;
        kids.sort_unstable();
        kids
    }
}

fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

struct SupRun {
    peer: Peer,
    mode: Mode,
    scen: Scen,
    /// Requests started inside the window.
    recs: Vec<Rec>,
    window_ms: f64,
    reload_ms: Vec<u64>,
    reload_failed: Vec<String>,
    kills: usize,
    /// Kill → a new child of the primary exists and it has as many live
    /// children as workers again (`/proc`, 2 ms polling).
    repl_proc_ms: Vec<Option<f64>>,
    /// Kill → `Ready` (listening) of the worker forked next into the
    /// killed worker's slot (ours, Node; from the `ev` lines).
    repl_ready_ms: Vec<Option<f64>>,
    /// Kill → `Fork` of that worker.
    repl_fork_ms: Vec<Option<f64>>,
    rss_start_kb: u64,
    rss_max_kb: u64,
    primary_cpu_ms: f64,
    notes: Vec<String>,
}

impl SupRun {
    fn count(&self, c: Class) -> usize {
        self.recs.iter().filter(|r| r.class == c).count()
    }

    fn kinds(&self) -> String {
        let mut m: std::collections::BTreeMap<String, usize> = Default::default();
        for r in self.recs.iter().filter(|r| r.class != Class::Ok) {
            let c = match r.class {
                Class::NewConn => "new",
                Class::KeepAlive => "ka",
                Class::IdleClose => "idle",
                Class::Ok => unreachable!(),
            };
            *m.entry(format!("{c} {}", r.kind)).or_default() += 1;
        }
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn p99_ms(&self) -> f64 {
        let mut v: Vec<u32> = self
            .recs
            .iter()
            .filter(|r| r.class == Class::Ok)
            .map(|r| r.lat_us)
            .collect();
        v.sort_unstable();
        percentile(&v, 0.99)
    }
}

/// `ev` lines: pid → slot of every fork; per slot, the forks in order
/// (time, worker id); worker id → ready time.
struct EvLog {
    slot_of_pid: HashMap<u32, usize>,
    forks: Vec<(u64, String, usize)>,
    ready: HashMap<String, u64>,
}

fn parse_ev(lines: &[String]) -> EvLog {
    let mut log = EvLog {
        slot_of_pid: HashMap::new(),
        forks: Vec::new(),
        ready: HashMap::new(),
    };
    for l in lines {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.first() != Some(&"ev") || f.len() < 4 {
            continue;
        }
        let Ok(t) = f[1].parse::<u64>() else { continue };
        match f[2] {
            "fork" if f.len() >= 6 => {
                let (Ok(pid), Ok(slot)) = (f[4].parse::<u32>(), f[5].parse::<usize>()) else {
                    continue;
                };
                log.slot_of_pid.insert(pid, slot);
                log.forks.push((t, f[3].to_owned(), slot));
            }
            "ready" => {
                log.ready.entry(f[3].to_owned()).or_insert(t);
            }
            _ => {}
        }
    }
    log
}

fn drain_lines(rx: &mpsc::Receiver<String>, into: &mut Vec<String>) {
    while let Ok(l) = rx.try_recv() {
        into.push(l);
    }
}

fn pm2_cmd(p: &Params, args: &[&str]) -> Command {
    let mut cmd = Command::new(&p.pm2);
    cmd.args(args)
        .env(
            "PM2_HOME",
            format!("/tmp/cluster-bench-pm2-{}", std::process::id()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Run one scenario against one peer, under one load mode.
fn sup_run(
    rt: &tokio::runtime::Runtime,
    server: &mut Server,
    scen: Scen,
    mode: Mode,
    p: &Params,
) -> SupRun {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    use std::sync::Arc;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let primary = server.primary;
    let workers = p.workers;
    let mut log = std::mem::take(&mut server.seen);
    let rx = server.lines.take();
    if let Some(rx) = &rx {
        drain_lines(rx, &mut log);
    }
    let log_from = log.len();
    let peer = server.peer;
    let port = server.port;

    struct Driven {
        window: (u64, u64),
        reload_ms: Vec<u64>,
        reload_failed: Vec<String>,
        kills: Vec<(u64, u32, Vec<u32>)>,
        timeline: Vec<(u64, Vec<u32>)>,
        rss_start_kb: u64,
        rss_max_kb: u64,
        cpu_ticks: u64,
        rx: Option<mpsc::Receiver<String>>,
        lines: Vec<String>,
        notes: Vec<String>,
        drain_ms: u64,
    }

    let (recs, d) = std::thread::scope(|scope| {
        let stop2 = stop.clone();
        let sent2 = sent.clone();
        let driver = scope.spawn(move || {
            let mut d = Driven {
                window: (0, 0),
                reload_ms: Vec::new(),
                reload_failed: Vec::new(),
                kills: Vec::new(),
                timeline: Vec::new(),
                rss_start_kb: 0,
                rss_max_kb: 0,
                cpu_ticks: 0,
                rx,
                lines: Vec::new(),
                notes: Vec::new(),
                drain_ms: 0,
            };
            // RSS sampled every 20 ms on a thread of its own.
            let rss_stop = Arc::new(AtomicBool::new(false));
            let rss_stop2 = rss_stop.clone();
            let rss = std::thread::spawn(move || {
                let mut max = 0;
                while !rss_stop2.load(Relaxed) {
                    max = max.max(rss_kb(primary).unwrap_or(0));
                    std::thread::sleep(Duration::from_millis(20));
                }
                max
            });
            std::thread::sleep(Duration::from_secs_f64(p.warmup));
            d.rss_start_kb = rss_kb(primary).unwrap_or(0);
            let cpu0 = cpu_ticks(primary).unwrap_or(0);
            let t0 = mono_us();
            let c0 = sent2.load(Relaxed);
            match scen {
                Scen::Reload => {
                    let began = Instant::now();
                    while sent2.load(Relaxed) - c0 < RELOAD_MIN_REQUESTS
                        && began.elapsed() < Duration::from_secs(120)
                        && d.reload_failed.len() < 3
                    {
                        let t = Instant::now();
                        if peer == Peer::Pm2 {
                            match run_with_timeout(
                                pm2_cmd(p, &["reload", "cluster_bench"]),
                                Duration::from_secs(60),
                            ) {
                                Ok((true, _)) => {}
                                Ok((false, out)) => d.reload_failed.push(out),
                                Err(e) => d.reload_failed.push(e.to_string()),
                            }
                            d.reload_ms.push(t.elapsed().as_millis() as u64);
                        } else {
                            unsafe { libc::kill(primary as libc::pid_t, libc::SIGHUP) };
                            let rx = d.rx.as_ref().expect("our primary's lines");
                            let deadline = Instant::now() + Duration::from_secs(60);
                            loop {
                                let left = deadline.saturating_duration_since(Instant::now());
                                match rx.recv_timeout(left) {
                                    Ok(l) => {
                                        let done = l.starts_with("reload ");
                                        if done {
                                            let f: Vec<&str> = l.split_whitespace().collect();
                                            d.reload_ms.push(
                                                f.get(2).and_then(|x| x.parse().ok()).unwrap_or(0),
                                            );
                                            if f.get(4) != Some(&"failed=none") {
                                                d.reload_failed.push(l.clone());
                                            }
                                        }
                                        d.lines.push(l);
                                        if done {
                                            break;
                                        }
                                    }
                                    Err(_) => {
                                        d.reload_failed.push("no reload line in 60 s".into());
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    // The window goes on until the old workers are gone
                    // (ours and Node drain them after the reload returns),
                    // then 500 ms: their closes fall inside it.
                    let reloads_done = began.elapsed();
                    let mut kids = Children::new(primary);
                    let until = Instant::now() + Duration::from_secs(15);
                    while kids.scan().len() > workers && Instant::now() < until {
                        if let Some(rx) = &d.rx {
                            drain_lines(rx, &mut d.lines);
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    d.drain_ms = (began.elapsed() - reloads_done).as_millis() as u64;
                    std::thread::sleep(Duration::from_millis(500));
                }
                Scen::Crash => {
                    let mut kids = Children::new(primary);
                    let mut seed = mono_us() | 1;
                    let mut next = 0u32;
                    let start = Instant::now();
                    let mut last: Vec<u32> = Vec::new();
                    while start.elapsed() < KILL_FOR + KILL_TAIL {
                        let live = kids.scan();
                        let now = mono_us();
                        if live != last {
                            d.timeline.push((now, live.clone()));
                            last = live.clone();
                        }
                        if next < (KILL_FOR.as_millis() / KILL_EVERY.as_millis()) as u32
                            && start.elapsed() >= KILL_EVERY * next
                        {
                            next += 1;
                            if live.is_empty() {
                                d.notes.push(format!("kill {next}: no live worker"));
                            } else {
                                seed ^= seed << 13;
                                seed ^= seed >> 7;
                                seed ^= seed << 17;
                                let victim = live[(seed % live.len() as u64) as usize];
                                let t = mono_us();
                                unsafe { libc::kill(victim as libc::pid_t, libc::SIGKILL) };
                                d.kills.push((t, victim, live.clone()));
                            }
                        }
                        if let Some(rx) = &d.rx {
                            drain_lines(rx, &mut d.lines);
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            }
            d.window = (t0, mono_us());
            d.cpu_ticks = cpu_ticks(primary).unwrap_or(0).saturating_sub(cpu0);
            stop2.store(true, Relaxed);
            rss_stop.store(true, Relaxed);
            d.rss_max_kb = rss.join().unwrap_or(0);
            d
        });
        let recs = rt.block_on(async {
            let tasks: Vec<_> = (0..p.conc)
                .map(|_| tokio::spawn(sup_client(port, mode, stop.clone(), sent.clone())))
                .collect();
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.expect("client task"));
            }
            all
        });
        (recs, driver.join().expect("driver"))
    });

    let mut d = d;
    if scen == Scen::Reload {
        d.notes.push(format!(
            "old workers gone {} ms after the last reload returned",
            d.drain_ms
        ));
    }
    // Lines printed after the window (late events of the last replacement).
    std::thread::sleep(Duration::from_millis(300));
    if let Some(rx) = &d.rx {
        drain_lines(rx, &mut d.lines);
    }
    log.append(&mut d.lines);
    server.lines = d.rx.take();
    let (w0, w1) = d.window;
    let recs: Vec<Rec> = recs.into_iter().filter(|r| r.t >= w0 && r.t < w1).collect();
    let ev = parse_ev(&log);
    let _ = log_from;
    server.seen = log;

    let mut repl_proc_ms = Vec::new();
    let mut repl_ready_ms = Vec::new();
    let mut repl_fork_ms = Vec::new();
    for (tk, victim, before) in &d.kills {
        let back = d.timeline.iter().find(|(t, live)| {
            *t > *tk
                && live.len() >= workers
                && live.iter().any(|x| !before.contains(x))
                && !live.contains(victim)
        });
        repl_proc_ms.push(back.map(|(t, _)| (t - tk) as f64 / 1000.0));
        if let Some(&slot) = ev.slot_of_pid.get(victim) {
            let fork = ev.forks.iter().find(|(t, _, s)| *t > *tk && *s == slot);
            repl_fork_ms.push(fork.map(|(t, _, _)| (t - tk) as f64 / 1000.0));
            repl_ready_ms.push(
                fork.and_then(|(_, id, _)| ev.ready.get(id))
                    .map(|t| (t - tk) as f64 / 1000.0),
            );
        } else if peer != Peer::Pm2 {
            d.notes.push(format!("killed pid {victim}: no fork line"));
        }
    }
    SupRun {
        peer,
        mode,
        scen,
        recs,
        window_ms: (w1 - w0) as f64 / 1000.0,
        reload_ms: d.reload_ms,
        reload_failed: d.reload_failed,
        kills: d.kills.len(),
        repl_proc_ms,
        repl_ready_ms,
        repl_fork_ms,
        rss_start_kb: d.rss_start_kb,
        rss_max_kb: d.rss_max_kb,
        primary_cpu_ms: d.cpu_ticks as f64 * 1000.0 / clk_tck(),
        notes: d.notes,
    }
}

fn supervisor_main(p: &Params, began: Instant) {
    let load_before = sh("cat", &["/proc/loadavg"])
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let order = [Peer::OursRr, Peer::OursShared, Peer::Pm2, Peer::Node];
    let mut servers = Vec::new();
    let mut skipped = Vec::new();
    for peer in order.into_iter().filter(|x| p.only.contains(x)) {
        let t = Instant::now();
        match start(peer, p) {
            Ok(s) => {
                eprintln!(
                    "{}: port {}, primary pid {}, up in {} ms, children {:?}",
                    peer.label(),
                    s.port,
                    s.primary,
                    t.elapsed().as_millis(),
                    Children::new(s.primary).scan()
                );
                servers.push(s);
            }
            Err(e) => {
                eprintln!("{}: skipped: {e}", peer.label());
                skipped.push((peer, e));
            }
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let mut runs = Vec::new();
    for scen in [Scen::Reload, Scen::Crash] {
        for &mode in &p.modes {
            for server in servers.iter_mut() {
                std::thread::sleep(Duration::from_millis(500));
                let r = sup_run(&rt, server, scen, mode, p);
                eprintln!(
                    "{:?} {:>10} {:<12} window {:.0} ms, {} requests, reloads {} ({:?} ms){}, kills {}, new {} ka {} idle {} [{}], proc {:?}, ready {:?}, rss {}..{} kB, cpu {:.0} ms {}",
                    scen,
                    if mode == Mode::New { "new" } else { "keep-alive" },
                    server.peer.label(),
                    r.window_ms,
                    r.recs.len(),
                    r.reload_ms.len(),
                    r.reload_ms,
                    if r.reload_failed.is_empty() { String::new() } else { format!(" FAILED {:?}", r.reload_failed) },
                    r.kills,
                    r.count(Class::NewConn),
                    r.count(Class::KeepAlive),
                    r.count(Class::IdleClose),
                    r.kinds(),
                    r.repl_proc_ms,
                    r.repl_ready_ms,
                    r.rss_start_kb,
                    r.rss_max_kb,
                    r.primary_cpu_ms,
                    r.notes.join("; "),
                );
                runs.push(r);
            }
        }
    }
    cleanup_all();
    drop(servers);
    let markdown = sup_render(p, &runs, &skipped, &load_before, began.elapsed());
    print!("{markdown}");
    if p.write {
        write_section(SUP_SECTION, &markdown);
    }
}

fn med_max(v: &[Option<f64>]) -> (f64, f64, usize) {
    let got: Vec<f64> = v.iter().flatten().copied().collect();
    let max = got.iter().copied().fold(f64::NAN, f64::max);
    (median(got), max, v.iter().filter(|x| x.is_none()).count())
}

fn sup_render(
    p: &Params,
    runs: &[SupRun],
    skipped: &[(Peer, String)],
    load_before: &str,
    took: Duration,
) -> String {
    let peers: Vec<Peer> = [Peer::Node, Peer::OursRr, Peer::OursShared, Peer::Pm2]
        .into_iter()
        .filter(|x| runs.iter().any(|r| r.peer == *x))
        .collect();
    let get = |peer: Peer, scen: Scen, mode: Mode| {
        runs.iter()
            .find(|r| r.peer == peer && r.scen == scen && r.mode == mode)
    };
    let mut s = String::new();
    let _ = writeln!(s, "{SUP_SECTION}\n");
    let _ = writeln!(
        s,
        "Produced by `CLUSTER_BENCH_SCENARIO=supervisor cargo bench --bench cluster` on {} \
         (took {:.0} s), one run per cell (no medians: each cell is one reload series or one \
         kill series). The unmodified `examples/cluster_app.js`, {} workers, under our \
         primary (round robin; `--primary rr {} supervise`: `Restart::OnFailure`, \
         **`restart_delay(0, 0)` (at once, as the Node primary re-forks) and `crash_window(1000, 60 s)`** so that 20 kills \
         in 10 s are all restarted at once, reload on `SIGHUP` = `primary.reload()`), under \
         PM2 cluster mode (`pm2 start -i {} --max-restarts 1000`, reload = the CLI `pm2 \
         reload cluster_bench`, back to back, its start-up included), and under Node's own \
         cluster primary hand-rolled as CLUSTER.md §7 did (a script the bench writes to \
         `/tmp`: fork again at once on an unasked exit; on `SIGHUP` fork new, wait \
         `listening`, `disconnect()` old; the app's own primary does neither). Load as the \
         throughput bench: {} concurrent clients, HTTP/1.1 GET, {} s timeout per request, no \
         retries; a keep-alive client drops its connection on a failure or on a response \
         with `Connection: close`. Requests counted are those started inside the window, \
         after a {} s warm-up.\n",
        sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        took.as_secs_f64(),
        p.workers,
        p.workers,
        p.workers,
        p.conc,
        REQUEST_TIMEOUT.as_secs(),
        p.warmup,
    );
    let _ = writeln!(
        s,
        "Machine: {} CPUs ({}), kernel {}, node {}, PM2 {}; crate at `{}`; load average \
         before the run {}. Shared with an engineer compiling: noisy.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        sh(
            "sh",
            &["-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"]
        )
        .trim(),
        sh("uname", &["-r"]),
        sh(&p.node, &["--version"]),
        pm2_version(p),
        sh(
            "git",
            &["-C", MANIFEST_DIR, "describe", "--always", "--dirty"]
        ),
        load_before,
    );
    for (peer, why) in skipped {
        let _ = writeln!(s, "**{} skipped**: {why}\n", peer.label());
    }
    let mut head = String::from("| scenario |");
    let mut sep = String::from("|---|");
    for peer in &peers {
        let _ = write!(
            head,
            " {} |",
            if *peer == Peer::Node {
                "Node primary (hand-rolled)"
            } else {
                peer.label()
            }
        );
        sep.push_str("---:|");
    }
    head.push_str(" ours RR / PM2 | ours RR / Node |");
    sep.push_str("---:|---:|");
    let _ = writeln!(s, "{head}\n{sep}");
    let row = |s: &mut String,
               name: &str,
               scen: Scen,
               mode: Mode,
               f: &dyn Fn(&SupRun) -> f64,
               fmt: &dyn Fn(f64) -> String,
               ratios: bool| {
        let _ = write!(s, "| {name} |");
        for &peer in &peers {
            let v = get(peer, scen, mode).map_or(f64::NAN, f);
            let _ = write!(s, " {} |", fmt(v));
        }
        let v = |peer| get(peer, scen, mode).map_or(f64::NAN, f);
        if ratios {
            let _ = writeln!(
                s,
                " {} | {} |",
                ratio(v(Peer::OursRr), v(Peer::Pm2)),
                ratio(v(Peer::OursRr), v(Peer::Node))
            );
        } else {
            let _ = writeln!(s, " | |");
        }
    };
    let n = |x: f64| thousands(x);
    let mb = |x: f64| {
        if x.is_nan() || x == 0.0 {
            "–".into()
        } else {
            format!("{:.1} MB", x / 1024.0)
        }
    };
    for scen in [Scen::Reload, Scen::Crash] {
        for &mode in &p.modes {
            let m = if mode == Mode::New {
                "new conn"
            } else {
                "keep-alive"
            };
            let sc = if scen == Scen::Reload {
                "reload"
            } else {
                "kill"
            };
            match scen {
                Scen::Reload => {
                    row(
                        &mut s,
                        &format!("**reload, {m}**: reloads back to back"),
                        scen,
                        mode,
                        &|r| r.reload_ms.len() as f64,
                        &n,
                        false,
                    );
                    row(
                        &mut s,
                        &format!("{sc}, {m}: mean time per reload of {} workers", p.workers),
                        scen,
                        mode,
                        &|r| {
                            if r.reload_ms.is_empty() {
                                f64::NAN
                            } else {
                                r.reload_ms.iter().sum::<u64>() as f64 / r.reload_ms.len() as f64
                            }
                        },
                        &ms,
                        true,
                    );
                    row(
                        &mut s,
                        &format!("{sc}, {m}: requests sent during the reloads and drains"),
                        scen,
                        mode,
                        &|r| r.recs.len() as f64,
                        &n,
                        false,
                    );
                }
                Scen::Crash => {
                    row(
                        &mut s,
                        &format!("**kill, {m}**: workers `SIGKILL`ed"),
                        scen,
                        mode,
                        &|r| r.kills as f64,
                        &n,
                        false,
                    );
                    row(
                        &mut s,
                        &format!(
                            "{sc}, {m}: requests in the window ({} s + {} s)",
                            KILL_FOR.as_secs(),
                            KILL_TAIL.as_secs_f64()
                        ),
                        scen,
                        mode,
                        &|r| r.recs.len() as f64,
                        &n,
                        false,
                    );
                }
            }
            if mode == Mode::New {
                row(
                    &mut s,
                    &format!("{sc}, {m}: **failed** (new connection)"),
                    scen,
                    mode,
                    &|r| r.count(Class::NewConn) as f64,
                    &n,
                    false,
                );
            } else {
                row(
                    &mut s,
                    &format!("{sc}, {m}: **failed** on a new connection"),
                    scen,
                    mode,
                    &|r| r.count(Class::NewConn) as f64,
                    &n,
                    false,
                );
                row(
                    &mut s,
                    &format!("{sc}, {m}: **failed** on a kept-alive connection"),
                    scen,
                    mode,
                    &|r| r.count(Class::KeepAlive) as f64,
                    &n,
                    false,
                );
                row(
                    &mut s,
                    &format!(
                        "{sc}, {m}: {}",
                        if scen == Scen::Reload {
                            "idle close (EOF/reset before any byte, counted apart)"
                        } else {
                            "closed before any byte (idle close, or killed with the request in flight: the client cannot tell)"
                        }
                    ),
                    scen,
                    mode,
                    &|r| r.count(Class::IdleClose) as f64,
                    &n,
                    false,
                );
            }
            row(
                &mut s,
                &format!("{sc}, {m}: p99 of the successful requests"),
                scen,
                mode,
                &|r| r.p99_ms(),
                &ms,
                true,
            );
            if scen == Scen::Crash {
                row(
                    &mut s,
                    &format!(
                        "{sc}, {m}: kill → replacement process up, 2 workers again (/proc), median"
                    ),
                    scen,
                    mode,
                    &|r| med_max(&r.repl_proc_ms).0,
                    &ms,
                    true,
                );
                row(
                    &mut s,
                    &format!("{sc}, {m}: same, max"),
                    scen,
                    mode,
                    &|r| med_max(&r.repl_proc_ms).1,
                    &ms,
                    true,
                );
                row(
                    &mut s,
                    &format!("{sc}, {m}: kill → replacement `listening` (primary's event), median"),
                    scen,
                    mode,
                    &|r| med_max(&r.repl_ready_ms).0,
                    &ms,
                    true,
                );
                row(
                    &mut s,
                    &format!("{sc}, {m}: same, max"),
                    scen,
                    mode,
                    &|r| med_max(&r.repl_ready_ms).1,
                    &ms,
                    true,
                );
            }
            row(
                &mut s,
                &format!("{sc}, {m}: primary RSS, max in the window"),
                scen,
                mode,
                &|r| r.rss_max_kb as f64,
                &mb,
                true,
            );
            row(
                &mut s,
                &format!("{sc}, {m}: primary CPU over the window (% of one CPU)"),
                scen,
                mode,
                &|r| r.primary_cpu_ms * 100.0 / r.window_ms,
                &|x| {
                    if x.is_nan() {
                        "–".into()
                    } else {
                        format!("{x:.1} %")
                    }
                },
                true,
            );
        }
    }
    s.push('\n');
    let _ = writeln!(s, "Every run (window, failures by class and kind, reload times, replacement times per kill, RSS at the start and max, primary CPU):\n");
    let _ = writeln!(s, "| scenario | mode | peer | window | requests | failures | reload ms | kill → /proc ms | kill → fork ms | kill → listening ms | RSS | CPU | notes |");
    let _ = writeln!(
        s,
        "|---|---|---|---:|---:|---|---|---|---|---|---|---:|---|"
    );
    let list = |v: &[Option<f64>]| {
        v.iter()
            .map(|x| x.map_or("–".into(), |x| format!("{x:.0}")))
            .collect::<Vec<_>>()
            .join(" ")
    };
    for r in runs {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.1} s | {} | {} | {} | {} | {} | {} | {:.1}→{:.1} MB | {:.0} ms | {} |",
            if r.scen == Scen::Reload { "reload" } else { "kill" },
            if r.mode == Mode::New { "new" } else { "keep-alive" },
            r.peer.label(),
            r.window_ms / 1000.0,
            thousands(r.recs.len() as f64),
            { let k = r.kinds(); if k.is_empty() { "0".into() } else { k } },
            r.reload_ms.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(" "),
            list(&r.repl_proc_ms),
            list(&r.repl_fork_ms),
            list(&r.repl_ready_ms),
            r.rss_start_kb as f64 / 1024.0,
            r.rss_max_kb as f64 / 1024.0,
            r.primary_cpu_ms,
            {
                let mut n = r.notes.clone();
                n.extend(r.reload_failed.iter().map(|f| format!("reload failed: {}", f.replace('|', "/").replace('\n', " "))));
                n.join("; ")
            },
        );
    }
    s.push('\n');
    let _ = writeln!(
        s,
        "How each figure is measured. *Failed on a new connection*: the request that opened \
         its connection failed (every request in mode `new`). *Kept-alive*: a later request \
         on a connection failed otherwise than by an idle close (a timeout, a reset or EOF \
         after part of a response). *Idle close*: EOF or reset before any response byte on a \
         reused connection (the worker closed it as the request went out; HTTP clients retry \
         these for idempotent requests, CLUSTER.md §7). *Kill*: every {} ms for {} s the bench \
         scans `/proc` for the live (non-zombie) children of the primary (PM2: its God \
         daemon), picks one at random and sends it `SIGKILL`; the window ends {} s after the \
         last kill. *Kill → replacement process up (/proc)*, the one measure taken the same \
         way for all three: a `/proc` scan every ~2 ms from the bench, time from the kill \
         until the primary has as many live children as workers again and one of them was \
         not there at the kill (a process that exists, not one known to accept). *Kill → \
         `listening`*, ours and Node only: from the primary's own timestamped events \
         (`CLOCK_MONOTONIC`, same clock as the bench), the kill to the `listening` of the \
         next worker forked into the killed worker's slot (our `Event::Ready`; Node's \
         `cluster.on('listening')`); PM2 exposes no such event, hence –. *Primary RSS* is \
         `VmRSS` of the primary (PM2: its God daemon) sampled every 20 ms; *CPU* is its \
         utime+stime over the window. The reload window runs from the first reload's start \
         to the moment the primary has no more live children than workers (the old ones \
         drained and exited), plus 500 ms; ours: `SIGHUP` → the `reload` line, which \
         comes when the last new worker is ready and the last old one was told to \
         disconnect; the old ones drain after, inside the window.\n",
        KILL_EVERY.as_millis(),
        KILL_FOR.as_secs(),
        KILL_TAIL.as_secs_f64(),
    );
    let _ = writeln!(
        s,
        "Anchors (CLUSTER.md §7, same kind of machine): failed during a rolling restart, \
         new connection / keep-alive: Node hand-rolled 0 / 44, PM2 reload 2 / 42; a worker \
         killed every 500 ms for 10 s: Node 36 (20 timeouts) / 596, PM2 31 / 601; kill → \
         replacement answering: Node 162 ms, PM2 253 ms.\n"
    );
    s
}
