//! `spawn`, `Command` and `Child`: the one place a process is created.
//!
//! Everything else in the crate (`exec`, `exec_file`, `fork`) configures a
//! [`Spec`] and calls [`spawn_raw`]. The syscalls are in `sys`; this file
//! turns the user's wishes into a `posix_spawn` plan, explains failures in
//! words, and wraps the result for tokio.

use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::channel::Channel;
use crate::error::{ChannelError, CommandLine, Error, ExitStatus, Output, Result};
use crate::stdio::{ChildStderr, ChildStdin, ChildStdout, Stdio, StdioKind};
use crate::sys::reaper::{self, Orphan, PendingKill};
use crate::{sys, Signal};

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

/// What to run: program, arguments, environment, cwd. Shared by every
/// builder of the crate, and `Clone` so an `Exec` can be run twice.
#[derive(Clone, Debug, Default)]
pub(crate) struct Spec {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub argv0: Option<OsString>,
    pub cwd: Option<PathBuf>,
    pub env_clear: bool,
    /// Changes to the environment in order: `Some` sets, `None` removes.
    pub env: Vec<(OsString, Option<OsString>)>,
    /// Run the child in a process group of its own.
    pub process_group: bool,
    /// Run the child in a session of its own (`setsid`).
    pub new_session: bool,
    /// How error messages show the command; by default the quoted argv.
    pub display: Option<CommandLine>,
}

impl Spec {
    pub(crate) fn new(program: &OsStr) -> Spec {
        Spec {
            program: program.to_owned(),
            ..Spec::default()
        }
    }

    pub(crate) fn command_line(&self) -> CommandLine {
        match &self.display {
            Some(line) => line.clone(),
            None => CommandLine::from_argv(
                std::iter::once(&*self.program).chain(self.args.iter().map(|a| &**a)),
            ),
        }
    }

    pub(crate) fn set_env(&mut self, key: &OsStr, val: Option<&OsStr>) {
        self.env.push((key.to_owned(), val.map(ToOwned::to_owned)));
    }

    pub(crate) fn clear_env(&mut self) {
        self.env_clear = true;
        self.env.clear();
    }

    /// The child's environment, as `KEY=VALUE` C strings.
    fn envp(&self, line: &CommandLine) -> Result<sys::CStrArray> {
        let mut vars: Vec<(OsString, OsString)> = if self.env_clear {
            Vec::new()
        } else {
            std::env::vars_os().collect()
        };
        for (key, val) in &self.env {
            check_env_key(key, line)?;
            vars.retain(|(k, _)| k != key);
            if let Some(val) = val {
                check_nul(
                    val.as_bytes(),
                    format_args!("environment variable {key:?}"),
                    line,
                )?;
                vars.push((key.clone(), val.clone()));
            }
        }
        // Variables from the OS cannot hold NUL bytes (they are C strings).
        Ok(sys::CStrArray::new(
            vars.iter().map(|(k, v)| [k.as_bytes(), b"=", v.as_bytes()]),
        ))
    }

    /// The value `PATH` will have in the child.
    fn child_path(&self) -> Option<OsString> {
        if let Some((_, val)) = self.env.iter().rev().find(|(k, _)| k == "PATH") {
            return val.clone();
        }
        if self.env_clear {
            None
        } else {
            std::env::var_os("PATH")
        }
    }
}

fn check_env_key(key: &OsStr, line: &CommandLine) -> Result<()> {
    let bytes = key.as_bytes();
    if bytes.is_empty() || bytes.contains(&b'=') || bytes.contains(&0) {
        return Err(Error::spawn(
            line,
            format!("invalid environment variable name {key:?}: it must be non-empty and hold no `=` or NUL"),
            io::Error::from(io::ErrorKind::InvalidInput),
        ));
    }
    Ok(())
}

/// A NUL byte cannot cross into C; `what` names the value in the error (it
/// is only formatted on failure).
fn check_nul(bytes: &[u8], what: impl std::fmt::Display, line: &CommandLine) -> Result<()> {
    match memchr::memchr(0, bytes) {
        None => Ok(()),
        Some(at) => {
            let shown = String::from_utf8_lossy(&bytes[..at]);
            Err(Error::spawn(
                line,
                format!("{what} holds a NUL byte (after {shown:?})"),
                io::Error::from(io::ErrorKind::InvalidInput),
            ))
        }
    }
}

fn c_string(bytes: Vec<u8>, what: impl std::fmt::Display, line: &CommandLine) -> Result<CString> {
    check_nul(&bytes, what, line)?;
    Ok(CString::new(bytes).expect("checked for NUL bytes"))
}

/// A spawned process before it is wrapped for tokio or for blocking use.
pub(crate) struct RawChild {
    pub pid: libc::pid_t,
    pub pidfd: Option<OwnedFd>,
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// Start a process. The only caller of `sys::spawn` in the crate.
///
/// `extra` places more fds in the child (the IPC socket of `fork`), as
/// `(parent fd, child fd number)`. Every parent-side pipe end comes back
/// non-blocking and CLOEXEC.
pub(crate) fn spawn_raw(
    spec: &Spec,
    line: &CommandLine,
    stdio: [&StdioKind; 3],
    extra: &[(BorrowedFd<'_>, RawFd)],
) -> Result<RawChild> {
    let program = c_string(spec.program.as_bytes().to_vec(), "program", line)?;
    if program.as_bytes().is_empty() {
        return Err(Error::spawn(
            line,
            "program is empty",
            io::Error::from(io::ErrorKind::InvalidInput),
        ));
    }
    let argv0 = match &spec.argv0 {
        Some(argv0) => {
            check_nul(argv0.as_bytes(), "argv0", line)?;
            argv0.as_bytes()
        }
        None => program.as_bytes(),
    };
    for (i, arg) in spec.args.iter().enumerate() {
        check_nul(arg.as_bytes(), format_args!("argument {}", i + 1), line)?;
    }
    let argv = sys::CStrArray::new(
        std::iter::once(argv0)
            .chain(spec.args.iter().map(|a| a.as_bytes()))
            .map(|a| [a]),
    );
    let cwd = match &spec.cwd {
        Some(cwd) => Some(c_string(cwd.as_os_str().as_bytes().to_vec(), "cwd", line)?),
        None => None,
    };
    let envp = spec.envp(line)?;
    let path = resolve_program(spec, &program, line)?;

    // Pipes: (parent end, child end).
    let io_err = |e: io::Error| Error::spawn(line, describe_resource_error(&e, "create a pipe"), e);
    let mut parent = [None, None, None];
    let mut child_ends: [Option<OwnedFd>; 3] = [None, None, None];
    for (i, kind) in stdio.iter().enumerate() {
        if let StdioKind::Piped = kind {
            let (read, write) = sys::pipe().map_err(io_err)?;
            let (mine, theirs) = if i == 0 { (write, read) } else { (read, write) };
            sys::set_nonblocking(mine.as_fd()).map_err(io_err)?;
            parent[i] = Some(mine);
            child_ends[i] = Some(theirs);
        }
    }

    // Every source fd must sit above every target, so no dup2 clobbers a
    // source that a later dup2 still needs, and dup2(fd, fd) (which keeps
    // CLOEXEC set) cannot happen. Only a parent that closed its own 0-2 gets
    // low fds from pipe() or open(); std has the same concern.
    let close_from = extra
        .iter()
        .map(|(_, target)| target + 1)
        .fold(3, RawFd::max);
    let dev_null = if stdio.iter().any(|k| matches!(k, StdioKind::Null)) {
        Some(sys::dev_null().map_err(|e| Error::spawn(line, "cannot open /dev/null", e))?)
    } else {
        None
    };
    let mut lifted: Vec<OwnedFd> = Vec::new();
    let mut sources: Vec<(BorrowedFd<'_>, RawFd)> = Vec::with_capacity(3 + extra.len());
    let mut wanted: Vec<(BorrowedFd<'_>, RawFd)> = Vec::with_capacity(3 + extra.len());
    for (i, kind) in stdio.iter().enumerate() {
        let fd = match kind {
            StdioKind::Piped => child_ends[i].as_ref().map(|fd| fd.as_fd()),
            StdioKind::Null => dev_null,
            StdioKind::Fd(fd) => Some(fd.as_fd()),
            StdioKind::Inherit => None,
        };
        if let Some(fd) = fd {
            wanted.push((fd, i as RawFd));
        }
    }
    wanted.extend_from_slice(extra);
    for &(fd, _) in &wanted {
        if std::os::fd::AsRawFd::as_raw_fd(&fd) < close_from {
            lifted.push(sys::dup_at_least(fd, close_from).map_err(io_err)?);
        }
    }
    let mut lifted_iter = lifted.iter();
    for &(fd, target) in &wanted {
        if std::os::fd::AsRawFd::as_raw_fd(&fd) < close_from {
            sources.push((
                lifted_iter
                    .next()
                    .expect("one lifted fd per low source")
                    .as_fd(),
                target,
            ));
        } else {
            sources.push((fd, target));
        }
    }

    let plan = sys::SpawnPlan {
        path: &path,
        argv: &argv,
        envp: &envp,
        cwd: cwd.as_deref(),
        fds: &sources,
        close_from,
        process_group: spec.process_group,
        new_session: spec.new_session,
    };
    let pid = sys::spawn(&plan).map_err(|e| {
        let reason = explain_spawn_error(&e, spec, &path, &argv, &envp);
        Error::spawn(line, reason, e)
    })?;
    drop(sources);
    drop(child_ends);
    // Without a pidfd (out of fds, or a kernel before 5.3) the child is
    // still ours: waiting falls back to SIGCHLD + waitpid(pid). Failing here
    // would leave a running child that nobody supervises.
    let pidfd = sys::pidfd_open(pid).unwrap_or(None);
    let [stdin, stdout, stderr] = parent;
    Ok(RawChild {
        pid,
        pidfd,
        stdin,
        stdout,
        stderr,
    })
}

/// Find the program the way `execvp` would, in the `PATH` the child will
/// have (std does the same when the caller changed `PATH`), so errors can
/// name the file and `posix_spawn` (not `posix_spawnp`) runs it directly.
fn resolve_program(spec: &Spec, program: &CString, line: &CommandLine) -> Result<CString> {
    if program.as_bytes().contains(&b'/') {
        return Ok(program.clone());
    }
    let path_var = spec
        .child_path()
        .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
    let mut denied = None;
    for dir in std::env::split_paths(&path_var) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let dir = match (&spec.cwd, dir.is_relative()) {
            (Some(cwd), true) => cwd.join(dir),
            _ => dir,
        };
        let candidate = dir.join(OsStr::from_bytes(program.as_bytes()));
        if let Ok(meta) = std::fs::metadata(&candidate) {
            use std::os::unix::fs::PermissionsExt;
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return c_string(candidate.into_os_string().into_vec(), "program", line);
            }
            denied.get_or_insert(candidate);
        }
    }
    let (reason, kind) = match denied {
        Some(path) => (
            format!("`{}` is not an executable file", path.display()),
            io::ErrorKind::PermissionDenied,
        ),
        None => (
            format!(
                "program `{}` not found in PATH ({})",
                program.to_string_lossy(),
                path_var.to_string_lossy()
            ),
            io::ErrorKind::NotFound,
        ),
    };
    Err(Error::spawn(line, reason, io::Error::from(kind)))
}

/// Say in words why `posix_spawn` failed. glibc reports a failed `chdir` and a
/// failed `execve` with the same errno (Node then blames the program for a
/// missing cwd, nodejs/node#11520), so look at the cwd and the program again.
fn explain_spawn_error(
    err: &io::Error,
    spec: &Spec,
    path: &CString,
    argv: &sys::CStrArray,
    envp: &sys::CStrArray,
) -> String {
    let program = Path::new(OsStr::from_bytes(path.as_bytes()));
    if let Some(cwd) = &spec.cwd {
        match std::fs::metadata(cwd) {
            Err(_) => return format!("cwd `{}` does not exist", cwd.display()),
            Ok(meta) if !meta.is_dir() => {
                return format!("cwd `{}` is not a directory", cwd.display())
            }
            Ok(_) => {}
        }
    }
    let shown = match (&spec.cwd, program.is_relative()) {
        (Some(cwd), true) => format!("`{}` (in cwd `{}`)", program.display(), cwd.display()),
        _ => format!("`{}`", program.display()),
    };
    let full = match (&spec.cwd, program.is_relative()) {
        (Some(cwd), true) => cwd.join(program),
        _ => program.to_owned(),
    };
    match err.raw_os_error() {
        Some(libc::E2BIG) => format!(
            "argument list too long: {} bytes of arguments and environment, the limit is {}",
            argv.total_bytes() + envp.total_bytes(),
            sys::arg_max()
        ),
        Some(libc::ENOEXEC) => {
            format!("program {shown} is not in an executable format (a script needs a `#!` line)")
        }
        Some(libc::EAGAIN) => "the process limit was reached (RLIMIT_NPROC)".to_string(),
        Some(libc::EMFILE | libc::ENFILE) => "out of file descriptors".to_string(),
        Some(libc::ENOMEM) => "out of memory".to_string(),
        _ => match std::fs::metadata(&full) {
            Err(_) => format!("program {shown} not found"),
            Ok(meta) if meta.is_dir() => format!("program {shown} is a directory"),
            Ok(_) if err.raw_os_error() == Some(libc::EACCES) => {
                format!("program {shown} is not executable (permission denied)")
            }
            Ok(_) => format!("could not execute program {shown}"),
        },
    }
}

fn describe_resource_error(err: &io::Error, doing: &str) -> String {
    match err.raw_os_error() {
        Some(libc::EMFILE) => {
            format!("cannot {doing}: this process is out of file descriptors (RLIMIT_NOFILE)")
        }
        Some(libc::ENFILE) => format!("cannot {doing}: the system is out of file descriptors"),
        _ => format!("cannot {doing}"),
    }
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
        self.spec.cwd = Some(dir.as_ref().to_owned());
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
        self.spawn_with(&[], OnDrop::kill_on_drop(self.kill_on_drop))
    }

    pub(crate) fn spawn_with(
        &mut self,
        extra: &[(BorrowedFd<'_>, RawFd)],
        on_drop: OnDrop,
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
        Child::from_raw(
            raw,
            line,
            on_drop,
            self.spec.process_group || self.spec.new_session,
        )
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

/// What dropping an unfinished [`Child`] does to the process.
#[derive(Debug, Clone, Copy)]
pub(crate) enum OnDrop {
    /// Nothing: it runs on and is reaped in the background.
    Reap,
    /// Send `signal` (to the group if the child leads one); `SIGKILL` follows
    /// after `grace` if it is still alive.
    Kill {
        signal: Signal,
        grace: Option<Duration>,
    },
}

impl OnDrop {
    /// `Command::kill_on_drop`: `SIGKILL` at once (as tokio does), or nothing.
    pub(crate) fn kill_on_drop(kill: bool) -> OnDrop {
        if kill {
            OnDrop::Kill {
                signal: Signal::SIGKILL,
                grace: None,
            }
        } else {
            OnDrop::Reap
        }
    }
}

/// Send a kill signal to the child, or to its whole group when it leads one
/// (the caller keeps it unreaped, so the ids cannot have been recycled).
///
/// A stopped process keeps every signal but `SIGKILL` pending until it is
/// continued, and a child in its own process group is stopped by `SIGTTOU`
/// or `SIGTTIN` as soon as it touches the terminal (`stty`, a password
/// prompt). So `SIGCONT` follows, or a timeout would always wait out the
/// whole grace period.
pub(crate) fn signal_tree(
    pid: libc::pid_t,
    pidfd: Option<BorrowedFd<'_>>,
    leads_group: bool,
    signal: i32,
) -> io::Result<()> {
    let send = |signal| {
        if leads_group {
            sys::kill_group(pid, signal)
        } else {
            sys::kill(pid, pidfd, signal)
        }
    };
    send(signal)?;
    if signal != libc::SIGKILL {
        send(libc::SIGCONT)?;
    }
    Ok(())
}

/// What dropping an unreaped child does, for the async `Child` and the
/// blocking driver alike: signal it as `on_drop` says, then hand it to the
/// reaper (with the `SIGKILL` deadline of a grace period). Never blocks.
pub(crate) fn abandon(
    pid: libc::pid_t,
    pidfd: Option<OwnedFd>,
    leads_group: bool,
    on_drop: OnDrop,
) {
    let kill = match on_drop {
        OnDrop::Reap => None,
        OnDrop::Kill { signal, grace } => {
            let _ = signal_tree(
                pid,
                pidfd.as_ref().map(|fd| fd.as_fd()),
                leads_group,
                signal.as_raw(),
            );
            grace.map(|grace| PendingKill {
                group: leads_group,
                deadline: Instant::now() + grace,
            })
        }
    };
    reaper::adopt(Orphan { pid, pidfd, kill });
}

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
/// corresponding [`Stdio`] was piped; take them out to use them.
///
/// Dropping a `Child` does not kill the process (unless
/// [`Command::kill_on_drop`]); it is reaped in the background once it exits,
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
    fn from_raw(
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
    /// a group ([`Command::process_group`] or [`Command::detached`]).
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
    /// Dropping the future drops the `Child` (see [`Command::kill_on_drop`]).
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
    use std::os::unix::process::ExitStatusExt;

    /// Errors the kernel gives under resource limits, which a test process
    /// running as root cannot provoke (root is exempt from RLIMIT_NPROC):
    /// the words for them, through the same function real failures use.
    #[test]
    fn resource_errors_are_explained() {
        let spec = Spec::new(OsStr::new("/bin/true"));
        let path = CString::new("/bin/true").unwrap();
        let argv = sys::CStrArray::new([[path.as_bytes()]]);
        let envp = sys::CStrArray::new([] as [[&[u8]; 1]; 0]);
        let explain = |errno| {
            explain_spawn_error(
                &io::Error::from_raw_os_error(errno),
                &spec,
                &path,
                &argv,
                &envp,
            )
        };
        assert_eq!(
            explain(libc::EAGAIN),
            "the process limit was reached (RLIMIT_NPROC)"
        );
        assert_eq!(explain(libc::EMFILE), "out of file descriptors");
        assert_eq!(explain(libc::ENOMEM), "out of memory");
        assert!(explain(libc::E2BIG).starts_with("argument list too long"));
        let err = Error::spawn(
            &spec.command_line(),
            explain(libc::EAGAIN),
            io::Error::from_raw_os_error(libc::EAGAIN),
        );
        assert_eq!(
            err.to_string(),
            "failed to spawn `/bin/true`: the process limit was reached (RLIMIT_NPROC)"
        );
    }

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
