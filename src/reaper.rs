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
//!
//! Costs are bounded:
//! - a wake-up steps only the orphans whose pidfd became readable or whose
//!   `SIGKILL` is due, not every orphan;
//! - at most [`pidfd_budget`] orphans keep a pidfd. Past that, an orphan
//!   with nothing left to do but be reaped gives its pidfd up and is checked
//!   with `waitid(WNOHANG)` on a timer that slows down as such orphans
//!   accumulate (50 ms for a few, 1 s for thousands), so dropped long-running
//!   children cannot exhaust the process's fds. Orphans with a kill in
//!   progress keep their pidfd: it names the group safely.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::capture::deadline_after;
use crate::kill::{kill_stragglers, signal_tree, OnDrop, Proc};
use crate::sys;

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
    /// The child is in a group whose leader was reaped already (a
    /// pipeline's first stage): the group is signalled through the
    /// leader's pidfd instead.
    pub shared: Option<Arc<SharedGroup>>,
    /// When `SIGKILL` follows if the child is still alive; `None` once it
    /// was sent, or never due (an infinite grace). Stragglers in the group
    /// get `SIGKILL` at the exit either way.
    pub deadline: Option<Instant>,
}

/// A process group whose leader was reaped, named by the leader's pidfd
/// (which still names the group while members are left), shared by the
/// members handed to the reaper. The last of them to exit takes what is
/// left of the group with it, as a leader's exit does.
pub(crate) struct SharedGroup {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    members: AtomicUsize,
}

impl SharedGroup {
    fn leader(&self) -> Proc<'_> {
        Proc {
            pid: self.pid,
            pidfd: Some(self.pidfd.as_fd()),
        }
    }
}

/// Orphans not yet taken by the thread, and the eventfd that wakes it
/// (`None` until the thread has started).
static QUEUE: Mutex<Vec<Orphan>> = Mutex::new(Vec::new());
static WAKE: Mutex<Option<OwnedFd>> = Mutex::new(None);

/// How often orphans without a pidfd are checked, at least and at most.
const POLL_MIN: Duration = Duration::from_millis(50);
const POLL_MAX: Duration = Duration::from_secs(1);

/// How many orphans may hold a pidfd: an eighth of the fd limit (read
/// again each time: a program may lower it), between 16 and 256.
fn pidfd_budget() -> usize {
    (sys::nofile_limit() / 8).clamp(16, 256) as usize
}

/// Hand `orphan` to the reaper thread, which reaps it once it exits.
pub(crate) fn adopt(orphan: Orphan) {
    // Already gone? Then there is nothing to hand over (and no thread to start).
    if orphan.kill.is_none() && matches!(sys::try_reap(orphan.pid), Ok(Some(_)) | Err(_)) {
        return;
    }
    lock(&QUEUE).push(orphan);
    let mut wake = lock(&WAKE);
    if wake.is_none() {
        *wake = start();
    }
    match &*wake {
        Some(fd) => sys::eventfd_signal(fd.as_fd()),
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
    let wake = sys::eventfd().ok()?;
    let thread_wake = wake.try_clone().ok()?;
    std::thread::Builder::new()
        .name("child_process-reaper".into())
        .spawn(move || run(thread_wake))
        .ok()?;
    Some(wake)
}

fn run(wake: OwnedFd) {
    // `watched[i]` has a pidfd and is `fds[i + 1]`; `polled` have none.
    let mut watched: Vec<Orphan> = Vec::new();
    let mut polled: Vec<Orphan> = Vec::new();
    let mut next_poll: Option<Instant> = None;
    let mut fds: Vec<libc::pollfd> = Vec::new();
    loop {
        let budget = pidfd_budget();
        for mut orphan in lock(&QUEUE).drain(..) {
            if orphan.pidfd.is_some() && orphan.kill.is_none() && watched.len() >= budget {
                orphan.pidfd = None;
            }
            if orphan.pidfd.is_some() {
                watched.push(orphan);
            } else {
                polled.push(orphan);
                next_poll.get_or_insert_with(Instant::now);
            }
        }

        let now = Instant::now();
        // Step what is due: a readable pidfd (seen by the last poll, whose
        // results `fds` still holds), a kill deadline, the poll timer.
        let ready = |i: usize, fds: &[libc::pollfd]| fds.get(i + 1).is_some_and(|p| p.revents != 0);
        let mut i = 0;
        watched.retain_mut(|orphan| {
            let due = ready(i, &fds) || kill_due(orphan, now);
            i += 1;
            !(due && step(orphan, now))
        });
        if next_poll.is_some_and(|t| now >= t) {
            polled.retain_mut(|orphan| !step(orphan, now));
            next_poll = (!polled.is_empty()).then(|| now + poll_interval(polled.len()));
        } else {
            polled.retain_mut(|orphan| !(kill_due(orphan, now) && step(orphan, now)));
        }

        let deadlines = watched
            .iter()
            .chain(&polled)
            .filter_map(|o| o.kill.as_ref()?.deadline)
            .chain(next_poll);
        let timeout = deadlines.min().map(|t| t.saturating_duration_since(now));
        fds.clear();
        fds.push(pollfd(wake.as_raw_fd()));
        fds.extend(
            watched
                .iter()
                .filter_map(|o| o.pidfd.as_ref())
                .map(|fd| pollfd(fd.as_raw_fd())),
        );
        if sys::poll(&mut fds, timeout).is_err() {
            std::thread::sleep(POLL_MIN);
        }
        if fds[0].revents != 0 {
            sys::eventfd_drain(wake.as_fd());
        }
    }
}

fn pollfd(fd: std::os::fd::RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// 250 µs per polled orphan, between [`POLL_MIN`] and [`POLL_MAX`]: the
/// `waitid` calls then cost a fraction of a percent of a CPU.
fn poll_interval(n: usize) -> Duration {
    (Duration::from_micros(250) * n as u32).clamp(POLL_MIN, POLL_MAX)
}

fn kill_due(orphan: &Orphan, now: Instant) -> bool {
    orphan
        .kill
        .as_ref()
        .and_then(|k| k.deadline)
        .is_some_and(|d| now >= d)
}

/// Advance one orphan; `true` once it is reaped (or gone).
fn step(orphan: &mut Orphan, now: Instant) -> bool {
    let me = Proc {
        pid: orphan.pid,
        pidfd: orphan.pidfd.as_ref().map(|fd| fd.as_fd()),
    };
    let shared = orphan.kill.as_ref().and_then(|k| k.shared.as_ref());
    // The last member of a shared group to go takes the rest with it.
    let last_of_shared = || shared.filter(|g| g.members.fetch_sub(1, Ordering::AcqRel) == 1);
    let exited = match sys::has_exited(orphan.pid) {
        Ok(exited) => exited,
        // ECHILD: someone else reaped it (a `waitpid(-1)` elsewhere, or the
        // kernel when SIGCHLD is ignored). Kill what is left of its group
        // through the pidfd (which names it safely), then forget it.
        Err(_) => {
            if orphan.kill.as_ref().is_some_and(|k| k.group) && me.pidfd.is_some() {
                kill_stragglers(me, &[]);
            }
            if let Some(group) = last_of_shared() {
                kill_stragglers(group.leader(), &[]);
            }
            return true;
        }
    };
    if exited {
        if orphan.kill.as_ref().is_some_and(|k| k.group) {
            // The leader is a zombie: its group id is still reserved.
            kill_stragglers(me, &[orphan.pid]);
        }
        if let Some(group) = last_of_shared() {
            // This member is a zombie of the group: the id is reserved.
            kill_stragglers(group.leader(), &[orphan.pid]);
        }
        return sys::try_reap(orphan.pid).map_or(true, |s| s.is_some());
    }
    if let Some(kill) = &mut orphan.kill {
        if kill.deadline.is_some_and(|d| now >= d) {
            let leader = match &kill.shared {
                Some(group) => Some(group.leader()),
                None => kill.group.then_some(me),
            };
            signal_tree(leader, &[me], libc::SIGKILL);
            kill.deadline = None;
        }
    }
    false
}

/// What dropping an unreaped child does, for the async `Child` and the
/// blocking driver alike: signal it as `on_drop` says, then hand it to the
/// reaper (with the `SIGKILL` deadline of a grace period). Never blocks,
/// never panics (an infinite grace means no `SIGKILL`).
pub(crate) fn abandon(
    pid: libc::pid_t,
    pidfd: Option<OwnedFd>,
    leads_group: bool,
    on_drop: OnDrop,
) {
    let kill = match on_drop {
        OnDrop::Reap => None,
        OnDrop::Kill { signal, grace } => {
            let me = Proc {
                pid,
                pidfd: pidfd.as_ref().map(|fd| fd.as_fd()),
            };
            signal_tree(leads_group.then_some(me), &[me], signal.as_raw());
            grace.map(|grace| PendingKill {
                group: leads_group,
                shared: None,
                deadline: deadline_after(Instant::now(), grace),
            })
        }
    };
    adopt(Orphan { pid, pidfd, kill });
}

/// What dropping a pipeline does once its first stage, the group's
/// leader, was reaped: the members' own drops could not reach the group
/// (their pids name no group), so the group is signalled here through the
/// leader's pidfd, and the members go to the reaper sharing it: `SIGKILL`
/// to the group after the grace, and to what is left of it when the last
/// member exits. `sigkill_due`: the run was dropped in the middle of a
/// kill whose first signal went out already. Without the leader's pidfd
/// (no pidfds) each member is abandoned on its own.
pub(crate) fn abandon_group(
    leader: (libc::pid_t, Option<&OwnedFd>),
    members: Vec<(libc::pid_t, Option<OwnedFd>)>,
    on_drop: OnDrop,
    sigkill_due: Option<Option<Instant>>,
) {
    let dup = leader.1.and_then(|fd| fd.try_clone().ok());
    let (OnDrop::Kill { signal, grace }, Some(pidfd)) = (on_drop, dup) else {
        for (pid, pidfd) in members {
            abandon(pid, pidfd, false, on_drop);
        }
        return;
    };
    let group = Arc::new(SharedGroup {
        pid: leader.0,
        pidfd,
        members: AtomicUsize::new(members.len()),
    });
    let deadline = match sigkill_due {
        Some(deadline) => deadline,
        None => {
            let procs: Vec<Proc<'_>> = members
                .iter()
                .map(|(pid, fd)| Proc {
                    pid: *pid,
                    pidfd: fd.as_ref().map(|fd| fd.as_fd()),
                })
                .collect();
            signal_tree(Some(group.leader()), &procs, signal.as_raw());
            grace.and_then(|grace| deadline_after(Instant::now(), grace))
        }
    };
    for (pid, pidfd) in members {
        adopt(Orphan {
            pid,
            pidfd,
            kill: Some(PendingKill {
                group: false,
                shared: Some(group.clone()),
                deadline,
            }),
        });
    }
}
