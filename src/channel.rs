//! The IPC channel between a parent and a forked child: Node's `json`
//! serialization over a Unix stream socket.
//!
//! # Wire format
//!
//! One JSON text per message, followed by `\n`, exactly what Node writes
//! (`lib/internal/child_process/serialization.js`, `json.writeChannelMessage`:
//! `JSONStringify(message) + '\n'`). JSON never contains a raw newline, so
//! `\n` is an unambiguous terminator. Objects whose `cmd` is a string longer
//! than 5 characters starting with `NODE_` belong to the protocol
//! (`lib/internal/child_process.js isInternal`) and are never delivered.
//!
//! # Writer
//!
//! All senders of a channel (the [`Channel`] and every clone of its
//! [`ChannelSender`]) share one [`WriteState`] behind a `std` mutex, plus a
//! [`Notify`]. A sender serializes its message (outside the lock), appends
//! the bytes to the `back` buffer and remembers the stream offset `end` at
//! which its message ends. If nobody is writing, it becomes the *flusher*: it
//! swaps `back` into its own `front` buffer and writes it with non-blocking
//! `send(2)` (`MSG_NOSIGNAL`) calls, awaiting writability when the socket is
//! full. Meanwhile other senders keep appending to `back`; when the flusher
//! has written `front` it swaps again, so everything queued during one write
//! goes out in the next single `send` (coalescing). A sender that is not the
//! flusher waits until `written >= end`. The flusher returns once its own
//! message is written; if other senders are waiting it hands the role over
//! (one of them takes it when woken), otherwise it writes what is left.
//!
//! The queue is bounded: a sender may append only while fewer than
//! [`SEND_QUEUE_LIMIT`] bytes are queued but unwritten, so a peer that stops
//! reading makes `send` wait instead of growing memory. The check is "below
//! the limit", not "fits under the limit", so one message larger than the
//! limit still goes through (memory stays below the limit plus one message).
//!
//! Cancellation: the flusher keeps its buffer in a guard whose `Drop` puts
//! the unwritten rest back into the shared state (and first tries, without
//! blocking, to finish the line it was in the middle of). The next flusher
//! writes that rest before anything else, so a message is never interleaved
//! with another one. A dropped waiter leaves its bytes queued; they go out
//! with the next message anyone sends.
//!
//! # Reader
//!
//! One buffer, read into at least 64 KiB at a time (it grows for long
//! lines), split on `\n` with `memchr`, each line parsed in place. Lines
//! longer than the limit are dropped as they stream in, without being
//! buffered whole.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};

use memchr::memmem;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sys::socket::{send, shutdown, MsgFlags, Shutdown};
use serde::de::{self, DeserializeOwned, IgnoredAny};
use serde::Serialize;
use tokio::io::Interest;
use tokio::net::UnixStream;
use tokio::sync::Notify;

use crate::error::{ChannelError, Result};
use crate::sys::ipc;

/// The default limit on the length of one received message: 128 MiB.
///
/// Node has no limit of its own short of V8's maximum string length
/// (536,870,888 UTF-16 units on 64-bit v20); 128 MiB keeps a runaway peer
/// from exhausting memory while allowing any message a sane program sends.
const DEFAULT_MAX_MESSAGE_LEN: usize = 128 * 1024 * 1024;

/// How many bytes may be queued but not yet written before `send` waits.
const SEND_QUEUE_LIMIT: u64 = 1024 * 1024;

/// `feed` writes once this many bytes are queued: one `send(2)` then
/// carries thousands of small messages.
const FEED_BATCH: u64 = 64 * 1024;

/// Reads ask for at least this much (libuv reads 64 KiB at a time).
const READ_CHUNK: usize = 64 * 1024;

/// Buffers that grew past this for one big message are released afterwards.
const KEEP_CAPACITY: usize = 4 * 1024 * 1024;

/// What we answer a `NODE_HANDLE` with: we cannot receive fds, and without
/// an answer a Node sender queues every later message forever
/// (`lib/internal/child_process.js setupChannel`, `_handleQueue`).
const HANDLE_NACK: &[u8] = b"{\"cmd\":\"NODE_HANDLE_NACK\"}\n";

/// A two-way channel of JSON messages with the parent or a forked child,
/// compatible with Node's `process.send()` and `'message'` events.
///
/// A child gets its end from [`Channel::from_parent`]; a parent gets the
/// other end from a forked child. [`send`](Channel::send) writes a message,
/// [`recv`](Channel::recv) reads the next one, and [`split`](Channel::split)
/// separates the two directions so that several tasks can send while one
/// receives.
///
/// Messages are any `serde` types; [`serde_json::Value`] accepts everything
/// Node sends (any JSON value: objects, arrays, strings, numbers, booleans,
/// `null`).
///
/// # Examples
///
/// A worker that answers every job, run by `child_process::fork` or by Node's
/// `child_process.fork()`:
///
/// ```no_run
/// use child_process as cp;
/// use serde_json::{json, Value};
///
/// #[tokio::main]
/// async fn main() -> cp::Result<()> {
///     let mut parent = cp::Channel::from_parent()?.expect("started by fork");
///     while let Some(job) = parent.recv::<Value>().await? {
///         parent.send(&json!({ "done": job })).await?;
///     }
///     Ok(())
/// }
/// ```
pub struct Channel {
    sender: ChannelSender,
    receiver: ChannelReceiver,
}

impl Channel {
    /// Opens the channel to the parent, in a child started by `fork` (ours
    /// or Node's) or by any spawn with an `ipc` stdio slot.
    ///
    /// The parent names the channel's fd in `NODE_CHANNEL_FD` (fd 3 for
    /// `fork`) and the format in `NODE_CHANNEL_SERIALIZATION_MODE`. This
    /// takes ownership of that fd, makes it non-blocking and close-on-exec,
    /// and removes both variables from the environment so that this
    /// process's own children do not believe the channel is theirs (as Node
    /// does in `lib/internal/process/pre_execution.js
    /// setupChildProcessIpcChannel`). A second call therefore returns
    /// `Ok(None)`. Call it early, before other threads read the environment.
    ///
    /// Returns `Ok(None)` when `NODE_CHANNEL_FD` is absent or empty: the
    /// process was not started with a channel.
    ///
    /// Like Node, it trusts the variable: the fd must be an open socket, but
    /// a process that inherited `NODE_CHANNEL_FD` from a parent that did not
    /// pass that fd, and opened a socket of its own at the same number,
    /// would give that socket away. Remove the variable in such a parent.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use child_process as cp;
    ///
    /// # async fn run() -> cp::Result<()> {
    /// match cp::Channel::from_parent()? {
    ///     Some(parent) => parent.send(&"ready").await?,
    ///     None => eprintln!("not started by fork; running standalone"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ChannelError::Setup`], leaving the fd and the environment untouched,
    /// when:
    /// - `NODE_CHANNEL_FD` is not a non-negative decimal number;
    /// - the fd is not open, or is not a stream socket;
    /// - `NODE_CHANNEL_SERIALIZATION_MODE` is set to something other than
    ///   `json` (Node's `advanced` mode, V8's serialization format, is not
    ///   supported);
    /// - there is no tokio runtime.
    ///
    /// # Panics
    ///
    /// If the current tokio runtime was built without I/O enabled
    /// (`enable_io`), as tokio's own sockets do.
    pub fn from_parent() -> Result<Option<Channel>> {
        let fd = ipc::take_inherited_channel(|value, inherited| {
            let raw = parse_fd(value)?;
            match inherited.mode.as_ref().map(|m| m.to_str()) {
                None | Some(Some("" | "json")) => {}
                Some(mode) => {
                    return Err(format!(
                    "{}={} is not supported: this crate speaks only Node's `json` serialization \
                         (start the child with `serialization: 'json'`, Node's default)",
                    ipc::SERIALIZATION_VAR,
                    mode.unwrap_or("<not UTF-8>"),
                ))
                }
            }
            tokio::runtime::Handle::try_current().map_err(|_| no_runtime())?;
            Ok(raw)
        })
        .map_err(|reason| ChannelError::Setup { reason })?;
        match fd {
            Some(fd) => Channel::from_fd(fd).map(Some),
            None => Ok(None),
        }
    }

    /// Wraps our end of a connected `AF_UNIX`/`SOCK_STREAM` socket.
    ///
    /// Used by `fork` for the parent's end of the socketpair. The fd is made
    /// non-blocking and close-on-exec here, whatever it was before.
    pub(crate) fn from_fd(fd: OwnedFd) -> Result<Channel> {
        tokio::runtime::Handle::try_current().map_err(|_| ChannelError::Setup {
            reason: no_runtime(),
        })?;
        let flags = fcntl(&fd, FcntlArg::F_GETFL).map_err(io_error)?;
        let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
        fcntl(&fd, FcntlArg::F_SETFL(flags)).map_err(io_error)?;
        fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(io_error)?;
        let socket = UnixStream::from_std(std::os::unix::net::UnixStream::from(fd))
            .map_err(ChannelError::Io)?;
        let shared = Arc::new(Shared {
            socket,
            state: Mutex::new(WriteState::default()),
            notify: Notify::new(),
        });
        Ok(Channel {
            sender: ChannelSender {
                shared: shared.clone(),
            },
            receiver: ChannelReceiver::new(shared),
        })
    }

    /// Sends one message: its JSON text and a `\n`.
    ///
    /// When the future resolves `Ok`, the message is in the socket: a
    /// process may exit right after and the peer still gets it. Concurrent
    /// sends are written together (one `send(2)` for everything queued
    /// meanwhile) and never interleave. If more than 1 MiB is queued because
    /// the peer is not reading, `send` waits for it to catch up.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(channel: child_process::Channel) -> child_process::Result<()> {
    /// channel.send(&serde_json::json!({ "progress": 0.5 })).await?;
    /// channel.send("plain strings and numbers are messages too").await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// - [`ChannelError::Encode`] if `msg` cannot be serialized as JSON
    ///   (nothing is sent);
    /// - [`ChannelError::Closed`] after [`disconnect`](Channel::disconnect),
    ///   or once the peer closed its end or exited;
    /// - [`ChannelError::Io`] for any other socket error. The channel is
    ///   then broken and every later `send` fails the same way.
    ///
    /// # Cancellation
    ///
    /// Dropping the future never puts half a message between two others. A
    /// message dropped before it was written may still go out, ahead of the
    /// next message sent on this channel; one dropped while being written is
    /// completed first thing by the next send.
    pub async fn send<T: Serialize + ?Sized>(&self, msg: &T) -> Result<()> {
        self.sender.send(msg).await
    }

    /// Queue a message without waiting for the write; see
    /// [`ChannelSender::feed`]. Follow the last `feed` with
    /// [`flush`](Channel::flush).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(channel: child_process::Channel) -> child_process::Result<()> {
    /// for i in 0..1000 {
    ///     channel.feed(&serde_json::json!({ "i": i })).await?;
    /// }
    /// channel.flush().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Channel::send`].
    ///
    /// # Cancellation
    ///
    /// As [`ChannelSender::feed`].
    pub async fn feed<T: Serialize + ?Sized>(&self, msg: &T) -> Result<()> {
        self.sender.feed(msg).await
    }

    /// Wait until everything queued so far is in the socket; see
    /// [`ChannelSender::flush`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(channel: child_process::Channel) -> child_process::Result<()> {
    /// channel.feed(&"last").await?;
    /// channel.flush().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`ChannelSender::flush`].
    ///
    /// # Cancellation
    ///
    /// Cancel safe.
    pub async fn flush(&self) -> Result<()> {
        self.sender.flush().await
    }

    /// Receives the next message, or `None` once the peer has closed the
    /// channel and everything it sent before has been delivered.
    ///
    /// Each message is decoded as `T`; [`serde_json::Value`] accepts any.
    /// Blank lines are skipped (Node itself would die on one: `JSON.parse('')`
    /// throws in `channel.onread`). Protocol messages (`{"cmd":"NODE_..."}`)
    /// are handled, not returned; a `NODE_HANDLE` (Node passing a socket or
    /// server, which this crate does not support) is answered with
    /// `NODE_HANDLE_NACK` so the Node sender carries on.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(mut channel: child_process::Channel) -> child_process::Result<()> {
    /// #[derive(serde::Deserialize)]
    /// struct Job { id: u64 }
    ///
    /// while let Some(job) = channel.recv::<Job>().await? {
    ///     println!("job {}", job.id);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// These fail for one message only; the next `recv` returns the next
    /// message:
    /// - [`ChannelError::Decode`]: the line is not JSON, not UTF-8, not a
    ///   `T`, or the peer closed in the middle of it;
    /// - [`ChannelError::TooLong`]: the line is longer than
    ///   [`max_message_len`](Channel::max_message_len) bytes.
    ///
    /// [`ChannelError::Io`] if reading the socket fails.
    ///
    /// # Cancellation
    ///
    /// Cancel safe: if the future is dropped before it resolves, no message
    /// is lost; the next `recv` returns it.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>> {
        self.receiver.recv().await
    }

    /// The longest message [`recv`](Channel::recv) accepts, in bytes
    /// (without the `\n`): 128 MiB unless changed.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn run(channel: &child_process::Channel) {
    /// assert_eq!(channel.max_message_len(), 128 * 1024 * 1024);
    /// # }
    /// ```
    pub fn max_message_len(&self) -> usize {
        self.receiver.max_message_len()
    }

    /// Sets the longest message [`recv`](Channel::recv) accepts, in bytes.
    ///
    /// A longer line is skipped as it arrives, without being buffered
    /// whole, and `recv` reports it as [`ChannelError::TooLong`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn run(channel: &mut child_process::Channel) {
    /// channel.set_max_message_len(1024 * 1024);
    /// # }
    /// ```
    pub fn set_max_message_len(&mut self, limit: usize) -> &mut Self {
        self.receiver.set_max_message_len(limit);
        self
    }

    /// Closes the channel: the peer sees the end of the stream, as after
    /// Node's `disconnect()`.
    ///
    /// Every message whose `send` returned `Ok` is already in the socket and
    /// reaches the peer. Sends still in progress on clones of a
    /// [`ChannelSender`] fail with [`ChannelError::Closed`]. Nothing is
    /// written: like Node, a disconnect is the end of the stream, not a
    /// message.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(channel: child_process::Channel) -> child_process::Result<()> {
    /// channel.send(&"last words").await?;
    /// channel.disconnect();
    /// # Ok(())
    /// # }
    /// ```
    pub fn disconnect(self) {
        self.sender.disconnect();
    }

    /// Splits the channel into a sender, which can be cloned and used from
    /// several tasks, and a receiver.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(channel: child_process::Channel) -> child_process::Result<()> {
    /// let (tx, mut rx) = channel.split();
    /// let ticker = tokio::spawn(async move {
    ///     for i in 0..10 {
    ///         tx.send(&serde_json::json!({ "tick": i })).await?;
    ///     }
    ///     Ok::<_, child_process::Error>(())
    /// });
    /// while let Some(msg) = rx.recv::<serde_json::Value>().await? {
    ///     println!("{msg}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn split(self) -> (ChannelSender, ChannelReceiver) {
        (self.sender, self.receiver)
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("fd", &self.sender.shared.socket.as_raw_fd())
            .field("sender", &self.sender)
            .field("receiver", &self.receiver)
            .finish()
    }
}

/// The sending half of a [`Channel`], from [`Channel::split`].
///
/// Clones share one queue: messages sent concurrently from several clones
/// are written whole, in the order their `send` calls queued them, and
/// coalesced into few `send(2)` calls.
///
/// # Examples
///
/// ```no_run
/// # async fn run(channel: child_process::Channel) -> child_process::Result<()> {
/// let (tx, _rx) = channel.split();
/// let tx2 = tx.clone();
/// tokio::try_join!(tx.send(&1), tx2.send(&2))?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ChannelSender {
    shared: Arc<Shared>,
}

impl ChannelSender {
    /// Sends one message; see [`Channel::send`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(tx: child_process::ChannelSender) -> child_process::Result<()> {
    /// tx.send(&serde_json::json!({ "status": "ok" })).await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Channel::send`]: [`ChannelError::Encode`],
    /// [`ChannelError::Closed`], [`ChannelError::Io`].
    ///
    /// # Cancellation
    ///
    /// As [`Channel::send`]: a message never goes out interleaved with
    /// another one.
    pub async fn send<T: Serialize + ?Sized>(&self, msg: &T) -> Result<()> {
        let line = encode_line(msg)?;
        self.shared.send_line(&line).await.map_err(Into::into)
    }

    /// Queue one message without waiting for it to reach the socket: Node's
    /// `process.send` semantics, for throughput. Queued messages go out
    /// together in large writes: once 64 KiB are pending (this call then
    /// waits for them to be written, which also bounds memory), with the
    /// next [`send`](ChannelSender::send), or with [`flush`](ChannelSender::flush).
    ///
    /// Call `flush` after the last `feed`: a message still queued when the
    /// channel is dropped or disconnected is written only if the socket
    /// takes it without blocking.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(tx: child_process::ChannelSender) -> child_process::Result<()> {
    /// for i in 0..1_000_000 {
    ///     tx.feed(&i).await?;
    /// }
    /// tx.flush().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Channel::send`].
    ///
    /// # Cancellation
    ///
    /// The message is queued before the first await: a cancelled `feed`
    /// still goes out with the next write.
    pub async fn feed<T: Serialize + ?Sized>(&self, msg: &T) -> Result<()> {
        let line = encode_line(msg)?;
        self.shared.feed_line(&line).await.map_err(Into::into)
    }

    /// Wait until every message queued so far (by `feed` or `send`, on any
    /// clone) is written to the socket.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(tx: child_process::ChannelSender) -> child_process::Result<()> {
    /// tx.feed(&"a").await?;
    /// tx.flush().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ChannelError::Closed`] or [`ChannelError::Io`] if the channel broke
    /// before everything was written.
    ///
    /// # Cancellation
    ///
    /// Cancel safe: the queued messages stay queued.
    pub async fn flush(&self) -> Result<()> {
        let end = self.shared.lock().queued;
        self.shared.flush_to(end).await.map_err(Into::into)
    }

    /// Closes the whole channel, both directions, for every clone and for
    /// the receiver; see [`Channel::disconnect`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(tx: child_process::ChannelSender) -> child_process::Result<()> {
    /// tx.send(&"bye").await?;
    /// tx.disconnect();
    /// assert!(tx.send(&"too late").await.is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn disconnect(&self) {
        self.shared.close();
    }
}

impl fmt::Debug for ChannelSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("ChannelSender")
            .field("fd", &self.shared.socket.as_raw_fd())
            .field("unwritten", &(st.queued - st.written))
            .field("broken", &st.broken)
            .finish()
    }
}

/// The receiving half of a [`Channel`], from [`Channel::split`].
///
/// Besides [`recv`](ChannelReceiver::recv) it is a
/// [`Stream`](futures_core::Stream) of [`serde_json::Value`] messages that
/// ends when the peer closes the channel.
///
/// # Examples
///
/// ```no_run
/// use futures::StreamExt;
///
/// # async fn run(channel: child_process::Channel) -> child_process::Result<()> {
/// let (_tx, rx) = channel.split();
/// let mut first_three = rx.take(3);
/// while let Some(msg) = first_three.next().await {
///     println!("{}", msg?);
/// }
/// # Ok(())
/// # }
/// ```
pub struct ChannelReceiver {
    shared: Arc<Shared>,
    framer: Framer,
}

impl ChannelReceiver {
    fn new(shared: Arc<Shared>) -> ChannelReceiver {
        ChannelReceiver {
            shared,
            framer: Framer::new(DEFAULT_MAX_MESSAGE_LEN),
        }
    }

    /// Receives the next message; see [`Channel::recv`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(mut rx: child_process::ChannelReceiver) -> child_process::Result<()> {
    /// while let Some(msg) = rx.recv::<serde_json::Value>().await? {
    ///     println!("{msg}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Channel::recv`]: [`ChannelError::Decode`] and
    /// [`ChannelError::TooLong`] for one message only, [`ChannelError::Io`].
    ///
    /// # Cancellation
    ///
    /// Cancel safe: no message is lost if the future is dropped.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>> {
        match poll_fn(|cx| self.poll_message(cx)).await? {
            Some((start, end)) => Ok(Some(decode(&self.framer.buf[start..end])?)),
            None => Ok(None),
        }
    }

    /// The longest message accepted, in bytes; see
    /// [`Channel::max_message_len`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn run(rx: &child_process::ChannelReceiver) {
    /// println!("messages up to {} bytes", rx.max_message_len());
    /// # }
    /// ```
    pub fn max_message_len(&self) -> usize {
        self.framer.max_len
    }

    /// Sets the longest message accepted; see
    /// [`Channel::set_max_message_len`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn run(rx: &mut child_process::ChannelReceiver) {
    /// rx.set_max_message_len(64 * 1024);
    /// # }
    /// ```
    pub fn set_max_message_len(&mut self, limit: usize) -> &mut Self {
        self.framer.max_len = limit;
        self
    }

    /// The next message for the user, as a range of the framer's buffer:
    /// blank lines and protocol messages are dealt with here.
    fn poll_message(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<(usize, usize)>, ChannelError>> {
        loop {
            let step = match self.framer.next_message() {
                Step::NeedMore => {
                    ready!(self.poll_fill(cx))?;
                    continue;
                }
                step => step,
            };
            return Poll::Ready(match step {
                Step::Message(start, end) => Ok(Some((start, end))),
                Step::Internal(cmd) => {
                    if cmd == "NODE_HANDLE" {
                        self.shared.push_control(HANDLE_NACK);
                    }
                    continue;
                }
                Step::Error(e) => Err(e),
                Step::End => Ok(None),
                Step::NeedMore => unreachable!("handled above"),
            });
        }
    }

    /// One read from the socket into the framer.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ChannelError>> {
        ready!(self.shared.socket.poll_read_ready(cx)).map_err(ChannelError::Io)?;
        match self.shared.socket.try_read(self.framer.spare()) {
            Ok(0) => self.framer.set_eof(),
            Ok(n) => self.framer.filled(n),
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted => {}
            // A peer that closes with unread data in its receive buffer
            // makes Linux report ECONNRESET after the data it sent: that
            // is the end of the stream too (Node treats it the same).
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => self.framer.set_eof(),
            Err(e) => return Poll::Ready(Err(ChannelError::Io(e))),
        }
        Poll::Ready(Ok(()))
    }
}

/// The fuzz harness's entry point (`fuzz/fuzz_targets/framing.rs`); not part
/// of the API. Feeds `data` to a [`Framer`] in the chunks `cuts` marks, and
/// checks, with panics the fuzzer catches, that:
/// - the framer never holds more than about twice `max_len` plus two read
///   chunks, whatever the input (no unbounded memory);
/// - what it yields equals a naive model: split the whole input on `\n`,
///   skip blank and `NODE_` lines, one `TooLong` per over-long line, one
///   error for a non-blank fragment cut off by the end of the stream.
#[doc(hidden)]
pub fn fuzz_framing(data: &[u8], cuts: &[usize], max_len: usize) {
    #[derive(Debug, PartialEq)]
    enum Out {
        Message(Vec<u8>),
        Internal(String),
        TooLong,
        Cut,
    }
    let bound = 2 * (max_len + 2 * READ_CHUNK) + READ_CHUNK;
    let mut framer = Framer::new(max_len);
    let mut got = Vec::new();
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(data.len())).collect();
    cuts.sort_unstable();
    cuts.push(data.len());
    let mut chunks = cuts.into_iter().scan(0, |at, cut| {
        let chunk = &data[*at..cut];
        *at = cut;
        Some(chunk)
    });
    // What the current "read" has not delivered yet: a chunk larger than
    // the framer's free space arrives in several reads, as from a socket.
    let mut pending: &[u8] = &[];
    loop {
        match framer.next_message() {
            Step::Message(start, end) => got.push(Out::Message(framer.get(start, end).to_vec())),
            Step::Internal(cmd) => got.push(Out::Internal(cmd)),
            Step::Error(ChannelError::TooLong { .. }) => got.push(Out::TooLong),
            Step::Error(_) => got.push(Out::Cut),
            Step::End => break,
            Step::NeedMore => {
                while pending.is_empty() {
                    match chunks.next() {
                        Some(chunk) => pending = chunk,
                        None => break,
                    }
                }
                if pending.is_empty() {
                    framer.set_eof();
                } else {
                    let spare = framer.spare();
                    let n = spare.len().min(pending.len());
                    spare[..n].copy_from_slice(&pending[..n]);
                    framer.filled(n);
                    pending = &pending[n..];
                }
            }
        }
        assert!(
            framer.held() <= bound,
            "framer holds {} bytes (bound {bound})",
            framer.held()
        );
    }

    let mut model = Vec::new();
    let mut lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let tail = lines.pop().unwrap_or_default();
    let blank = |line: &[u8]| line.iter().all(|&b| matches!(b, b' ' | b'\t' | b'\r'));
    for line in lines {
        if line.len() > max_len {
            model.push(Out::TooLong);
        } else if blank(line) {
        } else if let Some(cmd) = internal_cmd(line) {
            model.push(Out::Internal(cmd));
        } else {
            model.push(Out::Message(line.to_vec()));
        }
    }
    if tail.len() > max_len {
        model.push(Out::TooLong);
    } else if !blank(tail) {
        model.push(Out::Cut);
    }
    assert_eq!(got, model);
}

/// What the framer has for the reader next.
#[derive(Debug)]
pub(crate) enum Step {
    /// A message for the user: `buf[start..end]`, without the `\n`.
    Message(usize, usize),
    /// A protocol message (`cmd` starting with `NODE_`), with its `cmd`.
    Internal(String),
    /// An error for one message (too long, cut off at the end of stream).
    Error(ChannelError),
    /// Nothing complete yet: read more into [`Framer::spare`].
    NeedMore,
    /// The stream ended and everything in it was delivered.
    End,
}

/// Splits received bytes into `\n`-terminated messages, in place, without
/// touching a socket: the reader feeds it, and so does the fuzz harness
/// (`fuzz/`), which checks it over arbitrary bytes in arbitrary chunks.
pub(crate) struct Framer {
    /// `buf[start..end]` is received and not yet consumed; `buf[start..scan]`
    /// is known to hold no `\n`; `buf[end..]` is free space for reads.
    buf: Vec<u8>,
    start: usize,
    scan: usize,
    end: usize,
    /// We are skipping the rest of a line longer than `max_len`.
    discarding: bool,
    eof: bool,
    max_len: usize,
}

impl Framer {
    pub(crate) fn new(max_len: usize) -> Framer {
        Framer {
            buf: Vec::new(),
            start: 0,
            scan: 0,
            end: 0,
            discarding: false,
            eof: false,
            max_len,
        }
    }

    /// The bytes of a message `next_message` returned.
    pub(crate) fn get(&self, start: usize, end: usize) -> &[u8] {
        &self.buf[start..end]
    }

    /// Free space to read into (at least [`READ_CHUNK`] bytes).
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        self.make_room();
        &mut self.buf[self.end..]
    }

    /// `n` bytes were read into [`Framer::spare`].
    pub(crate) fn filled(&mut self, n: usize) {
        self.end += n;
    }

    /// The stream ended.
    pub(crate) fn set_eof(&mut self) {
        self.eof = true;
    }

    /// Bytes held, for the fuzz harness's memory bound.
    fn held(&self) -> usize {
        self.buf.len()
    }

    /// The next message: blank lines are skipped (Node never writes them, and
    /// would die reading one); protocol messages are told apart.
    pub(crate) fn next_message(&mut self) -> Step {
        loop {
            match self.next_line() {
                Ok(Some((start, end))) => {
                    let line = &self.buf[start..end];
                    if line.iter().all(|&b| matches!(b, b' ' | b'\t' | b'\r')) {
                        continue;
                    }
                    return match internal_cmd(line) {
                        Some(cmd) => Step::Internal(cmd),
                        None => Step::Message(start, end),
                    };
                }
                Ok(None) if self.eof => return Step::End,
                Ok(None) => return Step::NeedMore,
                Err(e) => return Step::Error(e),
            }
        }
    }

    /// The next `\n`-terminated line (without the `\n`); `Ok(None)` when
    /// more bytes are needed or, after `set_eof`, at the end.
    fn next_line(&mut self) -> Result<Option<(usize, usize)>, ChannelError> {
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[self.scan..self.end]) {
                let (start, end) = (self.start, self.scan + i);
                self.start = end + 1;
                self.scan = self.start;
                if std::mem::take(&mut self.discarding) {
                    continue;
                }
                if end - start > self.max_len {
                    return Err(ChannelError::TooLong {
                        limit: self.max_len,
                    });
                }
                return Ok(Some((start, end)));
            }
            self.scan = self.end;
            if self.discarding {
                self.start = self.end;
            } else if self.end - self.start > self.max_len {
                // Drop what we have of this line and the rest of it as it
                // arrives, so one huge message cannot exhaust memory.
                self.discarding = true;
                self.start = self.end;
                return Err(ChannelError::TooLong {
                    limit: self.max_len,
                });
            }
            if self.eof {
                let rest = &self.buf[self.start..self.end];
                self.start = self.end;
                if !self.discarding && rest.iter().any(|&b| !matches!(b, b' ' | b'\t' | b'\r')) {
                    // Node drops such a fragment silently; we say so.
                    return Err(ChannelError::Decode {
                        excerpt: excerpt(rest),
                        source: de::Error::custom("the channel closed in the middle of a message"),
                    });
                }
                self.discarding = false;
            }
            return Ok(None);
        }
    }

    /// Ensures at least [`READ_CHUNK`] free bytes after `end`, moving the
    /// unconsumed bytes to the front or growing the buffer.
    fn make_room(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.scan = 0;
            self.end = 0;
            if self.buf.len() > KEEP_CAPACITY {
                self.buf = Vec::new();
            }
        }
        if self.buf.len() - self.end >= READ_CHUNK {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.scan -= self.start;
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < READ_CHUNK {
            let len = (self.buf.len() * 2).max(self.end + READ_CHUNK);
            self.buf.resize(len, 0);
        }
    }
}

impl futures_core::Stream for ChannelReceiver {
    type Item = Result<serde_json::Value>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        Poll::Ready(match ready!(this.poll_message(cx)) {
            Ok(Some((start, end))) => Some(decode(this.framer.get(start, end)).map_err(Into::into)),
            Ok(None) => None,
            Err(e) => Some(Err(e.into())),
        })
    }
}

impl fmt::Debug for ChannelReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelReceiver")
            .field("fd", &self.shared.socket.as_raw_fd())
            .field("buffered", &(self.framer.end - self.framer.start))
            .field("eof", &self.framer.eof)
            .field("max_message_len", &self.framer.max_len)
            .finish()
    }
}

/// One message as its wire line: compact JSON and `\n`.
fn encode_line<T: Serialize + ?Sized>(msg: &T) -> Result<Vec<u8>, ChannelError> {
    // Serialize outside the lock: user code (`Serialize` impls) never runs
    // while the queue is locked.
    let mut line = Vec::with_capacity(128);
    serde_json::to_writer(&mut line, msg).map_err(ChannelError::Encode)?;
    // serde_json's compact output has no raw newline, except inside a
    // `RawValue` (feature `raw_value`) built from pretty-printed JSON. There a `\n`
    // can only be whitespace between tokens (JSON strings cannot hold a
    // raw one), so a space means the same and keeps the framing intact.
    if memchr::memchr(b'\n', &line).is_some() {
        line.iter_mut()
            .filter(|b| **b == b'\n')
            .for_each(|b| *b = b' ');
    }
    line.push(b'\n');
    Ok(line)
}

/// Decodes one line: UTF-8 first (serde_json does not check the contents
/// of strings it skips), then JSON.
fn decode<T: DeserializeOwned>(line: &[u8]) -> Result<T, ChannelError> {
    let text = std::str::from_utf8(line).map_err(|e| ChannelError::Decode {
        excerpt: excerpt(line),
        source: de::Error::custom(format_args!("invalid UTF-8 at byte {}", e.valid_up_to())),
    })?;
    serde_json::from_str(text).map_err(|source| ChannelError::Decode {
        excerpt: excerpt(line),
        source,
    })
}

/// The start of a line, for error messages.
fn excerpt(line: &[u8]) -> String {
    const MAX: usize = 100;
    let mut text = String::from_utf8_lossy(&line[..line.len().min(MAX)]).into_owned();
    if line.len() > MAX {
        text.push('…');
    }
    text
}

/// The `cmd` of a protocol message, or `None` for a user message.
///
/// Node's rule (`lib/internal/child_process.js isInternal`): a non-null
/// object whose `cmd` is a string longer than 5 chars starting with `NODE_`.
/// The cheap test (starts with `{`, contains `"NODE_`) rules out nearly
/// every user message before anything is parsed.
fn internal_cmd(line: &[u8]) -> Option<String> {
    let first = line.iter().find(|&&b| !matches!(b, b' ' | b'\t' | b'\r'))?;
    if *first != b'{' || memmem::find(line, b"\"NODE_").is_none() {
        return None;
    }
    let CmdProbe(cmd) = serde_json::from_slice(line).ok()?;
    cmd.filter(|cmd| cmd.len() > 5 && cmd.starts_with("NODE_"))
}

/// Deserializes only the top-level `cmd` of an object, skipping the rest.
struct CmdProbe(Option<String>);

impl<'de> de::Deserialize<'de> for CmdProbe {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Probe;
        impl<'de> de::Visitor<'de> for Probe {
            type Value = CmdProbe;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<CmdProbe, A::Error> {
                let mut cmd = None;
                while let Some(key) = map.next_key::<IsCmd>()? {
                    if key.0 {
                        // Last one wins, as in JSON.parse.
                        cmd = match map.next_value::<serde_json::Value>()? {
                            serde_json::Value::String(s) => Some(s),
                            _ => None,
                        };
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(CmdProbe(cmd))
            }
        }
        deserializer.deserialize_map(Probe)
    }
}

/// A map key, remembered only as "is it `cmd`".
struct IsCmd(bool);

impl<'de> de::Deserialize<'de> for IsCmd {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Key;
        impl de::Visitor<'_> for Key {
            type Value = IsCmd;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<IsCmd, E> {
                Ok(IsCmd(key == "cmd"))
            }
        }
        deserializer.deserialize_str(Key)
    }
}

/// What every half of one channel shares: the socket and the send queue.
struct Shared {
    socket: UnixStream,
    state: Mutex<WriteState>,
    /// Woken whenever bytes are written, the flusher role is released, or
    /// the channel breaks. Only signalled when `waiters > 0`.
    notify: Notify,
}

/// The send queue; see the module docs for how it is used.
#[derive(Default)]
struct WriteState {
    /// A buffer a cancelled flusher left behind: `front[front_pos..]` is
    /// unwritten and goes out before `back`.
    front: Vec<u8>,
    front_pos: usize,
    /// Whole lines queued by senders, not yet taken by a flusher.
    back: Vec<u8>,
    /// Bytes ever queued / written; the difference is what is pending.
    queued: u64,
    written: u64,
    /// Some sender is the flusher (holds the front buffer).
    flushing: bool,
    /// Tasks waiting on `notify`.
    waiters: usize,
    /// Set when we disconnected or a write failed; every later send fails.
    broken: Option<Broken>,
}

#[derive(Debug, Clone, Copy)]
enum Broken {
    Closed,
    Io(io::ErrorKind, Option<i32>),
}

impl Broken {
    fn from_io(err: &io::Error) -> Broken {
        match err.raw_os_error() {
            Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN | libc::ESHUTDOWN) => {
                Broken::Closed
            }
            os => Broken::Io(err.kind(), os),
        }
    }

    fn error(self) -> ChannelError {
        match self {
            Broken::Closed => ChannelError::Closed,
            Broken::Io(_, Some(code)) => ChannelError::Io(io::Error::from_raw_os_error(code)),
            Broken::Io(kind, None) => ChannelError::Io(kind.into()),
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, WriteState> {
        // No user code runs under the lock, so a poisoned lock still holds
        // a consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `line` (whole lines, each ending in `\n`) and returns once it
    /// is written to the socket.
    async fn send_line(&self, line: &[u8]) -> Result<(), ChannelError> {
        loop {
            // Admission: wait while the queue is full, then append. A full
            // queue with nobody writing (a cancelled flusher left its bytes)
            // is drained by this sender first, or it would wait forever.
            let admitted = self
                .wait_until(|st| {
                    if let Some(broken) = st.broken {
                        return Some(Err(broken.error()));
                    }
                    if st.queued - st.written >= SEND_QUEUE_LIMIT {
                        return (!st.flushing)
                            .then(|| Ok(Err((st.queued, Flusher::start(self, st)))));
                    }
                    st.back.extend_from_slice(line);
                    st.queued += line.len() as u64;
                    let flusher = (!st.flushing).then(|| Flusher::start(self, st));
                    Some(Ok(Ok((st.queued, flusher))))
                })
                .await?;
            return match admitted {
                Err((queued, flusher)) => {
                    flusher.run(queued).await?;
                    continue;
                }
                Ok((end, Some(flusher))) => flusher.run(end).await,
                Ok((end, None)) => self.flush_to(end).await,
            };
        }
    }

    /// Returns once `written >= end`: waits for the current flusher, or
    /// becomes the flusher when nobody writes.
    async fn flush_to(&self, end: u64) -> Result<(), ChannelError> {
        let flusher = self
            .wait_until(|st| {
                if st.written >= end {
                    Some(Ok(None))
                } else if let Some(broken) = st.broken {
                    Some(Err(broken.error()))
                } else if !st.flushing {
                    Some(Ok(Some(Flusher::start(self, st))))
                } else {
                    None
                }
            })
            .await?;
        match flusher {
            Some(flusher) => flusher.run(end).await,
            None => Ok(()),
        }
    }

    /// Queues `line` and returns at once, unless `FEED_BATCH` bytes are
    /// pending: then it writes them (or waits for the flusher), so queued
    /// bytes stay bounded by the batch plus one message per feeding task.
    async fn feed_line(&self, line: &[u8]) -> Result<(), ChannelError> {
        let (end, pending) = {
            let mut st = self.lock();
            if let Some(broken) = st.broken {
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
    fn push_control(&self, line: &[u8]) {
        let mut st = self.lock();
        if st.broken.is_some() {
            return;
        }
        st.back.extend_from_slice(line);
        st.queued += line.len() as u64;
        if st.flushing {
            // The current flusher, or a waiter it hands over to, writes it.
            return;
        }
        let mut flusher = Flusher::start(self, &mut st);
        drop(st);
        flusher.write_nonblocking(usize::MAX);
    }

    /// Disconnects: fails every pending and later send, and shuts the
    /// socket down so the peer sees EOF even while clones keep it open.
    fn close(&self) {
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
        let _ = shutdown(self.socket.as_raw_fd(), Shutdown::Both);
        self.notify.notify_waiters();
    }

    /// One non-blocking `send(2)` through tokio's readiness tracking: on
    /// `WouldBlock` the cached readiness is cleared, so `writable()` then
    /// waits for the socket to drain. Without known readiness (right after
    /// a `WouldBlock`) it returns `WouldBlock` without a syscall.
    fn try_send(&self, bytes: &[u8]) -> io::Result<usize> {
        self.socket
            .try_io(Interest::WRITABLE, || self.send_now(bytes))
    }

    /// One non-blocking `send(2)`, whatever tokio believes about readiness;
    /// for best-effort writes where we cannot await (a `WouldBlock` here
    /// leaves tokio's readiness alone, which is harmless).
    ///
    /// `MSG_NOSIGNAL`: a closed peer gives EPIPE, never a SIGPIPE that would
    /// kill a process that does not ignore it.
    fn send_now(&self, bytes: &[u8]) -> io::Result<usize> {
        send(self.socket.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL).map_err(io::Error::from)
    }
}

impl Drop for Shared {
    /// The last handle is gone: what `feed` left queued is written if the
    /// socket takes it without blocking, as `disconnect` does.
    fn drop(&mut self) {
        self.close();
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

/// The flusher role and its buffer. Dropping it (normally, or because the
/// `send` future was cancelled) puts the unwritten rest back and releases
/// the role.
struct Flusher<'a> {
    shared: &'a Shared,
    buf: Vec<u8>,
    pos: usize,
    /// `run` finished normally; nothing to rescue on drop.
    done: bool,
}

impl<'a> Flusher<'a> {
    fn start(shared: &'a Shared, st: &mut WriteState) -> Flusher<'a> {
        st.flushing = true;
        let pos = std::mem::take(&mut st.front_pos);
        Flusher {
            shared,
            buf: std::mem::take(&mut st.front),
            pos,
            done: false,
        }
    }

    /// Writes until `written >= end`, then keeps writing until the queue is
    /// empty unless another sender is waiting to take over.
    async fn run(mut self, end: u64) -> Result<(), ChannelError> {
        loop {
            if self.pos == self.buf.len() {
                let mut st = self.shared.lock();
                // Done once our own bytes are out: what others queued after
                // them is theirs to write (a waiting sender takes over when
                // `self` drops; `feed`'s bytes wait for the next flush), so
                // a peer that stops reading cannot hold a finished `send`.
                if st.back.is_empty() || st.written >= end {
                    drop(st); // before `self`, whose drop locks again
                    self.done = true;
                    return Ok(());
                }
                self.buf.clear();
                if self.buf.capacity() > KEEP_CAPACITY {
                    self.buf = Vec::new();
                }
                std::mem::swap(&mut self.buf, &mut st.back);
                self.pos = 0;
            }
            match self.shared.try_send(&self.buf[self.pos..]) {
                Ok(n) => {
                    self.pos += n;
                    let mut st = self.shared.lock();
                    st.written += n as u64;
                    if st.written >= end {
                        // Hand over: dropping `self` wakes the waiters.
                        drop(st);
                        self.done = true;
                        return Ok(());
                    }
                    if st.waiters > 0 {
                        drop(st);
                        self.shared.notify.notify_waiters();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.shared
                        .socket
                        .writable()
                        .await
                        .map_err(ChannelError::Io)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let broken = *self.shared.lock().broken.get_or_insert(Broken::from_io(&e));
                    self.done = true;
                    return Err(broken.error());
                }
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
            match self.shared.send_now(&self.buf[self.pos..stop]) {
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
    fn drop(&mut self) {
        if !self.done && self.pos > 0 && self.buf.get(self.pos - 1).is_some_and(|&b| b != b'\n') {
            // Cancelled in the middle of a line: try to finish that line now
            // so the peer is not left with half a message while nobody sends.
            if let Some(i) = memchr::memchr(b'\n', &self.buf[self.pos..]) {
                self.write_nonblocking(self.pos + i + 1);
            }
        }
        let mut st = self.shared.lock();
        st.front = std::mem::take(&mut self.buf);
        st.front_pos = self.pos;
        st.flushing = false;
        let wake = st.waiters > 0 || st.broken.is_some();
        drop(st);
        if wake {
            self.shared.notify.notify_waiters();
        }
    }
}

fn parse_fd(value: &std::ffi::OsStr) -> Result<i32, String> {
    let bad = || {
        format!(
            "{}={:?} is not a file descriptor number (a non-negative decimal integer)",
            ipc::CHANNEL_FD_VAR,
            value
        )
    };
    let text = value.to_str().ok_or_else(bad)?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    text.parse::<i32>().map_err(|_| bad())
}

fn no_runtime() -> String {
    "there is no tokio runtime: call this from within one (e.g. under #[tokio::main])".to_owned()
}

fn io_error(errno: nix::errno::Errno) -> ChannelError {
    ChannelError::Io(errno.into())
}

#[cfg(test)]
#[path = "channel_tests.rs"]
mod tests;
