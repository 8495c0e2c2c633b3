//! Passing a terminal's or a service manager's signal on to `exec`
//! children that live in process groups of their own.
//!
//! `exec` puts its child in a group of its own so a timeout can kill the
//! whole tree. A terminal's Ctrl-C (`SIGINT`), `SIGQUIT`, a hang-up
//! (`SIGHUP`) or a service manager's `SIGTERM` then reach only the
//! foreground group: the parent dies and the children run on. So while such
//! a child lives, this process catches those four signals and sends each to
//! every live group first, then does what it would have done without us:
//! calls the handler that was there before, or, when there was none (the
//! default action), restores the default and raises the signal again, so
//! the process still dies of it and its exit status shows it.
//!
//! A signal this process ignores (`nohup`, a shell's background job) is left
//! alone: no handler, no forwarding.
//!
//! How the handlers chain follows `signal-hook-registry`: a handler keeps
//! the one it replaced and calls it. Ours is installed when the first group
//! is registered (a program that never runs `exec` sees no handler of ours),
//! and again on top of whatever is there at each later registration, so a
//! handler installed after ours without chaining (the `ctrlc` crate
//! replaces it) does not stop later children from getting the signal. When
//! someone calls ours as their "previous" handler, or ours is called again
//! from within itself through such a chain, it only forwards (once), never
//! re-raises: the process has a handler of its own then.
//!
//! A group is named by its leader's pidfd where the kernel signals groups
//! through one (`PIDFD_SIGNAL_PROCESS_GROUP`, Linux 6.9): the kernel then
//! finds the group by the leader's `struct pid`, which a process that got
//! the same number later never shares, not even a child of ours leading a
//! group of its own. Elsewhere by its number, sent only while a child of
//! ours is still in the group (which keeps the number from being reused).
//!
//! The handler does only async-signal-safe work: atomics,
//! `pidfd_send_signal`, `waitid`, `killpg`, `sigaction`, `raise`, and the
//! call to the previous handler.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The signals a terminal or a service manager sends to end a program.
const SIGNALS: [libc::c_int; 4] = [libc::SIGHUP, libc::SIGINT, libc::SIGQUIT, libc::SIGTERM];

/// How many groups can be registered at once; more are not forwarded to.
const SLOTS: usize = 1024;

/// The registered groups; 0 is a free slot. A group is its id in the high
/// half and, in the low half, its leader's pidfd plus one (0: no pidfd).
static GROUPS: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];

/// How many handlers are in their forwarding loop right now. A
/// registration dropped waits for none to be before it closes its pidfd,
/// so a handler that read the slot never signals through a number that
/// was closed and reused meanwhile (by another child's pidfd, say).
static IN_LOOP: AtomicUsize = AtomicUsize::new(0);

fn pack(pgid: libc::pid_t, pidfd: Option<RawFd>) -> u64 {
    (u64::from(pgid as u32) << 32) | pidfd.map_or(0, |fd| u64::from(fd as u32) + 1)
}

fn unpack(slot: u64) -> (libc::pid_t, Option<RawFd>) {
    let low = slot as u32;
    (
        (slot >> 32) as libc::pid_t,
        (low != 0).then(|| (low - 1) as RawFd),
    )
}

/// Per signal: the handler ours replaced (`sa_sigaction`) and its flags.
static PREV_HANDLER: [AtomicUsize; 4] = [const { AtomicUsize::new(libc::SIG_DFL) }; 4];
static PREV_FLAGS: [AtomicI32; 4] = [const { AtomicI32::new(0) }; 4];

/// Per signal: how deep ours is in its own chain right now.
static DEPTH: [AtomicU32; 4] = [const { AtomicU32::new(0) }; 4];

/// Serializes installing (never taken by the handler).
static INSTALL: Mutex<()> = Mutex::new(());

/// Our handler, as `sa_sigaction` holds it.
fn ours() -> usize {
    forward as *const () as usize
}

fn index(signal: libc::c_int) -> Option<usize> {
    SIGNALS.iter().position(|&s| s == signal)
}

/// Registered groups: signals are forwarded to them until this is
/// dropped. Drop it before a group's leader is reaped, so a recycled id is
/// never signalled.
#[derive(Debug)]
pub(crate) struct Forwarding(Vec<Registered>);

#[derive(Debug)]
struct Registered {
    slot: usize,
    /// A duplicate of the leader's pidfd, which names the group.
    pidfd: Option<OwnedFd>,
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        for group in &self.0 {
            GROUPS[group.slot].store(0, Ordering::SeqCst);
        }
        if self.0.iter().any(|group| group.pidfd.is_some()) {
            // A handler reads a slot only inside its loop, so once none is
            // in it, none holds the fds' numbers. A handler on this thread
            // has finished by the time this runs again: no deadlock. The
            // loop takes microseconds; a count that stays up (a `fork`
            // taken while another thread was in the loop copies it into a
            // child with no such thread) must not hang the drop: the fds
            // are left open instead, never closed under a handler.
            let start = Instant::now();
            while IN_LOOP.load(Ordering::SeqCst) != 0 {
                if start.elapsed() > LOOP_WAIT {
                    for group in &mut self.0 {
                        std::mem::forget(group.pidfd.take());
                    }
                    return;
                }
                std::thread::yield_now();
            }
        }
    }
}

/// How long a dropped registration waits for the handlers' loops.
const LOOP_WAIT: Duration = Duration::from_secs(1);

/// Forward the four signals from now on to the groups of `leaders`, each
/// a group leader's pid and pidfd (a pipeline's stages are one group,
/// unless a stage could not join it), naming each group by the pidfd where
/// the kernel can. `None` when no group was registered: every slot is
/// taken, or the handlers cannot be installed (the children then run as
/// they would with `process_group(true)` alone).
///
/// A group without a pidfd that names it is not registered when this
/// process ignores `SIGCHLD`: the kernel then reaps the leader at its exit,
/// before we could unregister the group, and the id could name someone
/// else's group by the time a signal comes.
pub(crate) fn forward_to<'a>(
    leaders: impl IntoIterator<Item = (libc::pid_t, Option<BorrowedFd<'a>>)>,
) -> Option<Forwarding> {
    let mut registered = Vec::new();
    for (pgid, leader_pidfd) in leaders {
        let by_pidfd = leader_pidfd.is_some_and(super::signals_groups_by_pidfd);
        // A duplicate: the registration must not outlive the fd it names,
        // and the child's own pidfd may be closed first.
        let pidfd = leader_pidfd
            .filter(|_| by_pidfd)
            .and_then(|fd| fd.try_clone_to_owned().ok());
        // Where the kernel names groups by pidfd, a group that cannot be
        // named so (no fd left for the duplicate, or no pidfd) is not
        // forwarded to: by number, a child of ours that got the number
        // after `SIGCHLD` came to be ignored could get the signal (an
        // outside attack filled the fd table to get there).
        if pidfd.is_none() && (by_pidfd || super::pidfd_groups_known() || super::sigchld_ignored())
        {
            continue;
        }
        if registered.is_empty() {
            install().ok()?;
        }
        let value = pack(pgid, pidfd.as_ref().map(AsRawFd::as_raw_fd));
        let free = GROUPS.iter().position(|group| {
            group
                .compare_exchange(0, value, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
        });
        match free {
            Some(slot) => registered.push(Registered { slot, pidfd }),
            None => break,
        }
    }
    (!registered.is_empty()).then_some(Forwarding(registered))
}

/// Make ours the handler of each signal, keeping what it replaces, unless
/// it is ours already.
fn install() -> io::Result<()> {
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    for (i, &signal) in SIGNALS.iter().enumerate() {
        let current = query(signal)?;
        // Ours already; or ignored (`nohup`, a shell's background job): the
        // program chose not to be stopped by it, nor are its children then.
        if current.sa_sigaction == ours() || current.sa_sigaction == libc::SIG_IGN {
            continue;
        }
        // Recorded before ours can run, so the handler always finds it.
        PREV_HANDLER[i].store(current.sa_sigaction, Ordering::SeqCst);
        PREV_FLAGS[i].store(current.sa_flags, Ordering::SeqCst);
        // SAFETY: sigaction is a plain C struct; all-zero is a valid value.
        let mut action: libc::sigaction = unsafe { mem::zeroed() };
        action.sa_sigaction = ours();
        // Not `SA_ONSTACK` (as `signal-hook-registry` and libuv): on std's
        // 8 KiB alternate stack, handlers that raise each other's signals
        // (ours calls the one it replaced) nested two or three deep and
        // overflowed it (an outside attack: SIGSEGV).
        action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        // SAFETY: sa_mask is a valid sigset_t to initialise.
        unsafe { libc::sigemptyset(&mut action.sa_mask) };
        // SAFETY: `action` is a valid action whose handler is async-signal-
        // safe (see `forward`); the old action is not needed (read above).
        if unsafe { libc::sigaction(signal, &action, ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The current action for `signal`.
fn query(signal: libc::c_int) -> io::Result<libc::sigaction> {
    // SAFETY: sigaction is a plain C struct; all-zero is a valid value.
    let mut current: libc::sigaction = unsafe { mem::zeroed() };
    // SAFETY: a null new action only reads the current one into `current`.
    if unsafe { libc::sigaction(signal, ptr::null(), &mut current) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(current)
}

/// The handler: forward to every registered group, then behave as the
/// process would have without us.
extern "C" fn forward(signal: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let Some(i) = index(signal) else { return };
    // SAFETY: __errno_location returns this thread's errno; the calls below
    // may change it, and an interrupted thread must find it as it was.
    let errno = unsafe { *libc::__errno_location() };
    if DEPTH[i].fetch_add(1, Ordering::SeqCst) == 0 {
        IN_LOOP.fetch_add(1, Ordering::SeqCst);
        for group in &GROUPS {
            let (pgid, pidfd) = unpack(group.load(Ordering::SeqCst));
            match pidfd {
                Some(fd) => {
                    // SAFETY: the fd stays open while its slot holds it and
                    // this loop runs (see `IN_LOOP`).
                    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
                    // The leader's `struct pid` names the group, whether or
                    // not the leader was reaped: a process that got the
                    // number since is never reached.
                    let _ = super::signal_group_by_pidfd(fd, signal);
                }
                None if pgid > 0 && super::group_holds_our_child(pgid) => {
                    // SAFETY: killpg takes two integers. A group is
                    // registered only while a member is unreaped, and one was
                    // just seen to be a child of ours, so the id is still
                    // ours: when `SIGCHLD` is set to `SIG_IGN` after the
                    // group was registered, the kernel reaps members itself,
                    // and the id could name another program's group by now
                    // (an attack steered the pid there through
                    // `ns_last_pid`). A pipeline's group outlives its
                    // leader, hence the group, not the leader, is asked.
                    unsafe { libc::killpg(pgid, signal) };
                }
                None => {}
            }
        }
        IN_LOOP.fetch_sub(1, Ordering::SeqCst);
        pass_on(i, signal, info, ctx);
    }
    DEPTH[i].fetch_sub(1, Ordering::SeqCst);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// What the process does with `signal` without us: the previous handler,
/// nothing (it was ignored), or death by the signal (the default), unless
/// ours was called by another handler (which then decides).
fn pass_on(i: usize, signal: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let prev = PREV_HANDLER[i].load(Ordering::SeqCst);
    if prev == libc::SIG_IGN {
        return;
    }
    if prev == libc::SIG_DFL {
        let top = query(signal).is_ok_and(|a| a.sa_sigaction == ours());
        if top {
            // SAFETY: sigaction is a plain C struct; all-zero is a valid value.
            let mut default: libc::sigaction = unsafe { mem::zeroed() };
            default.sa_sigaction = libc::SIG_DFL;
            // SAFETY: restoring the default action; async-signal-safe. The
            // signal is blocked while this handler runs, so the raise is
            // delivered (and kills the process) as the handler returns.
            unsafe {
                libc::sigaction(signal, &default, ptr::null_mut());
                libc::raise(signal);
            }
        }
        return;
    }
    if PREV_FLAGS[i].load(Ordering::SeqCst) & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was installed with SA_SIGINFO, so it
        // has this signature; we pass on what the kernel gave us.
        let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { mem::transmute(prev) };
        handler(signal, info, ctx);
    } else {
        // SAFETY: a handler installed without SA_SIGINFO takes the number only.
        let handler: extern "C" fn(libc::c_int) = unsafe { mem::transmute(prev) };
        handler(signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_holds_the_group_and_its_pidfd() {
        for pgid in [1, 2, 4_194_304, libc::pid_t::MAX] {
            for fd in [None, Some(0), Some(3), Some(1 << 20), Some(RawFd::MAX - 1)] {
                let slot = pack(pgid, fd);
                assert_ne!(slot, 0, "a registered group is never a free slot");
                assert_eq!(unpack(slot), (pgid, fd));
            }
        }
    }
}
