//! The one tokio call that needs `unsafe`: registering an fd with the
//! reactor (tokio 1.54 deprecated the safe `AsyncFd::new`, tokio#8587).
//! Everything else in `sys` stays free of tokio.

use std::io;
use std::os::fd::OwnedFd;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Register `fd` with the current runtime's reactor. On failure the fd comes
/// back when tokio returns it (it does not when the runtime has no IO
/// driver: tokio panics then, and the panic is turned into an error here so
/// the caller can still reap the child it just started).
pub(crate) fn register(
    fd: OwnedFd,
    interest: Interest,
) -> Result<AsyncFd<OwnedFd>, (Option<OwnedFd>, io::Error)> {
    let registered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: the AsyncFd takes ownership of the OwnedFd, so the fd stays
        // open, and is not closed or replaced by anyone else, for as long as
        // it is registered.
        unsafe { AsyncFd::register_with_interest(fd, interest) }
    }));
    match registered {
        Ok(Ok(fd)) => Ok(fd),
        Ok(Err(e)) => {
            let (fd, err) = e.into_parts();
            Err((Some(fd), err))
        }
        Err(_) => Err((
            None,
            io::Error::other(
                "the tokio runtime has no IO driver: build it with enable_io() or enable_all()",
            ),
        )),
    }
}

/// One `read(2)` into the unfilled part of a tokio `ReadBuf`, without
/// zeroing it first (`ReadBuf::initialize_unfilled` would zero it on every
/// call, as `BufReader` hands in a fresh `ReadBuf` each fill).
pub(crate) fn read_into(
    fd: std::os::fd::BorrowedFd<'_>,
    buf: &mut tokio::io::ReadBuf<'_>,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: we only write into the slice (through read(2)) and never read
    // from its uninitialised part, as `unfilled_mut` requires.
    let unfilled = unsafe { buf.unfilled_mut() };
    // SAFETY: the pointer and length describe writable memory the ReadBuf
    // owns; read(2) writes at most that many bytes.
    let n = unsafe { libc::read(fd.as_raw_fd(), unfilled.as_mut_ptr().cast(), unfilled.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: read(2) initialised the first `n` bytes of the unfilled part.
    unsafe { buf.assume_init(n) };
    buf.advance(n);
    Ok(())
}
