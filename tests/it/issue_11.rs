//! Regression tests for issue 11 (an adversarial review): each failed on
//! the main branch before the fix. Those that change the whole process
//! (`SIGCHLD` ignored, a low fd limit) are in `isolated.rs`.

use std::future::IntoFuture;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use child_process as cp;

use crate::support::{alive, both_forms, wait_until, worker_exe, TempDir};

/// A child that moves itself into the parent's process group: `killpg` on
/// its old group no longer reaches it.
const LEAVE_GROUP: &str = "setpgrp(0, getpgrp(getppid()));";

both_forms! {
    /// 11.1: a timeout still ends a child that left its group, within
    /// timeout + kill_grace, and the error says how it ended.
    async fn issue_11_timeout_kills_a_child_that_left_its_group(mode: Mode) {
        let start = Instant::now();
        let script = format!("{LEAVE_GROUP} sleep 6");
        let err = mode
            .run(
                cp::exec_file("perl", ["-e", &script])
                    .timeout(Duration::from_millis(300))
                    .kill_grace(Duration::from_millis(500)),
            )
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{err}");
        assert_eq!(err.exit_status().unwrap().signal(), Some(libc::SIGTERM));
        assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
    }

    /// 11.1: the same child writing forever does not make the run endless.
    async fn issue_11_timeout_ends_an_endless_writer_that_left_its_group(mode: Mode) {
        let script = format!("{LEAVE_GROUP} $| = 1; print \"x\" x 4096 while 1;");
        let err = mode
            .run(
                cp::exec_file("perl", ["-e", &script])
                    .timeout(Duration::from_millis(200))
                    .max_buffer(usize::MAX)
                    .kill_grace(Duration::from_millis(300)),
            )
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{err}");
    }

    /// 11.2: `Duration::MAX` is "never", never a panic: as a grace (the
    /// timeout's SIGTERM still ends `sleep`) and as a timeout.
    async fn issue_11_duration_max_does_not_panic(mode: Mode) {
        let err = mode
            .run(
                cp::exec("sleep 30")
                    .timeout(Duration::from_millis(50))
                    .kill_grace(Duration::MAX),
            )
            .await
            .unwrap_err();
        assert_eq!(err.exit_status().unwrap().signal(), Some(libc::SIGTERM));
        let out = mode.text(cp::exec("echo hi").timeout(Duration::MAX)).await.unwrap();
        assert_eq!(out, "hi");
    }

    /// 11.9: a relative PATH entry with a relative cwd runs the file it found.
    async fn issue_11_relative_path_entry_with_relative_cwd(mode: Mode) {
        // Relative to the test's cwd (the package root), under target/.
        let rel = format!("target/cp-test-{}-relpath-{mode:?}", std::process::id());
        let sub = std::path::Path::new(&rel).join("sub");
        std::fs::create_dir_all(&sub).unwrap();
        let tool = sub.join("tool.sh");
        std::fs::write(&tool, "#!/bin/sh\necho found me\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let run = cp::exec_file("tool.sh", [""; 0]).cwd(&sub).env("PATH", ".:/usr/bin:/bin");
        let out = mode.text(run).await;
        std::fs::remove_dir_all(&rel).unwrap();
        assert_eq!(out.unwrap(), "found me");
    }

    /// 11.12 and issue 10: `timeout(Duration::ZERO)` means no timeout, as
    /// Node's `timeout: 0`, the same way every time and in both forms (it
    /// raced: Ok 8 times in 20, Timeout 12).
    async fn issue_11_zero_timeout_means_no_timeout(mode: Mode) {
        for _ in 0..20 {
            let out = mode.text(cp::exec("echo hi").timeout(Duration::ZERO)).await.unwrap();
            assert_eq!(out, "hi");
        }
    }
}

/// 11.1: a dropped future kills a child that left its group.
#[tokio::test]
async fn issue_11_dropped_future_kills_a_child_that_left_its_group() {
    let dir = TempDir::new("leave");
    let pidfile = dir.0.join("pid");
    let script = format!(
        "{LEAVE_GROUP} open(my $f, '>', '{}.tmp'); print $f $$; close $f; rename('{0}.tmp', '{0}'); sleep 30",
        pidfile.display()
    );
    let run = tokio::spawn(
        cp::exec_file("perl", ["-e", &script])
            .kill_grace(Duration::from_millis(200))
            .into_future(),
    );
    crate::support::wait_until_async(Duration::from_secs(10), "perl started", || pidfile.exists())
        .await;
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().parse().unwrap();
    run.abort();
    let _ = run.await;
    wait_until(Duration::from_secs(5), "the dropped child died", || {
        !alive(pid)
    });
}

/// 11.1: `kill_group` reaches the leader that left the group (it returned
/// Ok and the child lived).
#[tokio::test]
async fn issue_11_kill_group_reaches_a_leader_that_left() {
    let dir = TempDir::new("leave");
    let ready = dir.0.join("ready");
    let script = format!(
        "{LEAVE_GROUP} open(my $f, '>', '{}'); close $f; sleep 30",
        ready.display()
    );
    let mut child = cp::Command::new("perl")
        .args(["-e", &script])
        .process_group(true)
        .spawn()
        .unwrap();
    crate::support::wait_until_async(Duration::from_secs(10), "perl left its group", || {
        ready.exists()
    })
    .await;
    child.kill_group(cp::Signal::SIGKILL).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("the child must die")
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
}

/// 11.2: a dropped future whose grace is `Duration::MAX` does not panic in
/// the destructor; the child gets the kill signal and is reaped.
#[tokio::test]
async fn issue_11_dropped_future_with_infinite_grace_does_not_panic() {
    let dir = TempDir::new("maxgrace");
    let pidfile = dir.0.join("pid");
    let line = format!(
        "echo $$ > {0}.tmp && mv {0}.tmp {0} && exec sleep 30",
        pidfile.display()
    );
    let run = tokio::spawn(cp::exec(line).kill_grace(Duration::MAX).into_future());
    crate::support::wait_until_async(Duration::from_secs(10), "sleep started", || {
        pidfile.exists()
    })
    .await;
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    run.abort();
    assert!(
        run.await.unwrap_err().is_cancelled(),
        "no panic, just cancelled"
    );
    // The kill signal went out at the drop; SIGKILL never will.
    wait_until(Duration::from_secs(5), "the dropped child died", || {
        !alive(pid)
    });
}

/// 11.7: a process started with `NODE_CHANNEL_FD` (and the other channel
/// variables) that never opened its channel does not pass them on: `node`
/// run by `exec` aborted on the closed fd 3.
#[test]
fn issue_11_channel_variables_are_not_inherited_by_exec_children() {
    let out = std::process::Command::new(worker_exe())
        .arg("--exec-env")
        .env("NODE_CHANNEL_FD", "3")
        .env("NODE_CHANNEL_SERIALIZATION_MODE", "json")
        .env("NODE_UNIQUE_ID", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("unset unset unset"));
    if crate::support::have_node() {
        assert_eq!(lines.next(), Some("node: exit status: 0"));
    }
}
