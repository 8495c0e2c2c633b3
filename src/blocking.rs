//! The blocking forms: `run_sync`, `text_sync`, `Command::output_sync`.
//!
//! No tokio here: the same `spawn_raw` as the async forms, then one thread
//! doing what the ending rules ([`Rules`]) ask with `poll(2)` over stdin,
//! stdout, stderr and the pidfd, the way std's `read2` and Node's
//! `spawnSync` (a private libuv loop) do. The rules, the capture buffer, the
//! kill of the process tree and the mapping to errors are the async forms'.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::capture::{judge, Action, Capture, Collected, Event, Limits, Rules};
use crate::command::Command;
use crate::error::{CommandLine, Error, Output, Result, Stream};
use crate::exec::Job;
use crate::kill::{kill_stragglers, reap, signal_tree, Ended, OnDrop, Proc};
use crate::reaper::{self, abandon, Orphan, PendingKill};
use crate::spawn::{spawn_raw, RawChild};
use crate::stdio::Stdio;
use crate::sys;
use crate::trace::Trace;

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
        let mut child = SyncChild::new(
            raw,
            line,
            self.on_drop(),
            self.spec.leads_group(),
            self.limits,
        );
        if self.forwards_signals() {
            child.forwarding = sys::forward::forward_to(child.raw.pid);
        }
        let input = self.input.as_deref().unwrap_or_default();
        let collected = child.collect(input)?;
        judge(
            &self.spec.command_line(),
            &self.limits,
            self.ignore_status,
            collected,
        )
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
    /// started still holds the pipes. There is no output limit (Node's
    /// `spawnSync` stops at 1 MiB): use
    /// [`exec_file(..).max_buffer(..).run_sync()`](crate::ExecFile::run_sync)
    /// for one.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> child_process::Result<()> {
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
        let child = SyncChild::new(
            raw,
            line.clone(),
            on_drop,
            self.spec.leads_group(),
            Limits::UNLIMITED,
        );
        child.collect(&[])?.into_output(&line)
    }
}

/// A child driven by this thread. Dropped unreaped (an error, a panic), it
/// does what the async `Child` does: signal per `on_drop` (or keep the
/// `SIGKILL` deadline of a kill in progress), then hand the child to the
/// reaper.
struct SyncChild {
    raw: RawChild,
    line: CommandLine,
    on_drop: OnDrop,
    leads_group: bool,
    status: Option<Ended>,
    rules: Rules,
    /// Dropped before the reap (see `Child::forward_signals`).
    forwarding: Option<sys::forward::Forwarding>,
    trace: Trace,
}

/// How often a child without a pidfd is checked for its exit.
const FALLBACK_POLL: Duration = Duration::from_millis(5);

impl SyncChild {
    fn new(
        raw: RawChild,
        line: CommandLine,
        on_drop: OnDrop,
        leads_group: bool,
        limits: Limits,
    ) -> SyncChild {
        let rules = Rules::new(limits, raw.started, 1, leads_group);
        let trace = Trace::spawned(&line, raw.pid);
        SyncChild {
            raw,
            line,
            on_drop,
            leads_group,
            status: None,
            rules,
            forwarding: None,
            trace,
        }
    }

    fn proc(&self) -> Proc<'_> {
        Proc {
            pid: self.raw.pid,
            pidfd: self.raw.pidfd.as_ref().map(|fd| fd.as_fd()),
        }
    }

    fn io_err(&self, e: io::Error) -> Error {
        Error::io(&self.line, e)
    }

    /// The blocking twin of `Child::collect`: one `poll(2)` loop doing what
    /// the same rules ask.
    fn collect(mut self, input: &[u8]) -> Result<Collected> {
        let mut stdin = self.raw.stdin.take().filter(|_| !input.is_empty());
        let stdout = self.raw.stdout.take();
        let stderr = self.raw.stderr.take();
        let mut input = input;
        let max = self.rules.limits().max_buffer;
        let mut captures = [Capture::new(max), Capture::new(max)];
        self.rules.capture([stdout.is_some(), stderr.is_some()]);
        let pipes = [stdout, stderr];
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(4);

        let ending = loop {
            let wait = match self.rules.next(Instant::now()) {
                Action::Wait(wait) => wait,
                Action::Reap(_) => {
                    // It exited: unregister its group before the reap frees the id.
                    self.forwarding = None;
                    let status = reap(self.proc()).map_err(|e| self.io_err(e))?;
                    if let Some(ended) = &status {
                        self.trace.ended(ended);
                        self.status = status;
                        self.rules.on(Event::Reaped(0), Instant::now());
                    }
                    continue;
                }
                Action::Signal(signal) => {
                    self.trace.signal(signal.as_raw(), self.leads_group);
                    let me = self.proc();
                    signal_tree(self.leads_group.then_some(me), &[me], signal.as_raw());
                    continue;
                }
                Action::KillStragglers => {
                    kill_stragglers(self.proc(), &[self.raw.pid]);
                    continue;
                }
                Action::DrainReady => {
                    let reading = self.rules.reading();
                    for (i, pipe) in pipes.iter().enumerate() {
                        if let (Some(fd), true) = (pipe, reading[i]) {
                            captures[i].drain_ready(fd.as_fd());
                        }
                    }
                    self.rules.drained();
                    continue;
                }
                Action::Finish(ending) => break ending,
            };
            if !wait.feed {
                stdin = None;
            }
            let now = Instant::now();
            let mut timeout = wait.until.map(|u| u.saturating_duration_since(now));
            let watch_pidfd = wait.exits && self.raw.pidfd.is_some();
            if wait.exits && !watch_pidfd {
                timeout = Some(timeout.map_or(FALLBACK_POLL, |t| t.min(FALLBACK_POLL)));
            }

            fds.clear();
            let mut slot = |fd: Option<&OwnedFd>, events| {
                fd.map(|fd| {
                    fds.push(pollfd(fd, events));
                    fds.len() - 1
                })
            };
            let out_at = slot(pipes[0].as_ref().filter(|_| wait.read[0]), libc::POLLIN);
            let err_at = slot(pipes[1].as_ref().filter(|_| wait.read[1]), libc::POLLIN);
            let in_at = slot(stdin.as_ref(), libc::POLLOUT);
            let pid_at = slot(
                self.raw.pidfd.as_ref().filter(|_| watch_pidfd),
                libc::POLLIN,
            );
            sys::poll(&mut fds, timeout).map_err(|e| self.io_err(e))?;
            let ready = |at: Option<usize>| at.is_some_and(|i| fds[i].revents != 0);

            for (i, (at, stream)) in [(out_at, Stream::Stdout), (err_at, Stream::Stderr)]
                .into_iter()
                .enumerate()
            {
                let Some(fd) = pipes[i].as_ref().filter(|_| ready(at)) else {
                    continue;
                };
                let event = match captures[i].read_from(fd.as_fd()) {
                    Ok(0) => Event::Eof(stream),
                    Ok(_) => Event::Read(stream, captures[i].overflowed()),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(self.io_err(e)),
                };
                self.rules.on(event, Instant::now());
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
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        // The child chose not to read the rest: not an error.
                        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => stdin = None,
                        Err(e) => return Err(self.io_err(e)),
                    }
                }
            }
            let exited = if watch_pidfd {
                ready(pid_at)
            } else {
                wait.exits
                    && match sys::has_exited(self.raw.pid) {
                        Ok(exited) => exited,
                        // Reaped by the kernel (SIGCHLD ignored): it exited.
                        Err(e) if e.raw_os_error() == Some(libc::ECHILD) => true,
                        Err(e) => return Err(self.io_err(e)),
                    }
            };
            if exited {
                self.rules.on(Event::Exited(0), Instant::now());
            }
        };
        let [out, err] = captures;
        Ok(Collected {
            status: self
                .status
                .expect("the rules finish only once the child is reaped"),
            stdout: out.into_vec(),
            stderr: err.into_vec(),
            ending,
        })
    }
}

impl Drop for SyncChild {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        let pidfd = self.raw.pidfd.take();
        match self.rules.sigkill_due() {
            Some(deadline) => reaper::adopt(Orphan {
                pid: self.raw.pid,
                pidfd,
                kill: Some(PendingKill {
                    group: self.leads_group,
                    deadline,
                }),
            }),
            None => abandon(self.raw.pid, pidfd, self.leads_group, self.on_drop),
        }
    }
}

fn pollfd(fd: &OwnedFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    }
}
