//! Issue 6: programs that flood, stall, close early or ignore signals.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use child_process as cp;

use crate::support::both_forms;

both_forms! {
    async fn no_deadlock_with_100_mb_each_way(mode: Mode) {
        // The child echoes 100 MB of stdin to stdout while a background job
        // writes 100 MB to stderr: all three pipes are full at once.
        const N: usize = 100 << 20;
        let input: Vec<u8> = (0..N).map(|i| (i % 251) as u8).collect();
        let run = cp::exec("head -c 104857600 /dev/zero >&2 & cat; wait")
            .stdin(input.clone())
            .max_buffer(usize::MAX)
            .timeout(Duration::from_secs(120));
        let out = mode.run(run).await.unwrap();
        assert_eq!(out.stderr.len(), N);
        assert!(out.stdout == input, "stdout differs from stdin");
    }

    async fn child_that_closes_stdout_early_keeps_running(mode: Mode) {
        let start = Instant::now();
        let out = mode.run(cp::exec("echo early; exec >&-; sleep 0.3; echo late >&2")).await.unwrap();
        assert_eq!(out.stdout, b"early\n");
        assert_eq!(out.stderr, b"late\n", "stderr is read until the child exits");
        assert!(start.elapsed() >= Duration::from_millis(300));
    }

    async fn child_that_never_reads_stdin(mode: Mode) {
        let out = mode.run(cp::exec("sleep 0.1; echo done").stdin(vec![0u8; 50 << 20])).await.unwrap();
        assert_eq!(out.stdout, b"done\n");
    }

    async fn child_that_ignores_sigterm_cannot_hang_a_timeout(mode: Mode) {
        let start = Instant::now();
        let run = cp::exec("trap '' TERM; sleep 30 & wait")
            .timeout(Duration::from_millis(50))
            .kill_grace(Duration::from_millis(100));
        let err = mode.run(run).await.unwrap_err();
        assert!(err.is_timeout());
        assert_eq!(err.exit_status().unwrap().signal(), Some(libc::SIGKILL));
        assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    }

    async fn garbage_output_is_returned_byte_for_byte(mode: Mode) {
        let out = mode
            .run(cp::exec("head -c 3000000 /dev/urandom | tee /dev/stderr").max_buffer(usize::MAX))
            .await
            .unwrap();
        assert_eq!(out.stdout.len(), 3_000_000);
        assert!(out.stdout == out.stderr);
    }
}

#[test]
fn children_start_with_an_empty_signal_mask_even_when_the_parent_blocks_signals() {
    // The signal mask is per thread; block in this one and spawn from it.
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: test code; sigemptyset/sigaddset initialise and fill the set.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigaddset(set.as_mut_ptr(), libc::SIGTERM);
        libc::sigaddset(set.as_mut_ptr(), libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, set.as_ptr(), std::ptr::null_mut());
    }
    let text = cp::exec("grep -E '^Sig(Blk|Ign)' /proc/self/status")
        .text_sync()
        .unwrap();
    // SAFETY: as above; unblock again for the rest of this thread's life.
    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, set.as_ptr(), std::ptr::null_mut()) };
    assert_eq!(text, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000");
    // A pipeline ends although the parent ignores SIGPIPE (Rust does).
    assert_eq!(
        cp::exec("yes | head -1")
            .timeout(Duration::from_secs(10))
            .text_sync()
            .unwrap(),
        "y"
    );
}
