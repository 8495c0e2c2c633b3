//! The buffer that reads a pipe into memory, up to a limit.

use std::io;
use std::os::fd::{BorrowedFd, RawFd};

use super::lines::LineSink;
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

/// Where the bytes read from one of a child's output pipes go.
pub(crate) enum Sink {
    /// Kept in memory, up to a limit ([`Capture`]).
    Keep(Capture),
    /// Copied to one of this process's own fds (1 or 2) as they arrive,
    /// with the last [`TAIL`] bytes kept for the result.
    Tee(Tee),
    /// Split into lines for a consumer, the last 64 KiB kept.
    Lines(LineSink),
}

/// How much a tee keeps: enough for an error's stderr tail.
pub(crate) const TAIL: usize = 64 * 1024;

/// A stream copied through to this process's own output.
pub(crate) struct Tee {
    to: RawFd,
    scratch: Vec<u8>,
    tail: Vec<u8>,
    short: bool,
}

impl Tee {
    pub(crate) fn new(to: RawFd) -> Tee {
        Tee {
            to,
            scratch: Vec::new(),
            tail: Vec::new(),
            short: false,
        }
    }

    fn read_from(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        const CHUNK: usize = 64 * 1024;
        self.scratch.clear();
        self.scratch.reserve(CHUNK);
        let n = sys::read_to_spare(fd, &mut self.scratch, CHUNK)?;
        self.short = n < CHUNK;
        // Our own stdout or stderr: a terminal, a file, a pipe to a pager.
        // Written whole, waiting for room if it is full; a closed one (a
        // pager that quit) drops the copy, the run goes on.
        let _ = sys::write_all_blocking(self.to, &self.scratch);
        self.tail.extend_from_slice(&self.scratch);
        if self.tail.len() > 2 * TAIL {
            self.tail.drain(..self.tail.len() - TAIL);
        }
        Ok(n)
    }

    fn into_tail(mut self) -> Vec<u8> {
        if self.tail.len() > TAIL {
            self.tail.drain(..self.tail.len() - TAIL);
        }
        self.tail
    }
}

impl Sink {
    /// Kept in memory, up to `limit` bytes.
    pub(crate) fn keep(limit: usize) -> Sink {
        Sink::Keep(Capture::new(limit))
    }

    /// For a stream that is not read at all: stays empty.
    pub(crate) fn none() -> Sink {
        Sink::Keep(Capture::new(0))
    }

    /// One `read(2)` from `fd`; `Ok(0)` is end of file.
    pub(crate) fn read_from(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        match self {
            Sink::Keep(capture) => capture.read_from(fd),
            Sink::Tee(tee) => tee.read_from(fd),
            Sink::Lines(lines) => lines.read_from(fd),
        }
    }

    /// Whether the last read got less than it asked for.
    pub(crate) fn last_read_was_short(&self) -> bool {
        match self {
            Sink::Keep(capture) => capture.last_read_was_short(),
            Sink::Tee(tee) => tee.short,
            Sink::Lines(lines) => lines.last_read_was_short(),
        }
    }

    /// Whether more than the limit arrived (only a kept stream has one).
    pub(crate) fn overflowed(&self) -> bool {
        match self {
            Sink::Keep(capture) => capture.overflowed(),
            Sink::Tee(_) | Sink::Lines(_) => false,
        }
    }

    /// Whether the stream may be read now: a line consumer may be behind.
    pub(crate) fn has_room(&self) -> bool {
        match self {
            Sink::Lines(lines) => lines.has_room(),
            _ => true,
        }
    }

    /// Read what the pipe holds right now, without waiting.
    pub(crate) fn drain_ready(&mut self, fd: BorrowedFd<'_>) {
        match self {
            Sink::Keep(capture) => capture.drain_ready(fd),
            Sink::Tee(_) | Sink::Lines(_) => {
                let mut left = sys::bytes_available(fd).unwrap_or(0);
                while left > 0 {
                    match self.read_from(fd) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => left = left.saturating_sub(n),
                    }
                }
            }
        }
    }

    /// What the result holds of this stream: the kept bytes (cut to the
    /// limit), or a tee's tail.
    pub(crate) fn into_vec(self) -> Vec<u8> {
        match self {
            Sink::Keep(capture) => capture.into_vec(),
            Sink::Tee(tee) => tee.into_tail(),
            Sink::Lines(lines) => lines.into_tail(),
        }
    }
}
