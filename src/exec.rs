//! `exec`: a command line through `/bin/sh -c`, output buffered, a non-zero
//! exit an error. Also the machinery `exec_file` and
//! [`Child::wait_with_output`](crate::Child::wait_with_output) share: the
//! knobs, the capture loop and the kill of the process tree.

use std::ffi::OsStr;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::os::fd::AsFd;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use crate::capture::Capture;
use crate::child::Child;
use crate::command::Command;
use crate::error::{CommandLine, Error, ExitStatus, Output, Result, Stream};
use crate::kill::OnDrop;
use crate::spawn::Spec;
use crate::stdio::{ChildStderr, ChildStdin, ChildStdout};
use crate::{Signal, Stdio};

/// Node's default `maxBuffer`: 1 MiB per stream.
pub(crate) const DEFAULT_MAX_BUFFER: usize = 1024 * 1024;
/// How long `SIGKILL` waits after `kill_signal`.
pub(crate) const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(2);
/// How long the pipes are still read after the child exited, when a process
/// it started in the background keeps them open.
pub(crate) const PIPE_GRACE: Duration = Duration::from_millis(100);

/// Run `command` through `/bin/sh -c`, buffering stdout and stderr.
///
/// Defaults:
/// - the shell is `/bin/sh` (see [`Exec::shell`]);
/// - no timeout; a timeout kills with `SIGTERM`, then `SIGKILL` after 2 s;
/// - `max_buffer` is 1 MiB per stream, as in Node;
/// - stdin is `/dev/null` unless [`Exec::stdin`] gives bytes;
/// - the child runs in a process group of its own, so a timeout, the
///   `max_buffer` limit or a dropped future kills everything it started;
/// - a non-zero exit or a death by signal is an [`Error::Exit`].
///
/// The command resolves once the shell has exited and its pipes are
/// drained. If a process it started in the background (`cmd &`) still holds
/// the pipes, reading stops 100 ms after the shell exited, and that process
/// keeps running, as the `&` asked.
///
/// # Examples
///
/// ```no_run
/// use child_process as cp;
/// use std::time::Duration;
///
/// # async fn run() -> cp::Result<()> {
/// let out = cp::exec("echo hi; echo err >&2").timeout(Duration::from_secs(5)).await?;
/// assert_eq!(out.stdout, b"hi\n");
/// assert_eq!(out.stderr, b"err\n");
/// let branch = cp::exec("git branch --show-current").text().await?;
/// # let _ = branch;
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
/// ```no_run
/// use child_process as cp;
///
/// # async fn run() -> cp::Result<()> {
/// let out = cp::exec("make -j4").cwd("build").env("CC", "clang").max_buffer(64 << 20).await?;
/// # let _ = out;
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
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
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

/// The settings `Exec` and `ExecFile` share.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub spec: Spec,
    pub timeout: Option<Duration>,
    pub kill_signal: Signal,
    pub kill_grace: Duration,
    pub max_buffer: usize,
    pub input: Option<Vec<u8>>,
    pub ignore_status: bool,
}

impl Job {
    pub(crate) fn new(spec: Spec) -> Job {
        Job {
            spec,
            timeout: None,
            kill_signal: Signal::SIGTERM,
            kill_grace: DEFAULT_KILL_GRACE,
            max_buffer: DEFAULT_MAX_BUFFER,
            input: None,
            ignore_status: false,
        }
    }

    pub(crate) async fn run(self) -> Result<Output> {
        let mut cmd = Command::from_spec(self.spec.clone());
        cmd.stdin(self.stdin_kind());
        let mut child = cmd.spawn_with(&[], self.on_drop())?;
        let collected = collect(&mut child, &self.limits()).await?;
        self.judge(collected)
    }

    pub(crate) async fn text(self) -> Result<String> {
        let line = self.spec.command_line();
        into_text(&line, self.run().await?)
    }

    /// stdin is a pipe only when there are bytes to write.
    pub(crate) fn stdin_kind(&self) -> Stdio {
        if self.input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        }
    }

    /// A dropped future (or a panic) kills the tree like a timeout does.
    pub(crate) fn on_drop(&self) -> OnDrop {
        OnDrop::Kill {
            signal: self.kill_signal,
            grace: Some(self.kill_grace),
        }
    }

    pub(crate) fn limits(&self) -> Limits<'_> {
        Limits {
            input: self.input.as_deref().unwrap_or_default(),
            timeout: self.timeout,
            max_buffer: self.max_buffer,
            kill_signal: self.kill_signal,
            kill_grace: self.kill_grace,
        }
    }

    /// Turn how the capture ended into the result `exec` promises.
    pub(crate) fn judge(&self, collected: Collected) -> Result<Output> {
        let command = self.spec.command_line();
        let ending = collected.ending;
        let output = Box::new(collected.into_output());
        match ending {
            Ending::TimedOut => Err(Error::Timeout {
                command,
                timeout: self.timeout.unwrap_or_default(),
                signal: self.kill_signal,
                output,
            }),
            Ending::Overflow(stream) => Err(Error::MaxBuffer {
                command,
                stream,
                limit: self.max_buffer,
                signal: self.kill_signal,
                output,
            }),
            Ending::Exited if output.status.success() || self.ignore_status => Ok(*output),
            Ending::Exited => Err(Error::Exit { command, output }),
        }
    }
}

/// stdout as text: one trailing `\n` or `\r\n` removed, UTF-8 or an error.
pub(crate) fn into_text(line: &CommandLine, output: Output) -> Result<String> {
    let mut stdout = output.stdout;
    if stdout.ends_with(b"\n") {
        stdout.pop();
        if stdout.ends_with(b"\r") {
            stdout.pop();
        }
    }
    String::from_utf8(stdout).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let source = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("stdout is not valid UTF-8 (at byte {at})"),
        );
        Error::io(line, source)
    })
}

/// The knobs of `Exec` and `ExecFile`, written once.
macro_rules! exec_knobs {
    ($ty:ident, $ctor:literal) => {
        impl $ty {
            #[doc = concat!("Kill the child (with its process group) if it runs longer than `timeout`, and fail with [`Error::Timeout`](crate::Error::Timeout).\n\nThe kill sends [`", stringify!($ty), "::kill_signal`] (default `SIGTERM`), then `SIGKILL` after [`", stringify!($ty), "::kill_grace`]. Resolves without waiting for grandchildren that still hold the pipes.\n\n# Examples\n\n```no_run\nuse child_process as cp;\nuse std::time::Duration;\n\n# async fn run() -> cp::Result<()> {\nlet err = cp::", $ctor, ".timeout(Duration::from_millis(50)).await.unwrap_err();\nassert!(err.is_timeout());\n# Ok(())\n# }\n```")]
            pub fn timeout(mut self, timeout: Duration) -> $ty {
                self.job.timeout = Some(timeout);
                self
            }

            #[doc = concat!("The signal a timeout, the `max_buffer` limit or a dropped future sends first (default `SIGTERM`).\n\n# Examples\n\n```no_run\nuse child_process as cp;\nuse std::time::Duration;\n\n# async fn run() -> cp::Result<()> {\nlet run = cp::", $ctor, ".timeout(Duration::from_secs(1)).kill_signal(cp::Signal::SIGINT);\n# let _ = run.await;\n# Ok(())\n# }\n```")]
            #[doc(alias = "killSignal")]
            pub fn kill_signal(mut self, signal: Signal) -> $ty {
                self.job.kill_signal = signal;
                self
            }

            #[doc = concat!("How long a child may take to die after `kill_signal` before it gets `SIGKILL` (default 2 s). A child that ignores `SIGTERM` cannot make a timeout hang.\n\n# Examples\n\n```no_run\nuse child_process as cp;\nuse std::time::Duration;\n\n# async fn run() -> cp::Result<()> {\nlet run = cp::", $ctor, ".timeout(Duration::from_secs(1)).kill_grace(Duration::from_millis(200));\n# let _ = run.await;\n# Ok(())\n# }\n```")]
            pub fn kill_grace(mut self, grace: Duration) -> $ty {
                self.job.kill_grace = grace;
                self
            }

            #[doc = concat!("The most bytes kept from stdout and from stderr, each (default 1 MiB, as in Node). Exactly `limit` bytes is fine; one more kills the child and fails with [`Error::MaxBuffer`](crate::Error::MaxBuffer), whose output holds the first `limit` bytes. `usize::MAX` means no limit.\n\n# Examples\n\n```no_run\n# async fn run() -> child_process::Result<()> {\nlet out = child_process::", $ctor, ".max_buffer(256 << 20).await?;\n# Ok(())\n# }\n```")]
            #[doc(alias = "maxBuffer")]
            pub fn max_buffer(mut self, limit: usize) -> $ty {
                self.job.max_buffer = limit;
                self
            }

            #[doc = concat!("The child's working directory.\n\n# Examples\n\n```no_run\n# async fn run() -> child_process::Result<()> {\nlet out = child_process::", $ctor, ".cwd(\"/tmp\").await?;\n# Ok(())\n# }\n```")]
            pub fn cwd(mut self, dir: impl AsRef<Path>) -> $ty {
                self.job.spec.cwd = Some(dir.as_ref().to_owned());
                self
            }

            #[doc = concat!("Set an environment variable on top of the inherited environment (Node's `env` replaces it instead; use [`", stringify!($ty), "::env_clear`] for that).\n\n# Examples\n\n```no_run\n# async fn run() -> child_process::Result<()> {\nlet out = child_process::", $ctor, ".env(\"LC_ALL\", \"C\").await?;\n# Ok(())\n# }\n```")]
            pub fn env(mut self, key: impl AsRef<OsStr>, val: impl AsRef<OsStr>) -> $ty {
                self.job.spec.set_env(key.as_ref(), Some(val.as_ref()));
                self
            }

            #[doc = concat!("Set several environment variables.\n\n# Examples\n\n```no_run\n# async fn run() -> child_process::Result<()> {\nlet out = child_process::", $ctor, ".envs([(\"A\", \"1\"), (\"B\", \"2\")]).await?;\n# Ok(())\n# }\n```")]
            pub fn envs<I, K, V>(mut self, vars: I) -> $ty
            where
                I: IntoIterator<Item = (K, V)>,
                K: AsRef<OsStr>,
                V: AsRef<OsStr>,
            {
                for (k, v) in vars {
                    self.job.spec.set_env(k.as_ref(), Some(v.as_ref()));
                }
                self
            }

            #[doc = concat!("Remove a variable from the child's environment.\n\n# Examples\n\n```no_run\n# async fn run() -> child_process::Result<()> {\nlet out = child_process::", $ctor, ".env_remove(\"HOME\").await?;\n# Ok(())\n# }\n```")]
            pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> $ty {
                self.job.spec.set_env(key.as_ref(), None);
                self
            }

            #[doc = concat!("Start from an empty environment.\n\n# Examples\n\n```no_run\n# async fn run() -> child_process::Result<()> {\nlet out = child_process::", $ctor, ".env_clear().env(\"PATH\", \"/usr/bin:/bin\").await?;\n# Ok(())\n# }\n```")]
            pub fn env_clear(mut self) -> $ty {
                self.job.spec.clear_env();
                self
            }

            #[doc = concat!("Write these bytes to the child's stdin, then close it (default: stdin is `/dev/null`). A child that exits without reading them all is not an error.\n\n# Examples\n\n```no_run\n# async fn run() -> child_process::Result<()> {\nlet out = child_process::", $ctor, ".stdin(\"some input\").await?;\n# Ok(())\n# }\n```")]
            #[doc(alias = "input")]
            pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> $ty {
                self.job.input = Some(bytes.into());
                self
            }

            #[doc = concat!("Resolve `Ok(output)` even when the child exits non-zero or dies by a signal; `output.status` says how it ended. Never hides a timeout or `max_buffer`.\n\n# Examples\n\n```no_run\n# async fn run() -> child_process::Result<()> {\nlet out = child_process::", $ctor, ".ignore_status().await?;\nprintln!(\"{}\", out.status);\n# Ok(())\n# }\n```")]
            pub fn ignore_status(mut self) -> $ty {
                self.job.ignore_status = true;
                self
            }

            #[doc = concat!("Whether the child gets a process group of its own (default `true`), so that a timeout, `max_buffer` or a dropped future kills everything it started. With `false` only the child itself is signalled (Node's behaviour), and it stays in the parent's group, so a terminal's Ctrl-C reaches it.\n\n# Examples\n\n```no_run\n# async fn run() -> child_process::Result<()> {\nlet out = child_process::", $ctor, ".process_group(false).await?;\n# Ok(())\n# }\n```")]
            pub fn process_group(mut self, own_group: bool) -> $ty {
                self.job.spec.process_group = own_group;
                self
            }

            #[doc = concat!("Run to completion on this thread, without a tokio runtime (Node's `execSync`/`execFileSync`). Every knob works as for `.await`: timeout with the process-group kill, `kill_signal`, `kill_grace`, `max_buffer`, stdin bytes, cwd, env, `ignore_status`; the errors are the same. Safe to call from a runtime's blocking thread (`spawn_blocking`).\n\n# Examples\n\n```no_run\n# fn run() -> child_process::Result<()> {\nlet out = child_process::", $ctor, ".run_sync()?;\n# Ok(())\n# }\n```\n\n# Errors\n\nThose of [`ExecFuture`].")]
            #[doc(alias = "execSync")]
            #[doc(alias = "execFileSync")]
            pub fn run_sync(self) -> Result<Output> {
                self.job.run_sync()
            }

            #[doc = concat!("[`", stringify!($ty), "::run_sync`], giving stdout as a `String` without its trailing newline.\n\n# Examples\n\n```no_run\n# fn run() -> child_process::Result<()> {\nlet text: String = child_process::", $ctor, ".text_sync()?;\n# Ok(())\n# }\n```\n\n# Errors\n\nThose of [`ExecFuture`], and [`Error::Io`](crate::Error::Io) with [`std::io::ErrorKind::InvalidData`] when stdout is not UTF-8.")]
            pub fn text_sync(self) -> Result<String> {
                let line = self.job.spec.command_line();
                crate::exec::into_text(&line, self.job.run_sync()?)
            }

            #[doc = concat!("Run, and give stdout as a `String` without its trailing newline (`\\n` or `\\r\\n`).\n\n# Examples\n\n```no_run\n# async fn run() -> child_process::Result<()> {\nlet text: String = child_process::", $ctor, ".text().await?;\n# Ok(())\n# }\n```\n\n# Errors\n\nThe errors of [`ExecFuture`], and [`Error::Io`](crate::Error::Io) with [`std::io::ErrorKind::InvalidData`] when stdout is not UTF-8.\n\n# Cancellation\n\nDropping the future kills the child's process group and reaps the child.")]
            pub fn text(self) -> TextFuture {
                TextFuture(Box::pin(self.job.text()))
            }
        }

        impl IntoFuture for $ty {
            type Output = Result<Output>;
            type IntoFuture = ExecFuture;

            fn into_future(self) -> ExecFuture {
                ExecFuture(Box::pin(self.job.run()))
            }
        }
    };
}

pub(crate) use exec_knobs;

exec_knobs!(Exec, "exec(\"sleep 10\")");

/// The future of an awaited [`Exec`] or [`ExecFile`](crate::ExecFile).
///
/// # Errors
///
/// - [`Error::Spawn`] when the program or shell cannot be started;
/// - [`Error::Exit`] on a non-zero exit or a death by signal (unless
///   `ignore_status()`);
/// - [`Error::Timeout`] when the timeout expired;
/// - [`Error::MaxBuffer`] when a stream exceeded `max_buffer`;
/// - [`Error::Io`] when reading the pipes or waiting failed.
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
/// Those of [`ExecFuture`], and [`Error::Io`] when stdout is not UTF-8.
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

/// What bounds a capture.
pub(crate) struct Limits<'a> {
    pub input: &'a [u8],
    pub timeout: Option<Duration>,
    pub max_buffer: usize,
    pub kill_signal: Signal,
    pub kill_grace: Duration,
}

impl Limits<'static> {
    pub(crate) fn unlimited() -> Limits<'static> {
        Limits {
            input: &[],
            timeout: None,
            max_buffer: usize::MAX,
            kill_signal: Signal::SIGKILL,
            kill_grace: DEFAULT_KILL_GRACE,
        }
    }
}

/// Why a capture ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    Exited,
    TimedOut,
    Overflow(Stream),
}

pub(crate) struct Collected {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub ending: Ending,
}

impl Collected {
    pub(crate) fn into_output(self) -> Output {
        Output {
            status: self.status,
            stdout: self.stdout,
            stderr: self.stderr,
        }
    }
}

async fn read_pipe<P: CapturePipe>(
    pipe: &Option<P>,
    capture: &mut Capture,
) -> std::io::Result<usize> {
    match pipe {
        Some(pipe) => pipe.read_into(capture).await,
        None => std::future::pending().await,
    }
}

async fn write_pipe(pipe: &Option<ChildStdin>, buf: &[u8]) -> std::io::Result<usize> {
    match pipe {
        Some(pipe) => pipe.write_some(buf).await,
        None => std::future::pending().await,
    }
}

trait CapturePipe: AsFd {
    async fn read_into(&self, capture: &mut Capture) -> std::io::Result<usize>;
}

impl CapturePipe for ChildStdout {
    async fn read_into(&self, capture: &mut Capture) -> std::io::Result<usize> {
        self.read_capture(capture).await
    }
}

impl CapturePipe for ChildStderr {
    async fn read_into(&self, capture: &mut Capture) -> std::io::Result<usize> {
        self.read_capture(capture).await
    }
}

/// Feed stdin, capture stdout and stderr, and wait for the child, all at
/// once (one after the other deadlocks as soon as a pipe fills up); stop at
/// the timeout or the `max_buffer` limit and kill the process tree.
///
/// The loop ends when the child has exited and both pipes are at end of
/// file, or `PIPE_GRACE` after the exit if a background process keeps them
/// open (Node waits for it forever).
pub(crate) async fn collect(child: &mut Child, limits: &Limits<'_>) -> Result<Collected> {
    let line = child.line().clone();
    let io_err = |e| Error::io(&line, e);
    let mut stdin = child.stdin.take().filter(|_| !limits.input.is_empty());
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let mut input = limits.input;
    let mut out = Capture::new(limits.max_buffer);
    let mut err = Capture::new(limits.max_buffer);
    let (mut out_open, mut err_open) = (stdout.is_some(), stderr.is_some());
    let mut status = None;

    let timeout = tokio::time::sleep(limits.timeout.unwrap_or(Duration::MAX / 4));
    let drain = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(timeout, drain);

    let ending = loop {
        if status.is_some() && !out_open && !err_open {
            break Ending::Exited;
        }
        tokio::select! {
            biased;
            n = read_pipe(&stdout, &mut out), if out_open => {
                if n.map_err(io_err)? == 0 {
                    out_open = false;
                } else if out.overflowed() {
                    break Ending::Overflow(Stream::Stdout);
                }
            }
            n = read_pipe(&stderr, &mut err), if err_open => {
                if n.map_err(io_err)? == 0 {
                    err_open = false;
                } else if err.overflowed() {
                    break Ending::Overflow(Stream::Stderr);
                }
            }
            n = write_pipe(&stdin, input), if stdin.is_some() => match n {
                Ok(n) => {
                    input = &input[n..];
                    if input.is_empty() {
                        stdin = None;
                    }
                }
                // The child closed its stdin or exited: it chose not to
                // read the rest. Not an error, as for `sh -c 'head -1'`.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => stdin = None,
                Err(e) => return Err(io_err(e)),
            },
            exited = child.exited(), if status.is_none() => {
                exited?;
                status = child.try_wait()?;
                if status.is_some() {
                    stdin = None;
                    drain.as_mut().reset(Instant::now() + PIPE_GRACE);
                }
            }
            () = &mut timeout, if limits.timeout.is_some() && status.is_none() => break Ending::TimedOut,
            () = &mut drain, if status.is_some() => break Ending::Exited,
        }
    };
    drop(stdin);

    let status = match status {
        Some(status) => status,
        None => {
            child
                .kill_tree(limits.kill_signal, limits.kill_grace)
                .await?
        }
    };
    // What the killed child wrote last is already in the pipes: keep it.
    if ending != Ending::Exited {
        if let Some(pipe) = &stdout {
            out.drain_ready(pipe.as_fd());
        }
        if let Some(pipe) = &stderr {
            err.drain_ready(pipe.as_fd());
        }
    }
    Ok(Collected {
        status,
        stdout: out.into_vec(),
        stderr: err.into_vec(),
        ending,
    })
}
