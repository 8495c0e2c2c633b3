//! `exec`: the shell, buffered output, errors, timeouts, `max_buffer`.

use std::future::IntoFuture;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use child_process as cp;

use crate::support::{alive, wait_until_async, TempDir};

#[track_caller]
fn check_exec(cmd: &str, expect_stdout: &str) -> impl std::future::Future<Output = ()> {
    let cmd = cmd.to_owned();
    let expect = expect_stdout.to_owned();
    async move {
        let out = cp::exec(&cmd)
            .await
            .unwrap_or_else(|e| panic!("{cmd}: {e}"));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            expect,
            "stdout of {cmd}"
        );
    }
}

#[tokio::test]
async fn both_streams_are_captured() {
    let out = cp::exec("echo hi; echo err >&2").await.unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, b"hi\n");
    assert_eq!(out.stderr, b"err\n");
    check_exec("printf 'a b'", "a b").await;
    check_exec("echo $((6 * 7))", "42\n").await;
}

#[tokio::test]
async fn non_zero_exit_is_an_error_naming_command_code_and_stderr() {
    let err = cp::exec("echo out; echo first >&2; echo last >&2; exit 3")
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, cp::Error::Exit { .. }), "{err:?}");
    assert!(
        msg.contains("`echo out; echo first >&2; echo last >&2; exit 3`"),
        "{msg}"
    );
    assert!(msg.contains("exit status: 3"), "{msg}");
    assert!(msg.ends_with("first\nlast"), "{msg}");
    assert_eq!(err.exit_status().unwrap().code(), Some(3));
    assert_eq!(err.output().unwrap().stdout, b"out\n");
}

#[tokio::test]
async fn ignore_status_turns_failure_into_ok() {
    let out = cp::exec("echo partial; exit 7")
        .ignore_status()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(out.stdout, b"partial\n");
    let out = cp::exec("kill -USR1 $$").ignore_status().await.unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGUSR1));
}

#[tokio::test]
async fn death_by_signal_is_an_exit_error() {
    let err = cp::exec("kill -TERM $$").await.unwrap_err();
    assert_eq!(err.exit_status().unwrap().signal(), Some(15));
    assert!(err.to_string().contains("signal: 15"), "{err}");
}

#[tokio::test]
async fn text_trims_one_trailing_newline() {
    assert_eq!(cp::exec("echo hello").text().await.unwrap(), "hello");
    assert_eq!(cp::exec("printf 'a\\r\\n'").text().await.unwrap(), "a");
    assert_eq!(cp::exec("printf 'a\\n\\n'").text().await.unwrap(), "a\n");
    assert_eq!(cp::exec("true").text().await.unwrap(), "");
    let err = cp::exec("printf '\\377'").text().await.unwrap_err();
    assert!(err.to_string().contains("printf"), "{err}");
    let io: std::io::Error = err.into();
    assert_eq!(io.kind(), std::io::ErrorKind::InvalidData);
}

#[tokio::test]
async fn timeout_kills_and_reports_signal() {
    let start = Instant::now();
    let err = cp::exec("sleep 30")
        .timeout(Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    assert!(err.is_timeout(), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("`sleep 30`") && msg.contains("SIGTERM") && msg.contains("50ms"),
        "{msg}"
    );
    assert_eq!(err.exit_status().unwrap().signal(), Some(libc::SIGTERM));
    let io: std::io::Error = err.into();
    assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
}

#[tokio::test]
async fn timeout_kills_grandchild_that_holds_stdout() {
    let dir = TempDir::new("grandchild");
    let pidfile = dir.0.join("pid");
    let cmd = format!("sleep 1000 & echo $! > {}; wait", pidfile.display());
    let start = Instant::now();
    let run = tokio::spawn(
        cp::exec(cmd)
            .timeout(Duration::from_millis(300))
            .into_future(),
    );
    // The child tells us the grandchild's pid through the file.
    wait_until_async(Duration::from_secs(5), "pid file", || {
        std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))
    })
    .await;
    let grandchild: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(grandchild));
    let err = run.await.unwrap().unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    wait_until_async(Duration::from_secs(2), "grandchild gone", || {
        !alive(grandchild)
    })
    .await;
}

#[tokio::test]
async fn timeout_escalates_to_sigkill_for_a_child_that_ignores_sigterm() {
    let start = Instant::now();
    let err = cp::exec("trap '' TERM; echo ready; while :; do sleep 0.01; done")
        .timeout(Duration::from_millis(100))
        .kill_grace(Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(err.exit_status().unwrap().signal(), Some(libc::SIGKILL));
    assert_eq!(err.output().unwrap().stdout, b"ready\n");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn custom_kill_signal() {
    let err = cp::exec("sleep 30")
        .timeout(Duration::from_millis(50))
        .kill_signal(cp::Signal::SIGINT)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("SIGINT"), "{err}");
    assert_eq!(err.exit_status().unwrap().signal(), Some(libc::SIGINT));
}

#[tokio::test]
async fn background_process_holding_pipes_does_not_block() {
    let start = Instant::now();
    let out = cp::exec("sleep 30 & echo hi").await.unwrap();
    assert_eq!(out.stdout, b"hi\n");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn max_buffer_default_is_one_mebibyte() {
    let out = cp::exec("head -c 524288 /dev/zero").await.unwrap();
    assert_eq!(out.stdout.len(), 512 * 1024);

    let err = cp::exec("head -c 2097152 /dev/zero; sleep 30")
        .await
        .unwrap_err();
    let cp::Error::MaxBuffer { stream, limit, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!((*stream, *limit), (cp::Stream::Stdout, 1024 * 1024));
    let out = err.output().unwrap();
    assert!(out.stdout.len() <= 1024 * 1024);
    assert!(
        out.status.signal().is_some(),
        "the child was killed: {:?}",
        out.status
    );
    assert!(err.to_string().contains("max_buffer"), "{err}");
}

#[tokio::test]
async fn max_buffer_is_exact_per_stream() {
    let out = cp::exec("head -c 1000 /dev/zero")
        .max_buffer(1000)
        .await
        .unwrap();
    assert_eq!(out.stdout.len(), 1000);
    let err = cp::exec("head -c 1001 /dev/zero >&2")
        .max_buffer(1000)
        .await
        .unwrap_err();
    let cp::Error::MaxBuffer { stream, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*stream, cp::Stream::Stderr);
    assert_eq!(err.output().unwrap().stderr.len(), 1000);
    let out = cp::exec("head -c 3000000 /dev/zero")
        .max_buffer(usize::MAX)
        .await
        .unwrap();
    assert_eq!(out.stdout.len(), 3_000_000);
}

#[tokio::test]
async fn binary_output_is_byte_exact() {
    let out = cp::exec(r"printf 'a\000b\377\376c\n'").await.unwrap();
    assert_eq!(out.stdout, b"a\0b\xff\xfec\n");
    let expect: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    let out = cp::exec("cat").stdin(expect.clone()).await.unwrap();
    assert_eq!(out.stdout, expect);
}

#[tokio::test]
async fn stdin_bytes_reach_the_child() {
    let out = cp::exec("wc -c").stdin("hello").text().await.unwrap();
    assert_eq!(out.trim(), "5");
    // A child that does not read its stdin is not an error.
    let out = cp::exec("true").stdin(vec![b'x'; 4 << 20]).await.unwrap();
    assert!(out.status.success());
    // Without stdin bytes, stdin is /dev/null: `cat` ends at once.
    assert_eq!(cp::exec("cat").text().await.unwrap(), "");
}

#[tokio::test]
async fn cwd_env_and_shell() {
    let dir = TempDir::new("cwd");
    let out = cp::exec("pwd").cwd(&dir.0).text().await.unwrap();
    assert_eq!(
        std::fs::canonicalize(out).unwrap(),
        std::fs::canonicalize(&dir.0).unwrap()
    );
    assert_eq!(
        cp::exec("echo $CP_X")
            .env("CP_X", "1")
            .text()
            .await
            .unwrap(),
        "1"
    );
    assert_eq!(
        cp::exec("echo ${HOME:-none}")
            .env_remove("HOME")
            .text()
            .await
            .unwrap(),
        "none"
    );
    assert_eq!(
        cp::exec("echo $0").shell("/bin/bash").text().await.unwrap(),
        "/bin/bash"
    );
    let err = cp::exec("true").shell("/no/such/shell").await.unwrap_err();
    assert!(err.to_string().contains("/no/such/shell"), "{err}");
}

#[tokio::test]
async fn dropping_the_future_kills_and_reaps_the_group() {
    let dir = TempDir::new("drop");
    let pidfile = dir.0.join("pids");
    let cmd = format!("sleep 1000 & echo $$ $! > {}; wait", pidfile.display());
    let mut fut = Box::pin(cp::exec(cmd).into_future());
    // Poll the future until the child reports both pids, then drop it.
    let pids: Vec<i32> = loop {
        tokio::select! {
            r = &mut fut => panic!("finished early: {r:?}"),
            () = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
        if let Ok(text) = std::fs::read_to_string(&pidfile) {
            if text.ends_with('\n') {
                break text
                    .split_whitespace()
                    .map(|p| p.parse().unwrap())
                    .collect();
            }
        }
    };
    drop(fut);
    for pid in pids {
        wait_until_async(Duration::from_secs(3), "process gone", || !alive(pid)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_execs_get_their_own_output() {
    let runs =
        (0..200).map(|i| tokio::spawn(cp::exec(format!("echo {i}; echo e{i} >&2")).into_future()));
    let results = futures::future::join_all(runs).await;
    for (i, r) in results.into_iter().enumerate() {
        let out = r.unwrap().unwrap();
        assert_eq!(out.stdout, format!("{i}\n").as_bytes());
        assert_eq!(out.stderr, format!("e{i}\n").as_bytes());
    }
}
