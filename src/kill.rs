//! How a child is killed: the signal to the child or its whole group, and
//! what dropping an unfinished child does. No tokio here: the async
//! [`Child`](crate::Child), the blocking driver and the reaper share it.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::sys;
use crate::sys::reaper::{self, Orphan, PendingKill};
use crate::Signal;

/// What dropping an unfinished [`Child`] does to the process.
#[derive(Debug, Clone, Copy)]
pub(crate) enum OnDrop {
    /// Nothing: it runs on and is reaped in the background.
    Reap,
    /// Send `signal` (to the group if the child leads one); `SIGKILL` follows
    /// after `grace` if it is still alive.
    Kill {
        signal: Signal,
        grace: Option<Duration>,
    },
}

impl OnDrop {
    /// `Command::kill_on_drop`: `SIGKILL` at once (as tokio does), or nothing.
    pub(crate) fn kill_on_drop(kill: bool) -> OnDrop {
        if kill {
            OnDrop::Kill {
                signal: Signal::SIGKILL,
                grace: None,
            }
        } else {
            OnDrop::Reap
        }
    }
}

/// Send a kill signal to the child, or to its whole group when it leads one
/// (the caller keeps it unreaped, so the ids cannot have been recycled).
///
/// A stopped process keeps every signal but `SIGKILL` pending until it is
/// continued, and a child in its own process group is stopped by `SIGTTOU`
/// or `SIGTTIN` as soon as it touches the terminal (`stty`, a password
/// prompt). So `SIGCONT` follows, or a timeout would always wait out the
/// whole grace period.
pub(crate) fn signal_tree(
    pid: libc::pid_t,
    pidfd: Option<BorrowedFd<'_>>,
    leads_group: bool,
    signal: i32,
) -> io::Result<()> {
    let send = |signal| {
        if leads_group {
            sys::kill_group(pid, signal)
        } else {
            sys::kill(pid, pidfd, signal)
        }
    };
    send(signal)?;
    if signal != libc::SIGKILL {
        send(libc::SIGCONT)?;
    }
    Ok(())
}

/// What dropping an unreaped child does, for the async `Child` and the
/// blocking driver alike: signal it as `on_drop` says, then hand it to the
/// reaper (with the `SIGKILL` deadline of a grace period). Never blocks.
pub(crate) fn abandon(
    pid: libc::pid_t,
    pidfd: Option<OwnedFd>,
    leads_group: bool,
    on_drop: OnDrop,
) {
    let kill = match on_drop {
        OnDrop::Reap => None,
        OnDrop::Kill { signal, grace } => {
            let _ = signal_tree(
                pid,
                pidfd.as_ref().map(|fd| fd.as_fd()),
                leads_group,
                signal.as_raw(),
            );
            grace.map(|grace| PendingKill {
                group: leads_group,
                deadline: Instant::now() + grace,
            })
        }
    };
    reaper::adopt(Orphan { pid, pidfd, kill });
}
