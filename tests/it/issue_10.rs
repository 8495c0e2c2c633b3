//! Regression tests for issue 10 (outside testing: a new user's programs
//! and Node's own child_process tests). The signal-forwarding ones are in
//! `signals.rs`.

use std::os::fd::AsFd;
use std::time::Duration;

use child_process as cp;
use tokio::io::AsyncWriteExt;

use crate::support::{both_forms, have_node, worker_exe};

/// 10.4: `fn main() -> cp::Result<()>` prints the error with `Debug`; it
/// showed `Exit { command: ..., output: Output { status: ExitStatus(
/// unix_wait_status(1792)) ... } }`. Now the command, status and stderr.
#[test]
fn issue_10_main_returning_an_error_prints_it_readably() {
    let out = std::process::Command::new(worker_exe())
        .arg("--main-error")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error: `echo oops >&2; exit 7` failed: exit status: 7\nstderr:\noops\n"
    );
}

both_forms! {
    /// 10.4: non-UTF-8 stdout from `text()` says so, not `i/o error while
    /// running ...`.
    async fn issue_10_text_that_is_not_utf8_says_why(mode: Mode) {
        let err = mode.text(cp::exec("printf 'a\\377b'")).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "i/o error while running `printf 'a\\377b'`: stdout is not valid UTF-8 (at byte 1)"
        );
    }

    /// 10.5: an empty cwd is the parent's, as in Node (it failed with
    /// "cwd `` does not exist").
    async fn issue_10_empty_cwd_is_the_parents(mode: Mode) {
        let here = std::env::current_dir().unwrap();
        let out = mode.text(cp::exec("pwd").cwd("")).await.unwrap();
        assert_eq!(std::path::Path::new(&out), here);
    }
}

/// 10.5: every signal name in Node's `os.constants.signals` parses.
#[test]
fn issue_10_every_node_signal_name_parses() {
    if !have_node() {
        return;
    }
    let names = cp::exec_file(
        "node",
        [
            "-e",
            "console.log(Object.keys(require('os').constants.signals).join(' '))",
        ],
    )
    .text_sync()
    .unwrap();
    let names: Vec<&str> = names.split_whitespace().collect();
    assert!(names.len() > 30, "{names:?}");
    for name in names {
        assert!(name.parse::<cp::Signal>().is_ok(), "{name} does not parse");
    }
}

/// 10.5: a still non-blocking pipe end handed to another child (`as_fd()`
/// + `try_clone_to_owned()` instead of `into_owned_fd()`) gave `head` a
/// non-blocking stdin: it failed with EAGAIN. The child now gets a
/// blocking description of the same pipe.
#[tokio::test]
async fn issue_10_non_blocking_pipe_end_as_stdin_works() {
    let mut producer = cp::Command::new("sh")
        .args(["-c", "sleep 0.2; echo one; echo two"])
        .stdin(cp::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = producer.stdout.take().unwrap();
    let fd = stdout.as_fd().try_clone_to_owned().unwrap();
    let out = cp::Command::new("head")
        .args(["-n", "1"])
        .stdin(fd)
        .spawn()
        .unwrap()
        .wait_with_output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"one\n");
    drop(stdout);
    producer.wait().await.unwrap();
}

/// 10.5: the same for a socket is refused with the reason (it cannot be
/// given a description of its own).
#[tokio::test]
async fn issue_10_non_blocking_socket_as_stdio_is_a_clear_error() {
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let err = cp::Command::new("true")
        .stdin(std::os::fd::OwnedFd::from(a))
        .spawn()
        .unwrap_err();
    assert!(
        err.to_string().contains("non-blocking (O_NONBLOCK)"),
        "{err}"
    );
}

/// 10.5: `wait()` closes stdin first, as std and tokio do: a child reading
/// stdin to the end cannot make it hang.
#[tokio::test]
async fn issue_10_wait_closes_stdin_first() {
    let mut child = cp::spawn("cat", [""; 0]).unwrap();
    child.stdin.as_mut().unwrap().write_all(b"x").await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("wait must not hang on a child reading stdin")
        .unwrap();
    assert!(status.success());
}

/// 10.5: `try_wait` is public, like std's and tokio's.
#[tokio::test]
async fn issue_10_try_wait_is_public() {
    let mut child = cp::spawn("sleep", ["30"]).unwrap();
    assert_eq!(child.try_wait().unwrap(), None);
    child.kill(cp::Signal::SIGKILL).unwrap();
    child.wait().await.unwrap();
    assert!(child.try_wait().unwrap().is_some());
}
