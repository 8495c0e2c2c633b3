//! Issue 13: one builder with every guarantee, streaming, routing and
//! pipelines. Each check looks from outside: the bytes that arrived, the
//! process table, the status.

use std::future::IntoFuture;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use child_process as cp;
use futures::StreamExt;

use crate::support::{alive, both_forms, wait_until, wait_until_async, worker_exe, TempDir};

/// `echo $$` to a pid file, atomically, then `rest`: a child that says when
/// it runs and who it is.
fn with_pidfile(dir: &TempDir, rest: &str) -> (String, std::path::PathBuf) {
    let pidfile = dir.0.join("pid");
    let line = format!(
        "echo $$ > {0}.tmp && mv {0}.tmp {0} && {rest}",
        pidfile.display()
    );
    (line, pidfile)
}

fn read_pid(pidfile: &std::path::Path) -> i32 {
    std::fs::read_to_string(pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

both_forms! {
    /// 13.1: a routed stream is absent from `Output`; a file gets it.
    async fn routing_sends_streams_elsewhere(mode: Mode) {
        let dir = TempDir::new("route");
        let path = dir.0.join("out.txt");
        let file = std::fs::File::create(&path).unwrap();
        let out = mode
            .run(cp::exec("echo to-file; echo to-null >&2").stdout(file).stderr(cp::Stdio::null()))
            .await
            .unwrap();
        assert_eq!((out.stdout.len(), out.stderr.len()), (0, 0));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "to-file\n");
    }

    /// 13.1: stdin from a file, and `stdin(bytes)` still compiles with
    /// `&str`, `String` and `Vec<u8>`.
    async fn stdin_from_a_file_or_bytes(mode: Mode) {
        let dir = TempDir::new("stdin");
        let path = dir.0.join("in.txt");
        std::fs::write(&path, "from a file\n").unwrap();
        let file = std::fs::File::open(&path).unwrap();
        assert_eq!(mode.text(cp::exec("cat").stdin(file)).await.unwrap(), "from a file");
        assert_eq!(mode.text(cp::exec("cat").stdin("str")).await.unwrap(), "str");
        assert_eq!(mode.text(cp::exec("cat").stdin(String::from("s"))).await.unwrap(), "s");
        assert_eq!(mode.text(cp::exec("cat").stdin(b"v".to_vec())).await.unwrap(), "v");
        // A null stdin and an inherited one both let `cat` end.
        assert_eq!(mode.text(cp::exec("cat").stdin(cp::Stdio::null())).await.unwrap(), "");
    }

    /// 13.1: `stderr_to_stdout` is one pipe: the order of interleaved writes
    /// is kept, and stderr is empty.
    async fn stderr_to_stdout_keeps_the_order(mode: Mode) {
        let script = "for i in 1 2 3 4 5 6; do echo out$i; echo err$i >&2; done";
        let out = mode.run(cp::exec(script).stderr_to_stdout()).await.unwrap();
        let expected: String = (1..=6).map(|i| format!("out{i}\nerr{i}\n")).collect();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
        assert!(out.stderr.is_empty());
    }

    /// 13.5: a pipeline without a shell; each stage's arguments reach it
    /// literally.
    async fn pipeline_runs_every_stage(mode: Mode) {
        let run = cp::exec_file("printf", ["a b\\nx 1\\nc\\nx 2\\n"])
            .pipe(cp::exec_file("grep", ["x "]))
            .pipe(cp::exec_file("wc", ["-l"]));
        let out = match mode {
            crate::support::Mode::Async => run.text().await,
            crate::support::Mode::Blocking => run.text_sync(),
        };
        assert_eq!(out.unwrap().trim(), "2");
    }

    /// 13.5: pipefail, naming the stage that failed and its status.
    async fn pipeline_fails_like_pipefail(mode: Mode) {
        let run = cp::exec("echo a").pipe(cp::exec("sh -c 'cat; exit 3'")).pipe(cp::exec("cat"));
        let err = match mode {
            crate::support::Mode::Async => run.await,
            crate::support::Mode::Blocking => run.run_sync(),
        }
        .unwrap_err();
        match &err {
            cp::Error::Pipeline { stage, output, .. } => {
                assert_eq!(*stage, 2);
                assert_eq!(output.status.code(), Some(3));
                assert_eq!(output.stdout, b"a\n");
            }
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("failed at stage 2 (`sh -c 'cat; exit 3'`): exit status: 3"), "{err}");
    }

    /// 13.5: `yes | head -1`: the first stage dies of SIGPIPE, which is
    /// not a failure of the pipeline.
    async fn pipeline_sigpipe_is_not_a_failure(mode: Mode) {
        let run = cp::exec("yes").pipe(cp::exec("head -n 1"));
        let out = match mode {
            crate::support::Mode::Async => run.await,
            crate::support::Mode::Blocking => run.run_sync(),
        }
        .unwrap();
        assert_eq!(out.stdout, b"y\n");
    }

    /// 13.5: a timeout kills every stage, and what they started.
    async fn pipeline_timeout_kills_every_stage(mode: Mode) {
        let dir = TempDir::new("pipe-timeout");
        let a = dir.0.join("a");
        let c = dir.0.join("c");
        let stage = |pidfile: &std::path::Path| {
            cp::exec(format!(
                "echo $$ > {0}.tmp && mv {0}.tmp {0} && exec sleep 30",
                pidfile.display()
            ))
        };
        let start = Instant::now();
        let run = stage(&a)
            .pipe(cp::exec("cat"))
            .pipe(stage(&c))
            .timeout(Duration::from_millis(300));
        let err = match mode {
            crate::support::Mode::Async => run.await,
            crate::support::Mode::Blocking => run.run_sync(),
        }
        .unwrap_err();
        assert!(err.is_timeout(), "{err}");
        assert!(start.elapsed() < Duration::from_secs(5));
        for pid in [read_pid(&a), read_pid(&c)] {
            wait_until(Duration::from_secs(5), "every stage died", || !alive(pid));
        }
    }

    /// 13.5: stdin bytes feed the first stage; `max_buffer` bounds the last
    /// stage's stdout.
    async fn pipeline_stdin_and_max_buffer(mode: Mode) {
        let run = cp::exec("cat").stdin("hello\n").pipe(cp::exec("tr a-z A-Z"));
        let out = match mode {
            crate::support::Mode::Async => run.await,
            crate::support::Mode::Blocking => run.run_sync(),
        }
        .unwrap();
        assert_eq!(out.stdout, b"HELLO\n");
        let run = cp::exec("yes").pipe(cp::exec("cat")).max_buffer(1000);
        let err = match mode {
            crate::support::Mode::Async => run.await,
            crate::support::Mode::Blocking => run.run_sync(),
        }
        .unwrap_err();
        assert!(matches!(err, cp::Error::MaxBuffer { limit: 1000, .. }), "{err}");
        assert_eq!(err.output().unwrap().stdout.len(), 1000);
    }
}

/// 13.2: a stream shown live and still in the error: the child's stderr
/// reaches this process's stderr as it is written, and the error carries
/// its tail.
#[test]
fn tee_shows_stderr_live_and_keeps_it_for_the_error() {
    let out = std::process::Command::new(worker_exe())
        .arg("--tee")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr, "error[E0001]: boom\n", "the child's stderr, live");
    assert!(stdout.starts_with("compiling\n"), "{stdout}");
    assert!(
        stdout.contains("failed: exit status: 101\nstderr:\nerror[E0001]: boom"),
        "{stdout}"
    );
}

/// 13.1: `Command::stderr_to_stdout`.
#[tokio::test]
async fn command_stderr_to_stdout() {
    let child = cp::Command::new("sh")
        .args(["-c", "echo a; echo b >&2; echo c"])
        .stderr_to_stdout()
        .spawn()
        .unwrap();
    assert!(child.stderr.is_none());
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(out.stdout, b"a\nb\nc\n");
}

/// 13.3: `Exec::spawn` keeps the deadline: `wait` fails with `Timeout`,
/// having killed the group; the status says how it died.
#[tokio::test]
async fn exec_spawn_keeps_the_timeout() {
    let start = Instant::now();
    let mut child = cp::exec("sleep 30 & sleep 30")
        .timeout(Duration::from_millis(200))
        .kill_grace(Duration::from_millis(200))
        .spawn()
        .unwrap();
    let err = child.wait().await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(err.exit_status().unwrap().signal(), Some(libc::SIGTERM));
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// 13.3: dropping an `Exec::spawn`ed child kills its whole group, as a
/// dropped `exec` does; stdin bytes are written for it.
#[tokio::test]
async fn exec_spawn_drop_kills_the_group_and_stdin_is_fed() {
    let dir = TempDir::new("spawn-drop");
    let (line, pidfile) = with_pidfile(&dir, "read x && sleep 30 & wait");
    let child = cp::exec(line)
        .stdin("go\n")
        .kill_grace(Duration::from_millis(100))
        .spawn()
        .unwrap();
    wait_until_async(Duration::from_secs(10), "started", || pidfile.exists()).await;
    let pid = read_pid(&pidfile);
    drop(child);
    wait_until_async(Duration::from_secs(5), "group killed", || !alive(pid)).await;
    let mut child = cp::exec("cat").stdin("fed").spawn().unwrap();
    let mut text = String::new();
    tokio::io::AsyncReadExt::read_to_string(child.stdout.as_mut().unwrap(), &mut text)
        .await
        .unwrap();
    assert_eq!(text, "fed");
    assert!(child.wait().await.unwrap().success());
}

/// 13.4: timeouts on `Command` (through `wait` and `output_sync`) and on
/// `Fork`, with `kill_signal` and `kill_grace`.
#[tokio::test]
async fn command_and_fork_timeouts() {
    let mut child = cp::Command::new("sh")
        .args(["-c", "trap '' TERM; sleep 30"])
        .timeout(Duration::from_millis(100))
        .kill_grace(Duration::from_millis(100))
        .spawn()
        .unwrap();
    let err = child.wait().await.unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(err.exit_status().unwrap().signal(), Some(libc::SIGKILL));

    let err = cp::Command::new("sleep")
        .arg("30")
        .timeout(Duration::from_millis(50))
        .kill_signal(cp::Signal::SIGINT)
        .output_sync()
        .unwrap_err();
    assert_eq!(err.exit_status().unwrap().signal(), Some(libc::SIGINT));

    let mut worker = cp::fork("sleep")
        .args(["30"])
        .timeout(Duration::from_millis(50))
        .spawn()
        .unwrap();
    let err = worker.wait().await.unwrap_err();
    assert!(err.is_timeout());
}

/// 13.3: lines as they arrive, each saying its stream; the stream ends
/// with the run's error (with the stderr tail) when it fails.
#[tokio::test]
async fn lines_stream_both_streams_then_the_result() {
    let script = "echo one; echo warn >&2; printf 'no-newline'; exit 4";
    let mut lines = cp::exec(script).lines().unwrap();
    let mut got = Vec::new();
    let mut error = None;
    while let Some(item) = lines.next().await {
        match item {
            Ok(line) => got.push((line.stream(), line.text().into_owned(), line.is_complete())),
            Err(e) => error = Some(e),
        }
    }
    got.sort_by_key(|(s, _, _)| *s == cp::Stream::Stderr);
    assert_eq!(
        got,
        [
            (cp::Stream::Stdout, "one".to_string(), true),
            (cp::Stream::Stdout, "no-newline".to_string(), false),
            (cp::Stream::Stderr, "warn".to_string(), true),
        ]
    );
    let error = error.expect("the run failed");
    assert_eq!(error.exit_status().unwrap().code(), Some(4));
    assert!(error.to_string().ends_with("stderr:\nwarn"), "{error}");
    assert!(lines.status().is_none());
}

/// 13.3: a line longer than 1 MiB comes in pieces, and nothing is lost;
/// bytes that are not UTF-8 are kept as they are.
#[tokio::test]
async fn lines_keep_long_lines_and_any_bytes() {
    let script = "head -c 2621440 /dev/zero | tr '\\0' x; echo; printf 'a\\377b\\n'";
    let mut lines = cp::exec(script).lines().unwrap();
    let mut sizes = Vec::new();
    let mut last = Vec::new();
    while let Some(line) = lines.next().await {
        let line = line.unwrap();
        sizes.push((line.as_bytes().len(), line.is_complete()));
        last = line.into_bytes();
    }
    assert_eq!(
        sizes,
        [
            (1 << 20, false),
            (1 << 20, false),
            (512 << 10, true),
            (3, true)
        ]
    );
    assert_eq!(last, b"a\xffb");
    assert!(lines.status().unwrap().success());
}

/// 13.3: the timeout ends a run whose lines are being streamed, and
/// dropping the stream kills the group.
#[tokio::test]
async fn lines_keep_the_timeout_and_drop_kills() {
    let start = Instant::now();
    let mut lines = cp::exec("echo started; sleep 30")
        .timeout(Duration::from_millis(200))
        .lines()
        .unwrap();
    assert_eq!(lines.next().await.unwrap().unwrap().text(), "started");
    let err = lines.next().await.unwrap().unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(lines.next().await.is_none());
    assert!(start.elapsed() < Duration::from_secs(5));

    let dir = TempDir::new("lines-drop");
    let (line, pidfile) = with_pidfile(&dir, "echo ready; sleep 30");
    let mut lines = cp::exec(line)
        .kill_grace(Duration::from_millis(100))
        .lines()
        .unwrap();
    assert_eq!(lines.next().await.unwrap().unwrap().text(), "ready");
    let pid = read_pid(&pidfile);
    drop(lines);
    wait_until_async(
        Duration::from_secs(5),
        "dropped lines kill the group",
        || !alive(pid),
    )
    .await;
}

/// 13.5: dropping a pipeline's future kills every stage.
#[tokio::test]
async fn dropped_pipeline_kills_every_stage() {
    let dir = TempDir::new("pipe-drop");
    let (line, pidfile) = with_pidfile(&dir, "exec sleep 30");
    let run = tokio::spawn(
        cp::exec("sleep 30")
            .pipe(cp::exec(line))
            .kill_grace(Duration::from_millis(100))
            .into_future(),
    );
    wait_until_async(Duration::from_secs(10), "started", || pidfile.exists()).await;
    let pid = read_pid(&pidfile);
    run.abort();
    let _ = run.await;
    wait_until_async(Duration::from_secs(5), "every stage killed", || !alive(pid)).await;
}

/// Review of 13.3: a consumer that reads slower than the child writes gets
/// every line; reading pauses at 1,024 waiting lines and resumes as the
/// consumer takes them (it used to stop for good once the queue filled).
#[tokio::test]
async fn lines_read_on_after_the_consumer_catches_up() {
    let mut lines = cp::exec("seq 1 100000")
        .timeout(Duration::from_secs(30))
        .lines()
        .unwrap();
    let mut n = 0u32;
    while let Some(line) = lines.next().await {
        n += 1;
        assert_eq!(line.unwrap().text(), n.to_string());
    }
    assert_eq!(n, 100_000);
    assert!(lines.status().unwrap().success());
}

/// Review of 13.3: the timeout kills the tree while the consumer is busy
/// with a line, not only when it asks for the next one.
#[tokio::test]
async fn lines_timeout_fires_while_the_consumer_is_busy() {
    let dir = TempDir::new("lines-busy");
    let (line, pidfile) = with_pidfile(&dir, "echo ready; exec sleep 30");
    let mut lines = cp::exec(line)
        .timeout(Duration::from_millis(300))
        .kill_grace(Duration::from_millis(100))
        .lines()
        .unwrap();
    assert_eq!(lines.next().await.unwrap().unwrap().text(), "ready");
    let pid = read_pid(&pidfile);
    // Not polling `lines` meanwhile.
    wait_until_async(
        Duration::from_secs(5),
        "the timeout killed the child while nobody polled the stream",
        || !alive(pid),
    )
    .await;
    let err = lines.next().await.unwrap().unwrap_err();
    assert!(err.is_timeout(), "{err}");
}

/// Review of 13.2: a tee whose own stdout nobody reads (a stopped pager)
/// neither outlives the timeout nor stalls the runtime's other tasks.
#[test]
fn tee_to_a_stuck_stdout_keeps_the_timeout_and_the_runtime() {
    use std::io::Read;
    let mut child = std::process::Command::new(worker_exe())
        .arg("--tee-stuck")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut report = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut report)
        .unwrap();
    assert!(child.wait().unwrap().success(), "{report}");
    let field = |run: &str, key: &str| -> String {
        let line = report
            .lines()
            .find(|l| l.starts_with(run))
            .unwrap_or_else(|| panic!("no {run} line in {report}"));
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in {line}"))
            .to_string()
    };
    for run in ["await", "sync"] {
        assert_eq!(field(run, "timeout"), "true", "{report}");
        let ms: u64 = field(run, "ms").parse().unwrap();
        assert!(ms < 4000, "{run}: 1 s timeout + 0.5 s grace took {ms} ms");
    }
    let ticks: u32 = field("await", "ticks").parse().unwrap();
    assert!(
        ticks >= 5,
        "the ticker ran {ticks} times in a second: {report}"
    );
}

/// Review of 13.5: a pipeline dropped after its first stage (the group's
/// leader) ended and was reaped still kills the later stages and what they
/// started: the group is reached through the leader's kept pidfd.
#[tokio::test]
async fn dropped_pipeline_after_its_first_stage_ended_kills_the_rest() {
    let dir = TempDir::new("pipe-drop-late");
    let first = dir.0.join("first");
    let (line, pidfile) = with_pidfile(&dir, "sleep 30 & echo $! > grandchild; wait");
    let run = tokio::spawn(
        cp::exec(format!("echo $$ > {}", first.display()))
            .pipe(cp::exec(line).cwd(&dir.0))
            .kill_grace(Duration::from_millis(100))
            .into_future(),
    );
    wait_until_async(Duration::from_secs(10), "started", || {
        pidfile.exists() && dir.0.join("grandchild").exists() && first.exists()
    })
    .await;
    let leader = read_pid(&first);
    wait_until_async(Duration::from_secs(10), "the first stage reaped", || {
        crate::support::stat(leader).is_none()
    })
    .await;
    let stage = read_pid(&pidfile);
    let grandchild = read_pid(&dir.0.join("grandchild"));
    run.abort();
    let _ = run.await;
    wait_until_async(Duration::from_secs(5), "every stage killed", || {
        !alive(stage) && !alive(grandchild)
    })
    .await;
}
