//! `Child`: a running process, its exit, its signals and (for `fork`) its
//! channel.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::unix::AsyncFd;

use crate::channel::Channel;
use crate::error::{ChannelError, CommandLine, Error, ExitStatus, Output, Result};
use crate::kill::{abandon, signal_tree, OnDrop};
use crate::spawn::RawChild;
use crate::stdio::{ChildStderr, ChildStdin, ChildStdout};
use crate::sys::reaper::{self, Orphan, PendingKill};
use crate::{sys, Signal};

/// How the exit of a child is noticed.
enum ExitWatch {
    /// The pidfd becomes readable when the process exits (Linux ≥ 5.3).
    Pidfd(AsyncFd<OwnedFd>),
    /// Fallback: every `SIGCHLD`, then `waitpid(pid, WNOHANG)` for this pid.
    Sigchld(tokio::signal::unix::Signal),
}

/// A running (or finished) child process.
///
/// `stdin`, `stdout` and `stderr` are the parent's pipe ends when the
/// corresponding [`Stdio`](crate::Stdio) was piped; take them out to use them.
///
/// Dropping a `Child` does not kill the process (unless
/// [`Command::kill_on_drop`](crate::Command::kill_on_drop)); it is reaped in the background once it exits,
/// so no zombie is left.
///
/// # Examples
///
/// ```no_run
/// use child_process as cp;
/// use tokio::io::{AsyncBufReadExt, BufReader};
///
/// # async fn run() -> cp::Result<()> {
/// let mut child = cp::spawn("ls", ["-1"])?;
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
    status: Option<ExitStatus>,
    on_drop: OnDrop,
    leads_group: bool,
    line: CommandLine,
    channel: Option<Channel>,
    /// Set once `kill_tree` sent the first signal: when `SIGKILL` is due. A
    /// destructor running meanwhile keeps that deadline instead of
    /// starting the grace period again.
    sigkill_due: Option<Instant>,
}

impl Child {
    pub(crate) fn from_raw(
        raw: RawChild,
        line: CommandLine,
        on_drop: OnDrop,
        leads_group: bool,
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
            None => match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
                Ok(signal) => ExitWatch::Sigchld(signal),
                Err(e) => return Err(fail(None, e)),
            },
        };
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
            sigkill_due: None,
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
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let child = child_process::spawn("sleep", ["1"])?;
    /// println!("started {}", child.pid());
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
    /// ```no_run
    /// use child_process as cp;
    /// use std::os::unix::process::ExitStatusExt;
    ///
    /// # async fn run() -> cp::Result<()> {
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
    /// a group ([`Command::process_group`](crate::Command::process_group) or [`Command::detached`](crate::Command::detached)).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use child_process as cp;
    /// # async fn run() -> cp::Result<()> {
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
    /// not lead a process group, or if the kernel refuses.
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
        if self.status.is_some() {
            // Reaped: the group id may belong to someone else by now.
            return Ok(());
        }
        sys::kill_group(self.pid, signal.as_raw()).map_err(|e| Error::io(&self.line, e))
    }

    fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        match &self.watch {
            Some(ExitWatch::Pidfd(fd)) => Some(fd.get_ref().as_fd()),
            _ => None,
        }
    }

    /// Wait until the child has exited, without reaping it: its pid and
    /// group id stay reserved, so the group can still be signalled safely.
    pub(crate) async fn exited(&mut self) -> Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        let watch = self
            .watch
            .as_mut()
            .expect("an unreaped child has an exit watch");
        let result = match watch {
            ExitWatch::Pidfd(fd) => fd.readable().await.map(|_| ()),
            ExitWatch::Sigchld(signal) => loop {
                match sys::has_exited(self.pid) {
                    Ok(true) => break Ok(()),
                    Ok(false) => {}
                    Err(e) => break Err(e),
                }
                signal.recv().await;
            },
        };
        result.map_err(|e| Error::io(&self.line, e))
    }

    /// Reap the child if it has exited.
    pub(crate) fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let status = sys::try_reap(self.pid).map_err(|e| Error::io(&self.line, e))?;
        if status.is_some() {
            self.status = status;
            // The pidfd is no longer needed; closing it de-registers it.
            self.watch = None;
        }
        Ok(status)
    }

    /// Wait for the child to exit and return its status.
    ///
    /// stdin is not closed first; drop [`Child::stdin`] if the child waits
    /// for end of input. Calling `wait` again after the child exited returns
    /// the same status.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let status = child_process::spawn("sh", ["-c", "exit 3"])?.wait().await?;
    /// assert_eq!(status.code(), Some(3));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if waiting fails (another part of the program reaped
    /// the child with `waitpid(-1)`).
    ///
    /// # Cancellation
    ///
    /// Cancel safe: dropping the future loses nothing, and a later `wait`
    /// picks up where it left off.
    pub async fn wait(&mut self) -> Result<ExitStatus> {
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            self.exited().await?;
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
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
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
    /// Dropping the future drops the `Child` (see [`Command::kill_on_drop`](crate::Command::kill_on_drop)).
    pub async fn wait_with_output(mut self) -> Result<Output> {
        self.stdin = None;
        let collected = crate::exec::collect(&mut self, &crate::exec::Limits::unlimited()).await?;
        Ok(collected.into_output())
    }

    pub(crate) fn line(&self) -> &CommandLine {
        &self.line
    }

    /// Kill the child (and its group when it leads one) with `signal`, give
    /// it `grace` to exit, then `SIGKILL`; stragglers of the group get
    /// `SIGKILL` once the leader is gone. Then reap it.
    pub(crate) async fn kill_tree(
        &mut self,
        signal: Signal,
        grace: Duration,
    ) -> Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        self.signal_tree(signal.as_raw())?;
        self.sigkill_due = Some(Instant::now() + grace);
        if tokio::time::timeout(grace, self.exited()).await.is_err() {
            self.signal_tree(libc::SIGKILL)?;
            self.exited().await?;
        }
        if self.leads_group {
            // The leader is a zombie now: its group id is still reserved.
            sys::kill_group(self.pid, libc::SIGKILL).map_err(|e| Error::io(&self.line, e))?;
        }
        self.wait().await
    }

    fn signal_tree(&self, signal: i32) -> Result<()> {
        signal_tree(self.pid, self.pidfd(), self.leads_group, signal)
            .map_err(|e| Error::io(&self.line, e))
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
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let mut worker = child_process::fork("worker.js").spawn()?;
    /// worker.send(&serde_json::json!({"job": 1})).await?;
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
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let mut worker = child_process::fork("worker.js").spawn()?;
    /// while let Some(msg) = worker.recv::<serde_json::Value>().await? {
    ///     println!("{msg}");
    /// }
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

    /// Take the channel out of the child, e.g. to [`Channel::split`] it
    /// between tasks. `None` if it is not a forked child or was taken.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let mut worker = child_process::fork("worker.js").spawn()?;
    /// let (tx, mut rx) = worker.take_channel().unwrap().split();
    /// # Ok(())
    /// # }
    /// ```
    pub fn take_channel(&mut self) -> Option<Channel> {
        self.channel.take()
    }

    /// Close our end of the channel; the child sees its channel end
    /// (Node's `'disconnect'`). Messages whose `send` returned are already
    /// in the socket. Does nothing if there is no channel.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let mut worker = child_process::fork("worker.js").spawn()?;
    /// worker.disconnect();
    /// worker.wait().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn disconnect(&mut self) {
        if let Some(channel) = self.channel.take() {
            channel.disconnect();
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        let pidfd = match self.watch.take() {
            Some(ExitWatch::Pidfd(fd)) => Some(fd.into_inner()),
            _ => None,
        };
        match self.sigkill_due {
            // Dropped in the middle of `kill_tree`: the first signal went
            // out already; keep its SIGKILL deadline.
            Some(deadline) => reaper::adopt(Orphan {
                pid: self.pid,
                pidfd,
                kill: Some(PendingKill {
                    group: self.leads_group,
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
