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
//! The handler does only async-signal-safe work: atomics, `waitid`, `killpg`,
//! `sigaction`, `raise`, and the call to the previous handler.

use std::io;
use std::mem;
use std::ptr;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicUsize, Ordering};
use std::sync::Mutex;

/// The signals a terminal or a service manager sends to end a program.
const SIGNALS: [libc::c_int; 4] = [libc::SIGHUP, libc::SIGINT, libc::SIGQUIT, libc::SIGTERM];

/// How many groups can be registered at once; more are not forwarded to.
const SLOTS: usize = 1024;

/// The registered process group ids; 0 is a free slot.
static GROUPS: [AtomicI32; SLOTS] = [const { AtomicI32::new(0) }; SLOTS];

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

/// A registered group: signals are forwarded to it until this is dropped.
/// Drop it before the group's leader is reaped, so a recycled id is never
/// signalled.
#[derive(Debug)]
pub(crate) struct Forwarding(usize);

impl Drop for Forwarding {
    fn drop(&mut self) {
        GROUPS[self.0].store(0, Ordering::SeqCst);
    }
}

/// Forward the four signals to group `pgid` from now on. `None` when every
/// slot is taken or the handlers cannot be installed (the child then runs
/// as it would with `process_group(true)` alone).
///
/// Not when this process ignores `SIGCHLD`: the kernel then reaps the
/// leader at its exit, before we could unregister the group, and the id
/// could name someone else's group by the time a signal comes.
pub(crate) fn forward_to(pgid: libc::pid_t) -> Option<Forwarding> {
    if super::sigchld_ignored() {
        return None;
    }
    install().ok()?;
    for (i, slot) in GROUPS.iter().enumerate() {
        if slot
            .compare_exchange(0, pgid, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
        {
            return Some(Forwarding(i));
        }
    }
    None
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
        action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
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
        for slot in &GROUPS {
            let pgid = slot.load(Ordering::SeqCst);
            if pgid > 0 && super::group_holds_our_child(pgid) {
                // SAFETY: killpg takes two integers. A group is registered
                // only while a member is unreaped, and one was just seen to
                // be a child of ours, so the id is still ours: when
                // `SIGCHLD` is set to `SIG_IGN` after the group was
                // registered, the kernel reaps members itself, and the id
                // could name another program's group by now (an attack
                // steered the pid there through `ns_last_pid`). A
                // pipeline's group outlives its leader, hence the group,
                // not the leader, is asked.
                unsafe { libc::killpg(pgid, signal) };
            }
        }
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
