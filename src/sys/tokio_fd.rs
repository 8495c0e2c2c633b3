//! The one tokio call that needs `unsafe`: registering an fd with the
//! reactor (tokio 1.54 deprecated the safe `AsyncFd::new`, tokio#8587).
//! Everything else in `sys` stays free of tokio.

use std::io;
use std::os::fd::OwnedFd;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Register `fd` with the current runtime's reactor.
pub(crate) fn register(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd takes ownership of the OwnedFd, so the fd stays
    // open, and is not closed or replaced by anyone else, for as long as it
    // is registered.
    unsafe { AsyncFd::register_with_interest(fd, interest) }.map_err(io::Error::from)
}
