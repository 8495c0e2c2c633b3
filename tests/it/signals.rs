//! Issue 10: a terminal's Ctrl-C (or a service manager's SIGTERM) must not
//! orphan `exec` children, which live in process groups of their own. The
//! test plays the terminal: it signals a program (`fixture_signals`) that is
//! running an `exec`, then checks from `/proc` that the child is gone, and
//! how the program ended.

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{alive, example_exe, wait_until, TempDir};

/// Starts the fixture and waits until its `exec` child runs; returns the
/// program and the child's pid.
fn start(handler: &str, form: &str, dir: &TempDir) -> (Child, i32) {
    let pidfile = dir.0.join("pid");
    let program = Command::new(example_exe("fixture_signals"))
        .args([handler, form, pidfile.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(20), "the exec child started", || {
        pidfile.exists()
    });
    let pid = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(pid));
    (program, pid)
}

fn signal(program: &Child, signal: i32) {
    // The test is the terminal: it signals the program, not the group.
    let ret = unsafe_kill(program.id() as i32, signal);
    assert_eq!(ret, 0);
}

fn unsafe_kill(pid: i32, signal: i32) -> i32 {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::try_from(signal).unwrap(),
    )
    .map_or(-1, |()| 0)
}

/// Waits for the program to end and returns its status and stdout.
fn finish(program: Child) -> (std::process::ExitStatus, String) {
    let out = program.wait_with_output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[track_caller]
fn assert_gone(pid: i32) {
    wait_until(Duration::from_secs(10), "the exec child died", || {
        !alive(pid)
    });
}

/// Without a handler of its own the program dies of the signal (its status
/// says which), and the signal reached the child first: nothing survives.
#[test]
fn issue_10_terminal_signals_reach_exec_children_and_still_kill_the_parent() {
    for (sig, form) in [
        (libc::SIGINT, "sync"),
        (libc::SIGINT, "async"),
        (libc::SIGTERM, "sync"),
        (libc::SIGTERM, "async"),
        (libc::SIGHUP, "async"),
        (libc::SIGQUIT, "sync"),
        // The group outlives its leader: the last stage still gets it.
        (libc::SIGINT, "pipeline"),
        (libc::SIGTERM, "pipeline-sync"),
    ] {
        let dir = TempDir::new("sig");
        let (program, child) = start("none", form, &dir);
        signal(&program, sig);
        let (status, _) = finish(program);
        assert_eq!(status.signal(), Some(sig), "{form}: {status:?}");
        assert_gone(child);
    }
}

/// With `SIGCHLD` ignored (the kernel reaps children itself), a group
/// cannot be named by its number safely; it is named by its leader's pidfd
/// (Linux 6.9), so the children still get the signal. Before, exec groups
/// were not registered at all then, and the children ran on.
#[test]
fn terminal_signals_reach_exec_children_with_sigchld_ignored() {
    if !crate::support::kernel_at_least(6, 9) {
        eprintln!("skipped: groups are named by pidfd from Linux 6.9");
        return;
    }
    for form in ["sync", "async", "pipeline", "pipeline-sync"] {
        let dir = TempDir::new("sig");
        let (program, child) = start("sigchld-ignored", form, &dir);
        signal(&program, libc::SIGINT);
        let (status, _) = finish(program);
        assert_eq!(status.signal(), Some(libc::SIGINT), "{form}: {status:?}");
        assert_gone(child);
    }
}

/// A program's own handlers that raise each other's signals run nested
/// inside ours. Ours ran on std's 8 KiB alternate stack (`SA_ONSTACK`), and
/// two or three levels overflowed it: the program died of SIGSEGV (an
/// outside attack). Now the chain runs to its end, the child gets the
/// signal, and the program lives on.
#[test]
fn nested_handlers_of_the_program_do_not_overflow_a_stack() {
    for form in ["async", "sync"] {
        let dir = TempDir::new("sig");
        let (program, child) = start("nested", form, &dir);
        signal(&program, libc::SIGINT);
        let (status, out) = finish(program);
        assert!(status.success(), "{form}: {status:?} {out}");
        assert!(out.starts_with("nested 4\n"), "{form}: {out}");
        assert_gone(child);
    }
}

/// A program with its own Ctrl-C handler keeps it, whichever crate made it
/// and whenever: the handler runs, the program is not killed, and the
/// child still gets the SIGINT a terminal would have given it.
#[test]
fn issue_10_programs_with_their_own_handler_keep_working() {
    for handler in [
        "tokio",
        "tokio-after",
        "signal-hook",
        "signal-hook-after",
        "ctrlc",
        "ctrlc-after",
    ] {
        for form in ["async", "sync"] {
            let dir = TempDir::new("sig");
            let (program, child) = start(handler, form, &dir);
            signal(&program, libc::SIGINT);
            let (status, out) = finish(program);
            assert!(status.success(), "{handler} {form}: {status:?} {out}");
            assert_eq!(out, "handled\nchild: SIGINT\n", "{handler} {form}");
            assert_gone(child);
        }
    }
}

/// `.forward_signals(false)` leaves the signals alone: the program dies,
/// the child (in its own group) runs on, as before the fix.
#[test]
fn issue_10_forwarding_can_be_turned_off() {
    let dir = TempDir::new("sig");
    let (program, child) = start("optout", "sync", &dir);
    signal(&program, libc::SIGINT);
    let (status, _) = finish(program);
    assert_eq!(status.signal(), Some(libc::SIGINT));
    std::thread::sleep(Duration::from_millis(50)); // give a wrong kill time to land
    assert!(alive(child), "the opted-out child was killed");
    unsafe_kill(child, libc::SIGKILL);
    assert_gone(child);
}

/// No handler of the crate's exists until an `exec` child does.
#[test]
fn issue_10_nothing_is_installed_before_the_first_exec() {
    let dir = TempDir::new("sig");
    let out = Command::new(example_exe("fixture_signals"))
        .args(["probe", "async", dir.0.join("pid").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "caught-before-exec false\ncaught-after-exec true\n"
    );
}
