//! Regression tests, named after the issue that found them.

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use child_process as cp;

/// Issue 3: a `max_buffer` overflow from a child that keeps writing must not
/// wait for the child to finish on its own.
#[tokio::test]
async fn issue_3_max_buffer_does_not_wait_for_endless_writer() {
    let start = Instant::now();
    let err = cp::exec("yes").await.unwrap_err();
    assert!(matches!(err, cp::Error::MaxBuffer { .. }), "{err}");
    assert_eq!(err.output().unwrap().stdout.len(), 1024 * 1024);
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// Issue 3: output written just before a timeout kill is kept.
#[tokio::test]
async fn issue_3_output_before_timeout_is_kept() {
    let err = cp::exec("echo started; echo warn >&2; sleep 30")
        .timeout(Duration::from_millis(200))
        .await
        .unwrap_err();
    let out = err.output().unwrap();
    assert_eq!(
        (out.stdout.as_slice(), out.stderr.as_slice()),
        (&b"started\n"[..], &b"warn\n"[..])
    );
    assert!(err.to_string().ends_with("stderr:\nwarn"), "{err}");
}

/// Review of issue 6: spawning must stay sound while another thread changes
/// the environment (std's `set_var` is safe in edition 2021). Passing the
/// raw `environ` to `posix_spawn` made almost every spawn here fail with
/// EFAULT; copying it under std's lock does not.
#[test]
fn issue_6_spawn_while_another_thread_sets_env() {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("CP_ENV_CHURN_{}", i % 64);
                std::env::set_var(&key, "x".repeat((i % 200) as usize));
                std::env::remove_var(&key);
                i += 1;
            }
        })
    };
    let failures = (0..300)
        .filter(|_| {
            cp::Command::new("/bin/true")
                .output_sync()
                .map_or(true, |o| !o.status.success())
        })
        .count();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    churn.join().unwrap();
    assert_eq!(failures, 0);
}

/// Review of issue 3: a stopped child (as one in a background process group
/// is, by SIGTTOU, when it touches the terminal) gets SIGCONT after the
/// kill signal, so the timeout does not wait out the grace period.
#[test]
fn issue_3_timeout_of_a_stopped_child_does_not_wait_for_sigkill() {
    let start = Instant::now();
    let err = cp::exec("kill -STOP $$")
        .timeout(Duration::from_millis(50))
        .kill_grace(Duration::from_secs(30))
        .run_sync()
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&err.exit_status().unwrap()),
        Some(libc::SIGTERM)
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
}

/// Review of issue 3: a runtime built without its IO driver made tokio panic
/// after the child was started, leaving it running and unreaped. Now it is
/// an error, and the `exec` child is killed as for a dropped future.
#[test]
fn issue_3_runtime_without_io_is_an_error_not_a_panic() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let err = rt.block_on(cp::exec("sleep 30").into_future()).unwrap_err();
    assert!(matches!(err, cp::Error::Spawn { .. }), "{err:?}");
    assert!(err.to_string().contains("tokio runtime"), "{err}");
    assert!(
        std::error::Error::source(&err)
            .unwrap()
            .to_string()
            .contains("enable_io"),
        "{err:?}"
    );
}
