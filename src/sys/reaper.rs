//! The background reaper: children dropped before they were waited for.
//!
//! A destructor must not block, yet a child that is never waited for stays a
//! zombie. tokio keeps such children in an "orphan queue" reaped on the next
//! `SIGCHLD` it happens to see (`tokio/src/process/unix/orphan.rs`); that
//! needs a runtime. Ours is one lazily started thread that `poll(2)`s the
//! orphans' pidfds, so it works with or without tokio, and it also carries
//! out the escalation of a kill that a dropped `exec` future started:
//! `kill_signal` was sent at drop, `SIGKILL` follows after the grace period,
//! and stragglers in the group get `SIGKILL` once the leader is gone.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A child handed over to the reaper.
pub(crate) struct Orphan {
    pub pid: libc::pid_t,
    pub pidfd: Option<OwnedFd>,
    pub kill: Option<PendingKill>,
}

/// A kill in progress: the first signal was sent already.
pub(crate) struct PendingKill {
    /// Kill the whole group (the child's pid is its pgid), not just the child.
    pub group: bool,
    /// When `SIGKILL` follows if the child is still alive.
    pub deadline: Instant,
}

/// Orphans not yet taken by the thread, and the eventfd that wakes it
/// (`None` until the thread has started).
static QUEUE: Mutex<Vec<Orphan>> = Mutex::new(Vec::new());
static WAKE: Mutex<Option<OwnedFd>> = Mutex::new(None);

/// How often orphans without a pidfd are checked with `waitpid(WNOHANG)`.
const FALLBACK_POLL: Duration = Duration::from_millis(50);

/// Hand `orphan` to the reaper thread, which reaps it once it exits.
pub(crate) fn adopt(orphan: Orphan) {
    // Already gone? Then there is nothing to hand over (and no thread to start).
    if orphan.kill.is_none() && matches!(super::try_reap(orphan.pid), Ok(Some(_)) | Err(_)) {
        return;
    }
    lock(&QUEUE).push(orphan);
    let mut wake = lock(&WAKE);
    if wake.is_none() {
        *wake = start();
    }
    match &*wake {
        Some(fd) => super::eventfd_signal(fd.as_fd()),
        // No thread could be started (out of processes or fds). Keep the
        // orphans queued, advance them here, and try again at the next adopt.
        None => {
            let now = Instant::now();
            lock(&QUEUE).retain_mut(|orphan| !step(orphan, now));
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn start() -> Option<OwnedFd> {
    let wake = super::eventfd().ok()?;
    let thread_wake = wake.try_clone().ok()?;
    std::thread::Builder::new()
        .name("child_process-reaper".into())
        .spawn(move || run(thread_wake))
        .ok()?;
    Some(wake)
}

fn run(wake: OwnedFd) {
    let mut orphans: Vec<Orphan> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    loop {
        orphans.append(&mut lock(&QUEUE));
        let now = Instant::now();
        orphans.retain_mut(|orphan| !step(orphan, now));

        let mut timeout: Option<Duration> = None;
        for orphan in &orphans {
            let wait = match &orphan.kill {
                Some(kill) => kill.deadline.saturating_duration_since(now),
                None if orphan.pidfd.is_none() => FALLBACK_POLL,
                None => continue,
            };
            let wait = if orphan.pidfd.is_none() {
                wait.min(FALLBACK_POLL)
            } else {
                wait
            };
            timeout = Some(timeout.map_or(wait, |t: Duration| t.min(wait)));
        }
        fds.clear();
        fds.push(libc::pollfd {
            fd: wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        fds.extend(
            orphans
                .iter()
                .filter_map(|o| o.pidfd.as_ref())
                .map(|fd| libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                }),
        );
        if super::poll(&mut fds, timeout).is_err() {
            std::thread::sleep(FALLBACK_POLL);
        }
        if fds[0].revents != 0 {
            super::eventfd_drain(wake.as_fd());
        }
    }
}

/// Advance one orphan; `true` once it is reaped.
fn step(orphan: &mut Orphan, now: Instant) -> bool {
    let exited = match super::has_exited(orphan.pid) {
        Ok(exited) => exited,
        // ECHILD: someone else reaped it (a `waitpid(-1)` elsewhere). Drop it.
        Err(_) => return true,
    };
    if exited {
        if orphan.kill.is_some() {
            finish_kill(orphan);
        }
        return super::try_reap(orphan.pid).map_or(true, |s| s.is_some());
    }
    if let Some(kill) = &mut orphan.kill {
        if now >= kill.deadline {
            finish_kill(orphan);
            // Nothing more to escalate; wait for the exit like any orphan,
            // but keep killing stragglers of the group when it comes.
            if let Some(kill) = &mut orphan.kill {
                kill.deadline = now + Duration::from_secs(3600 * 24 * 365);
            }
        }
    }
    false
}

/// `SIGKILL` to the child, or to its whole group while the leader is still
/// unreaped (so the group id cannot have been recycled).
fn finish_kill(orphan: &Orphan) {
    let group = orphan.kill.as_ref().is_some_and(|k| k.group);
    if group {
        let _ = super::kill_group(orphan.pid, libc::SIGKILL);
    } else {
        let _ = super::kill(
            orphan.pid,
            orphan.pidfd.as_ref().map(|fd| fd.as_fd()),
            libc::SIGKILL,
        );
    }
}
