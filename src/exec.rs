//! `exec`: a command line through `/bin/sh -c`, output buffered, a non-zero
//! exit an error. Also what `exec_file` shares with it: the settings of a
//! run ([`Job`]) and how the way a run ended becomes its result
//! ([`judge`]).

use std::ffi::OsStr;
use std::fmt;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::capture::{into_text, judge, Limits, Sink, Tee, DEFAULT_KILL_GRACE};
use crate::child::Child;
use crate::error::{CommandLine, Output, Result};
use crate::kill::OnDrop;
use crate::knobs::exec_knobs;
use crate::spawn::Spec;
use crate::stdio::{Input, InputKind, StdioKind};
use crate::{Signal, Stdio};

/// Node's default `maxBuffer`: 1 MiB per stream.
pub(crate) const DEFAULT_MAX_BUFFER: usize = 1024 * 1024;

/// Run `command` through `/bin/sh -c`, buffering stdout and stderr.
///
/// Defaults:
/// - the shell is `/bin/sh` (see [`Exec::shell`]);
/// - no timeout; a timeout kills with `SIGTERM`, then `SIGKILL` after 2 s;
/// - `max_buffer` is 1 MiB per stream, as in Node;
/// - stdin is `/dev/null` unless [`Exec::stdin`] gives bytes;
/// - the child runs in a process group of its own, so a timeout, the
///   `max_buffer` limit or a dropped future kills everything it started;
/// - a non-zero exit or a death by signal is an [`Error::Exit`](crate::Error::Exit).
///
/// The command resolves once the shell has exited and its pipes are
/// drained. If a process it started in the background (`cmd &`) still holds
/// the pipes, reading stops 100 ms after the shell exited, and that process
/// keeps running, as the `&` asked.
///
/// # Examples
///
/// ```
/// use child_process as cp;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cp::Result<()> {
/// let out = cp::exec("echo hi; echo err >&2").timeout(Duration::from_secs(5)).await?;
/// assert_eq!(out.stdout, b"hi\n");
/// assert_eq!(out.stderr, b"err\n");
/// let kernel = cp::exec("uname -s").text().await?;
/// assert_eq!(kernel, "Linux");
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// See [`ExecFuture`].
pub fn exec(command: impl AsRef<OsStr>) -> Exec {
    let command = command.as_ref();
    let mut spec = Spec::new(OsStr::new("/bin/sh"));
    spec.args = vec!["-c".into(), command.to_owned()];
    spec.display = Some(CommandLine::verbatim(&command.to_string_lossy()));
    spec.process_group = true;
    Exec {
        job: Job::new(spec),
    }
}

/// A command line to run through the shell; `.await` it to run it.
///
/// Built by [`exec`]; every setter takes and returns `self`.
///
/// # Examples
///
/// ```
/// use child_process as cp;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cp::Result<()> {
/// let out = cp::exec("echo $CC in $(pwd)").cwd("/tmp").env("CC", "clang").max_buffer(64 << 20).await?;
/// assert_eq!(out.stdout, b"clang in /tmp\n");
/// # Ok(())
/// # }
/// ```
#[must_use = "`Exec` does nothing until you `.await` it"]
#[derive(Debug, Clone)]
pub struct Exec {
    pub(crate) job: Job,
}

impl Exec {
    /// Run the command line with this shell (called as `shell -c line`)
    /// instead of `/bin/sh`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// let out = child_process::exec("echo ${BASH_VERSION:+bash}").shell("/bin/bash").text().await?;
    /// assert_eq!(out, "bash");
    /// # Ok(())
    /// # }
    /// ```
    pub fn shell(mut self, shell: impl AsRef<Path>) -> Exec {
        self.job.spec.program = shell.as_ref().as_os_str().to_owned();
        self
    }
}

/// Where the stdout or stderr of an `exec` child goes.
#[derive(Debug, Clone)]
pub(crate) enum Route {
    /// Captured into `Output` (the default).
    Capture,
    /// This process's own stream, and a tail of it captured.
    Tee,
    Inherit,
    Null,
    /// An fd of the caller's (shared, so the job can be cloned and run
    /// again; the child gets a duplicate).
    Fd(Arc<OwnedFd>),
}

impl From<Stdio> for Route {
    fn from(stdio: Stdio) -> Route {
        match stdio.0 {
            StdioKind::Piped => Route::Capture,
            StdioKind::Tee => Route::Tee,
            StdioKind::Inherit => Route::Inherit,
            StdioKind::Null => Route::Null,
            StdioKind::Fd(fd) => Route::Fd(Arc::new(fd)),
        }
    }
}

/// What the stdin of an `exec` child is.
#[derive(Debug, Clone)]
pub(crate) enum Feed {
    /// `/dev/null` (the default).
    Null,
    /// A pipe we write these bytes to, then close.
    Bytes(Vec<u8>),
    Inherit,
    Fd(Arc<OwnedFd>),
}

impl From<Input> for Feed {
    fn from(input: Input) -> Feed {
        match input.0 {
            InputKind::Bytes(bytes) => Feed::Bytes(bytes),
            InputKind::Stdio(stdio) => match stdio.0 {
                // A pipe nobody writes to: end of file at once.
                StdioKind::Piped => Feed::Bytes(Vec::new()),
                StdioKind::Inherit | StdioKind::Tee => Feed::Inherit,
                StdioKind::Null => Feed::Null,
                StdioKind::Fd(fd) => Feed::Fd(Arc::new(fd)),
            },
        }
    }
}

/// The settings `Exec` and `ExecFile` share.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub spec: Spec,
    /// The timeout, the kill and `max_buffer`: held once, read by the rules
    /// that end the run and by [`judge`] that words the error.
    pub limits: Limits,
    pub stdin: Feed,
    pub stdout: Route,
    pub stderr: Route,
    pub ignore_status: bool,
    /// Pass terminal signals on to the child's group (see `sys::forward`).
    pub forward_signals: bool,
}

impl Job {
    pub(crate) fn new(spec: Spec) -> Job {
        Job {
            spec,
            limits: Limits {
                timeout: None,
                max_buffer: DEFAULT_MAX_BUFFER,
                kill_signal: Signal::SIGTERM,
                kill_grace: DEFAULT_KILL_GRACE,
            },
            stdin: Feed::Null,
            stdout: Route::Capture,
            stderr: Route::Capture,
            ignore_status: false,
            forward_signals: true,
        }
    }

    /// Whether this run's group gets the terminal's signals passed on.
    pub(crate) fn forwards_signals(&self) -> bool {
        self.forward_signals && self.spec.leads_group()
    }

    /// Start the child as this job says (not yet reading its output).
    pub(crate) fn spawn_child(&self) -> Result<Child> {
        // The command line is built for an error only: `spawn_spec` builds
        // the one the child keeps (for `exec_file`, quoting every argument).
        let stdio = self.stdio().map_err(|e| {
            let line = self.spec.command_line();
            crate::spawn::resource_error(&line, "duplicate an fd given as stdio", e)
        })?;
        let mut child =
            crate::command::spawn_spec(&self.spec, &stdio, &[], self.on_drop(), self.limits)?;
        if self.forwards_signals() {
            child.forward_signals();
        }
        Ok(child)
    }

    /// `Exec::spawn`: the child with its limits, its stdin bytes written
    /// by a task.
    pub(crate) fn spawn(mut self) -> Result<Child> {
        // Nothing reads for a spawned child: a teed stream is shown live by
        // going straight to ours, as `inherit` (there is no result to keep
        // it for).
        for route in [&mut self.stdout, &mut self.stderr] {
            if matches!(route, Route::Tee) {
                *route = Route::Inherit;
            }
        }
        let mut child = self.spawn_child()?;
        if let (Feed::Bytes(bytes), Some(mut stdin)) = (self.stdin, child.stdin.take()) {
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                // EPIPE: the child chose not to read it all; not an error.
                let _ = stdin.write_all(&bytes).await;
            });
        }
        Ok(child)
    }

    /// The whole run (see [`crate::offload::run`] for why no layer of it
    /// is an `async fn`).
    pub(crate) fn run(self) -> impl Future<Output = Result<Output>> + Send + 'static {
        crate::offload::run(
            self,
            |job| job.spec.command_line(),
            |job, cancel| job.run_sync_until(Some(cancel)),
            Job::run_in_place,
        )
    }

    // Not an `async fn`, on purpose: see `offload::run`.
    #[allow(clippy::manual_async_fn)]
    fn run_in_place(self) -> impl Future<Output = Result<Output>> + Send + 'static {
        async move {
            let mut child = self.spawn_child()?;
            let collected = child.collect(self.input(), self.sinks()).await?;
            // The line the child was started with, not built again.
            judge(child.line(), &self.limits, self.ignore_status, collected)
        }
    }

    /// The run, its stdout as text. Not an `async fn` (see
    /// [`crate::offload::run`]); the run's future is made inside the block,
    /// where awaiting it moves it once (one made outside would be held
    /// twice, as the block's capture and as what it awaits).
    #[allow(clippy::manual_async_fn)]
    pub(crate) fn text(self) -> impl Future<Output = Result<String>> + Send + 'static {
        let line = self.spec.command_line();
        async move { into_text(&line, self.run().await?) }
    }

    /// The bytes to write to stdin (none unless `stdin(bytes)`).
    pub(crate) fn input(&self) -> &[u8] {
        match &self.stdin {
            Feed::Bytes(bytes) => bytes,
            _ => &[],
        }
    }

    /// What the child's stdin, stdout and stderr are: a pipe for bytes we
    /// write and for a stream we capture or tee; the caller's fd, a
    /// duplicate of it (an `Exec` can run twice).
    pub(crate) fn stdio(&self) -> std::io::Result<[Stdio; 3]> {
        let fd = |fd: &Arc<OwnedFd>| fd.try_clone().map(Stdio::from);
        let stdin = match &self.stdin {
            Feed::Null => Stdio::null(),
            Feed::Bytes(_) => Stdio::piped(),
            Feed::Inherit => Stdio::inherit(),
            Feed::Fd(f) => fd(f)?,
        };
        let out = |route: &Route| -> std::io::Result<Stdio> {
            Ok(match route {
                Route::Capture | Route::Tee => Stdio::piped(),
                Route::Inherit => Stdio::inherit(),
                Route::Null => Stdio::null(),
                Route::Fd(f) => fd(f)?,
            })
        };
        Ok([stdin, out(&self.stdout)?, out(&self.stderr)?])
    }

    /// Where what the child writes goes in this process: kept up to
    /// `max_buffer`, teed to our own stdout/stderr, or nowhere (routed
    /// elsewhere, or merged into stdout by `stderr_to_stdout`).
    pub(crate) fn sinks(&self) -> [Option<Sink>; 2] {
        let sink = |route: &Route, own: i32| match route {
            Route::Capture => Some(Sink::keep(self.limits.max_buffer)),
            Route::Tee => Some(Sink::Tee(Tee::new(own))),
            _ => None,
        };
        let stderr = if self.spec.merge_stderr {
            None
        } else {
            sink(&self.stderr, 2)
        };
        [sink(&self.stdout, 1), stderr]
    }

    /// A dropped future (or a panic) kills the tree like a timeout does.
    pub(crate) fn on_drop(&self) -> OnDrop {
        OnDrop::Kill {
            signal: self.limits.kill_signal,
            grace: Some(self.limits.kill_grace),
        }
    }
}

exec_knobs!(Exec, "exec(\"sleep 10\")", "exec(\"echo hi\")");

/// The future of an awaited [`Exec`] or [`ExecFile`](crate::ExecFile).
///
/// # Errors
///
/// - [`Error::Spawn`](crate::Error::Spawn) when the program or shell cannot be started;
/// - [`Error::Exit`](crate::Error::Exit) on a non-zero exit or a death by signal (unless
///   `ignore_status()`);
/// - [`Error::Timeout`](crate::Error::Timeout) when the timeout expired;
/// - [`Error::MaxBuffer`](crate::Error::MaxBuffer) when a stream exceeded `max_buffer`;
/// - [`Error::Io`](crate::Error::Io) when reading the pipes or waiting failed.
///
/// # Cancellation
///
/// Dropping the future kills the child's process group with `kill_signal`
/// (then `SIGKILL` after the grace period) and reaps the child in the
/// background.
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct ExecFuture(pub(crate) Pin<Box<dyn Future<Output = Result<Output>> + Send + 'static>>);

impl Future for ExecFuture {
    type Output = Result<Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Output>> {
        self.0.as_mut().poll(cx)
    }
}

impl fmt::Debug for ExecFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ExecFuture")
    }
}

/// The future of [`Exec::text`] and [`ExecFile::text`](crate::ExecFile::text):
/// stdout as a `String`.
///
/// # Errors
///
/// Those of [`ExecFuture`], and [`Error::Io`](crate::Error::Io) when stdout is not UTF-8.
///
/// # Cancellation
///
/// As for [`ExecFuture`].
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct TextFuture(pub(crate) Pin<Box<dyn Future<Output = Result<String>> + Send + 'static>>);

impl Future for TextFuture {
    type Output = Result<String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<String>> {
        self.0.as_mut().poll(cx)
    }
}

impl fmt::Debug for TextFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TextFuture")
    }
}

#[cfg(test)]
mod tests {
    /// The futures `exec(..).await`, `.text()` and a pipeline box hold the
    /// run's state once (see `offload::run`): with every layer an `async
    /// fn` they were 3,904, 4,464 and 2,392 bytes; now 2,360, 2,656 and
    /// 1,400 in a test build.
    #[test]
    fn the_run_future_holds_its_state_once() {
        let run = crate::exec("true").job.run();
        let size = std::mem::size_of_val(&run);
        assert!(size < 2_600, "the run's future grew to {size} bytes");
        let text = crate::exec("true").job.text();
        let size = std::mem::size_of_val(&text);
        assert!(size < 2_800, "the text future grew to {size} bytes");
        let pipeline = crate::exec("true").pipe(crate::exec("true")).run();
        let size = std::mem::size_of_val(&pipeline);
        assert!(size < 1_600, "a pipeline's future grew to {size} bytes");
    }
}
