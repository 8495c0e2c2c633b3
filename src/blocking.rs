//! The blocking forms: `run_sync`, `text_sync`, `Command::output_sync`.
//!
//! No tokio here: the same `spawn_raw` as the async forms, then one thread
//! driving stdin, stdout, stderr and the pidfd with `poll(2)`, the way
//! std's `read2` and Node's `spawnSync` (a private libuv loop) do. The
//! capture buffer, the kill of the process tree and the mapping to errors
//! are shared with the async forms.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::capture::Capture;
use crate::command::Command;
use crate::error::{CommandLine, Error, ExitStatus, Output, Result, Stream};
use crate::exec::{Collected, Ending, Job, Limits, PIPE_GRACE};
use crate::kill::{abandon, signal_tree, OnDrop};
use crate::spawn::{spawn_raw, RawChild};
use crate::stdio::Stdio;
use crate::{sys, Signal};

impl Job {
    pub(crate) fn run_sync(self) -> Result<Output> {
        let stdin = self.stdin_kind();
        let (out, err) = (Stdio::piped(), Stdio::piped());
        let line = self.spec.command_line();
        let raw = spawn_raw(
            &self.spec,
            &line,
            [stdin.kind(), out.kind(), err.kind()],
            &[],
        )?;
        let child = SyncChild::new(raw, line, self.on_drop(), self.spec.process_group);
        let collected = collect_sync(child, &self.limits())?;
        self.judge(collected)
    }
}

impl Command {
    /// Run the child to completion on this thread, capturing stdout and
    /// stderr, without a tokio runtime (Node's `spawnSync`, std's
    /// `output()`).
    ///
    /// stdout and stderr are captured whatever their [`Stdio`] says when it
    /// is `piped` (the default); stdin gets end of file at once when piped.
    /// A non-zero exit is reported in `status`, not as an error. Like
    /// [`Child::wait_with_output`](crate::Child::wait_with_output), reading
    /// stops 100 ms after the child exited if a background process it
    /// started still holds the pipes.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn run() -> child_process::Result<()> {
    /// let out = child_process::Command::new("ls").arg("-l").output_sync()?;
    /// assert!(out.status.success());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] when the program cannot be started; [`Error::Io`]
    /// when reading or waiting fails.
    #[doc(alias = "spawnSync")]
    pub fn output_sync(&mut self) -> Result<Output> {
        let [a, b, c] = &self.stdio;
        let line = self.spec.command_line();
        let raw = spawn_raw(&self.spec, &line, [a.kind(), b.kind(), c.kind()], &[])?;
        let on_drop = OnDrop::kill_on_drop(self.kill_on_drop);
        let leads_group = self.spec.process_group || self.spec.new_session;
        let child = SyncChild::new(raw, line, on_drop, leads_group);
        Ok(collect_sync(child, &Limits::unlimited())?.into_output())
    }
}

/// A child driven by this thread. Dropped unreaped (an error, a panic), it
/// does what the async `Child` does: signal per `on_drop`, then hand the
/// child to the reaper.
struct SyncChild {
    raw: RawChild,
    line: CommandLine,
    on_drop: OnDrop,
    leads_group: bool,
    status: Option<ExitStatus>,
}

impl SyncChild {
    fn new(raw: RawChild, line: CommandLine, on_drop: OnDrop, leads_group: bool) -> SyncChild {
        SyncChild {
            raw,
            line,
            on_drop,
            leads_group,
            status: None,
        }
    }

    fn signal_tree(&self, signal: i32) -> Result<()> {
        let pidfd = self.raw.pidfd.as_ref().map(|fd| fd.as_fd());
        signal_tree(self.raw.pid, pidfd, self.leads_group, signal)
            .map_err(|e| Error::io(&self.line, e))
    }

    /// Block until the child has exited (not reaped), for at most `limit`.
    fn wait_exited(&self, limit: Option<Duration>) -> Result<bool> {
        let deadline = limit.map(|l| Instant::now() + l);
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            match &self.raw.pidfd {
                Some(fd) => {
                    let mut fds = [pollfd(fd, libc::POLLIN)];
                    sys::poll(&mut fds, left).map_err(|e| Error::io(&self.line, e))?;
                    if fds[0].revents != 0 {
                        return Ok(true);
                    }
                }
                None => {
                    if sys::has_exited(self.raw.pid).map_err(|e| Error::io(&self.line, e))? {
                        return Ok(true);
                    }
                    std::thread::sleep(left.unwrap_or(FALLBACK_POLL).min(FALLBACK_POLL));
                }
            }
            if left.is_some_and(|l| l.is_zero()) {
                return Ok(false);
            }
        }
    }

    fn reap(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = sys::try_reap(self.raw.pid).map_err(|e| Error::io(&self.line, e))?;
        }
        Ok(self.status)
    }

    /// The blocking twin of `Child::kill_tree`.
    fn kill_tree(&mut self, signal: Signal, grace: Duration) -> Result<ExitStatus> {
        self.signal_tree(signal.as_raw())?;
        if !self.wait_exited(Some(grace))? {
            self.signal_tree(libc::SIGKILL)?;
            self.wait_exited(None)?;
        }
        if self.leads_group {
            // The leader is a zombie now: its group id is still reserved.
            sys::kill_group(self.raw.pid, libc::SIGKILL).map_err(|e| Error::io(&self.line, e))?;
        }
        loop {
            if let Some(status) = self.reap()? {
                return Ok(status);
            }
            self.wait_exited(None)?;
        }
    }
}

impl Drop for SyncChild {
    fn drop(&mut self) {
        if self.status.is_none() {
            abandon(
                self.raw.pid,
                self.raw.pidfd.take(),
                self.leads_group,
                self.on_drop,
            );
        }
    }
}

/// How often a child without a pidfd is checked for its exit.
const FALLBACK_POLL: Duration = Duration::from_millis(5);

fn pollfd(fd: &OwnedFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    }
}

/// The blocking twin of `exec::collect`: one `poll(2)` loop over stdin,
/// stdout, stderr and the pidfd, with the same rules for the end.
fn collect_sync(mut child: SyncChild, limits: &Limits<'_>) -> Result<Collected> {
    let line = child.line.clone();
    let io_err = |e| Error::io(&line, e);
    let mut stdin = child.raw.stdin.take().filter(|_| !limits.input.is_empty());
    let mut stdout = child.raw.stdout.take();
    let mut stderr = child.raw.stderr.take();
    let mut input = limits.input;
    let mut out = Capture::new(limits.max_buffer);
    let mut err = Capture::new(limits.max_buffer);
    let deadline = limits.timeout.map(|t| Instant::now() + t);
    let mut drain_until: Option<Instant> = None;
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(4);

    let ending = 'run: loop {
        if child.status.is_some() && stdout.is_none() && stderr.is_none() {
            break Ending::Exited;
        }
        let now = Instant::now();
        let wake = match (child.status, deadline, drain_until) {
            (Some(_), _, Some(drain)) => Some(drain),
            (None, Some(deadline), _) => Some(deadline),
            _ => None,
        };
        if wake.is_some_and(|w| now >= w) {
            break if child.status.is_some() {
                Ending::Exited
            } else {
                Ending::TimedOut
            };
        }
        let mut wait = wake.map(|w| w - now);
        if child.status.is_none() && child.raw.pidfd.is_none() {
            wait = Some(wait.map_or(FALLBACK_POLL, |w| w.min(FALLBACK_POLL)));
        }

        fds.clear();
        let slot = |fds: &mut Vec<libc::pollfd>, fd: Option<&OwnedFd>, events| {
            fd.map(|fd| {
                fds.push(pollfd(fd, events));
                fds.len() - 1
            })
        };
        let out_at = slot(&mut fds, stdout.as_ref(), libc::POLLIN);
        let err_at = slot(&mut fds, stderr.as_ref(), libc::POLLIN);
        let in_at = slot(&mut fds, stdin.as_ref(), libc::POLLOUT);
        let pid_at = slot(
            &mut fds,
            child.raw.pidfd.as_ref().filter(|_| child.status.is_none()),
            libc::POLLIN,
        );
        sys::poll(&mut fds, wait).map_err(io_err)?;
        let ready = |at: Option<usize>| at.is_some_and(|i| fds[i].revents != 0);

        for (at, pipe, capture, stream) in [
            (out_at, &mut stdout, &mut out, Stream::Stdout),
            (err_at, &mut stderr, &mut err, Stream::Stderr),
        ] {
            if !ready(at) {
                continue;
            }
            let Some(fd) = pipe.as_ref() else { continue };
            match capture.read_from(fd.as_fd()) {
                Ok(0) => *pipe = None,
                Ok(_) if capture.overflowed() => break 'run Ending::Overflow(stream),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(io_err(e)),
            }
        }
        if ready(in_at) {
            if let Some(fd) = &stdin {
                match sys::write(fd.as_fd(), input) {
                    Ok(n) => {
                        input = &input[n..];
                        if input.is_empty() {
                            stdin = None;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    // The child chose not to read the rest: not an error.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => stdin = None,
                    Err(e) => return Err(io_err(e)),
                }
            }
        }
        let exited = match child.raw.pidfd {
            Some(_) => ready(pid_at),
            None => child.status.is_none() && sys::has_exited(child.raw.pid).map_err(io_err)?,
        };
        if exited && child.reap()?.is_some() {
            stdin = None;
            drain_until = Some(Instant::now() + PIPE_GRACE);
        }
    };
    drop(stdin);
    finish(child, limits, ending, [stdout, stderr], [out, err])
}

/// Kill the tree when the capture was cut short, keep what the pipes
/// already hold, and reap.
fn finish(
    mut child: SyncChild,
    limits: &Limits<'_>,
    ending: Ending,
    pipes: [Option<OwnedFd>; 2],
    captures: [Capture; 2],
) -> Result<Collected> {
    let status = match child.status {
        Some(status) => status,
        None => child.kill_tree(limits.kill_signal, limits.kill_grace)?,
    };
    let [mut out, mut err] = captures;
    if ending != Ending::Exited {
        for (pipe, capture) in pipes.iter().zip([&mut out, &mut err]) {
            if let Some(fd) = pipe {
                capture.drain_ready(fd.as_fd());
            }
        }
    }
    Ok(Collected {
        status,
        stdout: out.into_vec(),
        stderr: err.into_vec(),
        ending,
    })
}
