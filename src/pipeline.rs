//! Pipelines without a shell: `exec_file("cat", [f]).pipe(exec_file("grep",
//! ["x"])).pipe(exec_file("wc", ["-l"]))`, run as one process group under
//! the same ending rules as one child.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::capture::{into_text, Collected, Ending, Limits, Rules, Sink, Tee};
use crate::child::{drive, Child, Io, Run};
use crate::command::Command;
use crate::error::{CommandLine, Error, Output, Result};
use crate::exec::{Feed, Job, Route};
use crate::kill::{kill_stragglers, signal_tree, Ended, OnDrop, Proc};
use crate::stdio::{ChildStderr, Stdio};
use crate::{sys, Exec, ExecFile, Signal};

/// The most stages a pipeline may have.
const MAX_STAGES: usize = 64;

/// Programs whose stdout feeds the next one's stdin, without a shell:
/// `a.pipe(b).pipe(c)` is `a | b | c`. Built by [`Exec::pipe`] and
/// [`ExecFile::pipe`]; `.await` it, or [`run_sync`](Pipeline::run_sync).
///
/// - Every stage runs in one process group, led by the first: a timeout,
///   `max_buffer` or a dropped future kills all of them (and what they
///   started), as for one `exec`.
/// - The last stage's stdout is captured (or routed as its `stdout(..)`
///   says); the first stage's stdin is what its `stdin(..)` says; every
///   stage's stderr that is captured (the default) goes to one pipe, so
///   `Output.stderr` holds them all, in the order they were written. If
///   any stage tees its stderr ([`Stdio::tee`](crate::Stdio::tee)), that
///   pipe is shown live and its tail kept.
/// - It fails as `set -o pipefail` does: with [`Error::Pipeline`], naming the
///   last stage that failed and its status. A stage before the last that
///   died of `SIGPIPE` (a later stage such as `head -1` stopped reading) is
///   not a failure (a shell stage that reports it as exit status 141, as
///   `exec("yes")` does, neither), where bash's `pipefail` would say 141.
/// - The knobs that apply to the whole (`timeout`, `kill_signal`,
///   `kill_grace`, `max_buffer`, `ignore_status`, `forward_signals`) are
///   taken from the first stage and can be set on the pipeline; those of
///   later stages are not used. Each stage's `cwd`, `env` and arguments are
///   its own.
///
/// # Examples
///
/// ```
/// use child_process as cp;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cp::Result<()> {
/// let count = cp::exec_file("printf", ["a\\nx1\\nb\\nx2\\n"])
///     .pipe(cp::exec_file("grep", ["x"]))
///     .pipe(cp::exec_file("wc", ["-l"]))
///     .timeout(Duration::from_secs(10))
///     .text()
///     .await?;
/// assert_eq!(count.trim(), "2");
/// # Ok(())
/// # }
/// ```
#[must_use = "`Pipeline` does nothing until you `.await` it"]
#[derive(Debug, Clone)]
pub struct Pipeline {
    stages: Vec<Job>,
    limits: Limits,
    ignore_status: bool,
    forward_signals: bool,
}

impl From<Exec> for Pipeline {
    fn from(exec: Exec) -> Pipeline {
        Pipeline::first(exec.job)
    }
}

impl From<ExecFile> for Pipeline {
    fn from(exec: ExecFile) -> Pipeline {
        Pipeline::first(exec.job)
    }
}

impl Pipeline {
    fn first(job: Job) -> Pipeline {
        Pipeline {
            limits: job.limits,
            ignore_status: job.ignore_status,
            forward_signals: job.forward_signals,
            stages: vec![job],
        }
    }

    pub(crate) fn then(mut self, next: impl Into<Pipeline>) -> Pipeline {
        self.stages.extend(next.into().stages);
        self
    }

    /// Add a stage (or another pipeline's stages) at the end.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> child_process::Result<()> {
    /// use child_process as cp;
    /// let out = cp::exec("echo b; echo a").pipe(cp::exec("sort")).pipe(cp::exec("head -n 1")).text_sync()?;
    /// assert_eq!(out, "a");
    /// # Ok(())
    /// # }
    /// ```
    pub fn pipe(self, next: impl Into<Pipeline>) -> Pipeline {
        self.then(next)
    }

    /// Kill every stage (the whole group) if the pipeline runs longer than
    /// `timeout`, and fail with [`Error::Timeout`]. As for
    /// [`Exec::timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> child_process::Result<()> {
    /// use child_process as cp;
    /// use std::time::Duration;
    /// let err = cp::exec("sleep 10").pipe(cp::exec("cat")).timeout(Duration::from_millis(50)).run_sync().unwrap_err();
    /// assert!(err.is_timeout());
    /// # Ok(())
    /// # }
    /// ```
    pub fn timeout(mut self, timeout: std::time::Duration) -> Pipeline {
        self.limits.timeout = Some(timeout);
        self
    }

    /// The signal a timeout, `max_buffer` or a dropped future sends first
    /// (default `SIGTERM`).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> child_process::Result<()> {
    /// use child_process as cp;
    /// use std::time::Duration;
    /// let run = cp::exec("sleep 10").pipe(cp::exec("cat")).timeout(Duration::from_millis(50));
    /// assert!(run.kill_signal(cp::Signal::SIGINT).run_sync().unwrap_err().is_timeout());
    /// # Ok(())
    /// # }
    /// ```
    pub fn kill_signal(mut self, signal: Signal) -> Pipeline {
        self.limits.kill_signal = signal;
        self
    }

    /// How long after `kill_signal` `SIGKILL` follows (default 2 s).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> child_process::Result<()> {
    /// use child_process as cp;
    /// use std::time::Duration;
    /// let run = cp::exec("sleep 10").pipe(cp::exec("cat")).timeout(Duration::from_millis(50));
    /// assert!(run.kill_grace(Duration::from_millis(100)).run_sync().unwrap_err().is_timeout());
    /// # Ok(())
    /// # }
    /// ```
    pub fn kill_grace(mut self, grace: std::time::Duration) -> Pipeline {
        self.limits.kill_grace = grace;
        self
    }

    /// The most bytes kept from the last stage's stdout and from the
    /// stages' stderr, each (default 1 MiB).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> child_process::Result<()> {
    /// use child_process as cp;
    /// let err = cp::exec("yes").pipe(cp::exec("cat")).max_buffer(1000).run_sync().unwrap_err();
    /// assert!(matches!(err, cp::Error::MaxBuffer { .. }));
    /// # Ok(())
    /// # }
    /// ```
    pub fn max_buffer(mut self, limit: usize) -> Pipeline {
        self.limits.max_buffer = limit;
        self
    }

    /// Resolve `Ok(output)` even when a stage fails (the output's status is
    /// the last stage's).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> child_process::Result<()> {
    /// use child_process as cp;
    /// let out = cp::exec("echo x").pipe(cp::exec("grep y")).ignore_status().run_sync()?;
    /// assert_eq!(out.status.code(), Some(1));
    /// # Ok(())
    /// # }
    /// ```
    pub fn ignore_status(mut self) -> Pipeline {
        self.ignore_status = true;
        self
    }

    /// Whether terminal signals are passed on to the pipeline's group
    /// (default `true`; see [`Exec::forward_signals`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> child_process::Result<()> {
    /// use child_process as cp;
    /// let out = cp::exec("echo x").pipe(cp::exec("cat")).forward_signals(false).text_sync()?;
    /// assert_eq!(out, "x");
    /// # Ok(())
    /// # }
    /// ```
    pub fn forward_signals(mut self, forward: bool) -> Pipeline {
        self.forward_signals = forward;
        self
    }

    /// Run to completion on this thread, without a tokio runtime.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> child_process::Result<()> {
    /// use child_process as cp;
    /// let out = cp::exec("echo hi").pipe(cp::exec("tr a-z A-Z")).run_sync()?;
    /// assert_eq!(out.stdout, b"HI\n");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As for `.await`.
    pub fn run_sync(self) -> Result<Output> {
        self.run_blocking()
    }

    /// [`run_sync`](Pipeline::run_sync), stdout as a `String` without its
    /// trailing newline.
    ///
    /// # Examples
    ///
    /// ```
    /// # fn main() -> child_process::Result<()> {
    /// use child_process as cp;
    /// assert_eq!(cp::exec("echo hi").pipe(cp::exec("cat")).text_sync()?, "hi");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As for `.await`, and [`Error::Io`] when stdout is not UTF-8.
    pub fn text_sync(self) -> Result<String> {
        let line = self.command_line();
        into_text(&line, self.run_sync()?)
    }

    /// Run, and give stdout as a `String` without its trailing newline.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// use child_process as cp;
    /// assert_eq!(cp::exec("echo hi").pipe(cp::exec("cat")).text().await?, "hi");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As for `.await`, and [`Error::Io`] when stdout is not UTF-8.
    ///
    /// # Cancellation
    ///
    /// Dropping the future kills every stage (the whole group).
    pub fn text(self) -> crate::TextFuture {
        let line = self.command_line();
        crate::TextFuture(Box::pin(async move { into_text(&line, self.run().await?) }))
    }

    /// `a | b | c`, for messages.
    pub(crate) fn command_line(&self) -> CommandLine {
        let parts: Vec<String> = self
            .stages
            .iter()
            .map(|s| s.spec.command_line().to_string())
            .collect();
        CommandLine::verbatim(&parts.join(" | "))
    }

    pub(crate) fn stages(&self) -> &[Job] {
        &self.stages
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Where the last stage's stdout and the stages' stderr go here.
    pub(crate) fn sinks(&self, shared_stderr: bool) -> [Option<Sink>; 2] {
        let last = self.stages.last().expect("a pipeline has a stage");
        let stdout = match &last.stdout {
            Route::Capture => Some(Sink::keep(self.limits.max_buffer)),
            Route::Tee => Some(Sink::Tee(Tee::new(1))),
            _ => None,
        };
        // One pipe carries the stderr of every stage that captures it: shown
        // live if any stage tees its stderr, kept otherwise.
        let tees = self
            .stages
            .iter()
            .any(|s| !s.spec.merge_stderr && matches!(s.stderr, Route::Tee));
        let stderr = shared_stderr.then(|| {
            if tees {
                Sink::Tee(Tee::new(2))
            } else {
                Sink::keep(self.limits.max_buffer)
            }
        });
        [stdout, stderr]
    }

    /// Whether any stage's stderr is captured (then one pipe collects them).
    pub(crate) fn captures_stderr(&self) -> bool {
        self.stages
            .iter()
            .any(|s| !s.spec.merge_stderr && matches!(s.stderr, Route::Capture | Route::Tee))
    }

    pub(crate) fn forwards_signals(&self) -> bool {
        self.forward_signals
    }

    /// The whole run, as `Job::run`.
    pub(crate) fn run(self) -> impl Future<Output = Result<Output>> + Send + 'static {
        crate::offload::run(
            self,
            Pipeline::command_line,
            Pipeline::run_blocking_until,
            Pipeline::run_in_place,
        )
    }

    // Not an `async fn`, on purpose: see `offload::run`.
    #[allow(clippy::manual_async_fn)]
    fn run_in_place(self) -> impl Future<Output = Result<Output>> + Send + 'static {
        async move {
            let shared_stderr = self.captures_stderr();
            let (mut run, io) = Running::start(&self, shared_stderr)?;
            let (ending, [out, err]) = drive(&mut run, io).await?;
            let statuses = run.statuses()?;
            judge(&self, ending, statuses, out.into_vec(), err.into_vec())
        }
    }
}

impl IntoFuture for Pipeline {
    type Output = Result<Output>;
    type IntoFuture = crate::ExecFuture;

    fn into_future(self) -> crate::ExecFuture {
        crate::ExecFuture(Box::pin(self.run()))
    }
}

/// The pipes a pipeline's stages are started with.
pub(crate) struct Plumbing {
    /// `(read, write)` between stage `i` and `i + 1`.
    pub links: Vec<(Option<OwnedFd>, Option<OwnedFd>)>,
    /// The one stderr pipe of the captured stages: `(ours, theirs)`.
    pub stderr: Option<(OwnedFd, OwnedFd)>,
}

impl Plumbing {
    pub(crate) fn new(pipeline: &Pipeline, shared_stderr: bool) -> std::io::Result<Plumbing> {
        let mut links = Vec::new();
        for _ in 1..pipeline.stages.len() {
            let (read, write) = sys::pipe()?;
            links.push((Some(read), Some(write)));
        }
        let stderr = if shared_stderr {
            let (read, write) = sys::pipe()?;
            sys::set_nonblocking(read.as_fd())?;
            Some((read, write))
        } else {
            None
        };
        Ok(Plumbing { links, stderr })
    }

    /// Stage `i`'s stdin, stdout and stderr. The pipe ends it gets are taken
    /// out, so the parent's copies close once the stage has started.
    pub(crate) fn stdio(&mut self, i: usize, job: &Job) -> std::io::Result<[Stdio; 3]> {
        let [stdin, stdout, stderr] = job.stdio()?;
        let n = self.links.len() + 1;
        let stdin = if i == 0 {
            stdin
        } else {
            Stdio::from(self.links[i - 1].0.take().expect("each read end once"))
        };
        let stdout = if i + 1 == n {
            stdout
        } else {
            Stdio::from(self.links[i].1.take().expect("each write end once"))
        };
        let stderr = match (&self.stderr, &job.stderr) {
            (Some((_, theirs)), Route::Capture | Route::Tee) if !job.spec.merge_stderr => {
                Stdio::from(theirs.try_clone()?)
            }
            _ => stderr,
        };
        Ok([stdin, stdout, stderr])
    }
}

/// A pipeline's stages once started, as the driver runs them.
struct Running {
    children: Vec<Child>,
    /// A pidfd of the first stage, kept after it is reaped: it names the
    /// group for as long as the others run.
    leader: Option<OwnedFd>,
    leader_pid: libc::pid_t,
    rules: Rules,
    line: CommandLine,
    forwarding: Option<sys::forward::Forwarding>,
}

impl Running {
    fn start(pipeline: &Pipeline, shared_stderr: bool) -> Result<(Running, Io<'_>)> {
        let line = pipeline.command_line();
        let n = pipeline.stages.len();
        if n > MAX_STAGES {
            return Err(Error::spawn(
                &line,
                format!("a pipeline has at most {MAX_STAGES} stages, not {n}"),
                std::io::Error::from(std::io::ErrorKind::InvalidInput),
            ));
        }
        let mut plumbing = Plumbing::new(pipeline, shared_stderr).map_err(|e| {
            crate::spawn::resource_error(&line, "create the pipes between the stages", e)
        })?;
        let on_drop = OnDrop::Kill {
            signal: pipeline.limits.kill_signal,
            grace: Some(pipeline.limits.kill_grace),
        };
        let mut children: Vec<Child> = Vec::with_capacity(n);
        for (i, job) in pipeline.stages.iter().enumerate() {
            let stage_line = job.spec.command_line();
            let [a, b, c] = plumbing
                .stdio(i, job)
                .map_err(|e| Error::spawn(&stage_line, "cannot set up the stage's stdio", e))?;
            let mut spec = job.spec.clone();
            // One group for all, named after the first stage. If a stage
            // fails to start, the ones started are dropped: killed.
            spec.process_group = i == 0;
            spec.new_session = false;
            spec.join_group = children.first().map(|first| first.pid() as libc::pid_t);
            let mut cmd = Command::from_spec(spec);
            cmd.stdin(a).stdout(b).stderr(c);
            children.push(cmd.spawn_with(&[], on_drop, Limits::UNLIMITED)?);
        }
        let leader_pid = children[0].pid() as libc::pid_t;
        let leader = children[0]
            .proc()
            .pidfd
            .and_then(|fd| fd.try_clone_to_owned().ok());
        // The group, and any stage that had to lead its own (see
        // `spawn_raw`).
        let forwarding = pipeline
            .forward_signals
            .then(|| {
                let leaders = children.iter().filter(|c| c.leads_group());
                sys::forward::forward_to(leaders.map(|c| (c.pid() as libc::pid_t, c.proc().pidfd)))
            })
            .flatten();
        let mut stdin = match &pipeline.stages[0].stdin {
            Feed::Bytes(_) => children[0].stdin.take(),
            _ => None,
        };
        let input = pipeline.stages[0].input();
        let mut stdout = children[n - 1].stdout.take();
        let mut stderr = match plumbing.stderr.take() {
            Some((ours, _theirs)) => Some(ChildStderr::new(ours).map_err(|e| {
                crate::spawn::resource_error(&line, "register a pipe with the tokio runtime", e)
            })?),
            None => None,
        };
        let sinks = pipeline.sinks(shared_stderr);
        let io = Io::take(&mut stdin, input, &mut stdout, &mut stderr, sinks);
        let run = Running {
            rules: Rules::new(pipeline.limits, Instant::now(), n, true),
            children,
            leader,
            leader_pid,
            line,
            forwarding,
        };
        Ok((run, io))
    }

    fn leader(&self) -> Proc<'_> {
        Proc {
            pid: self.leader_pid,
            pidfd: self.leader.as_ref().map(|fd| fd.as_fd()),
        }
    }

    /// The unreaped stages.
    fn procs(&self) -> Vec<Proc<'_>> {
        self.children
            .iter()
            .filter(|c| !c.reaped())
            .map(|c| c.proc())
            .collect()
    }

    fn statuses(&mut self) -> Result<Vec<Ended>> {
        self.children
            .iter_mut()
            .map(|c| Ok(c.try_end()?.expect("every stage is reaped at the end")))
            .collect()
    }
}

impl Drop for Running {
    /// Dropped before the end (a dropped future): each stage's own drop
    /// kills it, and the first stage's the group, while it is unreaped.
    /// Once it was reaped, no stage's pid names the group: it is reached
    /// through the leader's kept pidfd.
    fn drop(&mut self) {
        if !self.children[0].reaped() {
            return;
        }
        let members: Vec<_> = self
            .children
            .iter_mut()
            .filter_map(Child::hand_over)
            .collect();
        if !members.is_empty() {
            let on_drop = OnDrop::Kill {
                signal: self.rules.limits().kill_signal,
                grace: Some(self.rules.limits().kill_grace),
            };
            let sigkill_due = self.rules.sigkill_due();
            let leader = (self.leader_pid, self.leader.as_ref());
            crate::reaper::abandon_group(leader, members, on_drop, sigkill_due);
        }
    }
}

impl Run for Running {
    fn rules(&mut self) -> &mut Rules {
        &mut self.rules
    }

    fn line(&self) -> &CommandLine {
        &self.line
    }

    fn poll_exited(&mut self, i: usize, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.children[i].poll_exited(cx)
    }

    fn end(&mut self, i: usize) -> Result<Option<Ended>> {
        // The last reap empties the group: unregister it first.
        if self.children.iter().filter(|c| !c.reaped()).count() == 1 {
            self.forwarding = None;
        }
        self.children[i].try_end()
    }

    fn signal(&self, signal: i32) {
        for child in &self.children {
            child.trace_signal(signal, true);
        }
        signal_tree(Some(self.leader()), &self.procs(), signal);
    }

    fn kill_stragglers(&self) {
        let pids: Vec<libc::pid_t> = self.procs().iter().map(|p| p.pid).collect();
        kill_stragglers(self.leader(), &pids);
    }
}

/// The result of a pipeline: `set -o pipefail`, except that a stage before
/// the last killed by `SIGPIPE` is not a failure.
pub(crate) fn judge(
    pipeline: &Pipeline,
    ending: Ending,
    statuses: Vec<Ended>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
) -> Result<Output> {
    let line = pipeline.command_line();
    let last = *statuses.last().expect("a pipeline has a stage");
    if ending != Ending::Exited {
        let collected = Collected {
            status: last,
            stdout,
            stderr,
            ending,
        };
        return crate::capture::judge(&line, &pipeline.limits, false, collected);
    }
    let n = statuses.len();
    let failed = statuses.iter().enumerate().rev().find_map(|(i, ended)| {
        let status = match ended {
            Ended::Status(status) => *status,
            Ended::Lost(_) => return None,
        };
        // Killed by SIGPIPE, directly, or as a shell reports it for the
        // command it ran (128 + 13): `exec("yes")` is `sh -c yes`.
        let sigpipe = (status.signal() == Some(libc::SIGPIPE)
            || status.code() == Some(128 + libc::SIGPIPE))
            && i + 1 < n;
        (!status.success() && !sigpipe).then_some((i, status))
    });
    // No stage is known to have failed, but one's status is lost (SIGCHLD
    // ignored): pipefail cannot be judged, and success is not known.
    let lost = statuses[..n - 1]
        .iter()
        .enumerate()
        .find_map(|(i, ended)| match ended {
            Ended::Lost(why) => Some((i, *why)),
            Ended::Status(_) => None,
        });
    if let (None, Some((i, why)), false) = (failed, lost, pipeline.ignore_status) {
        return Err(Error::StatusLost {
            command: line,
            reason: format!(
                "the status of stage {} (`{}`) is lost: {why}",
                i + 1,
                pipeline.stages[i].spec.command_line()
            ),
            stdout,
            stderr,
        });
    }
    match failed {
        Some((i, status)) if !pipeline.ignore_status => Err(Error::Pipeline {
            command: line,
            stage: i + 1,
            stage_command: pipeline.stages[i].spec.command_line(),
            output: Box::new(Output {
                status,
                stdout,
                stderr,
            }),
        }),
        _ => Collected {
            status: last,
            stdout,
            stderr,
            ending,
        }
        .into_output(&line),
    }
}

impl fmt::Display for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.command_line(), f)
    }
}
