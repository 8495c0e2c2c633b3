//! `spawn` and `Command`: the builder of the primitive, like std's.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use crate::capture::Limits;
use crate::child::Child;
use crate::error::{Error, Result};
use crate::kill::OnDrop;
use crate::spawn::{spawn_raw, Spec};
use crate::stdio::Stdio;
use crate::Signal;

/// Start `program` with `args`, stdin, stdout and stderr piped.
///
/// The shorthand for `Command::new(program).args(args).spawn()`. The program
/// is looked up in `PATH` unless it contains a `/`.
///
/// # Examples
///
/// ```
/// use child_process as cp;
/// use tokio::io::AsyncWriteExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cp::Result<()> {
/// let mut child = cp::spawn("tr", ["a-z", "A-Z"])?;
/// child.stdin.take().unwrap().write_all(b"hello").await?;
/// let out = child.wait_with_output().await?;
/// assert_eq!(out.stdout, b"HELLO");
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// [`Error::Spawn`] when the program cannot be started: it is missing, not
/// executable or a directory, an argument holds a NUL byte, or the system is
/// out of fds or processes. Must be called inside a tokio runtime.
pub fn spawn<I, S>(program: impl AsRef<OsStr>, args: I) -> Result<Child>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(program).args(args).spawn()
}

/// A builder for a child process, like [`std::process::Command`].
///
/// Defaults, as in Node's `spawn`:
/// - stdin, stdout and stderr piped;
/// - the parent's environment and cwd;
/// - the program looked up in `PATH` unless it contains a `/`;
/// - the child in the parent's process group and session;
/// - a dropped [`Child`] keeps running (and is reaped in the background).
///
/// Setters never fail: a NUL byte in an argument or a missing cwd is
/// reported by [`Command::spawn`].
///
/// # Examples
///
/// ```
/// use child_process as cp;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> cp::Result<()> {
/// let status = cp::Command::new("ls")
///     .args(["-l", "-a"])
///     .cwd("/")
///     .env("LC_ALL", "C")
///     .stdout(cp::Stdio::inherit())
///     .spawn()?
///     .wait()
///     .await?;
/// assert!(status.success());
/// # Ok(())
/// # }
/// ```
pub struct Command {
    pub(crate) spec: Spec,
    pub(crate) stdio: [Stdio; 3],
    pub(crate) kill_on_drop: bool,
    /// The timeout `wait` enforces, and how it kills.
    pub(crate) limits: Limits,
}

impl Command {
    /// A command that runs `program`, with the defaults listed above.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// let child = child_process::Command::new("true").spawn()?;
    /// # let mut child = child;
    /// # child.wait().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(program: impl AsRef<OsStr>) -> Command {
        Command::from_spec(Spec::new(program.as_ref()))
    }

    pub(crate) fn from_spec(spec: Spec) -> Command {
        Command {
            spec,
            stdio: [Stdio::piped(), Stdio::piped(), Stdio::piped()],
            kill_on_drop: false,
            limits: Limits {
                kill_signal: Signal::SIGTERM,
                ..Limits::UNLIMITED
            },
        }
    }

    /// Add one argument.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// let out = child_process::Command::new("echo").arg("hi").spawn()?.wait_with_output().await?;
    /// assert_eq!(out.stdout, b"hi\n");
    /// # Ok(())
    /// # }
    /// ```
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Command {
        self.spec.args.push(arg.as_ref().to_owned());
        self
    }

    /// Add arguments.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// let out = child_process::Command::new("echo").args(["-n", "hi"]).spawn()?.wait_with_output().await?;
    /// assert_eq!(out.stdout, b"hi");
    /// # Ok(())
    /// # }
    /// ```
    pub fn args<I, S>(&mut self, args: I) -> &mut Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.spec
            .args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// The child's working directory. A relative program path (`./tool`) is
    /// then looked up relative to it, as `posix_spawn` changes directory
    /// before it executes the program.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// let out = child_process::Command::new("pwd").cwd("/").spawn()?.wait_with_output().await?;
    /// assert_eq!(out.stdout, b"/\n");
    /// # Ok(())
    /// # }
    /// ```
    pub fn cwd(&mut self, dir: impl AsRef<Path>) -> &mut Command {
        self.spec.set_cwd(dir.as_ref());
        self
    }

    /// Set one environment variable, on top of the inherited environment.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// let child = child_process::Command::new("printenv").arg("GREETING").env("GREETING", "hi").spawn()?;
    /// assert_eq!(child.wait_with_output().await?.stdout, b"hi\n");
    /// # Ok(())
    /// # }
    /// ```
    pub fn env(&mut self, key: impl AsRef<OsStr>, val: impl AsRef<OsStr>) -> &mut Command {
        self.spec.set_env(key.as_ref(), Some(val.as_ref()));
        self
    }

    /// Set several environment variables.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// let child = child_process::Command::new("printenv").args(["A", "B"]).envs([("A", "1"), ("B", "2")]).spawn()?;
    /// assert_eq!(child.wait_with_output().await?.stdout, b"1\n2\n");
    /// # Ok(())
    /// # }
    /// ```
    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut Command
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (k, v) in vars {
            self.spec.set_env(k.as_ref(), Some(v.as_ref()));
        }
        self
    }

    /// Remove one variable from the child's environment.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// let child = child_process::Command::new("printenv").arg("HOME").env_remove("HOME").spawn()?;
    /// assert!(child.wait_with_output().await?.stdout.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Command {
        self.spec.set_env(key.as_ref(), None);
        self
    }

    /// Start the child with an empty environment (plus what `env` adds
    /// afterwards). Without `PATH`, a bare program name is looked up in
    /// `/usr/local/bin:/usr/bin:/bin`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// let child = child_process::Command::new("/usr/bin/env").env_clear().env("ONLY", "me").spawn()?;
    /// assert_eq!(child.wait_with_output().await?.stdout, b"ONLY=me\n");
    /// # Ok(())
    /// # }
    /// ```
    pub fn env_clear(&mut self) -> &mut Command {
        self.spec.clear_env();
        self
    }

    /// The child's `argv[0]`, instead of the program name.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// let child = child_process::Command::new("sh").argv0("my-shell").args(["-c", "echo $0"]).spawn()?;
    /// assert_eq!(child.wait_with_output().await?.stdout, b"my-shell\n");
    /// # Ok(())
    /// # }
    /// ```
    pub fn argv0(&mut self, argv0: impl AsRef<OsStr>) -> &mut Command {
        self.spec.argv0 = Some(argv0.as_ref().to_owned());
        self
    }

    /// Where the child's stdin comes from (default: piped).
    ///
    /// # Examples
    ///
    /// ```
    /// use child_process as cp;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cp::Result<()> {
    /// let child = cp::Command::new("cat").stdin(cp::Stdio::null()).spawn()?;
    /// assert!(child.stdin.is_none());
    /// assert!(child.wait_with_output().await?.stdout.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub fn stdin(&mut self, stdio: impl Into<Stdio>) -> &mut Command {
        self.stdio[0] = stdio.into();
        self
    }

    /// Where the child's stdout goes (default: piped).
    ///
    /// # Examples
    ///
    /// ```
    /// use child_process as cp;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cp::Result<()> {
    /// let mut child = cp::Command::new("ls").arg("/").stdout(cp::Stdio::inherit()).spawn()?;
    /// assert!(child.stdout.is_none());
    /// child.wait().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn stdout(&mut self, stdio: impl Into<Stdio>) -> &mut Command {
        self.stdio[1] = stdio.into();
        self
    }

    /// Where the child's stderr goes (default: piped).
    ///
    /// # Examples
    ///
    /// ```
    /// use child_process as cp;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cp::Result<()> {
    /// let child = cp::Command::new("sh").args(["-c", "echo oops >&2"]).stderr(cp::Stdio::null()).spawn()?;
    /// assert!(child.wait_with_output().await?.stderr.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub fn stderr(&mut self, stdio: impl Into<Stdio>) -> &mut Command {
        self.stdio[2] = stdio.into();
        self
    }

    /// Start the child in a new session (`setsid`), so it has no controlling
    /// terminal and its own process group, as Node's `detached: true` does
    /// on Unix. The child is still reaped when it exits.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// let daemon = child_process::Command::new("sleep").arg("100").detached(true).spawn()?;
    /// # let mut daemon = daemon;
    /// # daemon.kill(child_process::Signal::SIGKILL)?;
    /// # daemon.wait().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn detached(&mut self, detached: bool) -> &mut Command {
        self.spec.new_session = detached;
        self
    }

    /// Start the child in a process group of its own, so
    /// [`Child::kill_group`] reaches everything it starts. A terminal's
    /// Ctrl-C then no longer reaches it.
    ///
    /// # Examples
    ///
    /// ```
    /// use child_process as cp;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cp::Result<()> {
    /// let mut child = cp::Command::new("sh").args(["-c", "sleep 10 & sleep 10"]).process_group(true).spawn()?;
    /// child.kill_group(cp::Signal::SIGTERM)?; // sh and the sleeps it started
    /// child.wait().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn process_group(&mut self, own_group: bool) -> &mut Command {
        self.spec.process_group = own_group;
        self
    }

    /// Kill the child with `SIGKILL` when the [`Child`] is dropped before it
    /// was waited for (default: `false`, the child keeps running). Either
    /// way it is reaped in the background.
    ///
    /// When the child leads a process group ([`Command::process_group`] or
    /// [`Command::detached`]), the `SIGKILL` goes to the whole group: the
    /// child and everything it started that stayed in the group.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// let child = child_process::Command::new("sleep").arg("100").kill_on_drop(true).spawn()?;
    /// drop(child); // sleep is killed
    /// # Ok(())
    /// # }
    /// ```
    pub fn kill_on_drop(&mut self, kill_on_drop: bool) -> &mut Command {
        self.kill_on_drop = kill_on_drop;
        self
    }

    /// Send stderr where stdout goes, through the same pipe (the shell's
    /// `2>&1`): interleaved writes keep their order, and [`Child::stdout`]
    /// carries both (`Child::stderr` is `None`). Whatever
    /// [`stderr`](Command::stderr) says is not used.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// let out = child_process::Command::new("sh")
    ///     .args(["-c", "echo out; echo err >&2"])
    ///     .stderr_to_stdout()
    ///     .spawn()?
    ///     .wait_with_output()
    ///     .await?;
    /// assert_eq!(out.stdout, b"out\nerr\n");
    /// # Ok(())
    /// # }
    /// ```
    pub fn stderr_to_stdout(&mut self) -> &mut Command {
        self.spec.merge_stderr = true;
        self
    }

    /// Kill the child if it runs longer than `timeout` (Node's `timeout`
    /// option of `spawn`): [`Child::wait`] and
    /// [`Child::wait_with_output`] then send [`kill_signal`](Self::kill_signal)
    /// (default `SIGTERM`; to the whole group if the child leads one),
    /// `SIGKILL` after [`kill_grace`](Self::kill_grace), and fail with
    /// [`Error::Timeout`](crate::Error::Timeout), whose output holds the
    /// status the child really died with.
    ///
    /// The deadline counts from the spawn and is enforced while `wait` (or
    /// `wait_with_output`) runs: a program that reads the pipes itself and
    /// waits at the end gets the kill when it waits. To stream a child's
    /// output under a timeout, use [`Exec::lines`](crate::Exec::lines).
    /// `Duration::ZERO` means no timeout, as in Node.
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
    /// let mut child = cp::Command::new("sleep").arg("30").timeout(Duration::from_millis(50)).spawn()?;
    /// let err = child.wait().await.unwrap_err();
    /// assert!(err.is_timeout());
    /// assert_eq!(err.exit_status().unwrap().signal(), Some(libc::SIGTERM));
    /// # Ok(())
    /// # }
    /// ```
    pub fn timeout(&mut self, timeout: Duration) -> &mut Command {
        self.limits.timeout = Some(timeout);
        self
    }

    /// The signal a timeout sends first (default `SIGTERM`, Node's
    /// `killSignal`).
    ///
    /// # Examples
    ///
    /// ```
    /// use child_process as cp;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cp::Result<()> {
    /// let mut child = cp::Command::new("sleep")
    ///     .arg("30")
    ///     .timeout(Duration::from_millis(50))
    ///     .kill_signal(cp::Signal::SIGINT)
    ///     .spawn()?;
    /// assert!(child.wait().await.unwrap_err().is_timeout());
    /// # Ok(())
    /// # }
    /// ```
    #[doc(alias = "killSignal")]
    pub fn kill_signal(&mut self, signal: Signal) -> &mut Command {
        self.limits.kill_signal = signal;
        self
    }

    /// How long after the timeout's first signal `SIGKILL` follows
    /// (default 2 s; `Duration::MAX`: never).
    ///
    /// # Examples
    ///
    /// ```
    /// use child_process as cp;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> cp::Result<()> {
    /// let mut child = cp::Command::new("sh")
    ///     .args(["-c", "trap '' TERM; sleep 30"])
    ///     .timeout(Duration::from_millis(50))
    ///     .kill_grace(Duration::from_millis(100))
    ///     .spawn()?;
    /// assert!(child.wait().await.unwrap_err().is_timeout());
    /// # Ok(())
    /// # }
    /// ```
    pub fn kill_grace(&mut self, grace: Duration) -> &mut Command {
        self.limits.kill_grace = grace;
        self
    }

    /// Start the child.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> child_process::Result<()> {
    /// let mut child = child_process::Command::new("true").spawn()?;
    /// assert!(child.wait().await?.success());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`], naming the program or cwd and the cause: not found,
    /// not executable, a directory, a NUL byte in an argument, an invalid
    /// environment variable name, out of fds or processes. Also when called
    /// outside a tokio runtime (the pipes and the exit notification are
    /// registered with it).
    pub fn spawn(&mut self) -> Result<Child> {
        self.spawn_with(&[], OnDrop::kill_on_drop(self.kill_on_drop), self.limits)
    }

    pub(crate) fn spawn_with(
        &mut self,
        extra: &[(BorrowedFd<'_>, RawFd)],
        on_drop: OnDrop,
        limits: Limits,
    ) -> Result<Child> {
        spawn_spec(&self.spec, &self.stdio, extra, on_drop, limits)
    }
}

/// Start `spec` with `stdio` as an async [`Child`]: what
/// [`Command::spawn`] does, for callers that keep their `Spec` (an `exec`
/// job spawned from its own, where a `Command` cost a copy of the `Spec`:
/// about 2,700 instructions a call with its drop, callgrind).
pub(crate) fn spawn_spec(
    spec: &Spec,
    stdio: &[Stdio; 3],
    extra: &[(BorrowedFd<'_>, RawFd)],
    on_drop: OnDrop,
    limits: Limits,
) -> Result<Child> {
    let line = spec.command_line();
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(Error::spawn(
            &line,
            "Command::spawn needs a tokio runtime; use output_sync() or exec(..).run_sync() without one",
            io::Error::other("no tokio runtime"),
        ));
    }
    let [a, b, c] = stdio;
    let raw = spawn_raw(spec, &line, [a.kind(), b.kind(), c.kind()], extra)?;
    let leads_group = raw.leads_group;
    Child::from_raw(raw, line, on_drop, leads_group, limits)
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Command")
            .field("spec", &self.spec)
            .field("stdio", &self.stdio)
            .field("kill_on_drop", &self.kill_on_drop)
            .field("limits", &self.limits)
            .finish()
    }
}
