//! The buffer that reads a pipe into memory, up to a limit.

use std::io;
use std::os::fd::BorrowedFd;

use crate::sys;

/// An output stream captured into memory, up to a limit.
///
/// Reads go straight into the spare capacity of one growing `Vec` (no
/// intermediate buffer, no zeroing, no copy at the end). Once a producer
/// has written 256 KiB it is a big one: its pipe grows to 1 MiB
/// (`F_SETPIPE_SZ`) so it blocks less and each read moves more, and the
/// buffer is faulted in a few MiB ahead of the reads with one
/// `MADV_POPULATE_WRITE` instead of a page fault per 4 KiB (std's
/// `read_to_end` into fresh memory is bound by those faults).
pub(crate) struct Capture {
    buf: Vec<u8>,
    limit: usize,
    pipe_grown: bool,
    /// How far into the buffer the pages are faulted in already.
    populated: usize,
    /// The last read returned less than it asked for.
    short: bool,
}

const FIRST_CHUNK: usize = 8 * 1024;
const BIG_PRODUCER: usize = 256 * 1024;
const PIPE_LARGE: usize = 1024 * 1024;
const POPULATE_AHEAD: usize = 4 * 1024 * 1024;

impl Capture {
    pub(crate) fn new(limit: usize) -> Capture {
        Capture {
            buf: Vec::new(),
            limit,
            pipe_grown: false,
            populated: 0,
            short: false,
        }
    }

    /// One `read(2)` from `fd`; `Ok(0)` is end of file.
    pub(crate) fn read_from(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < FIRST_CHUNK {
            // Double, but never past one byte over the limit: a 300 MiB
            // max_buffer must not allocate 512 MiB.
            let room = self.limit.saturating_add(1) - self.buf.len();
            self.buf
                .reserve_exact(self.buf.len().max(FIRST_CHUNK).min(room));
        }
        if self.buf.len() >= BIG_PRODUCER {
            if !self.pipe_grown {
                self.pipe_grown = true;
                let _ = sys::set_pipe_size(fd, PIPE_LARGE);
            }
            let len = self.buf.len();
            if self.populated < len + POPULATE_AHEAD / 2 && self.populated < self.buf.capacity() {
                let from = self.populated.max(len);
                if sys::populate(&mut self.buf, from, POPULATE_AHEAD) {
                    self.populated = (from + POPULATE_AHEAD).min(self.buf.capacity());
                } else {
                    self.populated = usize::MAX;
                }
            }
        }
        // One byte past the limit is enough to know it was exceeded.
        let max = self.limit.saturating_add(1).saturating_sub(self.buf.len());
        let asked = max.min(self.buf.capacity() - self.buf.len());
        let n = sys::read_to_spare(fd, &mut self.buf, max)?;
        self.short = n < asked;
        Ok(n)
    }

    /// Whether the last read got less than it asked for: the pipe was empty
    /// after it.
    pub(crate) fn last_read_was_short(&self) -> bool {
        self.short
    }

    /// Whether more than `limit` bytes arrived.
    pub(crate) fn overflowed(&self) -> bool {
        self.buf.len() > self.limit
    }

    /// Read what the pipe holds right now without waiting, up to end of
    /// file or the limit. Only what was there when this started: a writer
    /// that keeps writing (a background process that left the group) cannot
    /// keep it reading forever.
    pub(crate) fn drain_ready(&mut self, fd: BorrowedFd<'_>) {
        let mut left = sys::bytes_available(fd).unwrap_or(0);
        while left > 0 && !self.overflowed() {
            match self.read_from(fd) {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    }

    /// The captured bytes, cut to the limit.
    pub(crate) fn into_vec(mut self) -> Vec<u8> {
        self.buf.truncate(self.limit);
        self.buf
    }
}
