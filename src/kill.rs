//! How a child is killed: the signal to the child and its whole group, and
//! what dropping an unfinished child does. No tokio here: the async
//! [`Child`](crate::Child), the blocking driver and the reaper share it.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use crate::error::ExitStatus;
use crate::sys;
use crate::Signal;

/// What dropping an unfinished [`Child`](crate::Child) does to the process.
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

/// One unreaped process we started.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Proc<'a> {
    pub pid: libc::pid_t,
    pub pidfd: Option<BorrowedFd<'a>>,
}

/// Send `signal` to `procs` (processes we started and have not reaped) and,
/// when `leader` is given, to the process group named after it: every
/// process the tree started that stayed in the group.
///
/// A process that left the group (`setpgid`, `setsid`) is signalled on its
/// own, through its pidfd, so a timeout still ends it; one still in the
/// group gets the signal once, from the group, so a child that counts
/// `SIGINT`s (press twice to force) sees one. The group is only signalled
/// in ways that cannot reach a group that recycled the number (see
/// `sys::kill_group`).
///
/// A stopped process keeps every signal but `SIGKILL` pending until it is
/// continued, and a child in its own process group is stopped by `SIGTTOU`
/// or `SIGTTIN` as soon as it touches the terminal (`stty`, a password
/// prompt). So `SIGCONT` follows, or a timeout would always wait out the
/// whole grace period.
pub(crate) fn signal_tree(leader: Option<Proc<'_>>, procs: &[Proc<'_>], signal: i32) {
    let members: Vec<libc::pid_t> = procs.iter().map(|p| p.pid).collect();
    let send = |signal| {
        if let Some(leader) = leader {
            let _ = sys::kill_group(leader.pid, leader.pidfd, &members, signal);
        }
        for p in procs {
            let group = sys::process_group_of(p.pid);
            if leader.is_some_and(|l| group == Some(l.pid)) {
                continue;
            }
            // A pipeline stage that could not join the group (its leader
            // was gone) leads one of its own: signal that too.
            if leader.is_some() && group == Some(p.pid) {
                let _ = sys::kill_group(p.pid, p.pidfd, &[p.pid], signal);
            } else {
                let _ = sys::kill(p.pid, p.pidfd, signal);
            }
        }
    };
    send(signal);
    if signal != libc::SIGKILL && signal != libc::SIGCONT {
        send(libc::SIGCONT);
    }
}

/// `SIGKILL` to what is left of the group named after `leader`, once every
/// process we started in it has exited (their zombies keep the id
/// reserved, and the pidfd names the group whatever happens).
pub(crate) fn kill_stragglers(leader: Proc<'_>, members: &[libc::pid_t]) {
    let _ = sys::kill_group(leader.pid, leader.pidfd, members, libc::SIGKILL);
}

/// How a child ended, as far as this process can know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// It was reaped (by us, or the kernel kept the status in the pidfd).
    Status(ExitStatus),
    /// Someone else reaped it and the status is gone; why, in words.
    Lost(&'static str),
}

impl Ended {
    /// The status, or an error that says why there is none.
    pub(crate) fn status(self) -> io::Result<ExitStatus> {
        match self {
            Ended::Status(status) => Ok(status),
            Ended::Lost(why) => Err(io::Error::other(why)),
        }
    }
}

/// Reap `me` if it has exited: `Ok(None)` while it runs.
///
/// When someone else reaped it first (the kernel, when this process ignores
/// `SIGCHLD`; or a `waitpid(-1)` elsewhere), the status comes from the
/// pidfd where the kernel keeps it (Linux ≥ 6.15); otherwise it is
/// [`Ended::Lost`], saying why.
pub(crate) fn reap(me: Proc<'_>) -> io::Result<Option<Ended>> {
    match sys::try_reap(me.pid) {
        Err(e) if e.raw_os_error() == Some(libc::ECHILD) => {
            if let Some(fd) = me.pidfd {
                // The kernel makes the pidfd readable at the exit and stores
                // the status a moment later, when it releases the process:
                // give it that moment (at most a few milliseconds, only on
                // this path).
                for _ in 0..100 {
                    if let Some(status) = sys::pidfd_exit_status(fd) {
                        return Ok(Some(Ended::Status(status)));
                    }
                    std::thread::sleep(std::time::Duration::from_micros(100));
                }
            }
            let why = if sys::sigchld_ignored() {
                "the exit status was lost: this process ignores SIGCHLD (SIG_IGN or \
                 SA_NOCLDWAIT), so the kernel reaped the child itself (Linux 6.15 and \
                 later keep the status, unless the child exited before its pidfd was \
                 opened)"
            } else {
                "the exit status was lost: something else in this process reaped the \
                 child (a waitpid(-1), or a SIGCHLD handler that reaps)"
            };
            Ok(Some(Ended::Lost(why)))
        }
        other => other.map(|s| s.map(Ended::Status)),
    }
}
