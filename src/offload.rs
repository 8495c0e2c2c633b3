//! Whole runs awaited in `block_on` of a multi-thread runtime go to a thread
//! of their own, which drives them with the blocking engine and wakes the
//! caller once, at the end.
//!
//! Why: `#[tokio::main]` runs `main` in `block_on` on a multi-thread
//! runtime, where the reactor lives on a worker thread. Driven in place, a
//! run's every readiness event (a pipe read, the pidfd) is seen by that
//! worker, which must then wake the `block_on` thread: a cross-thread
//! wake-up per event, which `std` does not pay. The thread that spawns the
//! child here sleeps in `poll(2)` on its pipes and pidfd, so the child's
//! exit wakes the thread that acts on it, as in `std`, and the caller is
//! woken once. Measured on a 2-CPU VM (`exec("echo hello")`, medians of
//! 8 × 200, interleaved): std 761 µs, in place 881 µs (1.16×), offloaded
//! 870 µs (1.14×); the floor of any design that wakes the caller from
//! another thread (std's own `output()` run on a second thread) was 1.10×
//! in the same conditions. `spawn_blocking(run_sync)` was no better than in
//! place. The larger gain is for big outputs: 1 GiB from `head -c` (4 KiB
//! writes) at 1.25–1.41 GB/s offloaded against 0.85–1.23 in place.
//!
//! A spawned task is not used: it waits for a free worker, so with every
//! worker busy a 200 ms timeout fired seconds late (an earlier attempt,
//! reverted). Here the timeout is enforced by the run's own thread.
//!
//! Dropping the future signals the run's processes at once, from the
//! dropping thread, as a dropped async run does (a program that exits right
//! after the drop must not leave the tree running), then rings the run's
//! eventfd: the blocking engine returns, and its drop hands the processes
//! to the reaper (`SIGKILL` after the grace period). From the drop on, the
//! engine reaps nothing: a leader the signal ended goes to the reaper
//! unreaped, which kills what is left of its group as it reaps it, as for
//! a dropped run in place.
//!
//! The child inherits the pool thread's per-thread attributes (nice value,
//! CPU affinity, capabilities), not those of the thread that awaited.
//!
//! At most [`MAX_THREADS`] runs are offloaded at once; more run in place.
//! Idle threads wait [`IDLE_FOR`] for another run, then exit.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::error::{CommandLine, Error, Result};
use crate::kill::{signal_tree, OnDrop, Proc};
use crate::sys;
use crate::trace::Carried;

/// Offloaded runs in flight at most; past that, runs stay in place (they
/// are correct there, only slower in this shape).
const MAX_THREADS: usize = 32;

/// How long an idle thread waits for another run before it exits.
const IDLE_FOR: Duration = Duration::from_secs(10);

/// Whether a run awaited here is cheaper on a thread of its own: in
/// `block_on` (no task is being polled) of a multi-thread runtime.
pub(crate) fn wanted() -> bool {
    use tokio::runtime::{Handle, RuntimeFlavor};
    tokio::task::try_id().is_none()
        && Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread)
}

/// What an offloaded run shares with its future: the eventfd a dropped
/// future rings, and the processes that future must signal at once.
pub(crate) struct Cancel {
    ring: OwnedFd,
    tree: Mutex<Tree>,
}

/// The run's processes, as a dropped future signals them.
#[derive(Default)]
struct Tree {
    /// The future was dropped: start nothing more.
    cancelled: bool,
    /// When the drop signalled the processes, if it did.
    signalled: Option<Instant>,
    /// The run's `kill_signal`; `None` until a process started.
    signal: Option<i32>,
    /// The process group's leader. Kept after it is reaped: its pidfd
    /// still names the group.
    leader: Option<(libc::pid_t, Option<OwnedFd>)>,
    /// Started and not yet reaped (the run takes each out before it reaps
    /// it, under the lock, so a number signalled here is never recycled).
    procs: Vec<(libc::pid_t, Option<OwnedFd>)>,
}

impl Cancel {
    fn new() -> std::io::Result<Cancel> {
        Ok(Cancel {
            ring: sys::eventfd()?,
            tree: Mutex::new(Tree::default()),
        })
    }

    fn tree(&self) -> MutexGuard<'_, Tree> {
        self.tree.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Readable once the future was dropped: the run stops.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }

    /// About to start a process: `None` once the future was dropped (start
    /// nothing). Holding the result holds off the drop until the process
    /// is reported with [`Spawning::started`] (one `posix_spawn`), so a
    /// drop never misses a process that was being started.
    pub(crate) fn spawning(&self) -> Option<Spawning<'_>> {
        let tree = self.tree();
        (!tree.cancelled).then_some(Spawning(tree))
    }

    /// When the future's drop signalled the run's processes, if it did.
    pub(crate) fn signalled(&self) -> Option<Instant> {
        self.tree().signalled
    }

    /// `pid` is about to be reaped: a dropped future must not signal that
    /// number any more. `false`, changing nothing, once the future was
    /// dropped: the run then stops without reaping, and its drop hands the
    /// process to the reaper, which kills what is left of its group when
    /// it reaps a leader. The future's signal may be what ended it, and the
    /// run reaping it first left a grandchild that ignores that signal
    /// running for good (an outside attack: 3 runs in 15).
    #[must_use = "a dropped future's run must not reap"]
    pub(crate) fn reaping(&self, pid: libc::pid_t) -> bool {
        let mut tree = self.tree();
        if tree.cancelled {
            return false;
        }
        tree.procs.retain(|(p, _)| *p != pid);
        true
    }

    /// The future was dropped: signal the tree now, then stop the run.
    fn ring(&self) {
        {
            let mut tree = self.tree();
            tree.cancelled = true;
            if let (Some(signal), false) = (tree.signal, tree.procs.is_empty()) {
                fn proc((pid, fd): &(libc::pid_t, Option<OwnedFd>)) -> Proc<'_> {
                    Proc {
                        pid: *pid,
                        pidfd: fd.as_ref().map(|fd| fd.as_fd()),
                    }
                }
                let procs: Vec<Proc<'_>> = tree.procs.iter().map(proc).collect();
                signal_tree(tree.leader.as_ref().map(proc), &procs, signal);
                drop(procs);
                tree.signalled = Some(Instant::now());
            }
            tree.procs.clear();
        }
        sys::eventfd_signal(self.ring.as_fd());
    }
}

/// A process of an offloaded run being started; see [`Cancel::spawning`].
pub(crate) struct Spawning<'a>(MutexGuard<'a, Tree>);

impl Spawning<'_> {
    /// The process started: a dropped future signals it from now on (with
    /// `on_drop`'s signal; nothing for `OnDrop::Reap`).
    pub(crate) fn started(
        mut self,
        pid: libc::pid_t,
        pidfd: Option<BorrowedFd<'_>>,
        leads_group: bool,
        on_drop: OnDrop,
    ) {
        let OnDrop::Kill { signal, .. } = on_drop else {
            return;
        };
        let dup = || pidfd.and_then(|fd| fd.try_clone_to_owned().ok());
        let tree = &mut *self.0;
        tree.signal = Some(signal.as_raw());
        if leads_group && tree.leader.is_none() {
            tree.leader = Some((pid, dup()));
        }
        tree.procs.push((pid, dup()));
    }
}

/// Run `state` with `work` on a pool thread when [`wanted`], or with
/// `in_place` (not wanted here, or the pool cannot take it). `line` names
/// the run in an error. Nothing happens before the first poll.
///
/// Not an `async fn`, nor are the layers under it (`run_in_place`,
/// `drive`): an `async fn` keeps its arguments where they came in and
/// moves them into locals of its own, so every layer held the run's state
/// twice, and the boxed future of `exec("..").await` was 3,904 bytes,
/// copied whole into its box and allocated past glibc's small sizes (a
/// `malloc_consolidate` per call). The blocks here use what they capture
/// in place: 2,296 bytes, and about 970 fewer instructions per `exec` in a
/// task (callgrind).
#[allow(clippy::manual_async_fn)]
pub(crate) fn run<S, T, F>(
    state: S,
    line: impl FnOnce(&S) -> CommandLine,
    work: fn(S, Arc<Cancel>) -> Result<T>,
    in_place: impl FnOnce(S) -> F,
) -> impl Future<Output = Result<T>>
where
    S: Send + 'static,
    T: Send + 'static,
    F: Future<Output = Result<T>>,
{
    async move {
        let state = if wanted() {
            let line = line(&state);
            match start(state, line, work) {
                Ok(running) => return running.await,
                Err(state) => state,
            }
        } else {
            state
        };
        in_place(state).await
    }
}

/// Start `work(state, cancel)` on a pool thread, or give `state` back when
/// no thread can take it (the pool is full, or no thread or eventfd could
/// be made): the caller then runs in place. `work` must report each process
/// it starts and reaps to `cancel`, and return once `cancel.fd()` is
/// readable.
fn start<S, T>(
    state: S,
    line: CommandLine,
    work: fn(S, Arc<Cancel>) -> Result<T>,
) -> std::result::Result<Running<T>, S>
where
    S: Send + 'static,
    T: Send + 'static,
{
    let Ok(cancel) = Cancel::new() else {
        return Err(state);
    };
    let Some(thread) = thread() else {
        return Err(state);
    };
    let cancel = Arc::new(cancel);
    let (tx, rx) = oneshot::channel();
    let ring = cancel.clone();
    let trace = Carried::here();
    let task: Task = Box::new(move |idle| {
        let result = panic::catch_unwind(AssertUnwindSafe(|| trace.in_scope(|| work(state, ring))));
        // Back in the pool before the caller hears of the result, so that
        // its next run finds this thread idle instead of starting another.
        idle();
        // The receiver is gone when the future was dropped: nobody to tell.
        let _ = tx.send(result);
    });
    // A thread only leaves the pool by removing itself from IDLE, so the
    // one given is receiving. Were it not, the task would be dropped with
    // its sender, and the future would say so.
    let _ = thread.send(task);
    Ok(Running {
        rx,
        cancel,
        line,
        done: false,
    })
}

/// An offloaded run: its result, once the thread sends it.
pub(crate) struct Running<T> {
    rx: oneshot::Receiver<std::thread::Result<Result<T>>>,
    /// Rung on drop before the end: the tree is signalled, the run stops.
    cancel: Arc<Cancel>,
    line: CommandLine,
    done: bool,
}

impl<T> Future for Running<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let result = ready!(Pin::new(&mut self.rx).poll(cx));
        self.done = true;
        match result {
            Ok(Ok(result)) => Poll::Ready(result),
            // A panic in the run is the caller's panic, as in place.
            Ok(Err(payload)) => panic::resume_unwind(payload),
            Err(_) => Poll::Ready(Err(Error::io(
                &self.line,
                io::Error::other("the thread running the command ended without a result"),
            ))),
        }
    }
}

impl<T> Drop for Running<T> {
    fn drop(&mut self) {
        if !self.done {
            self.cancel.ring();
        }
    }
}

/// A run, given the call that puts its thread back in the pool.
type Task = Box<dyn FnOnce(&mut dyn FnMut()) + Send>;

/// Idle threads, each with the sender that hands it its next task.
static IDLE: Mutex<Vec<(u64, mpsc::Sender<Task>)>> = Mutex::new(Vec::new());
/// Threads alive, idle or running.
static THREADS: AtomicUsize = AtomicUsize::new(0);
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn idle_threads() -> std::sync::MutexGuard<'static, Vec<(u64, mpsc::Sender<Task>)>> {
    IDLE.lock().unwrap_or_else(|e| e.into_inner())
}

/// An idle thread, or a new one while there are fewer than
/// [`MAX_THREADS`].
fn thread() -> Option<mpsc::Sender<Task>> {
    if let Some((_, tx)) = idle_threads().pop() {
        return Some(tx);
    }
    if THREADS.fetch_add(1, Ordering::AcqRel) >= MAX_THREADS {
        THREADS.fetch_sub(1, Ordering::AcqRel);
        return None;
    }
    let (tx, rx) = mpsc::channel::<Task>();
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let own = tx.clone();
    let spawned = std::thread::Builder::new()
        // 15 bytes at most, or the kernel cuts it (to tell it from the
        // reaper in /proc).
        .name("cp-offload-run".into())
        .spawn(move || serve(id, own, rx));
    if spawned.is_err() {
        THREADS.fetch_sub(1, Ordering::AcqRel);
        return None;
    }
    Some(tx)
}

/// A pool thread: run tasks until idle for [`IDLE_FOR`].
fn serve(id: u64, tx: mpsc::Sender<Task>, rx: mpsc::Receiver<Task>) {
    loop {
        match rx.recv_timeout(IDLE_FOR) {
            Ok(task) => task(&mut || idle_threads().push((id, tx.clone()))),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let mut idle = idle_threads();
                if let Some(at) = idle.iter().position(|(i, _)| *i == id) {
                    idle.swap_remove(at);
                    break;
                }
                // Taken from the pool meanwhile: its task is on the way.
            }
            // Cannot happen: this thread holds a sender.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    THREADS.fetch_sub(1, Ordering::AcqRel);
}

#[cfg(test)]
mod tests {
    use super::wanted;

    #[test]
    fn wanted_only_in_multi_thread_block_on() {
        assert!(!wanted(), "no runtime");
        let mt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        assert!(mt.block_on(async { wanted() }));
        assert!(!mt.block_on(async { tokio::spawn(async { wanted() }).await.unwrap() }));
        let ct = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(!ct.block_on(async { wanted() }));
    }
}
