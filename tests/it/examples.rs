//! The examples are what users copy: each one runs here (issue 13: "the
//! examples run in CI") and must succeed, or fail the way it should.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{example_exe, have_node};

/// Runs an example with `args`, for at most a minute.
fn run(name: &str, args: &[&str]) -> Output {
    let mut child = Command::new(example_exe(name))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("the example {name} ran for over a minute");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[track_caller]
fn assert_ok(name: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{name}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_plain_examples_run() {
    for name in [
        "tour",
        "exec_timeout",
        "exec_file",
        "spawn_lines",
        "fork_parent",
        "ssh_worker",
    ] {
        assert_ok(name, &run(name, &[]));
    }
}

#[test]
fn node_interop_runs() {
    if have_node() {
        assert_ok("node_interop", &run("node_interop", &[]));
    }
}

#[test]
fn build_script_shows_live_output_and_a_failing_steps_reason() {
    let out = run("build_script", &[]);
    assert_ok("build_script", &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unused variable"),
        "the warning, live: {stderr}"
    );
    assert!(
        stdout.contains("ran it: hello from a built binary"),
        "{stdout}"
    );
    assert!(
        stdout.contains("failed: exit status: 1\nstderr:\nerror[E0308]"),
        "{stdout}"
    );
}

#[test]
fn task_runner_runs_in_parallel_with_timeouts_and_a_summary() {
    let out = run(
        "task_runner",
        &[
            "-j",
            "2",
            "--timeout",
            "1",
            "echo building; echo built",
            "echo testing >&2; exit 3",
            "sleep 30",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "a task failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "[1:stdout] building",
        "[2:stderr] testing",
        "[1] ok",
        "[2] failed (exit status: 3)",
        "[3] timed out after 1s",
    ] {
        assert!(stdout.contains(needle), "{needle:?} in:\n{stdout}");
    }
}

/// Issue 15: the supervisor example runs a Node cluster app, logs each
/// worker to a directory, reloads on SIGHUP and drains on SIGTERM.
#[test]
fn supervise_logs_reloads_and_drains() {
    if !have_node() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("cp-supervise-{}", std::process::id()));
    let app = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/cluster_app.js");
    let child = Command::new(example_exe("supervise"))
        .args([
            "--workers",
            "2",
            "--logs",
            dir.to_str().unwrap(),
            "--",
            "node",
            app,
        ])
        .env("PORT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let logged = |worker: u32, what: &str| {
        std::fs::read_to_string(dir.join(format!("worker-{worker}.log")))
            .is_ok_and(|log| log.contains(what))
    };
    crate::support::wait_until(Duration::from_secs(30), "both workers ready", || {
        logged(1, "ready") && logged(2, "ready")
    });
    assert!(
        logged(1, "stdout: Worker "),
        "the app's own output is logged"
    );
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    crate::support::wait_until(
        Duration::from_secs(30),
        "the reload's workers ready",
        || logged(3, "ready") && logged(4, "ready"),
    );
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("reloaded 2 workers"), "{err}");
    assert!(err.contains("stopped (drained: true)"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
