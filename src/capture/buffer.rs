//! The buffer that reads a pipe into memory, up to a limit.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::task::{ready, Context, Poll};
use std::time::Instant;

use super::lines::LineSink;
use super::Ending;
use crate::sys;
use crate::sys::ahead::{Ahead, AHEAD};

/// An output stream captured into memory, up to a limit.
///
/// The first 8 KiB go through a buffer on the stack, so a small result
/// holds what came (see `read_small`); past them, reads go straight into
/// the spare capacity of one growing `Vec` (no intermediate buffer, no
/// zeroing, no copy at the end). Once a producer
/// has written 256 KiB it is a big one: its pipe grows to 1 MiB
/// (`F_SETPIPE_SZ`) so it blocks less and each read moves more, and the
/// buffer is faulted in a few MiB ahead of the reads with one
/// `MADV_POPULATE_WRITE` instead of a page fault per 4 KiB (std's
/// `read_to_end` into fresh memory is bound by those faults). Past
/// [`HELPER_FROM`] a helper thread does that while the reads go on
/// ([`Ahead`]).
pub(crate) struct Capture {
    buf: Vec<u8>,
    limit: usize,
    pipe_grown: bool,
    /// How far into the buffer the pages are faulted in already, by this
    /// thread; `usize::MAX` once the kernel refused.
    populated: usize,
    helper: Helper,
    /// The last read returned less than it asked for.
    short: bool,
}

const FIRST_CHUNK: usize = 8 * 1024;
const BIG_PRODUCER: usize = 256 * 1024;
const PIPE_LARGE: usize = 1024 * 1024;
const POPULATE_AHEAD: usize = 4 * 1024 * 1024;
/// The size from which a helper thread faults the buffer in: by then the
/// output is big enough that the thread's start (tens of µs) is lost in
/// the time the rest takes to arrive.
const HELPER_FROM: usize = 4 * 1024 * 1024;

/// The capture's helper thread, if it has one.
enum Helper {
    /// Not started: the capture is small still.
    NotYet,
    Running(Ahead),
    /// None to be had (one per CPU already, a single CPU, no thread), or
    /// stopped: this thread faults the buffer in.
    No,
}

impl Capture {
    pub(crate) fn new(limit: usize) -> Capture {
        Capture {
            buf: Vec::new(),
            limit,
            pipe_grown: false,
            populated: 0,
            helper: Helper::NotYet,
            short: false,
        }
    }

    /// One `read(2)` from `fd`; `Ok(0)` is end of file.
    pub(crate) fn read_from(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        // One byte past the limit is enough to know it was exceeded.
        let max = self.limit.saturating_add(1).saturating_sub(self.buf.len());
        if self.buf.len() < FIRST_CHUNK && self.buf.capacity() - self.buf.len() < FIRST_CHUNK / 2 {
            return self.read_small(fd, max);
        }
        // Grow when under half a chunk is left (not under a whole one: a
        // first read of a few bytes would then reallocate the buffer for
        // the read that finds end of file); with a helper, half its reach
        // ahead before the end, so it faults in the new room before the
        // reads get there.
        let low = match self.helper {
            Helper::Running(_) => AHEAD / 2,
            _ => FIRST_CHUNK / 2,
        };
        if self.buf.capacity() - self.buf.len() < low && self.buf.capacity() <= self.limit {
            // Double, but never past one byte over the limit: a 300 MiB
            // max_buffer must not allocate 512 MiB.
            let room = self.limit.saturating_add(1) - self.buf.len();
            // At least twice the low mark: growing by less (the length,
            // under 8 MiB with a helper) left the room under the mark
            // again a read later, and each growth waits for the helper.
            let more = self.buf.len().max(FIRST_CHUNK).max(2 * low).min(room);
            match &self.helper {
                // It may move the buffer: not under the helper's feet.
                Helper::Running(ahead) => ahead.regrow(&mut self.buf, |b| b.reserve_exact(more)),
                _ => self.buf.reserve_exact(more),
            }
        }
        if self.buf.len() >= BIG_PRODUCER {
            if !self.pipe_grown {
                self.pipe_grown = true;
                let _ = sys::set_pipe_size(fd, PIPE_LARGE);
            }
            let len = self.buf.len();
            if matches!(self.helper, Helper::NotYet) && len >= HELPER_FROM {
                self.helper = match self.populated {
                    usize::MAX => Helper::No,
                    done => Ahead::start(&mut self.buf, done).map_or(Helper::No, Helper::Running),
                };
            }
            if let Helper::Running(ahead) = &self.helper {
                ahead.read_up_to(len);
            } else if self.populated < len + POPULATE_AHEAD / 2
                && self.populated < self.buf.capacity()
            {
                let from = self.populated.max(len);
                if sys::populate(&mut self.buf, from, POPULATE_AHEAD) {
                    self.populated = (from + POPULATE_AHEAD).min(self.buf.capacity());
                } else {
                    self.populated = usize::MAX;
                }
            }
        }
        let asked = max.min(self.buf.capacity() - self.buf.len());
        let n = sys::read_to_spare(fd, &mut self.buf, max)?;
        self.short = n < asked;
        Ok(n)
    }

    /// A read while the capture is small, through a buffer on the stack,
    /// the bytes then appended.
    ///
    /// Most captures are a line or two, or nothing at all (stderr). Read
    /// straight into the `Vec`, each stream allocated 8 KiB before its
    /// first read: memory the result then kept for nothing (a thousand
    /// kept results of `echo` held 16 MiB), and a request past malloc's
    /// small sizes that made glibc consolidate its free lists on every run
    /// (callgrind, `exec("echo hello")`: 2k of our 75k instructions per
    /// call). The copy out of the stack is at most 8 KiB per stream.
    fn read_small(&mut self, fd: BorrowedFd<'_>, max: usize) -> io::Result<usize> {
        let mut stack = [std::mem::MaybeUninit::<u8>::uninit(); FIRST_CHUNK];
        let asked = max.min(FIRST_CHUNK);
        let got = sys::read_uninit(fd, &mut stack[..asked])?;
        self.buf.extend_from_slice(got);
        self.short = got.len() < asked;
        Ok(got.len())
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
        // The helper stops first: it would fault in again what the discard
        // below gives back.
        self.helper = Helper::No;
        let mut buf = std::mem::take(&mut self.buf);
        buf.truncate(self.limit);
        if buf.len() >= BIG_PRODUCER {
            // Pages faulted in ahead of reads that never came (up to
            // `AHEAD` past the last read, by the helper or by us) are not
            // kept resident by the result.
            sys::discard_spare(&mut buf, AHEAD);
        }
        buf
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // The helper stops (its call in flight returned) before the
        // buffer is freed.
        self.helper = Helper::No;
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

/// How much a tee holds for this process's own output before it stops
/// reading the child (which then waits on its pipe, as it would writing
/// to that output itself).
const TEE_BACKLOG: usize = 1 << 20;

/// A stream copied through to this process's own output.
///
/// Our stdout may be a pager that stopped reading: a blocking write would
/// stall the driver, its timeout and (on a current-thread runtime) every
/// other task. So the copy is written only when `poll(2)` says the fd has
/// room, `PIPE_BUF` bytes at a time (what a pipe or socket with room takes
/// without blocking); what does not fit waits here, and past
/// [`TEE_BACKLOG`] the child is not read until it drains.
pub(crate) struct Tee {
    out: TeeOut,
    scratch: Vec<u8>,
    tail: Vec<u8>,
    short: bool,
    /// Registration of a duplicate of `out.to` with tokio, to wait for
    /// room in the async driver; made on first need.
    watch: Option<Watch>,
}

/// The copy on its way to one of our own fds.
struct TeeOut {
    to: RawFd,
    /// Read from the child, not yet written; `pending[sent..]` is left.
    pending: Vec<u8>,
    sent: usize,
    /// Writes never block (a regular file): written whole, no `poll`.
    never_blocks: bool,
    /// A write failed (a pager that quit): copies are dropped, the run
    /// goes on.
    closed: bool,
}

enum Watch {
    Fd(tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>),
    /// epoll refuses the fd (a regular file, `/dev/null`): it is always
    /// ready, so `poll` never says otherwise.
    Unwatchable,
}

impl TeeOut {
    fn left(&self) -> usize {
        self.pending.len() - self.sent
    }

    /// Write what the fd takes now, without blocking; `true` once nothing
    /// is left.
    fn flush_now(&mut self) -> bool {
        const PIPE_BUF: usize = libc::PIPE_BUF;
        while self.left() > 0 {
            let chunk = if self.never_blocks {
                self.left()
            } else if sys::writable_now(self.to) {
                self.left().min(PIPE_BUF)
            } else {
                return false;
            };
            let bytes = &self.pending[self.sent..self.sent + chunk];
            match sys::write(sys::own_fd(self.to), bytes) {
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Shared with a runtime that made it non-blocking.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => self.closed = true,
            }
            if self.closed {
                break;
            }
        }
        self.pending.clear();
        self.sent = 0;
        true
    }
}

impl Tee {
    pub(crate) fn new(to: RawFd) -> Tee {
        Tee {
            out: TeeOut {
                to,
                pending: Vec::new(),
                sent: 0,
                never_blocks: sys::is_regular_file(sys::own_fd(to)),
                closed: false,
            },
            scratch: Vec::new(),
            tail: Vec::new(),
            short: false,
            watch: None,
        }
    }

    fn read_from(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        const CHUNK: usize = 64 * 1024;
        self.scratch.clear();
        self.scratch.reserve(CHUNK);
        let n = sys::read_to_spare(fd, &mut self.scratch, CHUNK)?;
        self.short = n < CHUNK;
        if !self.out.closed {
            if self.out.sent > 0 && self.out.sent == self.out.pending.len() {
                self.out.pending.clear();
                self.out.sent = 0;
            } else if self.out.sent >= TEE_BACKLOG / 2 {
                self.out.pending.drain(..self.out.sent);
                self.out.sent = 0;
            }
            self.out.pending.extend_from_slice(&self.scratch);
            self.out.flush_now();
        }
        self.tail.extend_from_slice(&self.scratch);
        if self.tail.len() > 2 * TAIL {
            self.tail.drain(..self.tail.len() - TAIL);
        }
        Ok(n)
    }

    /// Whether the child may be read: the backlog is under its limit.
    fn has_room(&self) -> bool {
        self.out.left() < TEE_BACKLOG
    }

    /// Our fd, while a copy waits for room in it.
    fn waiting_fd(&self) -> Option<RawFd> {
        (self.out.left() > 0).then_some(self.out.to)
    }

    /// Keep the copy flowing out: `Ready` once all of it is written.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.out.flush_now() {
                return Poll::Ready(());
            }
            let to = self.out.to;
            let watch = self.watch.get_or_insert_with(|| {
                sys::dup_at_least(sys::own_fd(to), 3)
                    .ok()
                    .and_then(|dup| {
                        sys::tokio_fd::register(dup, tokio::io::Interest::WRITABLE).ok()
                    })
                    .map_or(Watch::Unwatchable, Watch::Fd)
            });
            match watch {
                Watch::Fd(fd) => match ready!(fd.poll_write_ready(cx)) {
                    // It was full at our last try: wait for the next edge.
                    Ok(mut guard) => guard.clear_ready(),
                    Err(_) => *watch = Watch::Unwatchable,
                },
                Watch::Unwatchable => {
                    // Cannot be waited for, so it cannot be full either
                    // (short of a non-blocking one shared with a runtime):
                    // write it as before.
                    let bytes = &self.out.pending[self.out.sent..];
                    let _ = sys::write_all_blocking(to, bytes);
                    self.out.pending.clear();
                    self.out.sent = 0;
                    return Poll::Ready(());
                }
            }
        }
    }

    /// At the end of the run: write what is left, waiting for room until
    /// `until` (`None`: as long as it takes, as the child itself would
    /// have) or until `cancel` is readable (the run's future was dropped);
    /// what is still left then is dropped (the tail keeps it).
    fn finish(&mut self, until: Option<Instant>, cancel: Option<BorrowedFd<'_>>) {
        while !self.out.flush_now() {
            let left = until.map(|u| u.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                break;
            }
            let mut fds = [
                libc::pollfd {
                    fd: self.out.to,
                    events: libc::POLLOUT,
                    revents: 0,
                },
                libc::pollfd {
                    fd: cancel.map_or(-1, |fd| fd.as_raw_fd()),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            if sys::poll(&mut fds, left).is_err() || fds[1].revents != 0 {
                break;
            }
        }
        self.out.pending = Vec::new();
        self.out.sent = 0;
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

    /// Whether the stream may be read now, for the blocking driver: a tee
    /// may be behind on our own output.
    pub(crate) fn has_room(&self) -> bool {
        match self {
            Sink::Tee(tee) => tee.has_room(),
            Sink::Keep(_) => true,
            Sink::Lines(_) => unreachable!("lines are read by the async driver only"),
        }
    }

    /// Ready when the stream may be read: a line consumer or our own
    /// output may be behind. Keeps a tee's copy flowing out meanwhile.
    /// Polled afresh every time the driver is, so room made since the last
    /// poll is seen.
    pub(crate) fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self {
            Sink::Keep(_) => Poll::Ready(()),
            Sink::Lines(lines) => lines.poll_room(cx),
            Sink::Tee(tee) => {
                let flushed = tee.poll_flush(cx);
                if tee.has_room() {
                    Poll::Ready(())
                } else {
                    debug_assert!(flushed.is_pending());
                    Poll::Pending
                }
            }
        }
    }

    /// Keep a tee's copy flowing out while the stream is not being read.
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self {
            Sink::Tee(tee) => tee.poll_flush(cx),
            _ => Poll::Ready(()),
        }
    }

    /// The blocking driver's side of the same: our fd to wait on while a
    /// copy waits for room in it, and the write once it has room.
    pub(crate) fn waiting_fd(&self) -> Option<RawFd> {
        match self {
            Sink::Tee(tee) => tee.waiting_fd(),
            _ => None,
        }
    }

    pub(crate) fn flush_now(&mut self) {
        if let Sink::Tee(tee) = self {
            tee.out.flush_now();
        }
    }

    /// The run is over: a tee writes what is left (waiting for room only
    /// when the run ended by itself, not past its timeout, and not once
    /// `cancel` is readable); lines without `\n` are handed out.
    pub(crate) fn finish(
        &mut self,
        ending: Ending,
        deadline: Option<Instant>,
        cancel: Option<BorrowedFd<'_>>,
    ) {
        match self {
            Sink::Tee(tee) => tee.finish(
                match ending {
                    Ending::Exited => deadline,
                    Ending::TimedOut | Ending::Overflow(_) => Some(Instant::now()),
                },
                cancel,
            ),
            Sink::Lines(lines) => lines.flush(),
            Sink::Keep(_) => {}
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
