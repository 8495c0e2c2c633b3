//! `child_process` against `std::process`, `tokio::process` and Node's
//! `child_process`, in one run.
//!
//! ```sh
//! cargo bench --bench compare -- --quick   # under 2 minutes on 2 cores
//! cargo bench --bench compare              # full run, under 10 minutes
//! cargo bench --bench compare -- spawn ipc # only some workloads
//! ```
//!
//! Workloads: `spawn`, `big`, `exec`, `capture`, `inflight`, `ipc`. Each one
//! runs our crate and its peers in the same run, interleaved round by round
//! (the order rotates every round), after a warm-up of each peer, and reports
//! the median over the rounds. The table is printed and written to
//! `bench/RESULTS.md` with the machine's kernel, CPUs and tool versions.
//!
//! Measurements that must not disturb the others (a parent holding 1 GiB,
//! peak RSS of a capture, 1,000 children in flight, IPC workers) run in a
//! fresh copy of this binary started with `--mode <name> ...`. Node peers are
//! the scripts in `bench/node/`, run with the `node` found in `PATH`; they
//! time themselves, so Node's start-up is not counted.
//!
//! Nothing here asserts: a target that does not hold shows as "no".

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command as StdCommand, Stdio as StdStdio};
use std::time::{Duration, Instant};

use child_process as cp;
use serde_json::{json, Value};

const MIB: usize = 1 << 20;
const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

type Sample = Result<f64, String>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = args.iter().position(|a| a == "--mode") {
        let rest = &args[at + 1..];
        match child_mode(rest) {
            // The IPC worker shares our stdout: it prints nothing.
            Ok(Value::Null) => {}
            Ok(v) => println!("{v}"),
            Err(e) => {
                eprintln!("compare --mode {}: {e}", rest.join(" "));
                std::process::exit(1);
            }
        }
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    // cargo passes `--bench`; any other word selects workloads.
    let only: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    let p = if quick {
        Params::quick()
    } else {
        Params::full()
    };
    let selected = |name: &str| only.is_empty() || only.contains(&name);

    let started = Instant::now();
    let mut report = Report::default();
    let mut ours_small_spawn = None;
    if selected("spawn") {
        let s = bench_spawn(&p);
        ours_small_spawn = s.median_of("ours, null stdio");
        report.sections.push(s);
    }
    if selected("big") {
        report.sections.push(bench_big_parent(&p, ours_small_spawn));
    }
    if selected("exec") {
        report.sections.push(bench_exec(&p));
    }
    if selected("capture") {
        report.sections.push(bench_capture(&p));
    }
    if selected("inflight") {
        report.sections.push(bench_inflight(&p));
    }
    if selected("ipc") {
        report.sections.extend(bench_ipc(&p));
    }
    let markdown = report.render(&p, started.elapsed());
    print!("{markdown}");
    let path = PathBuf::from(MANIFEST_DIR).join("bench/RESULTS.md");
    match std::fs::write(&path, &markdown) {
        Ok(()) => eprintln!("wrote {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
}

/// How much work each workload does; `--quick` shrinks everything.
struct Params {
    quick: bool,
    spawn_n: usize,
    spawn_rounds: usize,
    big_mib: usize,
    big_n: usize,
    big_rounds: usize,
    exec_n: usize,
    exec_rounds: usize,
    capture_bytes: usize,
    capture_rounds: usize,
    producer_rounds: usize,
    inflight_n: usize,
    inflight_sleep: &'static str,
    inflight_rounds: usize,
    ipc_oneway: usize,
    ipc_pingpong: usize,
    ipc_64k: usize,
    ipc_1m: usize,
    ipc_rounds: usize,
}

impl Params {
    fn full() -> Params {
        Params {
            quick: false,
            spawn_n: 300,
            spawn_rounds: 11,
            big_mib: 1024,
            big_n: 50,
            big_rounds: 7,
            exec_n: 300,
            exec_rounds: 11,
            capture_bytes: 1 << 30,
            capture_rounds: 5,
            producer_rounds: 3,
            inflight_n: 1000,
            inflight_sleep: "1",
            inflight_rounds: 3,
            ipc_oneway: 1_000_000,
            ipc_pingpong: 100_000,
            ipc_64k: 4096,
            ipc_1m: 256,
            ipc_rounds: 5,
        }
    }

    fn quick() -> Params {
        Params {
            quick: true,
            spawn_n: 100,
            spawn_rounds: 5,
            big_mib: 1024,
            big_n: 20,
            big_rounds: 3,
            exec_n: 100,
            exec_rounds: 5,
            capture_bytes: 256 << 20,
            capture_rounds: 3,
            producer_rounds: 2,
            inflight_n: 1000,
            inflight_sleep: "1",
            inflight_rounds: 1,
            ipc_oneway: 200_000,
            ipc_pingpong: 20_000,
            ipc_64k: 1024,
            ipc_1m: 64,
            ipc_rounds: 3,
        }
    }
}

// ---------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------

/// One implementation in a workload and its samples, one per round.
struct Peer<'a> {
    label: String,
    run: Box<dyn FnMut() -> Sample + 'a>,
    values: Vec<f64>,
    errors: Vec<String>,
}

impl<'a> Peer<'a> {
    fn new(label: impl Into<String>, run: impl FnMut() -> Sample + 'a) -> Peer<'a> {
        Peer {
            label: label.into(),
            run: Box::new(run),
            values: Vec::new(),
            errors: Vec::new(),
        }
    }
}

/// Warm every peer up once, then `rounds` rounds; in each round every peer
/// runs once, starting with a different peer each round.
fn interleave(name: &str, rounds: usize, peers: &mut [Peer<'_>], warm_up: bool) {
    if warm_up {
        for peer in peers.iter_mut() {
            if let Err(e) = (peer.run)() {
                peer.errors.push(format!("warm-up: {e}"));
            }
        }
    }
    for round in 0..rounds {
        eprint!("\r{name}: round {}/{rounds}   ", round + 1);
        let _ = std::io::stderr().flush();
        for k in 0..peers.len() {
            let peer = &mut peers[(k + round) % peers.len()];
            match (peer.run)() {
                Ok(v) => peer.values.push(v),
                Err(e) => peer.errors.push(e),
            }
        }
    }
    eprintln!();
}

fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// ns per operation of `n` runs of `op`.
fn per_op(n: usize, mut op: impl FnMut() -> Result<(), String>) -> Sample {
    let start = Instant::now();
    for _ in 0..n {
        op()?;
    }
    Ok(start.elapsed().as_nanos() as f64 / n as f64)
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn node_script(name: &str) -> String {
    format!("{MANIFEST_DIR}/bench/node/{name}")
}

/// Run a helper (a Node script or a `--mode` copy of this binary) and parse
/// the JSON line it prints last.
fn run_json(cmd: &mut StdCommand) -> Result<Value, String> {
    let out = cmd
        .stdin(StdStdio::null())
        .output()
        .map_err(|e| format!("{:?}: {e}", cmd.get_program()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        return Err(format!("{}: {}", out.status, tail.join(" / ")));
    }
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line).map_err(|e| format!("bad output {line:?}: {e}"))
}

fn node(script: &str) -> StdCommand {
    let mut cmd = StdCommand::new("node");
    cmd.arg(node_script(script));
    cmd
}

fn myself() -> StdCommand {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = StdCommand::new(exe);
    cmd.arg("--mode");
    cmd
}

fn field(v: &Value, key: &str) -> Result<f64, String> {
    v.get(key)
        .and_then(Value::as_f64)
        .ok_or_else(|| format!("no {key:?} in {v}"))
}

fn check_failures(v: &Value) -> Result<(), String> {
    match v.get("failures").and_then(Value::as_f64) {
        Some(f) if f > 0.0 => Err(format!("{f} failed runs")),
        _ => Ok(()),
    }
}

/// Peak resident set of this process (`VmHWM`), in KiB.
fn peak_rss_kib() -> f64 {
    status_field("VmHWM:")
}

fn rss_kib() -> f64 {
    status_field("VmRSS:")
}

fn status_field(name: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(f64::NAN)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Children of this process that are zombies.
fn zombies() -> usize {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
            let mut it = rest.split(' ');
            let state = it.next();
            let ppid = it.next();
            state == Some("Z") && ppid == Some(me.as_str())
        })
        .count()
}

// ---------------------------------------------------------------------------
// Spawning
// ---------------------------------------------------------------------------

fn ours_true(null: bool) -> cp::Command {
    let mut cmd = cp::Command::new("/bin/true");
    if null {
        cmd.stdin(cp::Stdio::null())
            .stdout(cp::Stdio::null())
            .stderr(cp::Stdio::null());
    }
    cmd
}

async fn ours_spawn_wait(null: bool) -> Result<(), String> {
    let status = ours_true(null)
        .spawn()
        .map_err(|e| e.to_string())?
        .wait()
        .await
        .map_err(|e| e.to_string())?;
    ok_status(status.success())
}

fn std_true() -> StdCommand {
    let mut cmd = StdCommand::new("/bin/true");
    cmd.stdin(StdStdio::null())
        .stdout(StdStdio::null())
        .stderr(StdStdio::null());
    cmd
}

fn std_spawn_wait(pre_exec: bool) -> Result<(), String> {
    let mut cmd = std_true();
    if pre_exec {
        // SAFETY: the closure does nothing, so it is async-signal-safe; it
        // only forces std onto its fork + exec path.
        unsafe { cmd.pre_exec(|| Ok(())) };
    }
    ok_status(cmd.status().map_err(|e| e.to_string())?.success())
}

async fn tokio_spawn_wait() -> Result<(), String> {
    let status = tokio::process::Command::new("/bin/true")
        .stdin(StdStdio::null())
        .stdout(StdStdio::null())
        .stderr(StdStdio::null())
        .status()
        .await
        .map_err(|e| e.to_string())?;
    ok_status(status.success())
}

fn ok_status(success: bool) -> Result<(), String> {
    if success {
        Ok(())
    } else {
        Err("non-zero exit".into())
    }
}

fn bench_spawn(p: &Params) -> Section {
    let n = p.spawn_n;
    let ct = current_thread();
    let mt = multi_thread();
    let node_spawn = |mode: &'static str| {
        move || {
            let v = run_json(node("spawn.js").args([mode, &n.to_string()]))?;
            check_failures(&v)?;
            field(&v, "ns_per_op")
        }
    };
    let mut peers = vec![
        Peer::new("ours, null stdio", || {
            ct.block_on(async { per_op_async(n, || ours_spawn_wait(true)).await })
        }),
        Peer::new("ours, default (piped) stdio", || {
            ct.block_on(async { per_op_async(n, || ours_spawn_wait(false)).await })
        }),
        Peer::new("ours, null stdio, multi-thread runtime", || {
            mt.block_on(async { per_op_async(n, || ours_spawn_wait(true)).await })
        }),
        Peer::new("std `status()`, null stdio", || {
            per_op(n, || std_spawn_wait(false))
        }),
        Peer::new("tokio `status()`, null stdio", || {
            ct.block_on(async { per_op_async(n, tokio_spawn_wait).await })
        }),
        Peer::new("Node `spawn`, stdio 'ignore'", node_spawn("spawn")),
        Peer::new("Node `spawn`, pipes", node_spawn("spawn-pipe")),
        Peer::new("Node `spawnSync`, stdio 'ignore'", node_spawn("spawnSync")),
    ];
    interleave("spawn", p.spawn_rounds, &mut peers, true);
    let mut s = Section::new(
        "spawn + wait `/bin/true`",
        format!(
            "{n} spawns per round, {} rounds; time per spawn+wait. Ours and tokio on a \
             current-thread runtime unless noted; Node awaits `'exit'`.",
            p.spawn_rounds
        ),
        Unit::Time,
        &peers,
    );
    s.compare("ours, null stdio", "std `status()`, null stdio");
    s.compare("ours, null stdio", "tokio `status()`, null stdio");
    s.compare("ours, null stdio", "Node `spawn`, stdio 'ignore'");
    s.compare("ours, null stdio", "Node `spawnSync`, stdio 'ignore'");
    s.compare("ours, default (piped) stdio", "Node `spawn`, pipes");
    s.target_ratio(
        "≤ 1.05× std",
        "ours, null stdio",
        "std `status()`, null stdio",
        1.05,
    );
    s.target_speedup(
        "≥ 1.6× faster than Node `spawn`",
        "ours, null stdio",
        "Node `spawn`, stdio 'ignore'",
        1.6,
    );
    s
}

async fn per_op_async<F, Fut>(n: usize, mut op: F) -> Sample
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    for _ in 0..n {
        op().await?;
    }
    Ok(start.elapsed().as_nanos() as f64 / n as f64)
}

/// `--mode spawnset <hold_mib> <n>`: hold `hold_mib` MiB resident, then time
/// `n` spawns each of ours, std and std with a no-op `pre_exec`.
fn mode_spawnset(hold_mib: usize, n: usize) -> Result<Value, String> {
    let hold = vec![1u8; hold_mib * MIB];
    let rss_mib = rss_kib() / 1024.0;
    let rt = current_thread();
    let warm = (n / 10).max(3);
    let ours = || rt.block_on(async { per_op_async(n, || ours_spawn_wait(true)).await });
    let std = || per_op(n, || std_spawn_wait(false));
    let fork = || per_op(n, || std_spawn_wait(true));
    // Warm-up.
    rt.block_on(async { per_op_async(warm, || ours_spawn_wait(true)).await })?;
    per_op(warm, || std_spawn_wait(false))?;
    per_op(warm, || std_spawn_wait(true))?;
    let result = json!({
        "rss_mib": rss_mib,
        "ours": ours()?,
        "std": std()?,
        "std_pre_exec": fork()?,
    });
    std::hint::black_box(&hold);
    Ok(result)
}

fn bench_big_parent(p: &Params, ours_small_from_spawn: Option<f64>) -> Section {
    let n = p.big_n;
    let big = p.big_mib;
    // One fresh copy of this binary per round and size runs all three Rust
    // peers; its samples are handed to the rows below.
    let sets_cell = std::cell::RefCell::new(Vec::<(usize, Result<Value, String>)>::new());
    let node_rss_cell = std::cell::RefCell::new(Vec::<f64>::new());
    let mut rss_seen: Vec<f64> = Vec::new();
    {
        let sets = &sets_cell;
        let node_rss = &node_rss_cell;
        let mut peers = vec![
            Peer::new("Rust peers, 1 GiB parent", || {
                let v = run_json(myself().args(["spawnset", &big.to_string(), &n.to_string()]));
                sets.borrow_mut().push((big, v.clone()));
                v.map(|_| 0.0)
            }),
            Peer::new("Rust peers, small parent", || {
                let v = run_json(myself().args(["spawnset", "0", &n.to_string()]));
                sets.borrow_mut().push((0, v.clone()));
                v.map(|_| 0.0)
            }),
            Peer::new("Node `spawn`, 1 GiB parent", || {
                let v =
                    run_json(node("spawn.js").args(["spawn", &n.to_string(), &big.to_string()]))?;
                check_failures(&v)?;
                node_rss.borrow_mut().push(field(&v, "rss_mib")?);
                field(&v, "ns_per_op")
            }),
            Peer::new("Node `spawn`, small parent", || {
                let v = run_json(node("spawn.js").args(["spawn", &n.to_string()]))?;
                check_failures(&v)?;
                field(&v, "ns_per_op")
            }),
        ];
        interleave("big parent", p.big_rounds, &mut peers, false);
        let node_rows: Vec<(String, Vec<f64>, Vec<String>)> = peers
            .drain(2..)
            .map(|p| (p.label, p.values, p.errors))
            .collect();
        let errors: Vec<String> = peers.iter().flat_map(|p| p.errors.clone()).collect();
        drop(peers);
        let sets = sets_cell.borrow();
        let node_rss = node_rss_cell.borrow();
        let mut rows = Vec::new();
        for (size, key, label) in [
            (big, "ours", "ours, 1 GiB parent"),
            (big, "std", "std `status()`, 1 GiB parent"),
            (
                big,
                "std_pre_exec",
                "std + no-op `pre_exec` (fork path), 1 GiB parent",
            ),
            (0, "ours", "ours, small parent"),
            (0, "std", "std `status()`, small parent"),
            (0, "std_pre_exec", "std + no-op `pre_exec`, small parent"),
        ] {
            let values: Vec<f64> = sets
                .iter()
                .filter(|(s, _)| *s == size)
                .filter_map(|(_, v)| v.as_ref().ok())
                .filter_map(|v| v.get(key).and_then(Value::as_f64))
                .collect();
            rows.push((label.to_string(), values, errors.clone()));
        }
        rss_seen.extend(
            sets.iter()
                .filter(|(s, _)| *s == big)
                .filter_map(|(_, v)| v.as_ref().ok())
                .filter_map(|v| v.get("rss_mib").and_then(Value::as_f64)),
        );
        rows.extend(node_rows);
        let mut s = Section::from_rows(
            "spawn + wait `/bin/true` from a parent holding 1 GiB resident",
            format!(
                "{n} spawns per round, {} rounds, null stdio. Each round starts fresh \
                 processes that first allocate and touch {big} MiB (Rust: `vec![1u8; ..]`, \
                 measured VmRSS {}; Node: `Buffer.alloc(.., 1)`, measured RSS {}), and \
                 small-parent twins of them.",
                p.big_rounds,
                mib_list(&rss_seen),
                mib_list(&node_rss),
            ),
            Unit::Time,
            rows,
        );
        s.compare("ours, 1 GiB parent", "std `status()`, 1 GiB parent");
        s.compare(
            "ours, 1 GiB parent",
            "std + no-op `pre_exec` (fork path), 1 GiB parent",
        );
        s.compare("ours, 1 GiB parent", "Node `spawn`, 1 GiB parent");
        s.compare("ours, 1 GiB parent", "ours, small parent");
        s.target_ratio(
            "ours ≤ 1.2× our small-parent time",
            "ours, 1 GiB parent",
            "ours, small parent",
            1.2,
        );
        if let (Some(big), Some(small)) = (s.median_of("ours, 1 GiB parent"), ours_small_from_spawn)
        {
            s.notes.push(format!(
                "Against the small-parent figure of the spawn workload ({}): {:.2}×.",
                Unit::Time.fmt(small),
                big / small
            ));
        }
        s
    }
}

fn mib_list(v: &[f64]) -> String {
    match (
        v.iter().copied().reduce(f64::min),
        v.iter().copied().reduce(f64::max),
    ) {
        (Some(lo), Some(hi)) => format!("{lo:.0}–{hi:.0} MiB"),
        _ => "n/a".into(),
    }
}

// ---------------------------------------------------------------------------
// exec
// ---------------------------------------------------------------------------

fn check_hello(stdout: &[u8]) -> Result<(), String> {
    if stdout == b"hello\n" {
        Ok(())
    } else {
        Err(format!(
            "unexpected stdout {:?}",
            String::from_utf8_lossy(stdout)
        ))
    }
}

fn bench_exec(p: &Params) -> Section {
    let n = p.exec_n;
    let ct = current_thread();
    let mut peers = vec![
        Peer::new("ours `exec`", || {
            ct.block_on(per_op_async(n, || async {
                let out = cp::exec("echo hello").await.map_err(|e| e.to_string())?;
                check_hello(&out.stdout)
            }))
        }),
        Peer::new("ours `exec(..).run_sync()`", || {
            per_op(n, || {
                let out = cp::exec("echo hello")
                    .run_sync()
                    .map_err(|e| e.to_string())?;
                check_hello(&out.stdout)
            })
        }),
        Peer::new("std `sh -c` + `output()`", || {
            per_op(n, || {
                let out = StdCommand::new("/bin/sh")
                    .args(["-c", "echo hello"])
                    .output()
                    .map_err(|e| e.to_string())?;
                check_hello(&out.stdout)
            })
        }),
        Peer::new("tokio `sh -c` + `output()`", || {
            ct.block_on(per_op_async(n, || async {
                let out = tokio::process::Command::new("/bin/sh")
                    .args(["-c", "echo hello"])
                    .output()
                    .await
                    .map_err(|e| e.to_string())?;
                check_hello(&out.stdout)
            }))
        }),
        Peer::new("Node `exec` (callback)", || {
            let v = run_json(node("exec.js").arg(n.to_string()))?;
            check_failures(&v)?;
            field(&v, "ns_per_op")
        }),
    ];
    interleave("exec", p.exec_rounds, &mut peers, true);
    let mut s = Section::new(
        "`exec(\"echo hello\")` with the output captured",
        format!(
            "{n} calls per round, {} rounds; time per call, output checked.",
            p.exec_rounds
        ),
        Unit::Time,
        &peers,
    );
    s.compare("ours `exec`", "std `sh -c` + `output()`");
    s.compare("ours `exec`", "tokio `sh -c` + `output()`");
    s.compare("ours `exec`", "Node `exec` (callback)");
    s.compare("ours `exec(..).run_sync()`", "std `sh -c` + `output()`");
    s.target_ratio(
        "≤ 1.05× std",
        "ours `exec`",
        "std `sh -c` + `output()`",
        1.05,
    );
    s.target_speedup(
        "≥ 2× faster than Node `exec`",
        "ours `exec`",
        "Node `exec` (callback)",
        2.0,
    );
    s
}

// ---------------------------------------------------------------------------
// Capturing a large output
// ---------------------------------------------------------------------------

/// `--mode produce <bytes> <chunk>`: write that many zero bytes to stdout,
/// `chunk` bytes per `write`.
fn mode_produce(bytes: usize, chunk: usize) -> Result<Value, String> {
    let buf = vec![0u8; chunk.max(1)];
    let mut out = std::io::stdout().lock();
    let mut left = bytes;
    while left > 0 {
        let k = left.min(buf.len());
        out.write_all(&buf[..k]).map_err(|e| e.to_string())?;
        left -= k;
    }
    out.flush().map_err(|e| e.to_string())?;
    // Nothing else may follow on stdout.
    std::process::exit(0);
}

/// `--mode drain <pipe_bytes> <bytes> <program> <args..>`: the producer's
/// ceiling: read its stdout into one reused 1 MiB buffer and throw it away.
fn mode_drain(pipe: usize, bytes: usize, prog: &[String]) -> Result<Value, String> {
    let start = Instant::now();
    let mut child = StdCommand::new(&prog[0])
        .args(&prog[1..])
        .stdin(StdStdio::null())
        .stdout(StdStdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut stdout = child.stdout.take().expect("piped");
    if pipe > 0 {
        // SAFETY: fcntl(F_SETPIPE_SZ) on a pipe fd we own; it takes an int.
        unsafe { libc::fcntl(stdout.as_raw_fd(), libc::F_SETPIPE_SZ, pipe as libc::c_int) };
    }
    let mut buf = vec![0u8; MIB];
    let mut total = 0;
    loop {
        let k = stdout.read(&mut buf).map_err(|e| e.to_string())?;
        if k == 0 {
            break;
        }
        total += k;
    }
    child.wait().map_err(|e| e.to_string())?;
    let secs = start.elapsed().as_secs_f64();
    if total != bytes {
        return Err(format!("read {total} bytes, expected {bytes}"));
    }
    Ok(json!({ "secs": secs, "len": total }))
}

/// `--mode capture <ours|std|tokio> <bytes> <program> <args..>`: capture the
/// producer's stdout whole, in this fresh process, and report the time and
/// this process's peak RSS.
fn mode_capture(who: &str, bytes: usize, prog: &[String]) -> Result<Value, String> {
    let start = Instant::now();
    let (len, ok) = match who {
        "ours" => {
            let out = current_thread()
                .block_on(async {
                    cp::exec_file(&prog[0], &prog[1..])
                        .max_buffer(usize::MAX)
                        .await
                })
                .map_err(|e| e.to_string())?;
            (out.stdout.len(), out.status.success())
        }
        "std" => {
            let out = StdCommand::new(&prog[0])
                .args(&prog[1..])
                .output()
                .map_err(|e| e.to_string())?;
            (out.stdout.len(), out.status.success())
        }
        "tokio" => {
            let out = current_thread()
                .block_on(async {
                    tokio::process::Command::new(&prog[0])
                        .args(&prog[1..])
                        .output()
                        .await
                })
                .map_err(|e| e.to_string())?;
            (out.stdout.len(), out.status.success())
        }
        _ => return Err(format!("unknown capture peer {who}")),
    };
    let secs = start.elapsed().as_secs_f64();
    if len != bytes || !ok {
        return Err(format!("captured {len} bytes (expected {bytes}), ok={ok}"));
    }
    Ok(json!({ "secs": secs, "len": len, "maxrss_kib": peak_rss_kib() }))
}

fn bench_capture(p: &Params) -> Section {
    let bytes = p.capture_bytes;
    let exe = std::env::current_exe()
        .expect("current_exe")
        .to_string_lossy()
        .into_owned();
    let b = bytes.to_string();
    let producers: Vec<(&str, Vec<String>)> = vec![
        (
            "`head -c N /dev/zero`",
            vec!["head".into(), "-c".into(), b.clone(), "/dev/zero".into()],
        ),
        (
            "`dd if=/dev/zero bs=1M`",
            vec![
                "dd".into(),
                "if=/dev/zero".into(),
                "bs=1M".into(),
                format!("count={}", bytes / MIB),
                "status=none".into(),
            ],
        ),
        (
            "`dd if=/dev/zero bs=64K`",
            vec![
                "dd".into(),
                "if=/dev/zero".into(),
                "bs=64K".into(),
                format!("count={}", bytes / (64 << 10)),
                "status=none".into(),
            ],
        ),
        (
            "this binary, 64 KiB `write`s",
            vec![
                exe.clone(),
                "--mode".into(),
                "produce".into(),
                b.clone(),
                (64 << 10).to_string(),
            ],
        ),
        (
            "this binary, 1 MiB `write`s",
            vec![
                exe,
                "--mode".into(),
                "produce".into(),
                b.clone(),
                MIB.to_string(),
            ],
        ),
    ];
    // The producer's ceiling: a consumer that reads into one reused buffer.
    let mut ceiling_peers: Vec<Peer<'_>> = Vec::new();
    for (name, argv) in &producers {
        for pipe in [0usize, MIB] {
            let argv = argv.clone();
            let b = b.clone();
            let label = if pipe == 0 {
                format!("{name}, 64 KiB pipe")
            } else {
                format!("{name}, 1 MiB pipe")
            };
            ceiling_peers.push(Peer::new(label, move || {
                let v = run_json(myself().args(["drain", &pipe.to_string(), &b]).args(&argv))?;
                Ok(field(&v, "len")? / field(&v, "secs")? / 1e9)
            }));
        }
    }
    interleave("producers", p.producer_rounds, &mut ceiling_peers, false);
    // Pick the producer whose worse ceiling (default pipe or 1 MiB pipe) is
    // the best: it must not be the bottleneck for any consumer.
    let best = (0..producers.len())
        .filter_map(|i| {
            let a = median(&ceiling_peers[2 * i].values)?;
            let b = median(&ceiling_peers[2 * i + 1].values)?;
            Some((i, a.min(b)))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(0, |(i, _)| i);
    let (producer_name, producer) = producers[best].clone();
    let ceiling_rows: Vec<Row> = ceiling_peers.iter().map(Row::from_peer).collect();

    let rss_cell = std::cell::RefCell::new(std::collections::BTreeMap::<String, Vec<f64>>::new());
    let record = |label: &str, v: &Value| -> Sample {
        let secs = field(v, "secs")?;
        let kib = field(v, "maxrss_kib")?;
        rss_cell
            .borrow_mut()
            .entry(label.to_string())
            .or_default()
            .push(kib / 1024.0);
        Ok(bytes as f64 / secs / 1e9)
    };
    let rust = |who: &'static str, label: &'static str| {
        let producer = &producer;
        let b = &b;
        let record = &record;
        move || {
            let v = run_json(myself().args(["capture", who, b]).args(producer))?;
            record(label, &v)
        }
    };
    let mut peers = vec![
        Peer::new(
            "ours `exec_file(..).max_buffer(usize::MAX)`",
            rust("ours", "ours `exec_file(..).max_buffer(usize::MAX)`"),
        ),
        Peer::new("std `output()`", rust("std", "std `output()`")),
        Peer::new("tokio `output()`", rust("tokio", "tokio `output()`")),
        Peer::new("Node `execFile`, buffer, maxBuffer ∞", || {
            let v = run_json(node("capture.js").arg(&b).args(&producer))?;
            if v.get("ok") != Some(&Value::Bool(true)) {
                return Err(format!("node capture failed: {v}"));
            }
            record("Node `execFile`, buffer, maxBuffer ∞", &v)
        }),
    ];
    interleave("capture", p.capture_rounds, &mut peers, true);
    let mut rows: Vec<Row> = peers.iter().map(Row::from_peer).collect();
    drop(peers);
    let rss = rss_cell.into_inner();
    for row in &mut rows {
        if let Some(v) = rss.get(&row.label) {
            // The warm-up run's RSS is in there too; it is a capture like the others.
            let hi = v.iter().copied().fold(f64::NAN, f64::max);
            row.extra = format!(
                "peak RSS {:.0} MiB (max {:.0})",
                median(v).unwrap_or(f64::NAN),
                hi
            );
        }
    }
    let mib = bytes / MIB;
    let mut s = Section::from_built_rows(
        &format!("capture {} of stdout", human_bytes(bytes)),
        format!(
            "{} rounds; each capture runs in a fresh process (peak RSS = its VmHWM / \
             Node's `maxRSS`), producer {producer_name} (the best ceiling below, over both pipe sizes), stdout only. GB/s = 10⁹ bytes/s.{}",
            p.capture_rounds,
            if p.quick {
                " Quick mode: a smaller payload than the full run's 1 GiB."
            } else {
                ""
            }
        ),
        Unit::GBps,
        rows,
    );
    let ours = "ours `exec_file(..).max_buffer(usize::MAX)`";
    s.compare(ours, "std `output()`");
    s.compare(ours, "tokio `output()`");
    s.compare(ours, "Node `execFile`, buffer, maxBuffer ∞");
    s.target_speedup(
        "≥ 1.8× std `output()` throughput",
        ours,
        "std `output()`",
        1.8,
    );
    let limit = (mib + 64) as f64;
    let worst = rss
        .get(ours)
        .map(|v| v.iter().copied().fold(f64::NAN, f64::max));
    s.targets.push(Target {
        text: format!("peak RSS ≤ payload + 64 MiB ({limit:.0} MiB)"),
        measured: worst.map_or("n/a".into(), |w| format!("{w:.0} MiB (worst round)")),
        holds: worst.map(|w| w <= limit),
    });
    s.sub_tables.push((
        "Producer ceiling: read into one reused 1 MiB buffer and discarded".into(),
        ceiling_rows,
    ));
    s
}

fn human_bytes(b: usize) -> String {
    if b >= 1 << 30 && b % (1 << 30) == 0 {
        format!("{} GiB", b >> 30)
    } else {
        format!("{} MiB", b >> 20)
    }
}

// ---------------------------------------------------------------------------
// Many children in flight
// ---------------------------------------------------------------------------

/// `--mode inflight <ours|tokio> <n> <secs>`: start `n` `sleep <secs>` at
/// once, then wait for all of them.
fn mode_inflight(who: &str, n: usize, secs: &str) -> Result<Value, String> {
    let rt = current_thread();
    // One spawn first: one-time fds (our shared /dev/null, tokio's signal
    // pipe) are then open before the count starts.
    rt.block_on(async {
        match who {
            "ours" => ours_spawn_wait(true).await,
            _ => tokio_spawn_wait().await,
        }
    })?;
    let base_fds = open_fds();
    let start = Instant::now();
    let (spawn_ms, peak_fds, failures) = rt.block_on(async {
        let mut failures = 0usize;
        match who {
            "ours" => {
                let mut children = Vec::with_capacity(n);
                for _ in 0..n {
                    match cp::Command::new("sleep")
                        .arg(secs)
                        .stdin(cp::Stdio::null())
                        .stdout(cp::Stdio::null())
                        .stderr(cp::Stdio::null())
                        .spawn()
                    {
                        Ok(c) => children.push(c),
                        Err(_) => failures += 1,
                    }
                }
                let spawn_ms = start.elapsed().as_secs_f64() * 1e3;
                let peak = open_fds();
                let results =
                    futures::future::join_all(children.iter_mut().map(|c| c.wait())).await;
                failures += results
                    .iter()
                    .filter(|r| !matches!(r, Ok(s) if s.success()))
                    .count();
                (spawn_ms, peak, failures)
            }
            _ => {
                let mut children = Vec::with_capacity(n);
                for _ in 0..n {
                    match tokio::process::Command::new("sleep")
                        .arg(secs)
                        .stdin(StdStdio::null())
                        .stdout(StdStdio::null())
                        .stderr(StdStdio::null())
                        .spawn()
                    {
                        Ok(c) => children.push(c),
                        Err(_) => failures += 1,
                    }
                }
                let spawn_ms = start.elapsed().as_secs_f64() * 1e3;
                let peak = open_fds();
                let results =
                    futures::future::join_all(children.iter_mut().map(|c| c.wait())).await;
                failures += results
                    .iter()
                    .filter(|r| !matches!(r, Ok(s) if s.success()))
                    .count();
                (spawn_ms, peak, failures)
            }
        }
    });
    let wall_ms = start.elapsed().as_secs_f64() * 1e3;
    std::thread::sleep(Duration::from_millis(50));
    Ok(json!({
        "wall_ms": wall_ms,
        "spawn_ms": spawn_ms,
        "failures": failures,
        "base_fds": base_fds,
        "peak_fds": peak_fds,
        "fds_after": open_fds(),
        "zombies_after": zombies(),
    }))
}

fn bench_inflight(p: &Params) -> Section {
    let n = p.inflight_n.to_string();
    let secs = p.inflight_sleep;
    let details = std::cell::RefCell::new(std::collections::BTreeMap::<String, Vec<Value>>::new());
    let run = |label: &'static str, mut cmd: StdCommand| {
        let details = &details;
        move || {
            let v = run_json(&mut cmd)?;
            let wall = field(&v, "wall_ms")?;
            details
                .borrow_mut()
                .entry(label.to_string())
                .or_default()
                .push(v);
            Ok(wall * 1e6)
        }
    };
    let cmd = |who: &str| {
        let mut c = myself();
        c.args(["inflight", who, &n, secs]);
        c
    };
    let mut node_cmd = node("inflight.js");
    node_cmd.args([&n, secs]);
    let mut peers = vec![
        Peer::new("ours", run("ours", cmd("ours"))),
        Peer::new("tokio", run("tokio", cmd("tokio"))),
        Peer::new("Node `spawn`", run("Node `spawn`", node_cmd)),
    ];
    interleave("inflight", p.inflight_rounds, &mut peers, false);
    let mut rows: Vec<Row> = peers.iter().map(Row::from_peer).collect();
    drop(peers);
    let details = details.into_inner();
    let mut ours_ok = None;
    for row in &mut rows {
        let Some(runs) = details.get(&row.label) else {
            continue;
        };
        let max = |k: &str| {
            runs.iter()
                .filter_map(|v| v.get(k).and_then(Value::as_f64))
                .fold(0.0, f64::max)
        };
        let sum = |k: &str| {
            runs.iter()
                .filter_map(|v| v.get(k).and_then(Value::as_f64))
                .sum::<f64>()
        };
        let leak = runs
            .iter()
            .map(|v| {
                v.get("fds_after").and_then(Value::as_f64).unwrap_or(0.0)
                    - v.get("base_fds").and_then(Value::as_f64).unwrap_or(0.0)
            })
            .fold(0.0, f64::max);
        let spawn_ms: Vec<f64> = runs
            .iter()
            .filter_map(|v| v.get("spawn_ms").and_then(Value::as_f64))
            .collect();
        row.extra = format!(
            "all started in {:.0} ms; failures {}; peak open fds {} (base {}); fds leaked {}; zombies after {}",
            median(&spawn_ms).unwrap_or(f64::NAN),
            sum("failures"),
            max("peak_fds"),
            max("base_fds"),
            leak,
            max("zombies_after"),
        );
        if row.label == "ours" {
            ours_ok = Some(
                sum("failures") == 0.0
                    && leak <= 0.0
                    && max("zombies_after") == 0.0
                    && row.errors.is_empty(),
            );
        }
    }
    let mut s = Section::from_built_rows(
        &format!("{n} children in flight at once"),
        format!(
            "`sleep {secs}` × {n}, null stdio, all started before any is awaited; \
             {} round(s); wall time from the first spawn to the last exit, in a fresh \
             process each.",
            p.inflight_rounds
        ),
        Unit::Ms,
        rows,
    );
    s.compare("ours", "tokio");
    s.compare("ours", "Node `spawn`");
    s.targets.push(Target {
        text: "no failure, no fd leak, no zombie".into(),
        measured: match ours_ok {
            Some(true) => "none".into(),
            Some(false) => "see row".into(),
            None => "n/a".into(),
        },
        holds: ours_ok,
    });
    s
}

// ---------------------------------------------------------------------------
// IPC
// ---------------------------------------------------------------------------

/// The IPC workloads. `count` messages (or round trips); `size` is the
/// payload of a bulk message. Returns messages/s (or MB/s for bulk).
#[derive(Clone, Copy)]
enum Ipc {
    OneWay,
    PingPong,
    Bulk(usize),
}

impl Ipc {
    fn node_args(self, count: usize) -> Vec<String> {
        match self {
            Ipc::OneWay => vec!["oneway".into(), count.to_string()],
            Ipc::PingPong => vec!["pingpong".into(), count.to_string()],
            Ipc::Bulk(size) => vec!["bulk".into(), count.to_string(), size.to_string()],
        }
    }
}

fn bench_ipc(p: &Params) -> Vec<Section> {
    let workloads = [
        (
            Ipc::OneWay,
            p.ipc_oneway,
            "IPC one-way, small messages",
            Unit::PerSec("msg/s"),
            "≥ 10× Node",
            10.0,
        ),
        (
            Ipc::PingPong,
            p.ipc_pingpong,
            "IPC ping-pong",
            Unit::PerSec("round trips/s"),
            "≥ 2× Node",
            2.0,
        ),
        (
            Ipc::Bulk(64 << 10),
            p.ipc_64k,
            "IPC 64 KiB messages",
            Unit::MBps,
            "≥ 3× Node `json`",
            3.0,
        ),
        (
            Ipc::Bulk(1 << 20),
            p.ipc_1m,
            "IPC 1 MiB messages",
            Unit::MBps,
            "≥ 3× Node `json`",
            3.0,
        ),
    ];
    let mut sections = Vec::new();
    for (kind, count, title, unit, target, factor) in workloads {
        let rust_serial = move || rust_ipc(kind, count, false);
        let rust_batched = move || rust_ipc(kind, count, true);
        let node_peer = move || {
            let v = run_json(node("ipc.js").args(kind.node_args(count)))?;
            match kind {
                Ipc::Bulk(_) => field(&v, "mb_per_sec"),
                _ => field(&v, "per_sec"),
            }
        };
        let mut peers = vec![Peer::new(
            "ours, Rust ↔ Rust, `send().await` one by one",
            rust_serial,
        )];
        if !matches!(kind, Ipc::PingPong) {
            peers.push(Peer::new(
                "ours, Rust ↔ Rust, `feed()` then one `flush()` (Node's `send` semantics)",
                rust_batched,
            ));
        }
        peers.push(Peer::new("Node ↔ Node, `json`", node_peer));
        interleave(title, p.ipc_rounds, &mut peers, false);
        let what = match kind {
            Ipc::OneWay => format!("{count} messages `{{\"n\":i}}` parent → child, then one reply"),
            Ipc::PingPong => format!("{count} round trips of `{{\"n\":i,\"echo\":true}}`"),
            Ipc::Bulk(size) => format!(
                "{count} messages `{{\"d\":\"xxx…\"}}` of {} KiB payload parent → child, then one reply; MB/s of payload",
                size >> 10
            ),
        };
        let mut s = Section::new(
            title,
            format!(
                "{what}; {} rounds, each a fresh parent/child pair after a warm-up of a tenth of \
                 the count.{}",
                p.ipc_rounds,
                if p.quick {
                    " Quick mode: fewer messages than the full run."
                } else {
                    ""
                }
            ),
            unit,
            &peers,
        );
        let serial = "ours, Rust ↔ Rust, `send().await` one by one";
        let fed = "ours, Rust ↔ Rust, `feed()` then one `flush()` (Node's `send` semantics)";
        s.compare(serial, "Node ↔ Node, `json`");
        // Node's `send` returns before the write, as `feed` does: the target
        // compares like with like. Ping-pong waits for each reply anyway.
        let ours = if matches!(kind, Ipc::PingPong) {
            serial
        } else {
            s.compare(fed, "Node ↔ Node, `json`");
            fed
        };
        s.target_speedup(target, ours, "Node ↔ Node, `json`", factor);
        sections.push(s);
    }
    sections
}

/// The Rust ↔ Rust side of the IPC workloads: this binary forks a copy of
/// itself (`--mode ipc-child`) with `cp::fork`, and the copy answers through
/// `cp::Channel::from_parent()`.
fn rust_ipc(kind: Ipc, count: usize, concurrent: bool) -> Sample {
    current_thread().block_on(async move {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = cp::fork(exe)
            .args(["--mode", "ipc-child"])
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut channel = child.take_channel().ok_or("fork gave no channel")?;
        ipc_phase(&mut channel, kind, (count / 10).max(1), concurrent).await?;
        let start = Instant::now();
        ipc_phase(&mut channel, kind, count, concurrent).await?;
        let secs = start.elapsed().as_secs_f64();
        channel.disconnect();
        child.wait().await.map_err(|e| e.to_string())?;
        Ok(match kind {
            Ipc::Bulk(size) => (count * size) as f64 / secs / 1e6,
            _ => count as f64 / secs,
        })
    })
}

/// A message of the IPC workloads, in the shapes the Node scripts use.
#[derive(serde::Serialize, serde::Deserialize, Default, Clone)]
struct Msg {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    n: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    echo: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    done: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    d: Option<String>,
}

async fn ipc_phase(
    channel: &mut cp::Channel,
    kind: Ipc,
    count: usize,
    concurrent: bool,
) -> Result<(), String> {
    let e = |e: cp::Error| e.to_string();
    let msg = |i: usize| match kind {
        Ipc::OneWay => Msg {
            n: Some(i as u64),
            ..Msg::default()
        },
        Ipc::PingPong => Msg {
            n: Some(i as u64),
            echo: Some(true),
            ..Msg::default()
        },
        Ipc::Bulk(size) => Msg {
            d: Some("x".repeat(size)),
            ..Msg::default()
        },
    };
    if let Ipc::PingPong = kind {
        for i in 0..count {
            channel.send(&msg(i)).await.map_err(e)?;
            channel
                .recv::<Msg>()
                .await
                .map_err(e)?
                .ok_or("child hung up")?;
        }
        return Ok(());
    }
    channel
        .send(&Msg {
            start: Some(count as u64),
            ..Msg::default()
        })
        .await
        .map_err(e)?;
    // Bulk messages are built once, as the Node script does.
    let bulk = matches!(kind, Ipc::Bulk(_)).then(|| msg(0));
    let pick = |i: usize| bulk.clone().unwrap_or_else(|| msg(i));
    if concurrent {
        // Node's `process.send` returns before the write; `feed` is ours.
        for i in 0..count {
            match &bulk {
                Some(m) => channel.feed(m).await.map_err(e)?,
                None => channel.feed(&pick(i)).await.map_err(e)?,
            }
        }
        channel.flush().await.map_err(e)?;
    } else if let Some(m) = &bulk {
        for _ in 0..count {
            channel.send(m).await.map_err(e)?;
        }
    } else {
        for i in 0..count {
            channel.send(&msg(i)).await.map_err(e)?;
        }
    }
    let done = channel
        .recv::<Msg>()
        .await
        .map_err(e)?
        .ok_or("child hung up")?;
    if done.done != Some(count as u64) {
        return Err("child counted wrong".into());
    }
    Ok(())
}

/// `--mode ipc-child`: the worker side, started by `cp::fork`.
fn mode_ipc_child() -> Result<Value, String> {
    current_thread().block_on(async {
        let e = |e: cp::Error| e.to_string();
        let mut parent = cp::Channel::from_parent()
            .map_err(e)?
            .ok_or("not started by fork")?;
        let (mut expected, mut got) = (0u64, 0u64);
        while let Some(m) = parent.recv::<Msg>().await.map_err(e)? {
            if let Some(k) = m.start {
                (expected, got) = (k, 0);
            } else if m.echo == Some(true) {
                parent.send(&m).await.map_err(e)?;
            } else {
                got += 1;
                if got == expected {
                    parent
                        .send(&Msg {
                            done: Some(got),
                            ..Msg::default()
                        })
                        .await
                        .map_err(e)?;
                }
            }
        }
        Ok(Value::Null)
    })
}

// ---------------------------------------------------------------------------
// Modes of a re-executed copy of this binary
// ---------------------------------------------------------------------------

fn child_mode(args: &[String]) -> Result<Value, String> {
    let num = |i: usize| -> Result<usize, String> {
        args.get(i)
            .ok_or("missing argument")?
            .parse()
            .map_err(|e| format!("{e}"))
    };
    match args.first().map(String::as_str) {
        Some("spawnset") => mode_spawnset(num(1)?, num(2)?),
        Some("produce") => mode_produce(num(1)?, num(2)?),
        Some("drain") => mode_drain(num(1)?, num(2)?, &args[3..]),
        Some("capture") => mode_capture(&args[1], num(2)?, &args[3..]),
        Some("inflight") => mode_inflight(&args[1], num(2)?, &args[3]),
        Some("ipc-child") => mode_ipc_child(),
        // For profiling one implementation alone, e.g.
        // `strace -c -f target/release/deps/compare-* --mode loop ours 1000`.
        Some("loop") => mode_loop(&args[1], num(2)?),
        other => Err(format!("unknown mode {other:?}")),
    }
}

/// `--mode loop <what> <n>`, `what` one of `ours`, `ours-piped`, `std`,
/// `std-pre-exec`, `tokio`, `exec`, `std-exec`, `ipc-oneway`,
/// `ipc-oneway-concurrent`, `ipc-pingpong`.
fn mode_loop(who: &str, n: usize) -> Result<Value, String> {
    let rt = current_thread();
    let ns = match who {
        "ours" => rt.block_on(per_op_async(n, || ours_spawn_wait(true)))?,
        "ours-piped" => rt.block_on(per_op_async(n, || ours_spawn_wait(false)))?,
        "std" => per_op(n, || std_spawn_wait(false))?,
        "std-pre-exec" => per_op(n, || std_spawn_wait(true))?,
        "tokio" => rt.block_on(per_op_async(n, tokio_spawn_wait))?,
        "exec" => rt.block_on(per_op_async(n, || async {
            let out = cp::exec("echo hello").await.map_err(|e| e.to_string())?;
            check_hello(&out.stdout)
        }))?,
        "ipc-oneway" => 1e9 / rust_ipc(Ipc::OneWay, n, false)?,
        "ipc-oneway-concurrent" => 1e9 / rust_ipc(Ipc::OneWay, n, true)?,
        "ipc-pingpong" => 1e9 / rust_ipc(Ipc::PingPong, n, false)?,
        "ipc-bulk64k" => rust_ipc(Ipc::Bulk(64 << 10), n, false)?,
        "std-exec" => per_op(n, || {
            let out = StdCommand::new("/bin/sh")
                .args(["-c", "echo hello"])
                .output()
                .map_err(|e| e.to_string())?;
            check_hello(&out.stdout)
        })?,
        _ => return Err(format!("unknown loop {who}")),
    };
    Ok(json!({ "ns_per_op": ns }))
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Unit {
    /// Samples in ns per operation; lower is better.
    Time,
    /// Samples in ns; shown in ms; lower is better.
    Ms,
    /// GB/s; higher is better.
    GBps,
    /// MB/s; higher is better.
    MBps,
    /// Events per second; higher is better.
    PerSec(&'static str),
}

impl Unit {
    fn higher_is_better(self) -> bool {
        matches!(self, Unit::GBps | Unit::MBps | Unit::PerSec(_))
    }

    fn fmt(self, v: f64) -> String {
        match self {
            Unit::Time => format!("{:.0} µs", v / 1e3),
            Unit::Ms => format!("{:.0} ms", v / 1e6),
            Unit::GBps => format!("{v:.2} GB/s"),
            Unit::MBps => format!("{v:.0} MB/s"),
            Unit::PerSec(what) => {
                if v >= 1e6 {
                    format!("{:.2}M {what}", v / 1e6)
                } else {
                    format!("{:.1}k {what}", v / 1e3)
                }
            }
        }
    }

    fn fmt_bare(self, v: f64) -> String {
        let s = self.fmt(v);
        s.split(' ').next().unwrap_or("").to_string()
    }

    /// How much better `ours` is than `peer` (> 1: ours is better).
    fn advantage(self, ours: f64, peer: f64) -> f64 {
        if self.higher_is_better() {
            ours / peer
        } else {
            peer / ours
        }
    }
}

struct Row {
    label: String,
    values: Vec<f64>,
    errors: Vec<String>,
    extra: String,
}

impl Row {
    fn from_peer(p: &Peer<'_>) -> Row {
        Row {
            label: p.label.clone(),
            values: p.values.clone(),
            errors: p.errors.clone(),
            extra: String::new(),
        }
    }
}

struct Target {
    text: String,
    measured: String,
    holds: Option<bool>,
}

struct Section {
    title: String,
    setup: String,
    unit: Unit,
    rows: Vec<Row>,
    /// `(ours, peer)`: a "vs" column entry on the peer's row.
    comparisons: Vec<(String, String)>,
    targets: Vec<Target>,
    notes: Vec<String>,
    sub_tables: Vec<(String, Vec<Row>)>,
}

impl Section {
    fn new(title: &str, setup: String, unit: Unit, peers: &[Peer<'_>]) -> Section {
        Section::from_built_rows(
            title,
            setup,
            unit,
            peers.iter().map(Row::from_peer).collect(),
        )
    }

    fn from_rows(
        title: &str,
        setup: String,
        unit: Unit,
        rows: Vec<(String, Vec<f64>, Vec<String>)>,
    ) -> Section {
        let rows = rows
            .into_iter()
            .map(|(label, values, errors)| Row {
                label,
                values,
                errors,
                extra: String::new(),
            })
            .collect();
        Section::from_built_rows(title, setup, unit, rows)
    }

    fn from_built_rows(title: &str, setup: String, unit: Unit, rows: Vec<Row>) -> Section {
        Section {
            title: title.to_string(),
            setup,
            unit,
            rows,
            comparisons: Vec::new(),
            targets: Vec::new(),
            notes: Vec::new(),
            sub_tables: Vec::new(),
        }
    }

    fn median_of(&self, label: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.label == label)
            .and_then(|r| median(&r.values))
    }

    fn compare(&mut self, ours: &str, peer: &str) {
        self.comparisons.push((ours.into(), peer.into()));
    }

    /// ours / peer (times) must be at most `limit`.
    fn target_ratio(&mut self, text: &str, ours: &str, peer: &str, limit: f64) {
        let m = self.median_of(ours).zip(self.median_of(peer));
        self.targets.push(Target {
            text: text.into(),
            measured: m.map_or("n/a".into(), |(o, p)| format!("{:.2}×", o / p)),
            holds: m.map(|(o, p)| o / p <= limit),
        });
    }

    /// ours must be at least `factor` times better than peer.
    fn target_speedup(&mut self, text: &str, ours: &str, peer: &str, factor: f64) {
        let unit = self.unit;
        let m = self.median_of(ours).zip(self.median_of(peer));
        self.targets.push(Target {
            text: text.into(),
            measured: m.map_or("n/a".into(), |(o, p)| {
                format!("{:.2}×", unit.advantage(o, p))
            }),
            holds: m.map(|(o, p)| unit.advantage(o, p) >= factor),
        });
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(out, "### {}\n\n{}\n", self.title, self.setup);
        let _ = writeln!(
            out,
            "| implementation | median | min – max | ours vs this | notes |"
        );
        let _ = writeln!(out, "|---|---:|---:|---|---|");
        for row in &self.rows {
            self.render_row(out, row, true);
        }
        out.push('\n');
        for note in &self.notes {
            let _ = writeln!(out, "{note}\n");
        }
        for (title, rows) in &self.sub_tables {
            let _ = writeln!(out, "{title}:\n");
            let _ = writeln!(out, "| producer | median | min – max | | |");
            let _ = writeln!(out, "|---|---:|---:|---|---|");
            for row in rows {
                self.render_row(out, row, false);
            }
            out.push('\n');
        }
    }

    fn render_row(&self, out: &mut String, row: &Row, with_vs: bool) {
        let unit = self.unit;
        let med = median(&row.values);
        let (lo, hi) = (
            row.values.iter().copied().reduce(f64::min),
            row.values.iter().copied().reduce(f64::max),
        );
        let vs: Vec<String> = if with_vs {
            self.comparisons
                .iter()
                .filter(|(_, peer)| *peer == row.label)
                .filter_map(|(ours, _)| {
                    let o = self.median_of(ours)?;
                    let a = unit.advantage(o, med?);
                    let word = if a >= 1.0 {
                        format!("{a:.2}× better")
                    } else {
                        format!("{:.2}× worse", 1.0 / a)
                    };
                    Some(format!("{}: {word}", short(ours)))
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut notes = row.extra.clone();
        if !row.errors.is_empty() {
            let mut e = row.errors[0].clone();
            e.truncate(160);
            if !notes.is_empty() {
                notes.push_str("; ");
            }
            let _ = write!(
                notes,
                "{} error(s): {}",
                row.errors.len(),
                e.replace('|', "/")
            );
        }
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            row.label,
            med.map_or("n/a".into(), |m| unit.fmt(m)),
            match (lo, hi) {
                (Some(lo), Some(hi)) => format!("{} – {}", unit.fmt_bare(lo), unit.fmt_bare(hi)),
                _ => String::new(),
            },
            vs.join("; "),
            notes,
        );
    }
}

/// The first words of a label, for the "ours vs this" column.
fn short(label: &str) -> String {
    label.split(',').next().unwrap_or(label).to_string()
}

#[derive(Default)]
struct Report {
    sections: Vec<Section>,
}

impl Report {
    fn render(&self, p: &Params, took: Duration) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# child_process: benchmark against std, tokio and Node\n\n\
             Produced by `cargo bench --bench compare{}` on {} (took {:.0} s). \
             Medians over interleaved rounds; \"ours vs this\" says how much better \
             (or worse) our median is than that row's.\n",
            if p.quick { " -- --quick" } else { "" },
            command_line_out("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            took.as_secs_f64(),
        );
        if p.quick {
            let _ = writeln!(
                out,
                "**Quick mode**: fewer rounds and iterations, a {} capture instead of 1 GiB, \
                 fewer IPC messages. Use the full run for the record.\n",
                human_bytes(p.capture_bytes)
            );
        }
        let _ = writeln!(out, "## Machine\n");
        for (k, v) in machine() {
            let _ = writeln!(out, "- {k}: {v}");
        }
        let _ = writeln!(out, "\n## Targets\n");
        let _ = writeln!(out, "| workload | target | measured | holds |");
        let _ = writeln!(out, "|---|---|---|---|");
        for s in &self.sections {
            for t in &s.targets {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} |",
                    s.title,
                    t.text,
                    t.measured,
                    match t.holds {
                        Some(true) => "yes",
                        Some(false) => "**no**",
                        None => "n/a",
                    }
                );
            }
        }
        let _ = writeln!(out, "\n## Workloads\n");
        for s in &self.sections {
            s.render(&mut out);
        }
        out
    }
}

fn command_line_out(prog: &str, args: &[&str]) -> String {
    StdCommand::new(prog)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn machine() -> Vec<(&'static str, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let lock = std::fs::read_to_string(format!("{MANIFEST_DIR}/Cargo.lock")).unwrap_or_default();
    let tokio = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"tokio\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "unknown".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    vec![
        (
            "kernel",
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| command_line_out("uname", &["-r"])),
        ),
        ("CPUs", format!("{cpus} × {model}")),
        ("memory", mem),
        ("rustc", command_line_out("rustc", &["--version"])),
        ("node", command_line_out("node", &["--version"])),
        ("glibc", command_line_out("getconf", &["GNU_LIBC_VERSION"])),
        ("tokio", tokio),
        (
            "transparent huge pages",
            std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
        ),
    ]
}
