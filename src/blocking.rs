//! The blocking forms: `run_sync`, `text_sync`, `Command::output_sync`,
//! `Pipeline::run_sync`.
//!
//! No tokio here: the same `spawn_raw` as the async forms, then one thread
//! doing what the ending rules ([`Rules`]) ask with `poll(2)` over stdin,
//! stdout, stderr and the pidfds, the way std's `read2` and Node's
//! `spawnSync` (a private libuv loop) do. The rules, the sinks, the kill of
//! the process tree and the mapping to errors are the async forms'.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::capture::{
    deadline_after, judge, Action, Collected, Ending, Event, Limits, Rules, Sink,
};
use crate::command::Command;
use crate::error::{CommandLine, Error, Output, Result, Stream};
use crate::exec::{Feed, Job};
use crate::kill::{kill_stragglers, reap, signal_tree, Ended, OnDrop, Proc};
use crate::offload::Cancel;
use crate::pipeline::{self, Pipeline, Plumbing};
use crate::reaper::{self, abandon, Orphan, PendingKill};
use crate::spawn::{spawn_raw, RawChild, Spec};
use crate::stdio::StdioKind;
use crate::sys;
use crate::trace::Trace;

impl Job {
    pub(crate) fn run_sync(self) -> Result<Output> {
        self.run_sync_until(None)
    }

    /// `run_sync`, stopped (the tree killed as a dropped future kills it)
    /// once `cancel` is readable: an offloaded run whose future was dropped.
    pub(crate) fn run_sync_until(self, cancel: Option<Arc<Cancel>>) -> Result<Output> {
        let line = self.spec.command_line();
        let [a, b, c] = self.stdio().map_err(|e| {
            crate::spawn::resource_error(&line, "duplicate an fd given as stdio", e)
        })?;
        let mut run = SyncRun::new(line, self.limits, self.spec.leads_group());
        run.cancel = cancel;
        let io = run
            .spawn(
                &self.spec,
                [a.kind(), b.kind(), c.kind()],
                self.on_drop(),
                None,
            )?
            .io(self.input(), self.sinks());
        if self.forwards_signals() {
            run.forwarding = run.forward_signals();
        }
        let collected = run.collect(io)?;
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
    /// stdout and stderr are captured whatever their [`Stdio`](crate::Stdio)
    /// says when it is `piped` (the default); stdin gets end of file at once
    /// when piped. A non-zero exit is reported in `status`, not as an
    /// error. Like [`Child::wait_with_output`](crate::Child::wait_with_output),
    /// reading stops 100 ms after the child exited if a background process
    /// it started still holds the pipes. There is no output limit (Node's
    /// `spawnSync` stops at 1 MiB): use
    /// [`exec_file(..).max_buffer(..).run_sync()`](crate::ExecFile::run_sync)
    /// for one. A [`timeout`](Command::timeout) is enforced as by
    /// `Child::wait`.
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
    /// when reading or waiting fails; [`Error::Timeout`] after a timeout.
    #[doc(alias = "spawnSync")]
    pub fn output_sync(&mut self) -> Result<Output> {
        let [a, b, c] = &self.stdio;
        let line = self.spec.command_line();
        let raw = spawn_raw(&self.spec, &line, [a.kind(), b.kind(), c.kind()], &[])?;
        let on_drop = OnDrop::kill_on_drop(self.kill_on_drop);
        let mut run = SyncRun::new(line.clone(), self.limits, self.spec.leads_group());
        let member = run.push(raw, on_drop, None);
        let keep = |piped: bool| piped.then(|| Sink::keep(usize::MAX));
        let sinks = [keep(member.stdout.is_some()), keep(member.stderr.is_some())];
        let io = member.io(&[], sinks);
        let collected = run.collect(io)?;
        match collected.ending {
            Ending::Exited => collected.into_output(&line),
            _ => judge(&line, &self.limits, false, collected),
        }
    }
}

impl Pipeline {
    /// `Pipeline::run_sync`: every stage in one group, driven by this thread.
    pub(crate) fn run_blocking(self) -> Result<Output> {
        run_pipeline(self, None)
    }

    /// `run_blocking`, stopped once `cancel` is readable (see
    /// [`Job::run_sync_until`]).
    pub(crate) fn run_blocking_until(self, cancel: Arc<Cancel>) -> Result<Output> {
        run_pipeline(self, Some(cancel))
    }
}

fn run_pipeline(pipeline: Pipeline, cancel: Option<Arc<Cancel>>) -> Result<Output> {
    let line = pipeline.command_line();
    let stages = pipeline.stages();
    let n = stages.len();
    if n > 64 {
        return Err(Error::spawn(
            &line,
            format!("a pipeline has at most 64 stages, not {n}"),
            io::Error::from(io::ErrorKind::InvalidInput),
        ));
    }
    let shared_stderr = pipeline.captures_stderr();
    let mut plumbing = Plumbing::new(&pipeline, shared_stderr).map_err(|e| {
        crate::spawn::resource_error(&line, "create the pipes between the stages", e)
    })?;
    let limits = *pipeline.limits();
    let on_drop = OnDrop::Kill {
        signal: limits.kill_signal,
        grace: Some(limits.kill_grace),
    };
    let mut run = SyncRun::new(line.clone(), limits, true);
    run.cancel = cancel;
    let mut first_stdin = None;
    let mut last_stdout = None;
    for (i, job) in stages.iter().enumerate() {
        let stage_line = job.spec.command_line();
        let stdio = plumbing
            .stdio(i, job)
            .map_err(|e| Error::spawn(&stage_line, "cannot set up the stage's stdio", e))?;
        let mut spec = job.spec.clone();
        spec.process_group = i == 0;
        spec.new_session = false;
        spec.join_group = run.members.first().map(|m| m.pid);
        let kinds: [&StdioKind; 3] = [stdio[0].kind(), stdio[1].kind(), stdio[2].kind()];
        // A stage that cannot start drops `run`: the others are killed.
        let member = run.spawn(&spec, kinds, on_drop, Some(&stage_line))?;
        if i == 0 {
            first_stdin = member.stdin.take();
        }
        if i + 1 == n {
            last_stdout = member.stdout.take();
        }
    }
    run.keep_leader_pidfd();
    if pipeline.forwards_signals() {
        run.forwarding = run.forward_signals();
    }
    let input = stages[0].input();
    let mut stdin = first_stdin.filter(|_| matches!(stages[0].stdin, Feed::Bytes(_)));
    let mut stderr = plumbing.stderr.take().map(|(ours, _)| ours);
    let sinks = pipeline.sinks(shared_stderr);
    let io = SyncIo::take(&mut stdin, input, &mut last_stdout, &mut stderr, sinks);
    drop(plumbing);
    let (ending, [out, err]) = run.drive(io)?;
    let statuses = run.members.iter().map(SyncMember::ended).collect();
    pipeline::judge(&pipeline, ending, statuses, out.into_vec(), err.into_vec())
}

/// The pipes of a blocking run and where what comes out of them goes.
type SyncIo<'a> = crate::capture::Io<'a, OwnedFd, OwnedFd, OwnedFd>;

/// One process of a blocking run.
struct SyncMember {
    pid: libc::pid_t,
    pidfd: Option<OwnedFd>,
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    on_drop: OnDrop,
    leads_group: bool,
    ended: Option<Ended>,
    trace: Trace,
}

impl SyncMember {
    fn proc(&self) -> Proc<'_> {
        Proc {
            pid: self.pid,
            pidfd: self.pidfd.as_ref().map(|fd| fd.as_fd()),
        }
    }

    fn ended(&self) -> Ended {
        self.ended
            .expect("the rules finish only once every process is reaped")
    }

    /// Its pipes, for a run of this one process.
    fn io<'a>(&mut self, input: &'a [u8], sinks: [Option<Sink>; 2]) -> SyncIo<'a> {
        SyncIo::take(
            &mut self.stdin,
            input,
            &mut self.stdout,
            &mut self.stderr,
            sinks,
        )
    }
}

/// Processes driven by this thread: one child, or a pipeline's stages.
/// Dropped with some unreaped (an error, a panic), it does what the async
/// `Child` does: signal each per its `on_drop` (or keep the `SIGKILL`
/// deadline of a kill in progress), then hand it to the reaper.
struct SyncRun {
    members: Vec<SyncMember>,
    line: CommandLine,
    rules: Rules,
    limits: Limits,
    /// The members share a process group, led by the first.
    group: bool,
    /// A pidfd of the first member kept after it is reaped: it names the
    /// group while the others run (pipelines).
    leader_pidfd: Option<OwnedFd>,
    /// Dropped before the last reap (see `Child::forward_signals`).
    forwarding: Option<sys::forward::Forwarding>,
    /// An offloaded run's link to its future: each process is reported
    /// when started and before it is reaped, and the run stops as an error
    /// once the future was dropped (its drop then kills the tree).
    cancel: Option<Arc<Cancel>>,
}

/// How often a child without a pidfd is checked for its exit.
const FALLBACK_POLL: Duration = Duration::from_millis(5);

impl SyncRun {
    fn new(line: CommandLine, limits: Limits, group: bool) -> SyncRun {
        SyncRun {
            members: Vec::new(),
            line,
            rules: Rules::new(limits, Instant::now(), 0, group),
            limits,
            group,
            leader_pidfd: None,
            forwarding: None,
            cancel: None,
        }
    }

    /// Add a started process (`stage`: its own command line, for a
    /// pipeline); the rules count from the first one's spawn.
    fn push(
        &mut self,
        raw: RawChild,
        on_drop: OnDrop,
        stage: Option<&CommandLine>,
    ) -> &mut SyncMember {
        if self.members.is_empty() {
            self.rules = Rules::new(self.limits, raw.started, 0, self.group);
        }
        self.rules.add_member();
        let trace = Trace::spawned(stage.unwrap_or(&self.line), raw.pid);
        let leads_group = raw.leads_group;
        self.members.push(SyncMember {
            pid: raw.pid,
            pidfd: raw.pidfd,
            stdin: raw.stdin,
            stdout: raw.stdout,
            stderr: raw.stderr,
            on_drop,
            leads_group,
            ended: None,
            trace,
        });
        self.members.last_mut().expect("just pushed")
    }

    /// Start a process (`stage`: its own command line, for a pipeline) and
    /// add it. An offloaded run holds off its future's drop meanwhile, so
    /// the drop either comes first (nothing is started: the run stops) or
    /// finds the process reported and signals it.
    fn spawn(
        &mut self,
        spec: &Spec,
        kinds: [&StdioKind; 3],
        on_drop: OnDrop,
        stage: Option<&CommandLine>,
    ) -> Result<&mut SyncMember> {
        let cancel = self.cancel.clone();
        let spawning = match cancel.as_deref().map(Cancel::spawning) {
            Some(None) => return Err(self.io_err(cancelled())),
            Some(Some(spawning)) => Some(spawning),
            None => None,
        };
        let raw = spawn_raw(spec, stage.unwrap_or(&self.line), kinds, &[])?;
        if let Some(spawning) = spawning {
            let pidfd = raw.pidfd.as_ref().map(|fd| fd.as_fd());
            spawning.started(raw.pid, pidfd, raw.leads_group, on_drop);
        }
        Ok(self.push(raw, on_drop, stage))
    }

    /// Pass the signals a terminal or a service manager sends this process
    /// on to the group the first member leads, and any a later member had
    /// to lead (see `spawn_raw`; `sys::forward`).
    fn forward_signals(&self) -> Option<sys::forward::Forwarding> {
        let leaders = self.members.iter().filter(|m| m.leads_group);
        sys::forward::forward_to(leaders.map(|m| (m.pid, m.pidfd.as_ref().map(|fd| fd.as_fd()))))
    }

    fn keep_leader_pidfd(&mut self) {
        self.leader_pidfd = self.members[0]
            .pidfd
            .as_ref()
            .and_then(|fd| fd.try_clone().ok());
    }

    fn io_err(&self, e: io::Error) -> Error {
        Error::io(&self.line, e)
    }

    fn leader(&self) -> Proc<'_> {
        Proc {
            pid: self.members[0].pid,
            pidfd: self
                .leader_pidfd
                .as_ref()
                .or(self.members[0].pidfd.as_ref())
                .map(|fd| fd.as_fd()),
        }
    }

    fn unreaped(&self) -> Vec<Proc<'_>> {
        self.members
            .iter()
            .filter(|m| m.ended.is_none())
            .map(SyncMember::proc)
            .collect()
    }

    fn reap(&mut self, i: usize) -> Result<()> {
        if self.members.iter().filter(|m| m.ended.is_none()).count() == 1 {
            // The last reap can free the group id: unregister it first.
            self.forwarding = None;
        }
        if let Some(cancel) = &self.cancel {
            if !cancel.reaping(self.members[i].pid) {
                return Err(self.io_err(cancelled()));
            }
        }
        let ended = reap(self.members[i].proc()).map_err(|e| self.io_err(e))?;
        if let Some(ended) = ended {
            self.members[i].trace.ended(&ended);
            self.members[i].ended = Some(ended);
            self.rules.on(Event::Reaped(i), Instant::now());
        }
        Ok(())
    }

    /// The blocking twin of the async driver: one `poll(2)` loop doing what
    /// the same rules ask.
    /// Drive a run of one member and gather what it left.
    fn collect(&mut self, io: SyncIo<'_>) -> Result<Collected> {
        let (ending, [out, err]) = self.drive(io)?;
        Ok(Collected {
            status: self.members[0].ended(),
            stdout: out.into_vec(),
            stderr: err.into_vec(),
            ending,
        })
    }

    fn drive(&mut self, io: SyncIo<'_>) -> Result<(Ending, [Sink; 2])> {
        let SyncIo {
            mut stdin,
            mut input,
            stdout,
            stderr,
            mut sinks,
        } = io;
        self.rules.capture([stdout.is_some(), stderr.is_some()]);
        let pipes = [stdout, stderr];
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(4 + self.members.len());

        let ending = loop {
            let wait = match self.rules.next(Instant::now()) {
                Action::Wait(wait) => wait,
                Action::Reap(i) => {
                    self.reap(i)?;
                    continue;
                }
                Action::Signal(signal) => {
                    for m in self.members.iter().filter(|m| m.ended.is_none()) {
                        m.trace.signal(signal.as_raw(), self.group);
                    }
                    let leader = self.group.then(|| self.leader());
                    signal_tree(leader, &self.unreaped(), signal.as_raw());
                    continue;
                }
                Action::KillStragglers => {
                    let pids: Vec<libc::pid_t> = self.unreaped().iter().map(|p| p.pid).collect();
                    if self.group {
                        kill_stragglers(self.leader(), &pids);
                    }
                    continue;
                }
                Action::DrainReady => {
                    let reading = self.rules.reading();
                    for (i, pipe) in pipes.iter().enumerate() {
                        if let (Some(fd), true) = (pipe, reading[i]) {
                            sinks[i].drain_ready(fd.as_fd());
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
            let watching = if wait.exits { self.rules.watching() } else { 0 };

            let now = Instant::now();
            let mut timeout = wait.until.map(|u| u.saturating_duration_since(now));
            let without_pidfd = (0..self.members.len())
                .any(|i| watching & (1 << i) != 0 && self.members[i].pidfd.is_none());
            if without_pidfd {
                timeout = Some(timeout.map_or(FALLBACK_POLL, |t| t.min(FALLBACK_POLL)));
            }

            fds.clear();
            let mut slot = |fd: Option<&OwnedFd>, events| {
                fd.map(|fd| {
                    fds.push(pollfd(fd, events));
                    fds.len() - 1
                })
            };
            // A tee behind on our own output is not read until it drains.
            let reading = [
                wait.read[0] && sinks[0].has_room(),
                wait.read[1] && sinks[1].has_room(),
            ];
            let out_at = slot(pipes[0].as_ref().filter(|_| reading[0]), libc::POLLIN);
            let err_at = slot(pipes[1].as_ref().filter(|_| reading[1]), libc::POLLIN);
            let in_at = slot(stdin.as_ref(), libc::POLLOUT);
            let pid_at: Vec<Option<usize>> = self
                .members
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    slot(
                        m.pidfd.as_ref().filter(|_| watching & (1 << i) != 0),
                        libc::POLLIN,
                    )
                })
                .collect();
            let cancel_at = self.cancel.as_ref().map(|cancel| {
                fds.push(libc::pollfd {
                    fd: cancel.fd().as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                fds.len() - 1
            });
            // Our own stdout or stderr, while a tee's copy waits for room.
            let tee_at = sinks.each_ref().map(|sink| {
                sink.waiting_fd().map(|fd| {
                    fds.push(libc::pollfd {
                        fd,
                        events: libc::POLLOUT,
                        revents: 0,
                    });
                    fds.len() - 1
                })
            });
            sys::poll(&mut fds, timeout).map_err(|e| self.io_err(e))?;
            let ready = |at: Option<usize>| at.is_some_and(|i| fds[i].revents != 0);
            if ready(cancel_at) {
                return Err(self.io_err(cancelled()));
            }
            for (sink, at) in sinks.iter_mut().zip(tee_at) {
                if ready(at) {
                    sink.flush_now();
                }
            }

            for (i, (at, stream)) in [(out_at, Stream::Stdout), (err_at, Stream::Stderr)]
                .into_iter()
                .enumerate()
            {
                let Some(fd) = pipes[i].as_ref().filter(|_| ready(at)) else {
                    continue;
                };
                let event = match sinks[i].read_from(fd.as_fd()) {
                    Ok(0) => Event::Eof(stream),
                    Ok(_) => Event::Read(stream, sinks[i].overflowed()),
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
            for (i, at) in pid_at.into_iter().enumerate() {
                if watching & (1 << i) == 0 {
                    continue;
                }
                let exited = match at {
                    Some(_) => ready(at),
                    None => match sys::has_exited(self.members[i].pid) {
                        Ok(exited) => exited,
                        // Reaped by the kernel (SIGCHLD ignored): it exited.
                        Err(e) if e.raw_os_error() == Some(libc::ECHILD) => true,
                        Err(e) => return Err(self.io_err(e)),
                    },
                };
                if exited {
                    self.rules.on(Event::Exited(i), Instant::now());
                }
            }
        };
        let cancel = self.cancel.as_ref().map(|cancel| cancel.fd());
        for sink in &mut sinks {
            sink.finish(ending, self.rules.deadline(), cancel);
        }
        Ok((ending, sinks))
    }
}

impl Drop for SyncRun {
    fn drop(&mut self) {
        // Before the reaper can reap the leader and free the group id.
        self.forwarding = None;
        let mut sigkill_due = self.rules.sigkill_due();
        if let Some(cancel) = &self.cancel {
            // The reaper takes over: a dropped future must not signal these
            // numbers from now on.
            for m in self.members.iter().filter(|m| m.ended.is_none()) {
                // After a drop the future signals nothing more either way.
                let _ = cancel.reaping(m.pid);
            }
            // The future's drop sent the first signal already: only the
            // `SIGKILL` after the grace is left (a second SIGTERM or SIGINT
            // can make a program skip its clean shutdown).
            if let (None, Some(at)) = (sigkill_due, cancel.signalled()) {
                let grace = match self.members.first().map(|m| m.on_drop) {
                    Some(OnDrop::Kill { grace, .. }) => grace,
                    _ => None,
                };
                sigkill_due = Some(grace.and_then(|grace| deadline_after(at, grace)));
            }
        }
        // A pipeline whose leader was reaped: the group is reached through
        // the leader's kept pidfd.
        // (No member at all: the first spawn failed.)
        if self.group && self.members.first().is_some_and(|m| m.ended.is_some()) {
            let members = self
                .members
                .iter_mut()
                .filter(|m| m.ended.is_none())
                .map(|m| (m.pid, m.pidfd.take()))
                .collect::<Vec<_>>();
            if !members.is_empty() {
                let on_drop = self.members[0].on_drop;
                let leader = (self.members[0].pid, self.leader_pidfd.as_ref());
                reaper::abandon_group(leader, members, on_drop, sigkill_due);
            }
            return;
        }
        for m in self.members.iter_mut().filter(|m| m.ended.is_none()) {
            let pidfd = m.pidfd.take();
            match sigkill_due {
                Some(deadline) => reaper::adopt(Orphan {
                    pid: m.pid,
                    pidfd,
                    kill: Some(PendingKill {
                        group: m.leads_group,
                        shared: None,
                        deadline,
                    }),
                }),
                None => abandon(m.pid, pidfd, m.leads_group, m.on_drop),
            }
        }
    }
}

/// Why an offloaded run stopped: its future was dropped (nobody sees it).
fn cancelled() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, "the run was cancelled")
}

fn pollfd(fd: &OwnedFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    }
}
