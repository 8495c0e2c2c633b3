//! `exec`: the shell, buffered output, errors, timeouts, `max_buffer`.
//! Every test but the dropped future runs twice: `.await` and `run_sync()`.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use child_process as cp;

use crate::support::{alive, both_forms, wait_until, Mode, TempDir};

async fn check_exec(mode: Mode, cmd: &str, expect_stdout: &str) {
    let out = mode
        .run(cp::exec(cmd))
        .await
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        expect_stdout,
        "stdout of {cmd}"
    );
}

both_forms! {
    async fn both_streams_are_captured(mode: Mode) {
        let out = mode.run(cp::exec("echo hi; echo err >&2")).await.unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"hi\n");
        assert_eq!(out.stderr, b"err\n");
        check_exec(mode, "printf 'a b'", "a b").await;
        check_exec(mode, "echo $((6 * 7))", "42\n").await;
    }

    async fn non_zero_exit_is_an_error_naming_command_code_and_stderr(mode: Mode) {
        let err = mode.run(cp::exec("echo out; echo first >&2; echo last >&2; exit 3")).await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, cp::Error::Exit { .. }), "{err:?}");
        assert!(msg.contains("`echo out; echo first >&2; echo last >&2; exit 3`"), "{msg}");
        assert!(msg.contains("exit status: 3"), "{msg}");
        assert!(msg.ends_with("first\nlast"), "{msg}");
        assert_eq!(err.exit_status().unwrap().code(), Some(3));
        assert_eq!(err.output().unwrap().stdout, b"out\n");
    }

    async fn ignore_status_turns_failure_into_ok(mode: Mode) {
        let out = mode.run(cp::exec("echo partial; exit 7").ignore_status()).await.unwrap();
        assert_eq!(out.status.code(), Some(7));
        assert_eq!(out.stdout, b"partial\n");
        let out = mode.run(cp::exec("kill -USR1 $$").ignore_status()).await.unwrap();
        assert_eq!(out.status.signal(), Some(libc::SIGUSR1));
        // ignore_status never hides a timeout.
        let err = mode.run(cp::exec("sleep 30").ignore_status().timeout(Duration::from_millis(20))).await.unwrap_err();
        assert!(err.is_timeout());
    }

    async fn death_by_signal_is_an_exit_error(mode: Mode) {
        let err = mode.run(cp::exec("kill -TERM $$")).await.unwrap_err();
        assert_eq!(err.exit_status().unwrap().signal(), Some(15));
        assert!(err.to_string().contains("signal: 15"), "{err}");
    }

    async fn text_trims_one_trailing_newline(mode: Mode) {
        assert_eq!(mode.text(cp::exec("echo hello")).await.unwrap(), "hello");
        assert_eq!(mode.text(cp::exec("printf 'a\\r\\n'")).await.unwrap(), "a");
        assert_eq!(mode.text(cp::exec("printf 'a\\n\\n'")).await.unwrap(), "a\n");
        assert_eq!(mode.text(cp::exec("true")).await.unwrap(), "");
        let err = mode.text(cp::exec("printf '\\377'")).await.unwrap_err();
        assert!(err.to_string().contains("printf"), "{err}");
        let io: std::io::Error = err.into();
        assert_eq!(io.kind(), std::io::ErrorKind::InvalidData);
    }

    async fn timeout_kills_and_reports_signal(mode: Mode) {
        let start = Instant::now();
        let err = mode.run(cp::exec("sleep 30").timeout(Duration::from_millis(50))).await.unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
        assert!(err.is_timeout(), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("`sleep 30`") && msg.contains("SIGTERM") && msg.contains("50ms"), "{msg}");
        assert_eq!(err.exit_status().unwrap().signal(), Some(libc::SIGTERM));
        let io: std::io::Error = err.into();
        assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
    }

    async fn timeout_kills_grandchild_that_holds_stdout(mode: Mode) {
        let dir = TempDir::new("grandchild");
        let pidfile = dir.0.join("pid");
        let cmd = format!("sleep 1000 & echo $! > {}; wait", pidfile.display());
        let start = Instant::now();
        let run = mode.start(cp::exec(cmd).timeout(Duration::from_millis(300)));
        // The child tells us the grandchild's pid through the file.
        wait_until(Duration::from_secs(5), "pid file", || {
            std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))
        });
        let grandchild: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        assert!(alive(grandchild));
        let err = run.join().await.unwrap_err();
        assert!(err.is_timeout(), "{err}");
        assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
        wait_until(Duration::from_secs(2), "grandchild gone", || !alive(grandchild));
    }

    async fn timeout_escalates_to_sigkill_for_a_child_that_ignores_sigterm(mode: Mode) {
        let start = Instant::now();
        let run = cp::exec("trap '' TERM; echo ready; while :; do sleep 0.01; done")
            .timeout(Duration::from_millis(100))
            .kill_grace(Duration::from_millis(200));
        let err = mode.run(run).await.unwrap_err();
        assert!(err.is_timeout());
        assert_eq!(err.exit_status().unwrap().signal(), Some(libc::SIGKILL));
        assert_eq!(err.output().unwrap().stdout, b"ready\n");
        assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
    }

    async fn custom_kill_signal(mode: Mode) {
        let run = cp::exec("sleep 30").timeout(Duration::from_millis(50)).kill_signal(cp::Signal::SIGINT);
        let err = mode.run(run).await.unwrap_err();
        assert!(err.to_string().contains("SIGINT"), "{err}");
        assert_eq!(err.exit_status().unwrap().signal(), Some(libc::SIGINT));
    }

    async fn background_process_holding_pipes_does_not_block(mode: Mode) {
        let start = Instant::now();
        let out = mode.run(cp::exec("sleep 30 & echo hi")).await.unwrap();
        assert_eq!(out.stdout, b"hi\n");
        assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
    }

    async fn max_buffer_default_is_one_mebibyte(mode: Mode) {
        let out = mode.run(cp::exec("head -c 524288 /dev/zero")).await.unwrap();
        assert_eq!(out.stdout.len(), 512 * 1024);

        let err = mode.run(cp::exec("head -c 2097152 /dev/zero; sleep 30")).await.unwrap_err();
        let cp::Error::MaxBuffer { stream, limit, .. } = &err else { panic!("{err:?}") };
        assert_eq!((*stream, *limit), (cp::Stream::Stdout, 1024 * 1024));
        let out = err.output().unwrap();
        assert!(out.stdout.len() <= 1024 * 1024);
        assert!(out.status.signal().is_some(), "the child was killed: {:?}", out.status);
        assert!(err.to_string().contains("max_buffer"), "{err}");
    }

    async fn max_buffer_is_exact_per_stream(mode: Mode) {
        let out = mode.run(cp::exec("head -c 1000 /dev/zero").max_buffer(1000)).await.unwrap();
        assert_eq!(out.stdout.len(), 1000);
        let err = mode.run(cp::exec("head -c 1001 /dev/zero >&2").max_buffer(1000)).await.unwrap_err();
        let cp::Error::MaxBuffer { stream, .. } = &err else { panic!("{err:?}") };
        assert_eq!(*stream, cp::Stream::Stderr);
        assert_eq!(err.output().unwrap().stderr.len(), 1000);
        let out = mode.run(cp::exec("head -c 3000000 /dev/zero").max_buffer(usize::MAX)).await.unwrap();
        assert_eq!(out.stdout.len(), 3_000_000);
    }

    async fn binary_output_is_byte_exact(mode: Mode) {
        let out = mode.run(cp::exec(r"printf 'a\000b\377\376c\n'")).await.unwrap();
        assert_eq!(out.stdout, b"a\0b\xff\xfec\n");
        let expect: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
        let out = mode.run(cp::exec("cat").stdin(expect.clone())).await.unwrap();
        assert_eq!(out.stdout, expect);
    }

    async fn stdin_bytes_reach_the_child(mode: Mode) {
        let out = mode.text(cp::exec("wc -c").stdin("hello")).await.unwrap();
        assert_eq!(out.trim(), "5");
        // A child that does not read its stdin is not an error.
        let out = mode.run(cp::exec("true").stdin(vec![b'x'; 4 << 20])).await.unwrap();
        assert!(out.status.success());
        // Without stdin bytes, stdin is /dev/null: `cat` ends at once.
        assert_eq!(mode.text(cp::exec("cat")).await.unwrap(), "");
    }

    async fn cwd_env_and_shell(mode: Mode) {
        let dir = TempDir::new("cwd");
        let out = mode.text(cp::exec("pwd").cwd(&dir.0)).await.unwrap();
        assert_eq!(std::fs::canonicalize(out).unwrap(), std::fs::canonicalize(&dir.0).unwrap());
        assert_eq!(mode.text(cp::exec("echo $CP_X").env("CP_X", "1")).await.unwrap(), "1");
        assert_eq!(mode.text(cp::exec("echo $CP_X$CP_Y").envs([("CP_X", "a"), ("CP_Y", "b")])).await.unwrap(), "ab");
        assert_eq!(mode.text(cp::exec("echo ${HOME:-none}").env_remove("HOME")).await.unwrap(), "none");
        assert_eq!(mode.text(cp::exec("echo ${HOME:-none}").env_clear()).await.unwrap(), "none");
        assert_eq!(mode.text(cp::exec("echo $0").shell("/bin/bash")).await.unwrap(), "/bin/bash");
        let err = mode.run(cp::exec("true").shell("/no/such/shell")).await.unwrap_err();
        assert!(err.to_string().contains("/no/such/shell"), "{err}");
    }

    async fn many_concurrent_execs_get_their_own_output(mode: Mode) {
        let runs: Vec<_> = (0..200).map(|i| mode.start(cp::exec(format!("echo {i}; echo e{i} >&2")))).collect();
        for (i, run) in runs.into_iter().enumerate() {
            let out = run.join().await.unwrap();
            assert_eq!(out.stdout, format!("{i}\n").as_bytes());
            assert_eq!(out.stderr, format!("e{i}\n").as_bytes());
        }
    }
}

#[tokio::test]
async fn dropping_the_future_kills_and_reaps_the_group() {
    let dir = TempDir::new("drop");
    let pidfile = dir.0.join("pids");
    let cmd = format!("sleep 1000 & echo $$ $! > {}; wait", pidfile.display());
    let mut fut = Box::pin(std::future::IntoFuture::into_future(cp::exec(cmd)));
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
        wait_until(Duration::from_secs(3), "process gone", || !alive(pid));
    }
}

#[test]
fn blocking_forms_work_inside_a_runtime_blocking_thread() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let text = rt.block_on(async {
        tokio::task::spawn_blocking(|| cp::exec("echo from a blocking thread").text_sync())
            .await
            .unwrap()
    });
    assert_eq!(text.unwrap(), "from a blocking thread");
}
