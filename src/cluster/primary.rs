//! The primary: one task that owns every piece of cluster state, fed by
//! small tasks that each wait on one thing (a worker's channel, a worker's
//! exit, a listener's accept) and by the [`Primary`] handle's calls. All
//! of them run on one thread of the primary's own (see [`start`]).
//!
//! One owner and no locks, as Node's primary is one event loop; the
//! bookkeeping follows `lib/internal/cluster/{primary,round_robin_handle,
//! shared_handle}.js` with the changes CLUSTER.md §1.5 and §6 ask for.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokio::io::unix::AsyncFd;
use tokio::io::AsyncBufReadExt;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;

use super::protocol::{self, Query, Target};
use super::{
    no_worker, Address, Event, Health, Primary, Reload, Restart, Scheduling, Setup, Shutdown,
    WorkerId, WorkerInfo, WorkerState,
};
use crate::channel::{ChannelReceiver, ChannelSender, RawMessage};
use crate::child::Child;
use crate::error::{ChannelError, Error, ExitStatus, Result};
use crate::signal::Signal;

/// Accepted connections the primary holds for a key while no worker is
/// free; past this, connections wait in the kernel's backlog.
const MAX_QUEUED: usize = 1024;

/// Listening sockets the primary keeps for one worker, and in all.
const MAX_KEYS_PER_WORKER: usize = 64;
const MAX_KEYS: usize = 1024;

/// Calls from the [`Primary`] handle.
#[derive(Debug)]
pub(crate) enum Call {
    Send {
        worker: Option<WorkerId>,
        msg: Value,
        done: oneshot::Sender<Result<()>>,
    },
    Workers(oneshot::Sender<Vec<WorkerInfo>>),
    Fork(oneshot::Sender<Result<WorkerId>>),
    Disconnect {
        worker: WorkerId,
        done: oneshot::Sender<Result<()>>,
    },
    Kill {
        worker: WorkerId,
        signal: Signal,
        done: oneshot::Sender<Result<()>>,
    },
    Shutdown {
        drain: Duration,
        done: oneshot::Sender<Shutdown>,
    },
    Reload(oneshot::Sender<Result<Reload>>),
    ReopenLogs(oneshot::Sender<()>),
    /// The [`Primary`] is being dropped; its `Drop` waits for
    /// [`Stopped`].
    Dropped,
}

/// Set by the primary's thread once a dropped [`Primary`] may return: the
/// workers are killed, or a shutdown already consumed the handle and goes
/// on by itself.
#[derive(Debug, Default)]
pub(crate) struct Stopped {
    done: std::sync::Mutex<bool>,
    cv: std::sync::Condvar,
}

impl Stopped {
    fn set(&self) {
        *self.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_all();
    }

    /// Wait for `set`, at most `limit`.
    pub(crate) fn wait(&self, limit: Duration) {
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self.cv.wait_timeout_while(done, limit, |done| !*done);
    }
}

/// What the helper tasks report.
enum Input {
    Message(WorkerId, RawMessage),
    BadMessage(WorkerId, Error),
    Eof(WorkerId),
    Exited(WorkerId, Result<ExitStatus>),
    /// The channel of an exited worker is still open (a process it
    /// started holds the socket): report the exit anyway.
    ExitedLongAgo(WorkerId),
    Conn(Arc<str>, OwnedFd, OwnedSemaphorePermit),
    AcceptFailed(Arc<str>, std::io::Error),
    DrainDeadline,
    KillDeadline,
    /// A slot's restart delay has passed.
    Restart(usize),
    /// A datagram on a worker's `NOTIFY_SOCKET`.
    Notify(WorkerId, String),
    /// A worker's time to become ready is up.
    ReadyDeadline(WorkerId),
    /// A worker retired by a reload had its time to drain.
    Drained(WorkerId),
    /// ... and its kill signal's grace.
    KillRetired(WorkerId),
    /// Time to check heartbeats and memory.
    HealthTick,
    /// `SIGUSR1`: reopen the log files.
    ReopenLogs,
    /// `SIGTERM` or `SIGINT` with `Setup::stop_on_signals`.
    Stop,
    /// Time for a systemd watchdog ping.
    Watchdog,
}

/// A message for a worker's writer task.
struct Out {
    msg: Value,
    handle: Option<(Arc<OwnedFd>, &'static str)>,
    done: Option<oneshot::Sender<Result<()>>>,
}

struct WorkerSlot {
    pid: u32,
    state: WorkerState,
    out: mpsc::UnboundedSender<Out>,
    signals: mpsc::UnboundedSender<Signal>,
    /// Keys this worker was answered for.
    keys: Vec<Arc<str>>,
    expected: bool,
    channel_open: bool,
    /// The exit, held until the channel's last messages are read.
    exit: Option<Result<ExitStatus>>,
    slot: usize,
    started: Instant,
    /// Ready: listening where its slot listened, or said so.
    ready: bool,
    said_ready: bool,
    /// Keys it sent `listening` for.
    listening: Vec<Arc<str>>,
    /// Connections handed to it.
    dispatched: u64,
    /// Signals `Primary::kill` sent it: its exit is expected if one of
    /// them ended it.
    killed_with: Vec<Signal>,
    /// Its last heartbeat, once it sent one (only then is it watched).
    last_beat: Option<Instant>,
    /// Recycled after this many connections (`Setup::recycle_after`).
    recycle_at: Option<u64>,
    /// Already being replaced for its health.
    replacing: bool,
    /// ... because it hung.
    hung: bool,
    /// Not judged again before this (a replacement for its health failed).
    retry_at: Option<Instant>,
    /// Its `NOTIFY_SOCKET` reader, stopped with it.
    _notify: Option<TaskGuard>,
}

/// Aborts a helper task when dropped.
struct TaskGuard(AbortHandle);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A rolling reload in progress.
struct Reloading {
    /// Slots still to replace, in order.
    queue: VecDeque<usize>,
    /// The slot being replaced: its old worker and the new one.
    step: Option<(usize, WorkerId, WorkerId)>,
    replaced: Vec<(WorkerId, WorkerId)>,
    /// The caller of `Primary::reload`; `None` for a replacement the
    /// primary started itself (a worker's health).
    done: Option<oneshot::Sender<Result<Reload>>>,
}

/// A place for one worker, kept across its restarts (PM2's instance).
struct Slot {
    worker: Option<WorkerId>,
    /// When its workers crashed, within the crash window.
    crashes: VecDeque<Instant>,
    /// The next restart's delay.
    delay: Duration,
    given_up: bool,
    /// Restarts so far.
    restarts: usize,
    /// Where its ready workers listened: what a replacement must listen
    /// on to be ready.
    keys: Vec<Arc<str>>,
}

impl Slot {
    fn new(delay: Duration) -> Slot {
        Slot {
            worker: None,
            crashes: VecDeque::new(),
            delay,
            given_up: false,
            restarts: 0,
            keys: Vec::new(),
        }
    }
}

/// How often worker memory is read with `Setup::max_memory` (PM2 polls
/// every 30 s; reading `/proc` is cheap).
const MEMORY_POLL: Duration = Duration::from_secs(1);

/// A worker up this long has its restart delay reset to the first one
/// (PM2's 30 s).
const STABLE_UPTIME: Duration = Duration::from_secs(30);

/// An accepted connection on its way to a worker.
struct Conn {
    fd: Arc<OwnedFd>,
    _permit: OwnedSemaphorePermit,
    /// Workers that refused it (`accepted: false`): it goes to another.
    refused_by: Vec<WorkerId>,
}

struct InFlight {
    worker: WorkerId,
    key: Arc<str>,
    conn: Conn,
}

/// One listening socket, shared by the workers that asked for its key.
struct KeyState {
    data: Value,
    address: Address,
    /// The one fd of the key (the accept task holds the same `Arc`).
    socket: Arc<Bound>,
    /// `net.Native` or `dgram.Native`.
    kind: &'static str,
    shared: bool,
    workers: Vec<WorkerId>,
    /// Round robin: workers with no `newconn` in flight, in turn order.
    free: VecDeque<WorkerId>,
    queue: VecDeque<Conn>,
    accept: Option<tokio::task::JoinHandle<()>>,
    /// A unix socket file to remove when the primary stops.
    path: Option<PathBuf>,
}

impl Drop for KeyState {
    fn drop(&mut self) {
        if let Some(task) = &self.accept {
            task.abort();
        }
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

struct Draining {
    /// Callers of `Primary::shutdown`; none when a signal started it (the
    /// report then comes as `Event::Stopped`).
    done: Vec<oneshot::Sender<Shutdown>>,
    exits: Vec<(WorkerId, ExitStatus)>,
    drained: bool,
}

struct State {
    setup: Setup,
    next_id: WorkerId,
    seq: u64,
    workers: BTreeMap<WorkerId, WorkerSlot>,
    keys: HashMap<Arc<str>, KeyState>,
    inflight: HashMap<u64, InFlight>,
    events: super::events::EventSender,
    /// From the helper tasks other than the workers' readers: accepts,
    /// exits, timers. Served before `messages`.
    inputs: mpsc::UnboundedSender<Input>,
    /// From the workers' readers, bounded: a worker that sends faster than
    /// the primary can take its messages waits (its socket fills), instead
    /// of growing the primary's memory and delaying the accepts behind a
    /// backlog.
    messages: mpsc::Sender<Input>,
    draining: Option<Draining>,
    slots: Vec<Slot>,
    reloading: Option<Reloading>,
    /// `READY=1` went to systemd.
    told_ready: bool,
    /// Listening sockets systemd passed (`Setup::socket_activation`), taken
    /// by the first `listen` on their address.
    inherited: Vec<OwnedFd>,
    /// Where the workers' output goes (`Setup::logs`).
    logs: Option<super::logs::LogWriter>,
    /// The tasks reading the workers' output, awaited by a shutdown.
    output_tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The workers' watch tasks: each kills its worker's group when the
    /// state is dropped (its signal channel closes).
    watchers: Vec<tokio::task::JoinHandle<()>>,
    stopped: Arc<Stopped>,
    /// Accept tasks being stopped by a shutdown.
    closing: Vec<tokio::task::JoinHandle<()>>,
    /// The private directory of the workers' `NOTIFY_SOCKET`s.
    notify_dir: Option<NotifyDir>,
    /// The sockets of `Setup::listen_fds`, passed to every worker.
    listen_fds: Vec<Arc<OwnedFd>>,
    /// Unix socket files among them, removed when the primary stops.
    _socket_files: Vec<SocketFile>,
}

/// A unix socket path the primary created; removed with the primary.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Bind the addresses of `Setup::listen_fds`.
fn bind_listen_fds(addrs: &[String]) -> Result<(Vec<Arc<OwnedFd>>, Vec<SocketFile>)> {
    let mut fds = Vec::with_capacity(addrs.len());
    let mut files = Vec::new();
    for addr in addrs {
        let line = crate::CommandLine::verbatim(&format!("listen on {addr}"));
        let err = |e| Error::io(&line, e);
        let fd: OwnedFd = if let Some(path) = addr.strip_prefix("unix:") {
            let listener = std::os::unix::net::UnixListener::bind(path).map_err(err)?;
            files.push(SocketFile(path.into()));
            listener.into()
        } else {
            let at: std::net::SocketAddr = addr.parse().map_err(|_| {
                err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "expected ip:port or unix:/path",
                ))
            })?;
            let listener = tcp_listener(at, protocol::DEFAULT_BACKLOG).map_err(err)?;
            // Blocking, as systemd passes them: a worker that accepts in
            // a plain loop must wait, not get EAGAIN. (The flag belongs
            // to the socket, shared by every worker; the primary never
            // accepts on it.)
            listener.set_nonblocking(false).map_err(err)?;
            listener.into()
        };
        fds.push(Arc::new(fd));
    }
    Ok((fds, files))
}

/// Start the primary on a thread of its own, with a current-thread
/// runtime: every task of the dispatch (accepts, the workers' channels,
/// the state) then runs on one thread, as Node's primary is one event
/// loop. On the caller's multi-thread runtime the same tasks woke each
/// other across its workers: the cluster bench's primary spent 15 % more
/// CPU per connection (36 → 43 µs) and 30 % more context switches.
pub(super) async fn start(setup: Setup, n: usize) -> Result<Primary> {
    let (ready_tx, ready) = oneshot::channel();
    let stopped = Arc::new(Stopped::default());
    let cancelled = Arc::new(AtomicBool::new(false));
    let (thread_stopped, thread_cancelled) = (stopped.clone(), cancelled.clone());
    let spawned = std::thread::Builder::new()
        .name("cluster-primary".into())
        .spawn(move || {
            // Whatever way this thread ends (an error before any worker,
            // a panic), no drop waits for it past that.
            let (stopped, cancelled) = (thread_stopped, thread_cancelled);
            let _release = SetOnDrop(stopped.clone());
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let line = crate::CommandLine::verbatim("start the cluster primary's runtime");
                    let _ = ready_tx.send(Err(Error::io(&line, e)));
                    return;
                }
            };
            rt.block_on(async move {
                let (mut state, from, primary) = match begin(setup, stopped) {
                    Ok(begun) => begun,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                if let Err(e) = state.first_workers(n, &cancelled) {
                    // The workers forked so far die before the caller
                    // hears of it (it may exit at once).
                    release(primary);
                    state.abandon(from).await;
                    let _ = ready_tx.send(Err(e));
                    return;
                }
                match ready_tx.send(Ok(primary)) {
                    Ok(()) => state.run(from).await,
                    // The caller of `start` went away (its future was
                    // dropped, and waits in `Starting::drop`): as if it
                    // had dropped the `Primary`.
                    Err(primary) => {
                        release(primary.expect("sent Ok"));
                        state.abandon(from).await;
                    }
                }
            });
            // Dropping the runtime ends what is left: the signal
            // listeners, timers, readers of workers that are gone.
        });
    if let Err(e) = spawned {
        let line = crate::CommandLine::verbatim("start the cluster primary's thread");
        return Err(Error::io(&line, e));
    }
    Starting {
        ready,
        cancelled,
        stopped,
        done: false,
    }
    .await
}

/// The caller's side of a `start`. Dropped before the primary was handed
/// over (a `timeout` around `start`), it cancels the start and waits, as
/// dropping the `Primary` would, until the workers forked so far are dead:
/// a `main` that gives up on a start and exits leaves no worker behind.
struct Starting {
    ready: oneshot::Receiver<Result<Primary>>,
    /// Stops the forking between two workers.
    cancelled: Arc<AtomicBool>,
    /// The state's: set once it is abandoned.
    stopped: Arc<Stopped>,
    done: bool,
}

impl std::future::Future for Starting {
    type Output = Result<Primary>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<Primary>> {
        let got = std::task::ready!(std::pin::Pin::new(&mut self.ready).poll(cx));
        self.done = true;
        std::task::Poll::Ready(got.unwrap_or_else(|_| Err(super::stopped())))
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.cancelled.store(true, Ordering::Release);
        // From here the primary's thread cannot hand the `Primary` over:
        // it abandons the state instead.
        self.ready.close();
        match self.ready.try_recv() {
            // Handed over just before: its own drop kills and waits.
            Ok(Ok(primary)) => drop(primary),
            _ => self.stopped.wait(super::DROP_WAIT),
        }
    }
}

/// Sets its [`Stopped`] when dropped.
struct SetOnDrop(Arc<Stopped>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.set();
    }
}

/// Drop a `Primary` on the primary's own thread, which its `Drop` must not
/// wait for; the state is abandoned right after.
fn release(mut primary: Primary) {
    let done = Arc::new(Stopped::default());
    done.set();
    primary.stopped = done;
}

/// How long a dropped primary reads the pipes of its dead workers for
/// their last lines.
const LAST_LINES_GRACE: Duration = Duration::from_millis(100);

/// Workers' messages read and not yet handled, for all workers together.
const MESSAGES_QUEUED: usize = 256;

type Begun = (State, Receivers, Primary);

/// What the state task reads.
struct Receivers {
    calls: mpsc::UnboundedReceiver<Call>,
    inputs: mpsc::UnboundedReceiver<Input>,
    messages: mpsc::Receiver<Input>,
}

/// Bind, and make the state and the `Primary`, on the primary's thread.
fn begin(setup: Setup, stopped: Arc<Stopped>) -> Result<Begun> {
    let (calls_tx, calls) = mpsc::unbounded_channel();
    let (events_tx, events) = super::events::channel();
    let (inputs_tx, inputs) = mpsc::unbounded_channel();
    let (messages_tx, messages) = mpsc::channel(MESSAGES_QUEUED);
    let (listen_fds, socket_files) = bind_listen_fds(&setup.listen_fds)?;
    let setup_socket_activation = setup.socket_activation;
    let logs =
        match &setup.logs {
            Some(logs) => Some(super::logs::start(logs).map_err(|e| {
                Error::io(&crate::CommandLine::verbatim("open the cluster's logs"), e)
            })?),
            None => None,
        };
    if let Some(super::Logs::Files { .. }) = &setup.logs {
        let inputs = inputs_tx.clone();
        let mut usr1 =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
                .map_err(|e| Error::io(&crate::CommandLine::verbatim("listen for SIGUSR1"), e))?;
        tokio::spawn(async move {
            while usr1.recv().await.is_some() {
                if inputs.send(Input::ReopenLogs).is_err() {
                    return;
                }
            }
        });
    }
    let state = State {
        setup,
        next_id: 1,
        seq: 0,
        workers: BTreeMap::new(),
        keys: HashMap::new(),
        inflight: HashMap::new(),
        events: events_tx,
        inputs: inputs_tx,
        messages: messages_tx,
        draining: None,
        slots: Vec::new(),
        reloading: None,
        inherited: if setup_socket_activation {
            crate::sys::ipc::take_listen_fds()
        } else {
            Vec::new()
        },
        told_ready: false,
        logs,
        closing: Vec::new(),
        output_tasks: Vec::new(),
        watchers: Vec::new(),
        stopped,
        notify_dir: None,
        listen_fds,
        _socket_files: socket_files,
    };
    let primary = Primary {
        calls: calls_tx,
        events,
        stopped: state.stopped.clone(),
    };
    Ok((
        state,
        Receivers {
            calls,
            inputs,
            messages,
        },
        primary,
    ))
}

impl State {
    /// Fork the first `n` workers and start the timers and signal
    /// listeners. On error the caller abandons the state.
    fn first_workers(&mut self, n: usize, cancelled: &AtomicBool) -> Result<()> {
        for _ in 0..n {
            if cancelled.load(Ordering::Acquire) {
                return Err(super::stopped());
            }
            self.fork(None)?;
        }
        if let Some(every) = self.health_interval() {
            self.after(every, Input::HealthTick);
        }
        if let Some(every) = self.watchdog() {
            self.after(every / 2, Input::Watchdog);
        }
        if self.setup.stop_on_signals.is_some() {
            use tokio::signal::unix::{signal, SignalKind};
            let line = crate::CommandLine::verbatim("listen for SIGTERM and SIGINT");
            for kind in [SignalKind::terminate(), SignalKind::interrupt()] {
                let mut stream = signal(kind).map_err(|e| Error::io(&line, e))?;
                let inputs = self.inputs.clone();
                tokio::spawn(async move {
                    while stream.recv().await.is_some() {
                        if inputs.send(Input::Stop).is_err() {
                            return;
                        }
                    }
                });
            }
        }
        Ok(())
    }

    async fn run(mut self, mut from: Receivers) {
        let mut calls_open = true;
        loop {
            tokio::select! {
                // No priority (tokio picks a ready branch at random):
                // callers that never stop must not hold up connections,
                // nor a flood of workers' messages a call (the drop
                // waits for `Call::Dropped`). The messages' queue is
                // bounded, so an accept waits behind a few at most.
                call = from.calls.recv(), if calls_open => match call {
                    // `shutdown(self)` consumed the `Primary` (its future
                    // may have been dropped since): the drain goes on.
                    Some(Call::Dropped) | None
                        if self.draining.as_ref().is_some_and(|d| !d.done.is_empty()) =>
                    {
                        calls_open = false;
                        self.stopped.set();
                    }
                    // The `Primary` was dropped, even during a drain a
                    // signal started (`stop_on_signals`).
                    Some(Call::Dropped) | None => return self.abandon(from).await,
                    Some(call) => self.call(call),
                },
                input = from.inputs.recv() => match input {
                    Some(input) => self.input(input),
                    None => return,
                },
                message = from.messages.recv() => match message {
                    Some(message) => self.input(message),
                    None => return,
                },
            }
            if self.draining.is_some() && self.workers.is_empty() {
                let draining = self.draining.take().expect("checked");
                for task in std::mem::take(&mut self.closing) {
                    let _ = task.await;
                }
                // The workers' last lines: read to the end of their pipes
                // (a process they left behind may hold one open: not past
                // the kill grace), then written out.
                let output = std::mem::take(&mut self.output_tasks);
                let _ = tokio::time::timeout(self.setup.kill_grace, async {
                    for task in output {
                        let _ = task.await;
                    }
                })
                .await;
                if let Some(logs) = &self.logs {
                    logs.flush().await;
                }
                let report = Shutdown {
                    drained: draining.drained,
                    exits: draining.exits,
                };
                if draining.done.is_empty() {
                    self.emit(Event::Stopped(report));
                } else {
                    for done in draining.done {
                        let _ = done.send(report.clone());
                    }
                }
                self.stopped.set();
                return;
            }
        }
    }

    /// The [`Primary`] was dropped: kill every worker and close every
    /// listener, then let the dropping thread go (it waits for
    /// [`Stopped`], at most a second). `from` is dropped last: freeing a
    /// backlog comes after the kills.
    async fn abandon(mut self, from: Receivers) {
        let watchers = std::mem::take(&mut self.watchers);
        // The accept tasks hold the listening sockets until they are
        // dropped, which an abort only asks for.
        let mut accepts = std::mem::take(&mut self.closing);
        for key in self.keys.values_mut() {
            if let Some(task) = key.accept.take() {
                task.abort();
                accepts.push(task);
            }
        }
        let output = std::mem::take(&mut self.output_tasks);
        let logs = self.logs.clone();
        let stopped = self.stopped.clone();
        // Closes every worker's signal channel: its watch task kills the
        // group and reaps the worker.
        drop(self);
        for task in watchers.into_iter().chain(accepts) {
            let _ = task.await;
        }
        drop(from);
        // The workers' last lines, to the logs (events went with the
        // `Primary`): their pipes end with them, unless a process they
        // left behind holds one; that one gets the grace a run gives
        // such a process (`capture::Rules`), not the whole second.
        if let Some(logs) = logs {
            let _ = tokio::time::timeout(LAST_LINES_GRACE, async {
                for task in output {
                    let _ = task.await;
                }
            })
            .await;
            logs.flush().await;
        }
        stopped.set();
    }

    fn next_seq(&mut self) -> u64 {
        let seq = self.seq;
        self.seq += 1;
        seq
    }

    fn emit(&self, event: Event) {
        // The `Primary` may be gone (a shutdown in progress); nothing to tell.
        self.events.send(event);
    }

    /// Start a worker in `slot` (a new slot when `None`).
    fn fork(&mut self, slot: Option<usize>) -> Result<WorkerId> {
        self.fork_into(slot, false)
    }

    /// Start a worker; a `standby` one does not take its slot until it is
    /// ready (a reload's replacement).
    fn fork_into(&mut self, slot: Option<usize>, standby: bool) -> Result<WorkerId> {
        let id = self.next_id;
        let slot = slot.unwrap_or(self.slots.len());
        let notify = self.notify_socket(id);
        let s = &self.setup;
        let mut fork = crate::fork(&s.program)
            .args(&s.args)
            .exec_args(&s.exec_args)
            .kill_signal(s.kill_signal)
            .kill_grace(s.kill_grace)
            .kill_on_drop(true)
            .in_own_group()
            .listen_fds(self.listen_fds.clone());
        if let Some(path) = &s.exec_path {
            fork = fork.exec_path(path);
        }
        if let Some(dir) = &s.cwd {
            fork = fork.cwd(dir);
        }
        if s.env_clear {
            fork = fork.env_clear();
        }
        for (k, v) in &s.env {
            fork = match v {
                Some(v) => fork.env(k, v),
                None => fork.env_remove(k),
            };
        }
        fork = fork
            .env("NODE_UNIQUE_ID", id.to_string())
            // PM2's name for the slot: stable across restarts.
            .env("NODE_APP_INSTANCE", slot.to_string())
            .silent(s.silent || s.logs.is_some());
        if let Some((interval, _)) = s.heartbeat {
            fork = fork.env("CP_HEARTBEAT_MS", interval.as_millis().max(1).to_string());
        }
        let notify = match notify {
            Ok((path, socket)) => {
                fork = fork.env("NOTIFY_SOCKET", path);
                Some(socket)
            }
            // Readiness then comes from `listening` or a message only.
            Err(_) => None,
        };
        let mut child = fork.spawn()?;
        self.next_id += 1;
        let pid = child.pid();
        let channel = child.take_channel().expect("fork gives a channel");
        let (sender, receiver) = channel.split();
        let (out, out_rx) = mpsc::unbounded_channel();
        let (signals, signals_rx) = mpsc::unbounded_channel();
        tokio::spawn(write(sender, out_rx));
        tokio::spawn(read(id, receiver, self.messages.clone()));
        if let Some(stdout) = child.stdout.take() {
            let to = self.output_to(id, crate::Stream::Stdout);
            self.output_tasks.push(tokio::spawn(lines(stdout, to)));
        }
        if let Some(stderr) = child.stderr.take() {
            let to = self.output_to(id, crate::Stream::Stderr);
            self.output_tasks.push(tokio::spawn(lines(stderr, to)));
        }
        self.output_tasks.retain(|t| !t.is_finished());
        self.watchers.retain(|t| !t.is_finished());
        self.watchers.push(tokio::spawn(watch(
            id,
            child,
            signals_rx,
            self.inputs.clone(),
        )));
        self.workers.insert(
            id,
            WorkerSlot {
                pid,
                state: WorkerState::Started,
                out,
                signals,
                keys: Vec::new(),
                expected: false,
                channel_open: true,
                exit: None,
                slot,
                started: Instant::now(),
                ready: false,
                said_ready: false,
                dispatched: 0,
                killed_with: Vec::new(),
                last_beat: None,
                recycle_at: self.setup.recycle_after.map(|(n, spread)| {
                    // Workers started together are not all recycled at once.
                    let jitter = if spread == 0 {
                        0
                    } else {
                        jitter_seed() % (spread + 1)
                    };
                    n + jitter
                }),
                replacing: false,
                hung: false,
                retry_at: None,
                listening: Vec::new(),
                _notify: notify.map(|socket| {
                    let task = tokio::spawn(notifications(id, socket, self.inputs.clone()));
                    TaskGuard(task.abort_handle())
                }),
            },
        );
        if slot == self.slots.len() {
            self.slots.push(Slot::new(self.setup.restart_delay.0));
        }
        if !standby {
            self.slots[slot].worker = Some(id);
        }
        if let Some(limit) = self.setup.ready_timeout {
            self.after(limit, Input::ReadyDeadline(id));
        }
        self.emit(Event::Fork {
            worker: id,
            pid,
            slot,
        });
        Ok(id)
    }

    fn send_to(&self, worker: WorkerId, out: Out) {
        if let Some(w) = self.workers.get(&worker) {
            // A worker whose writer has gone is dying: its exit comes.
            let _ = w.out.send(out);
        }
    }

    fn send_cluster(&mut self, worker: WorkerId, fields: Map<String, Value>) -> u64 {
        let seq = self.next_seq();
        self.send_to(
            worker,
            Out {
                msg: protocol::message(fields, seq),
                handle: None,
                done: None,
            },
        );
        seq
    }

    fn call(&mut self, call: Call) {
        match call {
            Call::Send { worker, msg, done } => {
                let ids: Vec<WorkerId> = match worker {
                    Some(id) if self.workers.contains_key(&id) => vec![id],
                    Some(id) => {
                        let _ = done.send(Err(no_worker(id)));
                        return;
                    }
                    None => self.workers.keys().copied().collect(),
                };
                let mut results = Vec::with_capacity(ids.len());
                for id in ids {
                    let (tx, rx) = oneshot::channel();
                    self.send_to(
                        id,
                        Out {
                            msg: msg.clone(),
                            handle: None,
                            done: Some(tx),
                        },
                    );
                    results.push(rx);
                }
                tokio::spawn(async move {
                    let mut first = Ok(());
                    for rx in results {
                        let r = rx.await.unwrap_or(Err(super::stopped()));
                        if first.is_ok() {
                            first = r;
                        }
                    }
                    let _ = done.send(first);
                });
            }
            Call::Workers(done) => {
                let list = self
                    .workers
                    .iter()
                    .map(|(&id, w)| {
                        let usage = crate::sys::usage(w.pid as i32);
                        WorkerInfo {
                            id,
                            pid: w.pid,
                            state: w.state,
                            slot: w.slot,
                            ready: w.ready,
                            uptime: w.started.elapsed(),
                            restarts: self.slots[w.slot].restarts,
                            rss: usage.map(|u| u.1),
                            cpu: usage.map(|u| u.0),
                            dispatched: w.dispatched,
                            in_flight: self.inflight.values().filter(|f| f.worker == id).count(),
                            last_heartbeat: w.last_beat.map(|t| t.elapsed()),
                        }
                    })
                    .collect();
                let _ = done.send(list);
            }
            Call::Fork(done) => {
                let r = match self.draining {
                    Some(_) => Err(super::busy("the cluster is shutting down")),
                    None => self.fork(None),
                };
                let _ = done.send(r);
            }
            Call::Disconnect { worker, done } => {
                let r = if self.workers.contains_key(&worker) {
                    self.scale_down(worker);
                    self.disconnect(worker);
                    Ok(())
                } else {
                    Err(no_worker(worker))
                };
                let _ = done.send(r);
            }
            Call::Kill {
                worker,
                signal,
                done,
            } => {
                let r = match self.workers.get_mut(&worker) {
                    Some(w) => {
                        w.killed_with.push(signal);
                        let _ = w.signals.send(signal);
                        Ok(())
                    }
                    None => Err(no_worker(worker)),
                };
                let _ = done.send(r);
            }
            Call::Shutdown { drain, done } => self.shutdown(drain, Some(done)),
            // Handled by `run`.
            Call::Dropped => {}
            Call::ReopenLogs(done) => {
                let logs = self.logs.clone();
                tokio::spawn(async move {
                    if let Some(logs) = logs {
                        logs.reopen().await;
                    }
                    let _ = done.send(());
                });
            }
            Call::Reload(done) => {
                if self.draining.is_some() {
                    let _ = done.send(Err(super::busy("the cluster is shutting down")));
                    return;
                }
                if self.reloading.as_ref().is_some_and(|r| r.done.is_some()) {
                    let _ = done.send(Err(super::busy("a reload is already in progress")));
                    return;
                }
                if let Some(r) = &mut self.reloading {
                    // Health replacements in progress: the reload takes
                    // them over and goes on with every other slot.
                    let more: Vec<usize> = self
                        .slots
                        .iter()
                        .enumerate()
                        .filter(|(i, s)| s.worker.is_some() && !r.queue.contains(i))
                        .filter(|(i, _)| r.step.is_none_or(|(s, _, _)| s != *i))
                        .map(|(i, _)| i)
                        .collect();
                    r.queue.extend(more);
                    r.done = Some(done);
                    return;
                }
                let queue = self
                    .slots
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.worker.is_some())
                    .map(|(i, _)| i)
                    .collect();
                self.reloading = Some(Reloading {
                    queue,
                    step: None,
                    replaced: Vec::new(),
                    done: Some(done),
                });
                self.reload_next();
            }
        }
    }

    /// A worker leaves for good (the caller's `disconnect`, or its own): its
    /// slot will not listen again, so its ports need not outlive it.
    fn scale_down(&mut self, id: WorkerId) {
        if let Some(w) = self.workers.get(&id) {
            let slot = &mut self.slots[w.slot];
            if slot.worker == Some(id) {
                slot.keys.clear();
            }
        }
    }

    /// Take a worker out of every round robin and ask it to go (Node's
    /// `worker.disconnect()`).
    fn disconnect(&mut self, worker: WorkerId) {
        let Some(w) = self.workers.get_mut(&worker) else {
            return;
        };
        w.expected = true;
        if w.state == WorkerState::Disconnecting || !w.channel_open {
            return;
        }
        w.state = WorkerState::Disconnecting;
        self.leave_keys(worker);
        self.send_cluster(worker, protocol::act_only("disconnect"));
    }

    fn shutdown(&mut self, drain: Duration, done: Option<oneshot::Sender<Shutdown>>) {
        if let Some(d) = &mut self.draining {
            // Already stopping: the report comes when that stop ends.
            d.done.extend(done);
            return;
        }
        self.systemd_notify("STOPPING=1");
        self.reload_failed("the cluster is shutting down".into());
        // Stop accepting; connections the primary holds are closed (they
        // reached no worker; their clients see a reset, as under Node).
        // The accept tasks are awaited before the shutdown returns, so
        // the ports are free by then.
        for (_, mut k) in self.keys.drain() {
            if let Some(task) = k.accept.take() {
                task.abort();
                self.closing.push(task);
            }
        }
        let ids: Vec<WorkerId> = self.workers.keys().copied().collect();
        for id in ids {
            self.disconnect(id);
        }
        self.draining = Some(Draining {
            done: done.into_iter().collect(),
            exits: Vec::new(),
            drained: true,
        });
        self.after(drain, Input::DrainDeadline);
    }

    fn after(&self, delay: Duration, input: Input) {
        let inputs = self.inputs.clone();
        tokio::spawn(async move {
            // tokio caps a sleep past the end of time at "far future".
            tokio::time::sleep(delay).await;
            let _ = inputs.send(input);
        });
    }

    fn input(&mut self, input: Input) {
        match input {
            Input::Message(id, raw) => self.message(id, raw),
            Input::BadMessage(id, error) => self.emit(Event::Error {
                worker: Some(id),
                error,
            }),
            Input::Eof(id) => {
                if let Some(w) = self.workers.get_mut(&id) {
                    w.channel_open = false;
                    w.state = WorkerState::Disconnecting;
                    // No reply can come on a closed channel: what is in
                    // flight to it goes to another worker.
                    self.leave_keys(id);
                    self.reclaim(id);
                    self.emit(Event::Disconnect { worker: id });
                    self.finish(id);
                }
            }
            Input::Exited(id, status) => {
                if let Some(w) = self.workers.get_mut(&id) {
                    w.exit = Some(status);
                    if w.channel_open {
                        // Its last messages may still be in the socket:
                        // 'exit' comes after them, as in Node.
                        self.after(Duration::from_millis(100), Input::ExitedLongAgo(id));
                    } else {
                        self.finish(id);
                    }
                }
            }
            Input::ExitedLongAgo(id) => self.finish(id),
            Input::Conn(key, fd, permit) => {
                if let Some(k) = self.keys.get_mut(&key) {
                    k.queue.push_back(Conn {
                        fd: Arc::new(fd),
                        _permit: permit,
                        refused_by: Vec::new(),
                    });
                    self.distribute(&key);
                }
            }
            Input::AcceptFailed(key, e) => self.emit(Event::Error {
                worker: None,
                error: Error::io(
                    &crate::CommandLine::verbatim(&format!("accept on {key}")),
                    e,
                ),
            }),
            Input::DrainDeadline => {
                if let Some(d) = &mut self.draining {
                    d.drained = self.workers.is_empty();
                    let signal = self.setup.kill_signal;
                    for w in self.workers.values() {
                        let _ = w.signals.send(signal);
                    }
                    let grace = self.setup.kill_grace;
                    self.after(grace, Input::KillDeadline);
                }
            }
            Input::Notify(id, text) => {
                if text.lines().any(|l| l == "READY=1") {
                    if let Some(w) = self.workers.get_mut(&id) {
                        w.said_ready = true;
                    }
                    self.check_ready(id);
                }
            }
            Input::ReadyDeadline(id) => self.ready_deadline(id),
            Input::HealthTick => self.health_tick(),
            Input::Stop => {
                if let Some(drain) = self.setup.stop_on_signals {
                    self.shutdown(drain, None);
                }
            }
            Input::Watchdog => {
                if self.draining.is_none() {
                    self.systemd_notify("WATCHDOG=1");
                }
                if let Some(every) = self.watchdog() {
                    self.after(every / 2, Input::Watchdog);
                }
            }
            Input::ReopenLogs => {
                if let Some(logs) = self.logs.clone() {
                    tokio::spawn(async move { logs.reopen().await });
                }
            }
            Input::Drained(id) => {
                if let Some(w) = self.workers.get(&id) {
                    let _ = w.signals.send(self.setup.kill_signal);
                    self.after(self.setup.kill_grace, Input::KillRetired(id));
                }
            }
            Input::KillRetired(id) => {
                if let Some(w) = self.workers.get(&id) {
                    let _ = w.signals.send(Signal::SIGKILL);
                }
            }
            Input::Restart(slot) => {
                let s = &self.slots[slot];
                let standby = self
                    .reloading
                    .as_ref()
                    .is_some_and(|r| r.step.is_some_and(|(s, _, _)| s == slot));
                if self.draining.is_none() && s.worker.is_none() && !s.given_up && !standby {
                    self.slots[slot].restarts += 1;
                    if let Err(error) = self.fork(Some(slot)) {
                        self.emit(Event::Error {
                            worker: None,
                            error,
                        });
                        // A worker that cannot start counts as a crash.
                        self.after_exit(slot, None, false, Duration::ZERO);
                    }
                }
            }
            Input::KillDeadline => {
                for w in self.workers.values() {
                    let _ = w.signals.send(Signal::SIGKILL);
                }
            }
        }
    }

    /// Report a worker's exit once it has exited and its channel is read
    /// to the end (or given up on).
    fn finish(&mut self, id: WorkerId) {
        if self.workers.get(&id).is_none_or(|w| w.exit.is_none()) {
            return;
        }
        self.leave_keys(id);
        self.reclaim(id);
        let Some(mut w) = self.workers.remove(&id) else {
            return;
        };
        let status = w.exit.take().expect("checked");
        if w.channel_open {
            self.emit(Event::Disconnect { worker: id });
        }
        let uptime = w.started.elapsed();
        if let Ok(status) = &status {
            w.expected |= ended_by_our_kill(status, &w.killed_with);
        }
        // A worker that does not own its slot (a reload's or a health
        // replacement's standby, or one already retired) is no crash of
        // the slot: a failed replacement is reported as such, and must
        // not use up a healthy slot's crash budget.
        let owned = self.slots[w.slot].worker == Some(id);
        if owned {
            self.slots[w.slot].worker = None;
        }
        let ok_status = status.as_ref().ok().copied();
        match status {
            Ok(status) => {
                if let Some(d) = &mut self.draining {
                    d.exits.push((id, status));
                }
                self.emit(Event::Exit {
                    worker: id,
                    status,
                    expected: w.expected,
                });
            }
            Err(error) => self.emit(Event::Error {
                worker: Some(id),
                error,
            }),
        }
        if owned {
            self.after_exit(w.slot, ok_status, w.expected, uptime);
        }
        let failed_step = self
            .reloading
            .as_ref()
            .and_then(|r| r.step)
            .filter(|&(_, _, new)| new == id);
        if let Some((slot, old, _)) = failed_step {
            self.reload_failed(format!(
                "the new worker {id} of slot {slot} exited before it was ready; worker {old} was kept"
            ));
        }
    }

    /// A worker became ready if it listens everywhere its slot listened
    /// (anywhere, for a slot without history), or said so (`'ready'`,
    /// `READY=1`).
    fn check_ready(&mut self, id: WorkerId) {
        let Some(w) = self.workers.get(&id) else {
            return;
        };
        if w.ready || w.state == WorkerState::Disconnecting {
            return;
        }
        let wanted = &self.slots[w.slot].keys;
        let listens = if wanted.is_empty() {
            !w.listening.is_empty()
        } else {
            wanted.iter().all(|k| w.listening.contains(k))
        };
        if !(w.said_ready || listens) {
            return;
        }
        let slot = w.slot;
        let listening = w.listening.clone();
        if let Some(w) = self.workers.get_mut(&id) {
            w.ready = true;
        }
        self.emit(Event::Ready { worker: id });
        if !self.told_ready && self.workers.values().all(|w| w.ready) {
            self.told_ready = true;
            let status = format!("READY=1\nSTATUS={} workers ready", self.workers.len());
            self.systemd_notify(&status);
        }
        let step = self.reloading.as_ref().and_then(|r| r.step);
        match step {
            Some((s, old, new)) if new == id => {
                self.slots[s].worker = Some(new);
                self.slots[s].keys = listening;
                self.retire(old);
                if let Some(r) = &mut self.reloading {
                    r.replaced.push((old, new));
                    r.step = None;
                }
                self.reload_next();
            }
            _ => {
                if self.slots[slot].worker == Some(id) && !listening.is_empty() {
                    self.slots[slot].keys = listening;
                }
            }
        }
    }

    fn ready_deadline(&mut self, id: WorkerId) {
        let Some(w) = self.workers.get(&id) else {
            return;
        };
        if w.ready || w.state == WorkerState::Disconnecting {
            return;
        }
        // Not ready in time: a failed start, never assumed ready (PM2
        // assumes it is). Killed without `expected`, so the restart
        // policy counts it as a crash.
        let _ = w.signals.send(Signal::SIGKILL);
        let limit = self.setup.ready_timeout.unwrap_or(DEFAULT_READY_TIMEOUT);
        let step = self.reloading.as_ref().and_then(|r| r.step);
        if let Some((slot, old, _)) = step.filter(|&(_, _, new)| new == id) {
            self.reload_failed(format!(
                "the new worker {id} of slot {slot} was not ready within {limit:?}; worker {old} was kept"
            ));
        }
        self.emit(Event::Error {
            worker: Some(id),
            error: super::busy(&format!(
                "worker {id} was not ready within {limit:?} and was killed"
            )),
        });
    }

    /// Replace a worker for its health, as a reload replaces one: a new
    /// worker in its slot, ready first, then the old one retired. A hung
    /// worker leaves the round robin at once (what it held goes to
    /// others); a healthy one (memory, recycling) serves until its
    /// replacement is ready.
    fn replace(&mut self, id: WorkerId, why: Health) {
        let Some(w) = self.workers.get_mut(&id) else {
            return;
        };
        let slot = w.slot;
        let waiting = w.retry_at.is_some_and(|t| Instant::now() < t);
        // A standby is judged once it owns its slot.
        if w.replacing
            || waiting
            || w.state == WorkerState::Disconnecting
            || self.slots[slot].worker != Some(id)
        {
            return;
        }
        w.replacing = true;
        let hung = matches!(why, Health::Hung { .. });
        w.hung = hung;
        self.emit(Event::Unhealthy {
            worker: id,
            health: why,
        });
        if hung {
            self.leave_keys(id);
        }
        match &mut self.reloading {
            Some(r) => {
                if !r.queue.contains(&slot) {
                    r.queue.push_back(slot);
                }
            }
            None => {
                self.reloading = Some(Reloading {
                    queue: VecDeque::from([slot]),
                    step: None,
                    replaced: Vec::new(),
                    done: None,
                });
                self.reload_next();
            }
        }
    }

    fn health_tick(&mut self) {
        let now = Instant::now();
        let mut unhealthy = Vec::new();
        if let Some((interval, missed)) = self.setup.heartbeat {
            let limit = interval * missed;
            for (&id, w) in &self.workers {
                if let Some(beat) = w.last_beat {
                    if now.duration_since(beat) > limit && !w.replacing {
                        unhealthy.push((id, Health::Hung { missed }));
                    }
                }
            }
        }
        if let Some(limit) = self.setup.max_memory {
            for (&id, w) in &self.workers {
                if w.replacing {
                    continue;
                }
                if let Some((_, rss)) = crate::sys::usage(w.pid as i32) {
                    if rss > limit {
                        unhealthy.push((id, Health::Memory { rss, limit }));
                    }
                }
            }
        }
        for (id, why) in unhealthy {
            self.replace(id, why);
        }
        if let Some(every) = self.health_interval() {
            self.after(every, Input::HealthTick);
        }
    }

    /// How often heartbeats and memory are checked, if at all.
    fn health_interval(&self) -> Option<Duration> {
        let beat = self.setup.heartbeat.map(|(interval, _)| interval);
        let memory = self.setup.max_memory.map(|_| MEMORY_POLL);
        match (beat, memory) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Take a worker out of the round robin, ask it to go, and give it
    /// the drain timeout before the kill signal.
    fn retire(&mut self, id: WorkerId) {
        self.disconnect(id);
        self.after(self.setup.drain_timeout, Input::Drained(id));
    }

    /// Start replacing the next slot of a reload, or end it.
    fn reload_next(&mut self) {
        loop {
            let Some(r) = &mut self.reloading else {
                return;
            };
            let Some(slot) = r.queue.pop_front() else {
                let r = self.reloading.take().expect("checked");
                if let Some(done) = r.done {
                    let _ = done.send(Ok(Reload {
                        replaced: r.replaced,
                        failed: None,
                    }));
                }
                return;
            };
            let Some(old) = self.slots[slot].worker else {
                continue;
            };
            match self.fork_into(Some(slot), true) {
                Ok(new) => {
                    if let Some(r) = &mut self.reloading {
                        r.step = Some((slot, old, new));
                    }
                    if self.setup.ready_timeout.is_none() {
                        self.after(DEFAULT_READY_TIMEOUT, Input::ReadyDeadline(new));
                    }
                }
                Err(e) => {
                    self.reload_failed(format!(
                        "the new worker of slot {slot} could not start ({e}); worker {old} was kept"
                    ));
                }
            }
            return;
        }
    }

    fn reload_failed(&mut self, why: String) {
        if let Some(r) = self.reloading.take() {
            if let Some((slot, old, new)) = r.step {
                if let Some(w) = self.workers.get_mut(&new) {
                    w.expected = true;
                    let _ = w.signals.send(Signal::SIGKILL);
                }
                self.health_replacement_failed(slot, old);
            }
            match r.done {
                Some(done) => {
                    let _ = done.send(Ok(Reload {
                        replaced: r.replaced,
                        failed: Some(why),
                    }));
                }
                None => self.emit(Event::Error {
                    worker: None,
                    error: super::busy(&format!("a replacement for health failed: {why}")),
                }),
            }
        }
    }

    /// A replacement for a worker's health failed. A hung worker is of no
    /// use: it is killed, and the restart policy takes over as for a
    /// crash. A healthy one (memory, recycling) keeps serving and is
    /// judged again after the slot's restart delay, which grows.
    fn health_replacement_failed(&mut self, slot: usize, old: WorkerId) {
        let (first, max) = self.setup.restart_delay;
        let s = &mut self.slots[slot];
        let delay = jitter(s.delay.max(first));
        s.delay = grow(s.delay, max);
        let Some(w) = self.workers.get_mut(&old) else {
            return;
        };
        if !w.replacing {
            return;
        }
        if w.hung {
            let _ = w.signals.send(Signal::SIGKILL);
        } else {
            w.replacing = false;
            w.retry_at = Some(Instant::now() + delay);
        }
    }

    /// Replace a worker that exited unasked, per the restart policy, with
    /// a growing delay; give up on a slot past the crash window (every
    /// crash counts, however long the worker ran: OTP's intensity, not
    /// PM2's `min_uptime`, which lets a worker crash forever).
    fn after_exit(
        &mut self,
        slot: usize,
        status: Option<ExitStatus>,
        expected: bool,
        uptime: Duration,
    ) {
        if expected || self.draining.is_some() || self.slots[slot].given_up {
            return;
        }
        let setup = &self.setup;
        let code = status.and_then(|s| s.code());
        let failed = !status.is_some_and(|s| s.success());
        let restart = match setup.restart {
            Restart::Never => false,
            Restart::Always => true,
            Restart::OnFailure => failed,
        } && !code.is_some_and(|c| setup.stop_exit_codes.contains(&c));
        if !restart {
            return;
        }
        let (first, max) = setup.restart_delay;
        let (limit, period) = setup.crash_window;
        let now = Instant::now();
        let s = &mut self.slots[slot];
        s.crashes.push_back(now);
        while s
            .crashes
            .front()
            .is_some_and(|&t| now.duration_since(t) > period)
        {
            s.crashes.pop_front();
        }
        if s.crashes.len() > limit {
            s.given_up = true;
            let crashes = s.crashes.len();
            self.emit(Event::GaveUp {
                slot,
                crashes,
                period,
            });
            return;
        }
        if uptime >= STABLE_UPTIME {
            s.delay = first;
        }
        let delay = jitter(s.delay);
        s.delay = grow(s.delay, max);
        self.emit(Event::Restarting { slot, delay });
        self.after(delay, Input::Restart(slot));
    }

    fn message(&mut self, id: WorkerId, raw: RawMessage) {
        let RawMessage {
            value,
            internal,
            handle,
        } = raw;
        if !internal {
            // A handle sent with a user message is not the cluster's to
            // keep: it is closed (Node's cluster `'message'` drops it too).
            drop(handle);
            // PM2's `wait_ready`: `process.send('ready')`.
            let ready = value == "ready";
            self.emit(Event::Message {
                worker: id,
                message: value,
            });
            if ready {
                if let Some(w) = self.workers.get_mut(&id) {
                    w.said_ready = true;
                }
                self.check_ready(id);
            }
            return;
        }
        let Some(msg) = protocol::cluster_message(value) else {
            return;
        };
        let seq = msg.get("seq").and_then(Value::as_u64).unwrap_or(0);
        match protocol::act(&msg) {
            Some("online") => {
                if let Some(w) = self.workers.get_mut(&id) {
                    if w.state == WorkerState::Started {
                        w.state = WorkerState::Online;
                    }
                }
                self.emit(Event::Online { worker: id });
            }
            Some("queryServer") => self.query_server(id, &msg, seq),
            Some("listening") => {
                let key = self.listening_key(id, &msg);
                if let Some(w) = self.workers.get_mut(&id) {
                    if w.state != WorkerState::Disconnecting {
                        w.state = WorkerState::Listening;
                    }
                    if let Some(key) = &key {
                        if !w.listening.contains(key) {
                            w.listening.push(key.clone());
                        }
                    }
                }
                if let Some(k) = key.as_ref().and_then(|k| self.keys.get_mut(k)) {
                    // It listens (again): connections it refused before
                    // (while it started, or closed a server) may go to it.
                    for conn in &mut k.queue {
                        conn.refused_by.retain(|&w| w != id);
                    }
                    let address = k.address.clone();
                    self.emit(Event::Listening {
                        worker: id,
                        address,
                    });
                }
                if let Some(key) = &key {
                    self.distribute(key);
                }
                self.check_ready(id);
            }
            Some("close") => {
                if let Some(key) = msg.get("key").and_then(Value::as_str) {
                    let key: Arc<str> = key.into();
                    self.leave_key(id, &key);
                }
            }
            Some("heartbeat") => {
                if let Some(w) = self.workers.get_mut(&id) {
                    w.last_beat = Some(Instant::now());
                }
            }
            Some("exitedAfterDisconnect") => {
                self.scale_down(id);
                self.leave_keys(id);
                if let Some(w) = self.workers.get_mut(&id) {
                    w.expected = true;
                    w.state = WorkerState::Disconnecting;
                }
                // Always answered: the worker waits for it to exit.
                self.send_cluster(id, protocol::reply(seq));
            }
            Some(_) => {}
            None => {
                if let Some(ack) = msg.get("ack").and_then(Value::as_u64) {
                    let accepted = msg.get("accepted").and_then(Value::as_bool);
                    self.conn_reply(id, ack, accepted.unwrap_or(false));
                }
            }
        }
    }

    /// Which of the worker's listeners a `listening` message is about: it
    /// repeats the query with the real port, so `listen(0)` no longer
    /// spells its key.
    fn listening_key(&self, id: WorkerId, msg: &Map<String, Value>) -> Option<Arc<str>> {
        let query = Query::parse(msg).ok()?;
        if let Some((key, _)) = self.keys.get_key_value(query.key.as_str()) {
            return Some(key.clone());
        }
        let port = msg.get("port").and_then(Value::as_u64)?;
        let w = self.workers.get(&id)?;
        w.keys
            .iter()
            .find(|key| {
                self.keys.get(*key).is_some_and(|k| match k.address {
                    Address::Tcp(a) | Address::Udp(a) => u64::from(a.port()) == port,
                    Address::Unix(_) => false,
                })
            })
            .cloned()
    }

    fn query_server(&mut self, id: WorkerId, msg: &Map<String, Value>, seq: u64) {
        let query = match Query::parse(msg) {
            Ok(q) => q,
            Err(bad) => {
                // Always answered, or the worker's listen() waits forever.
                let fields = protocol::errno_reply(seq, "", &Value::Null, -libc::EINVAL);
                self.send_cluster(id, fields);
                self.emit(Event::Error {
                    worker: Some(id),
                    error: Error::Channel(ChannelError::Io(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("queryServer: {}", bad.0),
                    ))),
                });
                return;
            }
        };
        let key: Arc<str> = query.key.as_str().into();
        let theirs = self.workers.get(&id).map_or(0, |w| w.keys.len());
        if !self.keys.contains_key(&key)
            && (self.keys.len() >= MAX_KEYS || theirs >= MAX_KEYS_PER_WORKER)
        {
            // A worker cannot make the primary hold every fd it may open.
            let fields = protocol::errno_reply(seq, &key, &query.data, -libc::EMFILE);
            self.send_cluster(id, fields);
            self.emit(Event::Error {
                worker: Some(id),
                error: super::busy(&format!(
                    "worker {id} asked for more listening sockets than the primary keeps \
                     ({MAX_KEYS_PER_WORKER} per worker, {MAX_KEYS} in all); refused with EMFILE"
                )),
            });
            return;
        }
        if !self.keys.contains_key(&key) {
            match bind(
                &query,
                self.setup.scheduling,
                &key,
                &self.inputs,
                &mut self.inherited,
            ) {
                Ok(k) => {
                    self.keys.insert(key.clone(), k);
                }
                Err(e) => {
                    let errno = protocol::uv_errno(&e);
                    let fields = protocol::errno_reply(seq, &key, &query.data, errno);
                    self.send_cluster(id, fields);
                    return;
                }
            }
        }
        let k = self.keys.get_mut(&key).expect("inserted above");
        if !k.workers.contains(&id) {
            k.workers.push(id);
        }
        if let Some(w) = self.workers.get_mut(&id) {
            if !w.keys.contains(&key) {
                w.keys.push(key.clone());
            }
        }
        let reply_seq = self.seq;
        self.seq += 1;
        if k.shared {
            // The worker gets a duplicate of the key's socket.
            let (fields, handle) = match k.socket.as_fd().try_clone_to_owned() {
                Ok(fd) => (
                    protocol::errno_reply(seq, &key, &k.data, 0),
                    Some((Arc::new(fd), k.kind)),
                ),
                Err(e) => (
                    protocol::errno_reply(seq, &key, &k.data, protocol::uv_errno(&e)),
                    None,
                ),
            };
            let out = Out {
                msg: protocol::message(fields, reply_seq),
                handle,
                done: None,
            };
            self.send_to(id, out);
        } else {
            let sockname = match k.address {
                Address::Tcp(addr) => Some(addr),
                _ => None,
            };
            let fields = protocol::rr_reply(seq, &key, &k.data, sockname);
            k.free.push_back(id);
            let out = Out {
                msg: protocol::message(fields, reply_seq),
                handle: None,
                done: None,
            };
            self.send_to(id, out);
            self.distribute(&key);
        }
    }

    /// Hand queued connections of `key` to its free workers, one each.
    fn distribute(&mut self, key: &Arc<str>) {
        let Some(k) = self.keys.get_mut(key) else {
            return;
        };
        // Each queued connection, in order, to the first free worker that
        // has not refused it; one refused by every free worker waits.
        let mut i = 0;
        while i < k.queue.len() && !k.free.is_empty() {
            let refused = &k.queue[i].refused_by;
            let Some(pos) = k.free.iter().position(|w| !refused.contains(w)) else {
                i += 1;
                continue;
            };
            let worker = k.free.remove(pos).expect("found");
            let conn = k.queue.remove(i).expect("in range");
            let seq = self.seq;
            self.seq += 1;
            let out = Out {
                msg: protocol::message(protocol::newconn(key), seq),
                handle: Some((conn.fd.clone(), "net.Native")),
                done: None,
            };
            let mut recycle = None;
            if let Some(w) = self.workers.get_mut(&worker) {
                w.dispatched += 1;
                let _ = w.out.send(out);
                if w.recycle_at.is_some_and(|n| w.dispatched >= n) && !w.replacing {
                    recycle = Some(w.dispatched);
                }
            }
            self.inflight.insert(
                seq,
                InFlight {
                    worker,
                    key: key.clone(),
                    conn,
                },
            );
            if let Some(connections) = recycle {
                // It keeps serving until its replacement is ready.
                self.replace(worker, Health::Recycled { connections });
                return self.distribute(key);
            }
        }
    }

    /// The worker's `{ack, accepted}` for a `newconn`.
    fn conn_reply(&mut self, id: WorkerId, ack: u64, accepted: bool) {
        let Some(f) = self.inflight.remove(&ack) else {
            return;
        };
        if f.worker != id {
            self.inflight.insert(ack, f);
            return;
        }
        let InFlight { key, mut conn, .. } = f;
        let Some(k) = self.keys.get_mut(&key) else {
            return;
        };
        // Free again, if it still serves the key.
        if k.workers.contains(&id) && !k.free.contains(&id) {
            k.free.push_back(id);
        }
        if !accepted {
            // It goes to a worker that has not refused it. One that every
            // worker refused waits, queued, for a new worker or for a
            // refuser to listen again (see `listening`), rather than
            // ping-pong between refusers or be closed unanswered.
            conn.refused_by.push(id);
            k.queue.push_front(conn);
        }
        self.distribute(&key);
    }

    /// Remove a worker from every key: it gets no more connections. What
    /// is in flight to it stays there while it can still answer (it may
    /// take it: handing it to another worker too would leave two holders
    /// of one connection, and a client waiting on the one that never
    /// reads); see `reclaim`.
    fn leave_keys(&mut self, id: WorkerId) {
        let keys = match self.workers.get_mut(&id) {
            Some(w) => std::mem::take(&mut w.keys),
            None => return,
        };
        for key in keys {
            self.leave_key(id, &key);
        }
    }

    /// A worker that can no longer answer (its channel closed, or it
    /// exited): what was in flight to it goes back to the front of its
    /// key's queue, for another worker.
    fn reclaim(&mut self, id: WorkerId) {
        let lost: Vec<u64> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.worker == id)
            .map(|(&seq, _)| seq)
            .collect();
        let mut keys = Vec::new();
        for seq in lost {
            let f = self.inflight.remove(&seq).expect("listed");
            if let Some(k) = self.keys.get_mut(&f.key) {
                k.queue.push_front(f.conn);
                if !keys.contains(&f.key) {
                    keys.push(f.key);
                }
            }
        }
        for key in keys {
            self.distribute(&key);
        }
    }

    fn leave_key(&mut self, id: WorkerId, key: &Arc<str>) {
        if let Some(w) = self.workers.get_mut(&id) {
            w.keys.retain(|k| k != key);
        }
        let Some(k) = self.keys.get_mut(key) else {
            return;
        };
        k.workers.retain(|&w| w != id);
        k.free.retain(|&w| w != id);
        // The listener stays open with no worker (unlike Node's) while a
        // slot will listen there again (a restart, a reload): new
        // connections wait in the backlog for its next worker. A key no
        // slot claims, with nothing queued or in flight, is closed.
        let unclaimed = k.workers.is_empty()
            && k.queue.is_empty()
            && !self.inflight.values().any(|f| &f.key == key)
            && !self.slots.iter().any(|s| s.keys.contains(key));
        if unclaimed {
            self.keys.remove(key);
            return;
        }
        self.distribute(key);
    }
}

/// Bind what a query asks for, and start accepting when the primary
/// schedules it.
fn bind(
    query: &Query,
    scheduling: Scheduling,
    key: &Arc<str>,
    inputs: &mpsc::UnboundedSender<Input>,
    inherited: &mut Vec<OwnedFd>,
) -> std::io::Result<KeyState> {
    // The socket of the key: one systemd passed, or a new one.
    let (address, socket, kind, path) = match &query.target {
        Target::Tcp { host, port, v6 } => {
            let addr = resolve(host.as_deref(), *port, *v6)?;
            let (fd, local) = match take_inherited(inherited, |fd| inherited_tcp(fd, addr)) {
                Some(found) => found,
                None => {
                    let listener = tcp_listener(addr, query.backlog)?;
                    let local = listener.local_addr()?;
                    (listener.into(), local)
                }
            };
            (Address::Tcp(local), listening(fd)?, "net.Native", None)
        }
        Target::Unix(path) => {
            if path.is_empty() {
                return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
            }
            let (fd, created) = match take_inherited(inherited, |fd| inherited_unix(fd, path)) {
                // systemd's file: not ours to remove.
                Some((fd, ())) => (fd, None),
                None => {
                    let listener = std::os::unix::net::UnixListener::bind(path)?;
                    if let Some(mode) = query.mode {
                        use std::os::unix::fs::PermissionsExt;
                        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
                    }
                    (OwnedFd::from(listener), Some(PathBuf::from(path)))
                }
            };
            (
                Address::Unix(path.into()),
                listening(fd)?,
                "net.Native",
                created,
            )
        }
        Target::Udp { host, port, v6 } => {
            let addr = resolve(host.as_deref(), *port, *v6)?;
            let socket = std::net::UdpSocket::bind(addr)?;
            let local = socket.local_addr()?;
            (
                Address::Udp(local),
                Bound::Udp(socket),
                "dgram.Native",
                None,
            )
        }
        Target::Fd(_) => return Err(std::io::Error::from_raw_os_error(libc::EBADF)),
    };
    // UDP is always shared; listeners are accepted on by the primary in
    // round robin.
    let shared = matches!(socket, Bound::Udp(_)) || scheduling == Scheduling::Shared;
    let socket = Arc::new(socket);
    let accept = (!shared).then(|| {
        let permits = Arc::new(Semaphore::new(MAX_QUEUED));
        tokio::spawn(accept(key.clone(), socket.clone(), permits, inputs.clone()))
    });
    Ok(KeyState {
        data: query.data.clone(),
        address,
        socket,
        kind,
        shared,
        workers: Vec::new(),
        free: VecDeque::new(),
        queue: VecDeque::new(),
        accept,
        path,
    })
}

/// A listening TCP socket bound to `addr`, with `SO_REUSEADDR` as libuv
/// sets it for every TCP server on unix; non-blocking.
fn tcp_listener(
    addr: std::net::SocketAddr,
    backlog: i32,
) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog.max(1) as u32)?.into_std()
}

/// An inherited listening TCP socket that serves a listen on `addr`: the
/// same port, and the same address or any (`listen(8080)` takes a socket
/// systemd bound on port 8080, whatever its address). Not UDP, not a
/// connection from `--accept`.
fn inherited_tcp(fd: &OwnedFd, addr: std::net::SocketAddr) -> Option<std::net::SocketAddr> {
    use std::os::fd::AsFd;
    if crate::sys::ipc::socket_kind(fd.as_fd()) != crate::sys::ipc::SocketKind::TcpListener {
        return None;
    }
    let at = std::net::TcpListener::from(fd.try_clone().ok()?)
        .local_addr()
        .ok()?;
    (at.port() == addr.port() && (at.ip() == addr.ip() || addr.ip().is_unspecified())).then_some(at)
}

/// An inherited listening unix socket bound at `path`.
fn inherited_unix(fd: &OwnedFd, path: &str) -> Option<()> {
    use std::os::fd::AsFd;
    if crate::sys::ipc::socket_kind(fd.as_fd()) != crate::sys::ipc::SocketKind::UnixListener {
        return None;
    }
    let at = std::os::unix::net::UnixListener::from(fd.try_clone().ok()?)
        .local_addr()
        .ok()?;
    (at.as_pathname() == Some(std::path::Path::new(path))).then_some(())
}

/// The address to bind: every address (`::`, which also takes IPv4 on
/// Linux by default) when no host is given, as Node binds; a literal IP
/// as it is; `localhost` as the loopback of the family. Other host names
/// are refused: a blocking lookup would stall the primary (Node's primary
/// looks them up asynchronously), so listen on an address.
fn resolve(host: Option<&str>, port: u16, v6: bool) -> std::io::Result<std::net::SocketAddr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    let ip = match host {
        None => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        Some("localhost") if v6 => IpAddr::V6(Ipv6Addr::LOCALHOST),
        Some("localhost") => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(host) => host.parse::<IpAddr>().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("the primary binds addresses, not host names: {host:?}"),
            )
        })?,
    };
    Ok(SocketAddr::new(ip, port))
}

/// A key's socket. Listeners sit in an `AsyncFd` around the std type, so
/// an accepted connection, which the primary only passes on, is never
/// registered with the runtime (tokio's `accept` would add it to epoll
/// and `into_std` remove it again: two wasted calls per connection).
enum Bound {
    Listener(AsyncFd<OwnedFd>),
    Udp(std::net::UdpSocket),
}

impl AsFd for Bound {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Bound::Listener(l) => l.get_ref().as_fd(),
            Bound::Udp(s) => s.as_fd(),
        }
    }
}

impl Bound {
    async fn accept(&self) -> std::io::Result<OwnedFd> {
        let Bound::Listener(listener) = self else {
            return std::future::pending().await;
        };
        // The connection stays blocking: libuv and our `Handle` make a
        // received socket non-blocking themselves.
        loop {
            let mut ready = listener.readable().await?;
            match ready.try_io(|fd| crate::sys::ipc::accept(fd.get_ref().as_fd())) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

/// Register a listener for `accept` readiness only.
fn listening(fd: OwnedFd) -> std::io::Result<Bound> {
    use std::os::fd::AsFd;
    crate::sys::set_nonblocking(fd.as_fd())?;
    crate::sys::tokio_fd::register(fd, tokio::io::Interest::READABLE)
        .map(Bound::Listener)
        .map_err(|(_, e)| e)
}

/// Accept while there is room in the primary's queue; past that the
/// kernel's backlog holds the connections.
async fn accept(
    key: Arc<str>,
    listener: Arc<Bound>,
    permits: Arc<Semaphore>,
    inputs: mpsc::UnboundedSender<Input>,
) {
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok(fd) => {
                if inputs.send(Input::Conn(key.clone(), fd, permit)).is_err() {
                    return;
                }
            }
            // The client gave up before we took it: nothing to report.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => {}
            Err(e) => {
                // Out of fds or memory: say so, and wait for some to be
                // freed rather than spin (as hyper's and tokio's docs
                // advise).
                if inputs.send(Input::AcceptFailed(key.clone(), e)).is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A worker's writer: messages in order, each handle with its message.
async fn write(sender: ChannelSender, mut out: mpsc::UnboundedReceiver<Out>) {
    while let Some(Out { msg, handle, done }) = out.recv().await {
        let r = match handle {
            Some((fd, kind)) => sender.send_handle_as(&msg, fd, kind, None).await,
            None => sender.send(&msg).await,
        };
        if let Some(done) = done {
            let _ = done.send(r);
        }
    }
}

/// A worker's reader: every message to the primary, until end of file.
async fn read(id: WorkerId, mut receiver: ChannelReceiver, inputs: mpsc::Sender<Input>) {
    loop {
        // A message from the buffer costs the task no budget (only a
        // read of the socket does, every few thousand small messages):
        // without this, a worker flooding the channel would hold the
        // primary's one thread for long spells, away from every other
        // task (the state, the accepts, a drop's kills).
        tokio::task::coop::consume_budget().await;
        let input = match receiver.recv_raw().await {
            Ok(Some(raw)) => Input::Message(id, raw),
            Ok(None) => break,
            // One bad message; the channel goes on.
            Err(
                e @ Error::Channel(
                    ChannelError::Decode { .. }
                    | ChannelError::TooLong { .. }
                    | ChannelError::HandleLost,
                ),
            ) => Input::BadMessage(id, e),
            Err(e) => {
                let _ = inputs.send(Input::BadMessage(id, e)).await;
                break;
            }
        };
        if inputs.send(input).await.is_err() {
            return;
        }
    }
    let _ = inputs.send(Input::Eof(id)).await;
}

/// A worker's process: its exit, and the signals the primary sends its
/// group. When the primary is gone (the signal channel closes), the
/// worker is killed with its group.
async fn watch(
    id: WorkerId,
    mut child: Child,
    mut signals: mpsc::UnboundedReceiver<Signal>,
    inputs: mpsc::UnboundedSender<Input>,
) {
    loop {
        tokio::select! {
            status = child.wait() => {
                let _ = inputs.send(Input::Exited(id, status));
                return;
            }
            signal = signals.recv() => match signal {
                // ESRCH and the like: the exit is on its way.
                Some(signal) => { let _ = child.kill_group(signal); }
                // The primary is gone: kill the group and wait for the
                // worker to die, so that its sockets (a shared listener)
                // are closed when the `Primary`'s drop returns. A worker
                // stuck past that is left to `kill_on_drop` and the
                // reaper.
                None => {
                    let _ = child.kill_group(Signal::SIGKILL);
                    let _ = tokio::time::timeout(super::DROP_WAIT, child.wait()).await;
                    return;
                }
            },
        }
    }
}

/// Where a worker's output lines go: the log writer, or events.
enum OutputTo {
    Logs(super::logs::LogWriter, WorkerId, crate::Stream),
    Events(super::events::EventSender, WorkerId, crate::Stream),
}

impl OutputTo {
    /// Deliver one line; `false` once nobody takes them.
    async fn line(&self, line: &[u8]) -> bool {
        match self {
            OutputTo::Logs(logs, id, stream) => logs.line(*stream, *id, line).await,
            OutputTo::Events(events, id, stream) => events.send(output(*id, *stream, line)),
        }
    }
}

impl State {
    fn output_to(&self, id: WorkerId, stream: crate::Stream) -> OutputTo {
        match &self.logs {
            Some(logs) => OutputTo::Logs(logs.clone(), id, stream),
            None => OutputTo::Events(self.events.clone(), id, stream),
        }
    }
}

/// A silent worker's stdout or stderr, as lines.
async fn lines<R>(pipe: R, to: OutputTo)
where
    R: tokio::io::AsyncRead + Unpin,
{
    // A worker that never writes a newline must not grow the primary
    // without bound: past this, the line goes out in pieces.
    const MAX_LINE: usize = 64 * 1024;
    let mut reader = tokio::io::BufReader::new(pipe);
    let mut line = Vec::new();
    // The last piece was cut at MAX_LINE: a newline right after it ends
    // that line, not an empty one.
    let mut cut = false;
    loop {
        // As in `read`: a line from the buffer costs no budget.
        tokio::task::coop::consume_budget().await;
        let buf = match reader.fill_buf().await {
            Ok(buf) if !buf.is_empty() => buf,
            // End of file (or a broken pipe): the last line, unterminated.
            _ => {
                if !line.is_empty() {
                    to.line(&line).await;
                }
                return;
            }
        };
        if std::mem::take(&mut cut) && buf[0] == b'\n' {
            reader.consume(1);
            continue;
        }
        let room = MAX_LINE - line.len();
        let window = &buf[..buf.len().min(room)];
        let (take, end) = match memchr::memchr(b'\n', window) {
            Some(i) => (i, i + 1),
            None => (window.len(), window.len()),
        };
        line.extend_from_slice(&window[..take]);
        let whole = end > take || line.len() == MAX_LINE;
        cut = end == take && line.len() == MAX_LINE;
        reader.consume(end);
        if whole {
            if !to.line(&line).await {
                return;
            }
            line.clear();
        }
    }
}

fn output(worker: WorkerId, stream: crate::Stream, line: &[u8]) -> Event {
    Event::Output {
        worker,
        stream,
        line: String::from_utf8_lossy(line).into_owned(),
    }
}

/// `delay` ± 10 %, so workers that crashed together do not restart in
/// lockstep.
fn jitter(delay: Duration) -> Duration {
    let random = jitter_seed();
    let factor = 0.9 + (random % 2001) as f64 / 10_000.0;
    delay.mul_f64(factor)
}

/// How long a reload waits for a replacement to be ready when
/// `Setup::ready_timeout` is not set.
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The private directory that holds the workers' `NOTIFY_SOCKET`s (0700:
/// only this user can send them `READY=1`), removed with the primary.
struct NotifyDir(PathBuf);

impl Drop for NotifyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl State {
    /// A datagram socket for worker `id`'s systemd-style notifications
    /// (`sd_notify(3)`): its path for `NOTIFY_SOCKET`, and the socket.
    fn notify_socket(
        &mut self,
        id: WorkerId,
    ) -> std::io::Result<(PathBuf, tokio::net::UnixDatagram)> {
        if self.notify_dir.is_none() {
            use std::os::unix::fs::DirBuilderExt;
            let dir = std::env::temp_dir().join(format!(
                "child_process-{}-{:x}",
                std::process::id(),
                jitter_seed()
            ));
            remove_stale_notify_dirs();
            std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
            self.notify_dir = Some(NotifyDir(dir));
        }
        let dir = &self.notify_dir.as_ref().expect("made above").0;
        let path = dir.join(format!("{id}.sock"));
        let socket = tokio::net::UnixDatagram::bind(&path)?;
        Ok((path, socket))
    }
}

/// A worker's notifications, until it is gone (the task is aborted).
async fn notifications(
    id: WorkerId,
    socket: tokio::net::UnixDatagram,
    inputs: mpsc::UnboundedSender<Input>,
) {
    let mut buf = vec![0u8; 4096];
    while let Ok(n) = socket.recv(&mut buf).await {
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if inputs.send(Input::Notify(id, text)).is_err() {
            return;
        }
    }
}

fn jitter_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// Whether a worker's exit answers a signal `Primary::kill` sent: it died
/// of that very signal, or it was asked to stop (TERM, INT, QUIT, KILL)
/// and exited by itself. A worker sent SIGHUP or SIGUSR2 (a reload, a log
/// reopen) that later crashes, or is OOM-killed, still crashed. (A worker
/// told to stop that exits with an error code counts as stopped: the rule
/// cannot tell a handled SIGTERM from a crash right after it.)
fn ended_by_our_kill(status: &ExitStatus, sent: &[Signal]) -> bool {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(signo) => sent.iter().any(|s| s.as_raw() == signo),
        None => sent.iter().any(|s| {
            matches!(
                *s,
                Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT | Signal::SIGKILL
            )
        }),
    }
}

impl State {
    /// One `sd_notify(3)` datagram to the service manager, if asked for.
    /// Best effort, as libsystemd's: a manager that is gone is no error.
    fn systemd_notify(&self, text: &str) {
        let Some(systemd) = &self.setup.systemd else {
            return;
        };
        let Ok(socket) = std::os::unix::net::UnixDatagram::unbound() else {
            return;
        };
        let path = systemd.socket.as_os_str().as_encoded_bytes();
        let _ = match path.strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
                    .and_then(|addr| socket.send_to_addr(text.as_bytes(), &addr))
            }
            None => socket.send_to(text.as_bytes(), &systemd.socket),
        };
    }
}

/// A primary killed with SIGKILL leaves its `NOTIFY_SOCKET` directory
/// behind: remove those of this user whose process is gone.
fn remove_stale_notify_dirs() {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("child_process-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let mine = entry
            .metadata()
            .is_ok_and(|m| Some(m.uid()) == me && m.is_dir());
        if mine && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The first inherited socket `matches` accepts, taken out of the pool,
/// with what `matches` said of it.
fn take_inherited<T>(
    inherited: &mut Vec<OwnedFd>,
    matches: impl Fn(&OwnedFd) -> Option<T>,
) -> Option<(OwnedFd, T)> {
    let i = inherited.iter().position(|fd| matches(fd).is_some())?;
    let fd = inherited.remove(i);
    let found = matches(&fd)?;
    Some((fd, found))
}

impl State {
    /// The watchdog interval; zero means none (libsystemd: invalid).
    fn watchdog(&self) -> Option<Duration> {
        self.setup
            .systemd
            .as_ref()
            .and_then(|s| s.watchdog)
            .filter(|d| !d.is_zero())
    }
}

/// The next restart delay: ×1.5 up to `max`; after an immediate restart
/// (a zero delay), 100 ms.
fn grow(delay: Duration, max: Duration) -> Duration {
    if delay.is_zero() {
        Duration::from_millis(100).min(max)
    } else {
        delay.mul_f64(1.5).min(max)
    }
}
