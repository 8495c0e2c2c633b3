//! `spawn`, `Command` and `Child`: stdio, signals, waiting, options.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use child_process as cp;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::support::{alive, stat_field, wait_until_async, TempDir};

#[tokio::test]
async fn stdio_is_piped_by_default() {
    let mut child = cp::spawn("cat", [""; 0]).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    assert!(child.stderr.is_some());
    stdin.write_all(b"ping\n").await.unwrap();
    let mut line = String::new();
    let mut reader = BufReader::new(&mut stdout);
    reader.read_line(&mut line).await.unwrap();
    assert_eq!(line, "ping\n");
    drop(stdin);
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    assert!(child.wait().await.unwrap().success());
}

#[tokio::test]
async fn kill_then_wait_reports_the_signal() {
    let mut child = cp::spawn("sleep", ["30"]).unwrap();
    child.kill(cp::Signal::SIGTERM).unwrap();
    let status = child.wait().await.unwrap();
    assert_eq!(status.signal(), Some(15));
    // Waiting again returns the same status; killing again is harmless.
    assert_eq!(child.wait().await.unwrap().signal(), Some(15));
    child.kill(cp::Signal::SIGKILL).unwrap();
}

#[tokio::test]
async fn wait_is_cancel_safe() {
    let mut child = cp::spawn("sh", ["-c", "read line; exit 4"]).unwrap();
    // `wait` closes the stdin the child still holds: keep it out of reach.
    let mut stdin = child.stdin.take().unwrap();
    for _ in 0..3 {
        let r = tokio::time::timeout(Duration::from_millis(10), child.wait()).await;
        assert!(r.is_err(), "still running");
    }
    stdin.write_all(b"go\n").await.unwrap();
    assert_eq!(child.wait().await.unwrap().code(), Some(4));
}

#[tokio::test]
async fn kill_on_drop_kills() {
    let child = cp::Command::new("sleep")
        .arg("30")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.pid() as i32;
    assert!(alive(pid));
    drop(child);
    wait_until_async(Duration::from_secs(2), "killed", || !alive(pid)).await;
}

#[tokio::test]
async fn dropped_child_keeps_running_by_default() {
    let mut child = cp::spawn("sh", ["-c", "read x; echo $x"]).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let pid = child.pid() as i32;
    drop(child);
    assert!(alive(pid));
    stdin.write_all(b"still here\n").await.unwrap();
    let mut out = String::new();
    stdout.read_to_string(&mut out).await.unwrap();
    assert_eq!(out, "still here\n");
    wait_until_async(Duration::from_secs(2), "reaped", || {
        crate::support::stat(pid).is_none()
    })
    .await;
}

#[tokio::test]
async fn detached_child_leads_its_own_session() {
    let mut child = cp::Command::new("sleep")
        .arg("30")
        .detached(true)
        .spawn()
        .unwrap();
    let pid = child.pid() as i64;
    assert_eq!(stat_field(pid as i32, 6), Some(pid), "session id");
    assert_eq!(stat_field(pid as i32, 5), Some(pid), "process group id");
    child.kill(cp::Signal::SIGKILL).unwrap();
    child.wait().await.unwrap();
}

#[tokio::test]
async fn process_group_and_kill_group() {
    let mut child = cp::Command::new("sh")
        .args(["-c", "sleep 30 & echo $!; wait"])
        .process_group(true)
        .spawn()
        .unwrap();
    let pid = child.pid() as i32;
    assert_eq!(stat_field(pid, 5), Some(pid as i64));
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .await
        .unwrap();
    let grandchild: i32 = line.trim().parse().unwrap();
    child.kill_group(cp::Signal::SIGTERM).unwrap();
    assert_eq!(child.wait().await.unwrap().signal(), Some(15));
    wait_until_async(Duration::from_secs(2), "grandchild killed", || {
        !alive(grandchild)
    })
    .await;

    let plain = cp::spawn("true", [""; 0]).unwrap();
    let err = plain.kill_group(cp::Signal::SIGTERM).unwrap_err();
    assert!(err.to_string().contains("`true`"), "{err}");
}

#[tokio::test]
async fn argv0_env_and_cwd() {
    let out = cp::Command::new("sh")
        .argv0("my-name")
        .args(["-c", "echo $0"])
        .spawn()
        .unwrap();
    assert_eq!(out.wait_with_output().await.unwrap().stdout, b"my-name\n");

    std::env::set_var("CP_TEST_INHERITED", "yes");
    let dir = TempDir::new("spawn-cwd");
    let out = cp::Command::new("sh")
        .args(["-c", "echo $CP_A,$CP_B,${CP_TEST_INHERITED:-gone},$(pwd)"])
        .env("CP_A", "1")
        .envs([("CP_B", "2")])
        .env_remove("CP_TEST_INHERITED")
        .cwd(&dir.0)
        .spawn()
        .unwrap()
        .wait_with_output()
        .await
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let cwd = std::fs::canonicalize(&dir.0).unwrap();
    assert_eq!(text, format!("1,2,gone,{}\n", cwd.display()));

    let out = cp::Command::new("/usr/bin/env")
        .env_clear()
        .env("ONLY", "me")
        .spawn()
        .unwrap();
    assert_eq!(out.wait_with_output().await.unwrap().stdout, b"ONLY=me\n");
}

#[tokio::test]
async fn stdio_inherit_null_and_file() {
    let dir = TempDir::new("stdio");
    let path = dir.0.join("out.txt");
    let file = std::fs::File::create(&path).unwrap();
    let mut child = cp::Command::new("sh")
        .args(["-c", "cat; echo to-file"])
        .stdin(cp::Stdio::null())
        .stdout(file)
        .stderr(cp::Stdio::null())
        .spawn()
        .unwrap();
    assert!(child.stdin.is_none() && child.stdout.is_none() && child.stderr.is_none());
    assert!(child.wait().await.unwrap().success());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "to-file\n");
}

#[tokio::test]
async fn one_childs_stdout_feeds_anothers_stdin() {
    let mut producer = cp::spawn("printf", ["a\\nb\\nc\\n"]).unwrap();
    let fd = producer.stdout.take().unwrap().into_owned_fd().unwrap();
    let consumer = cp::Command::new("wc").arg("-l").stdin(fd).spawn().unwrap();
    let out = consumer.wait_with_output().await.unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), "3");
    assert!(producer.wait().await.unwrap().success());
}

#[tokio::test]
async fn children_start_with_default_signal_state() {
    // Rust ignores SIGPIPE in the parent; the child must not inherit that,
    // or `yes | head -1` would spin forever on EPIPE.
    let out = cp::exec("yes | head -1")
        .timeout(Duration::from_secs(10))
        .text()
        .await
        .unwrap();
    assert_eq!(out, "y");
    let out = cp::exec("grep -E '^(SigBlk|SigIgn)' /proc/self/status")
        .text()
        .await
        .unwrap();
    assert_eq!(out, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000");
}

#[tokio::test]
async fn children_inherit_only_stdio() {
    let fds = cp::exec("ls /proc/self/fd").text().await.unwrap();
    // 0, 1, 2 and the fd `ls` opened to read the directory.
    let fds: Vec<&str> = fds.lines().collect();
    assert!(fds.len() <= 4, "{fds:?}");
}

#[tokio::test]
async fn writing_to_an_exited_child_is_broken_pipe() {
    let mut child = cp::spawn("true", [""; 0]).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    child.wait().await.unwrap();
    let err = stdin.write_all(&[0u8; 1 << 16]).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
}

#[tokio::test]
async fn wait_with_output_reads_both_streams() {
    let child = cp::spawn(
        "sh",
        [
            "-c",
            "head -c 300000 /dev/zero; head -c 200000 /dev/zero >&2; exit 5",
        ],
    )
    .unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(
        (out.stdout.len(), out.stderr.len(), out.status.code()),
        (300_000, 200_000, Some(5))
    );
}

#[test]
fn spawn_outside_a_runtime_is_a_clear_error() {
    let err = cp::spawn("true", [""; 0]).unwrap_err();
    assert!(err.to_string().contains("needs a tokio runtime"), "{err}");
}

#[test]
fn signal_names() {
    assert_eq!(
        "SIGTERM".parse::<cp::Signal>().unwrap(),
        cp::Signal::SIGTERM
    );
    assert_eq!("TERM".parse::<cp::Signal>().unwrap(), cp::Signal::SIGTERM);
    assert_eq!(cp::Signal::SIGTERM.to_string(), "SIGTERM");
    assert!("SIGBOGUS".parse::<cp::Signal>().is_err());
}
