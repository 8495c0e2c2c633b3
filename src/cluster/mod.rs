//! A cluster primary that runs unmodified Node `cluster` apps, and the
//! worker side for Rust programs: one port, many worker processes.
//!
//! [`cluster`] starts a [`Primary`]: it forks the workers, owns every
//! listening socket they ask for, and hands accepted connections to them
//! round robin over Node's IPC channel (or passes the listening socket
//! itself in [`Scheduling::Shared`]). The protocol is Node's own (v20,
//! `lib/internal/cluster/`), so a Node script written for
//! `cluster.isPrimary`/`cluster.fork()` runs as a worker unchanged; a Rust
//! program joins the same primary with [`Worker`].
//!
//! Where this differs from Node's primary (each is a bug report against
//! Node's): a connection handed to a worker that dies before taking it goes
//! to another worker (nodejs/node#21746); a listening socket stays open
//! while no worker serves it, so connections wait in the backlog instead of
//! being refused; at most 1,024 accepted connections wait in the primary
//! for a free worker, the rest wait in the kernel.
//!
//! # Examples
//!
//! ```no_run
//! use child_process as cp;
//! use futures::StreamExt;
//!
//! # async fn run() -> cp::Result<()> {
//! let mut primary = cp::cluster("app.js").workers(4).start().await?;
//! while let Some(event) = primary.next().await {
//!     if let cp::cluster::Event::Listening { worker, address } = event {
//!         println!("worker {worker} listens on {address}");
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod events;
mod logs;
mod primary;
pub(crate) mod protocol;
mod worker;

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, ExitStatus, Result};
use crate::signal::Signal;

pub use logs::Logs;
pub use worker::{Listener, Worker};

/// The id of a worker: 1 for the first one forked, then 2, 3, ... (Node's
/// `worker.id`, passed to the worker as `NODE_UNIQUE_ID`). Never reused.
pub type WorkerId = u32;

/// Start describing a cluster whose workers run `program`: a `.js`, `.mjs`
/// or `.cjs` file runs under `node` (as [`fork`](crate::fork) does), any
/// other program runs as it is.
///
/// # Examples
///
/// ```no_run
/// # async fn run() -> child_process::Result<()> {
/// let primary = child_process::cluster("server.js").workers(2).start().await?;
/// # Ok(())
/// # }
/// ```
pub fn cluster(program: impl AsRef<OsStr>) -> Setup {
    Setup {
        program: program.as_ref().to_owned(),
        args: Vec::new(),
        exec_path: None,
        exec_args: Vec::new(),
        env: Vec::new(),
        env_clear: false,
        cwd: None,
        silent: false,
        workers: None,
        scheduling: Scheduling::RoundRobin,
        kill_signal: Signal::SIGTERM,
        kill_grace: crate::capture::DEFAULT_KILL_GRACE,
        listen_fds: Vec::new(),
        restart: Restart::Never,
        stop_exit_codes: Vec::new(),
        restart_delay: (Duration::ZERO, Duration::from_secs(15)),
        crash_window: (5, Duration::from_secs(60)),
        ready_timeout: None,
        drain_timeout: Duration::from_secs(10),
        heartbeat: None,
        max_memory: None,
        recycle_after: None,
        logs: None,
        stop_on_signals: None,
        systemd: None,
        socket_activation: false,
    }
}

/// The service manager to tell how the cluster is doing, from
/// [`Setup::systemd`]: `sd_notify(3)` datagrams on `socket`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Systemd {
    /// Where the notifications go (`NOTIFY_SOCKET`; a leading `@` names
    /// an abstract socket).
    pub socket: PathBuf,
    /// How often systemd expects `WATCHDOG=1` (`WATCHDOG_USEC`); the
    /// primary sends it every half of that while it runs.
    pub watchdog: Option<Duration>,
}

impl Systemd {
    /// What systemd passed this process: `NOTIFY_SOCKET`, and
    /// `WATCHDOG_USEC` when `WATCHDOG_PID` is unset or this process;
    /// `None` when not started by systemd with `Type=notify`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use child_process::cluster::Systemd;
    /// # async fn run() -> child_process::Result<()> {
    /// let mut setup = child_process::cluster("app.js");
    /// if let Some(systemd) = Systemd::from_env() {
    ///     setup = setup.systemd(systemd);
    /// }
    /// let primary = setup.start().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_env() -> Option<Systemd> {
        let socket = std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty())?;
        let ours =
            std::env::var("WATCHDOG_PID").map_or(true, |pid| pid.parse() == Ok(std::process::id()));
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|us| us.parse().ok())
            .filter(|&us: &u64| ours && us > 0)
            .map(Duration::from_micros);
        Some(Systemd {
            socket: socket.into(),
            watchdog,
        })
    }
}

/// Why the primary replaced a worker, in [`Event::Unhealthy`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Health {
    /// It sent heartbeats, then missed this many in a row
    /// ([`Setup::heartbeat`]): its event loop is stuck.
    Hung {
        /// Beats missed.
        missed: u32,
    },
    /// Its resident memory passed [`Setup::max_memory`].
    Memory {
        /// Its RSS, in bytes.
        rss: u64,
        /// The ceiling.
        limit: u64,
    },
    /// It was handed this many connections ([`Setup::recycle_after`]).
    Recycled {
        /// Connections handed to it.
        connections: u64,
    },
}

/// Which exits the primary replaces a worker after, from
/// [`Setup::restart`]. An exit the primary asked for
/// ([`Primary::disconnect`], [`Primary::kill`], a shutdown) or the worker
/// announced (its `disconnect()`) is never replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Restart {
    /// Never (the default, as Node's `cluster`: replace workers yourself
    /// on [`Event::Exit`]).
    #[default]
    Never,
    /// After a non-zero exit code or a signal (a crash, an OOM kill).
    OnFailure,
    /// After any exit, `0` included.
    Always,
}

/// How the primary shares a listening socket with its workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Scheduling {
    /// The primary accepts and hands each connection to the next free
    /// worker, one at a time per worker (Node's default, `SCHED_RR`).
    #[default]
    RoundRobin,
    /// The primary passes the listening socket to every worker and the
    /// kernel picks who accepts (Node's `SCHED_NONE`). Cheaper per
    /// connection, less even. UDP is always shared.
    Shared,
}

/// What a cluster looks like before it starts, from [`cluster`]: the
/// [`Fork`](crate::Fork) knobs that apply to every worker, the number of
/// workers and the scheduling. Node's `cluster.setupPrimary(settings)`.
#[must_use = "`Setup` does nothing until you call `start()`"]
#[derive(Debug, Clone)]
pub struct Setup {
    pub(crate) program: OsString,
    pub(crate) args: Vec<OsString>,
    pub(crate) exec_path: Option<PathBuf>,
    pub(crate) exec_args: Vec<OsString>,
    pub(crate) env: Vec<(OsString, Option<OsString>)>,
    pub(crate) env_clear: bool,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) silent: bool,
    pub(crate) workers: Option<usize>,
    pub(crate) scheduling: Scheduling,
    pub(crate) kill_signal: Signal,
    pub(crate) kill_grace: Duration,
    pub(crate) listen_fds: Vec<String>,
    pub(crate) restart: Restart,
    pub(crate) stop_exit_codes: Vec<i32>,
    pub(crate) restart_delay: (Duration, Duration),
    pub(crate) crash_window: (usize, Duration),
    pub(crate) ready_timeout: Option<Duration>,
    pub(crate) drain_timeout: Duration,
    pub(crate) heartbeat: Option<(Duration, u32)>,
    pub(crate) max_memory: Option<u64>,
    pub(crate) recycle_after: Option<(u64, u64)>,
    pub(crate) logs: Option<Logs>,
    pub(crate) stop_on_signals: Option<Duration>,
    pub(crate) systemd: Option<Systemd>,
    pub(crate) socket_activation: bool,
}

impl Setup {
    /// How many workers [`start`](Setup::start) forks; the default is the
    /// number of CPUs this process may use. `0` starts none (add them with
    /// [`Primary::fork`]).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let primary = child_process::cluster("app.js").workers(8).start().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn workers(mut self, n: usize) -> Setup {
        self.workers = Some(n);
        self
    }

    /// Arguments for every worker, as [`Fork::args`](crate::Fork::args).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let primary = child_process::cluster("app.js").args(["--port", "8080"]).start().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn args<I, S>(mut self, args: I) -> Setup
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// The interpreter, as [`Fork::exec_path`](crate::Fork::exec_path).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let primary = child_process::cluster("app.js").exec_path("/opt/node22/bin/node").start().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn exec_path(mut self, path: impl AsRef<Path>) -> Setup {
        self.exec_path = Some(path.as_ref().to_owned());
        self
    }

    /// Interpreter arguments, as [`Fork::exec_args`](crate::Fork::exec_args).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let primary = child_process::cluster("app.js").exec_args(["--max-old-space-size=512"]).start().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn exec_args<I, S>(mut self, args: I) -> Setup
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.exec_args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Set an environment variable for every worker.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let primary = child_process::cluster("app.js").env("NODE_ENV", "production").start().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn env(mut self, key: impl AsRef<OsStr>, val: impl AsRef<OsStr>) -> Setup {
        self.env
            .push((key.as_ref().to_owned(), Some(val.as_ref().to_owned())));
        self
    }

    /// Remove an environment variable from the workers' environment.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let primary = child_process::cluster("app.js").env_remove("DEBUG").start().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Setup {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }

    /// Start the workers from an empty environment (plus what
    /// [`env`](Setup::env) adds and the cluster's own variables).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let primary = child_process::cluster("app.js").env_clear().env("PATH", "/usr/bin").start().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn env_clear(mut self) -> Setup {
        self.env_clear = true;
        self.env.clear();
        self
    }

    /// The workers' working directory.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let primary = child_process::cluster("app.js").cwd("/srv/app").start().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn cwd(mut self, dir: impl AsRef<Path>) -> Setup {
        self.cwd = Some(dir.as_ref().to_owned());
        self
    }

    /// Node's `silent`: the workers' stdout and stderr come to the primary
    /// as [`Event::Output`] lines (prefix them, log them) instead of going
    /// to the primary's own stdout and stderr.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let primary = child_process::cluster("app.js").silent(true).start().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn silent(mut self, silent: bool) -> Setup {
        self.silent = silent;
        self
    }

    /// Round robin (the default) or shared listening sockets.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use child_process::cluster::Scheduling;
    /// # async fn run() -> child_process::Result<()> {
    /// let primary = child_process::cluster("app.js").scheduling(Scheduling::Shared).start().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn scheduling(mut self, scheduling: Scheduling) -> Setup {
        self.scheduling = scheduling;
        self
    }

    /// The signal [`Primary::shutdown`] sends to a worker's process group
    /// once its drain deadline has passed (default `SIGTERM`), before
    /// `SIGKILL`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let primary = child_process::cluster("app.js").kill_signal(child_process::Signal::SIGINT).start().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn kill_signal(mut self, signal: Signal) -> Setup {
        self.kill_signal = signal;
        self
    }

    /// How long [`Primary::shutdown`] waits after the kill signal before
    /// `SIGKILL` (default 5 s).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// use std::time::Duration;
    /// let primary = child_process::cluster("app.js").kill_grace(Duration::from_secs(1)).start().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn kill_grace(mut self, grace: Duration) -> Setup {
        self.kill_grace = grace;
        self
    }

    /// Listen on `addr` in the primary and pass the socket to every worker
    /// as systemd socket activation does (`sd_listen_fds(3)`), so workers
    /// in any language share the port: the sockets are at fd 3, 4, ... in
    /// the order of these calls, `LISTEN_FDS` says how many and
    /// `LISTEN_PID` is the worker's pid (Rust's `listenfd` crate,
    /// Python's `socket.socket(fileno=3)`, Go's `net.FileListener`). The
    /// kernel spreads connections over the workers that accept (shared
    /// mode); the IPC channel follows the sockets (`NODE_CHANNEL_FD` says
    /// where).
    ///
    /// `addr` is `ip:port` (port 0: one free port for all) or
    /// `unix:/path`. Such workers need not speak the cluster protocol;
    /// they send no [`Event::Listening`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let primary = child_process::cluster("./server.py")
    ///     .listen_fds("0.0.0.0:8080")
    ///     .workers(4)
    ///     .start()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn listen_fds(mut self, addr: impl Into<String>) -> Setup {
        self.listen_fds.push(addr.into());
        self
    }

    /// Replace workers that exit unasked (default [`Restart::Never`]).
    /// The replacement takes the same slot ([`WorkerInfo::slot`], the
    /// worker's `NODE_APP_INSTANCE`) and a new id; each restart is an
    /// [`Event::Restarting`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use child_process::cluster::Restart;
    /// # async fn run() -> child_process::Result<()> {
    /// let primary = child_process::cluster("app.js").restart(Restart::OnFailure).start().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn restart(mut self, restart: Restart) -> Setup {
        self.restart = restart;
        self
    }

    /// Exit codes that mean "stopped on purpose": never restarted, whatever
    /// the [`restart`](Setup::restart) policy (PM2's `stop_exit_codes`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use child_process::cluster::Restart;
    /// # async fn run() -> child_process::Result<()> {
    /// let primary = child_process::cluster("app.js")
    ///     .restart(Restart::Always)
    ///     .stop_exit_codes([0, 78])
    ///     .start()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn stop_exit_codes(mut self, codes: impl IntoIterator<Item = i32>) -> Setup {
        self.stop_exit_codes.extend(codes);
        self
    }

    /// The delay before a restart: `first` after the first crash, then
    /// ×1.5 per crash up to `max` (100 ms after a `first` of zero), each
    /// ±10 % so workers that crashed together do not restart in lockstep;
    /// back to `first` once a worker of the slot ran 30 s. Default: at
    /// once, then 100 ms, up to 15 s (PM2's `exp_backoff_restart_delay`
    /// ceiling), so one crash is replaced as fast as Node's hand-written
    /// `'exit'` handler and a crash loop slows down.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// # async fn run() -> child_process::Result<()> {
    /// let primary = child_process::cluster("app.js")
    ///     .restart_delay(Duration::from_secs(1), Duration::from_secs(30))
    ///     .start()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn restart_delay(mut self, first: Duration, max: Duration) -> Setup {
        self.restart_delay = (first, max.max(first));
        self
    }

    /// At most `restarts` restarts of a slot within any `period` (default 5
    /// per minute). Every crash counts, however long the worker ran, so a
    /// worker that crashes every few seconds cannot loop forever (PM2's
    /// `min_uptime` and supervisord's `startsecs` only count early
    /// crashes). Past the limit the slot stays empty and
    /// [`Event::GaveUp`] says so; whether the whole cluster then stops is
    /// the caller's choice ([`Primary::shutdown`]).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// # async fn run() -> child_process::Result<()> {
    /// let primary = child_process::cluster("app.js")
    ///     .crash_window(10, Duration::from_secs(300))
    ///     .start()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn crash_window(mut self, restarts: usize, period: Duration) -> Setup {
        self.crash_window = (restarts, period);
        self
    }

    /// How long a new worker has to become ready ([`Event::Ready`]: it
    /// listens everywhere its slot listened before, or anywhere for a new
    /// slot; or it sends the message `"ready"`, PM2's `wait_ready`; or
    /// `READY=1` to `NOTIFY_SOCKET`, systemd's `sd_notify`, for workers in
    /// any language). One that is not is killed and counts as a crash:
    /// it is never assumed ready.
    ///
    /// `NOTIFY_SOCKET` is a socket in a private 0700 directory, so only
    /// processes of this user can send to it, and the primary does not
    /// check which one did (systemd's `NotifyAccess=all`): a process the
    /// worker started may claim readiness for it. Without this knob, only a
    /// [`reload`](Primary::reload) waits for readiness, 30 s.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// # async fn run() -> child_process::Result<()> {
    /// let primary = child_process::cluster("app.js").ready_timeout(Duration::from_secs(10)).start().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn ready_timeout(mut self, limit: Duration) -> Setup {
        self.ready_timeout = Some(limit);
        self
    }

    /// How long a worker that a [`reload`](Primary::reload) replaced may
    /// finish its connections after `disconnect` before the kill signal
    /// (then `SIGKILL` after the [`kill_grace`](Setup::kill_grace)).
    /// Default 10 s.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// # async fn run() -> child_process::Result<()> {
    /// let primary = child_process::cluster("app.js").drain_timeout(Duration::from_secs(30)).start().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn drain_timeout(mut self, limit: Duration) -> Setup {
        self.drain_timeout = limit;
        self
    }

    /// Replace a worker that stops sending heartbeats: one that sent at
    /// least one and then missed `missed` in a row (its event loop is
    /// stuck) leaves the round robin at once and is replaced as in a
    /// [`reload`](Primary::reload). Workers get the interval in
    /// `CP_HEARTBEAT_MS`. A Rust [`Worker`] beats by itself; a Node worker
    /// adds one line:
    ///
    /// ```js
    /// setInterval(() => process.send({ cmd: 'NODE_CLUSTER', act: 'heartbeat' }),
    ///             Number(process.env.CP_HEARTBEAT_MS)).unref();
    /// ```
    ///
    /// (Node's own primary ignores that message, so the line is harmless
    /// there.)
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// # async fn run() -> child_process::Result<()> {
    /// let primary = child_process::cluster("app.js").heartbeat(Duration::from_secs(1), 5).start().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn heartbeat(mut self, interval: Duration, missed: u32) -> Setup {
        self.heartbeat = Some((interval.max(Duration::from_millis(1)), missed.max(1)));
        self
    }

    /// Replace, as in a [`reload`](Primary::reload), a worker whose
    /// resident memory passes `bytes` (read from `/proc` every second;
    /// PM2's `max_memory_restart`). A ceiling below what a fresh worker
    /// uses replaces workers in a loop (gracefully, one
    /// [`Event::Unhealthy`] each): set it above that baseline. A
    /// replacement that fails leaves the worker serving, judged again
    /// after the restart delay.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let primary = child_process::cluster("app.js").max_memory(512 << 20).start().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn max_memory(mut self, bytes: u64) -> Setup {
        self.max_memory = Some(bytes);
        self
    }

    /// Replace, as in a [`reload`](Primary::reload), a worker once the
    /// primary has handed it `connections` plus a random `0..=jitter`
    /// (gunicorn's `max_requests` and `max_requests_jitter`, counted by the
    /// primary, so Node workers need no code). Round robin only.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let primary = child_process::cluster("app.js").recycle_after(10_000, 1_000).start().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn recycle_after(mut self, connections: u64, jitter: u64) -> Setup {
        self.recycle_after = Some((connections.max(1), jitter));
        self
    }

    /// Write the workers' stdout and stderr as log lines, each prefixed
    /// with the time (UTC) and the worker id, to the primary's own output
    /// ([`Logs::Prefixed`]) or to rotated files ([`Logs::files`]). Lines
    /// of different workers never interleave, and none is lost: a slow
    /// disk or a stuck stdout slows the workers' writes, not the primary,
    /// and a shutdown returns once the workers' last lines are written. A
    /// line longer than 64 KiB is written in 64 KiB pieces, each
    /// prefixed. Lines no longer come as [`Event::Output`].
    ///
    /// With files, the primary also reopens them on `SIGUSR1` (for an
    /// outside `logrotate` with `create`); this installs a `SIGUSR1`
    /// handler in the process for good, as any tokio signal listener does.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use child_process::cluster::Logs;
    /// # async fn run() -> child_process::Result<()> {
    /// let primary = child_process::cluster("app.js")
    ///     .logs(Logs::Files { dir: "/var/log/app".into(), max_size: 50 << 20, keep: 10 })
    ///     .start()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn logs(mut self, logs: Logs) -> Setup {
        self.logs = Some(logs);
        self
    }

    /// Stop gracefully on `SIGTERM` or `SIGINT` to this process, as
    /// [`Primary::shutdown`] with `drain` does; the report comes as the
    /// last event, [`Event::Stopped`] (exit with a status that says
    /// whether the drain completed). This installs handlers for both
    /// signals in the process for good, as any tokio signal listener does.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use child_process::cluster::Event;
    /// use std::time::Duration;
    /// # async fn run() -> child_process::Result<()> {
    /// let mut primary = child_process::cluster("app.js")
    ///     .stop_on_signals(Duration::from_secs(10))
    ///     .start()
    ///     .await?;
    /// while let Some(event) = primary.next_event().await {
    ///     if let Event::Stopped(report) = event {
    ///         std::process::exit(if report.drained { 0 } else { 1 });
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn stop_on_signals(mut self, drain: Duration) -> Setup {
        self.stop_on_signals = Some(drain);
        self
    }

    /// Tell a service manager how the cluster is doing, as a
    /// `Type=notify` service does: `READY=1` (with a `STATUS=`) once every
    /// worker is ready, `WATCHDOG=1` while the primary runs, `STOPPING=1`
    /// when it starts to stop. Use [`Systemd::from_env`] under systemd.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use child_process::cluster::Systemd;
    /// # async fn run() -> child_process::Result<()> {
    /// let systemd = Systemd { socket: "/run/app/notify".into(), watchdog: None };
    /// let primary = child_process::cluster("app.js").systemd(systemd).start().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn systemd(mut self, systemd: Systemd) -> Setup {
        self.systemd = Some(systemd);
        self
    }

    /// Take the listening sockets a service manager passed this process
    /// (systemd socket activation: `LISTEN_FDS`, `LISTEN_PID`, fds 3,
    /// 4, ...) and use each for the workers' `listen()` on its address
    /// (its port, when the worker listens on every address) instead of
    /// binding a new one (a socket systemd bound on one address, loopback
    /// say, serves a worker that listens on every address of its port):
    /// the port is open before the primary starts, and
    /// connections wait in it across a restart of the whole service. The
    /// sockets are checked to be what this process inherited when it
    /// started, and the variables are removed so no worker believes they
    /// are its own.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// // started by a systemd .socket unit (or `systemd-socket-activate -l 8080 ...`)
    /// let primary = child_process::cluster("app.js").socket_activation(true).start().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn socket_activation(mut self, take: bool) -> Setup {
        self.socket_activation = take;
        self
    }

    /// Fork the workers and start the primary. The workers are started
    /// when this returns, not yet online: watch for [`Event::Online`] and
    /// [`Event::Listening`].
    ///
    /// The primary runs on a thread of its own with a current-thread tokio
    /// runtime, so every step of the dispatch runs on one thread, as
    /// Node's primary is one event loop; the [`Primary`] handle works from
    /// any runtime. Dropping the [`Primary`] sends `SIGKILL` to every live
    /// worker's process group before the drop returns.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let primary = child_process::cluster("app.js").start().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] when a worker cannot be started (the workers
    /// already started are killed and reaped before it returns);
    /// [`Error::Io`] when an address of [`listen_fds`](Setup::listen_fds)
    /// is malformed or cannot be bound.
    ///
    /// # Cancellation
    ///
    /// Dropping the future before it resolves stops the start: no more
    /// workers are forked, and those already forked are killed and reaped
    /// before the drop returns (it waits at most a second).
    pub async fn start(self) -> Result<Primary> {
        let n = self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        primary::start(self, n).await
    }
}

/// Where a worker listens.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Address {
    /// A TCP port (the one the primary bound, with the real port of
    /// `listen(0)`).
    Tcp(std::net::SocketAddr),
    /// A unix socket path.
    Unix(PathBuf),
    /// A UDP socket.
    Udp(std::net::SocketAddr),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(a) => write!(f, "tcp://{a}"),
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
            Address::Udp(a) => write!(f, "udp://{a}"),
        }
    }
}

/// What happens in a cluster, from [`Primary`] (a `Stream`): Node's
/// `cluster` events.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A worker was started (`'fork'`).
    Fork {
        /// The worker.
        worker: WorkerId,
        /// Its process id.
        pid: u32,
        /// Its slot ([`WorkerInfo::slot`]).
        slot: usize,
    },
    /// A worker of `slot` exited unasked and will be replaced after
    /// `delay` ([`Setup::restart`]).
    Restarting {
        /// The slot.
        slot: usize,
        /// How long until the replacement starts.
        delay: Duration,
    },
    /// A slot crashed more often than the [`crash_window`](Setup::crash_window)
    /// allows: it is no longer restarted.
    GaveUp {
        /// The slot.
        slot: usize,
        /// Crashes counted within `period`.
        crashes: usize,
        /// The window.
        period: Duration,
    },
    /// A worker's runtime is up (`'online'`; Node workers send it before
    /// user code runs).
    Online {
        /// The worker.
        worker: WorkerId,
    },
    /// A worker listens (`'listening'`): the readiness signal Node and PM2
    /// use.
    Listening {
        /// The worker.
        worker: WorkerId,
        /// Where, as the primary bound it.
        address: Address,
    },
    /// A message the worker sent with `process.send()` (`'message'`).
    Message {
        /// The worker.
        worker: WorkerId,
        /// The message.
        message: serde_json::Value,
    },
    /// A line a [`silent`](Setup::silent) worker wrote to stdout or stderr
    /// (the last line of a stream may lack its newline; invalid UTF-8 is
    /// replaced).
    Output {
        /// The worker.
        worker: WorkerId,
        /// Which stream.
        stream: crate::Stream,
        /// The line, without its newline.
        line: String,
    },
    /// A worker is being replaced for its health ([`Setup::heartbeat`],
    /// [`Setup::max_memory`], [`Setup::recycle_after`]).
    Unhealthy {
        /// The worker.
        worker: WorkerId,
        /// Why.
        health: Health,
    },
    /// A worker is ready ([`Setup::ready_timeout`] says when).
    Ready {
        /// The worker.
        worker: WorkerId,
    },
    /// A worker's channel closed (`'disconnect'`): it gets no more
    /// connections.
    Disconnect {
        /// The worker.
        worker: WorkerId,
    },
    /// A worker exited (`'exit'`).
    Exit {
        /// The worker.
        worker: WorkerId,
        /// How it ended (code or signal).
        status: ExitStatus,
        /// Whether the primary asked for it ([`Primary::disconnect`],
        /// [`Primary::kill`], [`Primary::shutdown`]) or the worker said it
        /// would go (its `disconnect()`): Node's `exitedAfterDisconnect`.
        expected: bool,
    },
    /// The cluster stopped on a signal ([`Setup::stop_on_signals`]): the
    /// last event.
    Stopped(Shutdown),
    /// Events were dropped, the oldest first: the primary keeps the newest
    /// unread ones, 4,096 at most and 64 MiB of memory at most (the newest
    /// one whatever its size), so a program that does not read events (or
    /// a worker that floods messages or output) does not grow it without
    /// bound. What the dropped ones told is in [`Primary::workers`].
    Lagged {
        /// How many were dropped since the last event read.
        missed: u64,
    },
    /// Something went wrong that ends no worker: a malformed message, a
    /// failed `accept`, a connection no worker would take.
    Error {
        /// The worker concerned, if any.
        worker: Option<WorkerId>,
        /// What happened.
        error: Error,
    },
}

/// Where a worker is in its life, from [`Primary::workers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerState {
    /// Forked, not online yet.
    Started,
    /// Online.
    Online,
    /// Listening on at least one address.
    Listening,
    /// Asked to disconnect, or its channel closed; not exited yet.
    Disconnecting,
}

/// One live worker, from [`Primary::workers`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// Its id.
    pub id: WorkerId,
    /// Its process id.
    pub pid: u32,
    /// Its state.
    pub state: WorkerState,
    /// Its slot: 0 to N-1 for the workers [`Setup::start`] forked, then
    /// one more per [`Primary::fork`]; a restarted worker takes the slot
    /// of the one it replaces. Passed as `NODE_APP_INSTANCE` (PM2's name).
    pub slot: usize,
    /// Whether it is ready ([`Event::Ready`]).
    pub ready: bool,
    /// How long it has run.
    pub uptime: Duration,
    /// How often its slot was restarted ([`Setup::restart`]).
    pub restarts: usize,
    /// Its resident memory, in bytes (`None` if `/proc` could not tell).
    pub rss: Option<u64>,
    /// The CPU time it used, user and system.
    pub cpu: Option<Duration>,
    /// Connections the primary handed it (round robin).
    pub dispatched: u64,
    /// Connections handed to it and not yet taken (`accepted`).
    pub in_flight: usize,
    /// How long ago it sent its last heartbeat ([`Setup::heartbeat`]);
    /// `None` before the first.
    pub last_heartbeat: Option<Duration>,
}

/// How [`Primary::reload`] went.
#[derive(Debug)]
#[non_exhaustive]
pub struct Reload {
    /// Each replaced worker and its replacement, in order.
    pub replaced: Vec<(WorkerId, WorkerId)>,
    /// Why the reload stopped early, if it did: a replacement that could
    /// not start, exited or was not ready in time. The worker it was to
    /// replace is kept, and so are the slots after it.
    pub failed: Option<String>,
}

/// How [`Primary::shutdown`] went.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Shutdown {
    /// Every worker exited within the drain deadline, without a signal.
    pub drained: bool,
    /// Each worker that was alive at the shutdown, with how it ended.
    pub exits: Vec<(WorkerId, ExitStatus)>,
}

/// A running cluster primary, from [`Setup::start`]: a `Stream` of
/// [`Event`]s, and methods to talk to the workers.
///
/// Events queue in memory until read; read them (or drop them as they
/// come) so a chatty worker cannot grow the queue without bound. Dropping
/// the `Primary` sends `SIGKILL` to every live worker's process group and
/// closes the listening sockets before the drop returns (it waits for the
/// primary's thread, at most a second, until the workers are reaped and,
/// with [`Setup::logs`], their last lines written); this holds during a
/// drain that [`Setup::stop_on_signals`] started too.
/// [`shutdown`](Primary::shutdown) stops gracefully.
///
/// A worker's process group is signalled only while the worker runs:
/// once it has exited and been reaped, the group id may name someone
/// else's processes, so what a worker left running behind it (a daemon it
/// started) is not reached. A worker that starts such processes should
/// stop them itself when it is asked to disconnect.
#[derive(Debug)]
pub struct Primary {
    calls: mpsc::UnboundedSender<primary::Call>,
    events: events::EventReceiver,
    stopped: std::sync::Arc<primary::Stopped>,
}

/// How long dropping a [`Primary`] waits for its thread to have killed
/// and reaped the workers. That takes a few milliseconds (100 more with
/// [`Setup::logs`] when a process the workers left behind holds their
/// output); the bound is for a worker the kernel cannot end at once.
pub(crate) const DROP_WAIT: Duration = Duration::from_secs(1);

impl Drop for Primary {
    /// Kill the workers and close the listeners, on the primary's thread;
    /// return once the workers are reaped (waiting a second at most), so that
    /// a program that drops the `Primary` and exits leaves no worker
    /// behind. A drain that `shutdown` started goes on instead.
    fn drop(&mut self) {
        if self.calls.send(primary::Call::Dropped).is_ok() {
            self.stopped.wait(DROP_WAIT);
        }
    }
}

impl Primary {
    /// The next event, or `None` once the primary has stopped.
    ///
    /// The primary keeps the newest unread events, 4,096 and 64 MiB at
    /// most: past them the oldest go, and the next event read is
    /// [`Event::Lagged`] with how many.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let mut primary = child_process::cluster("app.js").start().await?;
    /// while let Some(event) = primary.next_event().await {
    ///     println!("{event:?}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Cancellation
    ///
    /// Cancel-safe: an event not returned stays queued.
    pub async fn next_event(&mut self) -> Option<Event> {
        std::future::poll_fn(|cx| self.events.poll_recv(cx)).await
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> primary::Call) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.calls.send(make(tx)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())
    }

    /// Send a message to one worker (`worker.send()`); it arrives as
    /// `process.on('message')` in a Node worker, [`Worker::recv`] in a
    /// Rust one. Returns once written to the worker's channel.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let primary = child_process::cluster("app.js").start().await?;
    /// primary.send(1, &serde_json::json!({"reload": "config"})).await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Channel`] when the worker is unknown, gone, or its channel
    /// fails; `ChannelError::Encode` when `msg` is no JSON.
    pub async fn send<T: Serialize + ?Sized>(&self, worker: WorkerId, msg: &T) -> Result<()> {
        let msg = serde_json::to_value(msg).map_err(crate::ChannelError::Encode)?;
        self.call(|done| primary::Call::Send {
            worker: Some(worker),
            msg,
            done,
        })
        .await?
    }

    /// Send a message to every live worker. Fails with the first error,
    /// after trying them all.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let primary = child_process::cluster("app.js").start().await?;
    /// primary.broadcast(&"flush-caches").await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`send`](Primary::send).
    pub async fn broadcast<T: Serialize + ?Sized>(&self, msg: &T) -> Result<()> {
        let msg = serde_json::to_value(msg).map_err(crate::ChannelError::Encode)?;
        self.call(|done| primary::Call::Send {
            worker: None,
            msg,
            done,
        })
        .await?
    }

    /// The live workers (forked and not yet exited), by id.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let primary = child_process::cluster("app.js").start().await?;
    /// for w in primary.workers().await? {
    ///     println!("{} pid {} {:?}", w.id, w.pid, w.state);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Channel`] (`Closed`) when the primary has stopped.
    pub async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        self.call(primary::Call::Workers).await
    }

    /// Start one more worker (`cluster.fork()`), returning its id.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let primary = child_process::cluster("app.js").workers(1).start().await?;
    /// let second = primary.fork().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] when it cannot be started.
    pub async fn fork(&self) -> Result<WorkerId> {
        self.call(primary::Call::Fork).await?
    }

    /// Ask one worker to stop gracefully (`worker.disconnect()`): it gets
    /// no new connections from now on, closes its servers, finishes its
    /// connections and exits. Its [`Event::Exit`] says `expected`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let primary = child_process::cluster("app.js").start().await?;
    /// primary.disconnect(1).await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Channel`] (`Closed`) when the worker is unknown or gone.
    pub async fn disconnect(&self, worker: WorkerId) -> Result<()> {
        self.call(|done| primary::Call::Disconnect { worker, done })
            .await?
    }

    /// Send `signal` to one worker's process group (the worker and what it
    /// started, while the worker runs). Its [`Event::Exit`] says
    /// `expected` when it died of this signal, or exited after a stop
    /// signal (`SIGTERM`, `SIGINT`, `SIGQUIT`, `SIGKILL`); a worker sent
    /// `SIGHUP` that crashes later still crashed (and is restarted).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let primary = child_process::cluster("app.js").start().await?;
    /// primary.kill(1, child_process::Signal::SIGKILL).await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Channel`] (`Closed`) when the worker is unknown or gone.
    pub async fn kill(&self, worker: WorkerId, signal: Signal) -> Result<()> {
        self.call(|done| primary::Call::Kill {
            worker,
            signal,
            done,
        })
        .await?
    }

    /// Replace every worker, one slot at a time, without failing a
    /// request: start the new worker, wait until it is ready, take the old
    /// one out of the round robin, ask it to disconnect, and give it the
    /// [`drain_timeout`](Setup::drain_timeout), then the kill signal, then
    /// `SIGKILL` to its group. If a new worker fails (cannot start, exits,
    /// or is not ready in time) the old one is kept, the reload stops
    /// there and [`Reload::failed`] says why.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let primary = child_process::cluster("app.js").start().await?;
    /// // after deploying new code:
    /// let report = primary.reload().await?;
    /// if let Some(why) = report.failed {
    ///     eprintln!("reload stopped: {why}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Channel`] when the primary has stopped or a reload is
    /// already in progress.
    pub async fn reload(&self) -> Result<Reload> {
        self.call(primary::Call::Reload).await?
    }

    /// Reopen the log files by name ([`Setup::logs`]), after an outside
    /// tool renamed them; `SIGUSR1` does the same.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let primary = child_process::cluster("app.js").start().await?;
    /// primary.reopen_logs().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Channel`] (`Closed`) when the primary has stopped.
    pub async fn reopen_logs(&self) -> Result<()> {
        self.call(primary::Call::ReopenLogs).await
    }

    /// Stop the cluster gracefully: stop accepting, ask every worker to
    /// disconnect, wait up to `drain` for them to exit, then send the
    /// [`kill_signal`](Setup::kill_signal) to the workers' process groups,
    /// then `SIGKILL` after the [`kill_grace`](Setup::kill_grace). No
    /// worker is left running or unreaped when this returns.
    ///
    /// Events that were not read are dropped with the primary.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// use std::time::Duration;
    /// let primary = child_process::cluster("app.js").start().await?;
    /// let report = primary.shutdown(Duration::from_secs(10)).await?;
    /// assert!(report.drained, "a worker had to be killed");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Channel`] (`Closed`) when the primary had already stopped.
    ///
    /// # Cancellation
    ///
    /// The shutdown goes on if this future is dropped; dropping the
    /// `Primary` (which this consumes) cannot then kill the workers early.
    pub async fn shutdown(self, drain: Duration) -> Result<Shutdown> {
        self.call(|done| primary::Call::Shutdown { drain, done })
            .await
    }
}

impl futures_core::Stream for Primary {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.events.poll_recv(cx)
    }
}

/// The error of a call to a primary (or worker) that is gone.
fn stopped() -> Error {
    Error::Channel(crate::ChannelError::Closed)
}

/// An unknown or gone worker.
fn no_worker(worker: WorkerId) -> Error {
    Error::Channel(crate::ChannelError::Io(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("no live worker {worker}"),
    )))
}

/// A call the primary cannot take now.
fn busy(why: &str) -> Error {
    Error::Channel(crate::ChannelError::Io(std::io::Error::new(
        std::io::ErrorKind::ResourceBusy,
        why.to_owned(),
    )))
}
