//! Process control: pidfds, signals to a process or its group, waiting and
//! reaping, and what the kernel says about `SIGCHLD`.
//!
//! The rules that keep a signal from reaching the wrong process live here,
//! next to the calls they guard:
//! - one process is signalled through its pidfd, which names the process and
//!   not the number (`pidfd_send_signal`);
//! - a group is signalled through the leader's pidfd with
//!   `PIDFD_SIGNAL_PROCESS_GROUP` (Linux ≥ 6.9): the kernel then names the
//!   group by the leader's `struct pid`, which a recycled number can never
//!   match, even after the leader was reaped;
//! - without that flag, `killpg` is sent only after proving that a member of
//!   the group is still our unreaped child (`waitid(WNOWAIT)`): a pid number
//!   in use as a process group id is never handed to a new process.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{cvt, cvt_r, ignore_esrch};

static NO_PIDFD: AtomicBool = AtomicBool::new(false);
static NO_PIDFD_GROUP: AtomicBool = AtomicBool::new(false);
static PIDFD_GROUP: AtomicBool = AtomicBool::new(false);

/// `pidfd_send_signal` flag: signal the process group of the pidfd's
/// process (include/uapi/linux/pidfd.h, Linux 6.9).
const PIDFD_SIGNAL_PROCESS_GROUP: libc::c_uint = 1 << 2;

/// `pidfd_open(pid)`, CLOEXEC. `None` where the kernel has no pidfds (before
/// Linux 5.3, or a seccomp filter that refuses the call): callers then fall
/// back to `waitpid(pid)`.
pub(crate) fn pidfd_open(pid: libc::pid_t) -> io::Result<Option<OwnedFd>> {
    if NO_PIDFD.load(Ordering::Relaxed) {
        return Ok(None);
    }
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if ret < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENOSYS) | Some(libc::EPERM) => {
                NO_PIDFD.store(true, Ordering::Relaxed);
                Ok(None)
            }
            _ => Err(err),
        };
    }
    // SAFETY: the kernel just gave us this fd; nothing else owns it.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(ret as RawFd) }))
}

/// [`pidfd_open`] for a child just started, unless the pidfd cannot be
/// proven to name it. With `SIGCHLD` ignored the kernel reaps a child that
/// exits at once, and its number can go to another process before the
/// pidfd is opened (an outside attack steered it there with
/// `ns_last_pid`): that pidfd names a stranger, whose exit the run would
/// wait for and whose group a Ctrl-C would be passed on to. So then it is
/// kept only if it names an unreaped child of ours (`waitid(P_PIDFD)` with
/// `WNOWAIT`), or a process already gone: ours, reaped by the kernel since
/// (its status may be in the pidfd, `PIDFD_INFO_EXIT`). Otherwise `None`,
/// as for a child that exited before its pidfd was opened.
pub(crate) fn pidfd_open_child(pid: libc::pid_t) -> io::Result<Option<OwnedFd>> {
    let Some(fd) = pidfd_open(pid)? else {
        return Ok(None);
    };
    // Otherwise the child, running or a zombie, keeps its number until we
    // reap it: the pidfd names it.
    Ok((!sigchld_ignored() || names_our_child_or_gone(fd.as_fd())).then_some(fd))
}

/// Whether `pidfd` names an unreaped child of ours, or a process that is
/// gone; not a live process of someone else's.
fn names_our_child_or_gone(pidfd: BorrowedFd<'_>) -> bool {
    peek(libc::P_PIDFD, pidfd.as_raw_fd()).is_ok()
        || pidfd_send_signal(pidfd, 0, 0).is_err_and(|e| e.raw_os_error() == Some(libc::ESRCH))
}

/// Whether the kernel is known to signal groups through a leader's pidfd
/// (an earlier [`signals_groups_by_pidfd`] said yes).
pub(crate) fn pidfd_groups_known() -> bool {
    PIDFD_GROUP.load(Ordering::Relaxed)
}

/// Make every later `pidfd_open` report "unsupported", so tests can exercise
/// the `SIGCHLD` + `waitpid(pid)` fallback on a kernel that has pidfds.
#[cfg(test)]
pub(crate) fn disable_pidfd_for_tests() {
    NO_PIDFD.store(true, Ordering::Relaxed);
}

/// `pidfd_send_signal(fd, signal, NULL, flags)`.
fn pidfd_send_signal(fd: BorrowedFd<'_>, signal: i32, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: pidfd_send_signal takes an fd we borrow, a signal number, null
    // info and flags; it does not retain anything.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal,
            ptr::null::<libc::siginfo_t>(),
            flags,
        )
    };
    cvt(ret as libc::c_int).map(drop)
}

/// Send `signal` to one process: through its pidfd when there is one, so a
/// recycled pid can never be hit. A process that is already gone is not an
/// error.
pub(crate) fn kill(pid: libc::pid_t, pidfd: Option<BorrowedFd<'_>>, signal: i32) -> io::Result<()> {
    match pidfd {
        Some(fd) => ignore_esrch(pidfd_send_signal(fd, signal, 0).map(|()| 0)),
        // Without a pidfd, only a child that is still ours (running, or a
        // zombie we have not reaped) may be signalled by number.
        None if is_our_child(pid) => {
            // SAFETY: kill takes two integers; the pid is our unreaped child,
            // so it cannot have been recycled.
            ignore_esrch(cvt(unsafe { libc::kill(pid, signal) }))
        }
        None => Ok(()),
    }
}

/// Send `signal` to the process group named after `leader` (the first
/// process started in it), never to a group that merely reuses the number.
///
/// Through the leader's pidfd and `PIDFD_SIGNAL_PROCESS_GROUP` where the
/// kernel has it (race-free, whether or not the leader was reaped).
/// Otherwise `killpg`, only if one of `members` (the leader or another
/// process we put in the group) is provably still our unreaped child at
/// that moment. A group with no process left is not an error.
pub(crate) fn kill_group(
    leader: libc::pid_t,
    leader_pidfd: Option<BorrowedFd<'_>>,
    members: &[libc::pid_t],
    signal: i32,
) -> io::Result<()> {
    if let Some(fd) = leader_pidfd {
        if !NO_PIDFD_GROUP.load(Ordering::Relaxed) {
            match pidfd_send_signal(fd, signal, PIDFD_SIGNAL_PROCESS_GROUP) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    // A kernel before 6.9: the flag is unknown.
                    NO_PIDFD_GROUP.store(true, Ordering::Relaxed);
                }
                other => return ignore_esrch(other.map(|()| 0)),
            }
        }
    }
    // A member proves the group still exists only while it is in it (one
    // may have left with setsid or setpgid).
    if !members
        .iter()
        .any(|&pid| is_our_child(pid) && process_group_of(pid) == Some(leader))
    {
        return Ok(());
    }
    // SAFETY: killpg takes two integers. A member of the group is our
    // unreaped child, so the group exists and its id is the one we made.
    ignore_esrch(cvt(unsafe { libc::killpg(leader, signal) }))
}

/// Whether the kernel signals a group through its leader's pidfd
/// (`PIDFD_SIGNAL_PROCESS_GROUP`, Linux 6.9), asked with signal 0 (which
/// checks, and sends nothing) through `leader_pidfd`. Learnt once.
pub(crate) fn signals_groups_by_pidfd(leader_pidfd: BorrowedFd<'_>) -> bool {
    if PIDFD_GROUP.load(Ordering::Relaxed) {
        return true;
    }
    if NO_PIDFD_GROUP.load(Ordering::Relaxed) {
        return false;
    }
    match pidfd_send_signal(leader_pidfd, 0, PIDFD_SIGNAL_PROCESS_GROUP) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            NO_PIDFD_GROUP.store(true, Ordering::Relaxed);
            false
        }
        // Checked, or the group is empty already: the kernel knows the flag.
        Err(e) if e.raw_os_error() != Some(libc::ESRCH) => false,
        _ => {
            PIDFD_GROUP.store(true, Ordering::Relaxed);
            true
        }
    }
}

/// `signal` to the group whose leader `leader_pidfd` names, on a kernel
/// where [`signals_groups_by_pidfd`] said yes. Async-signal-safe (one system
/// call, nothing allocated): the forwarding handler calls it. An empty
/// group is not an error.
pub(crate) fn signal_group_by_pidfd(leader_pidfd: BorrowedFd<'_>, signal: i32) -> io::Result<()> {
    ignore_esrch(pidfd_send_signal(leader_pidfd, signal, PIDFD_SIGNAL_PROCESS_GROUP).map(|()| 0))
}

/// Whether `pid` is a child of ours that has not been reaped (running, or a
/// zombie): only then does the number still name the process we started.
///
/// Not provable when this process ignores `SIGCHLD`: the kernel then reaps
/// our children itself, and the number may already belong to another child
/// of ours. Such a number is never trusted.
fn is_our_child(pid: libc::pid_t) -> bool {
    !sigchld_ignored() && peek_exit(pid).is_ok()
}

/// `waitid(P_PID, WEXITED | WNOHANG | WNOWAIT)`: observes `pid` without
/// reaping it. Fails with `ECHILD` when `pid` is no unreaped child of ours.
fn peek_exit(pid: libc::pid_t) -> io::Result<libc::siginfo_t> {
    peek(libc::P_PID, pid)
}

/// Whether process group `pgid` holds an unreaped child of ours (running
/// or a zombie), which also keeps the group's id from being reused.
/// Async-signal-safe (one `waitid`, no allocation): the forwarding handler
/// calls it.
pub(crate) fn group_holds_our_child(pgid: libc::pid_t) -> bool {
    peek(libc::P_PGID, pgid).is_ok()
}

/// `waitid(idtype, id, WEXITED | WNOHANG | WNOWAIT)`: observes without
/// reaping; `ECHILD` when no unreaped child of ours matches.
fn peek(idtype: libc::idtype_t, id: libc::pid_t) -> io::Result<libc::siginfo_t> {
    // SAFETY: siginfo_t is a plain C struct; all-zero is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid out-pointer; WNOWAIT leaves the children as
    // they are, so this observes without reaping.
    cvt_r(|| unsafe {
        libc::waitid(
            idtype,
            id as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    })?;
    Ok(info)
}

/// The process group of `pid`, or `None` if it is gone. Only meaningful
/// for a child of ours that is not reaped.
pub(crate) fn process_group_of(pid: libc::pid_t) -> Option<libc::pid_t> {
    // SAFETY: getpgid takes an integer.
    let pgid = unsafe { libc::getpgid(pid) };
    (pgid >= 0).then_some(pgid)
}

/// Reap `pid` if it has exited (`WNOHANG`): `Ok(None)` while it runs.
pub(crate) fn try_reap(pid: libc::pid_t) -> io::Result<Option<ExitStatus>> {
    let mut status: libc::c_int = 0;
    // SAFETY: `status` is a valid out-pointer; waitpid on one pid of ours
    // (never -1, which would steal other code's children).
    let ret = cvt_r(|| unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) })?;
    Ok((ret != 0).then(|| ExitStatus::from_raw(status)))
}

/// Whether `pid` has exited, without reaping it (`WNOWAIT`): the zombie keeps
/// its pid and process group id reserved while we signal the group.
pub(crate) fn has_exited(pid: libc::pid_t) -> io::Result<bool> {
    let info = peek_exit(pid)?;
    // SAFETY: waitid filled `info`; with WNOHANG and no exited child it leaves
    // si_pid at 0, which the zeroed struct already holds.
    Ok(unsafe { info.si_pid() } != 0)
}

/// `struct pidfd_info` (include/uapi/linux/pidfd.h, Linux 6.13; the exit
/// fields from 6.15).
#[repr(C)]
#[derive(Default)]
struct PidfdInfo {
    mask: u64,
    cgroupid: u64,
    pid: u32,
    tgid: u32,
    ppid: u32,
    ruid: u32,
    rgid: u32,
    euid: u32,
    egid: u32,
    suid: u32,
    sgid: u32,
    fsuid: u32,
    fsgid: u32,
    exit_code: i32,
    coredump_mask: u32,
    spare: u32,
}

const PIDFD_INFO_EXIT: u64 = 1 << 3;
/// `_IOWR(0xFF, 11, struct pidfd_info)`.
const PIDFD_GET_INFO: libc::c_ulong =
    (3 << 30) | ((std::mem::size_of::<PidfdInfo>() as libc::c_ulong) << 16) | (0xFF << 8) | 11;

/// The exit status of a process that someone else reaped (the kernel, when
/// `SIGCHLD` is ignored), as the pidfd kept it: `PIDFD_GET_INFO` with
/// `PIDFD_INFO_EXIT`, Linux ≥ 6.15. `None` where the kernel cannot say.
pub(crate) fn pidfd_exit_status(fd: BorrowedFd<'_>) -> Option<ExitStatus> {
    let mut info = PidfdInfo {
        mask: PIDFD_INFO_EXIT,
        ..PidfdInfo::default()
    };
    // SAFETY: PIDFD_GET_INFO reads and writes one `struct pidfd_info`, whose
    // layout PidfdInfo matches; the fd is borrowed for the call.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), PIDFD_GET_INFO, &mut info) };
    (ret == 0 && info.mask & PIDFD_INFO_EXIT != 0).then(|| ExitStatus::from_raw(info.exit_code))
}

/// Whether this process lets the kernel reap its children itself: `SIGCHLD`
/// set to `SIG_IGN`, or a handler with `SA_NOCLDWAIT`. Exit statuses are
/// then lost unless the pidfd kept them.
pub(crate) fn sigchld_ignored() -> bool {
    // SAFETY: sigaction_t is a plain C struct; all-zero is a valid value.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only queries; `old` is a valid out-pointer.
    let ret = unsafe { libc::sigaction(libc::SIGCHLD, ptr::null(), &mut old) };
    ret == 0 && (old.sa_sigaction == libc::SIG_IGN || old.sa_flags & libc::SA_NOCLDWAIT != 0)
}

/// CPU time (user + system) and resident memory of `pid`, from
/// `/proc/<pid>/stat` and `/proc/<pid>/statm`; `None` once it is gone.
pub(crate) fn usage(pid: libc::pid_t) -> Option<(std::time::Duration, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: the
    // fields after it start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13
    // here (counted from `state`, field 3, at index 0).
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf takes an integer and reads no memory of ours.
    let (hz, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let (hz, page) = (u64::try_from(hz).ok()?.max(1), u64::try_from(page).ok()?);
    let cpu = std::time::Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / hz);
    Some((cpu, pages.saturating_mul(page)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `pidfd_open_child` keeps when `SIGCHLD` is ignored: a pidfd of
    /// a child of ours; not one of a live stranger (what a pid recycled
    /// before the pidfd was opened gives).
    #[test]
    fn a_pidfd_of_someone_elses_process_is_told_apart() {
        // Not `pidfd_open`: another test turns it off for the process.
        let pidfd_open = |pid: libc::pid_t| -> OwnedFd {
            // SAFETY: pidfd_open takes a pid and flags, returns a new fd.
            let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
            cvt(ret as libc::c_int).unwrap();
            // SAFETY: the kernel just gave us this fd.
            unsafe { OwnedFd::from_raw_fd(ret as RawFd) }
        };
        let mut ours = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let fd = pidfd_open(ours.id() as libc::pid_t);
        assert!(names_our_child_or_gone(fd.as_fd()), "our running child");
        // Not ours: `sh` starts it in the background and exits, so it goes
        // to init.
        let out = std::process::Command::new("sh")
            .args(["-c", "sleep 30 </dev/null >/dev/null 2>&1 & echo $!"])
            .output()
            .unwrap();
        let stranger: libc::pid_t = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let theirs = pidfd_open(stranger);
        assert!(!names_our_child_or_gone(theirs.as_fd()), "a live stranger");
        pidfd_send_signal(theirs.as_fd(), libc::SIGKILL, 0).unwrap();
        ours.kill().unwrap();
        ours.wait().unwrap();
    }
}
