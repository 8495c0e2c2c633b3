//! The knobs of `Exec` and `ExecFile`, written once.
//!
//! `exec_knobs!(Type, sleeper, quick)` gives `Type` every setter, the
//! blocking forms and `IntoFuture`. `sleeper` and `quick` are constructor
//! calls the doc examples run: one that would run for a while, one that
//! ends at once.

macro_rules! exec_knobs {
    ($ty:ident, $sleeper:literal, $quick:literal) => {
        impl $ty {
            /// Kill the child, with its process group, if it runs longer than
            /// `timeout`, and fail with [`Error::Timeout`](crate::Error::Timeout).
            ///
            /// The kill sends `kill_signal` (default `SIGTERM`), then `SIGKILL`
            /// after `kill_grace` (default 2 s), and resolves without waiting
            /// for grandchildren that still hold the pipes. The timeout counts
            /// from the spawn and applies until the child has exited.
            ///
            /// `Duration::ZERO` means no timeout, as Node's `timeout: 0`; a
            /// duration too large to add to the current time (such as
            /// `Duration::MAX`) means no timeout too.
            ///
            /// # Examples
            ///
            /// ```
            /// use child_process as cp;
            /// use std::time::Duration;
            ///
            /// # #[tokio::main(flavor = "current_thread")]
            /// # async fn main() -> cp::Result<()> {
            #[doc = concat!("let err = cp::", $sleeper, ".timeout(Duration::from_millis(50)).await.unwrap_err();")]
            /// assert!(err.is_timeout());
            /// # Ok(())
            /// # }
            /// ```
            pub fn timeout(mut self, timeout: std::time::Duration) -> $ty {
                self.job.limits.timeout = Some(timeout);
                self
            }

            /// The signal a timeout, the `max_buffer` limit or a dropped future
            /// sends first (default `SIGTERM`).
            ///
            /// # Examples
            ///
            /// ```
            /// use child_process as cp;
            /// use std::os::unix::process::ExitStatusExt;
            /// use std::time::Duration;
            ///
            /// # #[tokio::main(flavor = "current_thread")]
            /// # async fn main() -> cp::Result<()> {
            #[doc = concat!("let run = cp::", $sleeper, ".timeout(Duration::from_millis(50)).kill_signal(cp::Signal::SIGINT);")]
            /// let err = run.await.unwrap_err();
            /// assert_eq!(err.exit_status().unwrap().signal(), Some(libc::SIGINT));
            /// # Ok(())
            /// # }
            /// ```
            #[doc(alias = "killSignal")]
            pub fn kill_signal(mut self, signal: Signal) -> $ty {
                self.job.limits.kill_signal = signal;
                self
            }

            /// How long a child may take to die after `kill_signal` before it
            /// gets `SIGKILL` (default 2 s). A child that ignores `SIGTERM`
            /// cannot make a timeout hang. `Duration::MAX` means never
            /// `SIGKILL`.
            ///
            /// # Examples
            ///
            /// ```
            /// use child_process as cp;
            /// use std::time::Duration;
            ///
            /// # #[tokio::main(flavor = "current_thread")]
            /// # async fn main() -> cp::Result<()> {
            #[doc = concat!("let run = cp::", $sleeper, ".timeout(Duration::from_millis(50)).kill_grace(Duration::from_millis(200));")]
            /// assert!(run.await.unwrap_err().is_timeout());
            /// # Ok(())
            /// # }
            /// ```
            pub fn kill_grace(mut self, grace: std::time::Duration) -> $ty {
                self.job.limits.kill_grace = grace;
                self
            }

            /// The most bytes kept from stdout and from stderr, each (default
            /// 1 MiB, as in Node). Exactly `limit` bytes is fine; one more
            /// kills the child and fails with
            /// [`Error::MaxBuffer`](crate::Error::MaxBuffer), whose output
            /// holds the first `limit` bytes. `usize::MAX` means no limit.
            ///
            /// # Examples
            ///
            /// ```
            /// # #[tokio::main(flavor = "current_thread")]
            /// # async fn main() -> child_process::Result<()> {
            #[doc = concat!("let out = child_process::", $quick, ".max_buffer(256 << 20).await?;")]
            /// assert_eq!(out.stdout, b"hi\n");
            /// # Ok(())
            /// # }
            /// ```
            #[doc(alias = "maxBuffer")]
            pub fn max_buffer(mut self, limit: usize) -> $ty {
                self.job.limits.max_buffer = limit;
                self
            }

            /// The child's working directory. An empty path means the
            /// parent's, as Node treats `cwd: ''`.
            ///
            /// # Examples
            ///
            /// ```
            /// # #[tokio::main(flavor = "current_thread")]
            /// # async fn main() -> child_process::Result<()> {
            #[doc = concat!("let out = child_process::", $quick, ".cwd(\"/tmp\").await?;")]
            /// assert!(out.status.success());
            /// # Ok(())
            /// # }
            /// ```
            pub fn cwd(mut self, dir: impl AsRef<Path>) -> $ty {
                self.job.spec.set_cwd(dir.as_ref());
                self
            }

            /// Set an environment variable on top of the inherited environment
            /// (Node's `env` replaces it instead; start with `env_clear` for
            /// that).
            ///
            /// # Examples
            ///
            /// ```
            /// # #[tokio::main(flavor = "current_thread")]
            /// # async fn main() -> child_process::Result<()> {
            #[doc = concat!("let out = child_process::", $quick, ".env(\"LC_ALL\", \"C\").await?;")]
            /// assert!(out.status.success());
            /// # Ok(())
            /// # }
            /// ```
            pub fn env(mut self, key: impl AsRef<OsStr>, val: impl AsRef<OsStr>) -> $ty {
                self.job.spec.set_env(key.as_ref(), Some(val.as_ref()));
                self
            }

            /// Set several environment variables.
            ///
            /// # Examples
            ///
            /// ```
            /// # #[tokio::main(flavor = "current_thread")]
            /// # async fn main() -> child_process::Result<()> {
            #[doc = concat!("let out = child_process::", $quick, ".envs([(\"A\", \"1\"), (\"B\", \"2\")]).await?;")]
            /// assert!(out.status.success());
            /// # Ok(())
            /// # }
            /// ```
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

            /// Remove a variable from the child's environment.
            ///
            /// # Examples
            ///
            /// ```
            /// # #[tokio::main(flavor = "current_thread")]
            /// # async fn main() -> child_process::Result<()> {
            #[doc = concat!("let out = child_process::", $quick, ".env_remove(\"HOME\").await?;")]
            /// assert!(out.status.success());
            /// # Ok(())
            /// # }
            /// ```
            pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> $ty {
                self.job.spec.set_env(key.as_ref(), None);
                self
            }

            /// Start from an empty environment (plus what `env` adds
            /// afterwards). Without `PATH`, a bare program name is looked up in
            /// `/usr/local/bin:/usr/bin:/bin`.
            ///
            /// # Examples
            ///
            /// ```
            /// # #[tokio::main(flavor = "current_thread")]
            /// # async fn main() -> child_process::Result<()> {
            #[doc = concat!("let out = child_process::", $quick, ".env_clear().env(\"PATH\", \"/usr/bin:/bin\").await?;")]
            /// assert!(out.status.success());
            /// # Ok(())
            /// # }
            /// ```
            pub fn env_clear(mut self) -> $ty {
                self.job.spec.clear_env();
                self
            }

            /// What the child reads (default: `/dev/null`): bytes (`&str`,
            /// `String`, `Vec<u8>`, `&[u8]`), which are written to it and then
            /// closed, or a [`Stdio`](crate::Stdio): a `File`,
            /// `Stdio::inherit()`, `Stdio::null()`. A child that exits without
            /// reading all the bytes is not an error. See
            /// [`Input`](crate::Input).
            ///
            /// # Examples
            ///
            /// ```
            /// use child_process as cp;
            ///
            /// # #[tokio::main(flavor = "current_thread")]
            /// # async fn main() -> cp::Result<()> {
            /// let out = cp::exec("tr a-z A-Z").stdin("shout").await?;
            /// assert_eq!(out.stdout, b"SHOUT");
            /// let from_file = cp::exec("wc -l").stdin(std::fs::File::open("/etc/passwd")?).text().await?;
            /// # let _ = from_file;
            /// # Ok(())
            /// # }
            /// ```
            #[doc(alias = "input")]
            pub fn stdin(mut self, input: impl Into<crate::Input>) -> $ty {
                self.job.stdin = input.into().into();
                self
            }

            /// Where the child's stdout goes (default: captured into
            /// [`Output`](crate::Output)). `Stdio::inherit()`, `Stdio::null()`,
            /// a `File` or an `OwnedFd` send it elsewhere, and `Output.stdout`
            /// is then empty; `Stdio::tee()` shows it live and keeps its last
            /// 64 KiB; `Stdio::piped()` is the default.
            ///
            /// # Examples
            ///
            /// ```
            /// use child_process as cp;
            ///
            /// # #[tokio::main(flavor = "current_thread")]
            /// # async fn main() -> cp::Result<()> {
            #[doc = concat!("let out = cp::", $quick, ".stdout(cp::Stdio::null()).await?;")]
            /// assert!(out.stdout.is_empty());
            /// # Ok(())
            /// # }
            /// ```
            pub fn stdout(mut self, stdio: impl Into<crate::Stdio>) -> $ty {
                self.job.stdout = stdio.into().into();
                self
            }

            /// Where the child's stderr goes (default: captured, and its last
            /// lines are in the error of a failed run). As for
            /// [`stdout`](Self::stdout); `Stdio::tee()` is what a build script
            /// wants: the output live, and still the reason in the error.
            ///
            /// # Examples
            ///
            /// ```
            /// use child_process as cp;
            ///
            /// # #[tokio::main(flavor = "current_thread")]
            /// # async fn main() -> cp::Result<()> {
            #[doc = concat!("let out = cp::", $quick, ".stderr(cp::Stdio::inherit()).await?;")]
            /// assert!(out.stderr.is_empty());
            /// # Ok(())
            /// # }
            /// ```
            pub fn stderr(mut self, stdio: impl Into<crate::Stdio>) -> $ty {
                self.job.stderr = stdio.into().into();
                self
            }

            /// Send stderr where stdout goes, through the same pipe (the
            /// shell's `2>&1`), so interleaved writes keep their order;
            /// `Output.stderr` is then empty. Whatever `stderr(..)` says is
            /// not used.
            ///
            /// # Examples
            ///
            /// ```
            /// # #[tokio::main(flavor = "current_thread")]
            /// # async fn main() -> child_process::Result<()> {
            /// let out = child_process::exec("echo 1; echo 2 >&2; echo 3").stderr_to_stdout().await?;
            /// assert_eq!(out.stdout, b"1\n2\n3\n");
            /// # Ok(())
            /// # }
            /// ```
            pub fn stderr_to_stdout(mut self) -> $ty {
                self.job.spec.merge_stderr = true;
                self
            }

            /// Resolve `Ok(output)` even when the child exits non-zero or dies
            /// by a signal; `output.status` says how it ended. Never hides a
            /// timeout or `max_buffer`.
            ///
            /// # Examples
            ///
            /// ```
            /// # #[tokio::main(flavor = "current_thread")]
            /// # async fn main() -> child_process::Result<()> {
            /// let out = child_process::exec("exit 3").ignore_status().await?;
            /// assert_eq!(out.status.code(), Some(3));
            /// # Ok(())
            /// # }
            /// ```
            pub fn ignore_status(mut self) -> $ty {
                self.job.ignore_status = true;
                self
            }

            /// Whether the child gets a process group of its own (default
            /// `true`), so that a timeout, `max_buffer` or a dropped future
            /// kills everything it started. With `false` only the child itself
            /// is signalled (Node's behaviour), and it stays in the parent's
            /// group, so a terminal's Ctrl-C reaches it directly.
            ///
            /// # Examples
            ///
            /// ```
            /// # #[tokio::main(flavor = "current_thread")]
            /// # async fn main() -> child_process::Result<()> {
            #[doc = concat!("let out = child_process::", $quick, ".process_group(false).await?;")]
            /// assert!(out.status.success());
            /// # Ok(())
            /// # }
            /// ```
            pub fn process_group(mut self, own_group: bool) -> $ty {
                self.job.spec.process_group = own_group;
                self
            }

            /// Whether `SIGINT`, `SIGTERM`, `SIGHUP` and `SIGQUIT` sent to this
            /// process are passed on to the child's group while it runs
            /// (default `true`).
            ///
            /// The child has a process group of its own (see `process_group`),
            /// so a terminal's Ctrl-C, which goes to the terminal's foreground
            /// group, no longer reaches it, and a service manager's `SIGTERM`
            /// to this process alone would orphan it. With forwarding, each
            /// such signal goes to every live `exec` group first; then this
            /// process does what it would have done without the crate (runs
            /// its own handler, or dies of the signal). The handler is
            /// installed with the first such child. `false` leaves the
            /// signals alone for this run (the child then survives a Ctrl-C
            /// that kills this process).
            ///
            /// # Examples
            ///
            /// ```
            /// # #[tokio::main(flavor = "current_thread")]
            /// # async fn main() -> child_process::Result<()> {
            #[doc = concat!("let out = child_process::", $quick, ".forward_signals(false).await?;")]
            /// assert!(out.status.success());
            /// # Ok(())
            /// # }
            /// ```
            pub fn forward_signals(mut self, forward: bool) -> $ty {
                self.job.forward_signals = forward;
                self
            }

            /// Start the child and return it at once, with the run's
            /// guarantees: [`Child::wait`](crate::Child::wait) fails with
            /// [`Error::Timeout`](crate::Error::Timeout) after the timeout
            /// (having killed the group with `kill_signal`, then `SIGKILL`
            /// after `kill_grace`), and dropping the `Child` before it was
            /// reaped kills the group as a dropped `exec` does. The streams
            /// that would be captured are pipes you read (`child.stdout`,
            /// `child.stderr`); a teed one ([`Stdio::tee`](crate::Stdio::tee))
            /// goes straight to this process's own, as `inherit` (nothing
            /// is kept: there is no result). Bytes given to `stdin(..)` are
            /// written by a task of the runtime, then stdin is closed.
            /// Terminal signals are forwarded to the group as for `.await`.
            ///
            /// A non-zero exit is in the status `wait` returns, not an error
            /// (there is no output here to judge).
            ///
            /// # Examples
            ///
            /// ```
            /// use child_process as cp;
            /// use tokio::io::{AsyncBufReadExt, BufReader};
            ///
            /// # #[tokio::main(flavor = "current_thread")]
            /// # async fn main() -> cp::Result<()> {
            /// let mut child = cp::exec("echo one; echo two").spawn()?;
            /// let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            /// while let Some(line) = lines.next_line().await? {
            ///     println!("{line}");
            /// }
            /// assert!(child.wait().await?.success());
            /// # Ok(())
            /// # }
            /// ```
            ///
            /// # Errors
            ///
            /// [`Error::Spawn`](crate::Error::Spawn); outside a tokio runtime too.
            pub fn spawn(self) -> Result<crate::Child> {
                self.job.spawn()
            }

            /// Start the child and give its stdout and stderr as a stream of
            /// lines while it runs, with every guarantee of `.await`: see
            /// [`Lines`](crate::Lines). The stream ends with the run's result
            /// (an `Err` item when `.await` would have failed).
            ///
            /// # Examples
            ///
            /// ```
            /// use child_process as cp;
            /// use futures::StreamExt;
            ///
            /// # #[tokio::main(flavor = "current_thread")]
            /// # async fn main() -> cp::Result<()> {
            #[doc = concat!("let mut lines = cp::", $quick, ".lines()?;")]
            /// while let Some(line) = lines.next().await {
            ///     println!("{}", line?.text());
            /// }
            /// # Ok(())
            /// # }
            /// ```
            ///
            /// # Errors
            ///
            /// [`Error::Spawn`](crate::Error::Spawn) when the child cannot be
            /// started (also outside a tokio runtime); the run's own errors
            /// come as the stream's last item.
            pub fn lines(self) -> Result<crate::Lines> {
                crate::Lines::start(self.job)
            }

            /// A pipeline: this program's stdout feeds `next`'s stdin, without
            /// a shell (`self | next`). See [`Pipeline`](crate::Pipeline).
            ///
            /// # Examples
            ///
            /// ```
            /// # fn main() -> child_process::Result<()> {
            /// use child_process as cp;
            #[doc = concat!("let out = cp::", $quick, ".pipe(cp::exec_file(\"tr\", [\"a-z\", \"A-Z\"])).text_sync()?;")]
            /// assert_eq!(out, "HI");
            /// # Ok(())
            /// # }
            /// ```
            pub fn pipe(self, next: impl Into<crate::Pipeline>) -> crate::Pipeline {
                crate::Pipeline::from(self).then(next)
            }

            /// Run to completion on this thread, without a tokio runtime
            /// (Node's `execSync`/`execFileSync`). Every knob works as for
            /// `.await`: timeout with the process-group kill, `kill_signal`,
            /// `kill_grace`, `max_buffer`, stdin bytes, cwd, env,
            /// `ignore_status`; the errors are the same. Safe to call from a
            /// runtime's blocking thread (`spawn_blocking`).
            ///
            /// # Examples
            ///
            /// ```
            /// # fn main() -> child_process::Result<()> {
            #[doc = concat!("let out = child_process::", $quick, ".run_sync()?;")]
            /// assert_eq!(out.stdout, b"hi\n");
            /// # Ok(())
            /// # }
            /// ```
            ///
            /// # Errors
            ///
            /// Those of [`ExecFuture`](crate::ExecFuture).
            #[doc(alias = "execSync")]
            #[doc(alias = "execFileSync")]
            pub fn run_sync(self) -> Result<Output> {
                self.job.run_sync()
            }

            /// `run_sync`, giving stdout as a `String` without its trailing
            /// newline.
            ///
            /// # Examples
            ///
            /// ```
            /// # fn main() -> child_process::Result<()> {
            #[doc = concat!("let text: String = child_process::", $quick, ".text_sync()?;")]
            /// assert_eq!(text, "hi");
            /// # Ok(())
            /// # }
            /// ```
            ///
            /// # Errors
            ///
            /// Those of [`ExecFuture`](crate::ExecFuture), and
            /// [`Error::Io`](crate::Error::Io) with
            /// [`std::io::ErrorKind::InvalidData`] when stdout is not UTF-8.
            pub fn text_sync(self) -> Result<String> {
                let line = self.job.spec.command_line();
                crate::capture::into_text(&line, self.job.run_sync()?)
            }

            /// Run, and give stdout as a `String` without its trailing newline
            /// (`\n` or `\r\n`).
            ///
            /// # Examples
            ///
            /// ```
            /// # #[tokio::main(flavor = "current_thread")]
            /// # async fn main() -> child_process::Result<()> {
            #[doc = concat!("let text: String = child_process::", $quick, ".text().await?;")]
            /// assert_eq!(text, "hi");
            /// # Ok(())
            /// # }
            /// ```
            ///
            /// # Errors
            ///
            /// The errors of [`ExecFuture`](crate::ExecFuture), and
            /// [`Error::Io`](crate::Error::Io) with
            /// [`std::io::ErrorKind::InvalidData`] when stdout is not UTF-8.
            ///
            /// # Cancellation
            ///
            /// Dropping the future kills the child's process group and reaps
            /// the child.
            pub fn text(self) -> crate::TextFuture {
                crate::TextFuture(Box::pin(self.job.text()))
            }
        }

        impl std::future::IntoFuture for $ty {
            type Output = Result<Output>;
            type IntoFuture = crate::ExecFuture;

            fn into_future(self) -> crate::ExecFuture {
                crate::ExecFuture(Box::pin(self.job.run()))
            }
        }
    };
}

pub(crate) use exec_knobs;
