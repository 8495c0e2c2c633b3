//! Syscall-level help for the IPC channel (`crate::channel`): adopting the
//! socket a parent left us at `NODE_CHANNEL_FD`.
//!
//! Everything here that needs `unsafe` is an operation on an fd number we do
//! not own yet. The channel itself uses only safe nix calls.

use std::ffi::OsString;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, PoisonError};

use nix::sys::socket::{getsockopt, sockopt, SockType};

/// The environment variables Node's parent sets for a child with an `ipc`
/// stdio slot (`lib/internal/child_process.js ChildProcess.prototype.spawn`).
pub(crate) const CHANNEL_FD_VAR: &str = "NODE_CHANNEL_FD";
pub(crate) const SERIALIZATION_VAR: &str = "NODE_CHANNEL_SERIALIZATION_MODE";

/// Serializes [`take_inherited_channel`]: reading the variables, adopting
/// the fd and removing the variables happen as one step, so two threads can
/// never both adopt the same fd (which would close it twice).
static TAKE_LOCK: Mutex<()> = Mutex::new(());

/// What the parent left in our environment, read by [`take_inherited_channel`].
pub(crate) struct Inherited {
    /// The value of `NODE_CHANNEL_SERIALIZATION_MODE`, if set.
    pub(crate) mode: Option<OsString>,
}

/// Takes ownership of the channel socket named by `NODE_CHANNEL_FD`.
///
/// `check` sees the raw value of `NODE_CHANNEL_FD` (absent or empty: the
/// function returns `Ok(None)` without calling it) and the serialization
/// mode; it returns the fd number, or the reason it is unusable. Then the fd
/// is checked: it must be open (`fstat` succeeds) and be a socket
/// (`S_ISSOCK`) of type `SOCK_STREAM`. Only then do we take ownership, and
/// remove both variables from the environment, as Node's
/// `lib/internal/process/pre_execution.js setupChildProcessIpcChannel` does
/// ("Make sure it's not accidentally inherited by child processes").
///
/// On any error nothing is changed: the fd is not touched and the variables
/// stay.
pub(crate) fn take_inherited_channel(
    check: impl FnOnce(&OsString, &Inherited) -> Result<RawFd, String>,
) -> Result<Option<OwnedFd>, String> {
    let _guard = TAKE_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(value) = std::env::var_os(CHANNEL_FD_VAR).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let inherited = Inherited {
        mode: std::env::var_os(SERIALIZATION_VAR),
    };
    let raw = check(&value, &inherited)?;
    let fd = adopt_stream_socket(raw).map_err(|err| format!("{CHANNEL_FD_VAR}={raw}: {err}"))?;
    // Edition 2021: `remove_var` is safe to call. Like Node, we do it once,
    // early, from the thread that sets up the channel.
    std::env::remove_var(CHANNEL_FD_VAR);
    std::env::remove_var(SERIALIZATION_VAR);
    Ok(Some(fd))
}

/// Checks that `raw` is an open stream socket, then takes ownership of it.
///
/// Only called by [`take_inherited_channel`], under [`TAKE_LOCK`], with the
/// fd number the parent put in `NODE_CHANNEL_FD`.
fn adopt_stream_socket(raw: RawFd) -> io::Result<OwnedFd> {
    let mut stat = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes at most one `struct stat` into `stat`, which is
    // valid for that write; on an fd number that is not open it fails with
    // EBADF and writes nothing. It does not take or change the fd.
    let rc = unsafe { libc::fstat(raw, stat.as_mut_ptr()) };
    if rc == -1 {
        let err = io::Error::last_os_error();
        return Err(if err.raw_os_error() == Some(libc::EBADF) {
            io::Error::new(io::ErrorKind::NotFound, "the fd is not open")
        } else {
            err
        });
    }
    // SAFETY: fstat returned 0, so it filled in `stat`.
    let stat = unsafe { stat.assume_init() };
    if stat.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        let kind = match stat.st_mode & libc::S_IFMT {
            libc::S_IFREG => "a regular file",
            libc::S_IFDIR => "a directory",
            libc::S_IFIFO => "a pipe",
            libc::S_IFCHR => "a character device",
            _ => "not a socket",
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the fd is {kind}, not the socket a Node-style parent passes"),
        ));
    }
    // SAFETY: NODE_CHANNEL_FD names an fd the parent opened for this process
    // alone (Node's `_forkChild` takes it the same way); fstat just showed it
    // is open and a socket. We hold TAKE_LOCK and remove NODE_CHANNEL_FD
    // before releasing it, so no later call adopts the same fd again. This
    // trusts the variable, as Node does: a process that inherited it from a
    // parent that did not pass the fd, and has since opened a socket of its
    // own at that number, would hand that socket over here (documented on
    // `Channel::from_parent`).
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    match getsockopt(&fd, sockopt::SockType) {
        Ok(SockType::Stream) => Ok(fd),
        Ok(other) => {
            // Give the fd back untouched: it is not a channel we can use.
            let _ = fd.into_raw_fd();
            Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the socket is {other:?}, not a stream socket (SOCK_STREAM)"),
            ))
        }
        Err(errno) => {
            let _ = fd.into_raw_fd();
            Err(io::Error::from(errno))
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
