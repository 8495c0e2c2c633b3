//! The worker side, for Rust programs run by a cluster primary (ours or
//! Node's): `online`, `queryServer`, `listening`, `newconn` and
//! `disconnect` as `lib/internal/cluster/child.js` speaks them.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};

use super::events::{EventReceiver, EventSender};
use super::protocol::{self, act};
use super::WorkerId;
use crate::channel::{Channel, ChannelReceiver, ChannelSender, Handle, RawMessage};
use crate::error::{ChannelError, CommandLine, Error, Result};

/// Connections a round-robin listener holds before `accept` takes them;
/// past this the worker refuses (`accepted: false`) and the primary hands
/// the connection to another worker.
const ACCEPT_QUEUE: usize = 128;

/// A Rust program as a cluster worker: it listens through the primary,
/// which may hand it connections (round robin) or a shared listening
/// socket, and talks to the primary with messages.
///
/// Works under this crate's [`Primary`](super::Primary) and under Node's
/// `cluster`: Node 20's primary runs `process.execPath` with the
/// `exec` script as its argument, so set `process.execPath` to the Rust
/// program before `cluster.fork()` (both scheduling policies work).
///
/// When the primary watches heartbeats
/// ([`Setup::heartbeat`](super::Setup::heartbeat)), the worker sends them
/// by itself from a task of its runtime: a runtime that stops polling
/// stops beating.
///
/// When the primary asks it to disconnect, or the primary is gone, its
/// listeners stop and [`disconnected`](Worker::disconnected) resolves:
/// finish the connections in progress and return from `main`. (A Node
/// worker exits at once when its primary dies; a Rust worker decides.)
///
/// # Examples
///
/// ```no_run
/// use child_process as cp;
///
/// # async fn run() -> cp::Result<()> {
/// let worker = cp::cluster::Worker::from_primary().await?.expect("run me under a primary");
/// let mut listener = worker.listen("0.0.0.0:8080").await?;
/// while let Ok((stream, peer)) = listener.accept().await {
///     tokio::spawn(async move { /* serve `stream` (hyper, axum, ...) */ });
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Worker {
    id: WorkerId,
    shared: Arc<Shared>,
    messages: EventReceiver<Message>,
    disconnected: watch::Receiver<bool>,
}

/// A message from the primary for [`Worker::recv`], or why one could not
/// be read.
type Message = std::result::Result<Value, ChannelError>;

/// A reply from the primary, the fd that came with it, and for a
/// round-robin `queryServer` reply, the queue its connections go to.
type Reply = (
    Map<String, Value>,
    Option<Handle>,
    Option<mpsc::Receiver<TcpStream>>,
);

#[derive(Debug)]
struct Shared {
    sender: ChannelSender,
    state: Mutex<WorkerBook>,
}

#[derive(Debug, Default)]
struct WorkerBook {
    seq: u64,
    /// Replies awaited, by the `seq` of the request.
    pending: HashMap<u64, oneshot::Sender<Reply>>,
    /// Round-robin listeners, by key.
    listeners: HashMap<String, mpsc::Sender<TcpStream>>,
    /// Every key answered (round robin and shared), for `close`.
    keys: Vec<String>,
    /// `index` per `address:port:addressType`, as `child.js` counts: the
    /// next one and those in use. When none is in use the count starts
    /// over, so listening again after a close asks for the same key (and
    /// the primary's socket) instead of binding the port twice.
    index: HashMap<String, (u64, Vec<u64>)>,
}

impl Shared {
    fn book(&self) -> std::sync::MutexGuard<'_, WorkerBook> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn next_seq(&self) -> u64 {
        let mut book = self.book();
        let seq = book.seq;
        book.seq += 1;
        seq
    }

    async fn send_cluster(&self, fields: Map<String, Value>) -> Result<u64> {
        let seq = self.next_seq();
        self.sender.send(&protocol::message(fields, seq)).await?;
        Ok(seq)
    }

    /// Send a request and wait for its reply.
    async fn request(&self, fields: Map<String, Value>) -> Result<Reply> {
        let (tx, rx) = oneshot::channel();
        let seq = {
            let mut book = self.book();
            let seq = book.seq;
            book.seq += 1;
            book.pending.insert(seq, tx);
            seq
        };
        self.sender.send(&protocol::message(fields, seq)).await?;
        rx.await.map_err(|_| Error::Channel(ChannelError::Closed))
    }

    /// Stop every listener and tell the primary (`close` per key).
    async fn close_all(&self) {
        let keys = {
            let mut book = self.book();
            book.listeners.clear();
            std::mem::take(&mut book.keys)
        };
        for key in keys {
            let mut fields = protocol::act_only("close");
            fields.insert("key".into(), key.into());
            // The primary may be gone; the listeners are closed anyway.
            let _ = self.send_cluster(fields).await;
        }
    }
}

impl Worker {
    /// Join the primary that started this process: `Ok(None)` when there
    /// is none (`NODE_UNIQUE_ID` is unset), so one program can run alone
    /// or as a worker. Sends `online`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// match child_process::cluster::Worker::from_primary().await? {
    ///     Some(worker) => println!("worker {}", worker.id()),
    ///     None => println!("running alone"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Channel`] when `NODE_UNIQUE_ID` is set but is no number,
    /// or the IPC channel is missing or unusable.
    pub async fn from_primary() -> Result<Option<Worker>> {
        let Some(id) = std::env::var_os("NODE_UNIQUE_ID") else {
            return Ok(None);
        };
        let id: WorkerId = id.to_str().and_then(|s| s.parse().ok()).ok_or_else(|| {
            Error::Channel(ChannelError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("NODE_UNIQUE_ID is not a worker id: {id:?}"),
            )))
        })?;
        let channel = Channel::from_parent()?.ok_or(Error::Channel(ChannelError::NoChannel))?;
        Ok(Some(Worker::over(id, channel).await?))
    }

    async fn over(id: WorkerId, channel: Channel) -> Result<Worker> {
        let (sender, receiver) = channel.split();
        let shared = Arc::new(Shared {
            sender,
            state: Mutex::new(WorkerBook::default()),
        });
        let (messages_tx, messages) = super::events::channel();
        let (disconnected_tx, disconnected) = watch::channel(false);
        shared.send_cluster(protocol::act_only("online")).await?;
        tokio::spawn(dispatch(
            receiver,
            shared.clone(),
            messages_tx,
            disconnected_tx,
        ));
        // `Setup::heartbeat`: beat while the runtime runs; a runtime that
        // stops polling (a blocked worker thread everywhere) stops beating.
        let beat = std::env::var("CP_HEARTBEAT_MS")
            .ok()
            .and_then(|ms| ms.parse::<u64>().ok())
            .filter(|&ms| ms > 0);
        if let Some(ms) = beat {
            let shared = Arc::downgrade(&shared);
            tokio::spawn(async move {
                let mut every = tokio::time::interval(std::time::Duration::from_millis(ms));
                loop {
                    every.tick().await;
                    let Some(shared) = shared.upgrade() else {
                        return;
                    };
                    if shared
                        .send_cluster(protocol::act_only("heartbeat"))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
        Ok(Worker {
            id,
            shared,
            messages,
            disconnected,
        })
    }

    /// This worker's id (`cluster.worker.id`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let worker = child_process::cluster::Worker::from_primary().await?.unwrap();
    /// println!("I am worker {}", worker.id());
    /// # Ok(())
    /// # }
    /// ```
    pub fn id(&self) -> WorkerId {
        self.id
    }

    /// Listen on `addr` (`"ip:port"`; port 0 gives every worker of the
    /// cluster the same free port) through the primary: Node's
    /// `server.listen()` in a worker.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let worker = child_process::cluster::Worker::from_primary().await?.unwrap();
    /// let listener = worker.listen("[::]:0").await?;
    /// println!("on {}", listener.local_addr());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when `addr` is no `ip:port` or the primary could not
    /// bind it (`EADDRINUSE`, ...), or when the primary is gone.
    pub async fn listen(&self, addr: &str) -> Result<Listener> {
        let line = CommandLine::verbatim(&format!("listen on {addr}"));
        let at: SocketAddr = addr.parse().map_err(|_| {
            Error::io(
                &line,
                io::Error::new(io::ErrorKind::InvalidInput, "expected ip:port"),
            )
        })?;
        let family = if at.is_ipv4() { 4 } else { 6 };
        let indexes_key = format!("{}:{}:{family}", at.ip(), at.port());
        let index = {
            let mut book = self.shared.book();
            let (next, live) = book.index.entry(indexes_key.clone()).or_default();
            let index = *next;
            *next += 1;
            live.push(index);
            index
        };
        // Given back if this listen fails, or when the listener is dropped.
        let mut slot = IndexSlot {
            shared: self.shared.clone(),
            indexes_key,
            index,
            key: None,
        };
        let mut query = Map::new();
        query.insert("act".into(), "queryServer".into());
        query.insert("index".into(), index.into());
        query.insert("data".into(), Value::Null);
        query.insert("address".into(), at.ip().to_string().into());
        query.insert("port".into(), at.port().into());
        query.insert("addressType".into(), family.into());
        query.insert("backlog".into(), protocol::DEFAULT_BACKLOG.into());
        let (reply, handle, queue) = self.shared.request(query.clone()).await?;
        let errno = reply.get("errno").and_then(Value::as_i64).unwrap_or(0);
        if errno != 0 {
            return Err(Error::io(
                &line,
                io::Error::from_raw_os_error((-errno) as i32),
            ));
        }
        let key = reply
            .get("key")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let (inner, local) = match handle {
            // Shared: the primary passed the socket (bound, maybe not yet
            // listening when the primary is Node's).
            Some(handle) => {
                let fd: OwnedFd = handle.into_owned_fd();
                crate::sys::ipc::listen(fd.as_fd(), protocol::DEFAULT_BACKLOG)
                    .map_err(|e| Error::io(&line, e))?;
                let std = std::net::TcpListener::from(fd);
                std.set_nonblocking(true).map_err(|e| Error::io(&line, e))?;
                let listener =
                    tokio::net::TcpListener::from_std(std).map_err(|e| Error::io(&line, e))?;
                let local = listener.local_addr().map_err(|e| Error::io(&line, e))?;
                (Inner::Shared(listener), local)
            }
            None => {
                // Registered by the dispatcher as the reply came in.
                let rx = queue.ok_or_else(|| {
                    Error::io(&line, io::Error::other("the primary's reply has no key"))
                })?;
                let local = reply.get("sockname").and_then(sockname).unwrap_or(at);
                (Inner::RoundRobin(rx), local)
            }
        };
        self.shared.book().keys.push(key.clone());
        slot.key = Some(key);
        query.insert("act".into(), "listening".into());
        query.insert("port".into(), local.port().into());
        self.shared.send_cluster(query).await?;
        Ok(Listener {
            inner,
            local,
            disconnected: self.disconnected.clone(),
            _slot: slot,
        })
    }

    /// Send a message to the primary (`process.send()`); it arrives as
    /// [`Event::Message`](super::Event::Message).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let worker = child_process::cluster::Worker::from_primary().await?.unwrap();
    /// worker.send(&serde_json::json!({"served": 1})).await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`Channel::send`].
    pub async fn send<T: Serialize + ?Sized>(&self, msg: &T) -> Result<()> {
        self.shared.sender.send(msg).await
    }

    /// The next message from the primary ([`Primary::send`](super::Primary::send)),
    /// or `None` once the primary is gone.
    ///
    /// The worker reads its channel all the time (the cluster's own
    /// messages share it), so messages wait here until `recv` takes them:
    /// the newest 4,096 and at most 64 MiB. Older ones are dropped, and the
    /// next `recv` says how many (Node's worker drops a message no listener
    /// takes, silently).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let mut worker = child_process::cluster::Worker::from_primary().await?.unwrap();
    /// while let Some(msg) = worker.recv::<serde_json::Value>().await? {
    ///     println!("{msg}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Channel`] with [`ChannelError::Decode`] when a message is not
    /// JSON or not a `T`, [`ChannelError::TooLong`] for a line past the
    /// channel's limit, [`ChannelError::Lagged`] when unread messages were
    /// dropped. Each time only that is lost: the next call reads on.
    ///
    /// # Cancellation
    ///
    /// Cancel-safe.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>> {
        match std::future::poll_fn(|cx| self.messages.poll_next(cx)).await {
            Some(Ok(Ok(value))) => serde_json::from_value(value).map(Some).map_err(|e| {
                Error::Channel(ChannelError::Decode {
                    source: e,
                    excerpt: String::new(),
                })
            }),
            Some(Ok(Err(e))) => Err(Error::Channel(e)),
            Some(Err(missed)) => Err(Error::Channel(ChannelError::Lagged { missed })),
            None => Ok(None),
        }
    }

    /// Resolves once the primary has asked this worker to disconnect, or
    /// is gone: the listeners have stopped; finish what is in progress and
    /// exit.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let worker = child_process::cluster::Worker::from_primary().await?.unwrap();
    /// worker.disconnected().await;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Cancellation
    ///
    /// Cancel-safe.
    pub async fn disconnected(&self) {
        let mut rx = self.disconnected.clone();
        let _ = rx.wait_for(|&gone| gone).await;
    }

    /// Leave the cluster of this worker's own accord (`worker.disconnect()`
    /// in a Node worker): close the listeners, tell the primary this exit
    /// is expected, and close the channel.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let worker = child_process::cluster::Worker::from_primary().await?.unwrap();
    /// worker.disconnect().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Channel`] when the primary is gone before it answered.
    pub async fn disconnect(self) -> Result<()> {
        self.shared.close_all().await;
        self.shared
            .request(protocol::act_only("exitedAfterDisconnect"))
            .await?;
        self.shared.sender.disconnect();
        Ok(())
    }
}

fn sockname(v: &Value) -> Option<SocketAddr> {
    let ip = v.get("address")?.as_str()?.parse().ok()?;
    let port = u16::try_from(v.get("port")?.as_u64()?).ok()?;
    Some(SocketAddr::new(ip, port))
}

/// Read the channel: replies to their requests, connections to their
/// listeners, user messages to `recv`.
async fn dispatch(
    mut receiver: ChannelReceiver,
    shared: Arc<Shared>,
    messages: EventSender<Message>,
    disconnected: watch::Sender<bool>,
) {
    loop {
        let raw = match receiver.recv_raw().await {
            Ok(Some(raw)) => raw,
            Ok(None) => break,
            // Only that message is lost: `recv` says so, and reads on.
            Err(Error::Channel(
                e @ (ChannelError::Decode { .. } | ChannelError::TooLong { .. }),
            )) => {
                messages.send(Err(e));
                continue;
            }
            Err(_) => break,
        };
        let RawMessage {
            value,
            internal,
            handle,
        } = raw;
        if !internal {
            messages.send(Ok(value));
            continue;
        }
        let Some(msg) = protocol::cluster_message(value) else {
            continue;
        };
        match act(&msg) {
            Some("newconn") => {
                let seq = msg.get("seq").and_then(Value::as_u64).unwrap_or(0);
                let key = msg.get("key").and_then(Value::as_str).unwrap_or_default();
                let accepted = match handle {
                    Some(Handle::TcpStream(stream)) => {
                        let tx = shared.book().listeners.get(key).cloned();
                        tx.is_some_and(|tx| tx.try_send(stream).is_ok())
                    }
                    _ => false,
                };
                let mut fields = protocol::reply(seq);
                fields.insert("accepted".into(), accepted.into());
                let _ = shared.send_cluster(fields).await;
            }
            Some("disconnect") => {
                shared.close_all().await;
                let _ = disconnected.send(true);
            }
            Some(_) => {}
            None => {
                if let Some(ack) = msg.get("ack").and_then(Value::as_u64) {
                    let mut book = shared.book();
                    let Some(waiter) = book.pending.remove(&ack) else {
                        continue;
                    };
                    // A round-robin listen: its queue exists before the
                    // next message is read, as Node's child.js registers
                    // the handle in the reply's callback; a `newconn`
                    // right behind the reply would otherwise be refused.
                    let key = msg.get("key").and_then(Value::as_str);
                    let queue = match (key, msg.get("errno"), &handle) {
                        (Some(key), Some(Value::Null), None) => {
                            let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
                            book.listeners.insert(key.to_owned(), tx);
                            Some(rx)
                        }
                        _ => None,
                    };
                    drop(book);
                    let _ = waiter.send((msg, handle, queue));
                }
            }
        }
    }
    // The primary is gone: stop the listeners, fail the waiting requests.
    {
        let mut book = shared.book();
        book.listeners.clear();
        book.pending.clear();
    }
    let _ = disconnected.send(true);
}

/// A listening socket shared through the cluster primary, from
/// [`Worker::listen`]: `accept` yields tokio `TcpStream`s whether the
/// primary hands out connections (round robin) or shares the socket.
#[derive(Debug)]
pub struct Listener {
    inner: Inner,
    local: SocketAddr,
    disconnected: watch::Receiver<bool>,
    _slot: IndexSlot,
}

/// A listen's place in the worker's book: given back when the listener
/// is dropped (or the listen failed), with a `close` to the primary, as a
/// Node server's `close()` does.
#[derive(Debug)]
struct IndexSlot {
    shared: Arc<Shared>,
    indexes_key: String,
    index: u64,
    /// The key the primary answered, once it did.
    key: Option<String>,
}

impl Drop for IndexSlot {
    fn drop(&mut self) {
        let was_open = {
            let mut book = self.shared.book();
            if let Some((_, live)) = book.index.get_mut(&self.indexes_key) {
                live.retain(|&i| i != self.index);
                if live.is_empty() {
                    book.index.remove(&self.indexes_key);
                }
            }
            match &self.key {
                Some(key) => {
                    book.listeners.remove(key);
                    let before = book.keys.len();
                    book.keys.retain(|k| k != key);
                    book.keys.len() != before
                }
                None => false,
            }
        };
        // Tell the primary, unless a disconnect already closed it.
        if let (true, Some(key), Ok(runtime)) = (
            was_open,
            self.key.take(),
            tokio::runtime::Handle::try_current(),
        ) {
            let shared = self.shared.clone();
            runtime.spawn(async move {
                let mut fields = protocol::act_only("close");
                fields.insert("key".into(), key.into());
                let _ = shared.send_cluster(fields).await;
            });
        }
    }
}

#[derive(Debug)]
enum Inner {
    RoundRobin(mpsc::Receiver<TcpStream>),
    Shared(tokio::net::TcpListener),
}

impl Listener {
    /// The next connection and its peer's address.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let worker = child_process::cluster::Worker::from_primary().await?.unwrap();
    /// let mut listener = worker.listen("0.0.0.0:8080").await?;
    /// let (stream, peer) = listener.accept().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotConnected`] once the worker is disconnected
    /// (connections already handed to it are returned first); other i/o
    /// errors of `accept(2)` in shared mode.
    ///
    /// # Cancellation
    ///
    /// Cancel-safe: a connection not returned stays queued.
    pub async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        let gone = || io::Error::new(io::ErrorKind::NotConnected, "the worker is disconnected");
        match &mut self.inner {
            Inner::RoundRobin(rx) => {
                let stream = rx.recv().await.ok_or_else(gone)?;
                // A peer that reset before we asked has no address; the
                // stream still reports the error on first use.
                let peer = stream
                    .peer_addr()
                    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                Ok((stream, peer))
            }
            Inner::Shared(listener) => {
                let mut gone_rx = self.disconnected.clone();
                tokio::select! {
                    r = listener.accept() => r,
                    _ = gone_rx.wait_for(|&g| g) => Err(gone()),
                }
            }
        }
    }

    /// The address the primary bound (with the real port of `listen(0)`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let worker = child_process::cluster::Worker::from_primary().await?.unwrap();
    /// let listener = worker.listen("127.0.0.1:0").await?;
    /// println!("port {}", listener.local_addr().port());
    /// # Ok(())
    /// # }
    /// ```
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    use super::*;
    use crate::cluster::events::EVENTS_KEPT;

    /// A worker that does not call `recv` while its primary floods it keeps
    /// the newest messages, says how many older ones went, and reports a
    /// line it could not read rather than skip it.
    #[tokio::test]
    async fn unread_messages_keep_the_newest_and_say_how_many_went() {
        let (ours, mut primary) = UnixStream::pair().unwrap();
        let mut worker = Worker::over(1, Channel::from_fd(ours.into()).unwrap())
            .await
            .unwrap();
        let sent = EVENTS_KEPT as u64 + 1000;
        let mut text = String::new();
        for i in 0..sent {
            text += &format!("{{\"i\":{i}}}\n");
        }
        text += "not json\n";
        // The primary writes everything, then goes away.
        tokio::task::spawn_blocking(move || primary.write_all(text.as_bytes()))
            .await
            .unwrap()
            .unwrap();
        worker.disconnected().await;
        match worker.recv::<Value>().await {
            Err(Error::Channel(ChannelError::Lagged { missed })) => assert_eq!(missed, 1001),
            other => panic!("not Lagged first: {other:?}"),
        }
        for i in 1001..sent {
            let msg = worker.recv::<Value>().await.unwrap().unwrap();
            assert_eq!(msg["i"], i);
        }
        assert!(matches!(
            worker.recv::<Value>().await,
            Err(Error::Channel(ChannelError::Decode { excerpt, .. })) if excerpt.starts_with("not json")
        ));
        assert!(worker.recv::<Value>().await.unwrap().is_none());
    }
}
