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
