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

/// Listening sockets a service manager passed (`sd_listen_fds(3)`): fd
/// numbers and what each was at start-up, taken once by
/// [`take_listen_fds`].
static LISTEN_FDS: Mutex<Option<Vec<InheritedFd>>> = Mutex::new(None);

/// An fd number and the `(st_dev, st_ino)` it had at start-up.
type InheritedFd = (RawFd, (u64, u64));

fn capture_listen_fds() {
    // SAFETY: getpid takes nothing and cannot fail.
    let me = unsafe { libc::getpid() };
    let ours = getenv(c"LISTEN_PID")
        .and_then(|v| v.to_str().and_then(|s| s.parse::<libc::pid_t>().ok()))
        == Some(me);
    let n = getenv(c"LISTEN_FDS").and_then(|v| v.to_str().and_then(|s| s.parse::<RawFd>().ok()));
    let fds = match (ours, n) {
        (true, Some(n)) if (1..=1024).contains(&n) => (3..3 + n)
            .filter_map(|fd| fstat(fd).ok().map(|st| (fd, (st.st_dev, st.st_ino))))
            .collect(),
        _ => return,
    };
    *LISTEN_FDS.lock().unwrap_or_else(PoisonError::into_inner) = Some(fds);
}

/// The listening sockets systemd (or anything speaking its socket
/// activation) passed this process at fds 3, 4, ...: each still what it
/// was at start-up and a socket, now owned and close-on-exec. Once per
/// process; `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` are removed
/// from the environment so no child believes they are its own.
pub(crate) fn take_listen_fds() -> Vec<OwnedFd> {
    // Edition 2021: `remove_var` is safe; done once per call, as for the
    // channel. Whatever they said, no child is to believe them its own.
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    let Some(record) = LISTEN_FDS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
    else {
        return Vec::new();
    };
    let mut taken = Vec::new();
    for (raw, id) in record {
        let Ok(now) = fstat(raw) else { continue };
        if (now.st_dev, now.st_ino) != id || now.st_mode & libc::S_IFMT != libc::S_IFSOCK {
            continue;
        }
        // SAFETY: the fd was inherited at exec (recorded before `main`,
        // when nothing of ours could own it), is still the same socket,
        // and this record is taken once: nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        if prepare_socket(std::os::fd::AsFd::as_fd(&fd)).is_ok() {
            taken.push(fd);
        } else {
            // Not ours to close after all: give the number back untouched.
            let _ = fd.into_raw_fd();
        }
    }
    taken
}

fn capture() {
    capture_listen_fds();
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
    if let Some(why) = socket_problem(&fd) {
        // Give the fd back untouched: it is not a channel we can use.
        let _ = fd.into_raw_fd();
        return Err(why);
    }
    if (0..=2).contains(&raw) {
        // Node's `spawn(.., {stdio: ['inherit', 'ipc', ..]})` puts the
        // channel at fd 1. But std's stdin, stdout and stderr write to fds
        // 0-2 whoever owns them: closing one (dropping the channel) would
        // let the next open file take its number and receive `println!`
        // output. The channel gets a duplicate; the standard fd stays open.
        let dup = crate::sys::dup_at_least(std::os::fd::AsFd::as_fd(&fd), 3);
        let _ = fd.into_raw_fd();
        return dup;
    }
    Ok(fd)
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

/// This process's stdin and stdout, taken for a channel: how they arrived.
pub(crate) enum StdioChannel {
    /// Both are the same stream socket (a parent's `channel_on_stdio`):
    /// one duplicate of it.
    Socket(OwnedFd),
    /// Anything else (pipes through ssh, a terminal): duplicates of each,
    /// blocking as they were.
    Pair { input: OwnedFd, output: OwnedFd },
}

/// Take fd 0 and fd 1 for a channel, once per process: duplicate them
/// (close-on-exec, above 2), then point fd 0 at `/dev/null` and fd 1 at
/// stderr, so that a stray `println!` goes to the logs instead of
/// corrupting the channel. A second call fails.
pub(crate) fn take_stdio() -> io::Result<StdioChannel> {
    use std::os::fd::{AsFd, AsRawFd};
    static TAKEN: AtomicBool = AtomicBool::new(false);
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "stdin and stdout were already taken for a channel",
        ));
    }
    let stdin = super::own_fd(0);
    let stdout = super::own_fd(1);
    let same_socket = match (fstat(0), fstat(1)) {
        (Ok(a), Ok(b)) => {
            a.st_mode & libc::S_IFMT == libc::S_IFSOCK
                && (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
                && socket_problem(stdin).is_none()
        }
        _ => false,
    };
    let taken = if same_socket {
        StdioChannel::Socket(super::dup_at_least(stdin, 3)?)
    } else {
        StdioChannel::Pair {
            input: super::dup_at_least(stdin, 3)?,
            output: super::dup_at_least(stdout, 3)?,
        }
    };
    let null = super::dev_null()?;
    for (from, to) in [
        (null.as_raw_fd(), 0),
        (super::own_fd(2).as_fd().as_raw_fd(), 1),
    ] {
        // SAFETY: dup2 takes two integers; fds 0 and 1 are this process's
        // own stdio, which the duplicates above now stand for.
        if unsafe { libc::dup2(from, to) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(taken)
}

/// `accept4(2)` with `SOCK_CLOEXEC`: the next connection on a
/// non-blocking listener (`WouldBlock` when there is none). The
/// connection is blocking; whoever uses it sets its own mode.
pub(crate) fn accept(listener: std::os::fd::BorrowedFd<'_>) -> io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: null address pointers are allowed (the peer's address
        // is not wanted); the fd is borrowed, so it is open.
        let fd = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd >= 0 {
            // SAFETY: accept4 just returned this fd; nothing else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// `listen(2)` on a socket that may be only bound (a Node primary in
/// shared mode passes a bound socket; ours passes a listening one, and
/// listening again only changes the backlog).
pub(crate) fn listen(fd: std::os::fd::BorrowedFd<'_>, backlog: i32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: listen takes an fd the borrow keeps open and an integer.
    if unsafe { libc::listen(fd.as_raw_fd(), backlog) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Make an adopted socket non-blocking and close-on-exec, whatever it was.
pub(crate) fn prepare_socket(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    super::set_nonblocking(fd)?;
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(())
}

/// The most fds one read takes (libuv's `UV__CMSG_FD_COUNT`).
const MAX_FDS: usize = 64;

/// One non-blocking `sendmsg(2)` of `bytes` with `fd` attached as
/// `SCM_RIGHTS` (`MSG_NOSIGNAL`). The kernel holds its own reference to the
/// fd once this returns, so the caller may close it.
pub(crate) fn send_with_fd(
    sock: std::os::fd::BorrowedFd<'_>,
    bytes: &[u8],
    fd: std::os::fd::BorrowedFd<'_>,
) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // One cmsghdr with one int, aligned.
    let mut control = [0u64; 4];
    // SAFETY: msghdr is a plain C struct; all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a constant computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    // SAFETY: the control buffer holds at least one header (checked size).
    let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    // SAFETY: `cmsg` points at the start of our control buffer, big enough
    // for a header and one int; CMSG_DATA points inside it.
    unsafe {
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
        (libc::CMSG_DATA(cmsg) as *mut RawFd).write_unaligned(fd.as_raw_fd());
    }
    // SAFETY: `msg` points at our iovec (the caller's bytes, only read) and
    // control buffer, both valid for the call; the fd is borrowed for it.
    let n = unsafe {
        libc::sendmsg(
            sock.as_raw_fd(),
            &msg,
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// What one [`recv_with_fds`] got.
pub(crate) struct Received {
    /// Bytes read (0: end of stream).
    pub bytes: usize,
    /// The control data was cut (`MSG_CTRUNC`): fds were lost in the kernel.
    pub truncated: bool,
    /// Control data came (fds, or credentials where the socket asks for
    /// them): the kernel ends a read there, so a short one does not mean
    /// the socket is empty.
    pub control: bool,
}

/// `SCM_PIDFD` (Linux 6.5): a pidfd of the sender, which the kernel
/// installs on every read of a socket with `SO_PASSPIDFD` set (by whoever
/// made the socket we adopted). The libc crate does not name it.
const SCM_PIDFD: libc::c_int = 4;

/// One non-blocking `recvmsg(2)` into the spare capacity of `buf` (at most
/// `max` bytes, without zeroing), handing each fd that came with them
/// (`SCM_RIGHTS`, received close-on-exec) to `take`. Any other fd the
/// kernel installs (an `SCM_PIDFD`) is closed: one per read leaked before.
pub(crate) fn recv_with_fds(
    sock: std::os::fd::BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    max: usize,
    mut take: impl FnMut(OwnedFd),
) -> io::Result<Received> {
    use std::os::fd::AsRawFd;
    let spare = buf.spare_capacity_mut();
    let len = spare.len().min(max);
    let mut iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: len,
    };
    // Room for MAX_FDS fds (a header and 256 bytes), credentials
    // (SO_PASSCRED, 32 bytes) and a pidfd (SO_PASSPIDFD, 24 bytes), aligned
    // as a cmsghdr needs: with only the first, 63 fds and both options
    // reported fds lost that had all come (an outside attack). Zeroed,
    // although the walk below reads only what the kernel wrote: left
    // uninitialised (saving a memset, 35 instructions per read), 64 KiB
    // messages went 5-6 % slower, alternated pairs of builds, twice
    // (1.064 back with the memset, CI 1.041-1.079), and a ping-pong gained
    // nothing measurable (0.994, CI 0.957-1.005).
    let mut control = [0u64; (MAX_FDS * 4 + 128) / 8];
    // SAFETY: msghdr is a plain C struct; all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: every pointer in `msg` is valid for the call: the iovec points
    // at `len` writable bytes `buf` owns, the control buffer is ours.
    let n = unsafe {
        libc::recvmsg(
            sock.as_raw_fd(),
            &mut msg,
            libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // Take every fd the kernel installed, first, so none can leak.
    // SAFETY: `msg` was filled by recvmsg, which set `msg_controllen` to
    // the control bytes it wrote; CMSG_FIRSTHDR/NXTHDR walk within those
    // (NXTHDR reads a next header only if it lies wholly inside them).
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: `cmsg` points at a header inside the control buffer.
        let header = unsafe { &*cmsg };
        let fd_carrying = matches!(header.cmsg_type, libc::SCM_RIGHTS | SCM_PIDFD);
        if header.cmsg_level == libc::SOL_SOCKET && fd_carrying {
            // SAFETY: the payload of an SCM_RIGHTS or SCM_PIDFD message is
            // an array of ints, `cmsg_len - CMSG_LEN(0)` bytes long.
            let data = unsafe { libc::CMSG_DATA(cmsg) } as *const RawFd;
            // SAFETY: CMSG_LEN(0) is the header size; a constant computation.
            let count = (header.cmsg_len - unsafe { libc::CMSG_LEN(0) } as usize)
                / std::mem::size_of::<RawFd>();
            for i in 0..count {
                // SAFETY: within the payload counted above; read unaligned,
                // as the control buffer gives no alignment for the ints.
                let raw = unsafe { data.add(i).read_unaligned() };
                // SAFETY: the kernel just installed this fd in our table for
                // us; nothing else owns it.
                let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                if header.cmsg_type == libc::SCM_RIGHTS {
                    take(fd);
                }
            }
        }
        // SAFETY: as above.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    let n = n as usize;
    // SAFETY: recvmsg wrote the first `n` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(Received {
        bytes: n,
        truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
        control: msg.msg_controllen != 0 || msg.msg_flags & libc::MSG_CTRUNC != 0,
    })
}

/// What a socket is, as far as passing it goes: the tokio type it becomes
/// and the `type` a Node receiver expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SocketKind {
    TcpListener,
    TcpStream,
    UnixListener,
    UnixStream,
    Udp4,
    Udp6,
    /// Not a socket, or one of another kind (a Unix datagram socket, raw).
    Other,
}

/// What kind of socket `fd` is, from its type (`SO_TYPE`), whether it
/// listens (`SO_ACCEPTCONN`) and its address family (`getsockname`).
pub(crate) fn socket_kind(fd: std::os::fd::BorrowedFd<'_>) -> SocketKind {
    let Ok((kind, listening, family)) = socket_facts(fd) else {
        return SocketKind::Other;
    };
    let inet = family == libc::AF_INET || family == libc::AF_INET6;
    let unix = family == libc::AF_UNIX;
    match kind {
        SockType::Stream if inet && listening => SocketKind::TcpListener,
        SockType::Stream if inet => SocketKind::TcpStream,
        SockType::Stream if unix && listening => SocketKind::UnixListener,
        SockType::Stream if unix => SocketKind::UnixStream,
        SockType::Datagram if family == libc::AF_INET => SocketKind::Udp4,
        SockType::Datagram if family == libc::AF_INET6 => SocketKind::Udp6,
        _ => SocketKind::Other,
    }
}

/// Whether a read of stream socket `fd` that got fewer bytes than it asked
/// for emptied it: so for Unix and TCP (or MPTCP) sockets; not for SCTP's
/// stream sockets, which end each read at a message, nor anything unknown.
pub(crate) fn short_read_empties(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    use std::os::fd::AsRawFd;
    let Ok((kind, _, family)) = socket_facts(fd) else {
        return false;
    };
    if kind != SockType::Stream {
        return false;
    }
    if family == libc::AF_UNIX {
        return true;
    }
    if family != libc::AF_INET && family != libc::AF_INET6 {
        return false;
    }
    let mut protocol: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: SO_PROTOCOL writes one int into `protocol`, at most `len`
    // bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PROTOCOL,
            (&mut protocol as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    rc == 0 && (protocol == libc::IPPROTO_TCP || protocol == libc::IPPROTO_MPTCP)
}

fn socket_facts(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<(SockType, bool, i32)> {
    use std::os::fd::AsRawFd;
    let kind = getsockopt(&fd, sockopt::SockType)?;
    let listening = getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false);
    // SAFETY: sockaddr_storage is a plain C struct; all-zero is valid.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: getsockname writes at most `len` bytes into `addr`.
    let rc = unsafe {
        libc::getsockname(
            fd.as_raw_fd(),
            (&mut addr as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((kind, listening, i32::from(addr.ss_family)))
}
