//! `spawn` and `Command`: the builder of the primitive, like std's.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::path::Path;

use crate::capture::Limits;
use crate::child::Child;
use crate::error::{Error, Result};
use crate::kill::OnDrop;
use crate::spawn::{spawn_raw, Spec};
use crate::stdio::Stdio;

/// Start `program` with `args`, stdin, stdout and stderr piped.
///
/// The shorthand for `Command::new(program).args(args).spawn()`. The program
/// is looked up in `PATH` unless it contains a `/`.
///
/// # Examples
///
/// ```no_run
/// use child_process as cp;
/// use tokio::io::AsyncWriteExt;
///
/// # async fn run() -> cp::Result<()> {
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
/// ```no_run
/// use child_process as cp;
///
/// # async fn run() -> cp::Result<()> {
/// let status = cp::Command::new("ls")
///     .args(["-l", "-a"])
///     .cwd("/tmp")
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
}

impl Command {
    /// A command that runs `program`, with the defaults listed above.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let child = child_process::Command::new("true").spawn()?;
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
        }
    }

    /// Add one argument.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// child_process::Command::new("ls").arg("-l").spawn()?;
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
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// child_process::Command::new("ls").args(["-l", "-a"]).spawn()?;
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
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// child_process::Command::new("ls").cwd("/tmp").spawn()?;
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
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// child_process::Command::new("env").env("GREETING", "hi").spawn()?;
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
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// child_process::Command::new("env").envs([("A", "1"), ("B", "2")]).spawn()?;
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
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// child_process::Command::new("env").env_remove("HOME").spawn()?;
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
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// child_process::Command::new("/usr/bin/env").env_clear().env("ONLY", "me").spawn()?;
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
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// child_process::Command::new("sh").argv0("my-shell").args(["-c", "echo $0"]).spawn()?;
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
    /// ```no_run
    /// use child_process as cp;
    /// # async fn run() -> cp::Result<()> {
    /// cp::Command::new("cat").stdin(cp::Stdio::null()).spawn()?;
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
    /// ```no_run
    /// use child_process as cp;
    /// # async fn run() -> cp::Result<()> {
    /// cp::Command::new("ls").stdout(cp::Stdio::inherit()).spawn()?;
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
    /// ```no_run
    /// use child_process as cp;
    /// # async fn run() -> cp::Result<()> {
    /// cp::Command::new("ls").stderr(cp::Stdio::null()).spawn()?;
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
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// child_process::Command::new("my-daemon").detached(true).spawn()?;
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
    /// ```no_run
    /// use child_process as cp;
    /// # async fn run() -> cp::Result<()> {
    /// let child = cp::Command::new("sh").args(["-c", "sleep 10 & sleep 10"]).process_group(true).spawn()?;
    /// child.kill_group(cp::Signal::SIGTERM)?;
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
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
    /// let child = child_process::Command::new("sleep").arg("100").kill_on_drop(true).spawn()?;
    /// drop(child); // sleep is killed
    /// # Ok(())
    /// # }
    /// ```
    pub fn kill_on_drop(&mut self, kill_on_drop: bool) -> &mut Command {
        self.kill_on_drop = kill_on_drop;
        self
    }

    /// Start the child.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> child_process::Result<()> {
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
        self.spawn_with(
            &[],
            OnDrop::kill_on_drop(self.kill_on_drop),
            Limits::UNLIMITED,
        )
    }

    pub(crate) fn spawn_with(
        &mut self,
        extra: &[(BorrowedFd<'_>, RawFd)],
        on_drop: OnDrop,
        limits: Limits,
    ) -> Result<Child> {
        let line = self.spec.command_line();
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::spawn(
                &line,
                "Command::spawn needs a tokio runtime; use output_sync() or exec(..).run_sync() without one",
                io::Error::other("no tokio runtime"),
            ));
        }
        let [a, b, c] = &self.stdio;
        let raw = spawn_raw(&self.spec, &line, [a.kind(), b.kind(), c.kind()], extra)?;
        Child::from_raw(raw, line, on_drop, self.spec.leads_group(), limits)
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Command")
            .field("spec", &self.spec)
            .field("stdio", &self.stdio)
            .field("kill_on_drop", &self.kill_on_drop)
            .finish()
    }
}
