//! Checks that look at the whole process (open fds, zombie children). They
//! run in a test process of their own, one at a time, so other tests'
//! children and pipes cannot blur the picture: `run_isolated` starts this
//! test binary again with `--ignored isolated::`.

use std::future::IntoFuture;
use std::time::Duration;

use child_process as cp;

use crate::support::{
    assert_no_new_fds, assert_no_zombies, multi_thread, open_fds, wait_until, wait_until_async,
};

#[test]
fn run_isolated() {
    if std::env::var_os("CP_ISOLATED").is_some() {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--test-threads=1", "isolated::"])
        .env("CP_ISOLATED", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "isolated tests failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("test result: ok") && !text.contains(" 0 passed"),
        "{text}"
    );
}

/// Open what the crate opens once per process (the shared /dev/null fd, the
/// reaper thread and its two eventfds) and return the fds open afterwards.
/// The reaper starts only for a child still running when dropped: one that
/// already exited is reaped on the spot.
async fn warm_up() -> std::collections::BTreeSet<i32> {
    cp::exec("true").await.unwrap();
    drop(cp::spawn("sleep", ["0.05"]).unwrap());
    wait_until(Duration::from_secs(5), "warm-up reaped", || {
        crate::support::children().is_empty()
    });
    open_fds()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
#[ignore = "run by run_isolated in a process of its own"]
fn sequential_execs_leak_no_fds_and_no_zombies() {
    runtime().block_on(async {
        cp::exec("true").await.unwrap(); // opens the shared /dev/null fd once
        let before = open_fds();
        for i in 0..300 {
            let out = cp::exec(format!("echo {i}")).await.unwrap();
            assert_eq!(out.stdout, format!("{i}\n").as_bytes());
        }
        assert_no_new_fds(&before);
    });
    assert_no_zombies();
}

#[test]
#[ignore = "run by run_isolated in a process of its own"]
fn concurrent_execs_leave_no_zombies() {
    let rt = multi_thread(2);
    rt.block_on(async {
        let runs = (0..200).map(|i| tokio::spawn(cp::exec(format!("echo {i}")).into_future()));
        for (i, r) in futures::future::join_all(runs)
            .await
            .into_iter()
            .enumerate()
        {
            assert_eq!(r.unwrap().unwrap().stdout, format!("{i}\n").as_bytes());
        }
    });
    assert_no_zombies();
}

/// Runs in multi-thread `block_on` go to threads of their own (issue 16):
/// finished, failed, cancelled, past the pool's limit or piped, none may
/// leave an fd (the run's eventfd, its pipes) or a zombie.
#[test]
#[ignore = "run by run_isolated in a process of its own"]
fn offloaded_runs_leak_no_fds_and_no_zombies() {
    let rt = multi_thread(2);
    rt.block_on(async {
        let before = warm_up().await;
        for i in 0..100 {
            let out = cp::exec(format!("echo {i}")).await.unwrap();
            assert_eq!(out.stdout, format!("{i}\n").as_bytes());
        }
        let runs = (0..40).map(|i| cp::exec(format!("echo {i}")).into_future());
        assert!(futures::future::join_all(runs)
            .await
            .iter()
            .all(Result::is_ok));
        cp::exec("exit 1").await.unwrap_err();
        cp::exec("echo a").pipe(cp::exec("cat")).await.unwrap();
        let cancelled = tokio::time::timeout(
            Duration::from_millis(100),
            cp::exec("sleep 30").into_future(),
        );
        assert!(cancelled.await.is_err());
        wait_until_async(Duration::from_secs(5), "children reaped", || {
            crate::support::children().is_empty()
        })
        .await;
        assert_no_new_fds(&before);
    });
    assert_no_zombies();
}

#[test]
#[ignore = "run by run_isolated in a process of its own"]
fn every_kill_path_leaves_no_zombie_and_no_fd() {
    let rt = runtime();
    rt.block_on(async {
        let before = warm_up().await;
        for _ in 0..20 {
            // timeout
            let err = cp::exec("sleep 30")
                .timeout(Duration::from_millis(10))
                .await
                .unwrap_err();
            assert!(err.is_timeout());
            // max_buffer
            assert!(cp::exec("yes").max_buffer(10).await.is_err());
            // dropped future
            let fut = cp::exec("sleep 30").into_future();
            drop(tokio::time::timeout(Duration::from_millis(5), fut).await);
            // dropped child, kill_on_drop
            drop(
                cp::Command::new("sleep")
                    .arg("30")
                    .kill_on_drop(true)
                    .spawn()
                    .unwrap(),
            );
            // dropped child that exits by itself
            drop(cp::spawn("true", [""; 0]).unwrap());
            // killed and waited
            let mut child = cp::spawn("sleep", ["30"]).unwrap();
            child.kill(cp::Signal::SIGKILL).unwrap();
            child.wait().await.unwrap();
        }
        assert_no_new_fds(&before);
    });
    assert_no_zombies();
}

#[test]
#[ignore = "run by run_isolated in a process of its own"]
fn dropped_child_is_reaped_without_a_runtime_running() {
    let rt = runtime();
    let child = rt.block_on(async { cp::spawn("sh", ["-c", "exit 0"]).unwrap() });
    drop(child);
    drop(rt);
    assert_no_zombies();
}

#[test]
#[ignore = "run by run_isolated in a process of its own"]
fn blocking_forms_leak_no_fds_and_no_zombies() {
    cp::exec("true").run_sync().unwrap();
    let before = open_fds();
    for i in 0..100 {
        assert_eq!(
            cp::exec(format!("echo {i}")).text_sync().unwrap(),
            i.to_string()
        );
        let err = cp::exec("sleep 30")
            .timeout(Duration::from_millis(5))
            .run_sync()
            .unwrap_err();
        assert!(err.is_timeout());
        assert!(cp::exec("yes").max_buffer(100).run_sync().is_err());
        let out = cp::Command::new("sh")
            .args(["-c", "exit 3"])
            .output_sync()
            .unwrap();
        assert_eq!(out.status.code(), Some(3));
    }
    assert_no_new_fds(&before);
    assert_no_zombies();
}

/// Issue 6: 10,000 spawns mixing every way a child can end.
#[test]
#[ignore = "run by run_isolated in a process of its own"]
fn stress_10000_spawns_leave_no_zombie_and_no_fd() {
    let rt = multi_thread(2);
    rt.block_on(async {
        let before = warm_up().await;
        let tasks = (0..8).map(|lane| {
            tokio::spawn(async move {
                for i in 0..1250 {
                    match (lane * 1250 + i) % 6 {
                        0 => assert!(cp::exec("true").await.is_ok()),
                        1 => assert!(cp::exec("sleep 5")
                            .timeout(Duration::from_millis(1))
                            .await
                            .is_err()),
                        2 => {
                            let mut child = cp::spawn("sleep", ["5"]).unwrap();
                            child.kill(cp::Signal::SIGKILL).unwrap();
                            child.wait().await.unwrap();
                        }
                        3 => drop(
                            tokio::time::timeout(
                                Duration::from_millis(1),
                                cp::exec("sleep 5").into_future(),
                            )
                            .await,
                        ),
                        4 => drop(
                            cp::Command::new("sleep")
                                .arg("5")
                                .kill_on_drop(true)
                                .spawn()
                                .unwrap(),
                        ),
                        _ => drop(cp::spawn("true", [""; 0]).unwrap()),
                    }
                }
            })
        });
        for task in futures::future::join_all(tasks).await {
            task.unwrap();
        }
        assert_no_new_fds(&before);
    });
    assert_no_zombies();
}

/// Issue 6: running out of fds is a clear error, leaks nothing, and spawning
/// works again once fds are free.
#[test]
#[ignore = "run by run_isolated in a process of its own"]
fn out_of_fds_is_a_clear_error_and_recovers() {
    let rt = runtime();
    rt.block_on(async {
        cp::exec("true").await.unwrap();
        // Fill every hole below the highest open fd, so the limit below
        // leaves exactly two free fds (an exec needs five at once).
        let mut fillers = Vec::new();
        let top = *open_fds().iter().max().unwrap();
        while open_fds().len() <= top as usize {
            fillers.push(std::fs::File::open("/dev/null").unwrap());
        }
        let before = open_fds();
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: test code; getrlimit/setrlimit on valid structs.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) };
        let highest = *before.iter().max().unwrap() as u64;
        assert_eq!(before.len() as u64, highest + 1, "no holes");
        let tight = libc::rlimit {
            rlim_cur: highest + 3,
            rlim_max: old.rlim_max,
        };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &tight) }, 0);
        let err = cp::exec("true").await.unwrap_err();
        let blocking = cp::exec("true").run_sync().unwrap_err();
        // SAFETY: as above; restore the limit.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) };
        for err in [err, blocking] {
            assert!(matches!(err, cp::Error::Spawn { .. }), "{err:?}");
            assert!(err.to_string().contains("out of file descriptors"), "{err}");
        }
        assert_eq!(open_fds(), before, "no half-made pipe is left open");
        drop(fillers);
        assert_eq!(cp::exec("echo again").text().await.unwrap(), "again");
    });
}

/// Issue 6: hitting RLIMIT_NPROC (EAGAIN from clone) is a clear error, and
/// spawning works again once the limit allows it. Root is exempt from the
/// limit, so as root this test runs itself again as `nobody`.
#[test]
#[ignore = "run by run_isolated in a process of its own"]
fn process_limit_is_a_clear_error_and_recovers() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let name = "isolated::process_limit_is_a_clear_error_and_recovers";
        // `nobody` may not be able to reach the build directory (a checkout
        // under /root): run a copy from a directory it can read.
        use std::os::unix::fs::PermissionsExt;
        let dir = crate::support::TempDir::new("nproc");
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
        let exe = dir.0.join("it");
        std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&exe)
            .args(["--ignored", "--exact", name, "--test-threads=1"])
            .env("CP_ISOLATED", "1")
            .output()
            .expect("setpriv (util-linux) runs the check as nobody");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("1 passed"),
            "as nobody:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let rt = runtime();
    rt.block_on(async {
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: test code; getrlimit/setrlimit on valid structs.
        unsafe { libc::getrlimit(libc::RLIMIT_NPROC, &mut old) };
        // This user already has at least one process (this one): no more.
        let tight = libc::rlimit {
            rlim_cur: 1,
            rlim_max: old.rlim_max,
        };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NPROC, &tight) }, 0);
        let err = cp::exec("true").await.unwrap_err();
        let blocking = cp::exec_file("true", [""; 0]).run_sync().unwrap_err();
        // SAFETY: as above; restore the limit.
        unsafe { libc::setrlimit(libc::RLIMIT_NPROC, &old) };
        for err in [err, blocking] {
            assert!(matches!(err, cp::Error::Spawn { .. }), "{err:?}");
            assert!(
                err.to_string()
                    .contains("process limit was reached (RLIMIT_NPROC)"),
                "{err}"
            );
        }
        assert_eq!(cp::exec("echo again").text().await.unwrap(), "again");
    });
    assert_no_zombies();
}

/// A lower `RLIMIT_NOFILE` soft limit, restored on drop (a failed check
/// must not starve the tests after it).
struct FdLimit(libc::rlimit);

impl FdLimit {
    fn set(soft: u64) -> FdLimit {
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: test code; getrlimit/setrlimit on valid structs.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) };
        let tight = libc::rlimit {
            rlim_cur: soft,
            rlim_max: old.rlim_max,
        };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &tight) }, 0);
        FdLimit(old)
    }
}

impl Drop for FdLimit {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &self.0) };
    }
}

/// Sets `SIGCHLD` to `SIG_IGN` (the kernel then reaps children itself) for
/// the life of the value, as a daemon or a host may hand it down.
struct SigchldIgnored;

impl SigchldIgnored {
    fn new() -> SigchldIgnored {
        // SAFETY: test code; SIG_IGN is a valid disposition for SIGCHLD.
        unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
        SigchldIgnored
    }
}

impl Drop for SigchldIgnored {
    fn drop(&mut self) {
        // SAFETY: as above; back to the default.
        unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
    }
}

/// Issue 11.3: with `SIGCHLD` ignored, `exec("echo hi")` failed with ECHILD
/// and lost its output. The status now comes from the pidfd (Linux 6.15
/// keeps it there); everything else works as usual, and nothing of ours
/// changes the process's choice to ignore `SIGCHLD`. Each child first
/// reads its stdin, written after the spawn returned: a child that exits
/// before its pidfd is opened leaves no status anywhere (the documented
/// limit, checked below), which would make this check flaky.
#[test]
#[ignore = "run by run_isolated in a process of its own"]
fn issue_11_sigchld_ignored_keeps_status_and_output() {
    let _ignored = SigchldIgnored::new();
    runtime().block_on(async {
        let out = cp::exec("read x; echo hi").stdin("go\n").await.unwrap();
        assert_eq!(
            (out.stdout.as_slice(), out.status.success()),
            (&b"hi\n"[..], true)
        );
        let err = cp::exec("read x; exit 3").stdin("go\n").await.unwrap_err();
        assert_eq!(err.exit_status().and_then(|s| s.code()), Some(3), "{err}");
        let err = cp::exec("sleep 30")
            .timeout(Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{err}");
        let mut child = cp::spawn("sh", ["-c", "read x; exit 5"]).unwrap();
        use tokio::io::AsyncWriteExt;
        child
            .stdin
            .as_mut()
            .unwrap()
            .write_all(b"go\n")
            .await
            .unwrap();
        assert_eq!(child.wait().await.unwrap().code(), Some(5));
        // A child too quick for its pidfd: either its status, or an error
        // that keeps its output and says why; never a wrong status.
        for _ in 0..50 {
            match cp::exec("echo quick").await {
                Ok(out) => assert_eq!(out.stdout, b"quick\n"),
                Err(cp::Error::StatusLost { stdout, reason, .. }) => {
                    assert_eq!(stdout, b"quick\n");
                    assert!(reason.contains("ignores SIGCHLD"), "{reason}");
                }
                Err(other) => panic!("{other}"),
            }
        }
    });
    assert_eq!(
        cp::exec("read x; echo sync")
            .stdin("go\n")
            .text_sync()
            .unwrap(),
        "sync"
    );
    let err = cp::exec("read x; exit 4")
        .stdin("go\n")
        .run_sync()
        .unwrap_err();
    assert_eq!(err.exit_status().and_then(|s| s.code()), Some(4), "{err}");
    // SIGCHLD is still ignored: nothing of ours installed a handler for it.
    // SAFETY: sigaction is a plain C struct; all-zero is valid.
    let mut now: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: test code; a null new action only queries.
    unsafe { libc::sigaction(libc::SIGCHLD, std::ptr::null(), &mut now) };
    assert_eq!(now.sa_sigaction, libc::SIG_IGN);
}

/// Review of 13.5 with `SIGCHLD` ignored: the kernel reaps a first stage
/// that exits before the next one joins its group. The next stage used to
/// fail to start (`setpgid` EPERM, reported as "could not execute"); it
/// now leads a group of its own. And a stage whose status is lost is never
/// taken for a success.
#[test]
#[ignore = "run by run_isolated in a process of its own"]
fn review_13_pipelines_with_sigchld_ignored() {
    let _ignored = SigchldIgnored::new();
    for _ in 0..100 {
        match cp::exec_file("true", [""; 0])
            .pipe(cp::exec_file("cat", [""; 0]))
            .run_sync()
        {
            Ok(out) => assert!(out.stdout.is_empty()),
            Err(cp::Error::StatusLost { reason, .. }) => {
                assert!(reason.contains("ignores SIGCHLD"), "{reason}")
            }
            Err(other) => panic!("{other}"),
        }
    }
    runtime().block_on(async {
        for _ in 0..100 {
            // The first stage fails; its status is kept or said to be lost.
            match cp::exec("exit 1").pipe(cp::exec_file("cat", [""; 0])).await {
                Err(cp::Error::Pipeline { stage: 1, .. }) => {}
                Err(cp::Error::StatusLost { reason, .. }) => {
                    assert!(reason.contains("stage 1"), "{reason}")
                }
                other => panic!("pipefail lost: {other:?}"),
            }
        }
    });
}

/// Issue 11.3: with `SIGCHLD` ignored the group id of a child is free as
/// soon as the kernel reaped it. After pid reuse, `kill_group` killed an
/// unrelated process group (32,340 spawns in the report). Here the reuse
/// is forced with `ns_last_pid` (root only) and the new owner survives.
#[test]
#[ignore = "run by run_isolated in a process of its own"]
fn issue_11_sigchld_ignored_never_signals_a_recycled_group() {
    let last_pid = "/proc/sys/kernel/ns_last_pid";
    if std::fs::OpenOptions::new()
        .write(true)
        .open(last_pid)
        .is_err()
    {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI runs as root, which may write {last_pid}"
        );
        eprintln!("cannot write {last_pid}: skipping the pid-reuse check");
        return;
    }
    let _ignored = SigchldIgnored::new();
    runtime().block_on(async {
        for _attempt in 0..20 {
            let child = cp::Command::new("true")
                .stdin(cp::Stdio::null())
                .stdout(cp::Stdio::null())
                .stderr(cp::Stdio::null())
                .process_group(true)
                .spawn()
                .unwrap();
            let pid = child.pid() as i32;
            // The kernel reaps it: /proc/<pid> goes away.
            wait_until(Duration::from_secs(5), "auto-reaped", || {
                !std::path::Path::new(&format!("/proc/{pid}")).exists()
            });
            // Hand the same pid to an unrelated group leader.
            std::fs::write(last_pid, (pid - 1).to_string()).unwrap();
            let mut other = std::process::Command::new("sleep");
            std::os::unix::process::CommandExt::process_group(&mut other, 0);
            // SIGCHLD is ignored: the kernel reaps it, no wait() needed.
            #[allow(clippy::zombie_processes)]
            let mut other = other.arg("30").spawn().unwrap();
            if other.id() as i32 != pid {
                other.kill().unwrap();
                continue; // someone else took the pid first; try again
            }
            child.kill_group(cp::Signal::SIGKILL).unwrap();
            std::thread::sleep(Duration::from_millis(50)); // let a wrong kill land
            assert!(
                crate::support::alive(pid),
                "an unrelated group was killed: {:?}, state {:?}",
                other.try_wait(),
                crate::support::stat(pid)
            );
            other.kill().unwrap();
            drop(child);
            return;
        }
        panic!("could not make the kernel reuse a pid");
    });
}

/// Issue 11.5: each running orphan held a pidfd, so 1,100 dropped
/// `sleep 1000` under `ulimit -n 1024` made later `exec` calls fail. The
/// reaper now keeps a bounded number of pidfds.
#[test]
#[ignore = "run by run_isolated in a process of its own"]
fn issue_11_many_dropped_children_do_not_exhaust_fds() {
    let rt = runtime();
    rt.block_on(async {
        warm_up().await;
        let limit = FdLimit::set(256);
        let mut pids = Vec::new();
        for _ in 0..400 {
            let child = cp::Command::new("sleep")
                .arg("1000")
                .stdin(cp::Stdio::null())
                .stdout(cp::Stdio::null())
                .stderr(cp::Stdio::null())
                .spawn()
                .unwrap();
            pids.push(child.pid() as i32);
            drop(child);
        }
        let result = cp::exec("echo still").text().await;
        let open = open_fds().len();
        drop(limit);
        for &pid in &pids {
            // Our children, unreaped: signalling them by pid is safe.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        assert_eq!(result.unwrap(), "still");
        assert!(open < 200, "{open} fds open with 400 orphans");
    });
    wait_until(Duration::from_secs(20), "every orphan reaped", || {
        crate::support::children().is_empty()
    });
}

/// Issue 14: every fd that arrives over a channel is owned exactly once:
/// none is left open when its message is malformed, when it comes without
/// a `NODE_HANDLE` line to claim it, when a peer floods fds, or when the
/// receiver is dropped before reading.
#[test]
#[ignore = "run by run_isolated in a process of its own"]
fn issue_14_received_fds_are_never_leaked() {
    use std::io::Write;
    runtime().block_on(async {
        let before = warm_up().await;
        {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
            let mut channel = cp::Channel::from_fd(ours.into()).unwrap();
            let file = std::fs::File::open("/dev/null").unwrap();
            // Sends `line` with `n` fds attached (what Node's sendmsg does).
            let send_n = |line: &[u8], n: usize| {
                use std::os::fd::AsRawFd;
                let fds = vec![file.as_raw_fd(); n];
                let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
                let iov = [std::io::IoSlice::new(line)];
                nix::sys::socket::sendmsg::<()>(
                    theirs.as_raw_fd(),
                    &iov,
                    &cmsg,
                    nix::sys::socket::MsgFlags::empty(),
                    None,
                )
                .unwrap();
            };
            let send = |line: &[u8]| send_n(line, 1);
            // More fds than a read takes: the kernel closes the rest
            // (MSG_CTRUNC), which is reported once; the message still comes.
            send_n(b"\"cut\"\n", 100);
            let err = channel.recv::<serde_json::Value>().await.unwrap_err();
            assert!(
                matches!(err, cp::Error::Channel(cp::ChannelError::HandleLost)),
                "{err}"
            );
            assert_eq!(
                channel.recv::<serde_json::Value>().await.unwrap(),
                Some(serde_json::json!("cut"))
            );
            // An envelope without `msg`: dropped, its fd closed.
            send(b"{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Native\"}\n");
            // fds with plain messages: never claimed; at most 64 are kept.
            for i in 0..100 {
                send(format!("{i}\n").as_bytes());
            }
            send(b"{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Native\",\"msg\":\"last\"}\n");
            // Blocking, before reading: the socket reports writable only
            // below a quarter of its buffer, which the sends above exceed.
            (&theirs).write_all(b"\"end\"\n").unwrap();
            let mut plain = 0;
            let mut handles = 0;
            loop {
                match channel
                    .recv_with_handle::<serde_json::Value>()
                    .await
                    .unwrap()
                {
                    Some((serde_json::Value::String(s), Some(h))) if s == "last" => {
                        drop(h);
                        handles += 1;
                    }
                    Some((serde_json::Value::String(s), _)) if s == "end" => break,
                    Some((_, h)) => {
                        assert!(h.is_none());
                        plain += 1;
                    }
                    None => panic!("ended early"),
                }
            }
            assert_eq!((plain, handles), (100, 1));
            // fds still queued, unclaimed, go with the channel.
            drop(channel);
            drop(theirs);
            drop(file);
        }
        assert_no_new_fds(&before);
    });
}

/// A socket we adopt may have `SO_PASSPIDFD` set (Linux 6.5), by whoever
/// made it: the kernel then installs a pidfd of the sender with every read
/// (`SCM_PIDFD`). Each is closed; one leaked per read before (an outside
/// attack).
#[test]
#[ignore = "run by run_isolated in a process of its own"]
fn pidfds_the_kernel_attaches_to_reads_are_not_leaked() {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    runtime().block_on(async {
        let before = warm_up().await;
        {
            let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
            const SO_PASSPIDFD: libc::c_int = 76;
            let one: libc::c_int = 1;
            // SAFETY: test code; setsockopt reads one int through a valid
            // pointer.
            let set = unsafe {
                libc::setsockopt(
                    ours.as_raw_fd(),
                    libc::SOL_SOCKET,
                    SO_PASSPIDFD,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if set != 0 {
                let e = std::io::Error::last_os_error();
                eprintln!("skipped: SO_PASSPIDFD needs Linux 6.5 ({e})");
                return;
            }
            // SAFETY: as above.
            let creds = unsafe {
                libc::setsockopt(
                    ours.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_PASSCRED,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            assert_eq!(creds, 0, "{}", std::io::Error::last_os_error());
            let mut channel = cp::Channel::from_fd(ours.into()).unwrap();
            // One line per read: a pidfd each.
            for i in 0..20 {
                writeln!(theirs, "{i}").unwrap();
                let got = channel.recv::<serde_json::Value>().await.unwrap();
                assert_eq!(got, Some(serde_json::json!(i)));
            }
            // 64 fds with credentials and a pidfd: all fit in one read's
            // control data (with room for the fds alone, the pidfd was cut
            // off and the fds reported lost).
            let file = std::fs::File::open("/dev/null").unwrap();
            let fds = vec![file.as_raw_fd(); 64];
            let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
            let line = b"{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Native\",\"msg\":1}\n";
            let iov = [std::io::IoSlice::new(line)];
            let flags = nix::sys::socket::MsgFlags::empty();
            nix::sys::socket::sendmsg::<()>(theirs.as_raw_fd(), &iov, &cmsg, flags, None).unwrap();
            drop(file);
            let (msg, handle) = channel
                .recv_with_handle::<serde_json::Value>()
                .await
                .unwrap()
                .unwrap();
            assert_eq!((msg, handle.is_some()), (serde_json::json!(1), true));
            drop(handle);
            drop(channel);
            drop(theirs);
        }
        assert_no_new_fds(&before);
    });
}

/// A cluster's whole life leaves nothing behind: no worker, no zombie, no
/// fd (listeners, connections in flight, channels), whether it ends with
/// `shutdown` or by dropping the `Primary`.
#[test]
#[ignore = "run by run_isolated in a process of its own"]
fn cluster_leaves_no_fds_no_zombies_no_workers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if !crate::support::have_node() {
        return;
    }
    let rt = multi_thread(2);
    rt.block_on(async {
        let before = warm_up().await;
        for graceful in [true, false] {
            let mut primary = cp::cluster(crate::support::fixture("cluster_worker.js"))
                .args(["0"])
                .workers(2)
                .start()
                .await
                .unwrap();
            let mut port = 0;
            let mut listening = 0;
            while listening < 2 {
                if let Some(cp::cluster::Event::Listening { address, .. }) =
                    primary.next_event().await
                {
                    listening += 1;
                    if let cp::cluster::Address::Tcp(a) = address {
                        port = a.port();
                    }
                }
            }
            let pids = crate::support::worker_pids(&primary).await;
            for _ in 0..10 {
                let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .unwrap();
                s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
                let mut text = String::new();
                s.read_to_string(&mut text).await.unwrap();
                assert!(text.contains("200"), "{text}");
            }
            if graceful {
                let report = primary.shutdown(Duration::from_secs(10)).await.unwrap();
                assert!(report.drained, "{report:?}");
            } else {
                drop(primary);
            }
            wait_until(Duration::from_secs(10), "the workers are gone", || {
                pids.iter().all(|&p| !crate::support::alive(p))
            });
            wait_until(Duration::from_secs(10), "the workers are reaped", || {
                crate::support::children().is_empty()
            });
        }
        // Tasks of the dropped primary finish on the runtime.
        wait_until(Duration::from_secs(5), "fds closed", || {
            open_fds().len() <= before.len()
        });
        assert_no_new_fds(&before);
    });
    assert_no_zombies();
}

/// Issue 15.6: SIGTERM to the primary's process drains the cluster, and
/// the report is the last event. (Isolated: it signals its own process.)
#[test]
#[ignore = "run by run_isolated in a process of its own"]
fn cluster_stops_on_sigterm() {
    runtime().block_on(async {
        let mut primary = cp::cluster("sleep")
            .args(["30"])
            .workers(2)
            .stop_on_signals(Duration::from_millis(100))
            .start()
            .await
            .unwrap();
        let pids = crate::support::worker_pids(&primary).await;
        nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGTERM).unwrap();
        let report = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match primary.next_event().await {
                    Some(cp::cluster::Event::Stopped(report)) => return report,
                    Some(_) => {}
                    None => panic!("the events ended without Stopped"),
                }
            }
        })
        .await
        .expect("stopped");
        // `sleep` does not speak the protocol: the drain deadline passes,
        // then SIGTERM ends it.
        assert!(!report.drained);
        assert_eq!(report.exits.len(), 2);
        assert!(
            primary.next_event().await.is_none(),
            "Stopped is the last event"
        );
        assert!(pids.iter().all(|&p| !crate::support::alive(p)));
    });
    assert_no_zombies();
}

/// A `start` that fails after some workers were forked kills them before
/// it returns: a `main` that exits on the error leaves none behind.
/// (Isolated: it lowers this process's fd limit.)
#[test]
#[ignore = "run by run_isolated in a process of its own"]
fn a_start_failing_midway_leaves_no_worker() {
    let set_soft = |soft: u64| {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit read and write one rlimit through
        // a valid pointer.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
            let old = lim.rlim_cur;
            lim.rlim_cur = soft;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
            old
        }
    };
    runtime().block_on(async {
        // Room for the runtime's and a few workers' fds, not for 40.
        let soft = set_soft(open_fds().len() as u64 + 24);
        let result = cp::cluster("sleep")
            .args(["32.5"])
            .workers(40)
            .silent(true)
            .start()
            .await;
        set_soft(soft);
        let e = result.expect_err("40 workers within the fd limit");
        assert!(e.to_string().contains("file descriptors"), "{e}");
        let left: Vec<(i32, char)> = crate::support::children();
        assert!(left.is_empty(), "children when start returned: {left:?}");
    });
}

/// Dropping the `Primary` during a drain that a signal started (not a
/// `shutdown`, which consumes it) kills the workers before it returns.
/// (Isolated: it signals its own process.)
#[test]
#[ignore = "run by run_isolated in a process of its own"]
fn dropping_the_primary_during_a_signal_drain_kills() {
    runtime().block_on(async {
        let primary = cp::cluster("sleep")
            .args(["30"])
            .workers(2)
            .stop_on_signals(Duration::from_secs(20))
            .start()
            .await
            .unwrap();
        let pids = crate::support::worker_pids(&primary).await;
        nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGTERM).unwrap();
        // The drain has begun once the workers are disconnecting.
        wait_until_async(Duration::from_secs(20), "the drain", || {
            let workers = futures::executor::block_on(primary.workers()).unwrap();
            workers
                .iter()
                .all(|w| w.state == cp::cluster::WorkerState::Disconnecting)
        })
        .await;
        drop(primary);
        for pid in pids {
            assert!(
                !crate::support::alive(pid),
                "worker {pid} outlived the drop"
            );
        }
    });
    assert_no_zombies();
}

/// A terminal signal is passed on to an exec child's group only while the
/// group's leader is still our child. With `SIGCHLD` set to `SIG_IGN` after
/// the child started, the kernel reaps the leader itself, before we could
/// unregister its group, and the id can be handed to another program's
/// group: that program must not get our Ctrl-C (an attack reproduced it by
/// steering the pid with `ns_last_pid`, which needs root: skipped without).
#[test]
#[ignore = "run by run_isolated in a process of its own"]
fn a_recycled_group_id_is_not_sent_our_ctrl_c() {
    ctrl_c_spares_a_recycled_group_id(false, || {
        // `sh` (our child) starts it in the background and exits, so it is
        // not ours; a background job of `sh` ignores SIGINT: `env` restores
        // it.
        let out = std::process::Command::new("sh")
            .args([
                "-c",
                "setsid env --default-signal=INT sleep 30 </dev/null >/dev/null 2>&1 & echo $!",
            ])
            .output()
            .unwrap();
        let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let end = move || {
            // SAFETY: test code; the process it just started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        };
        (pid, Box::new(end))
    });
}

/// The same with the id handed to a child of ours that leads a group of its
/// own (not an exec, so not registered for forwarding): the group is named
/// by the old leader's pidfd (Linux 6.9), which the new process does not
/// share. By number, the "a child of ours is in it" check passed and the
/// child got the Ctrl-C.
#[test]
#[ignore = "run by run_isolated in a process of its own"]
fn a_recycled_group_id_of_our_own_child_is_not_sent_our_ctrl_c() {
    ctrl_c_spares_a_recycled_group_id(true, start_own_group_child);
}

/// A child of ours leading a group of its own (not an exec), and how to
/// end it.
fn start_own_group_child() -> (i32, Box<dyn FnOnce()>) {
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new("env")
        .args(["--default-signal=INT", "sleep", "30"])
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let end = move || {
        let _ = child.kill();
        let _ = child.wait();
    };
    (pid, Box::new(end))
}

/// `exec("sleep 0.3")` (no pipes) started while the process has one free
/// fd, so its pidfd takes the last one: found by trying 1 to 4 free fds
/// under a limit of 64, until the exec holds its pidfd and no duplicate.
async fn exec_with_one_fd_left() -> tokio::task::JoinHandle<cp::Result<cp::Output>> {
    let pidfds = || {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().contains("pidfd"))
            })
            .count()
    };
    let quiet = || {
        cp::exec("sleep 0.3")
            .stdout(cp::Stdio::null())
            .stderr(cp::Stdio::null())
    };
    // What the crate opens once per process, opened now.
    quiet().await.unwrap();
    let mut saved = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: test code; `saved` is a valid out-pointer, then restored.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut saved) };
    let low = libc::rlimit {
        rlim_cur: 64,
        rlim_max: saved.rlim_max,
    };
    // SAFETY: as above.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) };
    let mut found = None;
    for free in 1..=4 {
        let mut fillers = Vec::new();
        while let Ok(f) = std::fs::File::open("/dev/null") {
            fillers.push(f);
        }
        fillers.truncate(fillers.len().saturating_sub(free));
        let job = tokio::spawn(quiet().into_future());
        // The spawned exec starts, and registers, at its first poll.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        drop(fillers);
        if pidfds() == 1 {
            found = Some(job);
            break;
        }
        let _ = job.await;
    }
    // SAFETY: as above.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &saved) };
    found.expect("an exec holding its pidfd and no duplicate")
}

/// Start `exec("sleep 0.3")`, let the kernel reap its group's leader (with
/// `SIGCHLD` ignored for a moment), have `start_other` start a process with
/// the recycled id leading its own group (`ours`: as our child), send this
/// process a Ctrl-C and check that process survives it. `start_other`
/// returns the pid and how to end that process.
fn ctrl_c_spares_a_recycled_group_id(
    ours: bool,
    start_other: impl FnMut() -> (i32, Box<dyn FnOnce()>),
) {
    ctrl_c_spares_a_recycled_group_id_with(ours, false, start_other);
}

/// An own-group child of ours with the recycled id, as above, with the
/// exec started when the process has one fd left: its pidfd takes it, and
/// the duplicate the forwarding keeps cannot be made. The group used to be
/// registered by number then, and that child got our Ctrl-C (an outside
/// attack); where the kernel names groups by pidfd it is now not
/// registered at all.
#[test]
#[ignore = "run by run_isolated in a process of its own"]
fn a_group_whose_pidfd_cannot_be_kept_is_not_forwarded_to_by_number() {
    ctrl_c_spares_a_recycled_group_id_with(true, true, start_own_group_child);
}

/// `ctrl_c_spares_a_recycled_group_id`; with `starve`, the exec starts
/// with one fd left in the process.
fn ctrl_c_spares_a_recycled_group_id_with(
    ours: bool,
    starve: bool,
    mut start_other: impl FnMut() -> (i32, Box<dyn FnOnce()>),
) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static HANDLED: AtomicBool = AtomicBool::new(false);
    extern "C" fn on_sigint(_: libc::c_int) {
        HANDLED.store(true, Ordering::SeqCst);
    }
    if std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/sys/kernel/ns_last_pid")
        .is_err()
    {
        eprintln!("skipped: /proc/sys/kernel/ns_last_pid is not writable (needs root)");
        return;
    }
    if !std::process::Command::new("env")
        .args(["--default-signal=INT", "true"])
        .status()
        .is_ok_and(|s| s.success())
    {
        eprintln!("skipped: `env --default-signal` (coreutils 8.31) is missing");
        return;
    }
    // The program's own handler, so the Ctrl-C below does not end the test.
    // SAFETY: test code; the handler only stores to an atomic.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    HANDLED.store(false, Ordering::SeqCst);
    let me = std::process::id() as i32;
    let stat = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
    // (ppid, pgrp) from /proc/<pid>/stat, the fields after the name.
    let parent_and_group = |pid: i32| -> Option<(i32, i32)> {
        let s = stat(pid)?;
        let f: Vec<&str> = s.rsplit(')').next()?.split_whitespace().collect();
        Some((f.get(1)?.parse().ok()?, f.get(2)?.parse().ok()?))
    };
    runtime().block_on(async {
        let job = if starve {
            exec_with_one_fd_left().await
        } else {
            tokio::spawn(cp::exec("sleep 0.3").into_future())
        };
        let mut leader = None;
        wait_until_async(
            Duration::from_secs(5),
            "the exec child, leading its group",
            || {
                leader = std::fs::read_dir("/proc")
                    .unwrap()
                    .flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                    .find(|&p| parent_and_group(p).is_some_and(|(pp, g)| pp == me && g == p));
                leader.is_some()
            },
        )
        .await;
        let leader = leader.unwrap();
        // From here the runtime's one thread is held: the exec cannot see
        // its child exit and unregister the group.
        let ignored = SigchldIgnored::new();
        wait_until(
            Duration::from_secs(5),
            "the kernel reaping the leader",
            || stat(leader).is_none(),
        );
        drop(ignored);
        // How many pids before the recycled one to start: starting takes
        // one or two, and whatever else starts meanwhile more (learnt as
        // we go). Tries for up to 30 s: the rest of the suite runs beside
        // this test and takes pids in bursts, and a process of theirs may
        // get the id itself and hold it for a while (200 quick tries ran
        // out once in CI), so a try waits until the id is free again.
        let (mut back, mut other) = (2, None);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if stat(leader).is_some() {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            std::fs::write("/proc/sys/kernel/ns_last_pid", (leader - back).to_string()).unwrap();
            let (pid, end) = start_other();
            if pid == leader {
                other = Some((pid, end));
                break;
            }
            end();
            back = (back + pid - leader).max(1);
        }
        let (other, end) = other.expect("a process with the recycled id (pids taken meanwhile)");
        wait_until(
            Duration::from_secs(5),
            "the other group, leading it",
            || {
                parent_and_group(other).is_some_and(|(pp, g)| (pp == me) == ours && g == other)
                    && std::fs::read_to_string(format!("/proc/{other}/comm"))
                        .is_ok_and(|c| c == "sleep\n")
            },
        );
        // SAFETY: test code; a terminal's Ctrl-C, to this thread, so the
        // handlers have run when `raise` returns.
        unsafe { libc::raise(libc::SIGINT) };
        assert!(HANDLED.load(Ordering::SeqCst), "our own handler ran");
        // A signal sent is acted on when its target next runs: give it a
        // second to die of it (it dies within milliseconds when sent one).
        let gone = || stat(other).is_none_or(|s| s.contains(") Z"));
        let start = std::time::Instant::now();
        while !gone() && start.elapsed() < Duration::from_secs(1) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let alive = !gone();
        end();
        assert!(alive, "the group that got the recycled id got our SIGINT");
        // The exec ends however the kernel left it (its status may be lost).
        let _ = job.await.unwrap();
    });
    // SAFETY: test code; back to the default.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_DFL) };
}

/// The threads of this process named as the capture's helper.
fn fault_ahead_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end() == "cp-fault-ahead")
        .count()
}

/// A capture that has grown past 4 MiB gets a helper thread (on a machine
/// with more than one CPU), and the thread is gone when the run returns,
/// whether it ends by end of file or by `max_buffer`.
#[test]
#[ignore = "run by run_isolated in a process of its own"]
fn a_big_capture_has_a_helper_thread_that_ends_with_it() {
    let dir = crate::support::TempDir::new("fault-ahead");
    let fifo = dir.0.join("go");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let script = format!(
        "head -c 8388608 /dev/zero; read go < {}; head -c 1048576 /dev/zero",
        fifo.display()
    );
    for limit in [usize::MAX, 8 << 20] {
        let run = {
            let script = script.clone();
            std::thread::spawn(move || cp::exec(script).max_buffer(limit).run_sync())
        };
        if std::thread::available_parallelism().map_or(1, usize::from) > 1 {
            wait_until(Duration::from_secs(10), "a helper thread", || {
                fault_ahead_threads() == 1
            });
        }
        std::fs::write(&fifo, "go\n").unwrap();
        let out = run.join().unwrap();
        match limit {
            usize::MAX => assert_eq!(out.unwrap().stdout.len(), 9 << 20),
            _ => assert!(matches!(out, Err(cp::Error::MaxBuffer { .. })), "{out:?}"),
        }
        assert_eq!(fault_ahead_threads(), 0);
    }
    assert_no_zombies();
}
