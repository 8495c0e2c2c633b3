//! `Child`: a running process, its exit, its signals and (for `fork`) its
//! channel.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::task::{Context, Poll};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::unix::AsyncFd;

mod collect;

pub(crate) use collect::{drive, Io, Run};

use crate::capture::{Ending, Limits, Rules, Sink};
use crate::channel::Channel;
use crate::error::{ChannelError, CommandLine, Error, ExitStatus, Output, Result};
use crate::kill::{reap, signal_tree, Ended, OnDrop, Proc};
use crate::reaper::{self, abandon, Orphan, PendingKill};
use crate::spawn::RawChild;
use crate::stdio::{ChildStderr, ChildStdin, ChildStdout};
use crate::trace::Trace;
use crate::{sys, Signal};

/// How the exit of a child is noticed.
enum ExitWatch {
    /// The pidfd becomes readable when the process exits (Linux ≥ 5.3).
    Pidfd(AsyncFd<OwnedFd>),
    /// Fallback: every `SIGCHLD`, then `waitid(pid, WNOWAIT)` for this pid.
    Sigchld(tokio::signal::unix::Signal),
    /// Fallback when this process ignores `SIGCHLD`: listening for it would
    /// install a handler and change that choice for the whole process (the
    /// kernel would stop reaping its children), so `waitid(WNOWAIT)` on a
    /// timer instead.
    Poll(tokio::time::Interval),
}

/// How often [`ExitWatch::Poll`] looks.
const EXIT_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// A running (or finished) child process.
///
/// `stdin`, `stdout` and `stderr` are the parent's pipe ends when the
/// corresponding [`Stdio`](crate::Stdio) was piped; take them out to use them.
///
/// Dropping a `Child` does not kill the process (unless
/// [`Command::kill_on_drop`](crate::Command::kill_on_drop)); it is reaped in
/// the background once it exits, so no zombie is left.
///
/// # Examples
///
/// ```
/// use child_process as cp;
/// use tokio::io::{AsyncBufReadExt, BufReader};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cp::Result<()> {
/// let mut child = cp::spawn("printf", ["a\\nb\\n"])?;
/// let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
/// while let Some(line) = lines.next_line().await? {
///     println!("{line}");
/// }
/// child.wait().await?;
/// # Ok(())
/// # }
/// ```
pub struct Child {
    /// The parent's end of the child's stdin, if piped.
    pub stdin: Option<ChildStdin>,
    /// The parent's end of the child's stdout, if piped.
    pub stdout: Option<ChildStdout>,
    /// The parent's end of the child's stderr, if piped.
    pub stderr: Option<ChildStderr>,
    pid: libc::pid_t,
    watch: Option<ExitWatch>,
    /// Set once reaped: its status, or why it is lost.
    status: Option<Ended>,
    on_drop: OnDrop,
    leads_group: bool,
    line: CommandLine,
    channel: Option<Channel>,
    /// How the run ends: the deadline and the kill in progress, kept across
    /// cancelled `wait`s, and read by the destructor (a kill that started
    /// keeps its `SIGKILL` deadline).
    pub(crate) rules: Rules,
    /// Terminal signals this process gets are passed on to the child's
    /// group (an `exec` child) until it is reaped.
    forwarding: Option<sys::forward::Forwarding>,
    /// The exit watch said the child exited (it is a zombie until reaped):
    /// `try_end` need not ask the kernel again before unregistering it.
    exit_seen: bool,
    /// The `tracing` span of the process (nothing without the feature).
    trace: Trace,
}

impl Child {
    pub(crate) fn from_raw(
        raw: RawChild,
        line: CommandLine,
        on_drop: OnDrop,
        leads_group: bool,
        limits: Limits,
    ) -> Result<Child> {
        let pid = raw.pid;
        let fail = |pidfd, e| {
            // The child runs: kill it as the caller asked for a dropped
            // child, and let the reaper reap it.
            abandon(pid, pidfd, leads_group, on_drop);
            Error::spawn(&line, "cannot register the child with the tokio runtime", e)
        };
        let watch = match raw.pidfd {
            Some(fd) => match sys::tokio_fd::register(fd, tokio::io::Interest::READABLE) {
                Ok(fd) => ExitWatch::Pidfd(fd),
                Err((fd, e)) => return Err(fail(fd, e)),
            },
            None if sys::sigchld_ignored() => ExitWatch::Poll(tokio::time::interval(EXIT_POLL)),
            None => match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
                Ok(signal) => ExitWatch::Sigchld(signal),
                Err(e) => return Err(fail(None, e)),
            },
        };
        let trace = Trace::spawned(&line, pid);
        // From here on `Child`'s destructor does the same if a pipe fails.
        let mut child = Child {
            stdin: None,
            stdout: None,
            stderr: None,
            pid,
            watch: Some(watch),
            status: None,
            on_drop,
            leads_group,
            line,
            channel: None,
            rules: Rules::new(limits, raw.started, 1, leads_group),
            forwarding: None,
            exit_seen: false,
            trace,
        };
        let line = child.line.clone();
        let pipe_err = |e| Error::spawn(&line, "cannot register a pipe with the tokio runtime", e);
        child.stdin = raw
            .stdin
            .map(ChildStdin::new)
            .transpose()
            .map_err(pipe_err)?;
        child.stdout = raw
            .stdout
            .map(ChildStdout::new)
            .transpose()
            .map_err(pipe_err)?;
        child.stderr = raw
            .stderr
            .map(ChildStderr::new)
            .transpose()
            .map_err(pipe_err)?;
        Ok(child)
    }

    /// The child's process id.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// let mut child = child_process::spawn("true", [""; 0])?;
    /// println!("started {}", child.pid());
    /// child.wait().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Send `signal` to the child, through its pidfd so a recycled pid can
    /// never be hit. Signalling a child that has already exited does
    /// nothing and is not an error.
    ///
    /// # Examples
    ///
    /// ```
    /// use child_process as cp;
    /// use std::os::unix::process::ExitStatusExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cp::Result<()> {
    /// let mut child = cp::spawn("sleep", ["100"])?;
    /// child.kill(cp::Signal::SIGTERM)?;
    /// assert_eq!(child.wait().await?.signal(), Some(15));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the kernel refuses (`EPERM`).
    pub fn kill(&self, signal: Signal) -> Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        sys::kill(self.pid, self.pidfd(), signal.as_raw()).map_err(|e| Error::io(&self.line, e))
    }

    /// Send `signal` to the child's whole process group: the child and
    /// everything it started that stayed in the group. The child must lead
    /// a group ([`Command::process_group`](crate::Command::process_group) or
    /// [`Command::detached`](crate::Command::detached)); `exec` children do.
    ///
    /// The child itself gets the signal even if it left the group
    /// (`setpgid`, `setsid`), and a group whose id was recycled by an
    /// unrelated process is never signalled. Followed by `SIGCONT` unless
    /// the signal is `SIGKILL` or `SIGCONT` (a stopped process would keep it
    /// pending).
    ///
    /// # Examples
    ///
    /// ```
    /// use child_process as cp;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cp::Result<()> {
    /// let mut child = cp::Command::new("sh").args(["-c", "sleep 100 & wait"]).process_group(true).spawn()?;
    /// child.kill_group(cp::Signal::SIGTERM)?;
    /// child.wait().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Io`] with [`io::ErrorKind::InvalidInput`] if the child does
    /// not lead a process group.
    pub fn kill_group(&self, signal: Signal) -> Result<()> {
        if !self.leads_group {
            return Err(Error::io(
                &self.line,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the child does not lead a process group",
                ),
            ));
        }
        if self.status.is_none() {
            self.signal_tree(signal.as_raw());
        }
        Ok(())
    }

    fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        match &self.watch {
            Some(ExitWatch::Pidfd(fd)) => Some(fd.get_ref().as_fd()),
            _ => None,
        }
    }

    /// Whether the child was reaped (its status, or its loss, is known).
    pub(crate) fn reaped(&self) -> bool {
        self.status.is_some()
    }

    /// Whether the child leads a process group (of its own making).
    pub(crate) fn leads_group(&self) -> bool {
        self.leads_group
    }

    /// The child as the kill and reap functions see it.
    pub(crate) fn proc(&self) -> Proc<'_> {
        Proc {
            pid: self.pid,
            pidfd: self.pidfd(),
        }
    }

    /// Signal the child and, if it leads one, its group (see
    /// [`signal_tree`]). Nothing once it is reaped.
    /// Record a signal sent to this child by its pipeline (tracing).
    pub(crate) fn trace_signal(&self, signal: i32, group: bool) {
        if self.status.is_none() {
            self.trace.signal(signal, group);
        }
    }

    pub(crate) fn signal_tree(&self, signal: i32) {
        if self.status.is_none() {
            self.trace.signal(signal, self.leads_group);
            let me = self.proc();
            signal_tree(self.leads_group.then_some(me), &[me], signal);
        }
    }

    /// Whether the child has exited, as a poll (not reaped: its pid and
    /// group id stay reserved, so the group can still be signalled
    /// safely). A poll, so a driver can watch several children at once.
    pub(crate) fn poll_exited(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.status.is_some() {
            return Poll::Ready(Ok(()));
        }
        let pid = self.pid;
        let watch = self
            .watch
            .as_mut()
            .expect("an unreaped child has an exit watch");
        let result = match watch {
            ExitWatch::Pidfd(fd) => match fd.poll_read_ready(cx) {
                Poll::Ready(ready) => ready.map(drop),
                Poll::Pending => return Poll::Pending,
            },
            ExitWatch::Sigchld(_) | ExitWatch::Poll(_) => loop {
                match sys::has_exited(pid) {
                    Ok(true) => break Ok(()),
                    Ok(false) => {}
                    // Reaped by someone else (the kernel, when SIGCHLD is
                    // ignored): it exited; `try_wait` says what is known.
                    Err(e) if e.raw_os_error() == Some(libc::ECHILD) => break Ok(()),
                    Err(e) => break Err(e),
                }
                let woke = match watch {
                    ExitWatch::Sigchld(signal) => signal.poll_recv(cx).map(drop),
                    ExitWatch::Poll(timer) => timer.poll_tick(cx).map(drop),
                    ExitWatch::Pidfd(_) => unreachable!("handled above"),
                };
                if woke.is_pending() {
                    return Poll::Pending;
                }
            },
        };
        self.exit_seen = result.is_ok();
        Poll::Ready(result.map_err(|e| Error::io(&self.line, e)))
    }

    /// Pass the signals a terminal or a service manager sends this process
    /// on to the child's group while it runs (see `sys::forward`).
    pub(crate) fn forward_signals(&mut self) {
        if self.leads_group && self.status.is_none() {
            self.forwarding = sys::forward::forward_to([(self.pid, self.pidfd())]);
        }
    }

    /// Reap the child if it has exited: `Ok(None)` while it runs, its
    /// status once it exited (the same status again on later calls). Never
    /// blocks, like std's and tokio's.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// let mut child = child_process::spawn("sleep", ["10"])?;
    /// assert!(child.try_wait()?.is_none());
    /// child.kill(child_process::Signal::SIGKILL)?;
    /// child.wait().await?;
    /// assert!(child.try_wait()?.is_some());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the status is lost: the child was reaped by someone
    /// else (a `waitpid(-1)` elsewhere in the program, or the kernel when
    /// `SIGCHLD` is ignored and the kernel is older than 6.15, which keeps
    /// the status in the pidfd).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        let ended = self.try_end()?;
        ended
            .map(|e| e.status().map_err(|err| Error::io(&self.line, err)))
            .transpose()
    }

    /// Reap the child if it has exited: how it ended, status or not.
    pub(crate) fn try_end(&mut self) -> Result<Option<Ended>> {
        if let Some(ended) = self.status {
            return Ok(Some(ended));
        }
        if self.forwarding.is_some() {
            // Unregister the group before the reap that frees its id.
            if !self.exit_seen && matches!(sys::has_exited(self.pid), Ok(false)) {
                return Ok(None);
            }
            self.forwarding = None;
        }
        let status = reap(self.proc()).map_err(|e| Error::io(&self.line, e))?;
        if let Some(ended) = &status {
            self.trace.ended(ended);
            self.status = status;
            // The pidfd is no longer needed; closing it de-registers it.
            self.watch = None;
        }
        Ok(status)
    }

    /// Wait for the child to exit and return its status.
    ///
    /// stdin is closed first (dropped, if the `Child` still holds it), as
    /// std and tokio do, so a child that reads its input to the end cannot
    /// make `wait` hang. Calling `wait` again after the child exited returns
    /// the same status.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// let status = child_process::spawn("sh", ["-c", "exit 3"])?.wait().await?;
    /// assert_eq!(status.code(), Some(3));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if waiting fails (the status was lost, see
    /// [`Child::try_wait`]).
    ///
    /// # Cancellation
    ///
    /// Cancel safe: dropping the future loses nothing, and a later `wait`
    /// picks up where it left off.
    pub async fn wait(&mut self) -> Result<ExitStatus> {
        self.stdin = None;
        let collected = self.collect(&[], [None, None]).await?;
        match collected.ending {
            Ending::Exited => collected
                .status
                .status()
                .map_err(|e| Error::io(&self.line, e)),
            _ => Err(self.rules_error(collected)),
        }
    }

    /// Close stdin, read stdout and stderr to the end while waiting for the
    /// child, and return everything. A non-zero exit is not an error here
    /// (it is in [`exec`](crate::exec)); look at `status`.
    ///
    /// If a process the child started in the background still holds the
    /// pipes after the child exited, reading stops after a short grace
    /// period (100 ms) instead of waiting for it.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// let out = child_process::spawn("echo", ["hi"])?.wait_with_output().await?;
    /// assert_eq!(out.stdout, b"hi\n");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if reading or waiting fails.
    ///
    /// # Cancellation
    ///
    /// Dropping the future drops the `Child` (see
    /// [`Command::kill_on_drop`](crate::Command::kill_on_drop)).
    pub async fn wait_with_output(mut self) -> Result<Output> {
        self.stdin = None;
        let keep = |piped: bool| piped.then(|| Sink::keep(usize::MAX));
        let sinks = [keep(self.stdout.is_some()), keep(self.stderr.is_some())];
        let collected = self.collect(&[], sinks).await?;
        match collected.ending {
            Ending::Exited => collected.into_output(&self.line),
            _ => Err(self.rules_error(collected)),
        }
    }

    pub(crate) fn line(&self) -> &CommandLine {
        &self.line
    }

    /// The error for a run the rules cut short.
    fn rules_error(&self, collected: crate::capture::Collected) -> Error {
        crate::capture::judge(&self.line, self.rules.limits(), false, collected)
            .expect_err("a run cut short is an error")
    }
}

/// The IPC side of a child started by [`fork`](crate::fork).
impl Child {
    pub(crate) fn set_channel(&mut self, channel: Channel) {
        self.channel = Some(channel);
    }

    fn channel(&self) -> Result<&Channel> {
        self.channel
            .as_ref()
            .ok_or(Error::Channel(ChannelError::NoChannel))
    }

    /// Send one message to a forked child: its JSON text and `\n`, as Node's
    /// `subprocess.send`. When this returns `Ok`, the bytes are in the
    /// socket.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// // A worker that prints the first message it gets.
    /// let worker = child_process::fork("sh").args(["-c", "head -n 1 <&3"]).silent(true).spawn()?;
    /// worker.send(&serde_json::json!({"job": 1})).await?;
    /// assert_eq!(worker.wait_with_output().await?.stdout, b"{\"job\":1}\n");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ChannelError::NoChannel`] for a child not started by `fork`;
    /// otherwise those of [`Channel::send`].
    ///
    /// # Cancellation
    ///
    /// As for [`Channel::send`].
    pub async fn send<T: Serialize + ?Sized>(&self, msg: &T) -> Result<()> {
        self.channel()?.send(msg).await
    }

    /// Receive the next message from a forked child; `Ok(None)` once it
    /// closed the channel or exited and everything it sent was delivered.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// let mut worker = child_process::fork("sh").args(["-c", "echo 1 >&3; echo 2 >&3"]).spawn()?;
    /// while let Some(msg) = worker.recv::<serde_json::Value>().await? {
    ///     println!("{msg}");
    /// }
    /// worker.wait().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ChannelError::NoChannel`] for a child not started by `fork`;
    /// otherwise those of [`Channel::recv`].
    ///
    /// # Cancellation
    ///
    /// As for [`Channel::recv`].
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>> {
        match &mut self.channel {
            Some(channel) => channel.recv().await,
            None => Err(Error::Channel(ChannelError::NoChannel)),
        }
    }

    /// Send a message with a handle (a listening or connected socket, or
    /// any fd) to a forked child, Node's `subprocess.send(msg, handle)`:
    /// the child gets its own copy of the fd; yours stays open. A Node
    /// child gets the socket as a `net.Server`, `net.Socket` or
    /// `dgram.Socket`; see [`ChannelSender::send_with_handle`].
    ///
    /// [`ChannelSender::send_with_handle`]: crate::ChannelSender::send_with_handle
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// // A worker that prints the message that came with the listener.
    /// let worker = child_process::fork("sh").args(["-c", "head -n 1 <&3"]).silent(true).spawn()?;
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// worker.send_with_handle(&"server", &listener).await?;
    /// let out = worker.wait_with_output().await?;
    /// assert!(String::from_utf8_lossy(&out.stdout).contains("NODE_HANDLE"));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ChannelError::NoChannel`] for a child not started by `fork`;
    /// otherwise those of [`Channel::send_with_handle`].
    ///
    /// # Cancellation
    ///
    /// As for [`Channel::send`].
    pub async fn send_with_handle<T: Serialize + ?Sized>(
        &self,
        msg: &T,
        handle: &impl AsFd,
    ) -> Result<()> {
        self.channel()?.send_with_handle(msg, handle).await
    }

    /// Receive the next message from a forked child with the handle that
    /// came with it; see [`Channel::recv_with_handle`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// let mut worker = child_process::fork("worker").spawn()?;
    /// while let Some((msg, handle)) = worker.recv_with_handle::<serde_json::Value>().await? {
    ///     println!("{msg} (with a handle: {})", handle.is_some());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ChannelError::NoChannel`] for a child not started by `fork`;
    /// otherwise those of [`Channel::recv_with_handle`].
    ///
    /// # Cancellation
    ///
    /// Cancel safe.
    pub async fn recv_with_handle<T: DeserializeOwned>(
        &mut self,
    ) -> Result<Option<(T, Option<crate::Handle>)>> {
        match &mut self.channel {
            Some(channel) => channel.recv_with_handle().await,
            None => Err(Error::Channel(ChannelError::NoChannel)),
        }
    }

    /// Take the channel out of the child, e.g. to [`Channel::split`] it
    /// between tasks. `None` if it is not a forked child or was taken.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// // A worker that echoes one message back.
    /// let mut worker = child_process::fork("sh").args(["-c", "head -n 1 <&3 >&3"]).spawn()?;
    /// let (tx, mut rx) = worker.take_channel().unwrap().split();
    /// tx.send("ping").await?;
    /// assert_eq!(rx.recv::<String>().await?.as_deref(), Some("ping"));
    /// worker.wait().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn take_channel(&mut self) -> Option<Channel> {
        self.channel.take()
    }

    /// Close our end of the channel; the child sees its channel end
    /// (Node's `'disconnect'`). Messages whose `send` returned are already
    /// in the socket. Afterwards [`send`](Child::send) fails with
    /// [`ChannelError::Closed`] and [`recv`](Child::recv) returns
    /// `Ok(None)`, as after the child disconnected. Does nothing if there is
    /// no channel.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// // A worker that runs until its channel ends.
    /// let mut worker = child_process::fork("sh").args(["-c", "cat <&3"]).spawn()?;
    /// worker.disconnect();
    /// worker.wait().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn disconnect(&mut self) {
        if let Some(channel) = &self.channel {
            channel.close();
        }
    }
}

impl Child {
    /// For a pipeline dropped after its leader was reaped: the pid and
    /// pidfd of this unreaped stage, which the caller hands to the reaper
    /// with the group (`reaper::abandon_group`); this `Child`'s own drop
    /// then does nothing. `None` if it was reaped.
    pub(crate) fn hand_over(&mut self) -> Option<(libc::pid_t, Option<OwnedFd>)> {
        if self.status.is_some() {
            return None;
        }
        self.status = Some(Ended::Lost("handed to the reaper"));
        let pidfd = match self.watch.take() {
            Some(ExitWatch::Pidfd(fd)) => Some(fd.into_inner()),
            _ => None,
        };
        Some((self.pid, pidfd))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        // Unregistered before the reaper can reap it and free its id (the
        // field would otherwise drop after the hand-over).
        self.forwarding = None;
        let pidfd = match self.watch.take() {
            Some(ExitWatch::Pidfd(fd)) => Some(fd.into_inner()),
            _ => None,
        };
        if let OnDrop::Kill { signal, .. } = self.on_drop {
            if self.rules.sigkill_due().is_none() {
                self.trace.signal(signal.as_raw(), self.leads_group);
            }
        }
        match self.rules.sigkill_due() {
            // Dropped in the middle of a kill: the first signal went out
            // already; keep its SIGKILL deadline.
            Some(deadline) => reaper::adopt(Orphan {
                pid: self.pid,
                pidfd,
                kill: Some(PendingKill {
                    group: self.leads_group,
                    shared: None,
                    deadline,
                }),
            }),
            None => abandon(self.pid, pidfd, self.leads_group, self.on_drop),
        }
    }
}

impl fmt::Debug for Child {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Child")
            .field("pid", &self.pid)
            .field("command", &self.line)
            .field("status", &self.status)
            .field("stdin", &self.stdin)
            .field("stdout", &self.stdout)
            .field("stderr", &self.stderr)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::spawn;
    use std::os::unix::process::ExitStatusExt;
    use std::time::{Duration, Instant};

    /// The `SIGCHLD` + `waitpid(pid)` fallback for kernels without pidfds,
    /// forced on for this test process (no other unit test spawns).
    #[tokio::test]
    async fn works_without_pidfds() {
        sys::disable_pidfd_for_tests();
        let mut child = spawn("sh", ["-c", "exit 6"]).unwrap();
        assert_eq!(child.wait().await.unwrap().code(), Some(6));
        let out = crate::exec("echo hi").await.unwrap();
        assert_eq!(out.stdout, b"hi\n");
        let err = crate::exec("sleep 30")
            .timeout(Duration::from_millis(20))
            .await
            .unwrap_err();
        assert_eq!(err.exit_status().unwrap().signal(), Some(libc::SIGTERM));
        // A dropped child is reaped by the reaper thread polling waitpid.
        let child = spawn("true", [""; 0]).unwrap();
        let pid = child.pid() as libc::pid_t;
        drop(child);
        let start = Instant::now();
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(start.elapsed() < Duration::from_secs(5), "not reaped");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
