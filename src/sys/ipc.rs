//! Syscall-level help for the IPC channel (`crate::channel`): adopting the
//! socket a parent left us at `NODE_CHANNEL_FD`.
//!
//! Everything here that needs `unsafe` is an operation on an fd number we do
//! not own yet. The channel itself uses only safe nix calls.

use std::ffi::OsString;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use nix::sys::socket::{getsockopt, sockopt, SockType};

/// The environment variables Node's parent sets for a child with an `ipc`
/// stdio slot (`lib/internal/child_process.js ChildProcess.prototype.spawn`).
pub(crate) const CHANNEL_FD_VAR: &str = "NODE_CHANNEL_FD";
pub(crate) const SERIALIZATION_VAR: &str = "NODE_CHANNEL_SERIALIZATION_MODE";
/// Set by a cluster primary for its workers (`lib/internal/cluster`).
pub(crate) const UNIQUE_ID_VAR: &str = "NODE_UNIQUE_ID";

/// Variables that describe this process's own channel: never inherited by
/// its children (Node deletes them from `process.env` at start-up).
pub(crate) const INHERITED_ONLY: [&str; 3] = [CHANNEL_FD_VAR, SERIALIZATION_VAR, UNIQUE_ID_VAR];

/// What the environment said about the channel when this process started:
/// read once, before `main`, by [`capture_at_startup`], and taken by the
/// first successful [`take_inherited_channel`]. `None`: no channel was
/// inherited, or it was taken.
static STARTUP: Mutex<Option<Startup>> = Mutex::new(None);

/// Whether the process was started with `NODE_CHANNEL_FD` set (forked by
/// `fork`, ours or Node's), taken or not.
static STARTED_WITH_CHANNEL: AtomicBool = AtomicBool::new(false);

struct Startup {
    /// The value of `NODE_CHANNEL_FD`.
    value: OsString,
    /// The value of `NODE_CHANNEL_SERIALIZATION_MODE`, if set.
    mode: Option<OsString>,
    /// `(st_dev, st_ino)` of what the fd was at start-up, if it was open.
    id: Option<(u64, u64)>,
}

/// Run by the dynamic loader before `main` (and before any code of ours
/// could run), like C's `__attribute__((constructor))`: it records which fd
/// the parent passed, and what it was, while nothing in this process can
/// have claimed that fd yet. That is what makes adopting it sound
/// (`take_inherited_channel`): an fd inherited at exec is owned by no Rust
/// object until someone takes it, and only this record can be taken, once.
/// A variable set later (by this process, or naming an fd it opened) is
/// never adopted.
extern "C" fn capture_at_startup() {
    capture();
}

#[used]
#[link_section = ".init_array"]
static CAPTURE_AT_STARTUP: extern "C" fn() = capture_at_startup;

fn getenv(name: &std::ffi::CStr) -> Option<OsString> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: getenv takes a NUL-terminated name and returns a pointer into
    // the environment or null; before `main` no other thread of ours runs,
    // and the bytes are copied out at once.
    let ptr = unsafe { libc::getenv(name.as_ptr()) };
    if ptr.is_null() {
        return None;
    }
    // SAFETY: a non-null result of getenv is a NUL-terminated C string.
    let bytes = unsafe { std::ffi::CStr::from_ptr(ptr) }.to_bytes();
    Some(std::ffi::OsStr::from_bytes(bytes).to_owned())
}

fn capture() {
    let Some(value) = getenv(c"NODE_CHANNEL_FD").filter(|v| !v.is_empty()) else {
        *STARTUP.lock().unwrap_or_else(PoisonError::into_inner) = None;
        return;
    };
    STARTED_WITH_CHANNEL.store(true, Ordering::Relaxed);
    let id = value
        .to_str()
        .and_then(|v| v.parse::<RawFd>().ok())
        .and_then(|raw| fstat(raw).ok())
        .map(|st| (st.st_dev, st.st_ino));
    *STARTUP.lock().unwrap_or_else(PoisonError::into_inner) = Some(Startup {
        value,
        mode: getenv(c"NODE_CHANNEL_SERIALIZATION_MODE"),
        id,
    });
}

/// Read the environment again as if the process were starting now: unit
/// tests play the parent by setting the variables in-process.
#[cfg(test)]
pub(crate) fn capture_for_tests() {
    capture();
}

/// Whether this process was started with a channel (`NODE_CHANNEL_FD` set
/// at start-up), whether or not it was taken.
pub(crate) fn started_with_channel() -> bool {
    STARTED_WITH_CHANNEL.load(Ordering::Relaxed)
}

/// What the parent left in our environment, read by [`take_inherited_channel`].
pub(crate) struct Inherited {
    /// The value of `NODE_CHANNEL_SERIALIZATION_MODE`, if set.
    pub(crate) mode: Option<OsString>,
}

/// Takes ownership of the channel socket the parent named in
/// `NODE_CHANNEL_FD` when this process started.
///
/// `check` sees the raw value of `NODE_CHANNEL_FD` (absent or empty at
/// start-up: the function returns `Ok(None)` without calling it) and the
/// serialization mode; it returns the fd number, or the reason it is
/// unusable. Then the fd is checked: it must still be what it was at
/// start-up (same device and inode), a socket (`S_ISSOCK`) of type
/// `SOCK_STREAM`, and not a listening socket (`SO_ACCEPTCONN`: the parent
/// passes a connected one). Only then do we take ownership, and remove both
/// variables from the environment, as Node's
/// `lib/internal/process/pre_execution.js setupChildProcessIpcChannel` does
/// ("Make sure it's not accidentally inherited by child processes").
///
/// On any error nothing is changed: the fd is not touched, the variables
/// stay, and a later call gives the same answer.
pub(crate) fn take_inherited_channel(
    check: impl FnOnce(&OsString, &Inherited) -> Result<RawFd, String>,
) -> Result<Option<OwnedFd>, String> {
    let mut startup = STARTUP.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(record) = startup.as_ref() else {
        return Ok(None);
    };
    let inherited = Inherited {
        mode: record.mode.clone(),
    };
    let raw = check(&record.value, &inherited)?;
    let fail = |err: io::Error| format!("{CHANNEL_FD_VAR}={raw}: {err}");
    let now = fstat(raw).map_err(|e| {
        fail(if e.raw_os_error() == Some(libc::EBADF) {
            io::Error::new(io::ErrorKind::NotFound, "the fd is not open")
        } else {
            e
        })
    })?;
    if record.id != Some((now.st_dev, now.st_ino)) {
        return Err(fail(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the fd is not what the parent passed when this process started (it was closed or replaced since)",
        )));
    }
    let fd = adopt_stream_socket(raw, &now).map_err(fail)?;
    *startup = None;
    // Edition 2021: `remove_var` is safe to call. Like Node, we do it once,
    // from the thread that sets up the channel.
    std::env::remove_var(CHANNEL_FD_VAR);
    std::env::remove_var(SERIALIZATION_VAR);
    Ok(Some(fd))
}

/// `fstat(raw)` on an fd number we may not own: it reads, never changes.
fn fstat(raw: RawFd) -> io::Result<libc::stat> {
    let mut stat = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes at most one `struct stat` into `stat`, which is
    // valid for that write; on an fd number that is not open it fails with
    // EBADF and writes nothing. It does not take or change the fd.
    let rc = unsafe { libc::fstat(raw, stat.as_mut_ptr()) };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat returned 0, so it filled in `stat`.
    Ok(unsafe { stat.assume_init() })
}

/// Whether `fd` is a connected stream socket: a socket, `SOCK_STREAM`, not
/// listening.
pub(crate) fn check_stream_socket(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let stat = fstat(fd.as_raw_fd())?;
    if stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the fd is {}, not a socket", kind_of(&stat)),
        ));
    }
    match socket_problem(fd) {
        None => Ok(()),
        Some(why) => Err(why),
    }
}

fn kind_of(stat: &libc::stat) -> &'static str {
    match stat.st_mode & libc::S_IFMT {
        libc::S_IFREG => "a regular file",
        libc::S_IFDIR => "a directory",
        libc::S_IFIFO => "a pipe",
        libc::S_IFCHR => "a character device",
        _ => "not a socket",
    }
}

/// What keeps a socket from being a channel: not `SOCK_STREAM`, or
/// listening. `None` when it is fine.
fn socket_problem(fd: impl std::os::fd::AsFd) -> Option<io::Error> {
    match (
        getsockopt(&fd, sockopt::SockType),
        getsockopt(&fd, sockopt::AcceptConn),
    ) {
        (Ok(SockType::Stream), Ok(false)) => None,
        (Ok(SockType::Stream), Ok(true)) => Some(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the socket is a listening socket, not a connected channel (send on it would hang)",
        )),
        (Ok(other), _) => Some(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the socket is {other:?}, not a stream socket (SOCK_STREAM)"),
        )),
        (Err(errno), _) => Some(io::Error::from(errno)),
    }
}

/// Checks that `raw` (whose `fstat` is `stat`) is a connected stream
/// socket, then takes ownership of it.
///
/// Only called by [`take_inherited_channel`], under the [`STARTUP`] lock,
/// with the fd number the parent put in `NODE_CHANNEL_FD` at start-up.
fn adopt_stream_socket(raw: RawFd, stat: &libc::stat) -> io::Result<OwnedFd> {
    if stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the fd is {}, not the socket a Node-style parent passes",
                kind_of(stat)
            ),
        ));
    }
    // SAFETY: NODE_CHANNEL_FD named this fd when the process started, before
    // any code of this process ran (`capture_at_startup`), and it is still
    // the same open file (same device and inode): the parent passed it to
    // this process alone, and nothing here has claimed it, since only the
    // start-up record can be adopted and we hold its lock and clear it
    // before releasing it. So no other owner exists. (Node's `_forkChild`
    // takes it the same way.) On a wrong kind of socket it is given back
    // untouched below.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    match socket_problem(&fd) {
        None => Ok(fd),
        Some(why) => {
            // Give the fd back untouched: it is not a channel we can use.
            let _ = fd.into_raw_fd();
            Err(why)
        }
    }
}

/// One non-blocking `send(2)` on a stream socket, with `MSG_NOSIGNAL`: a
/// closed peer gives `EPIPE`, never a `SIGPIPE` that would kill a process
/// that does not ignore it.
pub(crate) fn send_nosignal(fd: std::os::fd::BorrowedFd<'_>, bytes: &[u8]) -> io::Result<usize> {
    use nix::sys::socket::{send, MsgFlags};
    use std::os::fd::AsRawFd;
    Ok(send(
        fd.as_raw_fd(),
        bytes,
        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
    )?)
}

/// `shutdown(SHUT_RDWR)`: the peer sees end of stream even while other
/// handles keep the socket open.
pub(crate) fn shutdown(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    use nix::sys::socket::{shutdown, Shutdown};
    use std::os::fd::AsRawFd;
    Ok(shutdown(fd.as_raw_fd(), Shutdown::Both)?)
}

/// Make an adopted socket non-blocking and close-on-exec, whatever it was.
pub(crate) fn prepare_socket(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    super::set_nonblocking(fd)?;
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(())
}
