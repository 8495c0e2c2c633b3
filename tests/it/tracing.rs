//! The `tracing` feature (issue 13): a span per process with its command
//! line and pid, and events for its start, the signals sent to it and its
//! end with the status. Run with `cargo test --features tracing`.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use child_process as cp;

/// A `MakeWriter` that keeps what the subscriber prints.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

fn traced(f: impl FnOnce()) -> String {
    let out = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(out.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    text
}

#[test]
fn a_run_shows_its_command_pid_status_and_kills() {
    let log = traced(|| {
        cp::exec("echo traced").run_sync().unwrap();
        let err = cp::exec_file("sleep", ["30"])
            .timeout(Duration::from_millis(50))
            .run_sync()
            .unwrap_err();
        assert!(err.is_timeout());
    });
    let lines: Vec<&str> = log.lines().collect();
    let find = |needle: &str| {
        lines
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{log}"))
    };
    assert!(find("command=echo traced").contains("spawned"));
    let ended = find("exit status: 0");
    assert!(ended.contains("ended") && ended.contains("pid="), "{ended}");
    let signal = find("signal sent");
    assert!(
        signal.contains("signal=SIGTERM") && signal.contains("command=sleep 30"),
        "{signal}"
    );
    assert!(find("signal: 15").contains("ended"));
}

/// A run awaited in multi-thread `block_on` is driven by a thread of ours
/// (issue 16): its span must still reach the awaiting thread's subscriber,
/// inside the span the caller was in.
#[test]
fn an_offloaded_run_reports_to_the_callers_subscriber_and_span() {
    let log = traced(|| {
        let rt = crate::support::multi_thread(2);
        let _outer = tracing::info_span!("deploy").entered();
        rt.block_on(async { cp::exec("echo offloaded").await.unwrap() });
    });
    let line = log
        .lines()
        .find(|l| l.contains("echo offloaded") && l.contains("spawned"))
        .unwrap_or_else(|| panic!("no spawn line in:\n{log}"));
    assert!(line.contains("deploy"), "{line}");
}
