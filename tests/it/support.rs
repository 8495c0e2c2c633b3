//! Helpers that look at the process from outside: `/proc` for fds, zombies
//! and liveness. Nothing here sleeps to synchronise: `wait_until` polls a
//! condition the test expects to become true, with a generous bound.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// The fds this process has open.
pub fn open_fds() -> BTreeSet<i32> {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Wait (up to 10 s) until no fd is open that was not open in `before`, and
/// say which ones and which children are left if that does not happen.
#[track_caller]
pub fn assert_no_new_fds(before: &BTreeSet<i32>) {
    let start = Instant::now();
    while !open_fds().is_subset(before) {
        if start.elapsed() > Duration::from_secs(10) {
            let extra: Vec<String> = open_fds()
                .difference(before)
                .map(|fd| {
                    format!(
                        "{fd} -> {:?}",
                        std::fs::read_link(format!("/proc/self/fd/{fd}"))
                    )
                })
                .collect();
            panic!("fds left open: {extra:?}; children: {:?}", children());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `(pid, state)` of every child process of this process.
pub fn children() -> Vec<(i32, char)> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Some((state, ppid)) = stat(pid) {
            if ppid == me {
                out.push((pid, state));
            }
        }
    }
    out
}

/// Zombie children of this process.
pub fn zombies() -> Vec<i32> {
    children()
        .into_iter()
        .filter(|&(_, s)| s == 'Z')
        .map(|(p, _)| p)
        .collect()
}

/// `(state, ppid)` from `/proc/<pid>/stat`.
pub fn stat(pid: i32) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Field `n` (1-based, as in proc(5)) of `/proc/<pid>/stat`.
pub fn stat_field(pid: i32, n: usize) -> Option<i64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    rest.split(' ').nth(n - 3)?.parse().ok()
}

/// Whether the running kernel is at least `major.minor`
/// (`/proc/sys/kernel/osrelease`, "6.18.44-…").
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let mut next = || {
        parts
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(0)
    };
    (next(), next()) >= (major, minor)
}

/// Whether `pid` is a running (not zombie) process.
pub fn alive(pid: i32) -> bool {
    matches!(stat(pid), Some((state, _)) if state != 'Z' && state != 'X')
}

/// Poll `cond` until it holds, for at most `limit`.
#[track_caller]
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Async form of [`wait_until`].
pub async fn wait_until_async(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// No zombie child is left: each one the crate dropped is reaped soon.
#[track_caller]
pub fn assert_no_zombies() {
    wait_until(Duration::from_secs(5), "no zombie children", || {
        zombies().is_empty()
    });
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("cp-test-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Which form of `exec`/`exec_file` a shared test body runs through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `.await` inside a tokio runtime.
    Async,
    /// `run_sync()` / `text_sync()`, with no runtime at all.
    Blocking,
}

/// `Exec` and `ExecFile`, seen the same way by the tests.
pub trait Run: Sized + Send + 'static {
    fn run_async(self) -> cp::ExecFuture;
    fn text_async(self) -> cp::TextFuture;
    fn run_blocking(self) -> cp::Result<cp::Output>;
    fn text_blocking(self) -> cp::Result<String>;
}

macro_rules! impl_run {
    ($($ty:ty),*) => {$(
        impl Run for $ty {
            fn run_async(self) -> cp::ExecFuture {
                std::future::IntoFuture::into_future(self)
            }
            fn text_async(self) -> cp::TextFuture {
                self.text()
            }
            fn run_blocking(self) -> cp::Result<cp::Output> {
                self.run_sync()
            }
            fn text_blocking(self) -> cp::Result<String> {
                self.text_sync()
            }
        }
    )*};
}

use child_process as cp;
impl_run!(cp::Exec, cp::ExecFile);

impl Mode {
    pub async fn run(self, r: impl Run) -> cp::Result<cp::Output> {
        match self {
            Mode::Async => r.run_async().await,
            Mode::Blocking => r.run_blocking(),
        }
    }

    pub async fn text(self, r: impl Run) -> cp::Result<String> {
        match self {
            Mode::Async => r.text_async().await,
            Mode::Blocking => r.text_blocking(),
        }
    }

    /// Start `r` running concurrently with the test body.
    pub fn start(self, r: impl Run) -> Running {
        match self {
            Mode::Async => Running::Task(tokio::spawn(r.run_async())),
            Mode::Blocking => Running::Thread(std::thread::spawn(move || r.run_blocking())),
        }
    }
}

/// An `exec` running in the background of a test.
pub enum Running {
    Task(tokio::task::JoinHandle<cp::Result<cp::Output>>),
    Thread(std::thread::JoinHandle<cp::Result<cp::Output>>),
}

impl Running {
    pub async fn join(self) -> cp::Result<cp::Output> {
        match self {
            Running::Task(task) => task.await.unwrap(),
            Running::Thread(thread) => thread.join().unwrap(),
        }
    }
}

/// One test body, run twice: through `.await` in a tokio runtime, and
/// through the blocking forms from a plain `#[test]` with no runtime.
macro_rules! both_forms {
    ($($(#[$meta:meta])* async fn $name:ident($mode:ident: Mode) $body:block)*) => {$(
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn body($mode: $crate::support::Mode) $body

            // Multi-threaded, so a test body that blocks on a condition
            // does not stall the `exec` running in the background.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn async_form() {
                body($crate::support::Mode::Async).await
            }

            #[test]
            fn blocking_form() {
                futures::executor::block_on(body($crate::support::Mode::Blocking))
            }
        }
    )*};
}
pub(crate) use both_forms;

/// The Rust worker fixture (`tests/fixtures/worker.rs`), built once.
pub fn worker_exe() -> std::path::PathBuf {
    example_exe("fixture_worker")
}

/// An example of this package (a test fixture), built once per name.
pub fn example_exe(name: &str) -> std::path::PathBuf {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static BUILT: Mutex<Option<HashMap<String, std::path::PathBuf>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--example", name])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building the example {name} failed");
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/it-xxxx -> target/debug/examples/<name>
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    built.insert(name.to_string(), path.clone());
    path
}

/// A fixture script under `tests/fixtures`.
pub fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Whether `node` can be run. On a laptop without it the Node tests skip
/// with a message; under `CI=true` a missing `node` fails the test.
pub fn have_node() -> bool {
    let found = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "node is required under CI=true; .ci/run installs it"
        );
        eprintln!("node not available; skipping this test");
    }
    found
}

/// A multi-thread runtime with `workers` workers, built as `#[tokio::main]`
/// builds one.
pub fn multi_thread(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

/// The pids of a cluster's live workers.
pub async fn worker_pids(primary: &cp::cluster::Primary) -> Vec<i32> {
    primary
        .workers()
        .await
        .unwrap()
        .iter()
        .map(|w| w.pid as i32)
        .collect()
}
