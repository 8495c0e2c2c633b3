//! The send queue shared by every sender of one channel.
//!
//! All senders of a channel (the [`Channel`] and every clone of its
//! [`ChannelSender`]) share one [`WriteState`] behind a `std` mutex, plus a
//! [`Notify`]. A sender serializes its message (outside the lock), appends
//! the bytes to the `back` buffer and remembers the stream offset `end` at
//! which its message ends. If nobody is writing, it becomes the *flusher*: it
//! swaps `back` into its own `front` buffer and writes it with non-blocking
//! `send(2)` (`MSG_NOSIGNAL`) calls. When the socket is full it puts the
//! rest back, gives the role up, waits for room (or for another flusher to
//! write its line) and queues for the role again: the role is never held
//! across an `await`, so a send future that nobody polls (a receiver's
//! pending protocol reply, say) cannot stop the other senders. Meanwhile
//! other senders keep appending to `back`; when the flusher has written
//! `front` it swaps again, so everything queued during one write goes out in
//! the next single `send` (coalescing). A sender that is not the flusher
//! waits until `written >= end`. The flusher returns once its own message is
//! written and hands the role over: a waiting sender takes it when woken, and
//! bytes `feed` queued after it wait for the next send or flush.
//!
//! The queue is bounded: a sender may append only while fewer than
//! [`SEND_QUEUE_LIMIT`] bytes are queued but unwritten, so a peer that stops
//! reading makes `send` wait instead of growing memory. The check is "below
//! the limit", not "fits under the limit", so one message larger than the
//! limit still goes through (memory stays below the limit plus one message).
//! The receiver's protocol replies are bounded by their own bytes: it stops
//! reading while more than [`SEND_QUEUE_LIMIT`] bytes of replies are
//! unwritten, whatever else is queued, so full queues of messages on both
//! sides of a channel cannot stop both receivers.
//!
//! Cancellation: the flusher keeps its buffer in a guard whose `Drop` puts
//! the unwritten rest back into the shared state. The next flusher writes
//! that rest before anything else, so a message is never interleaved with
//! another one. A send cancelled while waiting for room first tries, without
//! blocking, to finish the line the socket took part of. A dropped waiter
//! leaves its bytes queued; they go out with the next message anyone sends.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Notify;

use super::handle::Unacked;
use super::KEEP_CAPACITY;
use crate::error::ChannelError;
use crate::sys;

/// What [`Shared::send_direct`] did with a line.
enum Direct<'a> {
    /// All of it is written.
    Sent,
    /// Part or none of it is: the flusher role, holding the rest, and the
    /// stream offset the line ends at.
    Rest(u64, Flusher<'a>),
    /// Nothing: the queue was not empty, or someone writes; queue it.
    Queue,
}

/// How many bytes may be queued but not yet written before `send` waits.
pub(super) const SEND_QUEUE_LIMIT: u64 = 1024 * 1024;

/// `feed` writes once this many bytes are queued: one `send(2)` then
/// carries thousands of small messages.
pub(super) const FEED_BATCH: u64 = 64 * 1024;

/// What every half of one channel shares: the socket and the send queue.
pub(super) struct Shared {
    /// The socket, registered with the reactor for reading only.
    ///
    /// Registered for writing too (as tokio's `UnixStream` is), every
    /// message the peer reads wakes our reactor: freeing the peer's copy of
    /// our bytes signals `EPOLLOUT` on our socket, from inside the peer's
    /// `recvmsg` (`sock_wfree` → `unix_write_space`). In a ping-pong that
    /// wake-up, an IPI to a sleeping CPU, was 46 % of both processes' perf
    /// samples, and one `epoll_wait` more per message. So writes go
    /// straight to the socket, and only a writer that found it full watches
    /// for room (see [`Room`]), as libuv watches `POLLOUT` only while its
    /// write queue is not empty (`uv__io_start` / `uv__io_stop` in
    /// `src/unix/stream.c`).
    pub(super) socket: AsyncFd<OwnedFd>,
    /// The runtime `socket` is registered with; the watch for room is
    /// registered there too, whatever polls the send (a plain thread's
    /// `futures::executor::block_on`, another runtime).
    runtime: tokio::runtime::Handle,
    /// The socket reaches the peer itself, so fds can travel; not for a
    /// channel bridged to a byte stream.
    pub(super) carries_fds: bool,
    state: Mutex<WriteState>,
    /// Woken whenever bytes are written, the flusher role is released, or
    /// the channel breaks. Only signalled when `waiters > 0`.
    notify: Notify,
}

/// The send queue; see the module docs for how it is used.
#[derive(Default)]
pub(super) struct WriteState {
    /// A buffer a cancelled flusher left behind: `front[front_pos..]` is
    /// unwritten and goes out before `back`.
    front: Vec<u8>,
    front_pos: usize,
    /// Whole lines queued by senders, not yet taken by a flusher.
    back: Vec<u8>,
    /// Bytes ever queued / written; the difference is what is pending.
    pub(super) queued: u64,
    pub(super) written: u64,
    /// Some sender is the flusher (holds the front buffer).
    flushing: bool,
    /// Tasks waiting on `notify`.
    waiters: usize,
    /// fds to attach to the stream at these offsets (the last byte of a
    /// `NODE_HANDLE` line, see [`fd_offset`]), in order.
    fds: VecDeque<(u64, Arc<OwnedFd>)>,
    /// Handles sent and not yet acknowledged, in the order they went out
    /// (kept to send again on `NODE_HANDLE_NACK`).
    unacked: VecDeque<Unacked>,
    /// The protocol replies queued by the receiver: their ranges of the
    /// stream (adjacent ones merged), oldest first, and the sum of their
    /// lengths. The receiver stops reading by these bytes alone, not by
    /// the messages queued around them (see `ChannelReceiver::poll_backlog`).
    control: VecDeque<(u64, u64)>,
    control_len: u64,
    /// Set when we disconnected or a write failed; every later send fails.
    pub(super) broken: Option<Broken>,
    /// The watch for room; see [`Room`].
    room: Room,
    /// Flusher runs in a row that did not find the socket full, while
    /// there is a watch.
    room_idle: u32,
}

/// The watch for room: a duplicate of the socket's fd (epoll takes one
/// registration per fd), made with the channel so that waiting for room
/// never fails for want of an fd, and registered for writing only while
/// writes keep finding the socket full.
#[derive(Default)]
enum Room {
    /// Not registered: writes have not blocked lately.
    Idle(OwnedFd),
    /// Registered for writing; shared by the writers waiting on it.
    Watching(Arc<AsyncFd<OwnedFd>>),
    /// Swapped out under the lock; stays so only if a registration failed
    /// without giving the fd back (tokio does so for a runtime without an
    /// IO driver, which the channel's own runtime is not).
    #[default]
    Taken,
}

/// How many flusher runs in a row must write without blocking before the
/// watch for room is unregistered. Unregistering it at the first such run
/// made a stream of 64 KiB messages, which block about every third
/// message, pay two `epoll_ctl` each time.
const ROOM_IDLE_RUNS: u32 = 16;

#[derive(Debug, Clone)]
pub(super) enum Broken {
    Closed,
    /// An error with an errno.
    Os(i32),
    /// One without (tokio's, when the runtime is gone): its kind and text.
    Other(io::ErrorKind, Arc<str>),
}

impl Broken {
    fn from_io(err: &io::Error) -> Broken {
        match err.raw_os_error() {
            Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN | libc::ESHUTDOWN) => {
                Broken::Closed
            }
            Some(code) => Broken::Os(code),
            None => Broken::Other(err.kind(), err.to_string().into()),
        }
    }

    pub(super) fn error(&self) -> ChannelError {
        match self {
            Broken::Closed => ChannelError::Closed,
            Broken::Os(code) => ChannelError::Io(io::Error::from_raw_os_error(*code)),
            Broken::Other(kind, text) => ChannelError::Io(io::Error::new(*kind, text.to_string())),
        }
    }
}

impl Shared {
    /// The shared state of a channel on `socket`, registered with the
    /// current runtime (the caller checked there is one).
    pub(super) fn new(socket: OwnedFd, carries_fds: bool) -> io::Result<Shared> {
        let room = Room::Idle(socket.try_clone()?);
        let socket = sys::tokio_fd::register(socket, Interest::READABLE).map_err(|(_, e)| e)?;
        Ok(Shared {
            socket,
            runtime: tokio::runtime::Handle::current(),
            carries_fds,
            state: Mutex::new(WriteState {
                room,
                ..WriteState::default()
            }),
            notify: Notify::new(),
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, WriteState> {
        // No user code runs under the lock, so a poisoned lock still holds
        // a consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `line` (whole lines, each ending in `\n`) and returns once it
    /// is written to the socket.
    pub(super) async fn send_line(&self, line: &[u8]) -> Result<(), ChannelError> {
        match self.send_direct(line) {
            Direct::Sent => return Ok(()),
            Direct::Rest(end, flusher) => return self.write_to(flusher, end).await,
            Direct::Queue => {}
        }
        let (end, flusher) = self
            .admit(|st| {
                st.back.extend_from_slice(line);
                st.queued += line.len() as u64;
            })
            .await?;
        match flusher {
            Some(flusher) => self.write_to(flusher, end).await,
            None => self.flush_to(end).await,
        }
    }

    /// Writes `line` straight from the caller's buffer when nothing is
    /// queued and nobody writes: the line's range of the stream is taken
    /// under the lock, with the flusher role, so that lines queued by others
    /// meanwhile go after it. See [`Direct`] for what it returns.
    ///
    /// Through the queue, a message was copied in, swapped out and written
    /// under four lock round trips; a sender that waits for each reply
    /// (request and response) always finds the queue empty.
    fn send_direct(&self, line: &[u8]) -> Direct<'_> {
        let end = {
            let mut st = self.lock();
            if st.broken.is_some() || st.flushing || st.queued != st.written || !st.fds.is_empty() {
                return Direct::Queue;
            }
            st.flushing = true;
            st.queued += line.len() as u64;
            st.queued
        };
        // No fd is due (none is queued), so no `send_next`.
        let sent = self.send_now(line);
        let mut st = self.lock();
        let rest = match sent {
            Ok(n) => {
                st.written += n as u64;
                &line[n..]
            }
            // `run` meets the error again and records it, as for any write.
            Err(_) => line,
        };
        if rest.is_empty() {
            st.room_went_unused();
            self.release(st);
            return Direct::Sent;
        }
        // What others queued since is in `back`; the rest goes before it.
        st.front.clear();
        st.front.extend_from_slice(rest);
        st.front_pos = 0;
        Direct::Rest(end, Flusher::start(self, &mut st))
    }

    /// Gives the flusher role up, waking whoever waits for it, or to hear of
    /// a `disconnect` made meanwhile.
    fn release(&self, mut st: MutexGuard<'_, WriteState>) {
        st.flushing = false;
        let wake = st.waiters > 0 || st.broken.is_some();
        drop(st);
        if wake {
            self.notify.notify_waiters();
        }
    }

    /// Waits while the queue is full, then queues with `append` under the
    /// lock. Returns the offset the queue then ends at, and the flusher role
    /// if nobody held it.
    ///
    /// Senders waiting for room are not admitted in the order they came:
    /// whoever runs first once there is room goes in. Tickets were tried
    /// (tokio's bounded `mpsc` is fair), and an outside attack showed why
    /// its semaphore hands a freed place to the first waiter itself: with
    /// a turn each waiter must take when polled, one send future kept and
    /// not polled (a `select!` arm) stopped every other send for good, and
    /// 1,000 waiters woke 1,000 times per message (60× slower).
    async fn admit(
        &self,
        append: impl FnOnce(&mut WriteState),
    ) -> Result<(u64, Option<Flusher<'_>>), ChannelError> {
        // Most sends find room: admitted here, without the closure
        // `wait_until` takes (callgrind, ping-pong: 80 instructions less
        // per message, as few as before `admit` existed).
        {
            let mut st = self.lock();
            if st.broken.is_none() && st.queued - st.written < SEND_QUEUE_LIMIT {
                append(&mut st);
                let flusher = (!st.flushing).then(|| Flusher::start(self, &mut st));
                return Ok((st.queued, flusher));
            }
        }
        let mut append = Some(append);
        loop {
            // A full queue with nobody writing (a cancelled flusher left
            // its bytes) is drained by this sender first, or it would wait
            // forever.
            let admitted = self
                .wait_until(|st| {
                    if let Some(broken) = &st.broken {
                        return Some(Err(broken.error()));
                    }
                    if st.queued - st.written >= SEND_QUEUE_LIMIT {
                        return (!st.flushing)
                            .then(|| Ok(Err((st.queued, Flusher::start(self, st)))));
                    }
                    (append.take().expect("admitted once"))(st);
                    let flusher = (!st.flushing).then(|| Flusher::start(self, st));
                    Some(Ok(Ok((st.queued, flusher))))
                })
                .await?;
            match admitted {
                Err((queued, flusher)) => self.write_to(flusher, queued).await?,
                Ok(admitted) => return Ok(admitted),
            }
        }
    }

    /// Returns once `written >= end`: waits for the current flusher, or
    /// becomes the flusher when nobody writes.
    pub(super) async fn flush_to(&self, end: u64) -> Result<(), ChannelError> {
        loop {
            let flusher = self
                .wait_until(|st| {
                    if st.written >= end {
                        Some(Ok(None))
                    } else if let Some(broken) = &st.broken {
                        Some(Err(broken.error()))
                    } else if !st.flushing {
                        Some(Ok(Some(Flusher::start(self, st))))
                    } else {
                        None
                    }
                })
                .await?;
            let Some(flusher) = flusher else {
                return Ok(());
            };
            if flusher.run(end)? == Flushed::Done {
                return Ok(());
            }
            self.wait_for_room_or_written(end).await?;
        }
    }

    /// Writes as the flusher until `written >= end`. When the socket is
    /// full, the role is given up while waiting for room, then taken again
    /// (or left to whoever took it meanwhile).
    ///
    /// The role is never held across an `await`: a send future that is not
    /// polled (the receiver keeps one to write its protocol replies, and a
    /// caller may stop polling the receiver at any time) would otherwise
    /// stop every other sender of the channel until it is polled again.
    async fn write_to(&self, flusher: Flusher<'_>, end: u64) -> Result<(), ChannelError> {
        if flusher.run(end)? == Flushed::Done {
            return Ok(());
        }
        self.wait_for_room_or_written(end).await?;
        self.flush_to(end).await
    }

    /// Waits for room in the socket, or until whoever took the role meanwhile
    /// wrote up to `end`: a flusher writes every queued byte, ours too (the
    /// receiver flushing its replies, another sender). Waiting for room
    /// alone, a send whose line was out already stayed pending until the
    /// peer read again, which a peer waiting for our next message never
    /// does.
    async fn wait_for_room_or_written(&self, end: u64) -> Result<(), ChannelError> {
        // Cancelled while waiting, it finishes the line the socket took
        // part of, if there is room by then and nobody else writes, so the
        // peer is not left with half a message while nobody sends. Only
        // then: run each time the line went out meanwhile, it searched the
        // buffer for the next line's end (a megabyte, for large messages).
        struct FinishLineOnDrop<'a>(&'a Shared);
        impl Drop for FinishLineOnDrop<'_> {
            fn drop(&mut self) {
                let mut st = self.0.lock();
                if !st.flushing && st.broken.is_none() {
                    let mut flusher = Flusher::start(self.0, &mut st);
                    drop(st);
                    flusher.finish_line();
                }
            }
        }
        let rescue = FinishLineOnDrop(self);
        let written =
            self.wait_until(|st| (st.written >= end || st.broken.is_some()).then_some(()));
        let result = tokio::select! {
            biased;
            () = written => Ok(()),
            room = self.wait_for_room() => room,
        };
        std::mem::forget(rescue);
        result
    }

    /// Waits until the socket may take more bytes.
    async fn wait_for_room(&self) -> Result<(), ChannelError> {
        let watch = self.room_watch().map_err(|e| self.broken_by(e))?;
        loop {
            let mut ready = watch.writable().await.map_err(|e| self.broken_by(e))?;
            // The readiness may be from before the write that blocked.
            if sys::writable_now(watch.as_raw_fd()) {
                break;
            }
            ready.clear_ready();
        }
        Ok(())
    }

    /// Waiting for room failed (only when the runtime the channel was made
    /// in is gone): the channel is broken, as after a failed write, so no
    /// later send completes the line this one left half written, and shut
    /// down, so the peer sees the end of the stream rather than waiting for
    /// the rest of that line.
    fn broken_by(&self, e: io::Error) -> ChannelError {
        let err = self
            .lock()
            .broken
            .get_or_insert_with(|| Broken::from_io(&e))
            .error();
        let _ = sys::ipc::shutdown(self.socket.get_ref().as_fd());
        self.notify.notify_waiters();
        err
    }

    /// The watch for room, registered now if it is not: after the write
    /// that blocked, so the registration itself reports room made since.
    fn room_watch(&self) -> io::Result<Arc<AsyncFd<OwnedFd>>> {
        let mut st = self.lock();
        let fd = match std::mem::take(&mut st.room) {
            Room::Watching(watch) => {
                st.room = Room::Watching(watch.clone());
                return Ok(watch);
            }
            Room::Idle(fd) => fd,
            Room::Taken => {
                return Err(io::Error::other(
                    "the channel's watch for room was lost when its registration failed",
                ))
            }
        };
        let _runtime = self.runtime.enter();
        match sys::tokio_fd::register(fd, Interest::WRITABLE) {
            Ok(watch) => {
                let watch = Arc::new(watch);
                st.room = Room::Watching(watch.clone());
                Ok(watch)
            }
            Err((fd, e)) => {
                // Only when the runtime is shutting down: the socket's own
                // registration is gone too.
                if let Some(fd) = fd {
                    st.room = Room::Idle(fd);
                }
                Err(e)
            }
        }
    }

    /// Queues `line` and returns at once, unless `FEED_BATCH` bytes are
    /// pending: then it writes them (or waits for the flusher), so queued
    /// bytes stay bounded by the batch plus one message per feeding task.
    pub(super) async fn feed_line(&self, line: &[u8]) -> Result<(), ChannelError> {
        let (end, pending) = {
            let mut st = self.lock();
            if let Some(broken) = &st.broken {
                return Err(broken.error());
            }
            st.back.extend_from_slice(line);
            st.queued += line.len() as u64;
            (st.queued, st.queued - st.written)
        };
        if pending >= FEED_BATCH {
            self.flush_to(end).await?;
        }
        Ok(())
    }

    /// Waits until `ready` returns `Some`, re-checking after every
    /// notification. `ready` runs under the lock.
    async fn wait_until<R>(&self, mut ready: impl FnMut(&mut WriteState) -> Option<R>) -> R {
        // Most calls find the state ready: checked first without
        // registering, which takes and drops a place in the `Notify`'s
        // list (its lock, twice) on every send. `ready` changes nothing
        // when it returns `None`, so checking again below is sound.
        if let Some(r) = ready(&mut self.lock()) {
            return r;
        }
        loop {
            // Register before checking, so a notification between the check
            // and the await is not lost.
            let mut notified = pin!(self.notify.notified());
            notified.as_mut().enable();
            {
                let mut st = self.lock();
                if let Some(r) = ready(&mut st) {
                    return r;
                }
                st.waiters += 1;
            }
            let _waiting = Waiting(self);
            notified.await;
        }
    }

    /// Queues a protocol reply without waiting for room, and writes it now
    /// if nobody is writing (without blocking: `recv` must not wait for the
    /// peer to read). What does not fit goes out with the next send.
    ///
    /// Returns whether the reply is not all written yet: the reader then
    /// keeps writing the replies ([`flush_replies`](Self::flush_replies);
    /// a peer waits for the reply, and may send nothing until it comes),
    /// and stops reading while more than [`SEND_QUEUE_LIMIT`] bytes of
    /// replies are unwritten, so a peer that floods requests without
    /// reading the replies cannot grow the queue without bound.
    pub(super) fn push_control(&self, line: &[u8]) -> bool {
        self.queue_control(self.lock(), line)
    }

    /// [`push_control`](Self::push_control) under a lock already held.
    fn queue_control<'a>(&'a self, mut st: MutexGuard<'a, WriteState>, line: &[u8]) -> bool {
        if st.broken.is_some() {
            return false;
        }
        st.push_reply(line);
        let end = st.queued;
        if !st.flushing {
            let mut flusher = Flusher::start(self, &mut st);
            drop(st);
            flusher.write_nonblocking(usize::MAX);
            drop(flusher); // its destructor takes the lock
            st = self.lock();
        }
        st.written < end
    }

    /// A handle we sent was received: forget our copy.
    ///
    /// (Acknowledgements come in the order the handles were sent: the
    /// receiver answers each `NODE_HANDLE` line as it reads it.)
    pub(super) fn acknowledged(&self) {
        self.lock().unacked.pop_front();
    }

    /// A handle we sent was refused (`NODE_HANDLE_NACK`: its fd did not
    /// arrive): send it again, up to three times, as Node does.
    pub(super) fn refused(&self) -> Refused {
        let mut st = self.lock();
        let Some(mut entry) = st.unacked.pop_front() else {
            return Refused::Unknown;
        };
        if st.broken.is_some() {
            return Refused::Unknown;
        }
        if entry.tries >= 3 {
            return Refused::GaveUp;
        }
        entry.tries += 1;
        // The fd's offset and its line are queued under one lock: another
        // sender appending in between would take the fd.
        let at = fd_offset(st.queued, &entry.line);
        st.fds.push_back((at, entry.fd.clone()));
        let line = entry.line.clone();
        st.unacked.push_back(entry);
        Refused::SentAgain(self.queue_control(st, &line))
    }

    /// Writes until every protocol reply is out, those queued meanwhile
    /// too: where the last one ends is read again after each round.
    pub(super) async fn flush_replies(&self) -> Result<(), ChannelError> {
        loop {
            let end = {
                let st = self.lock();
                match st.control.back() {
                    Some(&(_, end)) if end > st.written => end,
                    _ => return Ok(()),
                }
            };
            self.flush_to(end).await?;
        }
    }

    /// Bytes of protocol replies queued and not yet written.
    pub(super) fn replies_unwritten(&self) -> u64 {
        self.lock().replies_unwritten()
    }

    /// Disconnects: fails every pending and later send, and shuts the
    /// socket down so the peer sees EOF even while clones keep it open.
    pub(super) fn close(&self) {
        // What `feed` queued goes out first, if the socket takes it without
        // blocking (destructors and `disconnect` cannot wait).
        let mut st = self.lock();
        if st.broken.is_none() && !st.flushing && st.queued > st.written {
            let mut flusher = Flusher::start(self, &mut st);
            drop(st);
            flusher.write_nonblocking(usize::MAX);
            drop(flusher);
            st = self.lock();
        }
        st.broken.get_or_insert(Broken::Closed);
        drop(st);
        // ENOTCONN when the peer is already gone: nothing left to close.
        let _ = sys::ipc::shutdown(self.socket.get_ref().as_fd());
        self.notify.notify_waiters();
    }

    /// Sends the start of `bytes`, which begin at stream offset `written`,
    /// with the fd attached when one is due there: an fd goes alone with
    /// the byte at its offset (see [`fd_offset`]), and a send never runs
    /// past the offset of the next fd. Never waits.
    fn send_next(&self, bytes: &[u8]) -> io::Result<usize> {
        let (fd, limit) = {
            let mut st = self.lock();
            let written = st.written;
            match st.fds.front().map(|(at, _)| *at) {
                // The `\n` alone: see `fd_offset`.
                Some(at) if at == written => {
                    let (_, fd) = st.fds.pop_front().expect("just seen");
                    (Some(fd), 1.min(bytes.len()))
                }
                Some(at) if at < written + bytes.len() as u64 => (None, (at - written) as usize),
                _ => (None, bytes.len()),
            }
        };
        let bytes = &bytes[..limit];
        let sent = match &fd {
            Some(fd) => sys::ipc::send_with_fd(self.socket.get_ref().as_fd(), bytes, fd.as_fd()),
            None => self.send_now(bytes),
        };
        if let (Err(_), Some(fd)) = (&sent, fd) {
            // Not sent: it goes with the next attempt at this offset.
            let mut st = self.lock();
            let written = st.written;
            st.fds.push_front((written, fd));
        }
        sent
    }

    /// Queues `line` with `fd` attached to its last byte, and returns once
    /// it is written (the fd is then in the peer's socket). The same `fd`
    /// is kept until the peer acknowledges it: shared, not duplicated (a
    /// cluster primary sends one per connection).
    pub(super) async fn send_line_with_fd(
        &self,
        line: Vec<u8>,
        fd: Arc<OwnedFd>,
    ) -> Result<(), ChannelError> {
        // Through the queue's bound, as any send (it was not, and a
        // handle flood grew the queue with the concurrency). The fd's
        // offset and its line are queued under one lock.
        let (end, flusher) = self
            .admit(|st| {
                let at = fd_offset(st.queued, &line);
                st.fds.push_back((at, fd.clone()));
                st.back.extend_from_slice(&line);
                st.queued += line.len() as u64;
                st.unacked.push_back(Unacked { line, fd, tries: 0 });
            })
            .await?;
        match flusher {
            Some(flusher) => self.write_to(flusher, end).await,
            None => self.flush_to(end).await,
        }
    }

    /// One non-blocking `send(2)`.
    ///
    /// `MSG_NOSIGNAL`: a closed peer gives EPIPE, never a SIGPIPE that would
    /// kill a process that does not ignore it.
    fn send_now(&self, bytes: &[u8]) -> io::Result<usize> {
        sys::ipc::send_nosignal(self.socket.get_ref().as_fd(), bytes)
    }
}

impl Drop for Shared {
    /// The last handle is gone: what `feed` left queued is written if the
    /// socket takes it without blocking, as `disconnect` does.
    fn drop(&mut self) {
        self.close();
    }
}

impl WriteState {
    /// A flusher run wrote all it had to without finding the socket full:
    /// after [`ROOM_IDLE_RUNS`] such runs in a row, the watch for room is
    /// unregistered (unless a writer still waits on it).
    fn room_went_unused(&mut self) {
        if !matches!(self.room, Room::Watching(_)) {
            return;
        }
        self.room_idle += 1;
        if self.room_idle < ROOM_IDLE_RUNS {
            return;
        }
        self.room_idle = 0;
        if let Room::Watching(watch) = std::mem::take(&mut self.room) {
            self.room = match Arc::try_unwrap(watch) {
                Ok(watch) => Room::Idle(watch.into_inner()),
                Err(watch) => Room::Watching(watch),
            };
        }
    }

    /// Queues a protocol reply at the end of the stream.
    fn push_reply(&mut self, line: &[u8]) {
        // Forget the ranges written already: nothing else may, when every
        // reply goes out at once and `recv` never asks how many wait.
        self.prune_replies();
        let start = self.queued;
        self.back.extend_from_slice(line);
        self.queued += line.len() as u64;
        match self.control.back_mut() {
            Some(last) if last.1 == start => last.1 = self.queued,
            _ => self.control.push_back((start, self.queued)),
        }
        self.control_len += line.len() as u64;
    }

    /// Bytes of protocol replies queued and not yet written.
    fn replies_unwritten(&mut self) -> u64 {
        self.prune_replies();
        match self.control.front() {
            Some(&(start, _)) => self.control_len - self.written.saturating_sub(start),
            None => 0,
        }
    }

    /// Drops the reply ranges written in full.
    fn prune_replies(&mut self) {
        while let Some(&(start, end)) = self.control.front() {
            if end > self.written {
                return;
            }
            self.control.pop_front();
            self.control_len -= end - start;
        }
    }
}

#[cfg(test)]
impl WriteState {
    /// The fd of the watch for room.
    pub(super) fn room_fd(&self) -> i32 {
        match &self.room {
            Room::Idle(fd) => fd.as_raw_fd(),
            Room::Watching(watch) => watch.as_raw_fd(),
            Room::Taken => unreachable!(),
        }
    }

    /// Bytes queued and not yet written.
    pub(super) fn unwritten(&self) -> u64 {
        self.queued - self.written
    }

    /// Reply ranges kept.
    pub(super) fn reply_ranges(&self) -> usize {
        self.control.len()
    }

    /// Handles sent and not yet acknowledged.
    pub(super) fn unacked_len(&self) -> usize {
        self.unacked.len()
    }

    /// Tasks counted as waiting, and whether a flusher holds the role.
    pub(super) fn waiting_and_flushing(&self) -> (usize, bool) {
        (self.waiters, self.flushing)
    }
}

/// Counts a task waiting on `notify` until it stops waiting, by wakeup or
/// by cancellation.
struct Waiting<'a>(&'a Shared);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.lock().waiters -= 1;
    }
}

/// The flusher role and its buffer, held only while writing without
/// blocking. Dropping it puts the unwritten rest back and releases the role.
struct Flusher<'a> {
    shared: &'a Shared,
    buf: Vec<u8>,
    pos: usize,
}

/// How [`Flusher::run`] ended.
#[derive(Debug, PartialEq, Eq)]
enum Flushed {
    /// The bytes up to the requested offset are written.
    Done,
    /// The socket is full: wait for room, then try again.
    Full,
}

impl<'a> Flusher<'a> {
    fn start(shared: &'a Shared, st: &mut WriteState) -> Flusher<'a> {
        st.flushing = true;
        let pos = std::mem::take(&mut st.front_pos);
        Flusher {
            shared,
            buf: std::mem::take(&mut st.front),
            pos,
        }
    }

    /// Writes without blocking until `written >= end` (`Done`) or the
    /// socket is full (`Full`); either way the role is released on return.
    fn run(mut self, end: u64) -> Result<Flushed, ChannelError> {
        loop {
            if self.pos == self.buf.len() {
                let mut st = self.shared.lock();
                // Done once our own bytes are out: what others queued after
                // them is theirs to write (a waiting sender takes over when
                // `self` drops; `feed`'s bytes wait for the next flush), so
                // a peer that stops reading cannot hold a finished `send`.
                if st.back.is_empty() || st.written >= end {
                    st.room_went_unused();
                    drop(st); // before `self`, whose drop locks again
                    return Ok(Flushed::Done);
                }
                self.buf.clear();
                if self.buf.capacity() > KEEP_CAPACITY {
                    self.buf = Vec::new();
                }
                std::mem::swap(&mut self.buf, &mut st.back);
                self.pos = 0;
            }
            match self.shared.send_next(&self.buf[self.pos..]) {
                Ok(n) => {
                    self.pos += n;
                    let mut st = self.shared.lock();
                    st.written += n as u64;
                    if st.written >= end {
                        st.room_went_unused();
                        // Hand over: dropping `self` wakes the waiters.
                        drop(st);
                        return Ok(Flushed::Done);
                    }
                    if st.waiters > 0 {
                        drop(st);
                        self.shared.notify.notify_waiters();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.shared.lock().room_idle = 0;
                    return Ok(Flushed::Full);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let mut st = self.shared.lock();
                    let err = st.broken.get_or_insert(Broken::from_io(&e)).error();
                    drop(st); // before `self`, whose drop locks again
                    return Err(err);
                }
            }
        }
    }

    /// When the socket took only part of a line, tries once more, without
    /// blocking, to write the rest of that line.
    fn finish_line(&mut self) {
        if self.pos > 0 && self.buf.get(self.pos - 1).is_some_and(|&b| b != b'\n') {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[self.pos..]) {
                self.write_nonblocking(self.pos + i + 1);
            }
        }
    }

    /// Writes without ever blocking, at most up to `buf[limit]`, stopping at
    /// the first error. Used where we cannot await.
    fn write_nonblocking(&mut self, limit: usize) {
        loop {
            if self.pos == self.buf.len() {
                let mut st = self.shared.lock();
                if st.back.is_empty() || limit != usize::MAX {
                    return;
                }
                self.buf.clear();
                std::mem::swap(&mut self.buf, &mut st.back);
                self.pos = 0;
            }
            let stop = limit.min(self.buf.len());
            match self.shared.send_next(&self.buf[self.pos..stop]) {
                Ok(n) => {
                    self.pos += n;
                    self.shared.lock().written += n as u64;
                    if self.pos == stop && limit != usize::MAX {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if e.kind() != io::ErrorKind::WouldBlock {
                        self.shared.lock().broken.get_or_insert(Broken::from_io(&e));
                    }
                    return;
                }
            }
        }
    }
}

impl Drop for Flusher<'_> {
    /// Puts the unwritten rest back for the next flusher and releases the
    /// role, waking whoever waits for it.
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.front = std::mem::take(&mut self.buf);
        st.front_pos = self.pos;
        self.shared.release(st);
    }
}

/// The stream offset an fd goes with: the `\n` that ends its `NODE_HANDLE`
/// line, for a line queued at `at`.
///
/// Not the line's first byte, as libuv sends it (with the first `sendmsg` of
/// the write request): a Linux reader's `recvmsg` returns the fds of a
/// segment together with that segment's first byte, and stops right after
/// it. With the fd on the first byte, a long line's fd came in one read and
/// its end in a later one, and a Node reader (v12 and later keep one
/// `pendingHandle` across reads, and overwrite it) that got the next line's
/// fd in the read completing this line gave this line the wrong handle and
/// refused the next one. Node's own sender avoids that by holding every
/// later message until the ACK (`_handleQueue`); we need no wait: with the
/// fd on the `\n`, the read that brings an fd always completes its line, so
/// every Node version (older ones take the fd of the same read only) and
/// our own reader pair them right.
///
/// The `\n` goes alone in its `sendmsg`, so that read also ends there:
/// Node delivers a handle's message a tick after the read that completes
/// it (`handleConversion[type].got`), and plain messages from the rest of
/// the same read overtook it (an outside attack saw `[1, 2, 0]` for `0`
/// with a socket, then `1` and `2`). One more `sendmsg` per handle, where
/// Node's sender waits for a round trip (the ACK) before its next message.
pub(super) fn fd_offset(at: u64, line: &[u8]) -> u64 {
    debug_assert_eq!(line.last(), Some(&b'\n'));
    at + line.len() as u64 - 1
}

/// What became of a handle the peer refused.
pub(super) enum Refused {
    /// No handle of ours was waiting for an answer (or the channel broke).
    Unknown,
    /// Queued again; `true` while not all written.
    SentAgain(bool),
    /// Refused four times: the message is not delivered.
    GaveUp,
}
