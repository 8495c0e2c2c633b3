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
//! The writer (`writer.rs`) is one coalescing, bounded queue shared by every
//! sender; the reader splits what arrives on `\n` (`framer.rs`) and parses
//! each line in place; `wire.rs` has the rules of a line.

mod bridge;
mod framer;
mod handle;
mod json;
mod listener;
mod wire;
mod writer;

pub use handle::Handle;
pub use listener::ChannelListener;

use std::collections::VecDeque;
use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{ChannelError, Result};
use crate::sys;
use crate::sys::ipc;

#[cfg(fuzzing)]
pub use framer::fuzz_framing;
use framer::{Framer, Step};
use wire::{decode, encode_line};
use writer::{Refused, Shared, SEND_QUEUE_LIMIT};

/// The default limit on the length of one received message: 128 MiB.
///
/// Node has no limit of its own short of V8's maximum string length
/// (536,870,888 UTF-16 units on 64-bit v20); 128 MiB keeps a runaway peer
/// from exhausting memory while allowing any message a sane program sends.
const DEFAULT_MAX_MESSAGE_LEN: usize = 128 * 1024 * 1024;

/// Buffers that grew past this for one big message are released afterwards.
const KEEP_CAPACITY: usize = 4 * 1024 * 1024;

/// What we answer a `NODE_HANDLE` with: we cannot receive fds, and without
/// an answer a Node sender queues every later message forever
/// (`lib/internal/child_process.js setupChannel`, `_handleQueue`).
const HANDLE_NACK: &[u8] = b"{\"cmd\":\"NODE_HANDLE_NACK\"}\n";
/// What we answer a `NODE_HANDLE` whose fd arrived with.
const HANDLE_ACK: &[u8] = b"{\"cmd\":\"NODE_HANDLE_ACK\"}\n";
/// At most this many received fds wait for their `NODE_HANDLE` line.
const MAX_UNCLAIMED_FDS: usize = 64;
/// Lines a receiver serves or consumes per unit of tokio's task budget (see
/// [`ChannelReceiver::poll_budget`]).
const MESSAGES_PER_BUDGET_UNIT: u32 = 32;

/// A message on its way out of the reader.
struct Raw {
    body: Body,
    /// The `cmd` of a protocol message (`NODE_...`), never given to users.
    internal: Option<String>,
    handle: Option<Handle>,
}

enum Body {
    /// A plain line, in the framer's buffer.
    Range(usize, usize),
    /// The message unwrapped from a `NODE_HANDLE` envelope.
    Value(serde_json::Value),
}

impl Body {
    /// The message as `T`; `buf` is the framer's buffer a range points
    /// into. Inlined: it runs once per received message.
    #[inline(always)]
    fn decode<T: DeserializeOwned>(self, buf: &[u8]) -> Result<T, ChannelError> {
        match self {
            Body::Range(start, end) => decode(&buf[start..end]),
            Body::Value(value) => {
                serde_json::from_value(value).map_err(|source| ChannelError::Decode {
                    excerpt: "(the message of a NODE_HANDLE)".into(),
                    source,
                })
            }
        }
    }
}

/// The future of [`ChannelReceiver::recv`]: a type of its own, not an
/// `async fn`, so that its `poll` inlines into the caller's state machine
/// and `poll_recv` writes the message straight into the caller's frame.
/// As an `async fn` around `poll_fn`, the 88-byte `Result<Option<T>>`
/// went through more moves per message, each a 16-byte load of bytes just
/// stored in pieces (a failed store-to-load forward, perf annotate): a
/// receiver of `{"n":i}` lines spent 8–10 % of its time in them. The
/// bench's one-way worker (`Channel::recv`) now runs 2–3 % faster, paired
/// against the old binary; the same change with `Channel::recv` left an
/// `async fn` ran it 7–8 % slower, so neither layer is one.
///
/// Polled again after it returned, it receives the next message (where the
/// `async fn` panicked); every message still comes exactly once.
struct Recv<'a, T> {
    receiver: &'a mut ChannelReceiver,
    message: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Future for Recv<'_, T> {
    type Output = Result<Option<T>>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut out = None;
        ready!(self.receiver.poll_recv(cx, &mut out))?;
        Poll::Ready(Ok(out))
    }
}

/// A message of any kind, with its handle: what the cluster primary reads.
#[derive(Debug)]
#[allow(dead_code)]
pub(crate) struct RawMessage {
    pub value: serde_json::Value,
    /// A protocol message (`cmd` starting with `NODE_`).
    pub internal: bool,
    pub handle: Option<Handle>,
}

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
    /// `Ok(None)`.
    ///
    /// It needs a running tokio runtime (the socket is registered with it):
    /// call it early inside the runtime, e.g. first thing in a
    /// `#[tokio::main]` function, before threads of your own read the
    /// environment. That the runtime's worker threads already exist does no
    /// harm: the channel's fd was recorded when the process started.
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
    /// ```
    /// use child_process as cp;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cp::Result<()> {
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

    /// A channel over a connected stream socket you own: one end of
    /// [`UnixStream::pair`](std::os::unix::net::UnixStream::pair), or an fd
    /// a parent passed at a number you know (taken with
    /// `OwnedFd::from_raw_fd`, whose `unsafe` is where you vouch that
    /// nothing else owns it; [`from_parent`](Channel::from_parent) does that
    /// for `NODE_CHANNEL_FD` safely).
    ///
    /// The fd is made non-blocking and close-on-exec, whatever it was
    /// before.
    ///
    /// # Examples
    ///
    /// ```
    /// use child_process as cp;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cp::Result<()> {
    /// let (a, b) = std::os::unix::net::UnixStream::pair()?;
    /// let (a, mut b) = (cp::Channel::from_fd(a.into())?, cp::Channel::from_fd(b.into())?);
    /// a.send(&"hello").await?;
    /// assert_eq!(b.recv::<String>().await?.as_deref(), Some("hello"));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ChannelError::Setup`] when the fd is not a connected stream socket
    /// (a file, a datagram socket, a listening socket) or there is no tokio
    /// runtime; the fd is closed then, as it was given to us.
    pub fn from_fd(fd: OwnedFd) -> Result<Channel> {
        Channel::on_socket(fd, true)
    }

    fn on_socket(fd: OwnedFd, carries_fds: bool) -> Result<Channel> {
        tokio::runtime::Handle::try_current().map_err(|_| ChannelError::Setup {
            reason: no_runtime(),
        })?;
        use std::os::fd::AsFd;
        ipc::check_stream_socket(fd.as_fd()).map_err(|e| ChannelError::Setup {
            reason: format!("fd {}: {e}", fd.as_raw_fd()),
        })?;
        ipc::prepare_socket(fd.as_fd()).map_err(ChannelError::Io)?;
        // A short read empties a Unix or TCP stream socket; not every
        // stream socket (SCTP's keeps message boundaries, one a read).
        let short_read_empties = ipc::short_read_empties(fd.as_fd());
        let shared = Arc::new(Shared::new(fd, carries_fds).map_err(ChannelError::Io)?);
        Ok(Channel {
            sender: ChannelSender {
                shared: shared.clone(),
            },
            receiver: ChannelReceiver::new(shared, short_read_empties),
        })
    }

    /// A channel over any byte stream that carries both directions: a
    /// `TcpStream`, a TLS stream, a `UnixStream` you connected. The same
    /// framing, typed `send`/`recv`, `split`, bounded writer and
    /// per-message errors as a forked child's channel; handles cannot
    /// travel (`send_with_handle` fails).
    ///
    /// The stream is joined to the channel by two tasks on the current
    /// runtime (one more copy per byte than a Unix socket channel). When
    /// the peer closes or resets the stream, `recv` returns `Ok(None)`
    /// after the messages that arrived; a write to a stream that failed
    /// makes the next `send` fail with [`ChannelError::Closed`].
    ///
    /// There is no authentication or encryption: over TCP, use TLS (wrap
    /// the stream first) or ssh (a stdio worker through `ssh host worker`).
    ///
    /// # Examples
    ///
    /// ```
    /// use child_process as cp;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cp::Result<()> {
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// let addr = listener.local_addr()?;
    /// let client = cp::Channel::from_stream(tokio::net::TcpStream::connect(addr).await?)?;
    /// let mut server = cp::Channel::from_stream(listener.accept().await?.0)?;
    /// client.send(&"over tcp").await?;
    /// assert_eq!(server.recv::<String>().await?.as_deref(), Some("over tcp"));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ChannelError::Setup`] without a tokio runtime; [`ChannelError::Io`]
    /// when the socketpair cannot be made (out of fds).
    pub fn from_stream<S>(stream: S) -> Result<Channel>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        let (reader, writer) = tokio::io::split(stream);
        Channel::from_split(reader, writer)
    }

    /// A channel over two one-way streams: messages are read from
    /// `reader` and written to `writer` (a child's stdout and stdin, or
    /// the halves of any stream). As [`from_stream`](Channel::from_stream)
    /// otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// use child_process as cp;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cp::Result<()> {
    /// // `cat` sends back what it gets: a channel talking to itself.
    /// let mut cat = cp::spawn("cat", [] as [&str; 0])?;
    /// let (stdin, stdout) = (cat.stdin.take().unwrap(), cat.stdout.take().unwrap());
    /// let mut channel = cp::Channel::from_split(stdout, stdin)?;
    /// channel.send(&[1, 2, 3]).await?;
    /// assert_eq!(channel.recv::<Vec<u8>>().await?, Some(vec![1, 2, 3]));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`from_stream`](Channel::from_stream).
    pub fn from_split<R, W>(reader: R, writer: W) -> Result<Channel>
    where
        R: tokio::io::AsyncRead + Send + Unpin + 'static,
        W: tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        tokio::runtime::Handle::try_current().map_err(|_| ChannelError::Setup {
            reason: no_runtime(),
        })?;
        let fd = bridge::with_tasks(reader, writer).map_err(ChannelError::Io)?;
        Channel::on_socket(fd, false)
    }

    /// The channel to the parent over this process's stdin and stdout, for
    /// a worker started with [`Fork::channel_on_stdio`](crate::Fork::channel_on_stdio),
    /// or through anything that carries stdio (`ssh host worker`,
    /// `docker exec -i`, `kubectl exec -i`).
    ///
    /// Takes fd 0 and fd 1 once per process: afterwards fd 0 reads
    /// `/dev/null` and fd 1 writes to stderr, so a stray `println!` lands in
    /// the logs instead of corrupting the channel. When both are one
    /// socket (a local parent's `channel_on_stdio`), the channel runs on it
    /// directly and can carry handles; otherwise (pipes, through a relay)
    /// two threads copy between them and the channel.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use child_process as cp;
    ///
    /// #[tokio::main]
    /// async fn main() -> cp::Result<()> {
    ///     let mut parent = cp::Channel::from_stdio()?;
    ///     while let Some(job) = parent.recv::<serde_json::Value>().await? {
    ///         parent.send(&serde_json::json!({ "done": job })).await?;
    ///     }
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ChannelError::Setup`] on a second call, without a tokio runtime,
    /// or when fd 0 or fd 1 is not open.
    pub fn from_stdio() -> Result<Channel> {
        tokio::runtime::Handle::try_current().map_err(|_| ChannelError::Setup {
            reason: no_runtime(),
        })?;
        let taken = ipc::take_stdio().map_err(|e| ChannelError::Setup {
            reason: format!("stdin and stdout: {e}"),
        })?;
        match taken {
            ipc::StdioChannel::Socket(fd) => Channel::on_socket(fd, true),
            ipc::StdioChannel::Pair { input, output } => {
                let fd = bridge::with_threads(input, output).map_err(ChannelError::Io)?;
                Channel::on_socket(fd, false)
            }
        }
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
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// # let (a, b) = std::os::unix::net::UnixStream::pair()?;
    /// # let (channel, mut peer) = (child_process::Channel::from_fd(a.into())?, child_process::Channel::from_fd(b.into())?);
    /// channel.send(&serde_json::json!({ "progress": 0.5 })).await?;
    /// channel.send("plain strings and numbers are messages too").await?;
    /// # assert_eq!(peer.recv().await?, Some(serde_json::json!({ "progress": 0.5 })));
    /// # assert_eq!(peer.recv::<String>().await?.as_deref(), Some("plain strings and numbers are messages too"));
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

    /// Sends one message with a handle (a socket, or any fd), as Node's
    /// `subprocess.send(msg, handle)`: the peer gets the message and its own
    /// copy of the fd; yours stays open. See
    /// [`ChannelSender::send_with_handle`].
    ///
    /// # Examples
    ///
    /// ```
    /// use child_process as cp;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cp::Result<()> {
    /// # let (a, b) = std::os::unix::net::UnixStream::pair()?;
    /// # let (channel, mut peer) = (cp::Channel::from_fd(a.into())?, cp::Channel::from_fd(b.into())?);
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// channel.send_with_handle(&serde_json::json!({"serve": true}), &listener).await?;
    /// # let (_, handle) = peer.recv_with_handle::<serde_json::Value>().await?.unwrap();
    /// # assert!(handle.is_some());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Channel::send`], and [`ChannelError::Io`] if the fd cannot be
    /// duplicated.
    ///
    /// # Cancellation
    ///
    /// As [`Channel::send`].
    pub async fn send_with_handle<T: Serialize + ?Sized>(
        &self,
        msg: &T,
        handle: &impl AsFd,
    ) -> Result<()> {
        self.sender.send_with_handle(msg, handle).await
    }

    /// Receives the next message and the handle (socket, fd) that came with
    /// it, Node's `process.on('message', (msg, handle) => ...)`.
    ///
    /// A handle comes as a tokio type where there is one ([`Handle`]),
    /// typed by looking at the socket. The peer is told it arrived
    /// (`NODE_HANDLE_ACK`); one whose fd did not arrive is refused
    /// (`NODE_HANDLE_NACK`) and a Node sender sends it again. [`recv`]
    /// returns the same messages and closes the handles.
    ///
    /// [`recv`]: Channel::recv
    ///
    /// # Examples
    ///
    /// ```
    /// use child_process as cp;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cp::Result<()> {
    /// # let (a, b) = std::os::unix::net::UnixStream::pair()?;
    /// # let (peer, mut channel) = (cp::Channel::from_fd(a.into())?, cp::Channel::from_fd(b.into())?);
    /// # let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// # peer.send_with_handle(&"serve", &l).await?;
    /// if let Some((msg, Some(cp::Handle::TcpListener(listener)))) =
    ///     channel.recv_with_handle::<String>().await?
    /// {
    ///     println!("{msg}: accepting on {}", listener.local_addr()?);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Channel::recv`].
    ///
    /// # Cancellation
    ///
    /// Cancel safe.
    pub async fn recv_with_handle<T: DeserializeOwned>(
        &mut self,
    ) -> Result<Option<(T, Option<Handle>)>> {
        self.receiver.recv_with_handle().await
    }

    /// Queue a message without waiting for the write; see
    /// [`ChannelSender::feed`]. Follow the last `feed` with
    /// [`flush`](Channel::flush).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// # let (a, b) = std::os::unix::net::UnixStream::pair()?;
    /// # let (channel, mut peer) = (child_process::Channel::from_fd(a.into())?, child_process::Channel::from_fd(b.into())?);
    /// for i in 0..1000 {
    ///     channel.feed(&serde_json::json!({ "i": i })).await?;
    /// }
    /// channel.flush().await?;
    /// # assert_eq!(peer.recv().await?, Some(serde_json::json!({ "i": 0 })));
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
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// # let (a, b) = std::os::unix::net::UnixStream::pair()?;
    /// # let (channel, mut peer) = (child_process::Channel::from_fd(a.into())?, child_process::Channel::from_fd(b.into())?);
    /// channel.feed(&"last").await?;
    /// channel.flush().await?;
    /// # assert_eq!(peer.recv::<String>().await?.as_deref(), Some("last"));
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
    /// `NODE_HANDLE_NACK` so the Node sender carries on. A reply the socket
    /// cannot take at once is written by the following `recv` calls (a Node
    /// peer waits for it before it sends more), and reading pauses while
    /// more than 1 MiB of replies wait: a peer that sends requests without
    /// reading the replies cannot make this process grow.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// # let (a, b) = std::os::unix::net::UnixStream::pair()?;
    /// # let (mut channel, peer) = (child_process::Channel::from_fd(a.into())?, child_process::Channel::from_fd(b.into())?);
    /// # peer.send(&serde_json::json!({ "id": 1 })).await?;
    /// # drop(peer); // the loop below ends when the peer has closed
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
    ///
    /// Like tokio's own channels, `recv` spends the task's cooperative
    /// budget (one unit per 32 lines), so a peer that keeps the socket full
    /// cannot hold the runtime's thread: once the budget is spent, `recv`
    /// yields once before the next message, even with messages buffered. A
    /// loop draining with `recv().now_or_never()` therefore stops there;
    /// the next `recv().await` goes on.
    pub fn recv<T: DeserializeOwned>(
        &mut self,
    ) -> impl Future<Output = Result<Option<T>>> + use<'_, T> {
        self.receiver.recv()
    }

    /// The longest message [`recv`](Channel::recv) accepts, in bytes
    /// (without the `\n`): 128 MiB unless changed.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// # let (a, _b) = std::os::unix::net::UnixStream::pair()?;
    /// # let channel = child_process::Channel::from_fd(a.into())?;
    /// assert_eq!(channel.max_message_len(), 128 * 1024 * 1024);
    /// # Ok(())
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
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// # let (a, _b) = std::os::unix::net::UnixStream::pair()?;
    /// # let mut channel = child_process::Channel::from_fd(a.into())?;
    /// channel.set_max_message_len(1024 * 1024);
    /// # assert_eq!(channel.max_message_len(), 1024 * 1024);
    /// # Ok(())
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
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// # let (a, b) = std::os::unix::net::UnixStream::pair()?;
    /// # let (channel, mut peer) = (child_process::Channel::from_fd(a.into())?, child_process::Channel::from_fd(b.into())?);
    /// channel.send(&"last words").await?;
    /// channel.disconnect();
    /// # assert_eq!(peer.recv::<String>().await?.as_deref(), Some("last words"));
    /// # assert_eq!(peer.recv::<String>().await?, None);
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
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// # let (a, b) = std::os::unix::net::UnixStream::pair()?;
    /// # let (channel, mut peer) = (child_process::Channel::from_fd(a.into())?, child_process::Channel::from_fd(b.into())?);
    /// # tokio::spawn(async move {
    /// #     // The peer echoes the ten ticks, then closes its end.
    /// #     for _ in 0..10 {
    /// #         let tick: serde_json::Value = peer.recv().await?.unwrap();
    /// #         peer.send(&tick).await?;
    /// #     }
    /// #     Ok::<_, child_process::Error>(())
    /// # });
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

    /// [`disconnect`](Channel::disconnect) without giving the channel up:
    /// later sends fail with [`ChannelError::Closed`], `recv` returns
    /// `Ok(None)`.
    pub(crate) fn close(&self) {
        self.sender.disconnect();
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

/// The arguments this process was started with, for a worker started by
/// `fork` (ours or Node's): `std::env::args_os()` without the program name,
/// and without the path a Node parent repeats.
///
/// Node's `fork(modulePath, args, { execPath })` runs
/// `execPath modulePath ...args`: a Rust worker forked with
/// `execPath: worker` gets its own path as its first argument. When the
/// process was started with a channel (`NODE_CHANNEL_FD` set) and its first
/// argument names its own executable, that argument is left out. Otherwise
/// this is exactly `args_os().skip(1)`. (A parent that passes the worker's
/// own path as a genuine first argument loses it here: read
/// `std::env::args_os()` then.)
///
/// # Examples
///
/// ```
/// use child_process as cp;
///
/// // In a worker: `node parent.js` ran fork(worker, ["--id", "3"], { execPath: worker }).
/// let args = cp::worker_args();
/// # let _ = args;
/// ```
pub fn worker_args() -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if ipc::started_with_channel() {
        if let (Some(first), Ok(exe)) = (args.first(), std::env::current_exe()) {
            if same_file(std::path::Path::new(first), &exe) {
                args.remove(0);
            }
        }
    }
    args
}

fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// A write of queued bytes up to an offset, owned by the receiver.
type Flush = Pin<Box<dyn Future<Output = Result<(), ChannelError>> + Send + Sync>>;

/// The sending half of a [`Channel`], from [`Channel::split`].
///
/// Clones share one queue: messages sent concurrently from several clones
/// are written whole, in the order their `send` calls queued them, and
/// coalesced into few `send(2)` calls.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> child_process::Result<()> {
/// # let (a, b) = std::os::unix::net::UnixStream::pair()?;
/// # let (channel, mut peer) = (child_process::Channel::from_fd(a.into())?, child_process::Channel::from_fd(b.into())?);
/// let (tx, _rx) = channel.split();
/// let tx2 = tx.clone();
/// tokio::try_join!(tx.send(&1), tx2.send(&2))?;
/// # let mut got = [peer.recv::<u32>().await?, peer.recv::<u32>().await?];
/// # got.sort();
/// # assert_eq!(got, [Some(1), Some(2)]);
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
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// # let (a, b) = std::os::unix::net::UnixStream::pair()?;
    /// # let (channel, mut peer) = (child_process::Channel::from_fd(a.into())?, child_process::Channel::from_fd(b.into())?);
    /// # let (tx, _rx) = channel.split();
    /// tx.send(&serde_json::json!({ "status": "ok" })).await?;
    /// # assert_eq!(peer.recv().await?, Some(serde_json::json!({ "status": "ok" })));
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

    /// Sends one message with a handle: the message goes out in Node's
    /// `NODE_HANDLE` envelope, with the fd attached to its closing `\n`
    /// (`SCM_RIGHTS`), and the peer (ours or Node's) gets the message and
    /// its own copy of the fd; yours stays open. The envelope's `type` is
    /// what Node's receiver needs for the socket (`net.Server` for a
    /// listening TCP or Unix socket, `net.Socket` for a connected one,
    /// `dgram.Socket` for UDP, `net.Native` for anything else; a Node
    /// receiver accepts only sockets).
    ///
    /// A copy is kept until the peer acknowledges it (processed by this
    /// channel's receiver, so keep receiving), and sent again if the peer
    /// says it did not arrive, up to three times, as Node does.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// # let (a, b) = std::os::unix::net::UnixStream::pair()?;
    /// # let (channel, _peer) = (child_process::Channel::from_fd(a.into())?, child_process::Channel::from_fd(b.into())?);
    /// let (tx, _rx) = channel.split();
    /// let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    /// tx.send_with_handle(&"udp", &socket).await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Channel::send`], and [`ChannelError::Io`] if the fd cannot be
    /// duplicated.
    ///
    /// # Cancellation
    ///
    /// As [`Channel::send`].
    pub async fn send_with_handle<T: Serialize + ?Sized>(
        &self,
        msg: &T,
        handle: &impl AsFd,
    ) -> Result<()> {
        let (kind, dgram) = handle::node_type(handle.as_fd());
        // One duplicate, kept until the peer acknowledges it: ours stays
        // open for the caller.
        let fd = handle
            .as_fd()
            .try_clone_to_owned()
            .map_err(ChannelError::Io)?;
        self.send_handle_as(msg, Arc::new(fd), kind, dgram).await
    }

    /// [`send_with_handle`](Self::send_with_handle) with the envelope's
    /// `type` given (the cluster protocol sends `net.Native`), for an fd
    /// the caller already shares.
    pub(crate) async fn send_handle_as<T: Serialize + ?Sized>(
        &self,
        msg: &T,
        fd: Arc<OwnedFd>,
        kind: &str,
        dgram: Option<&str>,
    ) -> Result<()> {
        if !self.shared.carries_fds {
            return Err(ChannelError::Io(io::Error::new(
                io::ErrorKind::Unsupported,
                "this channel runs over a byte stream: handles need a Unix socket channel",
            ))
            .into());
        }
        let line = handle::envelope(msg, kind, dgram)?;
        self.shared
            .send_line_with_fd(line, fd)
            .await
            .map_err(Into::into)
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
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// # let (a, b) = std::os::unix::net::UnixStream::pair()?;
    /// # let (channel, mut peer) = (child_process::Channel::from_fd(a.into())?, child_process::Channel::from_fd(b.into())?);
    /// # let (tx, _rx) = channel.split();
    /// for i in 0..1000 {
    ///     tx.feed(&i).await?;
    /// }
    /// tx.flush().await?;
    /// # assert_eq!(peer.recv::<u32>().await?, Some(0));
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
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// # let (a, b) = std::os::unix::net::UnixStream::pair()?;
    /// # let (channel, mut peer) = (child_process::Channel::from_fd(a.into())?, child_process::Channel::from_fd(b.into())?);
    /// # let (tx, _rx) = channel.split();
    /// tx.feed(&"a").await?;
    /// tx.flush().await?;
    /// # assert_eq!(peer.recv::<String>().await?.as_deref(), Some("a"));
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
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// # let (a, b) = std::os::unix::net::UnixStream::pair()?;
    /// # let (channel, _peer) = (child_process::Channel::from_fd(a.into())?, child_process::Channel::from_fd(b.into())?);
    /// # let (tx, _rx) = channel.split();
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
/// ```
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> child_process::Result<()> {
/// # let (a, b) = std::os::unix::net::UnixStream::pair()?;
/// # let (channel, peer) = (child_process::Channel::from_fd(a.into())?, child_process::Channel::from_fd(b.into())?);
/// # for i in 0..3 {
/// #     peer.send(&i).await?;
/// # }
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
    /// fds received and not yet claimed by a `NODE_HANDLE` line, each with
    /// the stream range of the read that brought it.
    fds: VecDeque<ReceivedFd>,
    /// Control data was cut since the last `recv`: fds were lost.
    truncated: bool,
    /// Writes the protocol replies the socket did not take at once; kept
    /// here, so a cancelled `recv` loses nothing, and polled by every `recv`
    /// (which stops reading while it is over the send limit).
    backlog: Option<Flush>,
    /// Receives since tokio's task budget was last charged.
    unbudgeted: u32,
    /// A read that got less than it asked for emptied the socket (see
    /// [`ChannelReceiver::poll_fill`]).
    short_read_empties: bool,
}

/// An fd a read brought, and the stream offsets `[from, to)` of that read's
/// bytes. The kernel ends a read with the bytes an fd was sent with (it
/// never joins them to later ones), so those bytes are in the read, and
/// its line (a `NODE_HANDLE` line, from an honest peer) overlaps the read.
struct ReceivedFd {
    fd: OwnedFd,
    from: u64,
    to: u64,
}

impl ChannelReceiver {
    fn new(shared: Arc<Shared>, short_read_empties: bool) -> ChannelReceiver {
        ChannelReceiver {
            short_read_empties,
            shared,
            framer: Framer::new(DEFAULT_MAX_MESSAGE_LEN),
            backlog: None,
            fds: VecDeque::new(),
            truncated: false,
            unbudgeted: 0,
        }
    }

    /// Charges tokio's task budget (`tokio::task::coop`) one unit per
    /// [`MESSAGES_PER_BUDGET_UNIT`] calls: one per message served from the
    /// buffer directly (`next_plain`), one per line
    /// [`poll_raw`](ChannelReceiver::poll_raw) takes (the protocol's own
    /// too); pending (with the task woken again) when the budget is spent,
    /// so the runtime runs its other tasks.
    ///
    /// Reading the socket charges the budget already (tokio's I/O does),
    /// but one read brings up to thousands of small messages, and a peer
    /// that keeps the socket full would hold a current-thread runtime for
    /// 128 reads: about a million messages, a tenth of a second and more.
    /// A unit per message, as tokio's `mpsc` charges, made a small-message
    /// receiver yield every 128 messages; one per 32 yields every 4,096,
    /// well under a millisecond.
    #[inline(always)]
    fn poll_budget(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.unbudgeted += 1;
        if self.unbudgeted < MESSAGES_PER_BUDGET_UNIT {
            return Poll::Ready(());
        }
        // Pending leaves the count where it is: the next poll charges.
        let coop = ready!(tokio::task::coop::poll_proceed(cx));
        coop.made_progress();
        self.unbudgeted = 0;
        Poll::Ready(())
    }

    /// Receives the next message; see [`Channel::recv`].
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// # let (a, b) = std::os::unix::net::UnixStream::pair()?;
    /// # let (channel, peer) = (child_process::Channel::from_fd(a.into())?, child_process::Channel::from_fd(b.into())?);
    /// # let (_tx, mut rx) = channel.split();
    /// # peer.send(&"hello").await?;
    /// # drop(peer); // the loop below ends when the peer has closed
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
    pub fn recv<T: DeserializeOwned>(
        &mut self,
    ) -> impl Future<Output = Result<Option<T>>> + use<'_, T> {
        // One poll function, not a chain of async layers (see `Recv`): for
        // small messages, moving the result through each layer's state
        // showed in a receiver's profile. Its loop repeats
        // `recv_with_handle`'s on purpose: sharing one that returns
        // `(T, Option<Handle>)` measured 12–15 % slower. The decoding is
        // shared (`Body::decode`, inlined: 141–151 ns/msg against 143–160
        // repeated, alternating runs).
        Recv {
            receiver: self,
            message: PhantomData,
        }
    }

    /// The poll of [`recv`](ChannelReceiver::recv): ready with the message
    /// in `out`, or with `out` left `None` at the end of the stream.
    fn poll_recv<T: DeserializeOwned>(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Option<T>,
    ) -> Poll<Result<(), ChannelError>> {
        ready!(self.poll_budget(cx));
        loop {
            if let Some((start, end)) = self.next_plain() {
                *out = Some(decode(self.framer.get(start, end))?);
                return Poll::Ready(Ok(()));
            }
            // Nothing whole is buffered and nothing else is due: read and
            // look again, without the general path's steps, which a reader
            // that waits for each message (a request and its reply) took
            // twice per message, once to find nothing and once after the
            // read.
            if self.backlog.is_some() || self.truncated || !self.framer.wants_bytes() {
                break;
            }
            ready!(self.poll_fill(cx))?;
            // Each read costs budget, as in `poll_raw`: a peer streaming a
            // line that never ends must not hold the thread.
            ready!(self.poll_budget(cx));
        }
        loop {
            let raw = match ready!(self.poll_raw(cx))? {
                Some(raw) => raw,
                None => return Poll::Ready(Ok(())),
            };
            if raw.internal.is_some() {
                continue;
            }
            *out = Some(raw.body.decode(&self.framer.buf)?);
            return Poll::Ready(Ok(()));
        }
    }

    /// Receives the next message and the handle (socket, fd) sent with
    /// it, if any; see [`Channel::recv_with_handle`].
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// # let (a, b) = std::os::unix::net::UnixStream::pair()?;
    /// # let (peer, channel) = (child_process::Channel::from_fd(a.into())?, child_process::Channel::from_fd(b.into())?);
    /// # peer.send(&"no handle").await?;
    /// let (_tx, mut rx) = channel.split();
    /// let (msg, handle) = rx.recv_with_handle::<String>().await?.unwrap();
    /// assert!(handle.is_none());
    /// # let _ = msg;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Channel::recv`].
    ///
    /// # Cancellation
    ///
    /// Cancel safe.
    pub async fn recv_with_handle<T: DeserializeOwned>(
        &mut self,
    ) -> Result<Option<(T, Option<Handle>)>> {
        poll_fn(|cx| self.poll_budget(cx)).await;
        if let Some((start, end)) = self.next_plain() {
            return Ok(Some((decode(self.framer.get(start, end))?, None)));
        }
        loop {
            let raw = match poll_fn(|cx| self.poll_raw(cx)).await? {
                Some(raw) => raw,
                None => return Ok(None),
            };
            if raw.internal.is_some() {
                continue;
            }
            let msg = raw.body.decode(&self.framer.buf)?;
            return Ok(Some((msg, raw.handle)));
        }
    }

    /// The next message of any kind, the protocol's own (`NODE_...`) too:
    /// for the cluster primary, which speaks that protocol.
    #[allow(dead_code)]
    pub(crate) async fn recv_raw(&mut self) -> Result<Option<RawMessage>> {
        let raw = match poll_fn(|cx| self.poll_raw(cx)).await? {
            Some(raw) => raw,
            None => return Ok(None),
        };
        let value = match raw.body {
            Body::Range(start, end) => decode(&self.framer.buf[start..end])?,
            Body::Value(value) => value,
        };
        Ok(Some(RawMessage {
            value,
            internal: raw.internal.is_some(),
            handle: raw.handle,
        }))
    }

    /// The longest message accepted, in bytes; see
    /// [`Channel::max_message_len`].
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// # let (a, _b) = std::os::unix::net::UnixStream::pair()?;
    /// # let (_tx, rx) = child_process::Channel::from_fd(a.into())?.split();
    /// println!("messages up to {} bytes", rx.max_message_len());
    /// # Ok(())
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
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// # let (a, _b) = std::os::unix::net::UnixStream::pair()?;
    /// # let (_tx, mut rx) = child_process::Channel::from_fd(a.into())?.split();
    /// rx.set_max_message_len(64 * 1024);
    /// # assert_eq!(rx.max_message_len(), 64 * 1024);
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_max_message_len(&mut self, limit: usize) -> &mut Self {
        self.framer.max_len = limit;
        self
    }

    /// The next message, with what the protocol needs done on the way:
    /// blank lines skipped, our handles' acknowledgements processed, a
    /// received handle attached to its `NODE_HANDLE` line (and
    /// acknowledged) and the message unwrapped.
    fn poll_raw(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Raw>, ChannelError>> {
        loop {
            // Every line taken here costs budget, those the protocol
            // consumes too (blank lines, acks), or a peer flooding them
            // would hold the thread (an attack found it). Charged before
            // anything is taken, so a pending charge loses nothing.
            ready!(self.poll_budget(cx));
            ready!(self.poll_backlog(cx))?;
            if std::mem::take(&mut self.truncated) {
                return Poll::Ready(Err(ChannelError::HandleLost));
            }
            let step = match self.framer.next_message() {
                Step::NeedMore => {
                    ready!(self.poll_fill(cx))?;
                    continue;
                }
                step => step,
            };
            return Poll::Ready(match step {
                Step::Message(start, end) => Ok(Some(Raw {
                    body: Body::Range(start, end),
                    internal: None,
                    handle: None,
                })),
                Step::Internal(cmd, start, end) => match cmd.as_str() {
                    "NODE_HANDLE" => match self.take_handle_line(start, end) {
                        Some(raw) => Ok(Some(raw)),
                        None => continue,
                    },
                    "NODE_HANDLE_ACK" => {
                        self.shared.acknowledged();
                        continue;
                    }
                    "NODE_HANDLE_NACK" => match self.shared.refused() {
                        Refused::SentAgain(true) => {
                            self.flush_replies();
                            continue;
                        }
                        Refused::SentAgain(false) | Refused::Unknown => continue,
                        Refused::GaveUp => Err(ChannelError::HandleRefused),
                    },
                    _ => Ok(Some(Raw {
                        body: Body::Range(start, end),
                        internal: Some(cmd),
                        handle: None,
                    })),
                },
                Step::Blank => continue,
                Step::Error(e) => {
                    // A `NODE_HANDLE` line skipped as too long gets its
                    // answer too: without one, a Node sender holds every
                    // later message forever, and ours pairs the next
                    // answers with the wrong handles (an outside attack).
                    // Refused, it is sent again up to three times, then
                    // given up with a warning (Node) or `HandleRefused`.
                    if std::mem::take(&mut self.framer.skipped_handle) {
                        self.reply(HANDLE_NACK);
                    }
                    Err(e)
                }
                Step::End => Ok(None),
                Step::NeedMore => unreachable!("handled above"),
            });
        }
    }

    /// The bytes of the next message when it is the common kind and
    /// nothing else is due first (no reply pending, no handle lost); see
    /// [`Framer::next_plain`]. Each reader tries this before
    /// [`ChannelReceiver::poll_raw`]: decoding straight from it, rather than
    /// through a `Raw`, took a small-message receiver from 141–150 to
    /// 127–135 ns per message (alternating runs).
    #[inline(always)]
    fn next_plain(&mut self) -> Option<(usize, usize)> {
        if self.backlog.is_some() || self.truncated {
            return None;
        }
        self.framer.next_plain()
    }

    /// Writes on the protocol replies queued by `reply`; pending only while
    /// they do not fit in the send queue.
    fn poll_backlog(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ChannelError>> {
        if let Some(backlog) = &mut self.backlog {
            match backlog.as_mut().poll(cx) {
                Poll::Ready(written) => {
                    self.backlog = None;
                    match written {
                        // The peer is gone: its end of stream comes next.
                        Ok(()) | Err(ChannelError::Closed) => {}
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
                // Read on while the replies fit in the send queue. Only
                // the replies count: with both peers' queues full of
                // messages, each reading a `NODE_HANDLE` line, two channels
                // of ours stopped reading for good.
                Poll::Pending if self.shared.replies_unwritten() > SEND_QUEUE_LIMIT => {
                    return Poll::Pending
                }
                Poll::Pending => {}
            }
        }
        Poll::Ready(Ok(()))
    }

    /// A `NODE_HANDLE` line, `buf[start..end]` and its `\n`: take the
    /// oldest fd whose read overlaps it and answer `NODE_HANDLE_ACK`, or
    /// `NODE_HANDLE_NACK` when none came (the sender tries again). `None`
    /// when there is nothing to deliver.
    ///
    /// An fd whose read ended before the line began came with an earlier
    /// line that was not `NODE_HANDLE`: it is closed, as Node drops a handle
    /// with no `NODE_HANDLE` line in its read (`setupChannel`'s `onread`).
    /// Handing out fds in the order they came instead gave a stray fd from
    /// a raw peer to the next handle line, and every later handle to the
    /// line after its own (an outside attack).
    fn take_handle_line(&mut self, start: usize, end: usize) -> Option<Raw> {
        let (first, last) = (self.framer.offset(start), self.framer.offset(end));
        while self.fds.front().is_some_and(|f| f.to <= first) {
            self.fds.pop_front();
        }
        let overlaps = self.fds.front().is_some_and(|f| f.from <= last);
        let Some(ReceivedFd { fd, .. }) = overlaps.then(|| self.fds.pop_front()).flatten() else {
            self.reply(HANDLE_NACK);
            return None;
        };
        self.reply(HANDLE_ACK);
        // A malformed envelope, or an fd that cannot be registered: the fd
        // is closed here, not leaked, and the message is dropped.
        let mut envelope: serde_json::Value = decode(&self.framer.buf[start..end]).ok()?;
        let msg = envelope.get_mut("msg").map(serde_json::Value::take)?;
        let handle = Handle::from_received(fd).ok()?;
        let internal = wire::internal_cmd_of(&msg);
        Some(Raw {
            body: Body::Value(msg),
            internal,
            handle: Some(handle),
        })
    }

    /// Queue a protocol reply; keep writing it from `recv` if the socket
    /// did not take it at once.
    fn reply(&mut self, line: &'static [u8]) {
        if self.shared.push_control(line) {
            self.flush_replies();
        }
    }

    /// Keeps writing replies from `recv` until all are out. A write under
    /// way goes on to the replies queued since (see
    /// [`Shared::flush_replies`]): replacing it for each reply cancelled it,
    /// and a cancelled write that had waited for room searched the queue
    /// for the end of the line in progress (90 % of a current-thread
    /// runtime's time under a `NODE_HANDLE` flood, with 300 KB messages
    /// queued).
    fn flush_replies(&mut self) {
        if self.backlog.is_none() {
            let shared = self.shared.clone();
            self.backlog = Some(Box::pin(async move { shared.flush_replies().await }));
        }
    }

    /// One read from the socket into the framer.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ChannelError>> {
        let mut ready = ready!(self.shared.socket.poll_read_ready(cx)).map_err(ChannelError::Io)?;
        // Into the buffer's spare capacity (no zeroing before the read),
        // taking the fds that come with the bytes.
        let (room, from) = self.framer.room();
        let max = room.capacity() - room.len();
        let before = self.fds.len();
        let fds = &mut self.fds;
        // Each fd gets its read's range once the read's length is known.
        let take = |fd| fds.push_back(ReceivedFd { fd, from, to: from });
        // A `WouldBlock` clears the readiness this read saw.
        let read = ready
            .try_io(|socket| sys::ipc::recv_with_fds(socket.as_fd(), room, max, take))
            .unwrap_or_else(|_| Err(io::ErrorKind::WouldBlock.into()));
        if let Some(got) = read.as_ref().ok().filter(|got| got.control) {
            let to = from + got.bytes as u64;
            for fd in self.fds.iter_mut().skip(before) {
                fd.to = to;
            }
        }
        // A peer that sends fds without `NODE_HANDLE` lines to claim them
        // cannot fill our fd table: keep the newest few.
        while self.fds.len() > MAX_UNCLAIMED_FDS {
            self.fds.pop_front();
        }
        match read {
            Ok(got) if got.bytes == 0 => self.framer.set_eof(),
            Ok(got) => {
                self.truncated |= got.truncated;
                // A short read emptied the socket: wait for the next edge
                // instead of a read that would only say EAGAIN, as tokio's
                // PollEvented::poll_read does (tokio#5866) and our pipe
                // capture does. Not after control data (fds): the kernel
                // ends a read at a message that carries them, with more
                // bytes behind it; nor on a stream socket other than Unix
                // or TCP, which may end a read at a message boundary. (Nor
                // does the rule hold at a `MSG_OOB` mark; Node never sends
                // one, and a peer that did would see its next bytes wait for
                // more to come, as on a tokio stream.)
                if got.bytes < max && !got.control && self.short_read_empties {
                    ready.clear_ready();
                }
            }

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

impl futures_core::Stream for ChannelReceiver {
    type Item = Result<serde_json::Value>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        ready!(this.poll_budget(cx));
        if let Some((start, end)) = this.next_plain() {
            let msg = decode(this.framer.get(start, end));
            return Poll::Ready(Some(msg.map_err(Into::into)));
        }
        loop {
            return Poll::Ready(match ready!(this.poll_raw(cx)) {
                Ok(Some(raw)) if raw.internal.is_some() => continue,
                Ok(Some(raw)) => Some(match raw.body {
                    Body::Range(start, end) => {
                        decode(this.framer.get(start, end)).map_err(Into::into)
                    }
                    Body::Value(value) => Ok(value),
                }),
                Ok(None) => None,
                Err(e) => Some(Err(e.into())),
            });
        }
    }
}

impl fmt::Debug for ChannelReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelReceiver")
            .field("fd", &self.shared.socket.as_raw_fd())
            .field("buffered", &self.framer.buffered())
            .field("eof", &self.framer.eof)
            .field("max_message_len", &self.framer.max_len)
            .finish()
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

#[cfg(test)]
mod tests;
